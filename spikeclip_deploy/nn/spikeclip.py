"""SpikeCLIP: a spiking image encoder and a spiking text encoder in one embedding space."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .encoders import SpikingEncoder, build_image_encoder, build_text_encoder


class SpikeCLIP(nn.Module):
    """Dual-stream spiking CLIP. ``logit_scale`` is :math:`\\ln` of the softmax temperature."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        common = dict(time_steps=cfg.time_steps, tau=cfg.tau, v_threshold=cfg.v_threshold,
                      tdw=cfg.tdw)
        self.image: SpikingEncoder = build_image_encoder(
            cfg.image_channels, cfg.image_mlp_hidden, cfg.embed_dim, **common)
        self.text: SpikingEncoder = build_text_encoder(
            cfg.vocab_size, cfg.context_length, cfg.text_width, cfg.text_hidden, cfg.embed_dim,
            **common)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` -> normalised float pixels (CLIP mean/std)."""
        return (images_uint8.float() / 255.0 - self.mean) / self.std

    def encode_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(self.normalize(images_uint8)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
