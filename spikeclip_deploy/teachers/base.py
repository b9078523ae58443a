"""The teacher interface: frozen encoders whose normalised features the student imitates."""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from ..fileutil import write_cache
from ..paths import cache_dir


def to_pixels(images: torch.Tensor, size: int | tuple[int, int], mean, std,
              mode: str = "bicubic") -> torch.Tensor:
    """uint8 ``[B,3,h,w]`` -> float ``[B,3,H,W]``: scaled to [0, 1], resized to ``size`` with
    ``mode`` (``bicubic``, ``bilinear`` or ``nearest``) when it differs, then ``(x - mean) / std``."""
    x = images.float() / 255.0
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) != hw:
        extra = {} if mode == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=hw, mode=mode, **extra)
    mean = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class Teacher(ABC):
    """A frozen CLIP-like model. Features are L2-normalised; images come as uint8 ``[B,3,H,W]``."""

    name: str
    embed_dim: int
    logit_scale: float

    @abstractmethod
    def tokenizer(self):
        """The transformers tokenizer whose ids the student text encoder consumes."""

    @abstractmethod
    def token_embeddings(self) -> torch.Tensor:
        """``[vocab, width]`` token-embedding table, used to initialise the student's."""

    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...

    def text_features(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """:meth:`encode_texts` in batches (distillation text sets run to ~10^5 prompts)."""
        return torch.cat([self.encode_texts(texts[i:i + batch_size])
                          for i in range(0, len(texts), batch_size)])

    def describe(self) -> dict:
        return {"name": self.name, "embed_dim": self.embed_dim, "logit_scale": self.logit_scale}

    def class_weights(self, labels: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        """Zero-shot classifier from the teacher's text features, cached on disk keyed by the
        teacher, labels and templates (so that training with a frozen student text encoder
        runs where the teacher's text tower is not installed, from a cache filled where it is)."""
        from ..zeroshot import class_weights
        key = hashlib.sha256(json.dumps([self.describe(), list(labels), list(templates)],
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = cache_dir() / "teacher-class-weights" / f"{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        with torch.no_grad():
            weights = class_weights(self.encode_texts, labels, templates)
        write_cache(path, lambda tmp: torch.save(weights, tmp), "teacher class-weight")
        return weights
