"""NIR graph helpers that the build side (lowering) and the run side (backends) share: numpy and
nir only, no model code."""
from __future__ import annotations

import nir
import numpy as np

from .errors import LoweringError


def pair(v) -> tuple[int, int]:
    a = [int(x) for x in np.atleast_1d(np.asarray(v))]
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def chain_to_graph(chain: list[tuple[str, nir.NIRNode]], input_shape: tuple[int, ...],
                   output_shape: tuple[int, ...], metadata: dict) -> nir.NIRGraph:
    """Input -> chain (in order) -> Output, one edge per consecutive pair."""
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    nodes.update(dict(chain))
    nodes["output"] = nir.Output(output_type={"output": np.array(output_shape)})
    names = list(nodes)
    edges = list(zip(names[:-1], names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)


def graph_to_chain(graph: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """Order a feed-forward chain graph from ``input`` to ``output`` (both excluded)."""
    succ: dict[str, list[str]] = {}
    for src, dst in graph.edges:
        succ.setdefault(src, []).append(dst)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise LoweringError(f"expected one Input node, found {inputs}")
    chain, name, seen = [], inputs[0], set()
    while True:
        nxt = succ.get(name, [])
        if len(nxt) != 1:
            raise LoweringError(f"node '{name}' has {len(nxt)} successors; only feed-forward "
                                f"chains are supported")
        name = nxt[0]
        if name in seen:
            raise LoweringError(f"cycle through node '{name}'")
        seen.add(name)
        node = graph.nodes[name]
        if isinstance(node, nir.Output):
            return chain
        chain.append((name, node))
