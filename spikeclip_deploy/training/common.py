"""Shared training utilities: seeding, batching, the distillation loss, zero-shot evaluation,
cosine LR."""
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


def random_flip(images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontally flip a random half; returns (images, flipped mask)."""
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    out = images.clone()
    out[flip] = out[flip].flip(-1)
    return out, flip


def random_crop(images: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``pad`` pixels a side, then cropped back to its size at a
    random offset (the standard CIFAR augmentation)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, y:y + h, x:x + w]
                        for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist()))])


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    r"""Hinton's distillation term :math:`\tau^2\, \mathrm{KL}(\mathrm{softmax}(z_t/\tau)
    \,\|\, \mathrm{softmax}(z_s/\tau))`, batch mean (:math:`\tau^2` keeps its gradients'
    scale independent of :math:`\tau`)."""
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1), p_t, reduction="batchmean")
    return temperature ** 2 * kl


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{mean}_i (1 - s_i \cdot t_i)` over rows of L2-normalised features: the
    batch mean of :math:`1 - \cos(f_s, f_t)`."""
    return (1 - (student * teacher).sum(-1)).mean()


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
