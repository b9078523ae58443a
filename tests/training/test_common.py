"""Shared training utilities."""
import math

import numpy as np
import pytest
import torch

from spikeclip_deploy.training.losses import distillation_loss, kd_loss
from spikeclip_deploy.training.views import random_crop


def test_distillation_loss_is_the_mean_cosine_distance():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # cosines 0 and 1
    assert distillation_loss(s, t).item() == ((1 - 0) + (1 - 1)) / 2


def test_random_crop_takes_every_offset_of_the_zero_padded_image():
    img = torch.arange(1, 5, dtype=torch.uint8).reshape(1, 1, 2, 2).repeat(64, 1, 1, 1)
    out = random_crop(img, 1, torch.Generator().manual_seed(0))
    padded = np.zeros((4, 4), dtype=np.uint8)
    padded[1:3, 1:3] = [[1, 2], [3, 4]]
    crops = {(y, x): padded[y:y + 2, x:x + 2] for y in range(3) for x in range(3)}
    seen = set()
    for o in out[:, 0].numpy():
        match = [k for k, c in crops.items() if np.array_equal(o, c)]
        assert len(match) == 1  # every output is one of the 9 crops (all 9 differ)
        seen.add(match[0])
    assert seen == set(crops)  # 64 draws reach all 9 offsets
    assert out.dtype == torch.uint8 and out.shape == img.shape


def test_kd_loss_is_tau_squared_kl_of_the_softened_distributions():
    z_s = torch.tensor([[0.0, 0.0]])
    z_t = torch.tensor([[math.log(9.0), 0.0]])
    # tau 1: p_t = (9/10, 1/10), p_s = (1/2, 1/2)
    kl1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kd_loss(z_s, z_t, 1.0).item() == pytest.approx(kl1, rel=1e-6)
    # tau 2: p_t = softmax(ln 3, 0) = (3/4, 1/4); times tau^2 = 4
    kl2 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(z_s, z_t, 2.0).item() == pytest.approx(4 * kl2, rel=1e-6)
