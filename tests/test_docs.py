"""The README is a user's guide: at most 300 lines with a table of contents whose entries are
its headings; it, the model cards, exports/README.md and docs/ link only to files that exist and
cite nothing a user does not have."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "models" / "README.md", ROOT / "exports" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """A Markdown heading's anchor as GitHub forms it: lower case, punctuation dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(m) for m in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}


def test_the_readme_is_short_and_opens_with_its_contents():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    contents = text[text.index("## Contents"):text.index("\n## ", text.index("## Contents") + 1)]
    entries = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(entries) >= 15
    assert set(entries) <= anchors(README), set(entries) - anchors(README)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}: no such file"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{page.name} links to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_what_a_user_does_not_have(page):
    text = page.read_text()
    for private in ("SPEC", "../shared", "shared/data"):
        assert private not in text, (page.name, private)
