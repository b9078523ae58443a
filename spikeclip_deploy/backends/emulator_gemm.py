r"""The emulator's synapse products ``cols [M, K] @ W [K, N]`` on integers, each kernel exact
within a proven bound, the fastest exact one chosen by measurement per shape and machine.

With :math:`W = 2^k W'` (:math:`k` the weights' common power of two) and inputs
:math:`|x| \le b` (:math:`b = 1` for binary spikes, more for graded payloads), every partial
sum of a row is an integer of magnitude at most :math:`S = b \max_o \sum_i |W'_{io}|`, so:

- ``int8``: ``torch._int_mm`` (int8 x int8 -> int32) where :math:`W'` and the inputs fit int8
  and :math:`S < 2^{31}`, and where a probe finds it exact (:func:`int_mm_exact`); fast only
  where the CPU has int8 dot products (VNNI, AMX) and oneDNN serves it, elsewhere a slow
  fallback;
- ``onednn``: binary spikes only (:math:`b = 1`) as uint8 times :math:`W'` in int8, oneDNN's
  int8 matmul (``torch.ops.onednn.qlinear_pointwise``, scales 1, zero points 0: int32 sums
  written as float32) where :math:`S < 2^{24}`; it honours oneDNN's instruction-set cap and
  runs on CPUs without int8 dot products too (``vpmaddubsw``, whose int16 pair sums
  :math:`|W'_{io} + W'_{i'o}| \le 256` never saturate), about twice float32's rate there;
- ``float32`` / ``float64``: BLAS GEMM where :math:`S < 2^{24}` / :math:`2^{53}` (every sum in
  any order is then an exact integer);
- ``spikes``: binary spikes only (:math:`b = 1`, inputs 0 or 1): the weight rows of the inputs
  that fire summed in int16 where :math:`S < 2^{15}`, else int32 (:math:`S < 2^{31}`; every
  partial sum is a sum of some of the :math:`|W'_{io}|`, so never beyond :math:`S`), the
  firing inputs found from their bits (:func:`spike_words`): one vector add per 16 or 8
  outputs and firing input (numba, parallel over blocks of rows), cheapest where few inputs
  fire and the CPU has no int8 dot products;
- ``sparse``: the weight rows of the nonzero inputs times the inputs accumulated in int64
  (:math:`S < 2^{63}`; numba, parallel over rows), for graded inputs;
- ``int64``: torch's integer GEMM, only where nothing faster is exact;
- a convolution's direct kernels (over its spikes rather than im2col's columns,
  :data:`CONV_KERNELS`): ``onednn-conv``, as ``onednn`` on oneDNN's int8 convolution
  (:class:`OnednnConv`); ``spikes-conv``, as ``spikes`` with each input pixel's firing channels
  listed once rather than once per output reading it (:class:`SpikeConv`, groups 1).

Each exact kernel is timed once per shape and density (:math:`M` capped at
:data:`MEASURE_MACS` / KN rows, inputs firing at the first call's share of nonzero inputs,
rounded to :data:`DENSITY_STEP`; :data:`SPIKE_DENSITY` where unknown) and the times cached in
``cache_dir()/emulator-kernels/`` under a key of the CPU model, its flags, the instruction-set
caps in the environment, torch's version and threads (a capped run never reuses an uncapped
choice) and the kernels' code (:func:`kernels_code`); a convolution's exact direct kernels are timed and cached the same way, against
im2col plus the fastest product or the float grouped convolution
(:meth:`.emulator_synapses.Conv.direct_conv`). ``$SPIKECLIP_EMU_KERNEL`` forces one kernel
wherever it is exact (tests run each).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from ..errors import ExportError
from ..exchange.nirgraph import out_hw
from ..fileutil import write_cache
from ..machine import by_threads, machine_key
from ..paths import cache_dir

log = logging.getLogger(__name__)

#: forces one kernel (where exact): int8, onednn, float32, float64, spikes, sparse, int64 or
#: a convolution's onednn-conv or spikes-conv (:data:`CONV_KERNELS`)
FORCE_ENV = "SPIKECLIP_EMU_KERNEL"
#: multiply-accumulates of one timed product (rows capped to fit): a millisecond or so
MEASURE_MACS = 2**26
#: the inputs' density when timing where the synapse's is unknown (the shipped models fire
#: 5-30 % of their neurons a step)
SPIKE_DENSITY = 0.1
#: densities are timed at multiples of this (the sparse kernels' times follow the density)
DENSITY_STEP = 0.05
#: float32 holds every integer below 2^24 exactly, float64 every one below 2^53
FLOAT32_EXACT, FLOAT64_EXACT = 2**24, 2**53
INT16_EXACT, INT32_EXACT, INT64_EXACT = 2**15, 2**31, 2**63
#: rows of one task of :func:`_spike_rows` (each lists its firing inputs in a buffer of its own)
SPIKE_ROW_BLOCK = 256


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def _sparse_rows(cols, w, out):
    """``out[m] = sum_k cols[m, k] w[k]`` over the nonzero ``cols[m, k]`` (int64)."""
    m, k = cols.shape
    n = w.shape[1]
    for i in prange(m):
        for j in range(n):
            out[i, j] = 0
        for kk in range(k):
            c = np.int64(cols[i, kk])
            if c != 0:
                for j in range(n):
                    out[i, j] += c * w[kk, j]


def spike_words(x: np.ndarray) -> np.ndarray:
    """Spikes ``x [..., K]`` (int8; nonzero: fired) as bits: ``[..., ceil(K / 64)]`` uint64, bit
    ``b`` of word ``q`` input ``64 q + b`` (numpy's packbits, little bit order, zero-padded)."""
    k = x.shape[-1]
    words = np.zeros((*x.shape[:-1], -(-k // 64) * 8), np.uint8)
    words[..., :-(-k // 8)] = np.packbits(x.view(np.uint8), axis=-1, bitorder="little")
    return words.view(np.uint64)


_ONE = np.uint64(1)


@njit(cache=True, inline="always")
def _fired(words, fired):
    """The inputs whose bits are set in ``words`` (:func:`spike_words`) listed in ``fired``;
    their count (a word's set bits found by counting its trailing zeros, each then cleared)."""
    count = 0
    for q in range(len(words)):
        x = words[q]
        while x:
            fired[count] = 64 * q + np.intp(trailing_zeros(x))
            count += 1
            x &= x - _ONE
    return count


@njit(cache=True, inline="always")
def _add_rows(w, fired, count, o):
    """``o = sum_f w[fired[f]]`` over ``f < count``, in ``o``'s type: the rows added four at a
    time (one load and store of ``o`` per four)."""
    n = len(o)
    for j in range(n):
        o[j] = 0
    f = 0
    while f + 4 <= count:
        w0, w1, w2, w3 = w[fired[f]], w[fired[f + 1]], w[fired[f + 2]], w[fired[f + 3]]
        for j in range(n):
            o[j] += (w0[j] + w1[j]) + (w2[j] + w3[j])
        f += 4
    for g in range(f, count):
        w0 = w[fired[g]]  # a local: a store to o might alias fired[g] for LLVM
        for j in range(n):
            o[j] += w0[j]


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def _spike_rows(bits, w, out):
    """``out[m] = sum_k w[k]`` over the ``k`` whose bit is set in row ``m`` of ``bits``
    (:func:`spike_words`: the spikes that fire), summed in ``out``'s type; each row's firing
    inputs listed first (:func:`_fired`), their rows then added (:func:`_add_rows`), rows in
    blocks of :data:`SPIKE_ROW_BLOCK`."""
    m = bits.shape[0]
    for block in prange((m + SPIKE_ROW_BLOCK - 1) // SPIKE_ROW_BLOCK):
        fired = np.empty(64 * bits.shape[1], np.intp)
        for i in range(block * SPIKE_ROW_BLOCK, min(m, (block + 1) * SPIKE_ROW_BLOCK)):
            _add_rows(w, fired, _fired(bits[i], fired), out[i])


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def _spike_conv(bits, w, out, sh, sw, ph, pw, dh, dw):
    """``out [N, Ho, Wo, Cout]`` = the convolution of spikes ``[N, H, W, C]`` (as ``bits``,
    :func:`spike_words` over ``C``) by ``w [kh, kw, C, Cout]`` at strides ``sh, sw``, zero
    padding ``ph, pw`` and dilation ``dh, dw``, summed in ``out``'s type: each input pixel's
    firing channels listed once (:func:`_fired`), each output's rows of ``w`` (tap and channel)
    gathered from its receptive field's lists and added (:func:`_add_rows`). Samples in
    parallel."""
    n, h, wd = bits.shape[:3]
    kh, kw, c = w.shape[0], w.shape[1], w.shape[2]
    rows_of = w.reshape(kh * kw * c, w.shape[3])
    _, ho, wo, _ = out.shape
    for i in prange(n):
        fired = np.empty((h, wd, 64 * bits.shape[3]), np.int32)  # half intp's memory
        counts = np.empty((h, wd), np.intp)
        for y in range(h):
            for xx in range(wd):
                counts[y, xx] = _fired(bits[i, y, xx], fired[y, xx])
        rows = np.empty(kh * kw * c, np.int32)
        for oy in range(ho):
            for ox in range(wo):
                count = 0
                for ky in range(kh):
                    y = oy * sh - ph + ky * dh
                    if 0 <= y < h:
                        for kx in range(kw):
                            xx = ox * sw - pw + kx * dw
                            if 0 <= xx < wd:
                                base, listed = (ky * kw + kx) * c, fired[y, xx]
                                for q in range(counts[y, xx]):
                                    rows[count + q] = base + listed[q]
                                count += counts[y, xx]
                _add_rows(rows_of, rows, count, out[i, oy, ox])


def reused(buf: torch.Tensor | None, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A flat buffer of at least ``size`` elements of ``dtype``: ``buf`` where it is one, else
    new memory (a buffer kept from call to call: fresh memory costs page faults)."""
    return buf if buf is not None and buf.dtype == dtype and len(buf) >= size else \
        torch.empty(size, dtype=dtype)


class Kernel:
    """One exact product with ``W'`` ``[K, N]`` (int64) prepared; ``in_dtype`` the type its
    inputs are converted to first (None: any); its output buffer is reused from call to call
    (fresh memory costs page faults), valid until the next call."""

    name: str
    in_dtype: torch.dtype | None
    out_dtype: torch.dtype
    limit: int  # S must stay below it

    def __init__(self, w: np.ndarray) -> None:
        self.w = self._layout(torch.as_tensor(w))
        self._out: torch.Tensor | None = None

    @classmethod
    def exact(cls, w: np.ndarray, bound_in: int) -> bool:
        return bound_in * max_fan_in(w.T) < cls.limit

    def _layout(self, w: torch.Tensor) -> torch.Tensor:
        return w.to(self.out_dtype).contiguous()

    def out(self, m: int) -> torch.Tensor:
        size = m * self.w.shape[1]
        self._out = reused(self._out, size, self.out_dtype)
        return self._out[:size].view(m, self.w.shape[1])

    def __call__(self, cols: torch.Tensor) -> torch.Tensor:
        return torch.mm(row_major(cols.to(self.w.dtype)), self.w, out=self.out(len(cols)))


class Int8(Kernel):
    name, in_dtype, out_dtype, limit = "int8", torch.int8, torch.int32, INT32_EXACT

    @classmethod
    def exact(cls, w: np.ndarray, bound_in: int) -> bool:
        return bound_in <= 127 and fits_int8(w) and super().exact(w, bound_in) and \
            int_mm_exact(torch.backends.mkldnn.enabled)

    def _layout(self, w: torch.Tensor) -> torch.Tensor:
        return row_major(w.to(torch.int8))

    def __call__(self, cols: torch.Tensor) -> torch.Tensor:
        return torch._int_mm(row_major(cols.to(torch.int8)), self.w, out=self.out(len(cols)))


class Onednn(Kernel):
    """(Its output is new memory each call: the op takes no ``out``.)"""

    name, in_dtype, out_dtype, limit = "onednn", torch.uint8, torch.float32, FLOAT32_EXACT

    @classmethod
    def exact(cls, w: np.ndarray, bound_in: int) -> bool:
        return bound_in == 1 and torch.backends.mkldnn.is_available() and fits_int8(w) and \
            super().exact(w, bound_in)

    def _layout(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[1]
        self.scales, self.zero_points = torch.ones(n), torch.zeros(n, dtype=torch.int64)
        return torch.ops.onednn.qlinear_prepack(w.to(torch.int8).t().contiguous(), None)

    def __call__(self, cols: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(
            row_major(cols.to(torch.uint8)), 1.0, 0, self.w, self.scales, self.zero_points,
            None, 1.0, 0, torch.float32, "none", [], "")


class Float32(Kernel):
    name, in_dtype, out_dtype, limit = "float32", torch.float32, torch.float32, FLOAT32_EXACT


class Float64(Kernel):
    name, in_dtype, out_dtype, limit = "float64", torch.float64, torch.float64, FLOAT64_EXACT


class Int64(Kernel):
    name, in_dtype, out_dtype, limit = "int64", torch.int64, torch.int64, INT64_EXACT


class Spikes(Kernel):
    name, in_dtype, limit = "spikes", torch.int8, INT32_EXACT

    def __init__(self, w: np.ndarray) -> None:
        self.out_dtype = torch.int16 if max_fan_in(w.T) < INT16_EXACT else torch.int32
        super().__init__(w)

    @classmethod
    def exact(cls, w: np.ndarray, bound_in: int) -> bool:
        return bound_in == 1 and super().exact(w, bound_in)

    def __call__(self, cols: torch.Tensor) -> torch.Tensor:
        out = self.out(len(cols))
        _spike_rows(spike_words(row_major(cols).numpy()), self.w.numpy(), out.numpy())
        return out


class Sparse(Kernel):
    name, in_dtype, out_dtype, limit = "sparse", None, torch.int64, INT64_EXACT

    def __call__(self, cols: torch.Tensor) -> torch.Tensor:
        out = self.out(len(cols))
        _sparse_rows(row_major(cols).numpy(), self.w.numpy(), out.numpy())
        return out


#: every kernel, fastest first where the machine has int8 dot products (ties keep this order)
KERNELS: dict[str, type[Kernel]] = {k.name: k for k in (Int8, Onednn, Float32, Float64, Spikes,
                                                          Sparse, Int64)}


class ConvKernel(Protocol):
    """A convolution of binary spikes ``[N, H, W, C]`` (int8, channels last) by :math:`W'`
    (``[Cout, Cin / groups, kh, kw]``, int64) computed directly, without im2col's columns ->
    sums ``[N, Ho, Wo, Cout]``, exact where :meth:`exact` holds; made by ``cls(W', stride,
    padding, dilation, groups)``."""

    name: str

    @classmethod
    def exact(cls, w: np.ndarray, groups: int, bound_in: int) -> bool:
        r"""Whether it is exact for :math:`W'` ``w``, ``groups`` groups and inputs
        :math:`|x| \le` ``bound_in``."""

    def __call__(self, s: torch.Tensor) -> torch.Tensor: ...


def as_matrix(w: np.ndarray) -> np.ndarray:
    """A convolution's weights ``[Cout, ...]`` as a product's ``[K, Cout]`` (for bounds)."""
    return w.reshape(len(w), -1).T


class OnednnConv:
    r"""On oneDNN's int8 convolution (``torch.ops.onednn.qconv_pointwise``, the spikes as uint8,
    :math:`W'` as int8, scales 1, zero points 0: int32 sums written as float32), any groups:
    exact where the ``onednn`` product is (:math:`S < 2^{24}`, and no int16 pair sum of
    ``vpmaddubsw`` saturates). Its output is new memory each call."""

    name = "onednn-conv"

    def __init__(self, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], groups: int = 1) -> None:
        n = len(w)
        self.scales, self.zero_points = torch.ones(n), torch.zeros(n, dtype=torch.int64)
        self.geometry = [list(stride), list(padding), list(dilation), groups]
        self.w = torch.ops.onednn.qconv_prepack(torch.as_tensor(w).to(torch.int8), self.scales,
                                                1.0, 0, *self.geometry, None)

    @classmethod
    def exact(cls, w: np.ndarray, groups: int, bound_in: int) -> bool:
        return Onednn.exact(as_matrix(w), bound_in)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        x = s.contiguous().view(torch.uint8).permute(0, 3, 1, 2)  # NCHW, channels last
        return torch.ops.onednn.qconv_pointwise(
            x, 1.0, 0, self.w, self.scales, self.zero_points, None, *self.geometry, 1.0, 0,
            torch.float32, "none", [], "").permute(0, 2, 3, 1)


class SpikeConv:
    """The ``spikes`` product's sums without its columns (:func:`_spike_conv`): each input
    pixel's firing channels listed once, not once per output that reads it; groups 1, exact
    where ``spikes`` is (int16 where :math:`S < 2^{15}`, else int32). Its output buffer is
    reused from call to call, valid until the next call."""

    name = "spikes-conv"

    def __init__(self, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], groups: int = 1) -> None:
        dtype = torch.int16 if max_fan_in(w) < INT16_EXACT else torch.int32
        self.w = torch.as_tensor(w.transpose(2, 3, 1, 0)).to(dtype).contiguous()  # [kh kw C Co]
        self.geometry = (tuple(w.shape[2:]), stride, padding, dilation)
        self._out: torch.Tensor | None = None

    @classmethod
    def exact(cls, w: np.ndarray, groups: int, bound_in: int) -> bool:
        return groups == 1 and Spikes.exact(as_matrix(w), bound_in)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        kernel, stride, padding, dilation = self.geometry
        shape = (len(s), *out_hw(tuple(s.shape[1:3]), kernel, stride, padding, dilation),
                 self.w.shape[3])
        size = math.prod(shape)
        self._out = reused(self._out, size, self.w.dtype)
        out = self._out[:size].view(shape)
        _spike_conv(spike_words(s.numpy()), self.w.numpy(), out.numpy(), *stride, *padding,
                    *dilation)
        return out


#: the convolutions' direct kernels
CONV_KERNELS: dict[str, type[ConvKernel]] = {k.name: k for k in (OnednnConv, SpikeConv)}


def row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` (2-D) with the strides of a C-ordered matrix, copied if it has other ones: torch
    counts a matrix with a length-1 axis as contiguous whatever that axis's stride, and
    ``torch._int_mm`` on the CPU reads such a stride as the row length (wrong sums)."""
    return x if x.stride() == (x.shape[1], 1) else x.clone(memory_format=torch.contiguous_format)


@cache
def int_mm_exact(onednn: bool) -> bool:
    """Whether ``torch._int_mm`` sums exactly on this machine (with oneDNN on or off): where
    torch sends it to oneDNN's int8 x int8 kernel without int8 dot products (under an
    instruction-set cap, say), the inputs shifted to uint8 (1 -> 129) make int16 pair sums
    saturate: 64 ones times -128 must give -8192."""
    ones = torch.ones((32, 64), dtype=torch.int8)
    return bool((torch._int_mm(ones, torch.full((64, 32), -128, dtype=torch.int8)) == -8192).all())


def fits_int8(w: np.ndarray) -> bool:
    """Whether every weight fits int8."""
    return -128 <= w.min(initial=0) and w.max(initial=0) <= 127


def max_fan_in(w: np.ndarray) -> int:
    r""":math:`\max_o \sum |w_o|` over the outputs ``o`` (the first axis)."""
    return int(np.abs(w).reshape(len(w), -1).sum(1).max(initial=0))


def power_of_two(w: np.ndarray) -> int:
    """The largest ``k`` with ``2^k`` dividing every weight (0 for all zero)."""
    common = int(np.bitwise_or.reduce(np.abs(w).ravel(), initial=0))
    return (common & -common).bit_length() - 1 if common else 0


@cache
def kernels_code() -> str:
    """A hash of the kernels' code (this module's and the synapses', which time im2col and the
    float convolution): timings cached by another version of them are not reused."""
    here = Path(__file__)
    return hashlib.sha256(b"".join(
        f.read_bytes() for f in (here, here.with_name("emulator_synapses.py")))).hexdigest()[:16]


def _cache_path() -> Path:
    key = json.dumps({**machine_key(), "code": kernels_code()}, sort_keys=True)
    return cache_dir() / "emulator-kernels" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


_timings: dict[str, dict[str, float]] = {}  # shape -> kernel -> seconds, this machine's


def _load() -> dict[str, dict[str, float]]:
    if not _timings:
        try:
            _timings.update(json.loads(_cache_path().read_text())["shapes"])
        except (OSError, ValueError, KeyError):
            pass  # not measured yet, or unreadable: measure again
    return _timings


def seconds(calls: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Each call's best time of ``repeats`` rounds, the calls taking turns (a burst of other
    work then slows them alike), after a warm-up (and numba's compilation)."""
    best = dict.fromkeys(calls, float("inf"))
    for call in calls.values():
        call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure_rows(w: np.ndarray, rows: int) -> int:
    """The rows a product of ``W [K, N]`` is timed at: ``rows``, at most
    :data:`MEASURE_MACS` / KN."""
    return max(1, min(rows, MEASURE_MACS // max(1, w.shape[0] * w.shape[1])))


def density_step(density: float) -> float:
    """``density`` rounded to a multiple of :data:`DENSITY_STEP` (at least one)."""
    return max(1, round(density / DENSITY_STEP)) * DENSITY_STEP


def random_spikes(shape: tuple[int, ...], density: float) -> torch.Tensor:
    """Spikes (int8 0/1) of ``shape``, firing at ``density`` (seeded)."""
    return (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < density
            ).to(torch.int8)


def measure(w: np.ndarray, rows: int, names: list[str], density: float = SPIKE_DENSITY
            ) -> dict[str, float]:
    """Seconds of each kernel in ``names`` on ``W [K, N]`` and ``rows`` rows of spikes firing
    at ``density``, measured now (the inputs made in each kernel's type first, as the synapses
    make them)."""
    cols = random_spikes((rows, w.shape[0]), density)
    kernels = {name: KERNELS[name](w) for name in names}
    inputs = {name: cols if k.in_dtype is None else cols.to(k.in_dtype)
              for name, k in kernels.items()}
    return seconds({name: partial(k, inputs[name]) for name, k in kernels.items()})


def cached(key: str, names: list[str], measure_now: Callable[[list[str]], dict[str, float]]
           ) -> dict[str, float]:
    """Seconds of each of ``names`` for ``key`` (a shape and density), from this machine's
    cache or measured now by ``measure_now`` (those missing) and cached."""
    known = _load().setdefault(key, {})
    missing = [name for name in names if name not in known]
    if missing:
        known.update(measure_now(missing))
        machine = machine_key()
        write_cache(_cache_path(), lambda tmp: tmp.write_text(json.dumps(
            {"machine": machine, "shapes": _timings}, indent=1) + "\n"), "emulator kernel")
    return {name: known[name] for name in names}


def timings(w: np.ndarray, rows: int, names: list[str], density: float = SPIKE_DENSITY
            ) -> dict[str, float]:
    """Seconds of each kernel in ``names`` on ``W [K, N]`` at (at most) ``rows`` rows of
    inputs firing at ``density`` (:func:`density_step`), from the cache or measured now (and
    cached)."""
    m, density = measure_rows(w, rows), density_step(density)
    return cached(f"{m}x{w.shape[0]}x{w.shape[1]}@{density:.2f}", names,
                  lambda missing: measure(w, m, missing, density))


def exact_kernels(w: np.ndarray, bound_in: int, timed: bool = False) -> list[str]:
    """The kernels exact on ``W' [K, N]`` and inputs :math:`|x| \\le` ``bound_in``; where
    ``timed``, without ``int64`` (torch's integer GEMM, never faster than the others) unless it
    is the only one."""
    exact = [n for n, kernel in KERNELS.items() if kernel.exact(w, bound_in)]
    return [n for n in exact if n != "int64"] or exact if timed else exact


def forced_kernel() -> str | None:
    """The kernel ``$SPIKECLIP_EMU_KERNEL`` forces (None where unset)."""
    forced = os.environ.get(FORCE_ENV) or None
    if forced and forced not in (*KERNELS, *CONV_KERNELS):
        raise ExportError(f"${FORCE_ENV}={forced!r} names no kernel; use one of "
                          f"{', '.join((*KERNELS, *CONV_KERNELS))}, or unset it")
    return forced


def choose(name: str, w: np.ndarray, bound_in: int, rows: int,
           density: float = SPIKE_DENSITY) -> tuple[Kernel, int]:
    """The fastest exact kernel for synapse ``name``'s ``W [K, N]`` (int64) on inputs
    :math:`|x| \\le` ``bound_in``, ``rows`` rows a call, a share ``density`` of them nonzero
    (or ``$SPIKECLIP_EMU_KERNEL`` where it is exact), prepared, and ``k`` (its product times
    :math:`2^k` is ``cols @ W``)."""
    k = power_of_two(w)
    wq = w >> k
    exact = exact_kernels(wq, bound_in)
    if not exact:
        raise ExportError(f"synapse '{name}': its sums can reach 2^63 ({bound_in} x "
                          f"{max_fan_in(wq.T)} << {k}); re-export with smaller weights")
    forced = forced_kernel()
    if forced in exact:
        pick, why = forced, f"${FORCE_ENV}"
    else:
        exact = exact_kernels(wq, bound_in, timed=True)
        times = timings(wq, rows, exact, density)
        pick = min(exact, key=times.get)
        why = ", ".join(f"{n} {1e3 * t:.3g} ms" for n, t in times.items())
    log.info("synapse %s: [%d x %d] @ [%d x %d], density %.3f, on %s (%s)", name, rows,
             wq.shape[0], *wq.shape, density, pick, why)
    return KERNELS[pick](wq), k

