"""Which images a verification evaluates: a split of ``--data``, in a seeded order, capped at
``--limit``, then this shard's share; and which of them Lava confirms."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset, stratified_split
from ..errors import ConfigError, DataError

SPLITS = ("all", "val", "train")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the selection's positions ``p`` with ``p mod count = index``
    (every shard gets a share of every part of the order, Lava's sample included)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` with ``0 <= I < N``."""
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four "
                              f"shards") from None
        if not 0 <= index < count:
            raise ConfigError(f"--shard {text}: I must be in 0 .. N-1 (N = {count} shards)")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Selection:
    """The evaluated images: dataset indices ``index`` at positions ``positions`` of the whole
    (unsharded) selection of ``total`` images, out of ``available`` in the split."""

    index: torch.Tensor
    positions: torch.Tensor
    total: int
    available: int


def select(ds: ImageDataset, split: str, val_fraction: float, seed: int, limit: int | None,
           shard: Shard = Shard()) -> Selection:
    """``split``: ``all`` (every image), or the stratified ``val``/``train`` split that training
    uses (``val_fraction``, ``seed``). The split's images are shuffled with ``seed`` (so a limit
    takes every class), the first ``limit`` kept (all when None), and this shard's share taken."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1 (got {limit})")
    if split == "all":
        index = torch.arange(len(ds))
    else:
        train, val = stratified_split(ds.labels, val_fraction, seed)
        index = val if split == "val" else train
    available = len(index)
    index = index[torch.randperm(available, generator=torch.Generator().manual_seed(seed))]
    index = index[:limit]
    positions = torch.arange(shard.index, len(index), shard.count)
    if not len(positions):
        raise DataError(f"shard {shard} of {len(index)} images is empty; use at most "
                        f"{len(index)} shards")
    return Selection(index[positions], positions, len(index), available)


def data_record(source: Path | str, split: str, val_fraction: float, seed: int,
                limit: int | None, sel: Selection, content: str) -> dict[str, Any]:
    """What a result records of its images: the options that chose them, how many, and
    ``content_sha256``, the digest of the whole dataset's content (:func:`~..data.content_digest`),
    which identifies the images where the ``source`` path cannot."""
    return {"source": str(source), "content_sha256": content, "split": split,
            "val_fraction": val_fraction if split != "all" else None, "seed": seed,
            "limit": limit, "available": sel.available, "selected": sel.total}
