r"""CPU reference: the float NIR graph run by nirtorch's interpreter with this project's node
map, in float64, batched over samples.

nirtorch wires any graph (branches, fan-in: several inputs of a node are summed) into a
``torch.fx`` module run once per time step, with this project's node map: Affine and Conv2d
(nirtorch 2.6's own Affine map never sets the bias: ``module.weight.bias = ...``) and
:class:`LIF`, the export's neuron, at the graph's ``metadata['dt']`` (one chip step, in the unit
of :math:`\tau`): :math:`v \leftarrow v + \frac{dt}{\tau}(v_{leak} - v + r I)`, :math:`s = [v > V_{th}]`,
:math:`v \leftarrow v_{reset}` where :math:`s = 1`. All paths are evaluated within the same step
(the float semantics; the chip's synaptic delays are aligned by the export). State is zero at
the start of every sample.

A host op between chip subgraphs runs in the same step, through the same interpreter: each of its
inputs enters a :class:`HostSlot` node (its place in a stack; nirtorch sums what enters a node,
so the slots' sum is the stack of the op's arguments), and a :class:`HostOpNode` module runs the
op's ONNX function on the stack and puts its output on the export's input grid. Spiking
attention on chip runs in the same step too, each population walking the export's description of
it (:func:`~spikeclip_deploy.exchange.attention.expand`), a product population's two ports side by
side through :class:`PortSlot` nodes. So does each level of a max pool of a current, its graded
ReLU neurons walking :func:`~spikeclip_deploy.exchange.current_pool.expand`'s signed sources,
and the last level's readout into the pooled LIF: the literal levels, an independent check of
the emulator's maximum.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import nir
import numpy as np
import torch
from nirtorch import nir_to_torch

from ..errors import UnsupportedNodeError
from ..exchange import current_pool
from ..exchange.attention import AttentionNode, fire, from_written, is_attention
from ..exchange.current_pool import PoolNode, is_current_pool, pooled
from ..exchange.nirgraph import HostOpNode, host_port, pair
from .base import Backend, chip_input
from .host_runtime import HostOpRunner


def _affine(node: nir.Affine) -> torch.nn.Linear:
    out_features, in_features = np.asarray(node.weight).shape
    module = torch.nn.Linear(in_features, out_features)
    module.weight.data = torch.as_tensor(np.asarray(node.weight))
    module.bias.data = torch.as_tensor(np.asarray(node.bias))
    return module


def _conv2d(node: nir.Conv2d) -> torch.nn.Conv2d:
    w = np.asarray(node.weight)
    groups = int(np.asarray(node.groups))
    module = torch.nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:],
                             stride=pair(node.stride), padding=pair(node.padding),
                             dilation=pair(node.dilation), groups=groups)
    module.weight.data = torch.as_tensor(w)
    module.bias.data = torch.as_tensor(np.asarray(node.bias))
    return module


class _Relay(torch.nn.Module):
    """A graded stream relay (NIR ``Scale`` of scale 1, :func:`~..exchange.nirgraph.is_relay`: the
    backend refuses any other): :math:`y = x`, the sum of its inputs (nirtorch sums what enters
    a node), read by its readers within the step."""

    def __init__(self, node: nir.Scale) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class LIF(torch.nn.Module):
    """The export's LIF for nirtorch: ``forward(I, state) -> (spikes, state)``; the state keeps
    the membrane and this step's spikes (read back for every layer's record). ``dt/tau`` is
    formed in the file's float32, as snntorch's NIR import forms it: exactly 1/2 for tau = 2 dt."""

    def __init__(self, node: nir.LIF, dt: float) -> None:
        super().__init__()
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        self.dt_tau = t(np.float32(dt) / np.asarray(node.tau, np.float32))
        self.r, self.v_leak = t(node.r), t(node.v_leak)
        self.v_th = t(node.v_threshold)
        self.v_reset = t(node.v_reset if node.v_reset is not None else np.zeros_like(node.tau))

    def forward(self, current: torch.Tensor, state: dict | None = None
                ) -> tuple[torch.Tensor, dict]:
        v = state["v"] if state is not None else torch.zeros_like(current)
        v = v + (self.v_leak - v + self.r * current) * self.dt_tau
        s = (v > self.v_th).to(current.dtype)
        return s, {"v": torch.where(s > 0, self.v_reset, v), "spikes": s}


@dataclass(eq=False)
class HostSlot(nir.NIRNode):
    """Place ``index`` of ``count`` in the stack of a host op's arguments (run side only)."""

    index: int
    count: int
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self.input_type = {"input": np.array(self.shape)}
        self.output_type = {"output": np.array((self.count, *self.shape))}


class _Slot(torch.nn.Module):
    def __init__(self, node: HostSlot) -> None:
        super().__init__()
        self.index, self.count = node.index, node.count

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [count, B, ...]
        out = x.new_zeros(self.count, *x.shape)
        out[self.index] = x
        return out


class _HostOp(torch.nn.Module):
    """A host op's ONNX function on the stack of its arguments ``[count, B, ...]``."""

    def __init__(self, export_dir: Path, node: HostOpNode) -> None:
        super().__init__()
        self.run = HostOpRunner(export_dir, node.metadata)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        y = self.run(*(a.numpy() for a in stack))
        return torch.as_tensor(y, dtype=stack.dtype)


@dataclass(eq=False)
class PortSlot(nir.NIRNode):
    """Port ``k`` of an attention product population: its input, flattened, at ``offset`` of
    ``total`` columns (run side only; nirtorch sums what enters a node, so the sum of a
    population's port slots is its ports side by side)."""

    offset: int
    size: int
    total: int

    def __post_init__(self) -> None:
        self.input_type = {"input": np.array((self.size,))}
        self.output_type = {"output": np.array((self.total,))}


class _Port(torch.nn.Module):
    def __init__(self, node: PortSlot) -> None:
        super().__init__()
        self.offset, self.size, self.total = node.offset, node.size, node.total

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B, total]
        out = x.new_zeros(len(x), self.total)
        out[:, self.offset:self.offset + self.size] = x.flatten(1)
        return out


class _Attention(torch.nn.Module):
    """An attention population, within the step, walking its description
    (:func:`~..exchange.attention.fire` over its sources): a product population reads its
    ports side by side, a sum population its one port; each sends ``[B, neurons]``, and ``y``
    ``weight`` times its counts on its head's channels of the attention LIF, ``[B, C, H, W]``."""

    def __init__(self, node: AttentionNode) -> None:
        super().__init__()
        self.pop, self.weight = node.population, node.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pop = self.pop
        ports = (list(torch.split(x, pop.source_sizes, dim=1)) if pop.kind == "product"
                 else [x.flatten(1)])
        p = fire(pop, ports)
        if pop.targets is None:
            return p
        out = p.new_zeros(len(p), int(np.prod(pop.spec.block_shape)))
        out[:, torch.as_tensor(pop.targets)] = self.weight * p
        return out.reshape(len(p), *pop.spec.block_shape)


class _PoolLevel(torch.nn.Module):
    """A max pool's level within the step: its ReLU neurons (:func:`~..exchange.attention.fire`
    over the signed sources) on the level before's payloads ``[B, neurons]`` (level 1: the
    relay's ``[B, C, H, W]``); the last level sends what the pooled LIF receives, each window's
    maximum (:func:`~..exchange.current_pool.pooled`), ``[B, C, H', W']``."""

    def __init__(self, node: PoolNode) -> None:
        super().__init__()
        self.pop, self.tree = node.population, node.tree
        self.out_shape = node.spec.out_shape if node.last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = fire(self.pop, [x.flatten(1).numpy()])
        if self.out_shape is None:
            return torch.as_tensor(p)
        return torch.as_tensor(pooled(self.tree, p)).reshape(len(p), *self.out_shape)


#: node type -> module; :func:`run_graph` binds the graph's ``dt`` to :class:`LIF`
NODE_MAP: dict[type, Callable] = {nir.LIF: LIF, nir.Affine: _affine, nir.Conv2d: _conv2d,
                                  nir.Scale: _Relay, HostSlot: _Slot, PortSlot: _Port,
                                  AttentionNode: _Attention, PoolNode: _PoolLevel}


def with_attention(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The graph with each attention population (a ``Scale`` in the file) as an
    :class:`AttentionNode`, a product population's ports entering it through
    :class:`PortSlot` nodes, and each max pool's level as a :class:`PoolNode`."""
    nodes, edges = dict(graph.nodes), list(graph.edges)
    for name, node in graph.nodes.items():
        if is_current_pool(node):
            nodes[name] = current_pool.from_written(node)
        if not is_attention(node):
            continue
        nodes[name] = att = from_written(node)
        pop = att.population
        if pop.kind != "product":
            continue
        offsets = np.cumsum((0, *pop.source_sizes))
        for k, src in enumerate(att.spec.inputs):
            port = f"{name}_port{k}"
            nodes[port] = PortSlot(int(offsets[k]), pop.source_sizes[k], int(offsets[-1]))
            edges.remove((src, name))
            edges += [(src, port), (port, name)]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


def with_host_ops(graph: nir.NIRGraph, host_ops: dict[str, HostOpNode]) -> nir.NIRGraph:
    """The graph with each host op wired in: ``Output`` ports -> slots -> the op, whose
    ``Input`` node becomes the op itself."""
    nodes, edges = dict(graph.nodes), []
    for name, node in host_ops.items():
        shapes = set(node.input_shapes)
        if len(shapes) != 1:
            raise UnsupportedNodeError("cpu", name, f"host op with inputs of shapes {shapes}")
        nodes[name] = node
        for k, shape in enumerate(node.input_shapes):
            del nodes[host_port(name, k)]
            nodes[f"{name}_slot{k}"] = HostSlot(k, len(node.input_shapes), shape)
            edges.append((f"{name}_slot{k}", name))
    ports = {host_port(name, k): f"{name}_slot{k}" for name, node in host_ops.items()
             for k in range(len(node.input_shapes))}
    edges += [(src, ports.get(dst, dst)) for src, dst in graph.edges]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


def run_graph(graph: nir.NIRGraph, lif_names: list[str], x_in: torch.Tensor,
              time_steps: int, node_map: dict[type, Callable] = NODE_MAP) -> list[np.ndarray]:
    """``x_in`` (the graph's input, constant over time) -> spikes ``[B, T, *shape]`` of the LIFs
    ``lif_names``, through nirtorch."""
    node_map = {**node_map, nir.LIF: partial(LIF, dt=graph.metadata["dt"])}
    module = nir_to_torch(graph, node_map, dtype=torch.float64)
    state, record = None, {name: [] for name in lif_names}
    with torch.no_grad():
        for _ in range(time_steps):
            _, state = module(x_in, state)
            for name in lif_names:
                record[name].append(state[name]["spikes"])
    return [torch.stack(record[n], 1).numpy().astype(np.uint8) for n in lif_names]


class CPUBackend(Backend):
    """Runs an export's NIR graph step by step in float64 (a reference, not a fast path)."""

    name = "cpu"
    handlers: dict[type, Callable] = {**NODE_MAP, HostOpNode: _HostOp}
    runs = {"cpu": "the float graph in float64",
            "loihi": "the fixed-point graph read in float64 (integer weights and thresholds, "
                     "exact decays): close to the chip, not bit-exact (its decay truncates)"}

    def __init__(self, export_dir) -> None:
        super().__init__(export_dir)
        self.node_map = {**NODE_MAP, HostOpNode: partial(_HostOp, self.export_dir)}
        self.wired = {side: with_attention(with_host_ops(graph, {
            la.name: la.node for la in self.layers[side] if isinstance(la.node, HostOpNode)}))
                      for side, graph in self.graphs.items()}

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        graph = self.graphs[side]
        x_in = torch.as_tensor(chip_input(current, graph), dtype=torch.float64)
        return run_graph(self.wired[side], self.lif_names(side), x_in, self.time_steps,
                         self.node_map)
