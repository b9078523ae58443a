"""How training runs the image encoder: bf16 autocast and the channels-last layout.

Both are recipe options (``bf16``, ``channels_last``), for speed only: bf16 convolutions use a
CPU's AMX units (or a GPU's tensor cores), and channels-last (NHWC) convolutions skip oneDNN's
layout conversions. They change how training computes, not what it saves: the checkpoint is
float32 in the default layout, so export and inference never see either. Quantization-aware
epochs turn bf16 off (the weights must stay on the chip's grid); the layout may stay.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def image_features(net: nn.Module, images: torch.Tensor, device: torch.device, bf16: bool,
                   channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised float32 features, ``exp(logit_scale)``) of uint8 ``images``
    ``[B, 3, H, W]`` through ``net`` (a SpikeCLIP or its DDP wrapper), as training computes
    them: the images in ``channels_last`` layout if asked, the forward pass under bf16
    autocast if ``bf16``."""
    x = images.to(device).contiguous(memory_format=memory_format(channels_last))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        feats, scale = net(images=x)
    return F.normalize(feats.float(), dim=-1), scale
