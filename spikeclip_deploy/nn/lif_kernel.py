r"""The float LIF's inference steps as one compiled pass (numba): each block of neurons keeps its
membrane in cache across the :math:`T` steps, where the eager loop makes seven passes over
memory per step. The arithmetic is the eager loop's, operation for operation, in the input's
own float type (no fused multiply-add, no reassociation), so the spikes are the same bit for
bit:

.. math::

    H_1 = X_1 / \tau, \qquad H_t = (X_t - V_{t-1}) / \tau + V_{t-1}, \qquad
    S_t = [H_t > V_{th}], \qquad V_t = H_t \cdot [H_t \le V_{th}]

It also counts each neuron's spikes over the steps, :math:`\sum_t S_t`, while the spikes are in
cache (what ``verify`` tallies).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..machine import by_threads

#: neurons per block: a block's membrane (float32) stays in the L1 cache
BLOCK = 2048


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def lif_spikes_rows(x, consts, out, counts):
    """``x [T, N]`` (float32 or float64) -> spikes ``out [T, N]`` (1 or 0, ``x``'s type) and
    each neuron's spike count ``counts [N]`` (an integer type holding :math:`T`); ``consts``
    holds :math:`\\tau`, :math:`V_{th}`, 0 and 1 in ``x``'s type (every operand of the same
    type: numba then computes in it, as torch does). Blocks of neurons run in parallel (numba's
    threads; serially on one, :func:`~..machine.by_threads`)."""
    tau, v_th, zero, one = consts[0], consts[1], consts[2], consts[3]
    steps, n = x.shape
    for c in prange((n + BLOCK - 1) // BLOCK):
        lo = c * BLOCK
        hi = min(n, lo + BLOCK)
        v = np.empty(hi - lo, dtype=x.dtype)
        cn = counts[lo:hi]
        cn[:] = 0
        for t in range(steps):
            xt, st = x[t, lo:hi], out[t, lo:hi]
            for j in range(hi - lo):  # branch-free: one vector loop per step
                h = (xt[j] - v[j]) / tau + v[j] if t else xt[j] / tau
                st[j] = one if h > v_th else zero
                cn[j] += h > v_th
                v[j] = h * (one if h <= v_th else zero)
