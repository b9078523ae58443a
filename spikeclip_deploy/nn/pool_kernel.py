r"""Max pooling as one compiled pass (numba), for inference: each output is the largest of its
window's elements, :math:`y_{o} = \max_{(i, j) \in W_o} x_{ij}` (NaN wins, as in torch), over the
real elements only (torch pads with :math:`-\infty`). A maximum is exact, so the results equal
torch's bit for bit, at about half its time on a spiking layer's planes.
"""
from __future__ import annotations

from numba import njit, prange

from ..machine import by_threads


@by_threads
@njit(cache=True, parallel=True, nogil=True, boundscheck=False)
def max_pool_planes(x, k, stride, pad, out):
    """``x [P, H, W]`` -> ``out [P, Ho, Wo]``: the maximum of each ``k x k`` window at
    ``stride``, the input padded by ``pad`` (at most ``k // 2``: every window holds a real
    element). Planes run in parallel (numba's threads; serially on one,
    :func:`~..machine.by_threads`)."""
    p, h, w = x.shape
    _, ho, wo = out.shape
    for i in prange(p):
        for oy in range(ho):
            ylo = max(oy * stride - pad, 0)
            yhi = min(oy * stride - pad + k, h)
            for ox in range(wo):
                xlo = max(ox * stride - pad, 0)
                xhi = min(ox * stride - pad + k, w)
                m = x[i, ylo, xlo]
                for yy in range(ylo, yhi):
                    for xx in range(xlo, xhi):
                        v = x[i, yy, xx]
                        if v > m or v != v:
                            m = v
                out[i, oy, ox] = m
