r"""The emulator's LIF steps, fused over neurons and steps: one compiled pass (numba) per
sample keeps a block of a layer's :math:`u` and :math:`v` in registers and cache across its
:math:`T` steps, in int32 or int64, as Lava's ``PyLifResetModelBitAcc`` computes them
(:math:`D` the decay bits, :math:`n` the state bits, :math:`\mathrm{top} = 2^{n-1}`):

.. math::
    u &\leftarrow \mathrm{trunc}(u\,k_u / 2^D) + x_t,\quad
      u \leftarrow u - 2\,\mathrm{top} \text{ if } u > \mathrm{top},\;
      u + 2\,\mathrm{top} \text{ if } u \le -\mathrm{top}\\
    v &\leftarrow \mathrm{clamp}\big(\mathrm{trunc}(v\,k_v / 2^D) + u + b,\,
      -\mathrm{top} + 1,\, \mathrm{top} - 1\big),\quad s = [v > v_{th}],\quad
      v \leftarrow 0 \text{ where } s

with :math:`x_t` the inputs' scaled sum at step :math:`t` (:math:`2^a a_{in}`). Every value (a
decay's product :math:`|x| m` with :math:`k = m 2^j`, :math:`m` odd, included) is an integer
the caller bounds: below :math:`2^{31}` it runs in int32 (twice the lanes of a vector
register), else in int64 (below :math:`2^{53}`): each operation is exact.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from ..machine import by_threads


def narrow(x, like):
    """``x`` in ``like``'s integer type (numba computes a sum, product or shift of int32
    values in int64; the cast lets LLVM keep the arithmetic in int32, twice the lanes)."""
    return type(like)(x)


@overload(narrow)
def _narrow(x, like):
    to = like
    return lambda x, like: to(x)


def shift_right(x, s):
    """``x >> s`` in ``x``'s integer type, ``0 <= s <`` its bits (``s`` masked to them: the
    same value, which lets LLVM shift in that type)."""
    return type(x)(x >> s)


@overload(shift_right)
def _shift_right(x, s):
    to, mask = x, x.bitwidth - 1
    return lambda x, s: to(x >> (s & mask))


def shift_left(x, s):
    """``x << s`` in ``x``'s integer type, ``0 <= s <`` its bits (masked as :func:`shift_right`)."""
    return type(x)(x << s)


@overload(shift_left)
def _shift_left(x, s):
    to, mask = x, x.bitwidth - 1
    return lambda x, s: to(x << (s & mask))


@njit(cache=True, inline="always")
def _decay(x, m, shift, rounding, zero):
    r""":math:`\mathrm{trunc}(x\,m / 2^s)` (:math:`k / 2^D = m / 2^s`, :math:`m` odd, so
    :math:`|x| m` bounds the product): an arithmetic shift rounds toward :math:`-\infty`, so a
    negative product first gains ``rounding`` :math:`= 2^s - 1` (rounding toward zero)."""
    p = narrow(x * m, zero)
    return shift_right(narrow(p + (rounding if p < zero else zero), zero), shift)


@njit(cache=True, inline="always")
def _neuron(uj, vj, bj, mv, sv, rv, vth, top, zero):
    """One neuron's step from its new ``u`` (before the wrap), its ``v`` and bias: ``u``
    wrapped, ``v`` after the step (0 where it spikes), the spike (scalars only: arrays passed
    to an inlined function cost a reference count each call)."""
    uj = narrow(uj - (top + top), zero) if uj > top else \
        (narrow(uj + (top + top), zero) if uj <= narrow(-top, zero) else uj)
    vj = narrow(_decay(vj, mv, sv, rv, zero) + uj + bj, zero)
    vj = min(max(vj, narrow(1 - top, zero)), narrow(top - 1, zero))
    s = vj > vth
    return uj, zero if s else vj, s


#: neurons a pass takes through all steps: their ``u``, ``v`` and summed inputs stay in the
#: first-level cache
BLOCK = 1024


@njit(cache=True, nogil=True, boundscheck=False)
def _add_rest(a, xs, shifts, i, t, j0, m):
    """``a[:m] = sum_{k >= 1} xs[k][i, t, j0:j0 + m] 2^shifts[k]`` (each ``x``'s one step
    where it holds one), in ``a``'s type."""
    for jj in range(m):
        a[jj] = 0
    for k in range(1, len(xs)):
        x, shift = xs[k], shifts[k]
        row = x[i, t if x.shape[1] > 1 else 0, j0:j0 + m]
        for jj in range(m):
            a[jj] += shift_left(narrow(row[jj], a[jj]), shift)


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def sum_terms(xs, shifts, out):
    r"""``out [N, T, F]`` :math:`= \sum_k` ``xs[k]`` :math:`2^{s_k}` (``shifts``) in one pass,
    in ``out``'s type (``xs`` as in :func:`lif_steps`, whose values and sum that type holds),
    in blocks of :data:`BLOCK` as :func:`lif_steps` sums its inputs. Samples run in parallel,
    as there."""
    n, steps, f = out.shape
    x0, s0 = xs[0], shifts[0]
    for i in prange(n):
        a = np.zeros(BLOCK, dtype=out.dtype)
        for t in range(steps):
            for j0 in range(0, f, BLOCK):
                m = min(BLOCK, f - j0)
                _add_rest(a, xs, shifts, i, t, j0, m)
                x = x0[i, t if x0.shape[1] > 1 else 0, j0:j0 + m]
                o = out[i, t, j0:j0 + m]
                for jj in range(m):
                    o[jj] = narrow(shift_left(narrow(x[jj], a[jj]), s0) + a[jj], a[jj])


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def lif_steps(xs, shifts, bias, consts, spikes, u_out, v_out):
    """Inputs ``xs`` (a tuple of C-ordered ``[N, 1 or T, F]`` arrays of one integer-valued
    type; one step held for all: a tuple costs a call far less than a typed list) ->
    ``spikes [N, T, F]`` (int8) and, where ``u_out``/``v_out`` have ``N`` rows, the state
    after each step (int64). :math:`x_t = \sum_k` ``xs[k]`` :math:`2^{s_k}` (``shifts``);
    ``bias [F]``; ``consts``: :math:`m_u, s_u, m_v, s_v, v_{th}`, top (the decays keep
    :math:`m_u 2^{-s_u}` of :math:`u` and :math:`m_v 2^{-s_v}` of :math:`v`). ``shifts``,
    ``bias`` and ``consts`` are of the type every step computes in (int32 or int64: each
    result cast back to it, :func:`narrow`, so the vector code keeps that type's lanes).
    Each sample's neurons run in blocks of :data:`BLOCK` through all steps, the first input
    read where it lies, the others summed first; where :math:`m_u = 0` (:math:`u` keeps
    nothing of its last value) a loop without :math:`u`'s decay. Samples run in parallel
    (numba's threads; serially on one, :func:`~..machine.by_threads`)."""
    mu, su, mv, sv, vth, top = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    zero = narrow(0, top)
    ru, rv = narrow((1 << su) - 1, zero), narrow((1 << sv) - 1, zero)
    n, steps, f = spikes.shape
    record = u_out.shape[0] == n
    x0, s0 = xs[0], shifts[0]
    for i in prange(n):
        u = np.empty(BLOCK, dtype=bias.dtype)
        v = np.empty(BLOCK, dtype=bias.dtype)
        a = np.zeros(BLOCK, dtype=bias.dtype)
        for j0 in range(0, f, BLOCK):
            m = min(BLOCK, f - j0)
            for jj in range(m):
                u[jj] = zero
                v[jj] = zero
            b = bias[j0:j0 + m]  # slices: indices from a range, never negative, vectorize
            for t in range(steps):
                x = x0[i, t if x0.shape[1] > 1 else 0, j0:j0 + m]
                rest = len(xs) > 1  # known when compiled: a tuple's length is in its type
                if rest:
                    _add_rest(a, xs, shifts, i, t, j0, m)
                row = spikes[i, t, j0:j0 + m]
                if mu == zero:  # u keeps nothing of its last value: its decay is 0
                    for jj in range(m):
                        xj = shift_left(narrow(x[jj], zero), s0)
                        if rest:
                            xj = narrow(xj + a[jj], zero)
                        u[jj], v[jj], row[jj] = _neuron(xj, v[jj], b[jj], mv, sv, rv, vth, top,
                                                        zero)
                else:
                    for jj in range(m):
                        xj = shift_left(narrow(x[jj], zero), s0)
                        if rest:
                            xj = narrow(xj + a[jj], zero)
                        u[jj], v[jj], row[jj] = _neuron(
                            narrow(_decay(u[jj], mu, su, ru, zero) + xj, zero), v[jj], b[jj],
                            mv, sv, rv, vth, top, zero)
                if record:
                    u_out[i, t, j0:j0 + m] = u[:m]
                    v_out[i, t, j0:j0 + m] = v[:m]
