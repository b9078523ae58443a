"""NIR graph helpers that the build side (lowering) and the run side (backends) share: numpy and
nir only, no model code.

An exported chip graph is ``input -> layers -> output``; a layer sums what its incoming edges
carry (several edges into a LIF are fan-in). On a chip whose synapses delay by one step, every
synapse may hold its output ``metadata["delay"]`` steps more, so that all paths into a LIF
arrive in the same step: the LIF's *depth* (its spikes of step ``t`` appear at chip step
``t + depth``) is ``depth(source) + synapse_delay + delay`` along every incoming synapse.

Host ops (what no neuro-core computes) sit between chip subgraphs: in the NIR file, the spikes
they read leave through ``Output`` nodes ``NAME_inK`` and their current comes back through an
``Input`` node ``NAME``; the graph's ``metadata["host_ops"]`` describes each (its ONNX file, the
layers it reads, in order). A host op answers within the step: its depth is its inputs'.

Spiking self-attention on chip is a chain of populations per head (:mod:`.attention`): each
reads its ports through synapses (``synapse_delay`` plus its own ``delays[k]`` steps, so that all
its ports arrive together) and answers within the step it hears them.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ..errors import LoweringError
from .attention import AttentionNode, from_written, is_attention
from . import current_pool
from .current_pool import PoolNode, is_current_pool
from .nirvalues import plain

INPUT = "input"


def pair(v) -> tuple[int, int]:
    a = [int(x) for x in np.atleast_1d(np.asarray(v))]
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def conv_out_hw(node: nir.Conv2d, hw: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a convolution (or a sum-pool written as one) on ``hw``."""
    return out_hw(hw, np.asarray(node.weight).shape[2:], pair(node.stride), pair(node.padding),
                  pair(node.dilation))


def out_hw(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a convolution of that geometry on ``hw``."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip(hw, kernel, stride, padding, dilation))


def part_columns(node: nir.NIRNode) -> tuple[int, int]:
    """The inputs ``[lo, hi)`` along the weight's second axis that a synapse layer reads (an
    affine layer's input columns, a convolution's input channels per group): all, or those of
    its part of a split fan-in (``metadata['columns']``; the weight is zero outside them)."""
    lo, hi = node.metadata.get("columns", (0, np.asarray(node.weight).shape[1]))
    return int(lo), int(hi)


def flops(node: nir.NIRNode, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one dense (non-spiking) evaluation of the layer (a part of a
    split fan-in: over its own columns or input channels)."""
    w = np.asarray(node.weight)
    lo, hi = part_columns(node)
    if isinstance(node, nir.Affine):
        return int(w.shape[0] * (hi - lo))
    ho, wo = conv_out_hw(node, in_shape[1:])
    return int(w.shape[0] * ho * wo * (hi - lo) * w.shape[2] * w.shape[3])


def ungroup(node: nir.Conv2d) -> nir.Conv2d:
    """A grouped convolution as the dense one it equals (zero weights across groups), with
    ``metadata['groups']``: nir 1.0.8 infers a Conv2d's input channels as ``weight.shape[1]``,
    so a grouped convolution would fail its type check in ``nir.read``."""
    g = int(np.asarray(node.groups))
    if g == 1:
        return node
    w = np.asarray(node.weight)
    c_out, c_in_g = w.shape[:2]
    dense = np.zeros((c_out, c_in_g * g, *w.shape[2:]), dtype=w.dtype)
    per = c_out // g
    for k in range(g):
        dense[k * per:(k + 1) * per, k * c_in_g:(k + 1) * c_in_g] = w[k * per:(k + 1) * per]
    return nir.Conv2d(input_shape=node.input_shape, weight=dense, stride=node.stride,
                      padding=node.padding, dilation=node.dilation, groups=1, bias=node.bias,
                      metadata={**node.metadata, "groups": g})


def regroup(node: nir.NIRNode) -> nir.NIRNode:
    """The inverse of :func:`ungroup` (other nodes unchanged)."""
    g = int(node.metadata.get("groups", 1)) if isinstance(node, nir.Conv2d) else 1
    if g == 1:
        return node
    w = np.asarray(node.weight)
    per, c_in_g = w.shape[0] // g, w.shape[1] // g
    grouped = np.concatenate([w[k * per:(k + 1) * per, k * c_in_g:(k + 1) * c_in_g]
                              for k in range(g)])
    meta = {k: v for k, v in node.metadata.items() if k != "groups"}
    return nir.Conv2d(input_shape=node.input_shape, weight=grouped, stride=node.stride,
                      padding=node.padding, dilation=node.dilation, groups=g, bias=node.bias,
                      metadata=meta)


@dataclass(eq=False)
class HostOpNode(nir.NIRNode):
    """A host operation between chip subgraphs (not a NIR primitive: its function is ONNX).
    ``metadata``: ``reason``, ``macs`` (per evaluation), ``grid``, ``bound``, and, once
    exported, ``onnx`` (its file in the export) and ``output_quantization`` (fixed point)."""

    op: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self.input_shapes = tuple(tuple(int(n) for n in s) for s in self.input_shapes)
        self.output_shape = tuple(int(n) for n in self.output_shape)
        self.input_type = {f"input{k}": np.array(s) for k, s in enumerate(self.input_shapes)}
        self.output_type = {"output": np.array(self.output_shape)}


def host_port(op: str, k: int) -> str:
    """Name of the NIR ``Output`` node carrying a host op's ``k``-th input."""
    return f"{op}_in{k}"


def host_op_record(name: str, node: HostOpNode, inputs: tuple[str, ...]) -> dict:
    """What ``metadata["host_ops"][name]`` holds (NIR metadata: plain values)."""
    return {"op": node.op, "inputs": list(inputs), "input_shapes": [list(s) for s in node.input_shapes],
            "output_shape": list(node.output_shape),
            **{k: v for k, v in node.metadata.items() if v is not None}}


def host_op_from_record(record: dict) -> tuple[HostOpNode, tuple[str, ...]]:
    """The inverse of :func:`host_op_record` (also on a record read back by ``nir.read``)."""
    record = plain(record)
    meta = {k: v for k, v in record.items()
            if k not in ("op", "inputs", "input_shapes", "output_shape")}
    node = HostOpNode(op=str(record["op"]), input_shapes=tuple(map(tuple, record["input_shapes"])),
                      output_shape=tuple(record["output_shape"]), metadata=meta)
    return node, tuple(str(i) for i in record["inputs"])


def is_relay(node: nir.NIRNode) -> bool:
    """Whether ``node`` is a graded stream relay (module docstring): a ``Scale`` marked
    ``relay`` whose scale is 1 everywhere (it sums its inputs; every backend runs it so)."""
    return (isinstance(node, nir.Scale) and "relay" in node.metadata
            and bool(np.all(np.asarray(node.scale) == 1)))


def relay_node(shape: tuple[int, ...], metadata: dict) -> nir.Scale:
    """A graded stream relay of ``shape`` (``metadata`` joined by ``relay: graded``)."""
    return nir.Scale(scale=np.ones(shape, dtype=np.float32),
                     metadata={"relay": "graded", **metadata})


def relay_delay(relay: nir.NIRNode, reader: str) -> int:
    """Extra steps the identity synapse from ``relay`` to ``reader`` holds its payload."""
    return int(dict(relay.metadata.get("delays", {})).get(reader, 0))


def summed_synapses(layers: list[ChipLayer]) -> dict[str, tuple[str, ...]]:
    """Per LIF, relay and current pool level: the synapse layers whose outputs reach it summed,
    directly or through relays (a term of a residual stream, once) and pool levels (a pool's
    maximum is its relay's terms' maximum); a LIF's bias is the sum of theirs."""
    nodes = {la.name: la for la in layers}
    out: dict[str, tuple[str, ...]] = {}
    for la in layers:
        if not (isinstance(la.node, (nir.LIF, PoolNode)) or is_relay(la.node)):
            continue
        terms: list[str] = []
        for i in la.inputs:
            if i in out:
                terms += out[i]
            elif i in nodes and not isinstance(nodes[i].node, (nir.LIF, HostOpNode,
                                                                AttentionNode)):
                terms.append(i)
        out[la.name] = tuple(dict.fromkeys(terms))
    return out


@dataclass(frozen=True)
class ChipLayer:
    name: str
    node: nir.NIRNode
    inputs: tuple[str, ...]  # summed (a host op: its arguments); ``INPUT``: the host current


def readers(layers: list[ChipLayer]) -> dict[str, list[ChipLayer]]:
    """Per layer name, the layers that read it, in ``layers``' order (a layer read by none: no
    entry)."""
    out: dict[str, list[ChipLayer]] = {}
    for la in layers:
        for i in la.inputs:
            out.setdefault(i, []).append(la)
    return out


def graph_layers(graph: nir.NIRGraph) -> list[ChipLayer]:
    """The graph's layers in topological order, keeping the graph's own order where it allows
    (the order they were traced in); grouped convolutions regrouped (:func:`regroup`), attention
    populations as :class:`~.attention.AttentionNode` (their inputs in port order), current
    pool levels as :class:`~.current_pool.PoolNode`."""
    host_ops = {name: host_op_from_record(rec)
                for name, rec in graph.metadata.get("host_ops", {}).items()}
    io = {n for n, node in graph.nodes.items() if isinstance(node, (nir.Input, nir.Output))}
    inputs: dict[str, list[str]] = {n: [] for n in graph.nodes if n not in io}
    for src, dst in graph.edges:
        if dst in inputs:
            inputs[dst].append(src if src in host_ops else INPUT if src in io else src)
    nodes = dict(graph.nodes)
    for name, (node, reads) in host_ops.items():
        nodes[name], inputs[name] = node, list(reads)
    for name, node in graph.nodes.items():
        if is_attention(node):  # its ports in order, as its metadata names them
            nodes[name] = from_written(node)
            if sorted(nodes[name].spec.inputs) != sorted(inputs[name]):
                raise LoweringError(f"attention population '{name}' names its inputs "
                                    f"{list(nodes[name].spec.inputs)} but the graph feeds it "
                                    f"{inputs[name]}")
            inputs[name] = list(nodes[name].spec.inputs)
        elif is_current_pool(node):
            nodes[name] = current_pool.from_written(node)
            if list(nodes[name].spec.inputs) != inputs[name]:
                raise LoweringError(f"current pool level '{name}' names its input "
                                    f"{list(nodes[name].spec.inputs)} but the graph feeds it "
                                    f"{inputs[name]}")
    order, done = [], {INPUT}
    pending = list(inputs)
    while pending:  # the first node (in the graph's own order) whose inputs are all placed
        name = next((n for n in pending if all(i in done for i in inputs[n])), None)
        if name is None:
            raise LoweringError(f"the chip graph has a cycle through {pending}; only feed-forward "
                                f"graphs run")
        order.append(ChipLayer(name, regroup(nodes[name]), tuple(inputs[name])))
        done.add(name)
        pending.remove(name)
    return order


def depths(layers: list[ChipLayer], synapse_delay: int) -> dict[str, int]:
    """Chip-step offset of every layer's output, each synapse layer taking ``synapse_delay``
    steps plus its aligning delay; the incoming paths of every LIF must agree."""
    depth: dict[str, int] = {}
    hosted = {la.name for la in layers if isinstance(la.node, HostOpNode)}
    relays = {la.name: la.node for la in layers if is_relay(la.node)}

    def arrival(src: str, reader: str) -> int:
        if src == INPUT:
            return 0
        if src in hosted:
            return depth[src]
        return depth[src] + synapse_delay + (relay_delay(relays[src], reader) if src in relays
                                             else 0)
    for layer in layers:
        if isinstance(layer.node, AttentionNode):  # each port through a synapse and its delay
            arrivals = {(0 if i == INPUT else depth[i]) + synapse_delay + k
                        for i, k in zip(layer.inputs, layer.node.delays)}
            if len(arrivals) != 1:
                raise LoweringError(f"the ports of attention population '{layer.name}' "
                                    f"({list(layer.inputs)}) arrive at chip steps "
                                    f"{sorted(arrivals)}: its factors of one step would not "
                                    f"meet (re-export with this version)")
            depth[layer.name] = arrivals.pop()
        elif isinstance(layer.node, PoolNode):  # through its synapses and their delay
            (src,) = layer.inputs
            depth[layer.name] = arrival(src, layer.name) + layer.node.delay
        elif isinstance(layer.node, HostOpNode):
            arrivals = {depth[i] for i in layer.inputs}
            if len(arrivals) != 1:
                raise LoweringError(f"the inputs of host op '{layer.name}' leave the chip at "
                                    f"steps {sorted(arrivals)}; they must leave together")
            depth[layer.name] = arrivals.pop()
        elif isinstance(layer.node, nir.LIF) or layer.name in relays:
            # host currents arrive at once, synapses (a relay's identity ones too) a step later
            arrivals = {arrival(i, layer.name) for i in layer.inputs}
            if len(arrivals) != 1:
                raise LoweringError(f"the inputs of '{layer.name}' arrive at chip steps "
                                    f"{sorted(arrivals)}: paths of different synaptic depth need "
                                    f"aligning delays (re-export with this version)")
            depth[layer.name] = arrivals.pop()
        else:
            (src,) = layer.inputs
            depth[layer.name] = depth[src] + int(layer.node.metadata.get("delay", 0))
    return depth
