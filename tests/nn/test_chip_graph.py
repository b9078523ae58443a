"""The chip graph: fan-in sums in the same time step (in inference, partial sums reused with the
same values), spike max-pooling is an OR, each LIF's spikes counted in inference."""
import pytest
import torch
from torch import nn

from spikeclip_deploy.nn.chip_graph import ChipGraph, SpikeMaxPool, _fan_in
from spikeclip_deploy.nn.lif import MultiStepLIF


def linear(weight):
    lin = nn.Linear(1, 1, bias=False)
    lin.weight.data.fill_(weight)
    return lin


def test_residual_fan_in_by_hand():
    """lif0(host) -a(x1)-> lif1 -b(x1)-> ... and lif2 reads a + b (paths of depth 1 and 2).

    Host current 1.2, tau 2, V_th 1:
      lif0: v = 0.6, 0.6+0.3 = 0.9, 0.45+0.6 = 1.05 -> spike at t=2 only (then reset)
      a = lif0 spikes; lif1 (V_th 0.4): v = 0, 0, 0.5 -> spike at t=2
      lif2 reads a + b = 2 at t=2 (both paths, same step): v = 1.0 -> no spike (strict >) with
      V_th 1; with V_th 0.9 it spikes at t=2.
    """
    def graph(vth2):
        layers = [MultiStepLIF(2.0, 1.0), linear(1.0), MultiStepLIF(2.0, 0.4), linear(1.0),
                  MultiStepLIF(2.0, vth2)]
        return ChipGraph(layers, inputs=[(-1,), (0,), (1,), (2,), (1, 3)])

    x = torch.full((1, 1), 1.2)
    with torch.no_grad():
        outs = graph(1.0)(x, time_steps=4)
        assert outs[0].flatten().tolist() == [0, 0, 1, 0]
        assert outs[2].flatten().tolist() == [0, 0, 1, 0]
        assert outs[4].flatten().tolist() == [0, 0, 0, 0]
        assert graph(0.9)(x, time_steps=4)[4].flatten().tolist() == [0, 0, 1, 0]


def test_fan_in_reuses_partial_sums_with_the_same_values():
    # terms of very different sizes: another order of the additions rounds differently
    torch.manual_seed(0)
    outs = [torch.randn(2, 3, 50) * 10.0 ** (3 * k) for k in range(5)]
    host = torch.randn(2, 3, 50)
    sums = {}
    for ins in [(0,), (0, 1), (0, 1, 2), (-1, 0, 1, 2, 3), (0, 1, 2, 3, 4), (0, 2), (0, 1, 3)]:
        alone = outs[ins[0]] if ins[0] >= 0 else host
        for j in ins[1:]:
            alone = alone + (outs[j] if j >= 0 else host)
        assert torch.equal(_fan_in(ins, outs, host, sums), alone)
        assert torch.equal(_fan_in(ins, outs, host, None), alone)
    assert {(0, 1), (0, 1, 2), (0, 1, 2, 3, 4), (0, 1, 3)} <= set(sums)


def test_inference_counts_every_lif_and_keeps_every_output():
    layers = [MultiStepLIF(2.0, 1.0), nn.Linear(6, 6), MultiStepLIF(2.0, 0.5), nn.Linear(6, 6),
              MultiStepLIF(2.0, 0.5)]
    g = ChipGraph(layers, inputs=[(-1,), (0,), (1,), (2,), (1, 3)])
    x = torch.randn(5, 6) * 3
    counts = {}
    with torch.no_grad():
        plain = g(x, time_steps=4)
        counted = g(x, time_steps=4, counts=counts)
    assert all(torch.equal(a, b) for a, b in zip(plain, counted, strict=True))
    assert sorted(counts) == [0, 2, 4]
    for i, c in counts.items():
        assert torch.equal(c.long(), plain[i].sum(0).long())
    assert all(0 < int(counts[i].sum()) for i in counts)


def test_chain_default_and_checks():
    g = ChipGraph([MultiStepLIF(2.0, 1.0), linear(1.0), MultiStepLIF(2.0, 1.0)])
    assert g.inputs == ((-1,), (0,), (1,)) and g.lif_indices() == [0, 2]
    assert list(g.state_dict()) == ["1.weight"]  # a plain layer list's tensor names
    with pytest.raises(ValueError, match="inputs must be earlier layers"):
        ChipGraph([MultiStepLIF(2.0, 1.0), linear(1.0), MultiStepLIF(2.0, 1.0)],
                  inputs=[(-1,), (2,), (1,)])
    with pytest.raises(ValueError, match="must end in a LIF"):
        ChipGraph([MultiStepLIF(2.0, 1.0), linear(1.0)])


def test_spike_max_pool_is_the_or_of_the_window():
    s = torch.tensor([[[[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]]]], dtype=torch.float32)
    assert SpikeMaxPool(2, 2)(s).flatten().tolist() == [1, 0, 0, 1]
