"""The emulator backend (``loihi-emu``): Lava's fixed-point arithmetic worked by hand (weights,
decays, wrap, saturation), then bit-exact against Lava: spikes on the micro exports, and u, v
and spikes of every LIF, step and sample on hypothesis-generated networks (chains and fan-in of
mixed depths, dense and convolutional of any stride, padding, dilation and groups, any decays,
thresholds, exponents, extreme weights of one sign or mixed, currents that wrap u and saturate
v, T from 1 to 16, batch 1-3). CI runs 8 networks, the same every time (``derandomize``, no
example database) and without shrinking (each example costs a Lava run of 1-3 s: a failure
reports the network as drawn); for 200 (5-7 minutes)::

    SPIKECLIP_EMU_CASES=200 pytest tests/backends/test_emulator.py -k random \\
        --hypothesis-show-statistics

Residual streams and fan-in splits on graded relays are generated too (``stream_networks``,
``split_networks``). The residual, delayed-convolution, native and host-op networks are
compared in tests/backends/test_graphs.py and test_host_ops.py, where Lava runs them already."""
import os
from unittest import mock

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from spikeclip_deploy.backends import emulator, get_backend
from spikeclip_deploy.backends.emulator import Emulation, EmulatorBackend, Lif, shards
from spikeclip_deploy.backends.emulator_gemm import (CONV_KERNELS, FORCE_ENV, KERNELS,
                                                     OnednnConv, SpikeConv, power_of_two)
from spikeclip_deploy.backends.emulator_synapses import Conv, lava_weights, wrap
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.export import ExportConfig, export_model
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.exchange.manifest import load_export
from spikeclip_deploy.exchange.nirgraph import INPUT, ChipLayer, conv_out_hw
from spikeclip_deploy.zeroshot import tokenize

FP = load_profile("loihi2").fixed_point
CI_CASES = 8


def assert_same(name, var, got, want, what=""):
    """Equal ``[B, T, *shape]`` arrays, else the earliest difference: layer, variable, sample,
    step, neuron and both values."""
    assert got.shape == want.shape, f"{what}{name} {var}: shapes {got.shape} != {want.shape}"
    diff = np.argwhere(got != want)
    if len(diff):
        first = tuple(diff[np.lexsort((diff[:, 0], diff[:, 1]))[0]])  # earliest step first
        raise AssertionError(f"{what}layer {name}, {var}: {len(diff)} values differ; first at "
                             f"sample {first[0]}, step {first[1]}, neuron {first[2:]}: "
                             f"emulator {got[first]}, Lava {want[first]}")


def lif(shape, du, dv, vth, bias_exp=0):
    ones = np.ones(shape)
    return nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones,
                   metadata={"loihi": {"du": du, "dv": dv, "vth": vth, "bias_exp": bias_exp}})


def one_lif(mant, du, dv, vth, steps=4):
    """A single LIF driven by input mantissas ``mant`` (one neuron per value): u, v, spikes."""
    mant = np.asarray(mant)
    layers = [ChipLayer("lif0", lif(mant.shape, du, dv, vth), (INPUT,))]
    run = Emulation(layers, steps, FP, 1, ".").run(mant[None], record_state=True)
    return run.u["lif0"][0].T, run.v["lif0"][0].T, run.spikes["lif0"][0].T  # [neuron, step]


def test_lava_weights_by_hand():
    """Mixed signs: clipped to [-256, 255], lowest bit dropped (flooring); one sign: clipped to
    a magnitude of 255, nothing dropped."""
    assert lava_weights(np.array([3, -5, 300, -300, 255]), 8).tolist() == [2, -6, 254, -256, 254]
    assert lava_weights(np.array([3, 300, 0]), 8).tolist() == [3, 255, 0]
    assert lava_weights(np.array([-3, -300]), 8).tolist() == [-3, -255]


def test_a_convolution_wraps_its_sum_at_24_bits_and_has_no_exponent(tmp_path):
    """Lava's ``Conv`` wraps its sum: 2^23 + 5 reads -2^23 + 5, -2^23 - 1 reads 2^23 - 1; a
    convolution with a weight exponent is refused (``Conv`` would ignore it)."""
    assert wrap(torch.tensor([2**23 + 5, -(2**23) - 1, -(2**23), 7]), 24).tolist() == \
        [-(2**23) + 5, 2**23 - 1, -(2**23), 7]
    conv = nir.Conv2d(input_shape=(1, 1), weight=np.ones((1, 1, 1, 1)), stride=1, padding=0,
                      dilation=1, groups=1, bias=np.zeros(1),
                      metadata={"loihi": {"weight_exp": 1}})
    layers = [ChipLayer("lif0", lif((1, 1, 1), 4095, 0, 1), (INPUT,)),
              ChipLayer("conv", conv, ("lif0",)),
              ChipLayer("lif1", lif((1, 1, 1), 4095, 0, 1), ("conv",))]
    with pytest.raises(ExportError, match="convolution 'conv' has weight_exp 1"):
        Emulation(layers, 1, FP, 1, tmp_path)


def test_decays_truncate_toward_zero_by_hand():
    """m = -3, du = 2047 (u halves), dv = 1 (v keeps 4095/4096): u = -192, -288, -336, -360;
    v = -192, trunc(-191.95) - 288 = -479, trunc(-478.88) - 336 = -814, trunc(-813.80) - 360 =
    -1173. m = 10, du = 4095, dv = 2048, vth = 18 (1152): v = 640, 960, 1120, 1200 > 1152:
    spike, v = 0."""
    u, v, s = one_lif([-3], 2047, 1, 100)
    assert u.tolist() == [[-192, -288, -336, -360]]
    assert v.tolist() == [[-192, -479, -814, -1173]] and not s.any()
    u, v, s = one_lif([10], 4095, 2048, 18)
    assert u.tolist() == [[640] * 4]
    assert v.tolist() == [[640, 960, 1120, 0]] and s.tolist() == [[0, 0, 0, 1]]


def test_a_decay_beyond_float32_stays_exact_by_hand():
    """m = 65537, du = 4095 (u = 64 m = 4194368 each step), dv = 1 (v keeps 4095 / 4096):
    v = 4194368, then trunc(4194368 * 4095 / 4096) = trunc(4193343.98) = 4193343, + 4194368 =
    8387711. float32 holds 4193343.98 as 4193344 (its step is 0.5 there): the decay of such a
    v needs float64."""
    _, v, _ = one_lif([65537], 4095, 1, 2**17 - 1, steps=2)
    assert v.tolist() == [[4194368, 8387711]]


def test_lif_bounds_by_hand():
    """|a_in << a| <= a, T = 4, 24-bit state (top 2^23), bias 0, vth 64: v saturates below
    2^23, so the largest value is u's bound (one wrap a step: |u| <= 4 (a + 2^24)) or a
    decay's product |u| m (k = m 2^j, m odd): dv = 1 keeps 4095 / 4096: (2^23 - 1) 4095 <
    2^53; a u decay keeping 4095 / 4096 (du = 0): 4 (2^39 + 2^24) 4095 < 2^53 <=
    4 (2^40 + 2^24) 4095; none (du = 4095): 4 (2^50 + 2^24) + 2^24 < 2^53 <= 4 (2^51 + 2^24)."""
    def exact(a, keep_u, keep_v):
        return Lif("lif", keep_u, keep_v, 64, 2**23, 12, torch.zeros(3)).biggest(a, 4) < 2**53

    assert exact(2**20, 0, 4095)
    assert exact(2**39, 4095, 2048) and not exact(2**40, 4095, 2048)
    assert exact(2**50, 0, 2048) and not exact(2**51, 0, 2048)
    with pytest.raises(ExportError, match="LIF 'lif0': its state can exceed 2\\^53"):
        one_lif([2**47], 4095, 2048, 1)  # 2^47 << 6 = 2^53


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one CPU")
def test_a_refusal_on_a_worker_thread_reaches_the_caller():
    """Two samples on two worker threads, the second beyond 2^53: the run is refused."""
    import numba

    torch.set_num_threads(2)
    numba.set_num_threads(2)
    emulation = Emulation([ChipLayer("lif0", lif((1,), 4095, 2048, 1), (INPUT,))], 4, FP, 1, ".")
    emulation.chunk = 1
    with pytest.raises(ExportError, match="LIF 'lif0': its state can exceed 2\\^53"):
        emulation.run(np.array([[1], [2**47]]))
    assert len(emulation.replicas) == 2


def test_u_wraps_and_v_saturates_at_24_bits_by_hand():
    """u = 131073 << 6 = 8388672 > 2^23 wraps once to 8388672 - 2^24 = -8388544, and
    -131072 << 6 = -2^23 to +2^23 (Lava wraps at <= -2^23); v (no decay) saturates at
    -(2^23 - 1) = -8388607: -6.4e6, then -8388607 twice."""
    u, v, _ = one_lif([131073], 4095, 0, 1, steps=2)
    assert u.tolist() == [[-8388544, -8388544]]
    u, v, _ = one_lif([-131072], 4095, 0, 1, steps=1)
    assert u.tolist() == [[8388608]]
    _, v, _ = one_lif([-100000], 4095, 0, 1, steps=3)
    assert v.tolist() == [[-6400000, -8388607, -8388607]]


def test_an_input_mantissa_beyond_int32_reaches_the_lif_whole_by_hand():
    """m = 2^31 + 3 (beyond int32: the input runs in int64) and -5, du = 4095 (u = m << 6):
    u = 2^37 + 192 > 2^23 wraps once to 2^37 + 192 - 2^24 = 137422176448; -5 gives -320."""
    u, _, _ = one_lif([2**31 + 3, -5], 4095, 0, 1, steps=1)
    assert u.tolist() == [[137422176448], [-320]]


def test_the_registry_runs_a_loihi_export_on_the_emulator(micro_ckpt, micro_exports, tmp_path):
    """``loihi-emu`` runs ``--target loihi`` exports (exporting for it writes one) and refuses
    a float one."""
    assert get_backend("loihi-emu") is EmulatorBackend
    path, manifest = export_model(ExportConfig(model=str(micro_ckpt), target="loihi-emu",
                                               out=tmp_path / "emu"))
    loihi = load_export(micro_exports["loihi"])
    assert [manifest[k] for k in ("target", "hardware", "passes")] == \
        [loihi[k] for k in ("target", "hardware", "passes")] == ["loihi", "loihi2", loihi["passes"]]
    assert "align_delays" in loihi["passes"] and path.name == "emu"
    with pytest.raises(ExportError, match="--target loihi"):
        EmulatorBackend(micro_exports["cpu"])


@pytest.mark.lava
def test_micro_exports_equal_lava(micro_exports):
    """Both encoders of the micro export: every LIF, step and neuron as on Lava."""
    emu = EmulatorBackend(micro_exports["loihi"])
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    image = emu.host.image_current(images)
    text = emu.host.text_current(tokenize(emu.host.tokenizer, ["a photo of a cat", "a bird"],
                                          emu.manifest["host"]["context_length"]))
    with get_backend("loihi")(micro_exports["loihi"]) as lava:
        for side, current in (("image", image), ("text", text)):
            got = emu.run_chip(side, current)
            assert all(0 < s.mean() < 1 for s in got), [s.mean() for s in got]
            for name, g, w in zip(emu.lif_names(side), got, lava.run_chip(side, current),
                                  strict=True):
                assert_same(name, "spikes", g, w, f"{side}/")


# -- hypothesis: random networks, emulator against Lava on spikes, u and v ------------------
def seeded_ints(draw, shape, lo, hi, extremes=(), fraction_zero=0.0):
    """Integers in ``[lo, hi]`` from a drawn seed (the bulk of a network's numbers), with the
    values ``extremes`` at random places and about ``fraction_zero`` of them 0."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(lo, hi + 1, shape)
    a[rng.random(shape) < fraction_zero] = 0
    at = rng.permutation(a.size)[:len(extremes)]
    a.flat[at] = list(extremes)[:len(at)]
    return a


def lif_params(draw, shape):
    """A LIF with any decays (0, 4095 and the rest), threshold and bias exponent."""
    decay = st.one_of(st.sampled_from([0, 1, 2048, 4094, 4095]), st.integers(0, 4095))
    vth = st.one_of(st.sampled_from([1, 131071]), st.integers(1, 1024), st.integers(1, 131071))
    return lif(shape, draw(decay), draw(decay), draw(vth), draw(st.integers(0, 7)))


def synapse_weights(draw, shape):
    """Weights of one sign or (twice as often) mixed, small or up to the 8-bit extremes (-256
    and 255 forced in when drawn), some zero."""
    sign = draw(st.sampled_from(["mixed", "mixed", "excitatory", "inhibitory"]))
    top = draw(st.sampled_from([255, 63, 7]))
    lo, hi = {"mixed": (-top - 1, top), "excitatory": (0, top), "inhibitory": (-top - 1, 0)}[sign]
    extremes = {"mixed": (-256, 255), "excitatory": (255,), "inhibitory": (-256,)}[sign]
    return seeded_ints(draw, shape, lo, hi, extremes if draw(st.booleans()) else (),
                       draw(st.sampled_from([0.0, 0.5])))


def synapse_bias(draw, n, lif_node, parts=1):
    """NIR biases whose mantissas on the LIF (bias exponent ``e``) are integers in the 13-bit
    range, or in its ``parts``-th part (a stream's term, summed with others): ``b = m 2^{e -
    a}``."""
    e = int(lif_node.metadata["loihi"]["bias_exp"])
    lo, hi = -4096 // parts, 4095 // parts
    return seeded_ints(draw, n, lo, hi, (lo, hi) if draw(st.booleans()) else ()
                       ) * 2.0 ** (e - FP.activation_shift)


def conv(c_in, c_out, groups, kernel, stride, padding, dilation, weight=None, bias=None,
         delay=0):
    """``nir.Conv2d`` (zero weights and bias unless given)."""
    return nir.Conv2d(input_shape=None, weight=np.zeros((c_out, c_in // groups, *kernel))
                      if weight is None else weight, stride=stride, padding=padding,
                      dilation=dilation, groups=groups,
                      bias=np.zeros(c_out) if bias is None else bias,
                      metadata={"loihi": {"weight_exp": 0}, "delay": delay})


def geometry(draw, hw, out_hw=None):
    """(kernel, stride, padding, dilation), per axis, of a convolution on ``hw``: any (padding
    up to 1, output at least 1), or one whose output is ``out_hw`` (padding up to 2; None when
    there is none)."""
    axes = []
    for n, want in zip(hw, out_hw or (None, None)):
        options = [(k, s, p, d) for k in (1, 2, 3) for s in (1, 2)
                   for p in ((0, 1, 2) if want else (0, 1)) for d in ((1, 2) if k > 1 else (1,))
                   if n + 2 * p >= d * (k - 1) + 1]
        if want:  # the output length along this axis (a one-pixel-wide convolution's height)
            options = [(k, s, p, d) for k, s, p, d in options
                       if conv_out_hw(conv(1, 1, 1, (k, 1), (s, 1), (p, 0), (d, 1)), (n, 1))[0]
                       == want]
        if not options:
            return None
        axes.append(draw(st.sampled_from(options)))
    return tuple(zip(*axes))


def conv2d(draw, shape_in, lif_of, delay=0, shape_out=None, parts=1):
    """(``nir.Conv2d``, the LIF after it): exponent 0 (Lava's ``Conv`` has none), any kernel,
    stride, padding and dilation per axis, groups dividing both channel counts; the LIF made by
    ``lif_of(shape)``; with ``shape_out``, a convolution that gives it (None if none does)."""
    c_in = shape_in[0]
    c_out = shape_out[0] if shape_out else draw(st.integers(1, 4))
    geo = geometry(draw, shape_in[1:], shape_out and shape_out[1:])
    if geo is None:
        return None
    groups = draw(st.sampled_from([g for g in range(1, c_in + 1) if c_in % g == c_out % g == 0]))
    shape = shape_out or (c_out, *conv_out_hw(conv(c_in, c_out, groups, *geo), shape_in[1:]))
    node = lif_of(shape)
    w = synapse_weights(draw, (c_out, c_in // groups, *geo[0]))
    return conv(c_in, c_out, groups, *geo, w, synapse_bias(draw, c_out, node, parts), delay), node


def affine(draw, shape_in, lif_of, delay=0, shape_out=None, parts=1):
    """(``nir.Affine``, the LIF after it): any weight exponent from -4 to 7; ``shape_out``, or
    1-12 neurons."""
    node = lif_of(shape_out or (draw(st.integers(1, 12)),))
    n = len(node.tau)
    return nir.Affine(weight=synapse_weights(draw, (n, shape_in[0])),
                      bias=synapse_bias(draw, n, node, parts),
                      metadata={"loihi": {"weight_exp": draw(st.integers(-4, 7))},
                                "delay": delay}), node


@st.composite
def networks(draw):
    r"""(layers, input mantissas ``[B, *shape]``, T): a chain of 2-4 LIFs, dense or
    convolutional, where every LIF :math:`k \geq 2` may also read any earlier LIF :math:`j`
    through a skip synapse delayed :math:`k - 1 - j` (fan-in of mixed depths); T from 1 to 16,
    batch 1-3; input mantissas of 13 bits, or up to :math:`2^{17} + 1` (:math:`2^6` times that
    wraps u at the first LIF)."""
    t, b, n_lif = draw(st.integers(1, 16)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    synapse = draw(st.sampled_from([affine, conv2d]))
    shapes = [(draw(st.integers(1, 12)),) if synapse is affine else
              (draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))]
    layers = [ChipLayer("lif0", lif_params(draw, shapes[0]), (INPUT,))]
    for k in range(1, n_lif):
        syn, node = synapse(draw, shapes[-1], lambda shape: lif_params(draw, shape))
        shapes.append(tuple(np.asarray(node.tau).shape))
        layers.append(ChipLayer(f"syn{k}", syn, (f"lif{k - 1}",)))
        inputs = [f"syn{k}"]
        for j in range(k - 1):
            skip = draw(st.booleans()) and synapse(draw, shapes[j], lambda _: node, k - 1 - j,
                                                   shapes[k])
            if skip:
                layers.append(ChipLayer(f"skip{j}_{k}", skip[0], (f"lif{j}",)))
                inputs.append(f"skip{j}_{k}")
        layers.append(ChipLayer(f"lif{k}", node, tuple(inputs)))
    top = draw(st.sampled_from([4095, 2**17 + 1]))
    mant = seeded_ints(draw, (b, *shapes[0]), -top - 1, top, (-top - 1, top))
    return layers, mant, t


def relay(shape, delays):
    """A graded stream relay (``GradedVec``, threshold 0, 24-bit payloads) of ``shape``."""
    return nir.Scale(scale=np.ones(shape), metadata={
        "relay": "graded", "loihi": {"vth": 0, "num_message_bits": 24}, "delays": delays})


@st.composite
def stream_networks(draw):
    r"""(layers, input mantissas, T): a residual stream of 2-4 terms on graded relays, dense or
    convolutional: ``lif0 -syn1-> relay1 -> lif1 -syn2-> relay2 -> lif2 ...``, where each relay
    :math:`k \geq 2` also sums relay :math:`k-1` through an identity synapse held one step
    (relay :math:`k-1` arrives at its reader one step after itself, the new term two steps
    after it); every relay and LIF of one shape; any synapse weights, exponents, decays and
    thresholds as in :func:`networks`, so payloads reach thousands and u wraps. The stream's
    readers share one bias exponent and each term's bias mantissas are a share of the 13-bit
    range, so that every reader's sum fits it, as the export makes them."""
    t, b, n_lif = draw(st.integers(1, 12)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    synapse = draw(st.sampled_from([affine, conv2d]))
    shape = ((draw(st.integers(1, 12)),) if synapse is affine else
             (draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))))
    first = ((draw(st.integers(1, 12)),) if synapse is affine else
             (draw(st.integers(1, 4)), *shape[1:]))
    layers = [ChipLayer("lif0", lif_params(draw, first), (INPUT,))]
    shapes = [first]
    bias_exp = draw(st.integers(0, 7))

    def reader(s):
        node = lif_params(draw, s)
        node.metadata["loihi"]["bias_exp"] = bias_exp
        return node
    for k in range(1, n_lif):
        syn, node = synapse(draw, shapes[-1], reader, 0, shape, n_lif - 1)
        layers.append(ChipLayer(f"syn{k}", syn, (f"lif{k - 1}",)))
        inputs = (f"syn{k}",) if k == 1 else (f"relay{k - 1}", f"syn{k}")
        delays = {} if k == n_lif - 1 else {f"relay{k + 1}": 1}
        layers.append(ChipLayer(f"relay{k}", relay(shape, delays), inputs))
        layers.append(ChipLayer(f"lif{k}", node, (f"relay{k}",)))
        shapes.append(shape)
    top = draw(st.sampled_from([4095, 2**17 + 1]))
    mant = seeded_ints(draw, (b, *first), -top - 1, top, (-top - 1, top))
    return layers, mant, t


def lava_record(layers, mant, t):
    """Lava's run of ``layers``, spikes, u and v."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    return _Network(_lava(), layers, t, LavaBackend.handlers, FP.activation_shift, 1,
                    ".").record(mant, state=True)


#: the Lava property tests' cases: a fixed number (``$SPIKECLIP_EMU_CASES``, else CI_CASES),
#: derandomized, explicit examples first
LAVA_CASES = settings(max_examples=int(os.environ.get("SPIKECLIP_EMU_CASES", CI_CASES)),
                      derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow])


def assert_same_runs(got, want, what=""):
    """Equal u, v and spikes of every LIF, layer by layer, and payloads of every relay."""
    assert list(got.spikes) == list(want.spikes), what
    assert list(got.payloads) == list(want.payloads), what
    for name in want.spikes:
        for var in ("u", "v", "spikes"):
            assert_same(name, var, getattr(got, var)[name], getattr(want, var)[name], what)
    for name in want.payloads:
        assert_same(name, "payloads", got.payloads[name], want.payloads[name], what)


@pytest.mark.lava
@LAVA_CASES
@given(networks())
def test_random_networks_equal_lava(network):
    """Every LIF's u, v and spikes, every step and sample, as on Lava."""
    layers, mant, t = network
    want = lava_record(layers, mant, t)
    for kernel in (*KERNELS, *CONV_KERNELS):  # each forced where it is exact
        got = emulate_forced(kernel, layers, t, mant)
        assert_same_runs(got, want, f"{kernel}, {len(layers)} layers, T={t}: ")
    kind = "convolutional" if layers[0].node.tau.ndim == 3 else "dense"
    event(f"{kind}, {len(got.spikes)} LIFs")
    event(f"{sum(la.name.startswith('skip') for la in layers)} skip synapses")
    event("|u| reaches 2^22" if max(abs(u).max() for u in got.u.values()) >= 2**22 else "small u")
    if min(v.min() for v in got.v.values()) == -(2**23) + 1:
        event("v saturates")


def emulate_forced(kernel, layers, t, mant):
    """The emulator's run with ``kernel`` forced (``$SPIKECLIP_EMU_KERNEL``), which every
    synapse whose bounds admit it must have run on."""
    old = os.environ.get(FORCE_ENV)
    os.environ[FORCE_ENV] = kernel
    try:
        emulation = Emulation(layers, t, FP, 1, ".")
        run = emulation.run(mant, record_state=True)
    finally:
        os.environ.pop(FORCE_ENV) if old is None else os.environ.update({FORCE_ENV: old})
    for syn in emulation.synapses.values():
        if kernel in CONV_KERNELS:  # every convolution, where exact
            if isinstance(syn, Conv):
                w = syn.weight >> power_of_two(syn.weight)
                fan_in = np.abs(w).reshape(len(w), -1).sum(1).max()
                assert bool(syn._direct) == (
                    -128 <= w.min() and w.max() <= 127 and fan_in < 2**24
                    if kernel == OnednnConv.name else syn.groups == 1 and fan_in < 2**31
                ), syn.name
        elif syn.kernel is not None and KERNELS[kernel].exact(syn.matrix >> syn.k,
                                                              syn.bound_in):
            assert syn.kernel.name == kernel, (syn.name, kernel)
    if kernel in CONV_KERNELS:
        event(f"{sum(bool(getattr(s, '_direct', 0)) for s in emulation.synapses.values())} "
              f"direct convolution(s) on {kernel}")
    return run


@pytest.mark.lava
@LAVA_CASES
@given(stream_networks())
def test_random_streams_equal_lava(network):
    """Residual streams on graded relays: every relay's payloads and every LIF's u, v and
    spikes, every step and sample, as on Lava (stock ``GradedVec``, ``Sparse`` and
    ``DelaySparse`` reading graded spikes)."""
    layers, mant, t = network
    got = Emulation(layers, t, FP, 1, ".").run(mant, record_state=True)
    event(f"{'convolutional' if layers[0].node.tau.ndim == 3 else 'dense'}, "
          f"{len(got.payloads)} relays")
    peak = max(abs(p).max() for p in got.payloads.values())
    event("payloads reach 2^10" if peak >= 2**10 else "small payloads" if peak else "no payload")
    assert_same_runs(got, lava_record(layers, mant, t), f"{len(layers)} layers, T={t}: ")


def split_parts(whole, n_parts, width):
    """``whole``'s fan-in split as the ``split_fan_in`` pass writes it (``part_of``: "whole"):
    part :math:`k` its own run of ``width`` columns (zero elsewhere; part 0 the bias), held
    :math:`k` steps."""
    w = np.asarray(whole.weight)
    parts = []
    for k in range(n_parts):
        wk = np.zeros_like(w)
        wk[:, k * width:(k + 1) * width] = w[:, k * width:(k + 1) * width]
        parts.append(nir.Affine(weight=wk, bias=np.asarray(whole.bias) * (k == 0),
                                metadata={**whole.metadata, "delay": k, "part_of": "whole"}))
    return parts


@st.composite
def split_networks(draw):
    r"""(layers, input mantissas, T): a dense layer's fan-in split into 2-5 parts summed on a
    chain of graded relays, as the ``split_fan_in`` pass writes it (its metadata ``part_of``,
    ``fan_in_of`` too): ``lif0 -part_k-> sum_k``,
    :math:`sum_k = sum_{k-1} + part_k`, ``lif1`` reading the last; part :math:`k` (its own run
    of columns, zero elsewhere; part 0 the bias) held :math:`k` steps; weights, exponents (one
    for all parts), decays and thresholds as in :func:`networks`."""
    t, b = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    n_parts, width = draw(st.integers(2, 5)), draw(st.integers(1, 4))
    n_in = n_parts * width
    layers = [ChipLayer("lif0", lif_params(draw, (n_in,)), (INPUT,))]
    whole, reader = affine(draw, (n_in,), lambda s: lif_params(draw, s))
    for k, part in enumerate(split_parts(whole, n_parts, width)):
        layers.append(ChipLayer(f"part{k}", part, ("lif0",)))
        sum_k = relay(reader.tau.shape, {})
        sum_k.metadata["fan_in_of"] = "whole"
        layers.append(ChipLayer(f"sum{k}", sum_k, ((f"sum{k - 1}",) if k else ()) + (f"part{k}",)))
    layers.append(ChipLayer("lif1", reader, (f"sum{n_parts - 1}",)))
    top = draw(st.sampled_from([4095, 2**17 + 1]))
    mant = seeded_ints(draw, (b, n_in), -top - 1, top, (-top - 1, top))
    return layers, mant, t


@pytest.mark.lava
@LAVA_CASES
@given(split_networks())
def test_random_split_fan_ins_equal_lava(network):
    """A fan-in split on graded relays: every relay's payloads and both LIFs' u, v and spikes,
    every step and sample, as on Lava; and the spikes of a run that records no state, where
    the emulator sums the parts in one product wherever that is exact (a part's exponent not
    negative, Lava's weights of the parts summing to the whole's)."""
    layers, mant, t = network
    emulation = Emulation(layers, t, FP, 1, ".")
    got = emulation.run(mant, record_state=True)
    event(f"{len(got.payloads)} parts")
    want = lava_record(layers, mant, t)
    assert_same_runs(got, want, f"{len(layers)} layers, T={t}: ")
    fused = [la.name for la in emulation.fused] == ["lif0", "whole", f"sum{len(got.payloads) - 1}",
                                                    "lif1"]
    event("fused" if fused else "not fused")
    if not fused:
        assert [la.name for la in emulation.fused] == [la.name for la in layers]
    for name, spikes in emulation.run(mant).spikes.items():
        assert_same(name, "spikes", spikes, want.spikes[name], "no state recorded: ")


@st.composite
def split_stream_networks(draw):
    r"""(layers, input mantissas, T): the paper-size encoder's stream in small, dense: ``lif0
    -syn1-> relay1 -> lif1``; ``lif1``'s synapse split into 2-4 parts summed on a chain of
    relays that starts from ``relay1`` (the residual: ``sum0 = relay1 + part0``, :math:`sum_k =
    sum_{k-1} + part_k`) and ends in ``relay2 -> lif2``; ``relay3 = relay2 + syn3 (lif2) ->
    lif3`` (the parts and relays marked as ``split_fan_in`` marks them). Relays read by one
    reader hand it their terms; ``relay1`` (two readers, one term) too; ``relay2`` (two
    readers, :math:`k + 1` terms) forms its sum where :math:`k \geq 3`
    (:func:`~spikeclip_deploy.backends.emulator.deferred_relays`); where the chain is fused
    (a run without state), ``relay2`` hands on two terms."""
    t, b, n_parts = draw(st.integers(1, 12)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    width = draw(st.integers(1, 3))
    first, shape = (n_parts * width,), (n_parts * width,)
    bias_exp = draw(st.integers(0, 7))

    def reader(s):
        node = lif_params(draw, s)
        node.metadata["loihi"]["bias_exp"] = bias_exp
        return node
    syn1, lif1 = affine(draw, first, reader, 0, shape, 3)
    whole, lif2 = affine(draw, shape, reader, 0, shape, 3)
    syn3, lif3 = affine(draw, shape, reader, 0, shape, 3)
    layers = [ChipLayer("lif0", lif_params(draw, first), (INPUT,)),
              ChipLayer("syn1", syn1, ("lif0",)),
              ChipLayer("relay1", relay(shape, {"sum0": 1}), ("syn1",)),
              ChipLayer("lif1", lif1, ("relay1",))]
    for k, part in enumerate(split_parts(whole, n_parts, width)):
        last = k == n_parts - 1
        sum_k = relay(shape, {"relay3": 1} if last else {})
        sum_k.metadata["fan_in_of"] = "whole"
        layers += [ChipLayer(f"part{k}", part, ("lif1",)),
                   ChipLayer("relay2" if last else f"sum{k}", sum_k,
                             (f"sum{k - 1}" if k else "relay1", f"part{k}"))]
    layers += [ChipLayer("lif2", lif2, ("relay2",)), ChipLayer("syn3", syn3, ("lif2",)),
               ChipLayer("relay3", relay(shape, {}), ("relay2", "syn3")),
               ChipLayer("lif3", lif3, ("relay3",))]
    top = draw(st.sampled_from([4095, 2**17 + 1]))
    mant = seeded_ints(draw, (b, *first), -top - 1, top, (-top - 1, top))
    return layers, mant, t


@pytest.mark.lava
@LAVA_CASES
@given(split_stream_networks())
def test_random_split_streams_equal_lava(network):
    """A fan-in split on a residual stream, its relays' sums formed or handed on as terms:
    every relay's payloads and every LIF's u, v and spikes, every step and sample, as on
    Lava; and the spikes of a run that records no state (the chain fused where exact)."""
    layers, mant, t = network
    emulation = Emulation(layers, t, FP, 1, ".")
    event(f"relay2 {'deferred' if 'relay2' in emulation.deferred[True] else 'formed'}")
    event("fused" if len(emulation.fused) < len(layers) else "not fused")
    got = emulation.run(mant, record_state=True)
    want = lava_record(layers, mant, t)
    assert_same_runs(got, want, f"{len(layers)} layers, T={t}: ")
    for name, spikes in emulation.run(mant).spikes.items():
        assert_same(name, "spikes", spikes, want.spikes[name], "no state recorded: ")


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate])
@given(split_stream_networks(), st.booleans())
def test_deferred_relays_run_as_formed_sums(network, record_state):
    """Relays handing their readers their terms: the same spikes (and state) as with every
    relay's sum formed."""
    layers, mant, t = network
    got = Emulation(layers, t, FP, 1, ".").run(mant, record_state)
    with mock.patch.object(emulator, "deferred_relays", lambda layers: frozenset()):
        formed = Emulation(layers, t, FP, 1, ".")
        want = formed.run(mant, record_state)
    assert not any(formed.deferred.values())
    if record_state:
        assert_same_runs(got, want, f"{len(layers)} layers, T={t}: ")
    for name, s in want.spikes.items():
        assert_same(name, "spikes", got.spikes[name], s)


def test_a_relay_sums_its_inputs_by_hand():
    """lif0 (two neurons, always spiking: vth 1, input 100) -> syn1 (weights 4, -6) -> relay1
    -> lif1, and relay2 = relay1 (held one step) + syn2 (lif1 -> weight 8): payloads 4 and -6 at
    relay1, and at relay2 those plus 8 where lif1 spikes (vth 2: only the first neuron, at every
    step: u = 4 << 6 = 256 > 128; the second's stays negative), which lif2 takes as u = p << 6."""
    dense = lambda w: nir.Affine(weight=np.array(w), bias=np.zeros(2),  # noqa: E731
                                 metadata={"loihi": {"weight_exp": 0}})
    layers = [ChipLayer("lif0", lif((2,), 4095, 4095, 1), (INPUT,)),
              ChipLayer("syn1", dense([[4, 0], [0, -6]]), ("lif0",)),
              ChipLayer("relay1", relay((2,), {"relay2": 1}), ("syn1",)),
              ChipLayer("lif1", lif((2,), 4095, 4095, 2), ("relay1",)),
              ChipLayer("syn2", dense([[8, 0], [0, 8]]), ("lif1",)),
              ChipLayer("relay2", relay((2,), {}), ("relay1", "syn2")),
              ChipLayer("lif2", lif((2,), 4095, 4095, 1000), ("relay2",))]
    run = Emulation(layers, 3, FP, 1, ".").run(np.array([[100, 100]]), record_state=True)
    assert run.payloads["relay1"][0].tolist() == [[4, -6]] * 3
    assert run.spikes["lif1"][0].tolist() == [[1, 0]] * 3
    assert run.payloads["relay2"][0].tolist() == [[12, -6]] * 3
    assert run.u["lif2"][0].tolist() == [[768, -384]] * 3


@pytest.mark.lava
def test_lava_records_u_and_v_by_hand():
    """Lava's recorded state, two samples of the hand-worked decays above (m = -3, du = 2047,
    dv = 1): the same u and v in both, the second sample starting again from 0."""
    layers = [ChipLayer("lif0", lif((1,), 2047, 1, 100), (INPUT,))]
    run = lava_record(layers, np.array([[-3], [-3]]), 4)
    assert run.u["lif0"][..., 0].tolist() == [[-192, -288, -336, -360]] * 2
    assert run.v["lif0"][..., 0].tolist() == [[-192, -479, -814, -1173]] * 2
    assert not run.spikes["lif0"].any()


@pytest.mark.lava
def test_the_24_bit_edges_equal_lava():
    """The wrap and saturation above on Lava: u = -2^23 wraps to +2^23, so v saturates and
    spikes at once; u = 2^23 + 64 wraps negative, no spike; u and v as computed by hand."""
    layers = [ChipLayer("lif0", lif((3,), 4095, 0, 1), (INPUT,))]
    mant = np.array([[131073, -131072, -100000]])
    run = Emulation(layers, 3, FP, 1, ".").run(mant, record_state=True)
    assert run.spikes["lif0"][0].T.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert run.v["lif0"][0, :, 2].tolist() == [-6400000, -8388607, -8388607]
    assert_same_runs(run, lava_record(layers, mant, 3))


def residual_copies(rng):
    """lif0 -> syn1 -> lif1 -> syn2 -> lif2, with skip and other: lif0 -> lif2 (delayed one step
    to align). skip has syn1's weights (a copy of it for another reader), syn2 too but another
    source, other another sign."""
    shape, w = (6,), rng.integers(-100, 100, (6, 6)) * 2

    def dense(w, delay):
        return nir.Affine(weight=w, bias=np.full(6, 0.5),
                          metadata={"loihi": {"weight_exp": 0}, "delay": delay})

    return [ChipLayer("lif0", lif(shape, 4095, 2048, 20), (INPUT,)),
            ChipLayer("syn1", dense(w, 0), ("lif0",)),
            ChipLayer("skip", dense(w, 1), ("lif0",)),
            ChipLayer("other", dense(-w, 1), ("lif0",)),
            ChipLayer("lif1", lif(shape, 4095, 2048, 20), ("syn1",)),
            ChipLayer("syn2", dense(w, 0), ("lif1",)),
            ChipLayer("lif2", lif(shape, 4095, 2048, 20), ("syn2", "skip", "other"))]


@pytest.mark.lava
def test_a_synapse_copied_for_another_reader_runs_once():
    """skip reuses syn1's product; syn2 and other do not; u, v and spikes are Lava's."""
    layers = residual_copies(np.random.default_rng(0))
    emulation = Emulation(layers, 4, FP, 1, ".")
    assert emulation.copy_of == {"skip": "syn1"}
    assert set(emulation.synapses) == {"syn1", "syn2", "other"}
    mant = np.random.default_rng(1).integers(-500, 3000, (3, 6))
    run = emulation.run(mant, record_state=True)
    assert all(0 < s.mean() < 1 for s in run.spikes.values())
    assert_same_runs(run, lava_record(layers, mant, 4))


@pytest.mark.lava
def test_chunked_runs_equal_lava():
    """Five samples run whole, two at a time, and one at a time; and on each kernel."""
    layers = residual_copies(np.random.default_rng(2))
    mant = np.random.default_rng(3).integers(-500, 3000, (5, 6))
    want = lava_record(layers, mant, 4)
    for samples in (5, 2, 1):
        emulation = Emulation(layers, 4, FP, 1, ".")
        emulation.chunk = samples
        assert_same_runs(emulation.run(mant, record_state=True), want, f"{samples}: ")
    for kernel in KERNELS:
        assert_same_runs(emulate_forced(kernel, layers, 4, mant), want, f"{kernel}: ")


@pytest.mark.parametrize("samples, chunk, workers", [(64, 16, 2), (5, 16, 2), (5, 2, 2),
                                                      (7, 3, 3), (3, 16, 3), (1, 1, 1)])
def test_shards_deal_every_sample_once_and_each_worker_some(samples, chunk, workers):
    dealt = shards(samples, chunk, workers)
    assert len(dealt) == workers and all(dealt)
    rows = [r for pieces in dealt for piece in pieces for r in range(piece.start, piece.stop)]
    assert sorted(rows) == list(range(samples))
    assert max(p.stop - p.start for pieces in dealt for p in pieces) <= chunk


def wide_residual(rng):
    """lif0 -> syn1 -> lif1 -> syn2 -> lif2, skip: lif0 -> lif2 (delayed one step), every
    convolution 3x3 with padding 1 and a bias per channel on LIFs of 3 x 21 x 20 = 1260
    neurons: a block of :data:`~spikeclip_deploy.backends.emulator_lif.BLOCK` and a part of
    another; u keeping part of its value at lif1, two inputs at lif2."""
    shape = (3, 21, 20)

    def conv3(delay):
        w = rng.integers(-60, 60, (3, 3, 3, 3)) * 2
        return conv(3, 3, 1, (3, 3), (1, 1), (1, 1), (1, 1), w, rng.integers(-8, 8, 3) / 4,
                    delay)

    return [ChipLayer("lif0", lif(shape, 4095, 2048, 20), (INPUT,)),
            ChipLayer("syn1", conv3(0), ("lif0",)),
            ChipLayer("skip", conv3(1), ("lif0",)),
            ChipLayer("lif1", lif(shape, 1024, 2048, 20), ("syn1",)),
            ChipLayer("syn2", conv3(0), ("lif1",)),
            ChipLayer("lif2", lif(shape, 4095, 1000, 40), ("syn2", "skip"))]


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one CPU")
def test_worker_threads_share_each_synapses_kernel_choice(monkeypatch):
    """On two worker threads, each synapse's kernel is chosen once (by whichever replica runs
    it first: the direct convolution or not, then the product's kernel where not direct) and
    every replica runs that kernel, with buffers of its own."""
    import numba

    from spikeclip_deploy.backends import emulator_synapses
    from spikeclip_deploy.backends.emulator_synapses import Conv

    calls = []
    choose, fastest = emulator_synapses.choose, Conv._fastest_direct
    monkeypatch.setattr(emulator_synapses, "choose",
                        lambda name, *a: calls.append(("product", name)) or choose(name, *a))
    monkeypatch.setattr(Conv, "_fastest_direct",
                        lambda syn, *a: calls.append(("direct", syn.name)) or fastest(syn, *a))
    emulation = Emulation(wide_residual(np.random.default_rng(4)), 4, FP, 1, ".")
    emulation.chunk = 2
    torch.set_num_threads(2)
    numba.set_num_threads(2)
    emulation.run(np.random.default_rng(5).integers(-500, 3000, (5, 3, 21, 20)))
    assert len(emulation.replicas) == 2
    names = sorted(emulation.synapses)
    assert names == ["skip", "syn1", "syn2"]
    assert sorted(n for kind, n in calls if kind == "direct") == names
    assert sorted(n for kind, n in calls if kind == "product") == \
        [n for n in names if not emulation.synapses[n].choice["direct"]]
    for name in names:
        a, b = (em.synapses[name] for em in emulation.replicas)
        ka, kb = (s._direct or s.kernel for s in (a, b))
        assert ka is not kb and ka.name == kb.name, name


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one CPU")
def test_replicas_made_after_a_run_make_their_own_direct_convolutions(monkeypatch):
    """A run on one thread, then on two (replicas made after the first run's choices): each
    replica runs the direct convolution chosen then (forced here) on a kernel of its own."""
    import numba

    monkeypatch.setenv(FORCE_ENV, SpikeConv.name)
    emulation = Emulation(wide_residual(np.random.default_rng(4)), 4, FP, 1, ".")
    mant = np.random.default_rng(5).integers(-500, 3000, (4, 3, 21, 20))
    torch.set_num_threads(1)
    one = emulation.run(mant).spikes
    assert len(emulation.replicas) == 1
    torch.set_num_threads(2)
    numba.set_num_threads(2)
    two = emulation.run(mant).spikes
    assert len(emulation.replicas) == 2
    for name in emulation.synapses:
        a, b = (em.synapses[name]._direct for em in emulation.replicas)
        assert a and b and a is not b, name
    for name in one:
        assert np.array_equal(one[name], two[name]), name


@pytest.mark.lava
@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one CPU")
def test_blocks_of_neurons_and_samples_on_worker_threads_equal_lava():
    """LIFs wider than a block, and five samples in chunks of two run on two worker threads
    (their state recorded), as on Lava; and as on one thread."""
    import numba

    from spikeclip_deploy.backends.emulator_lif import BLOCK

    layers = wide_residual(np.random.default_rng(4))
    assert BLOCK < 3 * 21 * 20 < 2 * BLOCK
    mant = np.random.default_rng(5).integers(-500, 3000, (5, 3, 21, 20))
    want = lava_record(layers, mant, 4)
    for threads in (2, 1):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        emulation = Emulation(layers, 4, FP, 1, ".")
        emulation.chunk = 2
        run = emulation.run(mant, record_state=True)
        assert len(emulation.replicas) == threads
        assert all(0 < s.mean() < 1 for s in run.spikes.values())
        assert_same_runs(run, want, f"{threads} thread(s): ")
