r"""The emulator's synapses: a layer's output ``[N, *inner]`` (spikes, int8 0/1, or integer
payloads :math:`|x| \le` ``bound_in``; ``inner`` is ``(H, W, C)``, channels last, for an image
layer, ``(F,)`` for a flat one) -> what Lava's model of the synapse sends, as an exact
:class:`Current` with a static bound on its magnitude.

A dense synapse, and a convolution of one group over its im2col columns, is one matrix product
on the kernel :mod:`.emulator_gemm` chooses (the fastest one exact within the synapse's bounds,
by measurement). A grouped convolution computes in float32 where every partial sum is an
integer below ``bound_in`` :math:`\max_o \sum |w_o| < 2^{24}` (exact in any order), else in
float64 (:math:`< 2^{53}`), never on NNPACK (torch's convolution where oneDNN is off), whose
Winograd transforms round.
"""
from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable
from functools import cached_property, partial
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange

from ..errors import ExportError
from ..exchange.nirgraph import conv_out_hw, pair
from ..machine import by_threads
from .emulator_gemm import (CONV_KERNELS, FLOAT32_EXACT, FLOAT64_EXACT, KERNELS, ConvKernel,
                            Kernel, cached, MEASURE_MACS, choose, density_step, exact_kernels,
                            forced_kernel, max_fan_in, power_of_two, random_spikes, reused,
                            seconds, timings)

log = logging.getLogger(__name__)


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


def float_dtype(fan_in: int) -> torch.dtype:
    """The float type in which sums of integers below ``fan_in`` are exact."""
    if fan_in < FLOAT32_EXACT:
        return torch.float32
    if fan_in < FLOAT64_EXACT:
        return torch.float64
    raise ExportError(f"a synapse's summed weight magnitude {fan_in} reaches 2^53; Lava's "
                      f"int32 arithmetic overflows there: re-export with smaller weights")


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def im2col(x, out, sh, sw, ph, pw, dh, dw):
    """``x [N, H, W, C]`` -> ``out [N, Ho, Wo, kh, kw, C]`` (its type: converted as it is
    copied): each output position's receptive field at strides ``sh, sw``, zero padding
    ``ph, pw`` and dilation ``dh, dw``, in the order of a ``[kh, kw, C, Cout]`` kernel; one
    pass, no padded copy (samples in parallel: numba's threads, serially on one)."""
    n, h, w, c = x.shape
    _, ho, wo, kh, kw, _ = out.shape
    for i in prange(n):
        for oy in range(ho):
            for ky in range(kh):
                y = oy * sh - ph + ky * dh
                for ox in range(wo):
                    for kx in range(kw):
                        xx = ox * sw - pw + kx * dw
                        if 0 <= y < h and 0 <= xx < w:
                            for ch in range(c):
                                out[i, oy, ox, ky, kx, ch] = x[i, y, xx, ch]
                        else:
                            for ch in range(c):
                                out[i, oy, ox, ky, kx, ch] = 0


#: one kernel choice at a time (replicas on worker threads make theirs at once)
_CHOOSING = threading.Lock()


class Synapse:
    """One synapse layer, prepared once: its weights as a matrix ``W [K, N]`` (int64), the
    kernel chosen on the first call (when the rows of a call are known); ``bound`` caps its
    output, ``bound_in`` its inputs."""

    name: str
    bound: int
    bound_in: int
    matrix: np.ndarray
    kernel: Kernel | None = None
    k: int = 0
    density: float = 0.0  # the share of nonzero inputs the kernel was chosen at
    #: the chosen kernel's name, ``k`` and ``density`` (a convolution's: its direct kernel's
    #: name, or None): one dict, shared by this synapse's replicas
    choice: dict

    def _product(self, cols: Callable[[torch.dtype | None], torch.Tensor], rows: int
                 ) -> torch.Tensor:
        """``cols(dtype) [rows, K] @ W`` (times :math:`2^k`) on the chosen kernel, the columns
        made in its input type (on the first call of this synapse or its replicas, in their own
        type first: the kernel is chosen at their share of nonzero inputs, ``density``; a
        replica then takes the same kernel, with buffers of its own)."""
        if self.kernel is None:
            with _CHOOSING:  # one at a time (the timings' cache is not thread-safe)
                if "name" in self.choice:
                    kernel = KERNELS[self.choice["name"]](self.matrix >> self.choice["k"])
                else:
                    first = cols(None)
                    density = int(torch.count_nonzero(first)) / max(1, first.numel())
                    kernel, k = choose(self.name, self.matrix, self.bound_in, rows, density)
                    self.choice.update(name=kernel.name, k=k, density=density)
                self.kernel, self.k, self.density = kernel, self.choice["k"], \
                    self.choice["density"]
        return self.kernel(cols(self.kernel.in_dtype))

    def replica(self) -> Synapse:
        """This synapse with buffers of its own (its kernel made again, on its first call: the
        one this synapse and its other replicas chose), to run beside it on another thread."""
        twin = copy.copy(self)
        twin.kernel = None
        return twin

    def __call__(self, s: torch.Tensor) -> Current:
        raise NotImplementedError


#: a 1x1 convolution's geometry (kernel, stride, padding, dilation): a product as it is
POINTWISE = ((1, 1), (1, 1), (0, 0), (1, 1))


class Conv(Synapse):
    """Lava's ``Conv`` (``PyConvModelFixed``): the raw kernel, no ``weight_exp`` (a nonzero one
    is refused, as the Lava backend refuses it), the sum wrapped to ``state_bits`` signed bits
    (its ``a_buf``, lava/proc/conv/models.py:75-79) where the bound can reach that; on a direct
    kernel over its spikes (oneDNN's int8 convolution or ``spikes-conv``) where one is exact and
    faster (:meth:`direct_conv`), else one product over im2col columns (groups 1) or a float
    convolution (channels last)."""

    def __init__(self, name: str, node: nir.Conv2d, state_bits: int, bound_in: int = 1) -> None:
        exp = int(node.metadata["loihi"]["weight_exp"])
        if exp:
            raise ExportError(f"convolution '{name}' has weight_exp {exp}, which Lava's Conv "
                              f"ignores; re-export with a hardware profile whose weight_exp is 0")
        w = np.asarray(node.weight).astype(np.int64)  # [Cout, Cin/groups, kh, kw]
        self.name, self.node, self.bound_in, self.weight = name, node, bound_in, w
        self.choice = {}
        self._cols: torch.Tensor | None = None  # im2col's columns (:meth:`_columns`)
        self._hws: dict[tuple[int, int], tuple[int, int]] = {}  # :meth:`_out_hw`
        self._direct: ConvKernel | bool | None = None  # :meth:`direct_conv`
        self.geometry = (tuple(w.shape[2:]), pair(node.stride), pair(node.padding),
                         pair(node.dilation))
        self.groups, self.state_bits = int(np.asarray(node.groups)), state_bits
        top = 2 ** (state_bits - 1)
        self.wraps = bound_in * max_fan_in(w) >= top
        self.bound = top if self.wraps else bound_in * max_fan_in(w)
        if self.groups == 1:  # [Cout, Cin, kh, kw] -> [kh kw Cin, Cout]: im2col's order
            self.matrix = w.transpose(2, 3, 1, 0).reshape(-1, len(w))
        else:
            self.w = torch.as_tensor(w, dtype=float_dtype(bound_in * max_fan_in(w))
                                     ).contiguous(memory_format=torch.channels_last)

    def replica(self) -> Conv:
        twin = super().replica()
        twin._cols, twin._direct = None, None
        return twin

    def direct_conv(self, s: torch.Tensor, hw: tuple[int, int]) -> ConvKernel | None:
        """The direct kernel (:data:`~.emulator_gemm.CONV_KERNELS`) :meth:`_fastest_direct`
        picks, decided on the first call of this synapse or its replicas; else None."""
        if self._direct is None:
            with _CHOOSING:
                if "direct" not in self.choice:
                    self.choice["density"] = int(torch.count_nonzero(s)) / max(1, s.numel())
                    self.choice["direct"] = self._fastest_direct(s, hw, self.choice["density"])
            self.density = self.choice["density"]
            self._direct = self.choice["direct"] is not None and \
                self.make_direct(self.choice["direct"])
            if self._direct:
                self.k = self.shift
        return self._direct or None

    @cached_property
    def shift(self) -> int:
        """:math:`k`, the weights' common power of two (:math:`W = 2^k W'`)."""
        return power_of_two(self.weight)

    def direct_kernels(self) -> list[str]:
        """The direct kernels exact here (on :math:`W'`, this synapse's groups and inputs)."""
        wq = self.weight >> self.shift
        return [name for name, kernel in CONV_KERNELS.items()
                if kernel.exact(wq, self.groups, self.bound_in)]

    def timed_samples(self, samples: int, hw: tuple[int, int]) -> int:
        """The samples (of ``samples``) a timing of this convolution takes, its output ``hw``:
        at most as many as :data:`~.emulator_gemm.MEASURE_MACS` multiply-accumulates hold."""
        return max(1, min(samples, MEASURE_MACS // (hw[0] * hw[1] * self.weight.size)))

    def make_direct(self, name: str) -> ConvKernel:
        """This convolution's :math:`W'` on direct kernel ``name`` (its sums times
        :math:`2^k`)."""
        return CONV_KERNELS[name](self.weight >> self.shift, *self.geometry[1:], self.groups)

    def _fastest_direct(self, s: torch.Tensor, hw: tuple[int, int], density: float
                        ) -> str | None:
        """The fastest exact direct kernel where it is faster than the other way, or the one
        forced (``$SPIKECLIP_EMU_KERNEL``) where it is exact; else None: timed against im2col
        plus the fastest exact product (groups 1) or the float convolution, on ``n`` samples of
        random spikes at ``density`` (``s``'s; ``n`` as many as a product's timing rows hold), by
        timings cached per machine (:func:`~.emulator_gemm.cached`)."""
        direct = self.direct_kernels()
        forced = forced_kernel()
        if forced:
            return forced if forced in direct else None
        if not direct:
            return None
        density = density_step(density)
        (kh, kw), stride, padding, dilation = self.geometry
        n = self.timed_samples(len(s), hw)
        other = ["float"] if self.groups > 1 else [] if self.geometry == POINTWISE else ["im2col"]

        def measure_now(names: list[str]) -> dict[str, float]:
            x = random_spikes((n, *s.shape[1:]), density)
            out = np.empty((n, *hw, kh, kw, s.shape[-1]) if other == ["im2col"] else 0, np.int8)
            calls = {"float": lambda: self._float_conv(x),
                     "im2col": lambda: im2col(x.numpy(), out, *stride, *padding, *dilation)}
            return seconds({name: calls[name] if name in calls else
                            partial(self.make_direct(name), x) for name in names})

        key = f"conv {n}x{'x'.join(map(str, s.shape[1:]))} -> {self.weight.shape}/{self.groups} " \
              f"{self.geometry[1:]}@{density:.2f}"
        times = cached(key, [*direct, *other], measure_now)
        way = sum(times[name] for name in other)
        if self.groups == 1:  # the product (over im2col's columns)
            m = self.matrix >> self.shift
            way += min(timings(m, n * hw[0] * hw[1], exact_kernels(m, 1, timed=True),
                               density).values())
        best = min(direct, key=times.get)
        pick = best if times[best] < way else None
        log.info("synapse %s: %s (%s; %s %.3g ms)", self.name, pick or "not direct",
                 ", ".join(f"{name} {1e3 * times[name]:.3g} ms" for name in direct),
                 "float" if self.groups > 1 else " and ".join([*other, "the fastest product"]),
                 1e3 * way)
        return pick

    def _out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The output's height and width on an input of ``hw`` (computed once per ``hw``)."""
        if hw not in self._hws:
            self._hws[hw] = conv_out_hw(self.node, hw)
        return self._hws[hw]

    def _columns(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialized ``shape`` tensor of ``dtype`` in memory reused from call to call
        (fresh memory costs page faults), valid until the next call."""
        size = math.prod(shape)
        self._cols = reused(self._cols, size, dtype)
        return self._cols[:size].view(shape)

    def _float_conv(self, s: torch.Tensor) -> torch.Tensor:
        """A grouped convolution in float (``[N, H, W, C]`` is ``[N, C, H, W]`` channels last:
        no copy either way), never on NNPACK (its Winograd transforms round)."""
        _, stride, padding, dilation = self.geometry
        with torch.backends.nnpack.flags(enabled=False):
            return F.conv2d(s.permute(0, 3, 1, 2).to(self.w.dtype), self.w, stride=stride,
                            padding=padding, dilation=dilation, groups=self.groups
                            ).permute(0, 2, 3, 1)

    def __call__(self, s: torch.Tensor) -> Current:
        pointwise = self.groups == 1 and self.geometry == POINTWISE
        ho, wo = s.shape[1:3] if pointwise else self._out_hw(tuple(s.shape[1:3]))
        direct = self.direct_conv(s, (ho, wo))
        if direct is not None:
            return self._current(direct(s))
        if self.groups > 1:
            return self._current(self._float_conv(s))
        rows = len(s) * ho * wo

        def cols(dtype: torch.dtype | None) -> torch.Tensor:
            if pointwise:
                return (s if dtype is None else s.to(dtype)).reshape(rows, -1)
            (kh, kw), stride, padding, dilation = self.geometry
            out = self._columns((len(s), ho, wo, kh, kw, s.shape[-1]), dtype or s.dtype)
            im2col(s.numpy(), out.numpy(), *stride, *padding, *dilation)
            return out.view(rows, -1)

        return self._current(self._product(cols, rows).reshape(len(s), ho, wo, -1))

    def _current(self, y: torch.Tensor) -> Current:
        """The sums ``y`` (times :math:`2^k`) as Lava's ``Conv`` sends them (wrapped)."""
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

    def __init__(self, node: nir.Affine, weight_bits: int, bound_in: int = 1,
                 name: str = "dense") -> None:
        w = lava_weights(node.weight, weight_bits)  # [out, in]
        self.name, self.bound_in, self.matrix, self.choice = name, bound_in, w.T, {}
        self.exp = int(node.metadata["loihi"]["weight_exp"])
        self.bound = -((-bound_in * max_fan_in(w)) >> max(-self.exp, 0)) << max(self.exp, 0)

    def __call__(self, s: torch.Tensor) -> Current:
        y = self._product(lambda dtype: s if dtype is None else s.to(dtype), len(s))
        e = self.k + self.exp  # (W s) 2^e = y 2^(k + e)
        return Current(y.to(torch.int64) >> -e, 0, self.bound) if e < 0 else \
            Current(y, e, self.bound)
