r"""Fan-in splits summed in one product on the emulator.

A neuro-core holds only so many input axons, so the ``split_fan_in`` lowering pass cuts a
synapse :math:`W` (a dense layer, a pointwise convolution) into parts :math:`W_k`, each zero
outside its own run of input columns, read from one source :math:`s` and summed on a chain of
graded relays (metadata ``part_of`` on the parts, ``fan_in_of`` on the relays, both naming the
layer :math:`L` that was cut):

.. math::

    r_1 = x + W_1\,s, \qquad r_k = r_{k-1} + W_k\,s \quad (k = 2..K)

(:math:`x` the first relay's other inputs, if any). The relays add exactly, so where no part's
sum wraps or floors, the last relay receives :math:`x + (\sum_k W_k)\,s`: one product over the
whole fan-in, which the emulator computes at once (in window-local time the parts' delays do
not matter). Each part is a product over the whole input width (zero outside its run), so
the emulator would run :math:`K` products the size of the whole one: fused, it runs one. The
intermediate relays are then never formed: a run that records state (every relay's payloads)
keeps the chain.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..exchange.nirgraph import ChipLayer, is_relay, readers


def fan_in_chains(layers: list[ChipLayer]) -> dict[str, tuple[list[ChipLayer], list[ChipLayer]]]:
    """Per cut layer name :math:`L`: its parts and its chain of relays, in graph order, where
    they have the shape the module docstring gives (as many relays as parts, ``r_k`` reading
    ``r_{k-1}`` (or the first's other inputs) and part ``k``; the parts of one type, reading one
    source, each read by its relay only; each relay but the last read by the next only) and
    :math:`L` names no layer."""
    names = {la.name for la in layers}
    read_by = {name: [la.name for la in them] for name, them in readers(layers).items()}
    parts: dict[str, list[ChipLayer]] = {}
    relays: dict[str, list[ChipLayer]] = {}
    for la in layers:
        meta = la.node.metadata
        if "part_of" in meta:
            parts.setdefault(meta["part_of"], []).append(la)
        elif is_relay(la.node) and "fan_in_of" in meta:
            relays.setdefault(meta["fan_in_of"], []).append(la)
    chains = {}
    for cut, ps in parts.items():
        rs = relays.get(cut, [])
        if cut in names or len(ps) < 2 or len(rs) != len(ps) or \
                len({(type(p.node), p.inputs) for p in ps}) != 1 or len(ps[0].inputs) != 1:
            continue
        ok = all(read_by.get(p.name) == [r.name] and r.inputs[-1] == p.name
                 for p, r in zip(ps, rs))
        ok = ok and all(read_by.get(a.name) == [b.name] and b.inputs == (a.name, ps[k + 1].name)
                        for k, (a, b) in enumerate(zip(rs, rs[1:])))
        if ok:
            chains[cut] = (ps, rs)
    return chains


def fuse_fan_ins(layers: list[ChipLayer],
                 fusable: Callable[[list[ChipLayer], ChipLayer], bool]) -> list[ChipLayer]:
    r"""``layers`` with each fan-in chain (:func:`fan_in_chains`) for which ``fusable(parts,
    merged)`` holds replaced by one synapse layer :math:`L` (the first part's node with weights
    :math:`\sum_k W_k`, reading the parts' source, where the first part stood) and the chain's
    last relay, reading the first relay's other inputs and :math:`L`."""
    drop: set[str] = set()
    merged: dict[str, ChipLayer] = {}  # first part's name -> the merged layer
    last: dict[str, ChipLayer] = {}  # last relay's name -> it, reading the merged layer
    for cut, (parts, relays) in fan_in_chains(layers).items():
        node = parts[0].node
        meta = {k: v for k, v in node.metadata.items() if k not in ("part_of", "columns")}
        whole = ChipLayer(cut, dataclasses.replace(
            node, weight=sum(np.asarray(p.node.weight) for p in parts), metadata=meta),
            parts[0].inputs)
        if not fusable(parts, whole):
            continue
        drop.update(la.name for la in parts[1:] + relays[:-1])
        merged[parts[0].name] = whole
        head = relays[0].inputs[:-1]
        last[relays[-1].name] = dataclasses.replace(relays[-1], inputs=head + (cut,))
    return [merged.get(la.name) or last.get(la.name) or la
            for la in layers if la.name not in drop]
