"""Shared training utilities."""
import torch

from spikeclip_deploy.training.common import distillation_loss


def test_distillation_loss_is_the_mean_cosine_distance():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # cosines 0 and 1
    assert distillation_loss(s, t).item() == ((1 - 0) + (1 - 1)) / 2
