"""The emulator backend (``loihi-emu``): Lava's fixed-point arithmetic worked by hand (weights,
decays, wrap, saturation), then bit-exact spikes against Lava on the micro exports and on
seeded random networks (chains and residual fan-in, dense and convolutional, random decays,
thresholds, exponents, extreme weights, T from 1 to 8). ``SPIKECLIP_EMU_CASES=N`` runs N random
networks instead of the few in CI. The residual, delayed-convolution, native and host-op
networks are compared in tests/backends/test_graphs.py and test_host_ops.py, where Lava runs
them already."""
import os

import nir
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.backends.emulator import (
    Emulation,
    EmulatorBackend,
    lava_weights,
    wrap,
)
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.export import ExportConfig, export_model
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.manifest import load_export
from spikeclip_deploy.nirgraph import INPUT, ChipLayer
from spikeclip_deploy.zeroshot import tokenize

FP = load_profile("loihi2").fixed_point
CI_CASES = 6


def assert_same_spikes(names, got, want, what=""):
    """Equal spikes, else the first difference: layer, sample, step and neuron."""
    for name, g, w in zip(names, got, want, strict=True):
        assert g.shape == w.shape, f"{what}{name}: shapes {g.shape} != {w.shape}"
        diff = np.argwhere(g != w)
        assert not len(diff), (f"{what}{name}: {len(diff)} spikes differ; first at sample "
                               f"{diff[0][0]}, step {diff[0][1]}, neuron {tuple(diff[0][2:])}: "
                               f"emulator {g[tuple(diff[0])]}, Lava {w[tuple(diff[0])]}")


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
            assert_same_spikes(emu.lif_names(side), got, lava.run_chip(side, current), f"{side}/")


def random_synapse(rng, shape, delay):
    """A dense layer or, for image shapes, a 3x3 convolution (exponent 0: Lava's ``Conv`` has
    none), with any 9-bit weights (extremes included; dense exponents -3..4); bias mantissas
    from -200 to 600."""
    conv = len(shape) == 3
    meta = {"loihi": {"weight_exp": 0 if conv else int(rng.integers(-3, 5))}, "delay": delay}
    bias = rng.integers(-200, 601, shape[0]) * 2.0**-6
    if conv:
        groups = int(rng.choice([1, shape[0]]))
        w = rng.integers(-200, 256, (shape[0], shape[0] // groups, 3, 3))
        w.flat[:3] = (255, -256, 1)
        return nir.Conv2d(input_shape=shape[1:], weight=w, stride=1, padding=1, dilation=1,
                          groups=groups, bias=bias, metadata=meta)
    w = rng.integers(-200, 256, (shape[0], shape[0]))
    w.flat[: rng.integers(0, 3)] = rng.choice([-256, 255, 1, -1])
    if rng.random() < 0.2:  # one sign: no lowest bit dropped
        w = np.abs(w) * rng.choice([-1, 1])
    return nir.Affine(weight=w, bias=bias, metadata=meta)


def random_network(rng):
    """(layers, input mantissas [B, *shape], T): a chain of 2-4 LIFs, or with a skip synapse
    from the first LIF into the last (delayed to align: a fan-in of two depths)."""
    t, b = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    shape = (2, 4, 4) if rng.random() < 0.3 else (int(rng.integers(1, 13)),)
    n_lif = int(rng.integers(2, 5))

    def random_lif(k):
        du = int(rng.choice([4095, 0, rng.integers(0, 4096)]))
        dv = int(rng.choice([0, 4095, rng.integers(0, 4096)]))
        vth = int(rng.choice([1, 131071, np.exp(rng.uniform(0, 8))], p=[0.05, 0.05, 0.9]))
        return lif(shape, du, dv, vth, int(rng.choice([0, 1, 2, 7])))

    layers = [ChipLayer("lif0", random_lif(0), (INPUT,))]
    skip = n_lif > 2 and rng.random() < 0.5
    if skip:
        layers.append(ChipLayer("skip", random_synapse(rng, shape, n_lif - 2), ("lif0",)))
    for k in range(1, n_lif):
        layers.append(ChipLayer(f"syn{k}", random_synapse(rng, shape, 0), (f"lif{k - 1}",)))
        inputs = (f"syn{k}", "skip") if skip and k == n_lif - 1 else (f"syn{k}",)
        layers.append(ChipLayer(f"lif{k}", random_lif(k), inputs))
    mant = rng.integers(-4096, 4096, (b, *shape))
    mant.flat[:2] = (-4096, 4095)
    return layers, mant, t


def lava_run(layers, mant, t, tmp_path):
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    return _Network(_lava(), layers, t, LavaBackend.handlers, FP.activation_shift, 1,
                    str(tmp_path)).run(mant)


@pytest.mark.lava
@pytest.mark.parametrize("seed", range(int(os.environ.get("SPIKECLIP_EMU_CASES", CI_CASES))))
def test_random_networks_equal_lava(seed, tmp_path):
    layers, mant, t = random_network(np.random.default_rng(seed))
    run = Emulation(layers, t, FP, 1, tmp_path).run(mant)
    assert_same_spikes(list(run.spikes), list(run.spikes.values()),
                       lava_run(layers, mant, t, tmp_path), f"network {seed}: ")


@pytest.mark.lava
def test_the_24_bit_edges_equal_lava(tmp_path):
    """The wrap and saturation above on Lava: u = -2^23 wraps to +2^23, so v saturates and
    spikes at once; u = 2^23 + 64 wraps negative, no spike."""
    layers = [ChipLayer("lif0", lif((3,), 4095, 0, 1), (INPUT,))]
    mant = np.array([[131073, -131072, -100000]])
    run = Emulation(layers, 3, FP, 1, tmp_path).run(mant)
    assert run.spikes["lif0"][0].T.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert_same_spikes(["lif0"], [run.spikes["lif0"]], lava_run(layers, mant, 3, tmp_path))
