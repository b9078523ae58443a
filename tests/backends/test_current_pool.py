"""Max pools of currents on chip over random small graphs (channels, grid, kernel, stride,
padding, borders, signs and magnitudes of the currents): the emulator's spikes equal the CPU
reference's (the literal ReLU levels) and the float model's in every LIF; the pooled LIF's
``u`` is exactly :math:`2^a` times each window's maximum of the relay's payloads, computed here
by loops (its bias added after, in ``v``); every level's payloads equal the shared
description's (``fire``) on the relay's; and a chip-time simulation with the export's delays
brings each step's maxima to the LIF in its window; Lava (stock processes) equals the emulator
in every spike, u, v and payload. Planted bugs each of these catch: a sign flipped in a level,
padding counted as 0, the bias pooled with the current (lost from the LIF), a level's delay off
by one step (on Lava too: a level's delay left out of its synapses, a readout sign flipped)."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeclip_deploy.backends.base import chip_input
from spikeclip_deploy.backends.cpu import run_graph, with_attention
from spikeclip_deploy.exchange.attention import fire
from spikeclip_deploy.exchange.current_pool import PoolNode, pooled
from spikeclip_deploy.exchange.nirgraph import depths, graph_layers
from spikeclip_deploy.nn.chip_graph import ChipGraph, HostMaxPool
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF

T = 4
B = 3


def on_grid_conv(rng, c_in: int, c_out: int, kernel: int, bias: int, scale: int, sign: int = 0
                 ) -> nn.Sequential:
    """conv + identity BatchNorm, weights k/127 (one at 127, magnitudes up to ``scale``; all of
    ``sign`` where it is not 0) and biases (j + bias)/254: on the Loihi grid, so the chip and
    the float model compute the same numbers; ``bias`` moves the LIF's spike density."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
    bn = nn.BatchNorm2d(c_out)
    k = rng.integers(-scale, scale + 1, (c_out, c_in, kernel, kernel))
    k[0, 0, 0, 0] = 127
    if sign:
        k = sign * np.abs(k)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k / 127.0))
        bn.bias.copy_(torch.from_numpy((rng.integers(-30, 31, c_out) + bias) / 254.0))
        bn.running_var.fill_(1.0 - bn.eps)
    return nn.Sequential(conv, bn).eval()


def pool_graph(c0, c, grid, kernel, stride, padding, bias, scale, sign, seed):
    """lif0 (host current) -> 3x3 conv -> HostMaxPool -> lif1 -> 3x3 conv -> lif2."""
    rng = np.random.default_rng(seed)
    layers = [MultiStepLIF(), on_grid_conv(rng, c0, c, 3, bias, scale, sign),
              HostMaxPool(kernel, stride, padding), MultiStepLIF(),
              on_grid_conv(rng, c, c, 3, 200, 127), MultiStepLIF()]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers), nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (B, c0, *grid)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    return enc, current, outs


def window_max(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """``x [..., C, H, W]`` -> each window's maximum over its in-bounds values, by loops."""
    h, w = x.shape[-2:]
    ho, wo = ((n + 2 * padding - kernel) // stride + 1 for n in (h, w))
    out = np.empty((*x.shape[:-2], ho, wo), dtype=x.dtype)
    for oy in range(ho):
        for ox in range(wo):
            ys = slice(max(0, oy * stride - padding), min(h, oy * stride - padding + kernel))
            xs = slice(max(0, ox * stride - padding), min(w, ox * stride - padding + kernel))
            out[..., oy, ox] = x[..., ys, xs].max(axis=(-1, -2))
    return out


def levels(graph) -> list:
    return [la for la in graph_layers(graph) if isinstance(la.node, PoolNode)]


def check_graph(c0, c, grid, kernel, stride, padding, bias, scale, sign, seed, tmp_path,
                chip_runs):
    """The module docstring's equalities on one random graph; -> (float spikes, relay
    payloads)."""
    enc, current, outs = pool_graph(c0, c, grid, kernel, stride, padding, bias, scale, sign,
                                    seed)
    graph = chip_runs.export(enc, (c0, *grid), tmp_path)
    run = chip_runs.emulate(graph, current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    lifs = list(run.spikes)
    cpu = run_graph(with_attention(graph), lifs,
                    torch.from_numpy(chip_input(current.numpy().astype(np.float64), graph)), T)
    for name, e, r, w in zip(lifs, run.spikes.values(), cpu, want, strict=True):
        assert np.array_equal(e, r), f"emulator vs CPU reference {name}: " \
                                     f"{np.argwhere(e != r)[:5].tolist()}"
        assert np.array_equal(e, w), f"emulator vs float {name}: {np.argwhere(e != w)[:5].tolist()}"
    relay = run.payloads["host0_relay"]  # [B, T, C, H, W]
    maxima = window_max(relay, kernel, stride, padding)
    np.testing.assert_array_equal(run.u["lif1"], maxima << chip_runs.fixed_point.activation_shift)
    pops = levels(graph)
    assert [la.name for la in pops] == [f"host0_l{k}" for k in range(1, len(pops) + 1)]
    x = relay.reshape(B, T, -1)
    for la in pops:
        x = fire(la.node.population, [x])
        np.testing.assert_array_equal(run.payloads[la.name].reshape(B, T, -1), x, err_msg=la.name)
    np.testing.assert_array_equal(pooled(pops[-1].node.tree, x).reshape(maxima.shape), maxima)
    return want, relay


@settings(max_examples=10, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(c0=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7),
       geometry=st.sampled_from([(3, 2, 1), (2, 2, 0), (3, 1, 1), (2, 1, 1), (3, 3, 0),
                                 (4, 2, 2), (3, 2, 0)]),
       bias=st.integers(-400, 400), scale=st.sampled_from([3, 40, 127]),
       sign=st.sampled_from([-1, 0, 1]), seed=st.integers(0, 2**16))
def test_random_pool_graphs_on_the_emulator_cpu_reference_and_float_model(
        c0, c, h, w, geometry, bias, scale, sign, seed, tmp_path, chip_runs):
    kernel, stride, padding = geometry
    if min(h, w) + 2 * padding < kernel:
        return
    check_graph(c0, c, (h, w), kernel, stride, padding, bias, scale, sign, seed, tmp_path,
                chip_runs)


@pytest.mark.parametrize("sign,bias", [(-1, 600), (1, -300), (0, 0)])
def test_currents_of_each_sign_with_busy_lifs(sign, bias, tmp_path, chip_runs):
    """Fixed cases: 3x3, stride 2, padding 1 on 7 x 6 (windows of 4, 6 and 9 values): currents
    all of one sign (all at most 0: padding counted as 0 would win the border windows), or
    mixed, and LIFs that spike in some steps and not in others."""
    want, relay = check_graph(2, 3, (7, 6), 3, 2, 1, bias, 127, sign, 5, tmp_path, chip_runs)
    assert (relay * sign >= 0).all() and (relay != 0).mean() > 0.5
    assert all(0.05 < s.mean() < 0.95 for s in want[1:]), [s.mean() for s in want]


def chip_time(layers: list, step: int, relay: np.ndarray, depth: dict[str, int]
              ) -> dict[str, np.ndarray]:
    """The relay's payloads of each model step at chip steps depth(relay) + t, and every level's
    output at every chip step, simulated step by step as the chip runs (a level reads the level
    before of chip step s - synapse_delay - delay; none before step 0): name -> [B, steps,
    neurons]."""
    steps = max(depth.values()) + T + 2
    x = np.zeros((B, steps, relay[0, 0].size), dtype=np.int64)
    x[:, depth["host0_relay"]:depth["host0_relay"] + T] = relay.reshape(B, T, -1)
    out = {"host0_relay": x}
    for la in layers:
        if not isinstance(la.node, PoolNode):
            continue
        pop, (src,) = la.node.population, la.inputs
        y = np.zeros((B, steps, pop.neurons), dtype=np.int64)
        for s in range(steps):
            at = s - step - la.node.delay
            y[:, s] = fire(pop, [out[src][:, at] if at >= 0 else np.zeros_like(out[src][:, 0])])
        out[la.name] = y
    return out


def test_the_delays_bring_each_steps_maxima_to_the_lif(tmp_path, chip_runs):
    """On chip time, the last level's readout reaches the pooled LIF at its depth, model step by
    model step, equal to that step's maxima: 6 synapse hops from the convolution (relay, 4
    levels, LIF) where the host pool had 1. A level whose synapses hold a step more: the depths
    count it, and chip time brings the maxima to the LIF's later window; where they did not,
    the LIF would read steps mixed."""
    enc, current, _ = pool_graph(2, 3, (7, 6), 3, 2, 1, 0, 127, 0, 5)
    graph = chip_runs.export(enc, (2, 7, 6), tmp_path)
    layers = graph_layers(graph)
    step = graph.metadata["synapse_delay_steps"]
    run = chip_runs.emulate(graph, current, T)
    relay = run.payloads["host0_relay"]
    maxima = window_max(relay, 3, 2, 1).reshape(B, T, -1)
    pops = levels(graph)
    tree, last = pops[-1].node.tree, pops[-1].name
    assert [la.node.delay for la in pops] == [0, 0, 0, 0]
    depth = depths(layers, step)
    assert depth["lif1"] == depth["conv0"] + 6 * step
    sim = chip_time(layers, step, relay, depth)
    arrive = depth["lif1"] - step
    np.testing.assert_array_equal(pooled(tree, sim[last][:, arrive:arrive + T]), maxima)
    late = [dataclasses.replace(la, node=dataclasses.replace(la.node, delay=1))
            if la.name == "host0_l2" else la for la in layers]
    late_depth = depths(late, step)
    assert late_depth["lif1"] == depth["lif1"] + 1
    sim = chip_time(late, step, relay, late_depth)
    np.testing.assert_array_equal(pooled(tree, sim[last][:, arrive + 1:arrive + 1 + T]), maxima)
    assert not np.array_equal(pooled(tree, sim[last][:, arrive:arrive + T]), maxima)


@pytest.mark.lava
@settings(max_examples=3, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(c0=2, c=3, h=7, w=6, geometry=(3, 2, 1), bias=0, scale=127, sign=-1, seed=5)
@given(c0=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7),
       geometry=st.sampled_from([(3, 2, 1), (2, 2, 0), (3, 1, 1), (4, 2, 2), (3, 2, 0)]),
       bias=st.integers(-400, 400), scale=st.sampled_from([3, 40, 127]),
       sign=st.sampled_from([-1, 0, 1]), seed=st.integers(0, 2**16))
def test_random_pool_graphs_on_lava_equal_the_emulator(c0, c, h, w, geometry, bias, scale, sign,
                                                      seed, tmp_path, chip_runs):
    """Lava (stock ``GradedVec`` relay, ``GradedReluVec`` levels, graded ``Sparse`` of signed
    weights) on the same random exports as the emulator: spikes, u, v and payloads (a Lava run
    each, so fewer examples, the same every time; the first: 3x3, stride 2, padding 1 on 7 x 6,
    currents all at most 0)."""
    kernel, stride, padding = geometry
    if min(h, w) + 2 * padding < kernel:
        return
    enc, current, _ = pool_graph(c0, c, (h, w), kernel, stride, padding, bias, scale, sign, seed)
    graph = chip_runs.export(enc, (c0, h, w), tmp_path)
    chip_runs.assert_lava_equals_emulator(chip_runs.lava(graph, current, T),
                                          chip_runs.emulate(graph, current, T))


@pytest.mark.lava
def test_a_level_held_a_step_more_on_lava_still_equals_the_emulator(tmp_path, chip_runs):
    """A level whose synapses hold their input a step more (``delay`` 1): Lava's
    ``DelaySparse`` holds it, the depths count it, and every LIF and payload equals the
    emulator's of the export as written."""
    enc, current, _ = pool_graph(2, 3, (7, 6), 3, 2, 1, 0, 127, 0, 5)
    graph = chip_runs.export(enc, (2, 7, 6), tmp_path)
    late = [dataclasses.replace(la, node=dataclasses.replace(la.node, delay=1))
            if la.name == "host0_l2" else la for la in graph_layers(graph)]
    chip_runs.assert_lava_equals_emulator(chip_runs.lava(graph, current, T, late),
                                          chip_runs.emulate(graph, current, T))
