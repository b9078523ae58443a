r"""The ``graded_streams`` pass: residual streams carried by graded relays instead of per-reader
synapse copies.

A residual stream is a sum of synapse-layer outputs (its *terms*) that several LIFs read, each
a longer prefix of it: :math:`x_k = \sum_{j \le k} y_j`. On a neuro-core a synapse ends on one
population, so without relays every reader needs its own copy of every term it sums
(``split_fanout``): the chip executes each term once per reader, and the last readers' input
axons grow with the depth of the network. With relays, each prefix sum is a population of
graded neurons (Lava's ``GradedVec``, threshold 0: :math:`v_t = a_{in,t}`, :math:`s_t = v_t`
sent as one graded spike per neuron and step) that sums the previous relay (through an identity
synapse) and the new terms; every reader reads its relay through one identity synapse. Each term
then runs once.

The pass compares both forms per stream, at full activity (every neuron active every step, a
bound that needs no data): *copies* execute :math:`\sum_t \mathrm{FLOPs}_t\, r_t` synaptic
operations (:math:`r_t` the readers summing term :math:`t`); *graded* executes
:math:`\sum_t \mathrm{FLOPs}_t` plus one graded message per relay neuron and reader (an
identity synaptic operation) plus one update per relay neuron. It logs both (and the input axons
each form needs at its readers) and keeps the copies only where they cost no more; the
``copies`` form (``export --residual copies``) keeps them everywhere. The choice and the costs
are in the graph's ``meta["streams"]``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import nir
import numpy as np

from ..nirgraph import relay_node
from .graph import Graph, Layer
from .quantize import SYNAPSES
from .resources import flops

log = logging.getLogger(__name__)

#: the residual forms ``export --residual`` offers
RESIDUAL_FORMS = ("graded", "copies")


def _in_shape(graph: Graph, syn: Layer) -> tuple[int, ...]:
    return tuple(np.asarray(graph.layer(syn.inputs[0]).node.tau).shape)


def _plan(graph: Graph) -> tuple[dict[frozenset, tuple[str, tuple[str, ...], str]], dict[str, str]]:
    """(relays: term set -> (name, inputs, first reader), reader LIF -> its relay), in layer
    order: each LIF that sums a shared synapse reads the relay of exactly its terms, which
    sums the largest relay of a subset of them and the terms that one lacks."""
    shared = {la.name for la in graph.layers
              if isinstance(la.node, SYNAPSES) and len(graph.consumers(la.name)) > 1}
    relays: dict[frozenset, tuple[str, tuple[str, ...], str]] = {}
    reads: dict[str, str] = {}
    for la in graph.layers:
        if not (isinstance(la.node, nir.LIF) and shared & set(la.inputs)) or not all(
                isinstance(graph.layer(i).node, SYNAPSES) for i in la.inputs):
            continue
        key = frozenset(la.inputs)
        if key not in relays:
            prev = max((k for k in relays if k < key), key=len, default=frozenset())
            inputs = ((relays[prev][0],) if prev else ()) + tuple(i for i in la.inputs
                                                                   if i not in prev)
            relays[key] = (f"relay{len(relays)}", inputs, la.name)
        reads[la.name] = relays[key][0]
    return relays, reads


def _streams(relays: dict[frozenset, tuple[str, tuple[str, ...], str]]) -> dict[str, str]:
    """relay -> its stream (the first relay of the chain it belongs to)."""
    stream: dict[str, str] = {}
    for name, inputs, _ in relays.values():
        stream[name] = next((stream[i] for i in inputs if i in stream), name)
    return stream


def _costs(graph: Graph, relays: dict, reads: dict[str, str], members: set[str]) -> dict[str, Any]:
    """Both forms' per-step costs at full activity for the stream of relays ``members``."""
    mine = {key: r for key, r in relays.items() if r[0] in members}
    readers = [lif for lif, relay in reads.items() if relay in members]
    terms = {t for key in mine for t in key}
    syn = {t: graph.layer(t) for t in terms}
    ops = {t: flops(syn[t].node, _in_shape(graph, syn[t])) for t in terms}
    axons_in = {t: int(np.prod(_in_shape(graph, syn[t]))) for t in terms}
    summed = {t: sum(t in graph.layer(r).inputs for r in readers) for t in terms}
    relay_readers = {name: sum(reads[r] == name for r in readers)
                     + sum(name in inputs for _, inputs, _ in mine.values())
                     for name, _, _ in mine.values()}
    size = {name: int(np.prod(np.asarray(graph.layer(first).node.tau).shape))
            for name, _, first in mine.values()}
    new_terms = [t for _, inputs, _ in mine.values() for t in inputs if t in terms]
    copies = {"synaptic_ops": sum(ops[t] * summed[t] for t in terms), "graded_messages": 0,
              "relay_updates": 0, "input_axons": sum(axons_in[t] * summed[t] for t in terms)}
    graded = {"synaptic_ops": sum(ops[t] for t in new_terms),
              "graded_messages": sum(size[n] * relay_readers[n] for n in size),
              "relay_updates": sum(size.values()),
              "input_axons": sum(axons_in[t] for t in new_terms)
              + sum(size[n] * relay_readers[n] for n in size)}
    return {"relays": sorted(size, key=lambda n: int(n[5:])), "readers": readers,
            "terms": sorted(terms), "copies": copies, "graded": graded}


def operations(cost: dict[str, int]) -> int:
    """One form's operations per step at full activity: synaptic ops, graded messages (each an
    identity synaptic op at its reader) and relay updates."""
    return cost["synaptic_ops"] + cost["graded_messages"] + cost["relay_updates"]


def graded_streams(graph: Graph, form: str) -> Graph:
    """The pass (module docstring): ``form`` ``graded`` relays every stream where that is
    cheaper, ``copies`` none (both forms' costs are logged either way)."""
    relays, reads = _plan(graph)
    stream_of = _streams(relays)
    kept: set[str] = set()
    report = {}
    for stream in sorted(set(stream_of.values()), key=lambda n: int(n[5:])):
        members = {r for r, s in stream_of.items() if s == stream}
        cost = _costs(graph, relays, reads, members)
        cheaper = operations(cost["graded"]) < operations(cost["copies"])
        cost["form"] = "graded" if cheaper and form == "graded" else "copies"
        log.info("%s encoder, residual stream read by %s: copies %s; graded %s (relays %s): "
                 "%s kept", graph.side, ", ".join(cost["readers"]), cost["copies"],
                 cost["graded"], ", ".join(cost["relays"]), cost["form"])
        if cost["form"] == "graded":
            kept |= members
        report[stream] = cost
    relays = {key: r for key, r in relays.items() if r[0] in kept}
    reads = {lif: r for lif, r in reads.items() if r in kept}
    first = {reader: (name, inputs) for name, inputs, reader in relays.values()}
    layers: list[Layer] = []
    for la in graph.layers:
        if la.name in first:
            name, inputs = first[la.name]
            shape = tuple(np.asarray(la.node.tau).shape)
            layers.append(Layer(name, relay_node(shape, {"stream": stream_of[name]}), inputs,
                                la.source))
        layers.append(dataclasses.replace(la, inputs=(reads[la.name],)) if la.name in reads
                      else la)
    return graph.replace(layers=tuple(layers), meta={**graph.meta, "residual": form,
                                                     "streams": report})
