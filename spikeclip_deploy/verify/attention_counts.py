r"""The graded spikes of spiking self-attention's populations on chip, counted from its recorded
Q, K and V spikes (the populations, :mod:`~..exchange.attention`, are memoryless: each step's
outputs follow from that step's Q, K and V).

Per head and step, with :math:`Q, K, V \in \{0,1\}^{N \times d}`, a population sends a graded
spike from every neuron whose output is nonzero:

.. math::

    \#kv &= \textstyle\sum_n |K_n|\,|V_n|, \quad \#m = \#\{M \ne 0\},\ M = K^\top V, \quad
    \#qm = \sum_i |Q_{:,i}|\, \#\{j: M_{ij} \ne 0\}, \quad \#y = \#\{Q M \ne 0\} \\
    \#qk &= \textstyle\sum_i |Q_{:,i}|\,|K_{:,i}|, \quad \#s = \#\{S \ne 0\},\ S = Q K^\top,
    \quad \#sv = \sum_{n,m} [S_{nm} \ne 0]\, |V_m|, \quad \#y = \#\{S V \ne 0\}

(``k_first``, then ``q_first``; :math:`|K_n|`: the spikes of token :math:`n`,
:math:`|Q_{:,i}|`: those of channel :math:`i`): a product is nonzero where both its factors
are, a sum where it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..exchange.attention import QKV, STAGES, AttentionNode, head_sums, products
from ..exchange.nirgraph import ChipLayer


def _heads(s: np.ndarray, heads: int) -> np.ndarray:
    """``[B, T, C, H, W]`` spikes -> ``[B, T, heads, N, d]`` float32 (channel ``h d + i`` is
    channel ``i`` of head ``h``; tokens in row-major order of ``H, W``)."""
    b, t, c = s.shape[:3]
    return (np.asarray(s, dtype=np.float32).reshape(b, t, heads, c // heads, -1)
            .swapaxes(-1, -2))


def population_events(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int,
                      order: str) -> dict[str, np.ndarray]:
    """Per stage of ``order`` (:data:`~..exchange.attention.STAGES`): the graded spikes its
    population of each head sends, summed over the steps, ``[B, heads]`` int64, from ``q, k,
    v``: ``[B, T, C, H, W]`` of 0/1 (module docstring)."""
    qh, kh, vh = (_heads(s, heads) for s in (q, k, v))  # float32: exact below 2**24

    def count(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:  # [B, T, heads, ...] -> [B, heads]
        return np.rint(np.asarray(x, np.float64).sum(axes)).astype(np.int64).sum(1)
    if order == "k_first":
        inner = head_sums("m", kh, vh)  # M = K^T V, [B, T, heads, d, d]
        first = kh.sum(-1) * vh.sum(-1)
        second = qh.sum(-2) * (inner != 0).sum(-1)
        out = head_sums("y", qh, inner)
    else:
        inner = head_sums("s", qh, kh)  # S = Q K^T, [B, T, heads, N, N]
        first = qh.sum(-2) * kh.sum(-2)
        second = (inner != 0) * vh.sum(-1)[..., None, :]
        out = head_sums("y", inner, vh)
    stages = tuple(STAGES[order])
    return dict(zip(stages, (count(first, (-1,)), count(inner != 0, (-1, -2)),
                             count(second, tuple(range(-second.ndim + 3, 0))),
                             count(out != 0, (-1, -2)))))


def attention_rows(layers: list[ChipLayer]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The attention populations of a chip graph, as JSON-ready rows (``name``, ``kind``,
    ``neurons``, ``readers``: per synapse layer out of it, ``READER<NAME``, the neurons one of
    its graded spikes reaches there (the same for each of its neurons), ``ports``: per synapse
    layer into it from a Q, K or V LIF, ``NAME<LIF``, that LIF); and per attention its Q, K, V
    LIFs, heads and order (what :func:`population_events` needs) and ``ann_macs``, the MACs of
    one dense evaluation (in the float model's order, :math:`Q K^\top` first: ``q_first``'s
    products, :math:`2 N^2 d` a head)."""
    pops = {la.name: la for la in layers if isinstance(la.node, AttentionNode)}
    readers: dict[str, dict[str, int]] = {name: {} for name in pops}
    for la in layers:
        for port, src in enumerate(la.inputs):
            if src not in pops:
                continue
            fan = (la.node.population.fan_out(port) if la.name in pops
                   else np.ones(1, np.int64))  # the attention LIF: one synapse per y neuron
            readers[src][f"{la.name}<{src}"] = int(fan.max())
    rows, groups = [], {}
    for name, la in pops.items():
        spec = la.node.spec
        qkv = {p: src for p, src in zip(spec.ports, la.inputs) if p in QKV}
        groups.setdefault(spec.attention, {"heads": spec.heads, "order": spec.order,
                                           "ann_macs": spec.heads * products(
                                               "q_first", spec.tokens, spec.d)})
        groups[spec.attention].update(qkv)
        rows.append({"name": name, "attention": spec.attention, "head": spec.head,
                     "stage": spec.stage, "kind": spec.kind,
                     "neurons": la.node.population.neurons, "readers": readers[name],
                     "ports": {f"{name}<{src}": src for src in qkv.values()}})
    return rows, groups


def attention_totals(tally: dict[str, Any]) -> dict[str, float]:
    """Per inference, from a :class:`~.energy.SpikeTally`'s state: ``products`` (nonzero
    products sent), ``product_updates`` and ``sum_updates`` (every product and graded sum neuron
    at every step), ``attention_graded_sops`` (each graded spike of a population times the
    neurons it reaches in its reader) and ``attention_spike_sops`` (Q, K and V spikes times the
    product neurons they reach)."""
    n, t, rows = tally["n"], tally["time_steps"], tally.get("attention", [])
    events = tally.get("attention_events", {})
    return {"products": sum(events[r["name"]] for r in rows if r["kind"] == "product") / n,
            "product_updates": t * sum(r["neurons"] for r in rows if r["kind"] == "product"),
            "sum_updates": t * sum(r["neurons"] for r in rows if r["kind"] == "sum"),
            "attention_graded_sops": sum(events[r["name"]] * sum(r["readers"].values())
                                         for r in rows) / n,
            "attention_spike_sops": sum(tally["attention_port_sops"].values()) / n if rows
            else 0.0}
