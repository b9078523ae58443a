"""SpikeCLIP: a spiking image encoder and a spiking text encoder in one embedding space."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .encoders import TokenEmbedding, build_image_encoder, build_text_encoder
from .native import build_native_spikingformer
from .spikingformer import ScratchCLIPImage, build_spikingformer


class SpikeCLIP(nn.Module):
    """Dual-stream spiking CLIP. ``logit_scale`` is :math:`\\ln` of the softmax temperature."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.image_arch not in IMAGE_ARCHS or cfg.text_arch not in TEXT_ARCHS:
            raise ConfigError(f"config '{cfg.name}': unknown image_arch '{cfg.image_arch}' or "
                              f"text_arch '{cfg.text_arch}'; known: {sorted(IMAGE_ARCHS)}, "
                              f"{sorted(TEXT_ARCHS)}")
        self.image: nn.Module = IMAGE_ARCHS[cfg.image_arch](cfg)
        self.text: nn.Module = TEXT_ARCHS[cfg.text_arch](cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` -> normalised float pixels (CLIP mean/std)."""
        return (images_uint8.float() / 255.0 - self.mean) / self.std

    def example_input(self, side: str) -> torch.Tensor:
        """One all-zero input of encoder ``side`` as its ``current`` takes it: a normalised
        black image, or token ids."""
        device = self.mean.device
        if side == "image":
            size = self.cfg.image_size
            return self.normalize(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device))
        return torch.zeros(1, self.cfg.context_length, dtype=torch.int64, device=device)

    def encode_image(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(self.normalize(images_uint8)), dim=-1)

    def encode_image_spikes(self, images_uint8: torch.Tensor
                            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(:meth:`encode_image`, the image encoder's spikes ``[T, B, ...]`` per chip LIF
        (:meth:`~.encoders.SpikingEncoder.chip_spikes`)), from one forward pass."""
        spikes = self.image.chip_spikes(self.normalize(images_uint8))
        return F.normalize(self.image.readout(spikes[-1]), dim=-1), spikes

    def encode_image_counts(self, images_uint8: torch.Tensor
                            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Inference: (:meth:`encode_image`, the image encoder's spike counts over the steps
        ``[B, ...]`` per chip LIF, :meth:`~.encoders.SpikingEncoder.chip_counts`), from one
        forward pass."""
        last, counts = self.image.chip_counts(self.normalize(images_uint8))
        return F.normalize(self.image.readout(last), dim=-1), counts

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def forward(self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalised features of uint8 ``images`` or of ``tokens``, ``exp(logit_scale)``), as
        open_clip returns it: the training entry point, so DistributedDataParallel sees every
        parameter a step uses inside one forward pass."""
        feats = self.image(self.normalize(images)) if images is not None else self.text(tokens)
        return feats, self.logit_scale.exp()


def _common(cfg: ModelConfig) -> dict:
    return dict(time_steps=cfg.time_steps, tau=cfg.tau, v_threshold=cfg.v_threshold, tdw=cfg.tdw)


class ANNTextEncoder(nn.Module):
    """Text side of the ANN counterpart: embeddings -> Linear -> GELU -> Linear."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.encode = TokenEmbedding(cfg.vocab_size, cfg.context_length, cfg.text_width)
        self.body = nn.Sequential(nn.Linear(cfg.context_length * cfg.text_width, cfg.text_hidden),
                                  nn.GELU(), nn.Linear(cfg.text_hidden, cfg.embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(self.encode(tokens))


IMAGE_ARCHS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "conv-chain": lambda c: build_image_encoder(c.image_channels, c.image_mlp_hidden, c.embed_dim,
                                                **_common(c)),
    "spikingformer": lambda c: build_spikingformer(
        c.image_channels, c.image_depth, c.image_heads, c.image_mlp_hidden, c.embed_dim,
        attn_threshold=c.attn_threshold, spike_pool=c.spike_pool, **_common(c)),
    "native-spikingformer": lambda c: build_native_spikingformer(
        c.image_channels, c.image_depth, c.image_mlp_hidden, c.token_mixer_kernel, c.embed_dim,
        neuron=c.neuron, **_common(c)),
    "scratch-transformer": lambda c: ScratchCLIPImage(
        c.embed_dim, dim=c.image_channels[-1], depth=c.image_depth, heads=c.image_heads,
        mlp_hidden=c.image_mlp_hidden, stem=tuple(c.image_channels[:-1])),
}
TEXT_ARCHS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "spiking-mlp": lambda c: build_text_encoder(c.vocab_size, c.context_length, c.text_width,
                                                c.text_hidden, c.embed_dim, **_common(c)),
    "ann-mlp": ANNTextEncoder,
}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
