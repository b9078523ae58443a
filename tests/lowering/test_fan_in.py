"""The ``split_fan_in`` pass: a dense layer whose fan-in exceeds a core's input axons, summed
from parts on graded relays, by hand and against the unsplit layer on random layers: the
same integer weights, and the reader's u, v and spikes equal on the emulator."""
import dataclasses

import nir
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeclip_deploy.backends.base import quantize_input
from spikeclip_deploy.backends.emulator import Emulation
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.exchange.chip import System
from spikeclip_deploy.lowering import fan_in
from spikeclip_deploy.lowering.graph import run_passes, run_side_layers, trace
from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
from spikeclip_deploy.mapping import map_encoder
from spikeclip_deploy.exchange.resources import fan_out
from spikeclip_deploy.nn.chip_graph import ChipGraph, HostMaxPool
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.targets import get_target

PROFILE = load_profile("loihi2")


def chain(lin: nn.Linear) -> SpikingEncoder:
    """lif0 -> dense0 -> lif1."""
    return SpikingEncoder(nn.Identity(), ChipGraph([MultiStepLIF(), lin, MultiStepLIF()]),
                          nn.Identity(), 4)


def lowered(enc, n_in, axons, target="loihi", upto=None):
    """``enc`` lowered for ``target`` on cores of ``axons`` input axons (the passes up to and
    including ``upto``, default all)."""
    names = get_target(target).passes
    names = names[:names.index(upto) + 1] if upto else names
    profile = dataclasses.replace(PROFILE, cores=dataclasses.replace(
        PROFILE.cores, input_axons_per_core=axons))
    return run_passes(trace(enc, "text", torch.zeros(1, n_in)), passes_named(names),
                      LoweringContext(target, profile, None))


def assert_parts(g, name, w, b, width, count):
    """``name``'s parts in ``g``: part k holds input columns (channels) width k .. width (k + 1)
    of ``w``, zero elsewhere, part 0 the bias ``b``, and is held k steps."""
    for k in range(count):
        part = g.layer(f"{name}_part{k}").node
        want = np.zeros_like(w)
        want[:, width * k:width * (k + 1)] = w[:, width * k:width * (k + 1)]
        assert np.array_equal(part.weight, want)
        assert np.array_equal(part.bias, b if k == 0 else np.zeros_like(b))
        assert (part.metadata.get("delay", 0), part.metadata["columns"]) == (
            k, [width * k, width * (k + 1)])


def test_a_fan_in_over_the_cores_axons_is_split_by_hand():
    """dense0 reads 10 inputs, cores hold 4 input axons: parts of 4 // 2 = 2 columns, 5 of them,
    chained: sum0 = part0, sum_k = sum_{k-1} + part_k, lif1 reads sum4. Part k holds columns
    2k, 2k + 1 of the weight (zero elsewhere), part 0 the bias. Depths: every part at 1, sum_k
    at k + 1 (a relay hop each), so part k is held k steps; lif1 at 6. With cores of 10 axons
    the graph is left as it was."""
    lin = nn.Linear(10, 3)
    enc = chain(lin)
    g = lowered(enc, 10, 4, upto="align_delays")
    names = [(la.name, la.inputs) for la in g.layers]
    assert names == [("lif0", ("input",))] + [
        pair for k in range(5) for pair in (
            (f"dense0_part{k}", ("lif0",)),
            (f"dense0_sum{k}", ((f"dense0_sum{k - 1}",) if k else ()) + (f"dense0_part{k}",)))
    ] + [("lif1", ("dense0_sum4",))]
    assert_parts(g, "dense0", lin.weight.detach().numpy(), lin.bias.detach().numpy(), 2, 5)
    assert all(g.layer(f"dense0_sum{k}").node.metadata.get("delays", {}) == {} for k in range(5))
    whole = lowered(enc, 10, 10, upto="align_delays")
    assert [(la.name, la.inputs) for la in whole.layers] == [
        ("lif0", ("input",)), ("dense0", ("lif0",)), ("lif1", ("dense0",))]


def run(g, current, t=4):
    em = Emulation(run_side_layers(g), t, PROFILE.fixed_point, g.meta["synapse_delay_steps"], ".")
    return em.run(quantize_input(current, g.meta["input_quantization"]), record_state=True)


@settings(max_examples=25, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 40), st.integers(1, 6), st.data())
def test_a_split_layer_computes_what_the_whole_one_does(n_in, n_out, data):
    """Any dense layer, any core of 2 to n_in - 1 input axons: each part's integer weights are
    the whole layer's columns, its biases sum to the whole one's, its synapses (counted for
    energy, resources and the mapper) are its own columns' only, and the reader's u, v and
    spikes on the emulator are the whole layer's, every step and sample (the relays add the
    integer partial sums exactly; the hops are aligned)."""
    axons = data.draw(st.integers(2, n_in - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.normal(0, 1, (n_out, n_in))))
        lin.bias.copy_(torch.from_numpy(rng.normal(0, 0.3, n_out)))
    enc = chain(lin)
    split, whole = lowered(enc, n_in, axons), lowered(enc, n_in, n_in)
    parts = [la.node for la in split.layers if "part_of" in la.node.metadata]
    assert len(parts) == -(-n_in // (axons // 2))
    assert np.array_equal(sum(np.asarray(p.weight) for p in parts), whole.layer("dense0").node.weight)
    assert all(np.count_nonzero(np.asarray(p.weight)[:, np.r_[:lo, hi:n_in]]) == 0
               for p in parts for lo, hi in [p.metadata["columns"]])
    assert np.array_equal(sum(np.asarray(p.bias) for p in parts), whole.layer("dense0").node.bias)
    res, res_whole = split.meta["resources"], whole.meta["resources"]
    assert res["synapses"] == res_whole["synapses"] == n_in * n_out  # each part its own columns
    assert res["stored_weights"] - res["graded_synapses"] == res_whole["stored_weights"]
    assert sum(fan_out(p, (n_in,)) for p in parts).tolist() == [n_out] * n_in
    current = rng.uniform(-1, 3, (3, n_in))
    got, want = run(split, current), run(whole, current)
    for var in ("spikes", "u", "v"):
        assert np.array_equal(getattr(got, var)["lif1"], getattr(want, var)["lif1"]), var
    assert sorted(got.payloads) == sorted(f"dense0_sum{k}" for k in range(len(parts)))
    assert not isinstance(split.layer("lif1").node, nir.Affine)


# -- pointwise convolutions: parts chosen by the mapper's core count, folded into a stream ------
def pointwise(c_in, c_out, rng):
    """A 1x1 convolution and an identity BatchNorm with weights and biases drawn by ``rng``."""
    conv, bn = nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.normal(0, 1, (c_out, c_in, 1, 1))))
        bn.bias.copy_(torch.from_numpy(rng.normal(0.5, 0.3, c_out)))
        bn.running_var.fill_(1.0 - bn.eps)
    return nn.Sequential(conv, bn).eval()


def mlp_block(c, m, rng):
    """lif0 -conv0-> lif1 -conv1 (c -> m)-> lif2 -conv2 (m -> c)-> lif3, lif3 also reading conv0:
    a residual stream whose second term is a pointwise convolution (a transformer's MLP)."""
    layers = [MultiStepLIF(), pointwise(c, c, rng), MultiStepLIF(), pointwise(c, m, rng),
              MultiStepLIF(), pointwise(m, c, rng), MultiStepLIF()]
    return SpikingEncoder(nn.Identity(), ChipGraph(layers, [(-1,), (0,), (1,), (2,), (3,), (4,),
                                                            (1, 5)]), nn.Identity(), 4)


def small_cores(**figures):
    return dataclasses.replace(PROFILE, cores=dataclasses.replace(PROFILE.cores, **figures))


def lowered_as(enc, shape, profile, size=None, target="loihi", upto=None, monkeypatch=None):
    """``enc`` lowered on ``profile``; with ``size``, conv2's split forced to parts of ``size``
    input channels (all of them: no split), every other layer left whole."""
    if size is not None:
        monkeypatch.setattr(fan_in, "_least_size", lambda graph, la, *_: size if
                            la.name == "conv2" else np.asarray(la.node.weight).shape[1])
    names = get_target(target).passes
    names = names[:names.index(upto) + 1] if upto else names
    return run_passes(trace(enc, "image", torch.zeros(1, *shape)), passes_named(names),
                      LoweringContext(target, profile, None))


def mapped_cores(g, profile):
    """The neuro-cores ``map`` places the lowered graph ``g`` on."""
    return map_encoder("image", run_side_layers(g), g.input_shape, profile.cores,
                       System("many", 100)).total("cores")


#: a core of 66 input axons: lif3's copies would read 4 + 64 inputs a neuron, the graded relay
#: 64 + 1, so the stream is graded
STREAM = small_cores(input_axons_per_core=66)


def test_a_pointwise_term_is_folded_into_its_stream_by_hand(monkeypatch):
    """conv2 (64 -> 4) in 4 parts of 16 channels: conv2_sum0 = relay0 + part0, sum_k = sum_{k-1}
    + part_k, relay1 (the stream's relay, lif3's reader) the last sum. Depths: relay0 1, lif1 2,
    lif2 3, every part 4, sum_k 4 + k (a hop each), so part k is held k steps and relay0's
    identity synapse to sum0 2 (4 - 1 - 1), as to relay1 when whole. Part k holds channels
    16k..16k+15 of the weight, zero elsewhere, part 0 the bias; synapses and stored weights
    count its own channels only."""
    enc = mlp_block(4, 64, np.random.default_rng(0))
    g = lowered_as(enc, (4, 1, 2), STREAM, 16, upto="align_delays", monkeypatch=monkeypatch)
    assert [(la.name, la.inputs) for la in g.layers if not la.name.startswith(("lif", "conv0",
                                                                               "conv1"))] == [
        ("relay0", ("conv0",))] + [pair for k in range(4) for pair in (
            (f"conv2_part{k}", ("lif2",)),
            ("relay1" if k == 3 else f"conv2_sum{k}",
             ("relay0" if k == 0 else f"conv2_sum{k - 1}", f"conv2_part{k}")))]
    whole = lowered_as(enc, (4, 1, 2), STREAM, 64, upto="align_delays", monkeypatch=monkeypatch)
    assert_parts(g, "conv2", whole.layer("conv2").node.weight, whole.layer("conv2").node.bias,
                 16, 4)
    assert g.layer("relay0").node.metadata["delays"] == {"conv2_sum0": 2}
    assert whole.layer("relay0").node.metadata["delays"] == {"relay1": 2}
    assert g.layer("relay1").node.metadata["stream"] == "relay0"
    res = lowered_as(enc, (4, 1, 2), STREAM, 16, upto="resources",
                     monkeypatch=monkeypatch).meta["resources"]
    res_whole = lowered_as(enc, (4, 1, 2), STREAM, 64, upto="resources",
                           monkeypatch=monkeypatch).meta["resources"]
    assert res["synapses"] == res_whole["synapses"] == 2 * (4 * 4 + 4 * 64 + 64 * 4)  # 2 positions
    assert res["stored_weights"] - res["graded_synapses"] == \
        res_whole["stored_weights"] - res_whole["graded_synapses"]
    assert res["graded_synapses"] - res_whole["graded_synapses"] == 3 * 8  # 3 hops of 4 x 2


@settings(max_examples=12, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 63), seed=st.integers(0, 2**32 - 1))
def test_a_split_pointwise_term_computes_what_the_whole_one_does(monkeypatch, size, seed):
    """Any part size: the same integers, and every LIF's u, v and spikes on the emulator equal
    those of the whole layer, every step and sample (the relays add the partial sums exactly;
    the hops are aligned)."""
    rng = np.random.default_rng(seed)
    enc = mlp_block(4, 64, rng)
    split = lowered_as(enc, (4, 1, 2), STREAM, size, monkeypatch=monkeypatch)
    whole = lowered_as(enc, (4, 1, 2), STREAM, 64, monkeypatch=monkeypatch)
    parts = [la.node for la in split.layers if "part_of" in la.node.metadata]
    assert len(parts) == -(-64 // size)
    assert np.array_equal(sum(np.asarray(p.weight) for p in parts), whole.layer("conv2").node.weight)
    current = rng.uniform(-1, 3, (3, 4, 1, 2))
    got, want = run(split, current, 8), run(whole, current, 8)
    for lif in ("lif1", "lif2", "lif3"):
        for var in ("spikes", "u", "v"):
            assert np.array_equal(getattr(got, var)[lif], getattr(want, var)[lif]), (lif, var)


def test_the_part_count_is_the_one_of_fewest_cores_by_hand(monkeypatch):
    """Cores of 600 bits, 66 input axons, 64 output axons; lif3's stream graded (the copies
    would read 68 inputs a neuron). Whole, relay1 (4 x 1 x 2) stores 65 weights a channel (64 of
    conv2 and 1 identity, 520 bits) and reads 64 + c axons a position: 1 channel at 1 position
    a core, 8 cores; each of lif2's 128 neurons then sends to the 4 cores of its position: 512
    output axons, 8 cores; with lif0, relay0, lif1, lif3 (1 core each) and relay1: 20. In 4
    parts of 16 channels, each sum stores 17 weights a channel (136 bits: all 4 channels) and
    reads 2 x (16 + 4) axons: 1 core each, 4; a lif2 spike reaches 1 core, and lif2 takes 4
    (its 32-bit kernels, 18 channels a core); 4 + 4 + 4 = 12, the fewest (2 parts: 16, 3:
    14, 5: 13): the pass splits conv2 into 4, and the mapper places 12 cores."""
    profile = small_cores(neurons_per_core=1000, synaptic_memory_bits_per_core=600,
                          input_axons_per_core=66, output_axons_per_core=64)
    enc = mlp_block(4, 64, np.random.default_rng(0))

    chosen = lowered_as(enc, (4, 1, 2), profile, upto="partition")
    assert sum("part_of" in la.node.metadata for la in chosen.layers) == 4
    assert mapped_cores(chosen, profile) == 12
    assert [mapped_cores(lowered_as(enc, (4, 1, 2), profile, size, upto="partition",
                                    monkeypatch=monkeypatch), profile)
            for size in (64, 32, 22, 13)] == [20, 16, 14, 13]


def test_a_split_is_priced_with_its_readers_output_axons(monkeypatch):
    """conv1 (8 -> 16, read by lif2 alone; the stream stays copies here) on cores of 200 bits,
    100 input axons, 32 output axons: in parts, lif2 would hold 16 channels a core (it reads
    only identity synapses), but its spikes to lif3 bind it to 16 cores either way, and the
    parts' sums cost more cores than lif1 saves: 48 cores whole, 51 in 2 parts; conv1 stays
    whole (pricing the split without lif2's readers would take 2 parts)."""
    profile = small_cores(neurons_per_core=1000, synaptic_memory_bits_per_core=200,
                          input_axons_per_core=100, output_axons_per_core=32)
    enc = mlp_block(8, 16, np.random.default_rng(0))

    chosen = lowered_as(enc, (8, 1, 4), profile, upto="partition")
    assert not any("part_of" in la.node.metadata for la in chosen.layers)
    assert mapped_cores(chosen, profile) == 48
    monkeypatch.setattr(fan_in, "_least_size", lambda graph, la, *_: 4 if la.name == "conv1"
                        else np.asarray(la.node.weight).shape[1])
    assert mapped_cores(lowered_as(enc, (8, 1, 4), profile, upto="partition"), profile) == 51


def test_a_pointwise_conv_after_a_host_pool_is_left_whole():
    """lif0 -> 3x3 conv0 -> HostMaxPool (both kept on the host) -> lif1 -> 1x1 conv1 -> lif2:
    lif1's input is a host op reading a host-placed synapse, not a population, so no split of
    conv1 is tried (the pass once asked conv0 for a population's shape and failed)."""
    rng = np.random.default_rng(0)
    conv0 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)).eval()
    layers = [MultiStepLIF(), conv0, HostMaxPool(3, 2, 1), MultiStepLIF(), pointwise(4, 4, rng),
              MultiStepLIF()]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers), nn.Identity(), 4)
    g = run_passes(trace(enc, "image", torch.zeros(1, 2, 8, 8)),
                   passes_named(get_target("loihi").passes),
                   LoweringContext("loihi", PROFILE, None, current_pool="host"))
    assert [la.name for la in g.layers] == ["lif0", "conv0", "host0", "lif1", "conv1", "lif2"]
    assert [g.layer(n).placement for n in ("conv0", "conv1")] == ["host", "chip"]
    assert np.asarray(g.layer("conv1").node.weight).shape == (4, 4, 1, 1)
