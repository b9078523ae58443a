"""Graphs with fan-in on every backend: a residual network whose last LIF sums a path of
synaptic depth 1 and a path of depth 3, and a random Loihi-native Spikingformer snapped to the
Loihi grid, give identical spikes, every layer and every step, in the float model, the CPU
reference (float export and fixed-point export), Lava and the emulator (checked equal to Lava)."""
import dataclasses

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikeclip_deploy.backends.base import chip_input, quantize_input
from spikeclip_deploy.backends.cpu import run_graph
from spikeclip_deploy.lowering.graph import run_passes, to_nir, trace
from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.exchange.nirgraph import graph_layers
from spikeclip_deploy.nn.chip_graph import ChipGraph
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.targets import get_target

T = 4


def on_grid_linear(rng, n_in, n_out, peak=True):
    """Weights k/127 and biases j/254 (k, j integers): exactly representable on the Loihi grid
    of a LIF whose largest incoming weight is 1 (threshold 508, weights 2k, bias mantissas 64j),
    so the chip and the float model compute the same numbers."""
    lin = nn.Linear(n_in, n_out)
    k = rng.integers(-127, 128, (n_out, n_in))
    if peak:
        k[0, 0] = 127
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(k / 127.0))
        lin.bias.copy_(torch.from_numpy(rng.integers(-30, 31, n_out) / 254.0))
    return lin


@pytest.fixture(scope="module")
def residual():
    """lif0 -dA-> lif1 -dB-> lif2 -dC-> lif3, and dA also into lif3 (depths 1 and 3)."""
    rng = np.random.default_rng(7)
    n = 24
    layers = [MultiStepLIF(), on_grid_linear(rng, n, n), MultiStepLIF(), on_grid_linear(rng, n, n),
              MultiStepLIF(), on_grid_linear(rng, n, n, peak=False), MultiStepLIF()]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, [(-1,), (0,), (1,), (2,), (3,), (4,),
                                                           (1, 5)]), nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (6, n)) / 512.0).float()  # input grid
    with torch.no_grad():
        outs = enc.stack(current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    assert all(0.05 < s.mean() < 0.95 for s in want), [s.mean() for s in want]
    return enc, current.numpy().astype(np.float64), want


def export_graph(enc, target, tmp_path, residual="graded", profile=None):
    t = get_target(target)
    ctx = LoweringContext(t.name, profile or (load_profile(t.hardware) if t.hardware else None),
                          None, residual)
    g = run_passes(trace(enc, "text", torch.zeros(1, 24)), passes_named(t.passes), ctx)
    path = tmp_path / f"{target}.nir"
    nir.write(path, to_nir(g))
    return nir.read(path)


def delays_of(graph):
    """Every synapse's aligning delay and every relay's, per reader."""
    return {la.name: (dict(la.node.metadata.get("delays", {})) if isinstance(la.node, nir.Scale)
                      else la.node.metadata.get("delay", 0))
            for la in graph_layers(graph) if not isinstance(la.node, nir.LIF)}


def test_the_exported_graph_aligns_the_short_path(residual, tmp_path):
    """Copies: dense0's copy into lif3 waits 2 steps. Graded: dense0 runs once into relay0 (read
    by lif1, depth 2), and relay0's identity synapse to relay1 waits the 2 steps (relay1 sums
    it with dense2, which arrives at depth 4: relay0 at depth 1, plus 1 for the hop, plus 2)."""
    copies = delays_of(export_graph(residual[0], "loihi", tmp_path, "copies"))
    assert copies == {"dense0_lif1": 0, "dense0_lif3": 2, "dense1": 0, "dense2": 0}
    graded = delays_of(export_graph(residual[0], "loihi", tmp_path))
    assert graded == {"dense0": 0, "relay0": {"relay1": 2}, "dense1": 0, "dense2": 0,
                      "relay1": {}}


@pytest.mark.parametrize("target", ["cpu", "loihi"])
@pytest.mark.parametrize("form", ["graded", "copies"])
def test_cpu_reference_equals_the_float_model(residual, target, form, tmp_path):
    enc, current, want = residual
    graph = export_graph(enc, target, tmp_path, form)
    lifs = [la.name for la in graph_layers(graph) if isinstance(la.node, nir.LIF)]
    got = run_graph(graph, lifs, torch.from_numpy(chip_input(current, graph)), T)
    for layer, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"lif{layer}: {np.argwhere(g != w)[:5].tolist()}"


@pytest.mark.lava
@pytest.mark.parametrize("form", ["graded", "copies"])
def test_lava_equals_the_float_model(residual, form, tmp_path):
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    enc, current, want = residual
    graph = export_graph(enc, "loihi", tmp_path, form)
    q = graph.metadata["input_quantization"]
    net = _Network(_lava(), graph_layers(graph), T, LavaBackend.handlers, q["activation_shift"],
                   graph.metadata["synapse_delay_steps"], str(tmp_path))
    got = net.run(quantize_input(current, q))
    assert_emulator_equals(graph, current, got)
    for layer, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"lif{layer}: {np.argwhere(g != w)[:5].tolist()}"


@pytest.fixture(scope="module")
def chain():
    """lif0 -dense0-> lif1 -dense1-> lif2, 24 wide, on the Loihi grid (dense1's biases raised
    by 254/254, so that lif2 fires)."""
    rng = np.random.default_rng(1)
    layers = [MultiStepLIF(), on_grid_linear(rng, 24, 24), MultiStepLIF(),
              on_grid_linear(rng, 24, 24), MultiStepLIF()]
    with torch.no_grad():
        layers[3].bias.add_(1.0)
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers), nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (6, 24)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    assert all(0.05 < s.mean() < 0.95 for s in want), [s.mean() for s in want]
    return enc, current.numpy().astype(np.float64), want


#: cores of 10 input axons: a 24-input neuron's fan-in is split into 5 parts of 5
NARROW = dataclasses.replace(load_profile("loihi2"), cores=dataclasses.replace(
    load_profile("loihi2").cores, input_axons_per_core=10))


@pytest.mark.parametrize("target", ["cpu", "loihi"])
def test_a_split_fan_in_equals_the_float_model_on_the_cpu_reference(chain, target, tmp_path):
    """Both dense layers summed from 5 parts on chains of graded relays (5 hops each; on the
    chip part k held k steps, the float export has no delays): the CPU reference of the float
    and of the fixed-point export gives the float model's spikes in every LIF."""
    enc, current, want = chain
    graph = export_graph(enc, target, tmp_path, profile=NARROW)
    assert delays_of(graph) == {
        **{f"dense{d}_part{k}": k * (target == "loihi") for d in (0, 1) for k in range(5)},
        **{f"dense{d}_sum{k}": {} for d in (0, 1) for k in range(5)}}
    lifs = [la.name for la in graph_layers(graph) if isinstance(la.node, nir.LIF)]
    got = run_graph(graph, lifs, torch.from_numpy(chip_input(current, graph)), T)
    for layer, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"lif{layer}: {np.argwhere(g != w)[:5].tolist()}"


@pytest.mark.lava
def test_a_split_fan_in_on_lava(chain, tmp_path):
    """The same split export on Lava (stock ``GradedVec`` relays, ``DelaySparse`` parts) and
    the emulator: the float model's spikes."""
    enc, current, want = chain
    g = run_passes(trace(enc, "text", torch.zeros(1, 24)),
                   passes_named(get_target("loihi").passes),
                   LoweringContext("loihi", NARROW, None))
    current = torch.from_numpy(current)
    for layer, (gl, w) in enumerate(zip(lava_spikes(g, current, tmp_path), want)):
        assert np.array_equal(gl, w), f"lif{layer}: {np.argwhere(gl != w)[:5].tolist()}"


def on_grid_conv(rng, c, peak=True, groups=1):
    """3x3 conv + an identity BatchNorm, weights k/127 and biases j/254 (on the Loihi grid)."""
    conv, bn = nn.Conv2d(c, c, 3, padding=1, bias=False, groups=groups), nn.BatchNorm2d(c)
    k = rng.integers(-127, 128, (c, c // groups, 3, 3))
    if peak:
        k[0, 0, 1, 1] = 127
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k / 127.0))
        bn.bias.copy_(torch.from_numpy(rng.integers(-30, 31, c) / 254.0))
        bn.running_var.fill_(1.0 - bn.eps)
    return nn.Sequential(conv, bn).eval()


@pytest.mark.lava
@pytest.mark.parametrize("form", ["graded", "copies"])
def test_a_delayed_convolution_path_on_lava(form, tmp_path):
    """The residual network with 3x3 convolutions: the short path is held two steps (copies:
    its convolution's copy; graded: the identity synapse from relay0 to relay1, a DelaySparse
    reading graded spikes); Lava equals the float model."""
    rng = np.random.default_rng(3)
    layers = [MultiStepLIF(), on_grid_conv(rng, 4), MultiStepLIF(), on_grid_conv(rng, 4),
              MultiStepLIF(), on_grid_conv(rng, 4, peak=False), MultiStepLIF()]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, [(-1,), (0,), (1,), (2,), (3,), (4,),
                                                           (1, 5)]), nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (3, 4, 6, 6)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    assert all(0.05 < s.mean() < 0.95 for s in want), [s.mean() for s in want]
    ctx = LoweringContext("loihi", load_profile("loihi2"), None, form)
    g = run_passes(trace(enc, "image", torch.zeros(1, 4, 6, 6)),
                   passes_named(get_target("loihi").passes), ctx)
    if form == "copies":
        assert g.layer("conv0_lif3").node.metadata["delay"] == 2
    else:
        assert g.layer("relay0").node.metadata["delays"] == {"relay1": 2}
    for layer, (gl, w) in enumerate(zip(lava_spikes(g, current, tmp_path), want)):
        assert np.array_equal(gl, w), f"lif{layer}: {np.argwhere(gl != w)[:5].tolist()}"


def lava_spikes(g, current, tmp_path):
    """The lowered graph ``g`` written, read back and run on Lava: spikes per LIF (checked
    equal to the emulator's)."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    nir.write(tmp_path / "g.nir", to_nir(g))
    graph = nir.read(tmp_path / "g.nir")
    q = graph.metadata["input_quantization"]
    net = _Network(_lava(), graph_layers(graph), T, LavaBackend.handlers, q["activation_shift"],
                   graph.metadata["synapse_delay_steps"], str(tmp_path))
    current = current.numpy().astype(np.float64)
    spikes = net.run(quantize_input(current, q))
    assert_emulator_equals(graph, current, spikes)
    return spikes


def assert_emulator_equals(graph, current, lava):
    """The emulator (``loihi-emu``) gives Lava's spikes ``lava`` on the fixed-point ``graph``:
    every LIF, sample, step and neuron."""
    from spikeclip_deploy.backends.base import input_mantissa
    from spikeclip_deploy.backends.emulator import Emulation

    run = Emulation(graph_layers(graph), T, FP, graph.metadata["synapse_delay_steps"], ".").run(
        input_mantissa(current, graph, "image"))
    for name, e, lv in zip(run.spikes, run.spikes.values(), lava, strict=True):
        assert np.array_equal(e, lv), f"emulator {name} (sample, step, neuron): " \
                                      f"{np.argwhere(e != lv)[:5].tolist()}"


@pytest.mark.lava
def test_a_depthwise_convolution_of_128_channels_on_lava(tmp_path):
    """Lava 0.10's ``Conv`` holds its group count in an int8, so 128 groups wrap to -128 and
    give wrong currents; such a convolution runs as a ``Sparse`` synapse and equals the float
    model."""
    rng = np.random.default_rng(5)
    dw = on_grid_conv(rng, 128, groups=128)
    with torch.no_grad():
        dw[1].bias.add_(1.0)  # 254/254: still on the grid, and lif1 fires more
    enc = SpikingEncoder(nn.Identity(), ChipGraph([MultiStepLIF(), dw, MultiStepLIF()]),
                         nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (2, 128, 3, 3)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    assert all(0.05 < s.mean() < 0.95 for s in want), [s.mean() for s in want]
    g = run_passes(trace(enc, "image", torch.zeros(1, 128, 3, 3)),
                   passes_named(get_target("loihi").passes),
                   LoweringContext("loihi", load_profile("loihi2"), None))
    for layer, (gl, w) in enumerate(zip(lava_spikes(g, current, tmp_path), want)):
        assert np.array_equal(gl, w), f"lif{layer}: {np.argwhere(gl != w)[:5].tolist()}"


FP = load_profile("loihi2").fixed_point


def snapped_native(cfg):
    """A seeded random ``cfg`` with its image encoder snapped to the Loihi grid (weights,
    biases, input current)."""
    from spikeclip_deploy.lowering import qat
    from spikeclip_deploy.nn.init import random_init

    model = random_init(cfg, 0)
    qat.snap_to_grid(model.image, FP)
    qat.quantize_inputs(model, FP)
    return model


def random_images(n):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 255, (n, 3, 32, 32),
                                                              dtype=np.uint8))


def test_snapped_native_small_equals_its_loihi_export_on_the_cpu_reference(tmp_path, monkeypatch,
                                                                           image_spikes):
    """Random-init ``spikeclip-native-small`` (fan-in residual stream, spike pooling, depthwise
    mixer) snapped to the Loihi grid and exported for ``--target loihi``: the CPU reference
    reading that export (integer weights and thresholds, float64, exact decay) spikes as the
    float model does in all 12 LIF layers, every step, on 4 images, although integer membranes
    land exactly on their threshold (no spike on the chip: the snapped float model's membrane
    stays just below it)."""
    from spikeclip_deploy.backends import cpu
    from spikeclip_deploy.config import get_config

    model = snapped_native(get_config("spikeclip-native-small"))
    current, want = image_spikes.float_model(model, random_images(4))
    ties = []

    class TieCountingLIF(cpu.LIF):
        def forward(self, current, state=None):
            v = state["v"] if state is not None else torch.zeros_like(current)
            ties.append(int((v + (self.v_leak - v + self.r * current) * self.dt_tau
                             == self.v_th).sum()))
            return super().forward(current, state)

    monkeypatch.setattr(cpu, "LIF", TieCountingLIF)
    got = image_spikes.cpu_reference(model, "loihi", current, tmp_path)
    assert len(got) == len(want) == 12 and sum(ties) > 0
    for k, (g, w) in enumerate(zip(got, want)):
        assert 0 < w.mean() < 1 and np.array_equal(g, w), \
            f"lif{k}: {np.argwhere(g != w)[:5].tolist()}"


@pytest.mark.lava
def test_snapped_native_small_on_lava(tmp_path, image_spikes):
    """Random-init ``spikeclip-native-small`` snapped to the Loihi grid: Lava's bit-accurate run
    of its ``--target loihi`` export, the CPU reference on that export and the float model give
    identical spikes in every LIF layer, every step, on 2 images. The snapped biases are
    multiples of 2^(T-1) chip units, so Lava's truncating decay never truncates."""
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.export import lower_encoder

    model = snapped_native(get_config("spikeclip-native-small"))
    current, want = image_spikes.float_model(model, random_images(2))
    cpu = image_spikes.cpu_reference(model, "loihi", current, tmp_path)
    lava = lava_spikes(lower_encoder(model, "image", get_target("loihi")), current, tmp_path)
    assert len(lava) == len(want) == 12
    for k, (lv, c, w) in enumerate(zip(lava, cpu, want)):
        assert 0 < w.mean() < 1 and np.array_equal(c, w), \
            f"cpu lif{k}: {np.argwhere(c != w)[:5].tolist()}"
        assert np.array_equal(lv, w), f"lava lif{k}: {np.argwhere(lv != w)[:5].tolist()}"


@pytest.mark.lava
def test_delayed_convolutions_give_the_delaysparse_lowerings_spikes(tmp_path):
    """lif0 -c0-> lif1 -c1 (depthwise)-> lif2 -c2-> lif3 -c3-> lif4, with c0 (depth 1) and c2
    (depth 3) also into lif4 (delays 3 and 1): the DelayConv lowering gives the spikes of the
    DelaySparse lowering, every LIF and every step, and both the float model's (residual
    copies, so that the convolutions themselves are delayed)."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    rng = np.random.default_rng(9)
    c = 4
    layers = [MultiStepLIF(), on_grid_conv(rng, c), MultiStepLIF(), on_grid_conv(rng, c, groups=c),
              MultiStepLIF(), on_grid_conv(rng, c), MultiStepLIF(),
              on_grid_conv(rng, c, peak=False), MultiStepLIF()]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, [(-1,), (0,), (1,), (2,), (3,), (4,),
                                                           (5,), (6,), (1, 5, 7)]),
                         nn.Identity(), T)
    current = torch.from_numpy(rng.integers(-300, 1200, (3, c, 6, 5)) / 512.0).float()
    with torch.no_grad():
        outs = enc.stack(current, T)
    want = [outs[i].transpose(0, 1).numpy().astype(np.uint8) for i in enc.stack.lif_indices()]
    assert all(0.05 < s.mean() < 0.95 for s in want), [s.mean() for s in want]
    ctx = LoweringContext("loihi", load_profile("loihi2"), None, "copies")
    g = run_passes(trace(enc, "image", torch.zeros(1, c, 6, 5)),
                   passes_named(get_target("loihi").passes), ctx)
    assert [g.layer(n).node.metadata.get("delay") for n in ("conv0_lif4", "conv2_lif4")] == [3, 1]
    nir.write(tmp_path / "g.nir", to_nir(g))
    graph = nir.read(tmp_path / "g.nir")
    q = graph.metadata["input_quantization"]
    x = quantize_input(current.numpy().astype(np.float64), q)
    new, ref = (_Network(L, graph_layers(graph), T, LavaBackend.handlers, q["activation_shift"],
                         graph.metadata["synapse_delay_steps"], str(tmp_path)).run(x)
                for L in (_lava(), _lava(reference=True)))
    for layer, (a, b, w) in enumerate(zip(new, ref, want)):
        assert np.array_equal(a, b), f"lif{layer}: {np.argwhere(a != b)[:5].tolist()}"
        assert np.array_equal(b, w), f"lif{layer}: {np.argwhere(b != w)[:5].tolist()}"
