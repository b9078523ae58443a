"""What the student sees of a training batch: a random half mirrored, and with
``augment="crop-flip"`` each image zero-padded and cropped back at a random offset, drawn from
the batch's own seed (so every rank, and a resumed run, draws the same)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_PAD = 4  # pixels of zero padding a side before a random crop


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


def training_view(images: torch.Tensor, seed: int, crop: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the augmented batch, which images were mirrored)."""
    gen = torch.Generator().manual_seed(seed)
    images, flipped = random_flip(images, gen)
    return (random_crop(images, CROP_PAD, gen) if crop else images), flipped
