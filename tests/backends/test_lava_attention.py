"""Spiking self-attention's populations on Lava's stock processes (backends/lava_attention.py).

A chip graph of three LIFs (Q, K, V, driven by the input), each head's four populations and the
attention LIF, run by the Lava backend over several samples: every population's payloads of
every model step equal what the shared description's reference (``exchange.attention.fire``)
computes from the recorded Q, K, V spikes of that step, the y payloads equal numpy's Q K^T V
per head, and the attention LIF takes w Y as its input current. Random small SSA graphs,
exported for loihi, on Lava against the emulator: tests/backends/test_attention.py."""
import nir
import numpy as np
import pytest

from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.exchange.attention import (ORDERS, AttentionNode, expand, fire,
                                                 head_specs)
from spikeclip_deploy.exchange.nirgraph import INPUT, ChipLayer
from spikeclip_deploy.hardware import load_profile

FP = load_profile("loihi2").fixed_point
#: port delays that align each population's factors (docs/attention-on-chip.md, "Delays")
ALIGNED = {"qm": (2, 0), "sv": (0, 2)}
REGISTERS = {"product": {"vth": 0, "exp": 0, "num_message_bits": 24},
             "sum": {"vth": 0, "num_message_bits": 24}}


def lif(shape, du, dv, vth):
    ones = np.ones(shape)
    return nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones,
                   metadata={"loihi": {"du": du, "dv": dv, "vth": vth, "bias_exp": 0}})


def attention_graph(heads, d, grid, order, weight, delays=ALIGNED):
    """q, k, v LIFs of shape (heads d, *grid) on the input (different thresholds and decays:
    different spikes), each head's populations, the attention LIF ``a`` reading every y."""
    shape = (heads * d, *grid)
    layers = [ChipLayer(name, lif(shape, du, dv, vth), (INPUT,))
              for name, du, dv, vth in (("q", 4095, 2000, 150), ("k", 3000, 1000, 200),
                                        ("v", 4095, 4095, 100))]
    ys = []
    for h in range(heads):
        for spec in head_specs("attn", h, heads, grid, d, order, ("q", "k", "v")):
            node = AttentionNode(spec=spec, weight=weight if spec.stage == "y" else 1.0,
                                 delays=delays.get(spec.stage, ()),
                                 metadata={"loihi": dict(REGISTERS[spec.kind])})
            layers.append(ChipLayer(spec.name, node, spec.inputs))
        ys.append(spec.name)
    layers.append(ChipLayer("a", lif(shape, 4095, 4095, 10**5), tuple(ys)))
    return layers


def lava_run(layers, mant, t):
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    return _Network(_lava(), layers, t, LavaBackend.handlers, FP.activation_shift, 1,
                    ".").record(mant, state=True)


def numpy_y(q, k, v, heads):
    """``[C, H, W]`` spikes -> ``(Q_h K_h^T) V_h`` per head on ``[C, H, W]``."""
    c, h, w = q.shape
    d = c // heads
    split = [x.reshape(heads, d, h * w).transpose(0, 2, 1).astype(np.int64) for x in (q, k, v)]
    y = (split[0] @ split[1].transpose(0, 2, 1)) @ split[2]
    return y.transpose(0, 2, 1).reshape(c, h, w)


@pytest.mark.lava
@pytest.mark.parametrize("order", ORDERS)
def test_attention_populations_on_lava_equal_the_reference_every_step(order):
    """Two heads of 3 channels on a 2 x 3 grid (non-square), 2 samples of 5 steps (the
    populations are memoryless: a sample's counts never carry into the next)."""
    heads, d, grid, t, weight = 2, 3, (2, 3), 5, 4
    layers = attention_graph(heads, d, grid, order, weight)
    rng = np.random.default_rng(3)
    mant = rng.integers(-50, 400, (2, heads * d, *grid))
    run = lava_run(layers, mant, t)
    by_name = {la.name: la for la in layers}
    seen = {n: run.spikes[n].reshape(2, t, -1).astype(np.int64) for n in "qkv"}
    ys = np.zeros((2, t, heads * d * grid[0] * grid[1]), dtype=np.int64)
    for la in layers:
        if not isinstance(la.node, AttentionNode):
            continue
        pop = expand(la.node.spec)
        want = fire(pop, [seen[i] for i in la.inputs])
        got = run.payloads[la.name]
        assert got.shape == (2, t, *pop.shape)
        np.testing.assert_array_equal(got.reshape(2, t, -1), want, err_msg=la.name)
        seen[la.name] = want
        if la.node.spec.stage == "y":
            ys[..., pop.targets] += want
    for b in range(2):
        for s in range(t):
            want = numpy_y(*(run.spikes[n][b, s] for n in "qkv"), heads)
            assert want.max() > 1, (b, s)  # counts, not single coincidences
            np.testing.assert_array_equal(ys[b, s], want.reshape(-1))
    # the attention LIF: u of its first step (reset before) is w Y << activation shift
    first = run.u["a"][:, 0].reshape(2, -1)
    np.testing.assert_array_equal(first, (weight * ys[:, 0]) << FP.activation_shift)
    assert by_name["a"].inputs == tuple(f"attn_h{h}_y" for h in range(heads))


@pytest.mark.lava
def test_a_product_neuron_of_two_spikes_sends_their_and_by_hand():
    """One head, one channel, two tokens, Q, K, V spiking at every step (input 400 >> every
    threshold): kv = 1 1 = 1 at both tokens, m = 2, qm = 1 2 = 2, y = 2, and the attention
    LIF takes 3 * 2 << 6 = 384."""
    layers = attention_graph(1, 1, (1, 2), "k_first", 3)
    run = lava_run(layers, np.full((1, 1, 1, 2), 4000), 2)
    assert run.spikes["q"].all() and run.spikes["k"].all() and run.spikes["v"].all()
    assert run.payloads["attn_h0_kv"].ravel().tolist() == [1, 1] * 2
    assert run.payloads["attn_h0_m"].ravel().tolist() == [2] * 2
    assert run.payloads["attn_h0_qm"].ravel().tolist() == [2, 2] * 2
    assert run.payloads["attn_h0_y"].ravel().tolist() == [2, 2] * 2
    assert run.u["a"][0, 0].ravel().tolist() == [384, 384]


def test_the_output_weight_is_split_into_lavas_mantissa_and_exponent():
    from spikeclip_deploy.backends.lava_attention import weight_mantissa

    assert weight_mantissa(4.0, "y") == (1, 2)
    assert weight_mantissa(24.0, "y") == (3, 3)
    assert weight_mantissa(-255.0, "y") == (-255, 0)
    with pytest.raises(ExportError, match="8 bits"):
        weight_mantissa(-257.0, "y")
    with pytest.raises(ExportError, match="no integer"):
        weight_mantissa(0.125, "y")
    with pytest.raises(ExportError, match="8 bits"):
        weight_mantissa(257.0, "y")

