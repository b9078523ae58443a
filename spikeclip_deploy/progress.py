"""Progress bars (tqdm: count, rate and ETA) for every loop that runs longer than a few seconds.

They are drawn on stderr only when stdout is a terminal and ``--quiet`` was not given, so
piped or scripted runs stay clean.
"""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    return not _quiet and sys.stdout.isatty()


def progress(iterable: Iterable[T], disable: bool = False, **kwargs) -> tqdm:
    """``iterable`` wrapped in a bar (``desc``, ``total``, ``unit``, ... as tqdm's); ``disable``
    silences it further (e.g. on every rank but the first)."""
    return tqdm(iterable, disable=disable or not enabled(), leave=False, dynamic_ncols=True,
                **kwargs)
