"""The emulator's synapses: the kernels' exactness bounds and the Dense exponent by hand,
convolutions (each kernel forced in turn over im2col columns, or float, or oneDNN's direct
convolution) against a float64 convolution, graded inputs, and the 24-bit wrap applied exactly where a sum reaches it."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeclip_deploy.backends.emulator_gemm import (CONV_KERNELS, FORCE_ENV, KERNELS,
                                                     OnednnConv, SpikeConv, choose, spike_words,
                                                     int_mm_exact, power_of_two)
from spikeclip_deploy.backends.emulator_synapses import Conv, Dense
from spikeclip_deploy.errors import ExportError


@pytest.fixture(params=list(KERNELS))
def kernel(request, monkeypatch):
    """Each product's kernel forced in turn."""
    monkeypatch.setenv(FORCE_ENV, request.param)
    return request.param


@pytest.fixture(params=[*KERNELS, *CONV_KERNELS])
def conv_kernel(request, monkeypatch):
    """Each kernel forced in turn, a convolution's direct ones too."""
    monkeypatch.setenv(FORCE_ENV, request.param)
    return request.param


def test_spike_words_by_hand():
    """Inputs 0, 63, 64 and 70 of 72 firing (-1 counts as firing: nonzero): word 0 holds bits 0
    and 63, word 1 bits 0 and 6 (inputs 64 and 70), zero-padded beyond input 71."""
    x = np.zeros((2, 72), dtype=np.int8)
    x[0, [0, 63, 64]] = 1
    x[0, 70] = -1
    words = spike_words(x)
    assert words.dtype == np.uint64 and words.tolist() == [[1 + 2**63, 1 + 2**6], [0, 0]]


def test_power_of_two_by_hand():
    """The largest 2^k dividing every weight: 254, -256, 2 -> 1; 256, 512 -> 8; 255, 1 -> 0."""
    assert power_of_two(np.array([254, -256, 2])) == 1
    assert power_of_two(np.array([256, 512])) == 8
    assert power_of_two(np.array([255, 1])) == 0
    assert power_of_two(np.zeros(3, dtype=np.int64)) == 0


def test_the_kernels_are_chosen_within_their_bounds_by_hand(monkeypatch):
    """W = [[254], [-256]] = 2 [[127], [-128]]: S = b (127 + 128) = 255 b. Binary spikes: every
    kernel is exact (int64 only where nothing else is); b = 2: neither onednn nor spikes (binary
    inputs only); b = 2^23: S = 255 2^23 >= 2^31: no int8
    (its inputs beyond int8 too), >= 2^24: no float32; b = 2^46: S >= 2^53: sparse and int64
    (int64 only where forced); b = 2^56: S >= 2^63: refused. int8 and onednn take weights in
    [-128, 127] only."""
    w = np.array([[254], [-256]])
    def exact(b, w=w):
        return [n for n, k in KERNELS.items() if k.exact(w >> power_of_two(w), b)]
    assert exact(1) == ["int8", "onednn", "float32", "float64", "spikes", "sparse", "int64"]
    assert exact(2) == ["int8", "float32", "float64", "sparse", "int64"]
    for w8, fits in ((np.array([[-128], [127]]), True), (np.array([[-129], [127]]), False),
                     (np.array([[-127], [128]]), False)):  # int8's range, odd: k = 0
        assert {"int8", "onednn"} <= set(exact(1, w8)) if fits else \
            not {"int8", "onednn"} & set(exact(1, w8))
    assert exact(2**23) == ["float64", "sparse", "int64"]
    assert exact(2**46) == ["sparse", "int64"]
    for name in KERNELS:  # forced where exact, else the fastest exact one but int64
        monkeypatch.setenv(FORCE_ENV, name)
        assert choose("syn", w, 2**46, 4)[0].name == ("int64" if name == "int64" else "sparse")
    monkeypatch.setenv(FORCE_ENV, "float64")
    kernel, k = choose("syn", w, 2**23, 4)
    assert (kernel.name, k) == ("float64", 1)
    with pytest.raises(ExportError, match="synapse 'syn': its sums can reach 2\\^63"):
        choose("syn", w, 2**56, 4)
    monkeypatch.setenv(FORCE_ENV, "int4")
    with pytest.raises(ExportError, match="names no kernel; use one of int8, onednn, float32"):
        choose("syn", w, 1, 4)


@pytest.mark.parametrize("total, dtype", [(2**15 - 1, torch.int16), (2**15, torch.int32),
                                          (-(2**15), torch.int32)])
def test_spikes_sums_in_int16_below_2_15_by_hand(monkeypatch, total, dtype):
    """``spikes`` on 300 inputs whose weights sum to ``total`` (S = |total|), every input firing
    (the one sum that reaches S): int16 where S < 2^15 (32767 is exact there), int32 from 2^15
    on (32768 and -32768 exact)."""
    monkeypatch.setenv(FORCE_ENV, "spikes")
    w = np.full(300, abs(total) // 300)
    w[: abs(total) % 300] += 1
    w *= np.sign(total)
    dense = Dense(nir.Affine(weight=w[None], bias=np.zeros(1),
                             metadata={"loihi": {"weight_exp": 0}}), 16)
    c = dense(torch.ones((2, 300), dtype=torch.int8))
    assert dense.kernel.name == "spikes" and c.y.dtype == dtype
    assert c.y.tolist() == [[total], [total]]


def saturating_int_mm(a, b):
    """``a @ b`` as oneDNN's int8 x int8 kernel computes it without int8 dot products: ``a``
    shifted to uint8 (+128), products summed in pairs saturating to int16, the shift's
    ``128 sum(b)`` taken off."""
    u, w = a.to(torch.int32) + 128, b.to(torch.int32)
    pairs = (u[:, :, None] * w[None]).reshape(len(a), -1, 2, w.shape[1]).sum(2)
    return pairs.clamp(-(2**15), 2**15 - 1).sum(1) - 128 * w.sum(0)


def test_int8_is_exact_nowhere_where_int_mm_saturates(monkeypatch, request):
    """With a ``torch._int_mm`` whose pair sums saturate the probe fails: no synapse runs on
    int8, not even forced; onednn (uint8 inputs, no shift) stays."""
    request.addfinalizer(int_mm_exact.cache_clear)
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    int_mm_exact.cache_clear()
    w = np.array([[-128], [127]])
    assert [n for n, k in KERNELS.items() if k.exact(w, 1)] == \
        ["onednn", "float32", "float64", "spikes", "sparse", "int64"]
    monkeypatch.setenv(FORCE_ENV, "int8")
    assert choose("syn", w, 1, 4)[0].name != "int8"


def test_dense_floors_its_exponent_by_hand(kernel):
    """W = [3, -5] (both signs: lowest bit dropped) -> [2, -6] = 2 [1, -3]; both inputs spike:
    W s = -4; e = -1: floor(-2) = -2; e = -3: floor(-0.5) = -1 (bound ceil(8 / 8) = 1);
    e = 2: -16, as -4 << 2."""
    s = torch.ones((1, 2), dtype=torch.int8)
    for exp, want, bound in ((-1, -2, 4), (-3, -1, 1), (2, -16, 32)):
        dense = Dense(nir.Affine(weight=np.array([[3, -5]]), bias=np.zeros(1),
                                 metadata={"loihi": {"weight_exp": exp}}), 8)
        c = dense(s)
        assert dense.kernel.name == kernel and dense.bound == bound
        assert int(c.y[0, 0]) << c.exp == want, exp


def test_a_dense_layer_of_one_input_by_hand(kernel):
    """W = [2, -4, 6] from one input (a [1, 3] int8 matrix 2 x [1, -2, 3] whose length-1 axis
    has any stride): a spike gives [2, -4, 6], none gives 0."""
    dense = Dense(nir.Affine(weight=np.array([[2], [-4], [6]]), bias=np.zeros(3),
                             metadata={"loihi": {"weight_exp": 0}}), 8)
    c = dense(torch.tensor([[1], [0], [1]], dtype=torch.int8))
    assert dense.kernel.name == kernel
    assert (c.y.to(torch.int64) << c.exp).tolist() == [[2, -4, 6], [0, 0, 0], [2, -4, 6]]


def test_graded_inputs_on_every_exact_kernel(kernel):
    """Inputs up to 2^23 (graded payloads): W = 2 [[1, -3], [5, 7]], x = [2^23 - 1, -2^23]:
    W x = 2 [2^23 - 1 + 3 2^23, 5 (2^23 - 1) - 7 2^23] = [2^26 - 2, -2^25 - 10], exact on the
    kernels whose bound holds (S = 2^23 12 >= 2^24, inputs beyond int8: float64, sparse,
    int64); forced int8 or float32 is not exact there and the choice falls back."""
    dense = Dense(nir.Affine(weight=np.array([[2, -6], [10, 14]]), bias=np.zeros(2),
                             metadata={"loihi": {"weight_exp": 0}}), 8, bound_in=2**23)
    c = dense(torch.tensor([[2**23 - 1, -(2**23)]]))
    assert (c.y.to(torch.int64) << c.exp).tolist() == [[2**26 - 2, -(2**25) - 10]]
    assert dense.bound == 2**23 * 24
    assert dense.kernel.name == kernel if kernel in ("float64", "sparse", "int64") else \
        dense.kernel.name in ("float64", "sparse")


def conv_node(w, stride=1, padding=0, dilation=1, groups=1, hw=(6, 5)):
    return nir.Conv2d(input_shape=hw, weight=w, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=np.zeros(len(w)),
                      metadata={"loihi": {"weight_exp": 0}})


@pytest.mark.parametrize("size, stride, padding, dilation, groups, weights", [
    (3, 1, 1, 1, 1, "even"),  # as quantized: 2 x int8
    (3, 2, 1, 1, 1, "int8"),
    (3, (2, 1), (0, 2), (2, 1), 1, "even"),
    (1, 1, 0, 1, 1, "int8"),  # pointwise: no im2col
    (3, 1, 1, 1, 1, "any"),  # odd and beyond int8: neither int8 nor onednn
    (3, 2, 1, 1, 4, "even"),  # grouped (depthwise): float convolution
])
def test_convolutions_equal_a_float64_convolution(size, stride, padding, dilation, groups,
                                                   weights, conv_kernel):
    rng = np.random.default_rng(size + groups)
    c = 4
    w = rng.integers(-256, 256, (c, c // groups, size, size))
    w = {"even": (w >> 1) << 1, "int8": np.clip(w, -128, 127), "any": w}[weights]
    node = conv_node(w, stride, padding, dilation, groups)
    syn = Conv("c", node, 24)
    s = torch.from_numpy(rng.random((3, c, 6, 5)) < 0.4)  # [N, C, H, W]
    got = syn(s.to(torch.int8).permute(0, 2, 3, 1).contiguous())
    want = F.conv2d(s.double(), torch.from_numpy(w).double(), stride=stride, padding=padding,
                    dilation=dilation, groups=groups)
    assert torch.equal(got.y.double().permute(0, 3, 1, 2) * 2**got.exp, want)
    assert got.bound == np.abs(w).reshape(c, -1).sum(1).max()
    k, kernel = power_of_two(w), conv_kernel
    if kernel == OnednnConv.name:  # every one where its weights fit int8
        assert bool(syn._direct) == (-128 <= (w >> k).min() and (w >> k).max() <= 127)
    elif kernel == SpikeConv.name:  # every one of one group (S < 2^31 here)
        assert bool(syn._direct) == (groups == 1)
    elif groups == 1:  # forced where exact
        assert syn.kernel.name == kernel or not KERNELS[kernel].exact(syn.matrix >> syn.k, 1)


@pytest.mark.parametrize("scale, dtype", [(1, torch.int16), (64, torch.int16),
                                          (65, torch.int32)])
def test_spikes_conv_by_hand(monkeypatch, scale, dtype):
    """``spikes-conv``, a 3 x 3 kernel ``scale`` x [[1, 2, 4], [8, 16, 32], [64, 128, 256]] at
    padding 1 on a 3 x 3 image firing everywhere but the centre: the centre sums every weight
    but 16 (495 ``scale``); the top-left corner reads pixels (0, 0), (0, 1), (1, 0) through
    taps (1, 1), (1, 2), (2, 1) (the centre's tap (2, 2) silent): 16 + 32 + 128 = 176
    ``scale``; int16 while S = 511 ``scale`` < 2^15 (``scale`` 64), else int32."""
    monkeypatch.setenv(FORCE_ENV, SpikeConv.name)
    w = scale * 2 ** np.arange(9).reshape(1, 1, 3, 3)
    syn = Conv("c", conv_node(w, padding=1, hw=(3, 3)), 24)
    s = torch.ones((1, 3, 3, 1), dtype=torch.int8)
    s[0, 1, 1, 0] = 0
    got = syn(s)
    assert isinstance(syn._direct, SpikeConv) and got.y.dtype == dtype
    y = got.y[0, :, :, 0].to(torch.int64) << got.exp
    assert (int(y[1, 1]), int(y[0, 0])) == (495 * scale, 176 * scale)


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="torch without NNPACK")
def test_a_depthwise_convolution_is_exact_with_onednn_off(monkeypatch):
    """Without oneDNN torch takes NNPACK's Winograd convolution for this shape, whose float32
    sums are not integers: the emulator's grouped convolution must equal the float64 one."""
    rng = np.random.default_rng(0)
    c = 64
    w = rng.integers(-256, 255, (c, 1, 3, 3))
    syn = Conv("c", conv_node(w, padding=1, groups=c, hw=(16, 16)), 24)
    s = torch.from_numpy(rng.random((64, c, 16, 16)) < 0.3)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    monkeypatch.setenv(FORCE_ENV, "float64")  # not the direct kernel: torch's convolution
    got = syn(s.to(torch.int8).permute(0, 2, 3, 1).contiguous())
    want = F.conv2d(s.double(), torch.from_numpy(w).double(), padding=1, groups=c)
    assert torch.equal(got.y.double().permute(0, 3, 1, 2) * 2**got.exp, want)


def test_a_convolution_wraps_where_a_sum_reaches_2_23():
    """Weights 5e6 and 4e6 (sum of magnitudes >= 2^23: a wrap is possible): one spike gives
    5e6 as it is; both give 9e6, wrapped to 9e6 - 2^24 = -7777216, as Lava's Conv does."""
    syn = Conv("c", conv_node(np.array([[[[5_000_000]], [[4_000_000]]]]), hw=(1, 1)), 24)
    assert syn.wraps
    one = syn(torch.tensor([[[[1, 0]]]], dtype=torch.int8))
    assert (int(one.y.flatten()[0]) << one.exp, one.bound) == (5_000_000, 5_000_000)
    both = syn(torch.tensor([[[[1, 1]]]], dtype=torch.int8))
    assert (int(both.y.flatten()[0]) << both.exp, both.bound) == (9_000_000 - 2**24, 2**23)


@pytest.mark.parametrize("weight", [-128, 127])
def test_the_direct_convolution_is_exact_at_int8s_ends(weight, monkeypatch):
    """Every input firing, every weight -128 (or 127) of 192 channels x 3 x 3: interior sums
    -128 x 1728 = -221184 (127 x 1728 = 219456), fewer at the border, as a float64
    convolution gives them (no int16 pair sum saturates)."""
    monkeypatch.setenv(FORCE_ENV, OnednnConv.name)
    w = np.full((8, 192, 3, 3), weight)
    syn = Conv("c", conv_node(w, padding=1, hw=(6, 6)), 24)
    s = torch.ones((2, 6, 6, 192), dtype=torch.int8)
    got = syn(s)
    assert syn._direct
    want = F.conv2d(s.permute(0, 3, 1, 2).double(), torch.from_numpy(w).double(), padding=1)
    assert torch.equal(got.y.double().permute(0, 3, 1, 2) * 2**got.exp, want)
    assert want[0, 0, 1, 1] == weight * 1728
