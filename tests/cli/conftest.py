"""The CLI harness every CLI test module shares: run a command, and check a clean failure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from spikeclip_deploy.cli import main


class CLI:
    @staticmethod
    def invoke(*args) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args])

    @staticmethod
    def snapshot(folder: Path) -> dict[str, bytes]:
        """Every file and folder under ``folder`` (bytes of files), hidden ones included: equal
        snapshots mean nothing was written, left behind or changed."""
        return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>")
                for p in sorted(folder.rglob("*"))}

    @staticmethod
    def clean_failure(r: Result, exit_code: int, *needles: str) -> None:
        """Exit code 1 (user error) or 2 (usage error); no traceback; stderr ends in exactly one
        ``Error: ...`` line holding every needle (the file, option or field, and the fix)."""
        assert r.exit_code == exit_code, r.output
        assert r.exc_info is None or r.exc_info[0] is SystemExit, r.output
        assert "Traceback" not in r.output, r.output
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
        assert len(errors) == 1 and r.stderr.rstrip().splitlines()[-1] == errors[0], r.stderr
        for needle in needles:
            assert needle in errors[0], errors[0]


@pytest.fixture()
def cli() -> type[CLI]:
    return CLI


@pytest.fixture()
def cat_png(tmp_path):
    """A random 32 x 32 RGB PNG."""
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path
