"""A seeded random initialisation that is alive: what ``export --init random`` deploys.

PyTorch's default initialisation leaves batch norm at mean 0 and variance 1 while the
convolutions' real output variance is far smaller, so the first LIF layers of a random model
hardly spike and the deeper ones never do: an export of it would exercise nothing. Batch-norm
statistics are therefore calibrated, as data-dependent initialisations do: one forward pass of
seeded random inputs (uniform pixels, uniform token ids) in training mode, with cumulative
averaging, sets every batch norm's running mean and variance to what it sees, so every synapse
layer's current is normalised. Deterministic per seed."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .spikeclip import SpikeCLIP

CALIBRATION_SAMPLES = 16


def random_init(cfg: ModelConfig, seed: int) -> SpikeCLIP:
    """A ``SpikeCLIP(cfg)`` with seeded weights and calibrated batch-norm statistics, in eval
    mode."""
    torch.manual_seed(seed)
    model = SpikeCLIP(cfg)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (CALIBRATION_SAMPLES, 3, cfg.image_size, cfg.image_size),
                           dtype=torch.uint8, generator=gen)
    tokens = torch.randint(0, cfg.vocab_size, (CALIBRATION_SAMPLES, cfg.context_length),
                           generator=gen)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: the statistics of this pass alone
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(images=images)
        model(tokens=tokens)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1  # PyTorch's default, for any later training
    return model.eval()
