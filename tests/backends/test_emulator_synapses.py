"""The emulator's synapses: int8 factoring and the Dense exponent by hand, convolutions (int8
GEMM over im2col columns, or float) against a float64 convolution, and the 24-bit wrap applied
exactly where a sum reaches it."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeclip_deploy.backends.emulator_synapses import Conv, Dense, int8_factor


def test_int8_factor_by_hand():
    """w = w8 << k with the smallest k that brings w into int8, or None."""
    w8, k = int8_factor(np.array([254, -256, 2]))
    assert (w8.tolist(), k, w8.dtype) == ([127, -128, 1], 1, np.int8)
    assert int8_factor(np.array([3, 127, -128]))[1] == 0
    w8, k = int8_factor(np.array([256, 512]))
    assert (w8.tolist(), k) == ([32, 64], 3)
    assert int8_factor(np.array([255, 1])) is None  # odd and beyond int8
    assert int8_factor(np.zeros(3, dtype=np.int64))[0].tolist() == [0, 0, 0]


def test_dense_floors_its_exponent_by_hand():
    """W = [3, -5] (both signs: lowest bit dropped) -> [2, -6] = 2 [1, -3]; both inputs spike:
    W s = -4; e = -1: floor(-2) = -2; e = -3: floor(-0.5) = -1 (bound ceil(8 / 8) = 1);
    e = 2: -16, as -4 << 2."""
    s = torch.ones((1, 2), dtype=torch.int8)
    for exp, want, bound in ((-1, -2, 4), (-3, -1, 1), (2, -16, 32)):
        dense = Dense(nir.Affine(weight=np.array([[3, -5]]), bias=np.zeros(1),
                                 metadata={"loihi": {"weight_exp": exp}}), 8)
        c = dense(s)
        assert dense.w8 is not None and dense.bound == bound
        assert int(c.y[0, 0]) << c.exp == want, exp


def test_a_dense_layer_of_one_input_by_hand():
    """W = [2, -4, 6] from one input (a [1, 3] int8 matrix 2 x [1, -2, 3] whose length-1 axis
    has any stride): a spike gives [2, -4, 6], none gives 0."""
    dense = Dense(nir.Affine(weight=np.array([[2], [-4], [6]]), bias=np.zeros(3),
                             metadata={"loihi": {"weight_exp": 0}}), 8)
    c = dense(torch.tensor([[1], [0], [1]], dtype=torch.int8))
    assert (c.y << c.exp).tolist() == [[2, -4, 6], [0, 0, 0], [2, -4, 6]]


def conv_node(w, stride=1, padding=0, dilation=1, groups=1, hw=(6, 5)):
    return nir.Conv2d(input_shape=hw, weight=w, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=np.zeros(len(w)),
                      metadata={"loihi": {"weight_exp": 0}})


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, weights, gemm", [
    (3, 1, 1, 1, 1, "even", True),  # as quantized: 2 x int8
    (3, 2, 1, 1, 1, "int8", True),
    (3, (2, 1), (0, 2), (2, 1), 1, "even", True),
    (1, 1, 0, 1, 1, "int8", True),  # pointwise: no im2col
    (3, 1, 1, 1, 1, "any", False),  # odd and beyond int8: float
    (3, 2, 1, 1, 4, "even", False),  # grouped (depthwise): float
])
def test_convolutions_equal_a_float64_convolution(kernel, stride, padding, dilation, groups,
                                                   weights, gemm):
    rng = np.random.default_rng(kernel + groups)
    c = 4
    w = rng.integers(-256, 256, (c, c // groups, kernel, kernel))
    w = {"even": (w >> 1) << 1, "int8": np.clip(w, -128, 127), "any": w}[weights]
    node = conv_node(w, stride, padding, dilation, groups)
    syn = Conv("c", node, 24)
    assert (syn.w8 is not None) == gemm
    s = torch.from_numpy(rng.random((3, c, 6, 5)) < 0.4)  # [N, C, H, W]
    got = syn(s.to(torch.int8).permute(0, 2, 3, 1).contiguous())
    want = F.conv2d(s.double(), torch.from_numpy(w).double(), stride=stride, padding=padding,
                    dilation=dilation, groups=groups)
    assert torch.equal(got.y.double().permute(0, 3, 1, 2) * 2**got.exp, want)
    assert got.bound == np.abs(w).reshape(c, -1).sum(1).max()


def test_a_convolution_wraps_where_a_sum_reaches_2_23():
    """Weights 5e6 and 4e6 (sum of magnitudes >= 2^23: a wrap is possible): one spike gives
    5e6 as it is; both give 9e6, wrapped to 9e6 - 2^24 = -7777216, as Lava's Conv does."""
    syn = Conv("c", conv_node(np.array([[[[5_000_000]], [[4_000_000]]]]), hw=(1, 1)), 24)
    assert syn.wraps and syn.w8 is None
    one = syn(torch.tensor([[[[1, 0]]]], dtype=torch.int8))
    assert (int(one.y.flatten()[0]) << one.exp, one.bound) == (5_000_000, 5_000_000)
    both = syn(torch.tensor([[[[1, 1]]]], dtype=torch.int8))
    assert (int(both.y.flatten()[0]) << both.exp, both.bound) == (9_000_000 - 2**24, 2**23)
