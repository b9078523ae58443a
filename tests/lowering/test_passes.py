"""Each lowering pass alone, on graphs small enough to check by hand, and the pass infrastructure
(preconditions before, postconditions after)."""
import dataclasses

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering.graph import Graph, Pass, run_passes, to_nir, trace
from spikeclip_deploy.lowering.passes import PASSES, LoweringContext
from spikeclip_deploy.nn.chip_graph import ChipGraph
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF

#: the resource counts of a graph without graded stream relays
NO_RELAYS = {"relay_neurons": 0, "graded_synapses": 0}

CPU = LoweringContext("cpu", None, None)
LOIHI = LoweringContext("loihi", load_profile("loihi2"), None)


def encoder(layers, inputs=None):
    return SpikingEncoder(nn.Identity(), ChipGraph(layers, inputs), nn.Identity(), 4)


def conv_bn():
    seq = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2)).eval()
    with torch.no_grad():
        seq[0].weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        seq[1].weight.copy_(torch.tensor([2.0, 0.5]))  # gamma
        seq[1].bias.copy_(torch.tensor([0.1, -0.1]))  # beta
        seq[1].running_mean.copy_(torch.tensor([1.0, 0.0]))
        seq[1].running_var.copy_(torch.tensor([4.0 - 1e-5, 0.25 - 1e-5]))  # sigma 2, 0.5
    return seq


def test_trace_names_layers_and_records_fan_in():
    lin = lambda: nn.Linear(3, 3)  # noqa: E731
    enc = encoder([MultiStepLIF(), lin(), MultiStepLIF(), lin(), MultiStepLIF()],
                  [(-1,), (0,), (1,), (2,), (1, 3)])
    g = trace(enc, "text", torch.zeros(1, 3))
    assert [(la.name, la.inputs, la.source) for la in g.layers] == [
        ("lif0", ("input",), "stack.0"), ("dense0", ("lif0",), "stack.1"),
        ("lif1", ("dense0",), "stack.2"), ("dense1", ("lif1",), "stack.3"),
        ("lif2", ("dense0", "dense1"), "stack.4")]
    assert sorted(to_nir(g).edges) == sorted([("input", "lif0"), ("lif0", "dense0"),
                                              ("dense0", "lif1"), ("lif1", "dense1"),
                                              ("dense0", "lif2"), ("dense1", "lif2"),
                                              ("lif2", "output")])


def test_split_fanout_and_align_delays_by_hand():
    """dense0 feeds lif1 and (with dense1) lif2: two copies, one per reader; lif2's paths have
    synaptic depth 1 (via dense0) and 2 (via dense1), so the copy into lif2 is held one step."""
    lin = lambda: nn.Linear(3, 3)  # noqa: E731
    enc = encoder([MultiStepLIF(), lin(), MultiStepLIF(), lin(), MultiStepLIF()],
                  [(-1,), (0,), (1,), (2,), (1, 3)])
    g = run_passes(trace(enc, "text", torch.zeros(1, 3)),
                   (PASSES["split_fanout"], PASSES["partition"], PASSES["align_delays"]), LOIHI)
    assert [(la.name, la.inputs, la.node.metadata.get("delay", 0)) for la in g.layers] == [
        ("lif0", ("input",), 0), ("dense0_lif1", ("lif0",), 0), ("dense0_lif2", ("lif0",), 1),
        ("lif1", ("dense0_lif1",), 0), ("dense1", ("lif1",), 0),
        ("lif2", ("dense0_lif2", "dense1"), 0)]
    assert g.layer("dense0_lif1").source == g.layer("dense0_lif2").source == "stack.1"
    # a chip whose synapses take two steps: the short path is held two steps
    slow = LoweringContext("loihi", dataclasses.replace(LOIHI.profile, synapse_delay_steps=2), None)
    g2 = run_passes(trace(enc, "text", torch.zeros(1, 3)),
                    (PASSES["split_fanout"], PASSES["partition"], PASSES["align_delays"]), slow)
    assert g2.layer("dense0_lif2").node.metadata["delay"] == 2
    # quantizing without splitting is refused: a shared synapse has two readers' scales
    with pytest.raises(LoweringError, match="before pass 'quantize': .*read by several"):
        run_passes(trace(enc, "text", torch.zeros(1, 3)), (PASSES["quantize"],), LOIHI)


def test_fold_bn_by_hand():
    """gain = gamma / sigma = [1, 1]; W' = [1, -2]; b' = beta - mu * gain = [-0.9, -0.1]."""
    g = trace(encoder([MultiStepLIF(), conv_bn(), MultiStepLIF()]), "image", torch.zeros(1, 1, 2, 2))
    assert "batchnorm" in g.layer("conv0").node.metadata
    folded = run_passes(g, (PASSES["fold_bn"],), CPU).layer("conv0").node
    np.testing.assert_allclose(folded.weight.flatten(), [1.0, -2.0], rtol=1e-6)
    np.testing.assert_allclose(folded.bias, [-0.9, -0.1], rtol=1e-6)
    assert "batchnorm" not in folded.metadata
    assert g.layer("conv0").node.weight.flatten().tolist() == [1.0, -2.0]  # input untouched


def test_partition_places_every_layer_with_its_reason():
    g = trace(encoder([MultiStepLIF(), nn.Linear(2, 2), MultiStepLIF()]), "text", torch.zeros(1, 2))
    p = run_passes(g, (PASSES["partition"],), CPU)
    assert [(la.placement, la.reason.split(":")[0]) for la in p.layers] == [
        ("chip", "LIF neurons"), ("chip", "dense layer read from spikes"), ("chip", "LIF neurons")]
    assert p.meta["partition"]["encode"]["placement"] == "host"
    assert p.meta["partition"]["readout"]["placement"] == "host"
    # a synapse that reads the real-valued host current cannot run on a neuro-core
    bad = g.replace(layers=(dataclasses.replace(g.layers[1], inputs=("input",)), g.layers[2]))
    with pytest.raises(LoweringError, match="'dense0' reads \\['input'\\], not spikes"):
        run_passes(bad, (PASSES["partition"],), CPU)


def test_quantize_requires_folded_batchnorm_and_ensures_integers():
    g = trace(encoder([MultiStepLIF(), conv_bn(), MultiStepLIF()]), "image", torch.zeros(1, 1, 2, 2))
    with pytest.raises(LoweringError, match="before pass 'quantize': BatchNorm still separate"):
        run_passes(g, (PASSES["quantize"],), LOIHI)
    q = run_passes(g, (PASSES["fold_bn"], PASSES["partition"], PASSES["quantize"]), LOIHI)
    # |W'|max = 2, tau 2: vth = floor(254 * 2 / 2) = 254 = S; W = round_even(254 W' / 2)
    assert q.layer("lif1").node.metadata["loihi"]["vth"] == 254
    assert q.layer("conv0").node.weight.flatten().tolist() == [128.0, -254.0]
    assert q.meta["hardware"] == "loihi2" and q.meta["input_quantization"]["activation_shift"] == 6


def test_run_passes_checks_requires_and_ensures():
    g = Graph("image", (), (1,), (1,))
    ok = Pass("ok", lambda graph, ctx: graph)
    refuses = Pass("picky", lambda graph, ctx: graph, requires=lambda graph: "needs more")
    breaks = Pass("sloppy", lambda graph, ctx: graph, ensures=lambda graph: "left a mess")
    assert run_passes(g, (ok,), None) is g
    with pytest.raises(LoweringError, match="image encoder, before pass 'picky': needs more"):
        run_passes(g, (ok, refuses), None)
    with pytest.raises(LoweringError, match="pass 'sloppy' broke its guarantee: left a mess"):
        run_passes(g, (breaks,), None)


def test_resources_count_the_traced_graph():
    g = trace(encoder([MultiStepLIF(), nn.Linear(3, 2), MultiStepLIF()]), "text", torch.zeros(1, 3))
    r = run_passes(g, (PASSES["fold_bn"], PASSES["resources"]), CPU).meta["resources"]
    assert r == {"neurons": 3 + 2, "synapses": 3 * 2, "stored_weights": 3 * 2, **NO_RELAYS}
    assert isinstance(g.layer("dense0").node, nir.Affine)


def test_resources_store_a_copied_synapse_per_copy():
    """dense0 (3x3) read by lif1 and lif2 becomes two copies: each stores and connects 9, dense1
    9 more: 27 stored weights and 27 connections; neurons 3 x 3."""
    lin = lambda: nn.Linear(3, 3)  # noqa: E731
    enc = encoder([MultiStepLIF(), lin(), MultiStepLIF(), lin(), MultiStepLIF()],
                  [(-1,), (0,), (1,), (2,), (1, 3)])
    g = run_passes(trace(enc, "text", torch.zeros(1, 3)),
                   (PASSES["split_fanout"], PASSES["resources"]), CPU)
    assert g.meta["resources"] == {"neurons": 9, "synapses": 27, "stored_weights": 27,
                                   **NO_RELAYS}


def stream_encoder(width):
    """lif0 -> d0 -> lif1 -> d1 -> lif2, lif2 summing d0 and d1 (a residual stream of two
    terms: d0 read by lif1 and lif2), every layer ``width`` wide."""
    lin = lambda: nn.Linear(width, width)  # noqa: E731
    return encoder([MultiStepLIF(), lin(), MultiStepLIF(), lin(), MultiStepLIF()],
                   [(-1,), (0,), (1,), (2,), (1, 3)])


def test_graded_streams_costs_by_hand_and_the_cheaper_form_kept():
    """d0 read by lif1 and lif2, priced with hardware/energy-loihi.json (E_SOP 23.6, E_msg 1.7,
    E_graded_op 23.6, E_graded_msg 1.7, E_relay 81 pJ). Width 16: copies execute d0 twice and
    d1 once, 3 x 256 = 768 synaptic ops a step at full activity, and lif0's 16 neurons send to
    2 readers, lif1's to 1: 48 spike messages, 23.6 x 768 + 1.7 x 48 = 18206.4 pJ; graded: d0
    and d1 once (512 ops, 32 messages), relay0 (16 neurons) sends to lif1 and relay1, relay1 to
    lif2 (48 graded messages and identity ops), 32 relay updates: 23.6 x 512 + 1.7 x 32 +
    25.3 x 48 + 81 x 32 = 15944.0 pJ < 18206.4: graded kept, no copy left. Width 8 (where
    counting every operation alike, 168 < 192, chose graded): copies 23.6 x 192 + 1.7 x 24 =
    4572.0 pJ, graded 23.6 x 128 + 1.7 x 16 + 25.3 x 24 + 81 x 16 = 4951.2 pJ: copies kept.
    ``--residual copies`` keeps copies even where graded is cheaper."""
    passes = (PASSES["fold_bn"], PASSES["graded_streams"], PASSES["split_fanout"])
    g = run_passes(trace(stream_encoder(16), "text", torch.zeros(1, 16)), passes, CPU)
    cost = g.meta["streams"]["relay0"]
    assert cost["copies"] == {"synaptic_ops": 768, "graded_messages": 0, "relay_updates": 0,
                              "input_axons": 48, "reader_axons": 32,
                              "energy_pj": pytest.approx(18206.4)}
    assert cost["graded"] == {"synaptic_ops": 512, "graded_messages": 48, "relay_updates": 32,
                              "input_axons": 32 + 48, "reader_axons": 17,
                              "energy_pj": pytest.approx(15944.0)}
    assert cost["form"] == "graded" and cost["relays"] == ["relay0", "relay1"]
    assert [(la.name, la.inputs) for la in g.layers] == [
        ("lif0", ("input",)), ("dense0", ("lif0",)), ("relay0", ("dense0",)),
        ("lif1", ("relay0",)), ("dense1", ("lif1",)), ("relay1", ("relay0", "dense1")),
        ("lif2", ("relay1",))]
    assert not any("copy_of" in la.node.metadata for la in g.layers)
    small = run_passes(trace(stream_encoder(8), "text", torch.zeros(1, 8)), passes, CPU)
    cost = small.meta["streams"]["relay0"]
    assert (cost["copies"]["energy_pj"], cost["graded"]["energy_pj"]) == (
        pytest.approx(4572.0), pytest.approx(4951.2))
    assert cost["form"] == "copies"
    assert not any(isinstance(la.node, nir.Scale) for la in small.layers)
    assert [la.node.metadata.get("copy_of") for la in small.layers].count("dense0") == 2
    copies = run_passes(trace(stream_encoder(16), "text", torch.zeros(1, 16)), passes,
                        dataclasses.replace(CPU, residual="copies"))
    assert copies.meta["streams"]["relay0"]["form"] == "copies"
    assert [la.node.metadata.get("copy_of") for la in copies.layers].count("dense0") == 2


def test_graded_streams_refuses_a_form_beyond_the_cores_input_axons():
    """Width 8, where copies cost less energy (above): one neuron of lif2 reads d0 and d1, 16
    input axons with copies; with relays it reads relay1 (1 axon) and relay1's neurons read
    relay0 and d1 (1 + 8 = 9). Cores of 12 input axons: copies do not fit, graded does: graded
    kept. Cores of 16: both fit, the cheaper (copies) kept."""
    passes = (PASSES["fold_bn"], PASSES["graded_streams"], PASSES["split_fanout"])
    cores = LOIHI.profile.cores
    for axons, form in ((12, "graded"), (16, "copies")):
        profile = dataclasses.replace(LOIHI.profile, cores=dataclasses.replace(
            cores, input_axons_per_core=axons))
        g = run_passes(trace(stream_encoder(8), "text", torch.zeros(1, 8)), passes,
                       dataclasses.replace(CPU, profile=profile))
        cost = g.meta["streams"]["relay0"]
        assert (cost["copies"]["reader_axons"], cost["graded"]["reader_axons"]) == (16, 9)
        assert cost["form"] == form


def test_a_stream_beyond_the_graded_payload_is_refused():
    """relay0 carries d0, relay1 d0 + d1; each payload bound is the sum of its terms' worst
    cases. With payloads of 8 bits (largest 127) relay0's already exceeds it: the export is
    refused, naming the relay and its bound, never wrapped; at 24 bits it passes."""
    enc = stream_encoder(16)
    with torch.no_grad():
        for m in enc.stack:
            if isinstance(m, nn.Linear):
                m.weight.fill_(1.0)
    passes = tuple(PASSES[n] for n in ("fold_bn", "graded_streams", "split_fanout", "partition",
                                       "align_delays", "quantize"))
    g = run_passes(trace(enc, "text", torch.zeros(1, 16)), passes, LOIHI)
    bounds = {la.name: la.node.metadata["payload_bound"] for la in g.layers
              if isinstance(la.node, nir.Scale)}
    w = {la.name: np.asarray(la.node.weight) for la in g.layers if la.name.startswith("dense")}
    assert bounds == {"relay0": int(w["dense0"].sum(1).max()),
                      "relay1": int(w["dense0"].sum(1).max() + w["dense1"].sum(1).max())}
    assert bounds["relay1"] > 127
    fp = dataclasses.replace(LOIHI.profile.fixed_point, graded_payload_bits=8)
    narrow = dataclasses.replace(LOIHI, profile=dataclasses.replace(LOIHI.profile, fixed_point=fp))
    with pytest.raises(LoweringError, match=rf"stream relay 'relay0' can reach a payload of "
                                            rf"{bounds['relay0']:,}, beyond the 8-bit graded "
                                            rf"spike \(127\)"):
        run_passes(trace(enc, "text", torch.zeros(1, 16)), passes, narrow)


def _ones_stream(width):
    enc = stream_encoder(width)
    with torch.no_grad():
        for m in enc.stack:
            if isinstance(m, nn.Linear):
                m.weight.fill_(1.0)
    return trace(enc, "text", torch.zeros(1, width))


QUANTIZE = ("fold_bn", "graded_streams", "split_fanout", "partition", "align_delays", "quantize")


def test_a_relays_payload_bound_counts_the_weight_exponent():
    """The backends deliver each term's sum shifted by its weight exponent (y << e_w): with
    e_w = 1 every term's worst case counts twice, relay1's bound is 2 (W_d0 + W_d1)."""
    fp = dataclasses.replace(LOIHI.profile.fixed_point, weight_exp=1)
    ctx = dataclasses.replace(LOIHI, profile=dataclasses.replace(LOIHI.profile, fixed_point=fp))
    g = run_passes(_ones_stream(16), tuple(PASSES[n] for n in QUANTIZE), ctx)
    w = {la.name: np.abs(np.asarray(la.node.weight)).sum(1).max() for la in g.layers
         if la.name.startswith("dense")}
    assert all(la.node.metadata["loihi"]["weight_exp"] == 1 for la in g.layers
               if la.name.startswith("dense"))
    bounds = {la.name: la.node.metadata["payload_bound"] for la in g.layers
              if isinstance(la.node, nir.Scale)}
    assert bounds == {"relay0": 2 * int(w["dense0"]),
                      "relay1": 2 * int(w["dense0"] + w["dense1"])}


def test_a_relays_payload_beyond_its_readers_input_port_is_warned_of(caplog):
    """A relay's identity synapse delivers its whole payload into each reader's input port: a
    bound beyond the port's largest value is warned of, as a synapse's worst case is. With a
    port of 13 bits (4095), relay1 (d0 + d1) exceeds it, relay0 (d0 alone) and the synapses
    (each at most 16 x 254 = 4064) do not."""
    fp = dataclasses.replace(LOIHI.profile.fixed_point, input_port_bits=13)
    ctx = dataclasses.replace(LOIHI, profile=dataclasses.replace(LOIHI.profile, fixed_point=fp))
    with caplog.at_level("WARNING", logger="spikeclip_deploy.lowering.quantize"):
        g = run_passes(_ones_stream(16), tuple(PASSES[n] for n in QUANTIZE), ctx)
    bounds = {la.name: la.node.metadata["payload_bound"] for la in g.layers
              if isinstance(la.node, nir.Scale)}
    worst = {la.name: la.node.metadata["activation_worst_case"] for la in g.layers
             if la.name.startswith("dense")}
    assert bounds["relay0"] <= 4095 < bounds["relay1"] and max(worst.values()) <= 4095
    warned = [r.getMessage() for r in caplog.records if "input port" in r.getMessage()]
    assert warned == [f"relay1: worst-case graded payload {bounds['relay1']} exceeds the "
                      f"13-bit input port (4095); Lava's simulation does not clip it, hardware "
                      f"may"]
