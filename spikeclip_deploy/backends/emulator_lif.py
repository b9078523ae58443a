r"""The emulator's LIF steps, fused over neurons and steps: one compiled pass (numba) per
sample keeps a layer's :math:`u` and :math:`v` in registers and cache across its :math:`T`
steps, in int64, as Lava's ``PyLifResetModelBitAcc`` computes them (:math:`D` the decay bits,
:math:`n` the state bits, :math:`\mathrm{top} = 2^{n-1}`):

.. math::
    u &\leftarrow \mathrm{trunc}(u\,k_u / 2^D) + x_t,\quad
      u \leftarrow u - 2\,\mathrm{top} \text{ if } u > \mathrm{top},\;
      u + 2\,\mathrm{top} \text{ if } u \le -\mathrm{top}\\
    v &\leftarrow \mathrm{clamp}\big(\mathrm{trunc}(v\,k_v / 2^D) + u + b,\,
      -\mathrm{top} + 1,\, \mathrm{top} - 1\big),\quad s = [v > v_{th}],\quad
      v \leftarrow 0 \text{ where } s

with :math:`x_t` the inputs' scaled sum at step :math:`t` (:math:`2^a a_{in}`). Every value (a
decay's product :math:`|x| m` with :math:`k = m 2^j`, :math:`m` odd, included) is an integer
below :math:`2^{63}` where the caller's bounds keep them below :math:`2^{53}`: each operation is
exact.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _decay(x, m, shift):
    r""":math:`\mathrm{trunc}(x\,m / 2^s)` (:math:`k / 2^D = m / 2^s`, :math:`m` odd, so
    :math:`|x| m` bounds the product): an arithmetic shift rounds toward :math:`-\infty`, so a
    negative product first gains :math:`2^s - 1` (rounding toward zero, branch-free)."""
    p = x * m
    return (p + ((p >> 63) & ((1 << shift) - 1))) >> shift


@njit(cache=True, nogil=True, boundscheck=False)
def _add(a, x, scale, i, t, first):
    """``a (=|+=) scale x[i, t]`` (``x``'s one step where it holds one)."""
    row = x[i, t if x.shape[1] > 1 else 0]
    if first:
        for j in range(len(a)):
            a[j] = np.int64(row[j]) * scale
    else:
        for j in range(len(a)):
            a[j] += np.int64(row[j]) * scale


@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def lif_steps(xs, scales, bias, mu, su, mv, sv, vth, top, spikes, u_out, v_out):
    """Inputs ``xs`` (a list of ``[N, 1 or T, F]`` arrays of one integer-valued type; one step
    held for all) -> ``spikes [N, T, F]`` (int8) and, where ``u_out``/``v_out`` have ``N``
    rows, the state after each step (int64). :math:`x_t = \sum_k` ``scales[k] xs[k]``;
    ``bias [F]`` int64; the decays keep :math:`m_u 2^{-s_u}` of :math:`u` and
    :math:`m_v 2^{-s_v}` of :math:`v`. Samples run in parallel (numba's threads)."""
    n, steps, f = spikes.shape
    record = u_out.shape[0] == n
    for i in prange(n):
        u = np.zeros(f, dtype=np.int64)
        v = np.zeros(f, dtype=np.int64)
        a = np.empty(f, dtype=np.int64)
        for t in range(steps):
            _add(a, xs[0], scales[0], i, t, True)
            for k in range(1, len(xs)):
                _add(a, xs[k], scales[k], i, t, False)
            for j in range(f):
                uj = _decay(u[j], mu, su) + a[j]
                uj = uj - 2 * top if uj > top else (uj + 2 * top if uj <= -top else uj)
                vj = _decay(v[j], mv, sv) + uj + bias[j]
                vj = min(max(vj, -top + 1), top - 1)
                s = vj > vth
                spikes[i, t, j] = s
                v[j] = 0 if s else vj
                u[j] = uj
            if record:
                u_out[i, t] = u
                v_out[i, t] = v
