r"""The operations of spiking self-attention on chip, counted from its recorded Q, K and V spikes.

Per head :math:`h` and step, :math:`Q, K, V \in \{0,1\}^{N \times d}` (the head's :math:`d`
channels of the :math:`N` tokens). The chip computes :math:`Y = Q K^\top V` exactly in two
stages of product neurons, each followed by graded sum neurons:

- K first: products :math:`P^1_{nij} = K_{ni} V_{nj}` summed into :math:`M = K^\top V`
  (:math:`d \times d`), then :math:`P^2_{nij} = Q_{ni} M_{ij}` summed into :math:`Y_{nj}`.
- Q first: :math:`P^1_{nmi} = Q_{ni} K_{mi}` summed into :math:`S = Q K^\top`
  (:math:`N \times N`), then :math:`P^2_{nmj} = S_{nm} V_{mj}` summed into :math:`Y_{nj}`.

A product is *nonzero* where both its inputs are:

.. math::

    \#P^1 &= \textstyle\sum_n |K_n| |V_n|, \quad
    \#P^2 = \sum_i |Q_{:,i}|\, \#\{j: M_{ij} \ne 0\} \quad\text{(K first)} \\
    \#P^1 &= \textstyle\sum_i |Q_{:,i}| |K_{:,i}|, \quad
    \#P^2 = \sum_{n,m} [S_{nm} \ne 0]\, |V_m| \quad\text{(Q first)}

(:math:`|K_n|`: the spikes of token :math:`n`; :math:`|Q_{:,i}|`: those of channel :math:`i`).
Each nonzero product sends one graded spike to its sum; each nonzero intermediate sum
(:math:`M_{ij}` or :math:`S_{nm}`) one graded spike to the :math:`N` (K first) or :math:`d`
(Q first) second-stage products that read it; each spike of Q, K and V drives :math:`d` (K
first) or :math:`N` (Q first) product neurons. Product neurons and intermediate sums update at
every step (the static counts :func:`attention_sizes`).
"""
from __future__ import annotations

import numpy as np

ORDERS = ("k_first", "q_first")


def attention_sizes(tokens: int, heads: int, d: int, order: str) -> dict[str, int]:
    """Neurons of one attention layer, all heads: ``products`` (both stages), ``sums`` (the
    intermediate sums, :math:`M` or :math:`S`), ``fan_in`` (spike inputs of Q, K and V to
    product neurons per spike) and ``sum_fan_out`` (second-stage products an intermediate sum
    reads into)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    k_first = order == "k_first"
    per_stage = tokens * d * d if k_first else tokens * tokens * d
    return {"products": 2 * heads * per_stage,
            "sums": heads * (d * d if k_first else tokens * tokens),
            "fan_in": d if k_first else tokens,
            "sum_fan_out": tokens if k_first else d}


def _heads(s: np.ndarray, heads: int) -> np.ndarray:
    """``[B, T, C, H, W]`` spikes -> ``[B*T, heads, N, d]`` float32 (channel ``h*d + c`` is
    channel ``c`` of head ``h``; tokens in row-major order of ``H, W``)."""
    b, t, c = s.shape[:3]
    return (np.asarray(s, dtype=np.float32).reshape(b * t, heads, c // heads, -1)
            .transpose(0, 1, 3, 2))


def attention_counts(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int,
                     order: str) -> dict[str, np.ndarray]:
    """Per sample of a batch (``q, k, v``: ``[B, T, C, H, W]`` of 0/1), summed over steps and
    heads: ``products`` (nonzero products, both stages), ``sum_spikes`` (nonzero intermediate
    sums), ``graded_sops`` (graded spikes into sums and second-stage products: one per nonzero
    product, ``sum_fan_out`` per nonzero intermediate sum) and ``spike_sops`` (Q, K and V
    spikes times ``fan_in``), each an int64 array ``[B]``."""
    b, t, c, hh, ww = q.shape
    size = attention_sizes(hh * ww, heads, c // heads, order)
    qh, kh, vh = (_heads(s, heads) for s in (q, k, v))  # float32: exact below 2**24
    if order == "k_first":
        inner = kh.transpose(0, 1, 3, 2) @ vh  # M = K^T V, [BT, heads, d, d]
        first = (kh.sum(-1) * vh.sum(-1)).sum((-1, -2))
        second = (qh.sum(-2) * (inner != 0).sum(-1)).sum(-1).sum(-1)
    else:
        inner = qh @ kh.transpose(0, 1, 3, 2)  # S = Q K^T, [BT, heads, N, N]
        first = (qh.sum(-2) * kh.sum(-2)).sum((-1, -2))
        second = ((inner != 0) * vh.sum(-1)[:, :, None, :]).sum((-1, -2, -3))
    sums = (inner != 0).sum((-1, -2, -3))
    spikes = sum(s.sum((-1, -2, -3)) for s in (qh, kh, vh))

    def per_sample(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, np.float64)).astype(np.int64).reshape(b, t).sum(1)
    products = per_sample(first) + per_sample(second)
    return {"products": products, "sum_spikes": per_sample(sums),
            "graded_sops": products + size["sum_fan_out"] * per_sample(sums),
            "spike_sops": size["fan_in"] * per_sample(spikes)}
