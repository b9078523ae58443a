"""Progress bars appear on a terminal only, and never under --quiet."""
import sys

from spikeclip_deploy import progress as prog


def test_bars_follow_the_terminal_and_quiet(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    prog.set_quiet(False)
    assert not prog.progress(range(3)).disable
    assert prog.progress(range(3), disable=True).disable  # e.g. ranks other than the first
    prog.set_quiet(True)
    try:
        assert prog.progress(range(3)).disable
    finally:
        prog.set_quiet(False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert prog.progress(range(3)).disable
