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

The pass prices both forms per stream at full activity (every neuron active every step, a
bound that needs no data) with the target chip's energy model (``hardware/energy-loihi.json``
for Loihi, the figures the chip energy report uses), per step:

.. math::

    E_{copies} &= E_{SOP} \sum_t \mathrm{FLOPs}_t\, r_t + E_{msg} \sum_t A_t\, r_t \\
    E_{graded} &= E_{SOP} \sum_t \mathrm{FLOPs}_t + E_{msg} \sum_t A_t
      + \sum_r N_r \big(E_{relay} + R_r (E_{graded\,op} + E_{graded\,msg})\big)

(:math:`r_t` the readers summing term :math:`t`, :math:`A_t` its input neurons, each sending
one message per reader at the least; :math:`N_r` a relay's neurons, :math:`R_r` its readers,
each sent one graded message and executing one identity synaptic op per relay neuron). It logs
both (with their operation counts and the input axons each needs at its readers) and keeps the
graded form where it costs less energy, unless one neuron of one of its readers would need more
input axons than a neuro-core holds (``input_axons_per_core`` of the chip profile) while the
copies form fits (and likewise the other way round). The ``copies`` form (``export --residual
copies``) keeps copies everywhere. The choice and the costs are in the graph's
``meta["streams"]``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import nir
import numpy as np

from ..hardware import ChipEnergyModel
from ..exchange.nirgraph import relay_node
from ..targets import RESIDUAL_FORMS
from .graph import Graph, Layer
from .quantize import SYNAPSES
from ..exchange.resources import flops

log = logging.getLogger(__name__)


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


def _fan_in(node: nir.NIRNode) -> int:
    """Input neurons one target neuron of a synapse layer reads (a convolution's receptive
    field, a dense layer's inputs): the input axons it needs on its core at the least."""
    return int(np.prod(np.asarray(node.weight).shape[1:]))


def _costs(graph: Graph, relays: dict, reads: dict[str, str], members: set[str],
           energy: ChipEnergyModel) -> dict[str, Any]:
    """Both forms' per-step costs at full activity for the stream of relays ``members``
    (module docstring): operation counts, input axons, the most input axons one neuron of a
    reader needs (``reader_axons``) and ``energy_pj``."""
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
              "relay_updates": 0, "input_axons": sum(axons_in[t] * summed[t] for t in terms),
              "reader_axons": max(sum(_fan_in(syn[t].node) for t in graph.layer(r).inputs)
                                  for r in readers)}
    graded = {"synaptic_ops": sum(ops[t] for t in new_terms),
              "graded_messages": sum(size[n] * relay_readers[n] for n in size),
              "relay_updates": sum(size.values()),
              "input_axons": sum(axons_in[t] for t in new_terms)
              + sum(size[n] * relay_readers[n] for n in size),
              "reader_axons": max(1, *(sum(1 if i in size else _fan_in(syn[i].node)
                                           for i in inputs) for _, inputs, _ in mine.values()))}
    spike_messages = {"copies": sum(axons_in[t] * summed[t] for t in terms),
                      "graded": sum(axons_in[t] for t in new_terms)}
    for form, cost in (("copies", copies), ("graded", graded)):
        cost["energy_pj"] = (energy.e_synaptic_op_pj * cost["synaptic_ops"]
                             + energy.e_spike_message_pj * spike_messages[form]
                             + (energy.e_graded_op_pj + energy.e_graded_message_pj)
                             * cost["graded_messages"]
                             + energy.e_relay_update_pj * cost["relay_updates"])
    return {"relays": list(size), "readers": readers, "terms": sorted(terms), "copies": copies,
            "graded": graded}


def _choose(cost: dict[str, Any], form: str, input_axons_per_core: int) -> str:
    """The form a stream keeps: ``copies`` when asked; else the one of less energy, but never
    one whose reader needs more input axons than a core holds where the other fits."""
    if form == "copies":
        return "copies"
    fits = {f: cost[f]["reader_axons"] <= input_axons_per_core for f in RESIDUAL_FORMS}
    if fits["graded"] != fits["copies"]:
        return "graded" if fits["graded"] else "copies"
    return "graded" if cost["graded"]["energy_pj"] < cost["copies"]["energy_pj"] else "copies"


def graded_streams(graph: Graph, form: str, energy: ChipEnergyModel,
                   input_axons_per_core: int) -> Graph:
    """The pass (module docstring): ``form`` ``graded`` relays every stream where that costs
    less energy under ``energy`` (within ``input_axons_per_core``), ``copies`` none (both
    forms' costs are logged either way)."""
    relays, reads = _plan(graph)
    stream_of = _streams(relays)
    kept: set[str] = set()
    report = {}
    for stream in dict.fromkeys(stream_of.values()):  # in the order the relays were made
        members = {r for r, s in stream_of.items() if s == stream}
        cost = _costs(graph, relays, reads, members, energy)
        cost["form"] = _choose(cost, form, input_axons_per_core)
        log.info("%s encoder, residual stream read by %s: copies %s (%.1f pJ a step); graded "
                 "%s (%.1f pJ a step; relays %s); input axons per core %d: %s kept",
                 graph.side, ", ".join(cost["readers"]), cost["copies"],
                 cost["copies"]["energy_pj"], cost["graded"], cost["graded"]["energy_pj"],
                 ", ".join(cost["relays"]), input_axons_per_core, cost["form"])
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
