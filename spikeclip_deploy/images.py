"""One image -> the model's input pixels, for every data path (files, ImageFolders, torchvision);
a decoded dataset of them, :class:`ImageDataset`.

CLIP's preprocessing without its normalisation: the shorter side is resized to ``size``
(bicubic; the longer side to ``int(size * long / short)``), then the centre ``size x size``
square is cropped at offset ``round((long' - size) / 2)``, as torchvision's
``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class ImageDataset:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset(self, index: torch.Tensor) -> "ImageDataset":
        return ImageDataset(self.images[index], self.labels[index], self.class_names)


def fit_image(img: Image.Image, size: int) -> torch.Tensor:
    """PIL image of any size and mode -> uint8 RGB ``[3, size, size]`` (an image already
    ``size x size`` keeps its pixels)."""
    rgb = Image.fromarray(_rgb_array(img))
    if rgb.size != (size, size):
        # imported here: torchvision takes about a second to import, and images of the
        # model's size (a decoded dataset's cache, CIFAR) never need it
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        rgb = TF.center_crop(TF.resize(rgb, size, InterpolationMode.BICUBIC), size)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def _rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 ``[H, W, 3]``. 16-bit greyscale (modes ``I;16*``, ``I``) keeps its high byte, where
    Pillow's ``convert("RGB")`` would saturate every value above 255."""
    if img.mode.startswith("I"):
        grey = (np.clip(np.asarray(img), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"))
