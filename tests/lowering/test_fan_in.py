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
from spikeclip_deploy.lowering.graph import run_passes, run_side_layers, trace
from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
from spikeclip_deploy.exchange.resources import fan_out
from spikeclip_deploy.nn.chip_graph import ChipGraph
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
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    for k in range(5):
        part = g.layer(f"dense0_part{k}").node
        want = np.zeros_like(w)
        want[:, 2 * k:2 * k + 2] = w[:, 2 * k:2 * k + 2]
        assert np.array_equal(part.weight, want)
        assert np.array_equal(part.bias, b if k == 0 else np.zeros_like(b))
        assert (part.metadata.get("delay", 0), part.metadata["columns"]) == (k, [2 * k, 2 * k + 2])
        assert g.layer(f"dense0_sum{k}").node.metadata.get("delays", {}) == {}
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
