r"""The emulator's LIF steps, fused over neurons and steps: one compiled pass (numba) per
sample keeps a layer's :math:`u` and :math:`v` in registers and cache across its :math:`T`
steps, in int32 or int64, as Lava's ``PyLifResetModelBitAcc`` computes them (:math:`D` the
decay bits, :math:`n` the state bits, :math:`\mathrm{top} = 2^{n-1}`):

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

from ..machine import by_threads


@njit(cache=True, inline="always")
def _decay(x, m, shift, zero, one):
    r""":math:`\mathrm{trunc}(x\,m / 2^s)` (:math:`k / 2^D = m / 2^s`, :math:`m` odd, so
    :math:`|x| m` bounds the product): an arithmetic shift rounds toward :math:`-\infty`, so a
    negative product first gains :math:`2^s - 1` (rounding toward zero)."""
    p = x * m
    return (p + ((one << shift) - one if p < zero else zero)) >> shift


@njit(cache=True, nogil=True, boundscheck=False)
def _add(a, x, scale, i, t, first):
    """``a (=|+=) scale x[i, t]`` (``x``'s one step where it holds one), in ``a``'s type."""
    row = x[i, t if x.shape[1] > 1 else 0]
    if first:
        for j in range(len(a)):
            a[j] = row[j]
            a[j] *= scale
    else:
        for j in range(len(a)):
            a[j] += row[j] * scale


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def lif_steps(xs, scales, bias, consts, spikes, u_out, v_out):
    """Inputs ``xs`` (a list of ``[N, 1 or T, F]`` arrays of one integer-valued type; one step
    held for all) -> ``spikes [N, T, F]`` (int8) and, where ``u_out``/``v_out`` have ``N``
    rows, the state after each step (int64). :math:`x_t = \sum_k` ``scales[k] xs[k]``;
    ``bias [F]``; ``consts``: :math:`m_u, s_u, m_v, s_v, v_{th}`, top (the decays keep
    :math:`m_u 2^{-s_u}` of :math:`u` and :math:`m_v 2^{-s_v}` of :math:`v`). ``scales``,
    ``bias`` and ``consts`` are of the type every step computes in (int32 or int64: every
    operand of one type, so numba computes in it). Samples run in parallel (numba's
    threads; serially on one, :func:`~..machine.by_threads`)."""
    mu, su, mv, sv, vth, top = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    zero = top - top
    one = zero + 1
    two_top = top + top
    n, steps, f = spikes.shape
    record = u_out.shape[0] == n
    for i in prange(n):
        u = np.zeros(f, dtype=bias.dtype)
        v = np.zeros(f, dtype=bias.dtype)
        a = np.empty(f, dtype=bias.dtype)
        for t in range(steps):
            _add(a, xs[0], scales[0], i, t, True)
            for k in range(1, len(xs)):
                _add(a, xs[k], scales[k], i, t, False)
            for j in range(f):
                uj = _decay(u[j], mu, su, zero, one) + a[j]
                uj = uj - two_top if uj > top else (uj + two_top if uj <= -top else uj)
                vj = _decay(v[j], mv, sv, zero, one) + uj + bias[j]
                vj = min(max(vj, one - top), top - one)
                s = vj > vth
                spikes[i, t, j] = s
                v[j] = zero if s else vj
                u[j] = uj
            if record:
                u_out[i, t] = u
                v_out[i, t] = v
