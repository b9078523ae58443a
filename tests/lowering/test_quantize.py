import nir
import numpy as np
import pytest

from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering.quantize import quantize_layers, round_even, split_bias

#: the resource counts of a graph without graded stream relays
NO_RELAYS = {"relay_neurons": 0, "graded_synapses": 0}


def quantize_chain(chain, profile):
    """``quantize_layers`` on a chain ``[(name, node)]``, each layer reading the one before."""
    names = ["input"] + [name for name, _ in chain]
    return quantize_layers([(n, node, (prev,)) for (n, node), prev in zip(chain, names)], profile)



def lif(n, vth=1.0):
    f = lambda v: np.full((n,), v, dtype=np.float32)  # noqa: E731
    return nir.LIF(tau=f(2.0), r=f(1.0), v_leak=f(0.0), v_threshold=f(vth), v_reset=f(0.0))


def test_quantized_weights_by_hand():
    w = np.array([[0.5, -0.25], [0.1, 0.0]], dtype=np.float32)
    b = np.array([0.1, -0.2], dtype=np.float32)
    chain = [("lif0", lif(2)), ("dense0", nir.Affine(weight=w, bias=b)), ("lif1", lif(2))]
    q, input_q = quantize_chain(chain, load_profile("loihi2"))
    dense, lif1 = q[1][1], q[2][1]
    # largest |w|/tau = 0.25 -> S = 254 / 0.25 = 1016 = vth; w*S/tau = [[254, -127], [50.8, 0]]
    assert lif1.metadata["loihi"]["vth"] == 1016
    assert dense.weight.tolist() == [[254, -128], [50, 0]]  # even mantissas (Lava drops the LSB)
    # bias: 64 * 1016 * [0.1, -0.2] / 2 = [3251.2, -6502.4] -> exp 1 -> mant [1626, -3251] * 2
    assert lif1.metadata["loihi"]["bias_exp"] == 1
    assert np.allclose(dense.bias * 64, [3252, -6502])
    assert lif1.metadata["loihi"]["dv"] == 2048 and lif1.metadata["loihi"]["du"] == 4095
    assert np.all(lif1.v_threshold == 1016 * 64) and np.all(lif1.r == 128)
    # first layer: vth 1024 and bias exponent 6 -> input scale 64 * 1024 / 2 / 64 = 512
    assert input_q["input_scale"] == 512 and q[0][1].metadata["loihi"]["vth"] == 1024


def test_round_even_and_split_bias():
    assert round_even(np.array([3.0, 5.2, -1.2])).tolist() == [4.0, 6.0, -2.0]
    fp = load_profile("loihi2").fixed_point
    mant, exp = split_bias(np.array([8190.0, -100.0]), fp)
    assert exp == 1 and mant.tolist() == [4095, -50]


def test_a_chip_lif_reads_synapses_or_the_input_alone():
    with pytest.raises(LoweringError, match="LIF 'lif1' reads \\['lif0'\\]: a chip LIF is fed by "
                                            "synapse layers and stream relays only"):
        quantize_chain([("lif0", lif(2)), ("lif1", lif(2))], load_profile("loihi2"))


def test_fan_in_shares_one_scale_and_one_bias():
    """lif1 reads dense_a (|W|max 0.5) and dense_b (|W|max 1.0), tau 2, V_th 1: one threshold
    floor(254 * 2 / 1.0) = 508 = S for both; W_a = round_even(254 * [0.5, -0.25]) = [128, -64]
    (127 rounds to the even 128), W_b = [254, 0]; biases 0.25 + 0.5 summed: 64 * 508 * 0.75 / 2
    = 12192 -> mantissa 3048, exponent 2, held by dense_a (dense_b's is 0)."""
    def dense(w, b):
        return nir.Affine(weight=np.array([w]), bias=np.array([b]))
    layers = [("lif0", lif(2), ("input",)), ("dense_a", dense([0.5, -0.25], 0.25), ("lif0",)),
              ("dense_b", dense([1.0, 0.0], 0.5), ("lif0",)),
              ("lif1", lif(1), ("dense_a", "dense_b"))]
    q = dict(quantize_layers(layers, load_profile("loihi2"))[0])
    assert q["lif1"].metadata["loihi"]["vth"] == 508 and q["lif1"].metadata["loihi"]["bias_exp"] == 2
    assert q["dense_a"].weight.tolist() == [[128, -64]] and q["dense_b"].weight.tolist() == [[254, 0]]
    assert (q["dense_a"].bias * 64).tolist() == [12192] and q["dense_b"].bias.tolist() == [0]


def test_activation_worst_case_by_hand():
    from spikeclip_deploy.lowering.quantize import activation_worst_case

    # row 0: +254 +100 -56 -> positive 354; row 1: -256 -256 +2 -> negative 512
    w = np.array([[254, 100, -56], [-256, -256, 2]])
    assert activation_worst_case(w) == 512


def test_hardware_limits_come_from_the_profile():
    """Over a limit: the message names the encoder, the resource, the excess and the key."""
    import dataclasses

    from spikeclip_deploy.errors import HardwareLimitError
    from spikeclip_deploy.hardware import Limits
    from spikeclip_deploy.lowering.graph import Graph
    from spikeclip_deploy.lowering.passes import PASSES, LoweringContext

    profile = dataclasses.replace(load_profile("loihi2"), name="small-chip",
                                  limits=Limits(100, 50, "a pair", 2, {}))
    ctx = LoweringContext("loihi", profile, None)

    def graph(neurons, stored, side="image"):  # connections far over both limits: not checked
        return Graph(side, (), (1,), (1,), meta={"resources": {
            "neurons": neurons, "synapses": 10**9, "stored_weights": stored}})
    assert PASSES["check_limits"].run(graph(100, 50), ctx).meta["resources"]["chips"] == 1
    # 101 neurons take a second chip; 100 stored weights fill both
    assert PASSES["check_limits"].run(graph(101, 100), ctx).meta["resources"]["chips"] == 2
    with pytest.raises(HardwareLimitError, match=r"the text encoder needs 110 stored synaptic "
                       r"weights, 3 chips' worth at 50 per chip \(stored_weights_per_chip\): 10 "
                       r"more than small-chip's system holds \(2 chips, a pair\)"):
        PASSES["check_limits"].run(graph(10, 110, "text"), ctx)
    with pytest.raises(HardwareLimitError, match=r"the image encoder needs 225 neurons, 3 chips' "
                       r"worth at 100 per chip \(neurons_per_chip\): 25 more"):
        PASSES["check_limits"].run(graph(225, 5), ctx)


def test_chain_resources_by_hand():
    from spikeclip_deploy.exchange.resources import graph_resources

    layers = [("lif0", lif(3), ("input",)),
              ("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2)), ("lif0",)),
              ("lif1", lif(2), ("dense0",))]
    assert graph_resources(layers, (3,)) == {"neurons": 5, "synapses": 6, "stored_weights": 6,
                                                 **NO_RELAYS}


def test_conv_resources_by_hand():
    """A 3x3 conv 2->4 on 5x5 stores its kernel once: 4*2*3*3 = 72 weights. Dense-equivalent
    connections, per output 2*3*3 = 18 taps: unpadded 4 ch x 3x3 out = 36 outputs -> 648;
    padding 1 keeps 5x5: 100 outputs -> 1800 (padded taps included). A 3x3 depthwise conv
    (groups 2) stores 2*1*3*3 = 18 and connects 2 x 3x3 outputs x 9 taps = 162."""
    from spikeclip_deploy.exchange.resources import graph_resources

    def conv(c_in, c_out, pad, groups=1):
        return nir.Conv2d(input_shape=(5, 5), weight=np.ones((c_out, c_in // groups, 3, 3)),
                          stride=1, padding=pad, dilation=1, groups=groups, bias=np.zeros(c_out))

    def lif_map(c, hw):
        f = lambda v: np.full((c, hw, hw), v, dtype=np.float32)  # noqa: E731
        return nir.LIF(tau=f(2.0), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.0))

    def counts(node, out_hw):
        c_out = np.asarray(node.weight).shape[0]
        return graph_resources([("lif0", lif_map(2, 5), ("input",)), ("conv0", node, ("lif0",)),
                                ("lif1", lif_map(c_out, out_hw), ("conv0",))], (2, 5, 5))
    assert counts(conv(2, 4, 0), 3) == {"neurons": 50 + 36, "synapses": 648, "stored_weights": 72,
                                        **NO_RELAYS}
    assert counts(conv(2, 4, 1), 5) == {"neurons": 50 + 100, "synapses": 1800,
                                        "stored_weights": 72, **NO_RELAYS}
    assert counts(conv(2, 2, 0, groups=2), 3) == {"neurons": 50 + 18, "synapses": 162,
                                                  "stored_weights": 18, **NO_RELAYS}


def test_lifs_sharing_a_synapse_share_the_smallest_scale():
    """dense_s (|W|max 0.5) is read by lif1 alone and by lif2 with dense_b (|W|max 1.0), as
    split_fanout leaves a residual stream's term: copies dense_s_lif1, dense_s_lif2. On their own,
    lif1 would take vth = floor(254 * 2 / 0.5) = 1016 and lif2 floor(254 * 2 / 1.0) = 508; as
    one group both take 508, so both copies are round_even(254 * [0.5, -0.25]) = [128, -64]
    (alone, lif1's copy would be [254, -128]). Biases stay per LIF on the shared scale: lif1
    64 * 508 * 0.25 / 2 = 4064 (exponent 0), lif2 (0.25 + 0.5) -> 12192 = 3048 * 2^2. lif3
    (dense_c, |W|max 0.25, read once) keeps its own vth floor(254 * 2 / 0.25) = 2032."""
    def dense(w, b, copy_of=None):
        return nir.Affine(weight=np.array([w]), bias=np.array([b]),
                          metadata={"copy_of": copy_of} if copy_of else {})
    layers = [("lif0", lif(2), ("input",)),
              ("dense_s_lif1", dense([0.5, -0.25], 0.25, "dense_s"), ("lif0",)),
              ("dense_s_lif2", dense([0.5, -0.25], 0.25, "dense_s"), ("lif0",)),
              ("dense_b", dense([1.0, 0.0], 0.5), ("lif0",)),
              ("lif1", lif(1), ("dense_s_lif1",)), ("lif2", lif(1), ("dense_s_lif2", "dense_b")),
              ("dense_c", dense([0.25], 0.0), ("lif2",)), ("lif3", lif(1), ("dense_c",))]
    q = dict(quantize_layers(layers, load_profile("loihi2"))[0])
    reg = {n: q[n].metadata["loihi"] for n in ("lif1", "lif2", "lif3")}
    assert [(r["vth"], r["bias_exp"]) for r in reg.values()] == [(508, 0), (508, 2), (2032, 0)]
    assert [q[n].metadata["scale_group"] for n in reg] == ["lif1", "lif1", "lif3"]
    assert q["dense_s_lif1"].weight.tolist() == q["dense_s_lif2"].weight.tolist() == [[128, -64]]
    assert q["dense_b"].weight.tolist() == [[254, 0]]
    assert (q["dense_s_lif1"].bias * 64).tolist() == [4064]
    assert (q["dense_s_lif2"].bias * 64).tolist() == [12192] and q["dense_b"].bias.tolist() == [0]


def test_shared_groups_are_transitive():
    from spikeclip_deploy.lowering.quantize import shared_groups

    # a and b share x, b and c share y: one group; d reads z alone
    reads = {"a": ["x"], "b": ["y", "x"], "c": ["y"], "d": ["z"]}
    assert shared_groups(reads) == {"a": "a", "b": "a", "c": "a", "d": "d"}
    assert shared_groups({"c": ["y"], "b": ["y", "x"], "a": ["x"]}) == {"c": "c", "b": "c",
                                                                         "a": "c"}


def test_lifs_sharing_a_synapse_need_one_tau_and_threshold():
    def copy():
        return nir.Affine(np.ones((1, 2)), np.zeros(1), metadata={"copy_of": "d"})
    layers = [("lif0", lif(2), ("input",)), ("d_lif1", copy(), ("lif0",)),
              ("d_lif2", copy(), ("lif0",)),
              ("lif1", lif(1), ("d_lif1",)), ("lif2", lif(1, vth=0.5), ("d_lif2",))]
    with pytest.raises(LoweringError, match="'lif1' and 'lif2' read copies of one synapse"):
        quantize_layers(layers, load_profile("loihi2"))


def test_a_relay_no_lif_reads_is_a_lowering_error_naming_it():
    """relay0 sums dense0 but only lif1 reads dense0 (directly): the relay has no reader to take
    its payload's scale from, a LoweringError naming it (never a StopIteration)."""
    from spikeclip_deploy.exchange.nirgraph import relay_node

    layers = [("lif0", lif(2), ("input",)),
              ("dense0", nir.Affine(weight=np.array([[0.5, -0.25]]), bias=np.zeros(1)),
               ("lif0",)),
              ("lif1", lif(1), ("dense0",)), ("relay0", relay_node((1,), {}), ("dense0",))]
    with pytest.raises(LoweringError, match="stream relay 'relay0' is read by no chip LIF"):
        quantize_layers(layers, load_profile("loihi2"))
