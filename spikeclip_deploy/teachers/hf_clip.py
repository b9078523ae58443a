"""A real CLIP teacher loaded from a local transformers directory (``CLIPModel.from_pretrained``)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import CLIP_MEAN, CLIP_STD
from ..errors import ConfigError
from ..safeload import refused
from .base import Teacher, to_pixels


class HFCLIPTeacher(Teacher):
    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer, CLIPModel

        if not (Path(path) / "config.json").exists():
            raise ConfigError(f"{path} is not a transformers CLIP directory (no config.json); "
                              "save one with CLIPModel.save_pretrained(DIR)")
        try:  # transformers unpickles a pytorch_model.bin with weights_only=True
            self.model = CLIPModel.from_pretrained(str(path), weights_only=True).eval()
        except pickle.UnpicklingError as exc:
            raise refused(path, exc, "a CLIP's weights file",
                          "save the model with CLIPModel.save_pretrained(DIR) (safetensors)"
                          ) from None
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.name = f"clip:{Path(path).resolve()}"
        self.embed_dim = int(self.model.config.projection_dim)
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        self.image_size = int(self.model.config.vision_config.image_size)

    def tokenizer(self):
        return self._tokenizer

    def token_embeddings(self) -> torch.Tensor:
        return self.model.text_model.embeddings.token_embedding.weight.detach()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_pixels(images, self.image_size, CLIP_MEAN, CLIP_STD)
        feats = self.model.get_image_features(pixel_values=pixels)
        return F.normalize(getattr(feats, "pooler_output", feats), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        enc = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        feats = self.model.get_text_features(input_ids=enc["input_ids"],
                                             attention_mask=enc["attention_mask"])
        return F.normalize(getattr(feats, "pooler_output", feats), dim=-1)
