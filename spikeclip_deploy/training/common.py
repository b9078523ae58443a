"""Shared training utilities: seeding, batching, zero-shot evaluation, cosine LR."""
from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageDataset
from ..zeroshot import predict


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def cosine_lr(step: int, total: int, lr_max: float, lr_min: float) -> float:
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@torch.no_grad()
def zero_shot_accuracy(encode: Callable[[torch.Tensor], torch.Tensor], class_weights: torch.Tensor,
                       ds: ImageDataset, batch_size: int = 256) -> float:
    """Top-1 of :func:`~..zeroshot.predict` on ``encode(images)`` against the true labels."""
    correct, weights = 0, class_weights.numpy()
    for idx in batches(len(ds), batch_size, None):
        feats = F.normalize(encode(ds.images[idx]), dim=-1)
        correct += int((predict(feats.numpy(), weights) == ds.labels[idx].numpy()).sum())
    return correct / max(len(ds), 1)
