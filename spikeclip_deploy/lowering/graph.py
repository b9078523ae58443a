"""The lowering's one representation: an encoder traced once into a graph of layers, and the
infrastructure that runs passes over it (each pass a pure function that states what it requires
and what it ensures, checked around every run, as torch.fx's ``passes/infra`` does).

A :class:`Layer` holds a NIR node (the data NIR writes: LIF, Conv2d, Affine; or a
:class:`~spikeclip_deploy.exchange.nirgraph.HostOpNode` for an operation no neuro-core computes),
the layers whose outputs are summed into it (``INPUT`` is the host's input current; several entries
are fan-in; a host op takes them as separate arguments), the PyTorch module it was traced from (so
quantization-aware training and the host part's ONNX find it through the graph), and where it runs
(``chip`` or ``host``) with the reason. The graph's ``host`` entries describe the host parts around
the chip layers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import nir
import numpy as np
import torch
from torch import nn

from ..errors import LoweringError
from ..exchange import current_pool
from ..exchange.attention import AttentionNode, written
from ..exchange.nirgraph import (INPUT, ChipLayer, HostOpNode, conv_out_hw, host_op_record,
                                 host_port, ungroup)
from ..nn.chip_graph import HOST_INPUT, HostOp, SpikeMaxPool
from ..nn.encoders import SpikingEncoder
from ..nn.lif import MultiStepLIF
from .fold import fold_conv_bn

#: seconds per chip time step in the NIR files. NIR's time constants are continuous time: the
#: layers hold ``tau`` in steps, the files in seconds (``tau * DT``). 0.1 ms is the step that NIR
#: importers assume (snntorch 0.9.1's ``import_from_nir`` fixes ``dt = 1e-4``).
DT = 1e-4
DISCRETISATION = (f"forward Euler with dt = {DT} s (one chip time step; tau in seconds): "
                  "v[t] = v[t-1] + dt/tau * (v_leak - v[t-1] + r*I[t]); spike when "
                  "v[t] > v_threshold; then v[t] = v_reset")


@dataclass(frozen=True)
class Layer:
    name: str
    node: nir.NIRNode
    inputs: tuple[str, ...]
    source: str  # module path inside the encoder, e.g. "stack.1"
    placement: str = ""  # "chip" or "host", set by the partition pass
    reason: str = ""


@dataclass(frozen=True)
class Graph:
    side: str
    layers: tuple[Layer, ...]  # in topological order
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    host: Mapping[str, str] = field(default_factory=dict)  # host part -> why it is not on chip
    meta: Mapping[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def consumers(self, name: str) -> list[Layer]:
        return [layer for layer in self.layers if name in layer.inputs]

    def host_synapses(self) -> dict[str, Layer]:
        """The host-placed synapse layers (each runs inside the host op it feeds), by name."""
        return {la.name: la for la in self.layers
                if la.placement == "host" and not isinstance(la.node, HostOpNode)}

    def replace(self, **changes) -> "Graph":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Pass:
    """``run(graph, context) -> graph``; ``requires``/``ensures`` return a violation message or
    None."""

    name: str
    run: Callable[[Graph, Any], Graph]
    requires: Callable[[Graph], str | None] = lambda g: None
    ensures: Callable[[Graph], str | None] = lambda g: None


def run_passes(graph: Graph, passes: tuple[Pass, ...], context: Any) -> Graph:
    """Run ``passes`` in order, checking each one's precondition before and postcondition after."""
    for p in passes:
        problem = p.requires(graph)
        if problem:
            raise LoweringError(f"{graph.side} encoder, before pass '{p.name}': {problem}")
        graph = p.run(graph, context)
        problem = p.ensures(graph)
        if problem:
            raise LoweringError(f"{graph.side} encoder, pass '{p.name}' broke its guarantee: "
                                f"{problem}")
    return graph


# -- tracing: the one place that walks the PyTorch layers ---------------------------------------
def _lif_node(layer: MultiStepLIF, shape: tuple[int, ...]) -> nir.LIF:
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    return nir.LIF(tau=full(layer.tau), r=full(1.0), v_leak=full(0.0),
                   v_threshold=full(layer.v_threshold), v_reset=full(0.0))


def _synapse_node(layer: nn.Module, shape: tuple[int, ...]) -> nir.NIRNode:
    """Float NIR synapse, BatchNorm still separate (in ``metadata['batchnorm']``)."""
    if isinstance(layer, nn.Sequential) and len(layer) == 2 and isinstance(layer[0], nn.Conv2d) \
            and isinstance(layer[1], nn.BatchNorm2d):
        conv, bn = layer
        w = conv.weight.detach().numpy().astype(np.float32)
        b = (conv.bias.detach().numpy() if conv.bias is not None
             else np.zeros(w.shape[0])).astype(np.float32)
        stats = {k: getattr(bn, a).detach().numpy().astype(np.float64) for k, a in
                 (("gamma", "weight"), ("beta", "bias"), ("mean", "running_mean"),
                  ("var", "running_var"))}
        return nir.Conv2d(input_shape=shape[1:], weight=w, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                          bias=b, metadata={"batchnorm": {**stats, "eps": float(bn.eps)}})
    if isinstance(layer, nn.Linear):
        w = layer.weight.detach().numpy().astype(np.float32)
        b = (layer.bias.detach().numpy() if layer.bias is not None
             else np.zeros(w.shape[0])).astype(np.float32)
        return nir.Affine(weight=w, bias=b)
    raise LoweringError(f"cannot lower chip layer {type(layer).__name__}: only LIF, "
                        f"Conv2d+BatchNorm2d, Linear and spike max-pooling run on chip")


HOST_PARTS = {
    "encode": "real-valued input (direct coding): a multiply-accumulate layer, computed once per "
              "sample on the host; its output is the chip's constant input current",
    "readout": "token mean, time-dependent weights and projection of the last spikes: "
               "real-valued arithmetic after the chip",
}


#: threshold of the LIF that turns a sum-pool of spikes into their OR (below one spike's v)
OR_THRESHOLD = 0.25


def _pool_nodes(pool: SpikeMaxPool, shape: tuple[int, ...], tau: float
                ) -> tuple[nir.Conv2d, nir.LIF]:
    r"""Spike max-pooling on chip: a sum-pool synapse (depthwise conv of ones) into a LIF that
    spikes on any input spike. With :math:`\tau = 2`, one spike gives
    :math:`v = 1/\tau = 0.5 > 0.25`, none leaves :math:`v = 0`; every spike resets, so the LIF
    holds no memory: its output is the OR over the window, as max-pooling binary spikes is."""
    c, h, w = shape
    k, st, pad = pool.kernel_size, pool.stride, pool.padding
    if 1.0 / tau <= OR_THRESHOLD:
        raise LoweringError(f"spike pooling needs one spike to cross the OR threshold "
                            f"{OR_THRESHOLD}: tau {tau} is too slow")
    conv = nir.Conv2d(input_shape=(h, w), weight=np.ones((c, 1, k, k), dtype=np.float32),
                      stride=st, padding=pad, dilation=1, groups=c,
                      bias=np.zeros(c, dtype=np.float32))
    out = (c, *conv_out_hw(conv, (h, w)))
    full = lambda v: np.full(out, v, dtype=np.float32)  # noqa: E731
    return conv, nir.LIF(tau=full(tau), r=full(1.0), v_leak=full(0.0),
                         v_threshold=full(OR_THRESHOLD), v_reset=full(0.0))


def _output_bound(module: nn.Module) -> float:
    """Largest magnitude a layer's output can take: 1 for spikes, :math:`\max_o \sum_i
    |W_{oi}| + |b_o|` for a synapse layer reading spikes (batch norm folded)."""
    if isinstance(module, (MultiStepLIF, SpikeMaxPool)):
        return 1.0
    if isinstance(module, nn.Linear):
        w = module.weight.detach().double().numpy()
        b = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(len(w))
    else:
        w, b, _ = fold_conv_bn(module)
    return float(np.max(np.abs(w).reshape(len(w), -1).sum(1) + np.abs(b)))


def trace(encoder: SpikingEncoder, side: str, current: torch.Tensor) -> Graph:
    """The chip graph of ``encoder`` as float NIR layers (shapes from one forward pass of the
    example host ``current``), named ``lifN``, ``convN``, ``denseN``, ``poolN``, ``hostN`` in
    order; a spike max-pool becomes a sum-pool synapse ``poolN`` and the OR LIF after it."""
    if not isinstance(encoder, SpikingEncoder):
        raise LoweringError(f"the {side} encoder ({type(encoder).__name__}) is not a spiking "
                            f"encoder with a chip graph")
    with torch.no_grad():
        outs = encoder.stack(current, encoder.time_steps)
    names: list[str] = []  # per module: the layer that carries its output
    layers: list[Layer] = []
    counts = {"lif": 0, "conv": 0, "dense": 0, "pool": 0}

    def add(kind: str, node: nir.NIRNode, inputs: tuple[str, ...], source: str) -> str:
        name = f"{kind}{counts[kind]}"
        counts[kind] += 1
        layers.append(Layer(name, node, inputs, source))
        return name

    lif_tau = next(m.tau for m in encoder.stack if isinstance(m, MultiStepLIF))
    counts["host"] = 0
    for i, (module, ins) in enumerate(zip(encoder.stack, encoder.stack.inputs)):
        in_shape = tuple(current.shape[1:]) if ins[0] == HOST_INPUT else tuple(outs[ins[0]].shape[2:])
        inputs = tuple(INPUT if j == HOST_INPUT else names[j] for j in ins)
        if isinstance(module, HostOp):
            shapes = [tuple(outs[j].shape[2:]) for j in ins]
            bounds = [_output_bound(encoder.stack[j]) for j in ins]
            node = HostOpNode(op=type(module).__name__, input_shapes=tuple(shapes),
                              output_shape=tuple(outs[i].shape[2:]),
                              metadata={"reason": module.reason, "grid": module.grid,
                                        "bound": module.bound(shapes, bounds),
                                        "macs": module.macs(shapes), **module.params()})
            names.append(add("host", node, inputs, f"stack.{i}"))
        elif isinstance(module, MultiStepLIF):
            names.append(add("lif", _lif_node(module, tuple(outs[i].shape[2:])), inputs,
                             f"stack.{i}"))
        elif isinstance(module, SpikeMaxPool):
            conv, lif = _pool_nodes(module, in_shape, lif_tau)
            pool = add("pool", conv, inputs, f"stack.{i}")
            names.append(add("lif", lif, (pool,), f"stack.{i}"))
        else:
            node = _synapse_node(module, in_shape)
            kind = "conv" if isinstance(node, nir.Conv2d) else "dense"
            names.append(add(kind, node, inputs, f"stack.{i}"))
    return Graph(side, tuple(layers), tuple(current.shape[1:]), tuple(outs[-1].shape[2:]),
                 host=dict(HOST_PARTS))


def run_side_layers(graph: Graph) -> list[ChipLayer]:
    """The layers as the run side reads them: chip layers, and each host op reading the chip
    layers that feed it (host-placed synapses before it are part of its ONNX function)."""
    host_syn = graph.host_synapses()
    out = []
    for la in graph.layers:
        if isinstance(la.node, HostOpNode):
            reads = tuple(host_syn[i].inputs[0] if i in host_syn else i for i in la.inputs)
            out.append(ChipLayer(la.name, la.node, reads))
        elif la.name not in host_syn:
            out.append(ChipLayer(la.name, la.node, la.inputs))
    return out


def _written(node: nir.NIRNode) -> nir.NIRNode:
    """A layer's node as the file holds it: LIF ``tau`` in seconds (``tau * DT``, float32: exact
    for a power-of-two number of steps), grouped convolutions dense
    (:func:`~spikeclip_deploy.exchange.nirgraph.ungroup`), attention populations as scales
    (:func:`~spikeclip_deploy.exchange.attention.written`), current pool levels as scales and a
    sum pool (:func:`~spikeclip_deploy.exchange.current_pool.written`)."""
    if isinstance(node, current_pool.PoolNode):
        return current_pool.written(node)
    if isinstance(node, nir.LIF):
        return dataclasses.replace(node, tau=np.asarray(node.tau, np.float32) * np.float32(DT))
    if isinstance(node, AttentionNode):
        return written(node)
    return ungroup(node) if isinstance(node, nir.Conv2d) else node


def to_nir(graph: Graph) -> nir.NIRGraph:
    """Input -> chip layers -> Output, one edge per summed input; each host op as an ``Output``
    node per input and an ``Input`` node for its current, described in the metadata's
    ``host_ops``; the graph's meta as metadata, with ``dt`` and the discretisation; LIF time
    constants in seconds and grouped convolutions dense (:func:`_written`)."""
    layers = run_side_layers(graph)
    nodes: dict[str, nir.NIRNode] = {INPUT: nir.Input(input_type={"input": np.array(graph.input_shape)})}
    edges: list[tuple[str, str]] = []
    host_ops: dict[str, dict] = {}
    for la in layers:
        if isinstance(la.node, HostOpNode):
            host_ops[la.name] = host_op_record(la.name, la.node, la.inputs)
            nodes[la.name] = nir.Input(input_type={"input": np.array(la.node.output_shape)})
            for k, (src, shape) in enumerate(zip(la.inputs, la.node.input_shapes)):
                nodes[host_port(la.name, k)] = nir.Output(output_type={"output": np.array(shape)})
                edges.append((src, host_port(la.name, k)))
            continue
        nodes[la.name] = _written(la.node)
        edges += [(src, la.name) for src in la.inputs]
    nodes["output"] = nir.Output(output_type={"output": np.array(graph.output_shape)})
    edges.append((layers[-1].name, "output"))
    meta = {**graph.meta, "dt": DT, "discretisation": DISCRETISATION,
            **({"host_ops": host_ops} if host_ops else {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
