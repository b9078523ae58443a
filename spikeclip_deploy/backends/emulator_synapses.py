r"""The emulator's synapses: a layer's spikes ``[N, *inner]`` (int8 0/1; ``inner`` is
``(H, W, C)``, channels last, for an image layer, ``(F,)`` for a flat one) -> what Lava's
model of the synapse sends, as an exact :class:`Current` with a static bound on its magnitude.

A synapse whose weights are :math:`w = 2^k w_8` with :math:`w_8` in int8 multiplies on
``torch._int_mm`` (int8 x int8 -> int32, im2col for a convolution): every product and partial
sum is an integer, exact in int32 while :math:`\sum |w_8| < 2^{31}` for every output (the
spikes are 0 or 1), which is checked. Any other synapse (weights beyond 8 bits after their
common power of two, a grouped convolution) computes in float32 where every partial sum is an
integer below :math:`\max_o \sum |w_o| < 2^{24}` (exact in any order), else in float64
(:math:`< 2^{53}`).
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ExportError
from ..nirgraph import pair

#: float32 holds every integer below 2^24 exactly, float64 every one below 2^53
FLOAT32_EXACT, FLOAT64_EXACT = 2**24, 2**53
#: int32 accumulates exactly below 2^31
INT32_EXACT = 2**31


def lava_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Integer weights as Lava's bit-accurate ``Dense``/``Sparse`` models use them
    (``clip_weights`` and ``truncate_weights``, lava/utils/weightutils.py:204-295, sign mode from
    ``determine_sign_mode``, :36-41): clipped to ``bits`` bits of magnitude, and a matrix of both
    signs loses each weight's lowest bit (``(w >> 1) << 1``)."""
    w = np.asarray(w).astype(np.int64)
    top = 2**bits - 1
    if w.min() >= 0:
        return np.clip(w, 0, top)
    if w.max() <= 0:
        return -np.clip(-w, 0, top)
    return (np.clip(w, -(2**bits), top) >> 1) << 1


def wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` wrapped to ``bits`` signed bits: Lava's ``signed_clamp`` (lava/proc/conv/utils.py:
    67-84), which ``PyConvModelFixed.clamp_precision`` applies to a convolution's sum."""
    half = 2 ** (bits - 1)
    return torch.remainder(x + half, 2 * half) - half


@dataclass
class Current:
    r"""What reaches a LIF from one input: :math:`y\,2^{e}` (``y`` integer-valued: int32, int64
    or float; :math:`e \ge 0`), :math:`|y\,2^{e}| \le` ``bound``."""

    y: torch.Tensor
    exp: int
    bound: int

    def actual(self) -> int:
        r"""The largest :math:`|y|\,2^{e}` in this batch (a pass over ``y``)."""
        if not self.y.numel():
            return 0
        lo, hi = torch.aminmax(self.y)
        return max(-int(lo), int(hi)) << self.exp


def int8_factor(w: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(w8, k)`` with ``w = w8 << k`` and ``w8`` in int8 (the smallest ``k``), or None."""
    for k in range(int(np.abs(w).max(initial=0)).bit_length()):
        if (w % 2**k == 0).all() and -128 <= (w >> k).min(initial=0) \
                and (w >> k).max(initial=0) <= 127:
            return (w >> k).astype(np.int8), k
    return (w.astype(np.int8), 0) if not w.any() else None


def float_dtype(fan_in: int) -> torch.dtype:
    """The float type in which sums of integers below ``fan_in`` are exact."""
    if fan_in < FLOAT32_EXACT:
        return torch.float32
    if fan_in < FLOAT64_EXACT:
        return torch.float64
    raise ExportError(f"a synapse's summed weight magnitude {fan_in} reaches 2^53; Lava's "
                      f"int32 arithmetic overflows there: re-export with smaller weights")


def im2col(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W, C]`` -> ``[N, Ho, Wo, kh kw C]``: each output position's receptive field
    (zero padded), in the order of a ``[kh, kw, C, Cout]`` kernel."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = F.pad(x, (0, 0, pw, pw, ph, ph))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    s0, s1, s2, s3 = xp.stride()
    return xp.as_strided((n, ho, wo, kh, kw, c),
                         (s0, sh * s1, sw * s2, dh * s1, dw * s2, s3)).reshape(n, ho, wo, -1)


def row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` (2-D) with the strides of a C-ordered matrix, copied if it has other ones: torch
    counts a matrix with a length-1 axis as contiguous whatever that axis's stride, and
    ``torch._int_mm`` on the CPU reads such a stride as the row length (wrong sums)."""
    return x if x.stride() == (x.shape[1], 1) else x.clone(memory_format=torch.contiguous_format)


def max_fan_in(w: np.ndarray) -> int:
    r""":math:`\max_o \sum |w_o|` over the outputs ``o`` (the first axis)."""
    return int(np.abs(w).reshape(len(w), -1).sum(1).max(initial=0))


class Synapse:
    """One synapse layer, prepared once: ``w = w8 << k`` on ``_int_mm`` where that fits
    (``w8`` None otherwise, and ``w`` the float weights); ``bound`` caps its output."""

    bound: int
    w8: torch.Tensor | None
    w: torch.Tensor
    k: int = 0

    def _prepare(self, w: np.ndarray, gemm: bool, layout) -> None:
        """``w`` (int64, outputs first) as ``w8`` (int8, through ``layout``) and ``k``, else
        as ``w`` (float32 or float64, exact on its sums)."""
        fan_in = max_fan_in(w)
        factored = int8_factor(w) if gemm and fan_in < INT32_EXACT else None
        self.w8, self._out = None, None
        if factored:
            self.w8, self.k = row_major(torch.as_tensor(layout(factored[0]))), factored[1]
        else:
            self.w = torch.as_tensor(w, dtype=float_dtype(fan_in))

    def _gemm(self, cols: torch.Tensor) -> torch.Tensor:
        """``cols [M, K] @ w8`` into this synapse's output buffer, kept from call to call
        (fresh memory costs page faults); valid until the next call."""
        m = len(cols)
        if self._out is None or len(self._out) < m:
            self._out = torch.empty((m, self.w8.shape[1]), dtype=torch.int32)
        return torch._int_mm(row_major(cols), self.w8, out=self._out[:m])

    def __call__(self, s: torch.Tensor) -> Current:
        raise NotImplementedError


class Conv(Synapse):
    """Lava's ``Conv`` (``PyConvModelFixed``): the raw kernel, no ``weight_exp`` (a nonzero one
    is refused, as the Lava backend refuses it), the sum wrapped to ``state_bits`` signed bits
    (its ``a_buf``, lava/proc/conv/models.py:75-79) where the bound can reach that; on
    ``_int_mm`` over im2col columns (groups 1), else as a float convolution (channels last)."""

    def __init__(self, name: str, node: nir.Conv2d, state_bits: int) -> None:
        exp = int(node.metadata["loihi"]["weight_exp"])
        if exp:
            raise ExportError(f"convolution '{name}' has weight_exp {exp}, which Lava's Conv "
                              f"ignores; re-export with a hardware profile whose weight_exp is 0")
        w = np.asarray(node.weight).astype(np.int64)  # [Cout, Cin/groups, kh, kw]
        self.geometry = (tuple(w.shape[2:]), pair(node.stride), pair(node.padding),
                         pair(node.dilation))
        self.groups, self.state_bits = int(np.asarray(node.groups)), state_bits
        top = 2 ** (state_bits - 1)
        self.wraps = max_fan_in(w) >= top
        self.bound = top if self.wraps else max_fan_in(w)
        # [Cout, Cin, kh, kw] -> [kh kw Cin, Cout]: the order of im2col's columns
        self._prepare(w, self.groups == 1, lambda w8: w8.transpose(2, 3, 1, 0).reshape(-1, len(w8)))
        if self.w8 is None:
            self.w = self.w.contiguous(memory_format=torch.channels_last)

    def __call__(self, s: torch.Tensor) -> Current:
        if self.w8 is not None:
            pointwise = self.geometry == ((1, 1), (1, 1), (0, 0), (1, 1))
            cols = s if pointwise else im2col(s, *self.geometry)
            y = self._gemm(cols.reshape(-1, cols.shape[-1]))
            y = y.reshape(*cols.shape[:-1], -1)
        else:  # [N, H, W, C] is [N, C, H, W] channels last: no copy either way
            _, stride, padding, dilation = self.geometry
            y = F.conv2d(s.permute(0, 3, 1, 2).to(self.w.dtype), self.w, stride=stride,
                         padding=padding, dilation=dilation, groups=self.groups
                         ).permute(0, 2, 3, 1)
        out = Current(y, self.k, self.bound)
        if not self.wraps:
            return out
        out.bound = out.actual()
        if out.bound < 2 ** (self.state_bits - 1):  # no sum reaches the wrap in this batch
            return out
        return Current(wrap(y.to(torch.int64) << self.k, self.state_bits), 0, self.bound)


class Dense(Synapse):
    r"""Lava's ``Dense`` (bit-accurate model): :math:`\lfloor (W s)\,2^{e} \rfloor`, ``W`` as
    :func:`lava_weights` clips it, the shift arithmetic (flooring) for :math:`e < 0`
    (lava/proc/dense/models.py:103-107)."""

    def __init__(self, node: nir.Affine, weight_bits: int) -> None:
        w = lava_weights(node.weight, weight_bits)  # [out, in]
        self.exp = int(node.metadata["loihi"]["weight_exp"])
        self.bound = -((-max_fan_in(w)) >> max(-self.exp, 0)) << max(self.exp, 0)  # ceil
        self._prepare(w, True, lambda w8: w8.T)

    def __call__(self, s: torch.Tensor) -> Current:
        if self.w8 is not None:
            y, e = self._gemm(s), self.k + self.exp  # (W s) 2^e = y 2^(k + e)
        else:
            y, e = (s.to(self.w.dtype) @ self.w.T).to(torch.int64), self.exp
        return Current(y >> -e, 0, self.bound) if e < 0 else Current(y, e, self.bound)
