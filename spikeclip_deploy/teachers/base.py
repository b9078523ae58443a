"""The teacher interface: frozen encoders whose normalised features the student imitates."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F


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

    def describe(self) -> dict:
        return {"name": self.name, "embed_dim": self.embed_dim, "logit_scale": self.logit_scale}

    @torch.no_grad()
    def class_weights(self, labels: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        """Zero-shot classifier: per class, the normalised mean of its normalised prompt features."""
        from ..prompts import prompts_for
        feats = [self.encode_texts(prompts_for(lbl, templates)).mean(0) for lbl in labels]
        return F.normalize(torch.stack(feats), dim=-1)

    def save_tokenizer(self, folder: Path) -> None:
        self.tokenizer().save_pretrained(str(folder))
