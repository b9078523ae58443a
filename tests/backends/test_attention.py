"""Spiking self-attention on chip over random small SSA graphs (tokens, heads, d, spike
densities): the emulator's spikes equal the CPU reference's and the float model's in every LIF,
its heads' counts equal the float model's Q K^T V computed in integers, every population's
payloads equal the shared description's (``fire``) on the emulator's own Q, K and V, and a
chip-time simulation with the export's delays (one step per synapse hop) meets every product's
factors of one model step. Planted bugs each of these catch: a head reading another head's
channels, Q and K swapped, the scale folded into the wrong threshold, a product port's delay
off by one step."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeclip_deploy.backends.base import chip_input
from spikeclip_deploy.backends.cpu import run_graph, with_attention
from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.exchange.attention import AttentionNode, fire
from spikeclip_deploy.exchange.nirgraph import depths, graph_layers
from spikeclip_deploy.nn.chip_graph import ChipGraph, SpikeAttention
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF

T = 4
SCALE = 0.125
BUSY = 600  # a bias (in 1/254) that makes Q, K, V dense enough for the attention LIF to spike


def on_grid_1x1(rng, c: int, bias: int) -> nn.Sequential:
    """1x1 conv + identity BatchNorm, weights k/127 (one at 127) and biases (j + bias)/254:
    on the Loihi grid, so the chip and the float model compute the same numbers; ``bias``
    moves the spike density."""
    conv, bn = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
    k = rng.integers(-127, 128, (c, c, 1, 1))
    k[0, 0] = 127
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k / 127.0))
        bn.bias.copy_(torch.from_numpy((rng.integers(-30, 31, c) + bias) / 254.0))
        bn.running_var.fill_(1.0 - bn.eps)
    return nn.Sequential(conv, bn).eval()


def ssa_graph(heads: int, d: int, grid: tuple[int, int], bias: int, seed: int):
    """lif0 (host current) -> 1x1 convs -> Q, K, V LIFs -> SpikeAttention -> LIF (0.5)."""
    rng = np.random.default_rng(seed)
    c = heads * d
    layers = [MultiStepLIF(), on_grid_1x1(rng, c, bias), MultiStepLIF(),
              on_grid_1x1(rng, c, bias), MultiStepLIF(), on_grid_1x1(rng, c, bias),
              MultiStepLIF(), SpikeAttention(heads, SCALE), MultiStepLIF(v_threshold=0.5)]
    inputs = [(-1,), (0,), (1,), (0,), (3,), (0,), (5,), (2, 4, 6), (7,)]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, inputs), nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (3, c, *grid)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    return enc, current, outs


def float_spikes(enc, outs):
    return [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]


def populations(graph) -> list:
    return [la for la in graph_layers(graph) if isinstance(la.node, AttentionNode)]


def check_graph(heads, d, grid, bias, seed, tmp_path, chip_runs):
    """The module docstring's equalities on one random SSA graph; -> the order it took."""
    enc, current, outs = ssa_graph(heads, d, grid, bias, seed)
    c, n = heads * d, grid[0] * grid[1]
    graph = chip_runs.export(enc, (c, *grid), tmp_path)
    run = chip_runs.emulate(graph, current, T)
    want = float_spikes(enc, outs)
    lifs = list(run.spikes)
    cpu = run_graph(with_attention(graph), lifs,
                    torch.from_numpy(chip_input(current.numpy().astype(np.float64), graph)), T)
    for name, e, r, w in zip(lifs, run.spikes.values(), cpu, want, strict=True):
        assert np.array_equal(e, r), f"emulator vs CPU reference {name}: " \
                                     f"{np.argwhere(e != r)[:5].tolist()}"
        assert np.array_equal(e, w), f"emulator vs float {name}: {np.argwhere(e != w)[:5].tolist()}"
    # the heads' counts against the float model's attention in integers
    y_float = outs[7].transpose(0, 1).numpy().reshape(3, T, c, n) / SCALE
    assert np.array_equal(y_float, np.round(y_float))
    pops = populations(graph)
    ys = np.zeros((3, T, c, n), dtype=np.int64)
    for la in pops:
        if la.node.spec.stage == "y":
            h = la.node.spec.head
            ys[:, :, h * d:(h + 1) * d] = run.payloads[la.name]
    np.testing.assert_array_equal(ys, y_float.astype(np.int64))
    # every population's payloads against fire() on the emulator's own Q, K, V
    flat = {name: s.reshape(3, T, -1).astype(np.int64) for name, s in run.spikes.items()}
    for la in pops:
        pop = la.node.population
        ports = [flat[i] if i in flat else run.payloads[i].reshape(3, T, -1) for i in la.inputs]
        np.testing.assert_array_equal(run.payloads[la.name].reshape(3, T, -1), fire(pop, ports),
                                      err_msg=la.name)
    return pops[0].node.spec.order, want


@settings(max_examples=10, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(heads=st.integers(1, 3), d=st.integers(1, 5), h=st.integers(1, 3), w=st.integers(1, 3),
       bias=st.integers(-60, 700), seed=st.integers(0, 2**16))
def test_random_ssa_graphs_on_the_emulator_cpu_reference_and_float_model(heads, d, h, w, bias,
                                                                        seed, tmp_path, chip_runs):
    check_graph(heads, d, (h, w), bias, seed, tmp_path, chip_runs)


@pytest.mark.parametrize("heads,d,grid,order", [(2, 3, (2, 2), "k_first"),
                                                (2, 4, (1, 2), "q_first")])
def test_both_orders_with_busy_heads(heads, d, grid, order, tmp_path, chip_runs):
    """Fixed cases of each order (N = 4 > d = 3: k_first; N = 2 < d = 4: q_first) with
    attention LIFs that spike in some steps and not in others."""
    got, want = check_graph(heads, d, grid, BUSY, 11, tmp_path, chip_runs)
    assert got == order
    assert 0.05 < want[-1].mean() < 0.95, want[-1].mean()
    assert all(0.05 < s.mean() < 0.95 for s in want[1:4]), [s.mean() for s in want]


def chip_time(graph, spikes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every population's output at every chip step, simulated step by step as the chip runs
    (independently of the emulator's window-local time): a LIF of depth D sends its model step
    t at chip step D + t; a population's port k reads its source's output of chip step
    s - synapse_delay - delays[k] (none before step 0); -> population -> [B, steps, neurons]."""
    layers = graph_layers(graph)
    step = graph.metadata["synapse_delay_steps"]
    depth = depths(layers, step)
    steps = max(depth.values()) + T + 2
    out = {}
    for name, s in spikes.items():  # [B, T, ...] -> [B, steps, F]
        x = np.zeros((len(s), steps, int(np.prod(s.shape[2:]))), dtype=np.int64)
        x[:, depth[name]:depth[name] + T] = s.reshape(len(s), T, -1)
        out[name] = x
    for la in populations(graph):
        pop, node = la.node.population, la.node
        y = np.zeros((len(next(iter(spikes.values()))), steps, pop.neurons), dtype=np.int64)
        for s in range(steps):
            ports = []
            for src, k in zip(la.inputs, node.delays):
                at = s - step - k
                ports.append(out[src][:, at] if at >= 0 else np.zeros_like(out[src][:, 0]))
            y[:, s] = fire(pop, ports)
        out[la.name] = y
    return out, depth


def test_the_delays_meet_each_products_factors_of_one_step(tmp_path, chip_runs):
    """On chip time (:func:`chip_time`), the y populations' counts reach the attention LIF at its
    depth, model step by model step, equal to that step's Q K^T V, in both orders; k_first's Q
    waits 2 steps for M (q_first's V for S). A port delay off by one step breaks both the run
    side's check and the counts."""
    for heads, d, grid, order, delayed in [(2, 3, (2, 2), "k_first", ("qm", (2, 0))),
                                           (2, 4, (1, 2), "q_first", ("sv", (0, 2)))]:
        enc, current, outs = ssa_graph(heads, d, grid, BUSY, 11)
        graph = chip_runs.export(enc, (heads * d, *grid), tmp_path)
        run = chip_runs.emulate(graph, current, T)
        pops = {la.node.spec.stage: la for la in populations(graph) if la.node.spec.head == 1}
        assert pops[delayed[0]].node.delays == delayed[1] and pops["y"].node.spec.order == order
        sim, depth = chip_time(graph, run.spikes)
        lif = "lif4"  # the attention LIF
        assert depth[lif] == depth["lif1"] + 5  # 4 population hops and y's into the LIF
        c, n = heads * d, grid[0] * grid[1]
        q, k, v = (run.spikes[f"lif{i}"].reshape(3, T, c, n).astype(np.int64) for i in (1, 2, 3))
        for la in populations(graph):
            if la.node.spec.stage != "y":
                continue
            h = la.node.spec.head
            qh, kh, vh = (x[:, :, h * d:(h + 1) * d].swapaxes(-1, -2) for x in (q, k, v))
            want = (qh @ kh.swapaxes(-1, -2) @ vh).swapaxes(-1, -2).reshape(3, T, -1)
            arrive = depth[lif] - graph.metadata["synapse_delay_steps"]
            np.testing.assert_array_equal(sim[la.name][:, arrive:arrive + T], want)
        # one port held a step too few: the run side refuses it, and chip time mixes steps
        la = pops[delayed[0]]
        wrong = tuple(x - 1 if x else x for x in la.node.delays)
        bad = [dataclasses.replace(x, node=dataclasses.replace(x.node, delays=wrong))
               if x.name == la.name else x for x in graph_layers(graph)]
        with pytest.raises(LoweringError, match="would not meet"):
            depths(bad, graph.metadata["synapse_delay_steps"])


@pytest.mark.lava
@settings(max_examples=4, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(heads=st.integers(1, 3), d=st.integers(1, 4), h=st.integers(1, 3), w=st.integers(1, 3),
       bias=st.integers(-60, 700), seed=st.integers(0, 2**16))
def test_random_ssa_graphs_on_lava_equal_the_emulator(heads, d, h, w, bias, seed, tmp_path,
                                                      chip_runs):
    """Lava (stock ``ProdNeuron``, ``GradedVec``, ``Sparse``/``DelaySparse``) on the same random
    exports: every LIF's u, v and spikes and every population's payloads, every step and
    sample, as on the emulator (a Lava run each, so fewer examples, the same every time)."""
    enc, current, _ = ssa_graph(heads, d, (h, w), bias, seed)
    graph = chip_runs.export(enc, (heads * d, h, w), tmp_path)
    chip_runs.assert_lava_equals_emulator(chip_runs.lava(graph, current, T),
                                          chip_runs.emulate(graph, current, T))
