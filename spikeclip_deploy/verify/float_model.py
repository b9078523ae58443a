"""The float model's part of ``verify``: its predictions and the spike counts of its chip LIFs,
in pieces of :data:`FLOAT_ROWS` images run on a :class:`~.work_queue.WorkQueue`.

The pieces are submitted ahead of the stream, up to :data:`LEAD` images beyond the batch the
backends are on, from the start of the set-up: a worker thread runs the float model while the
caller exports the model and opens the backends (the images and the model are there before the
export is). A piece of the batch at hand is job number :meth:`FloatPieces.pieces_before` or
less, so the caller helps with those only (:meth:`~.work_queue.WorkQueue.help`), not with the
ones submitted ahead.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable

import numpy as np
import torch

from ..nn.chip_graph import SpikeAttention
from ..nn.lif import count_type
from .work_queue import WorkQueue

#: images the float model runs at once: its tensors then stay small enough for the allocator
#: to reuse (fresh memory costs page faults); each image's numbers are those of a whole batch
FLOAT_ROWS = 16
#: images submitted beyond the current batch's end (their counts wait in memory: about 150 kB
#: an image for the shipped default)
LEAD = 1024
#: a piece's result: (its images' first and end positions in the selection, their features,
#: per chip LIF their spike counts over the steps ``[B, N]`` and, where attention may run on
#: chip, their spikes ``[B, T, *shape]``, both None without spikes to count), the seconds it
#: took
Piece = tuple[tuple[int, int, np.ndarray, list[np.ndarray] | None, list[np.ndarray] | None],
              float]


class FloatPieces:
    """The float model on the images ``images[index]`` (the verified selection), cut into pieces
    of at most :data:`FLOAT_ROWS` images that never straddle a batch of ``batch_size``. A
    piece's result (:data:`Piece`) holds its features (the class weights, which need the
    tokenizer, may come later) and, with ``spikes``, the chip LIFs' spike counts, and each
    step's spikes too where the model has spiking attention (a tally of attention on chip needs
    them)."""

    def __init__(self, model: Any, images: torch.Tensor, index: np.ndarray, batch_size: int,
                 spikes: bool, queue: WorkQueue) -> None:
        n = len(index)
        self._model, self._images, self._index = model, images, index
        self._spikes, self._queue = spikes, queue
        self._steps = spikes and any(isinstance(m, SpikeAttention) for m in model.modules())
        self._count = count_type(model.cfg.time_steps)
        self._starts = [s + lo for s in range(0, n, batch_size)
                        for lo in range(0, min(batch_size, n - s), FLOAT_ROWS)]
        self._ends = [min(lo + FLOAT_ROWS, (lo // batch_size + 1) * batch_size, n)
                      for lo in self._starts]
        self._next = 0

    def submit_ahead(self, end: int) -> None:
        """Submit the pieces that start before image ``end + LEAD``, those not yet submitted."""
        while self._next < len(self._starts) and self._starts[self._next] < end + LEAD:
            self._queue.submit(self._job(self._starts[self._next], self._ends[self._next]))
            self._next += 1

    def pieces_before(self, end: int) -> int:
        """The pieces of the images before ``end`` (a batch's end): those of job index below."""
        return bisect_left(self._starts, end)

    def _job(self, lo: int, hi: int) -> Callable[[], Piece]:
        def job() -> Piece:
            began, counts, steps = time.perf_counter(), None, None
            part = self._images[self._index[lo:hi]]
            with torch.inference_mode():
                if not self._spikes:
                    feats = self._model.encode_image(part)
                elif self._steps:
                    feats, spikes = self._model.encode_image_spikes(part)
                    counts = [s.sum(0) for s in spikes]
                    steps = [s.to(torch.uint8).transpose(0, 1).numpy() for s in spikes]
                else:
                    feats, counts = self._model.encode_image_counts(part)
                if counts is not None:
                    counts = [c.reshape(len(part), -1).numpy().astype(self._count, copy=False)
                              for c in counts]
            return (lo, hi, feats.numpy(), counts, steps), time.perf_counter() - began
        return job
