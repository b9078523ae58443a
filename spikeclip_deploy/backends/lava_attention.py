r"""Spiking self-attention on neuro-cores, wired from Lava's stock processes: ``ProdNeuron``
(products), ``Sparse``/``DelaySparse`` (binary and graded synapses) and ``GradedVec`` (graded
sums).

Spikingformer's attention, per head :math:`h` and step, on spikes :math:`Q, K, V \in
\{0,1\}^{N \times d}` (token :math:`n`, channel :math:`h d + i` of a ``[C, H, W]`` grid,
:math:`n = y W + x`), is :math:`Y_h = (Q_h K_h^\top) V_h`, an integer count (the scale
:math:`c` lives in the reading LIF). Two stages of products, each summed:

* K first: :math:`P_1[n,i,j] = K[n,i]\,V[n,j]` (an AND of two spikes), :math:`M[i,j] = \sum_n
  P_1[n,i,j]`; :math:`P_2[n,i,j] = Q[n,i]\,M[i,j]` (a spike gates a count), :math:`Y[n,j] =
  \sum_i P_2[n,i,j]`.
* Q first: :math:`P_1[n,m,i] = Q[n,i]\,K[m,i]`, :math:`S[n,m] = \sum_i P_1[n,m,i]`;
  :math:`P_2[n,m,j] = V[m,j]\,S[n,m]`, :math:`Y[n,j] = \sum_m P_2[n,m,j]`.

Each product population is one ``ProdNeuron`` (:math:`v = (a_1 a_2) \gg 0`, :math:`s = v\,[|v|
> 0]`: threshold 0, else an AND, whose product is 1, would never pass), every head's neurons
in one process; the stage-1 sum is a ``GradedVec`` (:math:`s = a_{in}\,[|a_{in}| > 0]`) reached
through a graded ``Sparse`` of unit weights, the stage-2 sum is the graded ``Sparse`` into the
reading LIF. Every synapse delays by one step, so :math:`Y` of the spikes of step :math:`t`
reaches the LIF at step :math:`t + 4`; the operand that joins at stage 2 (:math:`Q`, or
:math:`V` Q-first) is held two steps more (``DelaySparse``) to meet the stage-1 sum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

#: the orders of the two product stages
ORDERS = ("k_first", "q_first")
#: synapse hops from Q, K and V to the reading LIF
HOPS = 4
#: extra steps the stage-2 operand's synapse holds its spikes (the stage-1 sum's two hops)
STAGE2_HOLD = 2


@dataclass(frozen=True)
class Wiring:
    """Index arrays of the two stages (flat Lava-layout neuron indices of the ``[W, H, C]``
    operands): stage-1 product :math:`p` reads ``a[p]`` of operand ``a_from`` and ``b[p]`` of
    ``b_from`` and adds into sum ``g1[p]``; stage-2 product :math:`p` reads ``c[p]`` of
    ``c_from`` (held) and sum ``g2[p]``, and adds into ``y[p]`` of the output."""

    a_from: str
    b_from: str
    c_from: str
    a: np.ndarray
    b: np.ndarray
    g1: np.ndarray
    c: np.ndarray
    g2: np.ndarray
    y: np.ndarray
    sums: int


def wiring(grid: tuple[int, int, int], heads: int, order: str) -> Wiring:
    """The two stages' index arrays for operands of PyTorch shape ``grid`` ``(C, H, W)``."""
    c_all, h, w = grid
    n, d = h * w, c_all // heads
    tok = np.arange(n)

    def lava(token: np.ndarray, channel: np.ndarray) -> np.ndarray:
        return ((token % w) * h + token // w) * c_all + channel  # Lava layout (X, Y, C)
    if order == "k_first":  # neurons (head, n, i, j) for both stages
        hh, nn, ii, jj = (a.ravel() for a in np.meshgrid(np.arange(heads), tok, np.arange(d),
                                                         np.arange(d), indexing="ij"))
        g = (hh * d + ii) * d + jj
        return Wiring("k", "v", "q", lava(nn, hh * d + ii), lava(nn, hh * d + jj), g,
                      lava(nn, hh * d + ii), g, lava(nn, hh * d + jj), heads * d * d)
    if order == "q_first":  # stage 1 (head, n, m, i); stage 2 (head, n, m, j)
        hh, nn, mm, kk = (a.ravel() for a in np.meshgrid(np.arange(heads), tok, tok,
                                                         np.arange(d), indexing="ij"))
        g = (hh * n + nn) * n + mm
        return Wiring("q", "k", "v", lava(nn, hh * d + kk), lava(mm, hh * d + kk), g,
                      lava(mm, hh * d + kk), g, lava(nn, hh * d + kk), heads * n * n)
    raise ValueError(f"unknown attention order '{order}'; choose one of {', '.join(ORDERS)}")


def _gather(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> csr_matrix:
    return csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=shape)


def wire_attention(L: dict, ports: dict[str, Any], grid: tuple[int, int, int], heads: int,
                   order: str, bits: int, weight: int = 1, weight_exp: int = 0) -> Any:
    """Wire :math:`Y = (Q K^\top) V` per head between the spike ports ``ports`` (``q``, ``k``,
    ``v``: ``OutPort`` of Lava shape ``(W, H, C)`` for PyTorch ``grid`` ``(C, H, W)``) and return
    the graded ``Sparse`` whose flat ``a_out`` carries :math:`w\,Y \cdot 2^{e}` (``weight``
    :math:`w`, ``weight_exp`` :math:`e`) in Lava layout; graded messages of ``bits`` bits."""
    wi = wiring(grid, heads, order)
    n_in, n1, n2 = int(np.prod(grid)), len(wi.a), len(wi.c)
    p1 = L["ProdNeuron"](shape=(n1,), vth=0, exp=0)
    for src, idx, port in ((wi.a_from, wi.a, p1.a_in1), (wi.b_from, wi.b, p1.a_in2)):
        syn = L["Sparse"](weights=_gather(np.arange(n1), idx, (n1, n_in)), num_message_bits=0)
        ports[src].flatten().connect(syn.s_in)
        syn.a_out.connect(port)
    g = L["GradedVec"](shape=(wi.sums,), vth=0)
    to_sum = L["Sparse"](weights=_gather(wi.g1, np.arange(n1), (wi.sums, n1)),
                         num_message_bits=bits)
    p1.s_out.connect(to_sum.s_in)
    to_sum.a_out.connect(g.a_in)
    p2 = L["ProdNeuron"](shape=(n2,), vth=0, exp=0)
    held = _gather(np.arange(n2), wi.c, (n2, n_in))
    hold = L["DelaySparse"](weights=held, delays=(held * STAGE2_HOLD).astype(int),
                             num_message_bits=0)
    ports[wi.c_from].flatten().connect(hold.s_in)
    hold.a_out.connect(p2.a_in1)
    fan = L["Sparse"](weights=_gather(np.arange(n2), wi.g2, (n2, wi.sums)), num_message_bits=bits)
    g.s_out.connect(fan.s_in)
    fan.a_out.connect(p2.a_in2)
    out = L["Sparse"](weights=_gather(wi.y, np.arange(n2), (n_in, n2)) * weight,
                      weight_exp=weight_exp, num_message_bits=bits)
    p2.s_out.connect(out.s_in)
    return out
