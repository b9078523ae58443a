"""NIR graph helpers that the build side (lowering) and the run side (backends) share: numpy and
nir only, no model code.

An exported chip graph is ``input -> layers -> output``; a layer sums what its incoming edges
carry (several edges into a LIF are fan-in). On a chip whose synapses delay by one step, every
synapse may hold its output ``metadata["delay"]`` steps more, so that all paths into a LIF
arrive in the same step: the LIF's *depth* (its spikes of step ``t`` appear at chip step
``t + depth``) is ``depth(source) + 1 + delay`` along every incoming synapse.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from .errors import LoweringError

INPUT = "input"


def pair(v) -> tuple[int, int]:
    a = [int(x) for x in np.atleast_1d(np.asarray(v))]
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


@dataclass(frozen=True)
class ChipLayer:
    name: str
    node: nir.NIRNode
    inputs: tuple[str, ...]  # summed; ``INPUT`` is the host's input current


def graph_layers(graph: nir.NIRGraph) -> list[ChipLayer]:
    """The graph's layers in a topological order (ties in the order the graph lists them)."""
    io = {n for n, node in graph.nodes.items() if isinstance(node, (nir.Input, nir.Output))}
    inputs: dict[str, list[str]] = {n: [] for n in graph.nodes if n not in io}
    for src, dst in graph.edges:
        if dst in inputs:
            inputs[dst].append(INPUT if src in io else src)
    order, done = [], {INPUT}
    pending = list(inputs)
    while pending:
        ready = [n for n in pending if all(i in done for i in inputs[n])]
        if not ready:
            raise LoweringError(f"the chip graph has a cycle through {pending}; only feed-forward "
                                f"graphs run")
        for n in ready:
            order.append(ChipLayer(n, graph.nodes[n], tuple(inputs[n])))
            done.add(n)
        pending = [n for n in pending if n not in done]
    return order


def depths(layers: list[ChipLayer]) -> dict[str, int]:
    """Chip-step offset of every layer's output (synapse delays included); the incoming paths of
    every LIF must agree."""
    depth: dict[str, int] = {}
    for layer in layers:
        if isinstance(layer.node, nir.LIF):  # the host current arrives at once, synapses a step later
            arrivals = {0 if i == INPUT else depth[i] + 1 for i in layer.inputs}
            if len(arrivals) != 1:
                raise LoweringError(f"the inputs of '{layer.name}' arrive at chip steps "
                                    f"{sorted(arrivals)}: paths of different synaptic depth need "
                                    f"aligning delays (re-export with this version)")
            depth[layer.name] = arrivals.pop()
        else:
            (src,) = layer.inputs
            depth[layer.name] = depth[src] + int(layer.node.metadata.get("delay", 0))
    return depth
