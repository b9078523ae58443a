"""Progress bars (tqdm: count, rate and ETA) for every loop that runs longer than a few seconds.

They are drawn on stderr only when stdout is a terminal and ``--quiet`` was not given, so
piped or scripted runs stay clean.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:  # numpy is not loaded at CLI start-up, which reads this module
    import numpy as np

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


def encode_in_batches(encode: Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]],
                      images: np.ndarray, batch_size: int, desc: str
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``encode`` over ``images`` batch by batch (with a progress bar) -> (features, per-layer
    spikes), concatenated over the batches."""
    import numpy as np

    feats, spikes = [], []
    for start in progress(range(0, len(images), batch_size), desc=desc, unit="batch"):
        f, s = encode(images[start:start + batch_size])
        feats.append(f)
        spikes.append(s)
    return np.concatenate(feats), [np.concatenate(layer) for layer in zip(*spikes)]
