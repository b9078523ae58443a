"""Spike max pooling's compiled inference pass equals torch's max pooling bit for bit: real
values of both signs, ties, a NaN, and every window geometry the pool allows."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeclip_deploy.nn.chip_graph import SpikeMaxPool


@pytest.mark.parametrize("k, stride, pad, size", [(3, 2, 1, (7, 9)), (2, 2, 0, (8, 8)),
                                                  (3, 1, 1, (5, 6)), (3, 3, 0, (10, 7)),
                                                  (1, 1, 0, (4, 4))])
def test_inference_equals_torchs_max_pool(monkeypatch, k, stride, pad, size):
    import spikeclip_deploy.nn.pool_kernel as kernel

    calls = []
    compiled = kernel.max_pool_planes
    monkeypatch.setattr(kernel, "max_pool_planes", lambda *a: calls.append(1) or compiled(*a))
    x = torch.from_numpy(np.random.default_rng(k + pad).normal(size=(3, 4, *size))
                         .astype(np.float32)).round()  # integers: many ties
    x[1, 2, 3, 2] = float("nan")
    pool = SpikeMaxPool(k, stride, pad)
    with torch.inference_mode():
        got = pool(x)
    want = F.max_pool2d(x, k, stride, pad)
    assert calls and got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan()) and want.isnan().any()
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    spikes = (x > 0.5).float()  # and on spikes, the OR over each window
    with torch.no_grad():
        assert torch.equal(pool(spikes), F.max_pool2d(spikes, k, stride, pad))


def test_training_keeps_torchs_pool_and_its_gradient():
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    SpikeMaxPool(3, 2, 1)(x).sum().backward()
    assert x.grad is not None and x.grad.sum() == 2 * 3 * 3 * 3
