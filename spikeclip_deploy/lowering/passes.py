"""The lowering passes, each a pure function over a :class:`~.graph.Graph`:

``fold_bn`` -> ``graded_streams`` -> ``split_fan_in`` -> ``split_fanout`` -> ``attention`` (and
max pools of currents) ->
``partition`` -> ``align_delays`` (chip targets) ->
``quantize`` (chip targets) -> ``resources`` -> ``check_limits`` (chip targets). A target
(:mod:`spikeclip_deploy.targets`) names the passes it runs, in order; :data:`PASSES` maps those
names to the passes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import nir
import numpy as np

from ..errors import HardwareLimitError, LoweringError
from ..exchange.chip import Cores
from ..hardware import ChipProfile, load_profile
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PoolNode
from ..exchange.nirgraph import HostOpNode, depths, is_relay
from ..targets import RESIDUAL_FORMS, get_target
from .fan_in import split_fan_in
from .fold import bn_gain, folded_bias
from .graph import INPUT, Graph, Layer, Pass, run_side_layers
from .quantize import SYNAPSES, quantize_layers
from ..exchange.resources import flops, graph_resources
from .attention import lower_attention
from .current_pool import lower_current_pools
from .streams import graded_streams


@dataclass(frozen=True)
class LoweringContext:
    target: str
    profile: ChipProfile | None  # the hardware the target quantizes for (None: float)
    input_grid: tuple[float, float, float] | None  # the grid the model was trained on, if any
    residual: str = "graded"  # how residual streams reach their readers (RESIDUAL_FORMS)
    attention: str = "chip"  # where spiking self-attention runs (ATTENTION_FORMS)
    current_pool: str = "chip"  # where max pools of currents run (CURRENT_POOL_FORMS)


# -- fold_bn -------------------------------------------------------------------------------------
def _fold_layer(layer: Layer) -> Layer:
    bn = layer.node.metadata.get("batchnorm")
    if bn is None:
        return layer
    gain = bn_gain(bn["gamma"], bn["var"], bn["eps"])
    w = np.asarray(layer.node.weight, np.float64) * gain.reshape(-1, 1, 1, 1)
    b = folded_bias(np.asarray(layer.node.bias, np.float64), bn["beta"], bn["mean"], gain)
    meta = {k: v for k, v in layer.node.metadata.items() if k != "batchnorm"}
    node = dataclasses.replace(layer.node, weight=w.astype(np.float32), bias=b.astype(np.float32),
                               metadata=meta)
    return dataclasses.replace(layer, node=node)


def _bn_left(graph: Graph) -> str | None:
    left = [la.name for la in graph.layers if "batchnorm" in la.node.metadata]
    return f"BatchNorm still separate in {left}" if left else None


FOLD_BN = Pass("fold_bn", lambda g, ctx: g.replace(layers=tuple(map(_fold_layer, g.layers))),
               ensures=_bn_left)


def _cores(ctx: LoweringContext) -> Cores:
    """A neuro-core's resources: the target's profile's, the chip it stands in for's for a
    float target."""
    return (ctx.profile or load_profile(get_target(ctx.target).stream_costs[0])).cores


# -- graded_streams ------------------------------------------------------------------------------
def _graded_streams(graph: Graph, ctx: LoweringContext) -> Graph:
    if ctx.residual not in RESIDUAL_FORMS:
        raise LoweringError(f"unknown residual form '{ctx.residual}'; choose one of "
                            f"{', '.join(RESIDUAL_FORMS)}")
    energy = get_target(ctx.target).stream_costs[1]
    return graded_streams(graph, ctx.residual, load_profile(energy, "chip-energy"),
                          _cores(ctx).input_axons_per_core)


GRADED_STREAMS = Pass("graded_streams", _graded_streams, requires=_bn_left,
                      ensures=lambda g: None if "streams" in g.meta else "no stream costs")


# -- split_fan_in --------------------------------------------------------------------------------
SPLIT_FAN_IN = Pass("split_fan_in", lambda g, ctx: split_fan_in(g, _cores(ctx)),
                    requires=_bn_left)


# -- split_fanout --------------------------------------------------------------------------------
def _split_fanout(graph: Graph, ctx: LoweringContext) -> Graph:
    """A synapse layer read by k > 1 layers (a term of a residual stream) becomes k copies
    ``NAME_CONSUMER`` (``metadata['copy_of'] = NAME``), one per reader: on a chip each
    destination has synapses of its own, and each copy can then take its reader's scale and
    delay."""
    layers: list[Layer] = []
    renamed: dict[tuple[str, str], str] = {}  # (synapse, reader) -> copy
    for layer in graph.layers:
        readers = graph.consumers(layer.name)
        if isinstance(layer.node, SYNAPSES) and len(readers) > 1:
            for reader in readers:
                copy = f"{layer.name}_{reader.name}"
                renamed[(layer.name, reader.name)] = copy
                node = dataclasses.replace(layer.node, metadata={**layer.node.metadata,
                                                                 "copy_of": layer.name})
                layers.append(dataclasses.replace(layer, name=copy, node=node))
        else:
            layers.append(layer)
    layers = [dataclasses.replace(la, inputs=tuple(renamed.get((i, la.name), i) for i in la.inputs))
              for la in layers]
    return graph.replace(layers=tuple(layers))


def _shared_synapses(graph: Graph) -> str | None:
    shared = [la.name for la in graph.layers
              if isinstance(la.node, SYNAPSES) and len(graph.consumers(la.name)) > 1]
    return f"synapse layers read by several layers: {shared}" if shared else None


SPLIT_FANOUT = Pass("split_fanout", _split_fanout, ensures=_shared_synapses)


# -- attention -----------------------------------------------------------------------------------
def _attention(graph: Graph, ctx: LoweringContext) -> Graph:
    """Spiking self-attention, then max pools of currents, on neuro-cores where asked (one pass:
    the host ops no neuro-core synapse computes)."""
    return lower_current_pools(lower_attention(graph, ctx.attention), ctx.current_pool)


ATTENTION = Pass("attention", _attention,
                 ensures=lambda g: None if "attention" in g.meta else "no attention record")


# -- partition -----------------------------------------------------------------------------------
CHIP_REASONS = {nir.LIF: "LIF neurons: neuro-core compartments",  # host ops: their own reason
                nir.Conv2d: "convolution read from spikes: neuro-core synapses (accumulate only)",
                nir.Affine: "dense layer read from spikes: neuro-core synapses (accumulate only)",
                nir.Scale: "graded stream relay: neuro-core graded neurons (memoryless sum, sent "
                           "as graded spikes through identity synapses)",
                AttentionNode: "spiking self-attention: product neurons (a spike's AND, a spike "
                               "gating a graded count) and graded sums, exact integer counts",
                PoolNode: "max pool of a current: a level of graded ReLU neurons, "
                          "max(a, b) = relu(a - b) + relu(b) - relu(-b) on integer payloads"}


def _place(graph: Graph, layer: Layer) -> Layer:
    if isinstance(layer.node, HostOpNode):
        return dataclasses.replace(layer, placement="host", reason=layer.node.metadata["reason"])
    reason = CHIP_REASONS.get(type(layer.node))
    if reason is None:
        raise LoweringError(f"layer '{layer.name}' ({type(layer.node).__name__}) has no chip "
                            f"or host placement rule")
    readers = graph.consumers(layer.name)
    if isinstance(layer.node, SYNAPSES) and readers and all(
            isinstance(r.node, HostOpNode) for r in readers):
        if len(layer.inputs) != 1 or len(readers) != 1:
            raise LoweringError(f"synapse layer '{layer.name}' feeds host op "
                                f"'{readers[0].name}' and needs one input and one reader to "
                                f"join it on the host")
        return dataclasses.replace(layer, placement="host", reason=(
            f"its current feeds host op '{readers[0].name}', and a neuro-core sends only spikes "
            f"off-chip: it runs on the host, in that op's ONNX function"))
    if any(isinstance(r.node, HostOpNode) for r in readers) and not isinstance(layer.node, nir.LIF):
        raise LoweringError(f"layer '{layer.name}' feeds both chip layers and a host op; "
                            f"a current cannot be on both sides")
    if isinstance(layer.node, SYNAPSES):
        sources = [graph.layer(src) if src != INPUT else None for src in layer.inputs]
        if any(s is None or not isinstance(s.node, nir.LIF) for s in sources):
            raise LoweringError(f"synapse layer '{layer.name}' reads {list(layer.inputs)}, not "
                                f"spikes: a neuro-core synapse multiplies a weight by a spike; "
                                f"put a LIF before it")
    return dataclasses.replace(layer, placement="chip", reason=reason)


def _absorb_host_synapses(graph: Graph, layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """A host op runs the host-placed synapses before it in its ONNX function: it reads their
    input spikes (``input_shapes``) and its MACs include theirs."""
    by_name = {la.name: la for la in layers}
    out = []
    for la in layers:
        if not isinstance(la.node, HostOpNode):
            out.append(la)
            continue
        host_syn = [by_name[i] if by_name[i].placement == "host" else None for i in la.inputs]
        if any(host_syn):
            shapes = [np.asarray(graph.layer(syn.inputs[0]).node.tau).shape if syn else shape
                      for syn, shape in zip(host_syn, la.node.input_shapes)]
            macs = int(la.node.metadata["macs"]) + sum(
                flops(syn.node, shape) for syn, shape in zip(host_syn, shapes) if syn)
            la = dataclasses.replace(la, node=dataclasses.replace(
                la.node, input_shapes=tuple(shapes), metadata={**la.node.metadata, "macs": macs}))
        out.append(la)
    return tuple(out)


def _partition(graph: Graph, ctx: LoweringContext) -> Graph:
    layers = _absorb_host_synapses(graph, tuple(_place(graph, layer) for layer in graph.layers))
    table = {la.name: {"placement": la.placement, "reason": la.reason} for la in layers}
    table.update({part: {"placement": "host", "reason": why} for part, why in graph.host.items()})
    return graph.replace(layers=layers, meta={**graph.meta, "partition": table})


def _unplaced(graph: Graph) -> str | None:
    left = [la.name for la in graph.layers if la.placement not in ("chip", "host")]
    return f"layers without a placement: {left}" if left else None


PARTITION = Pass("partition", _partition, ensures=_unplaced)


# -- align_delays --------------------------------------------------------------------------------
def _depths(graph: Graph) -> dict[str, int]:
    """Chip synapse layers on the longest path from the input to each layer (host layers
    answer within the step; a relay's identity synapse to its reader is one more, and so is
    each synapse into an attention population or a current pool's level and from one into its
    LIF)."""
    depth: dict[str, int] = {INPUT: 0}
    graded = {la.name for la in graph.layers
              if is_relay(la.node) or isinstance(la.node, (AttentionNode, PoolNode))}
    for la in graph.layers:
        chip_synapse = isinstance(la.node, SYNAPSES) and la.placement == "chip"
        into_population = isinstance(la.node, (AttentionNode, PoolNode))
        depth[la.name] = max(depth[i] + (i in graded or into_population)
                             for i in la.inputs) + chip_synapse
    return depth


def _align_delays(graph: Graph, ctx: LoweringContext) -> Graph:
    """A chip delays every synapse by ``synapse_delay_steps``, the float model by none: a LIF
    fed by paths of different synaptic depth would see them in different steps. Each synapse
    into a LIF or relay holds its output ``(depth(LIF) - depth(synapse)) * synapse_delay_steps``
    steps more (``metadata['delay']``), and each relay's identity synapse to a reader
    ``(depth(reader) - depth(relay) - 1) * synapse_delay_steps`` (``metadata['delays']``), so
    all its paths arrive together, as in the float model: a relay hop counts as a synapse. An
    attention population's port ``k`` holds ``(depth(population) - depth(source) - 1) *
    synapse_delay_steps`` steps more (``delays[k]``), so a product's factors of one step
    meet; so does a current pool's level (``delay``)."""
    if ctx.profile is None:
        raise LoweringError(f"target '{ctx.target}' aligns delays but names no hardware profile")
    depth = _depths(graph)
    extra: dict[str, int] = {}
    chip_synapses = {la.name for la in graph.layers
                     if isinstance(la.node, SYNAPSES) and la.placement == "chip"}
    relays = {la.name: {} for la in graph.layers if is_relay(la.node)}
    step = ctx.profile.synapse_delay_steps
    for la in graph.layers:
        if isinstance(la.node, nir.LIF) or la.name in relays:
            for i in la.inputs:
                if i in chip_synapses:
                    extra[i] = (depth[la.name] - depth[i]) * step
                elif i in relays and depth[la.name] - depth[i] - 1:
                    relays[i][la.name] = (depth[la.name] - depth[i] - 1) * step

    def aligned(la: Layer) -> Layer:
        if isinstance(la.node, AttentionNode):
            return dataclasses.replace(la, node=dataclasses.replace(la.node, delays=tuple(
                (depth[la.name] - depth[i] - 1) * step for i in la.inputs)))
        if isinstance(la.node, PoolNode):
            (src,) = la.inputs
            return dataclasses.replace(la, node=dataclasses.replace(
                la.node, delay=(depth[la.name] - depth[src] - 1) * step))
        meta = ({"delay": extra[la.name]} if extra.get(la.name) else
                {"delays": relays[la.name]} if relays.get(la.name) else None)
        return dataclasses.replace(la, node=dataclasses.replace(
            la.node, metadata={**la.node.metadata, **meta})) if meta else la
    layers = tuple(map(aligned, graph.layers))
    return graph.replace(layers=layers, meta={**graph.meta, "synapse_delay_steps":
                                              ctx.profile.synapse_delay_steps})


def _misaligned(graph: Graph) -> str | None:
    try:  # the run side's own reading of the delays
        depths(run_side_layers(graph), graph.meta["synapse_delay_steps"])
    except LoweringError as exc:
        return str(exc)
    return None


ALIGN_DELAYS = Pass("align_delays", _align_delays,
                    requires=lambda g: _shared_synapses(g) or _unplaced(g), ensures=_misaligned)


# -- quantize ------------------------------------------------------------------------------------
def _quantize(graph: Graph, ctx: LoweringContext) -> Graph:
    if ctx.profile is None:
        raise LoweringError(f"target '{ctx.target}' quantizes but names no hardware profile")
    chain, input_q = quantize_layers([(la.name, la.node, la.inputs)
                                      for la in run_side_layers(graph)], ctx.profile)
    chip = (input_q["input_scale"], *input_q["bias_mant_range"])
    if ctx.input_grid is not None and not np.allclose(ctx.input_grid, chip):
        raise LoweringError(f"the {graph.side} encoder was trained for the input grid "
                            f"{ctx.input_grid} (scale, lo, hi), but '{ctx.profile.name}' "
                            f"quantizes its input with {chip}; export to the hardware it was "
                            f"trained for")
    quantized = dict(chain)  # host-placed synapses stay float: they run in their op's ONNX
    layers = tuple(dataclasses.replace(la, node=quantized[la.name]) if la.name in quantized else la
                   for la in graph.layers)
    meta = {**graph.meta, "input_quantization": input_q, "hardware": ctx.profile.name,
            "units": "integer chip units; see each node's metadata['loihi']"}
    return graph.replace(layers=layers, meta=meta)


def _requires_folded_unshared(graph: Graph) -> str | None:
    return _bn_left(graph) or _shared_synapses(graph)


def _off_grid(graph: Graph) -> str | None:
    for la in graph.layers:
        if la.placement == "host":
            if isinstance(la.node, HostOpNode) and "output_quantization" not in la.node.metadata:
                return f"host op '{la.name}' has no output quantization"
            continue
        if "loihi" not in la.node.metadata:
            return f"layer '{la.name}' has no register values"
        if isinstance(la.node, SYNAPSES) and not np.array_equal(la.node.weight,
                                                                 np.round(la.node.weight)):
            return f"synapse '{la.name}' has non-integer weights"
    return None


QUANTIZE = Pass("quantize", _quantize,
                requires=lambda g: _requires_folded_unshared(g) or _unplaced(g), ensures=_off_grid)


# -- resources and limits ------------------------------------------------------------------------
def _resources(graph: Graph, ctx: LoweringContext) -> Graph:
    counts = graph_resources([(la.name, la.node, la.inputs) for la in run_side_layers(graph)],
                             graph.input_shape)
    return graph.replace(meta={**graph.meta, "resources": counts})


RESOURCES = Pass("resources", _resources,
                 ensures=lambda g: None if "resources" in g.meta else "no resource counts")


#: resource count -> (the profile's per-chip limit, what the message calls it)
LIMITED = {"neurons": ("neurons_per_chip", "neurons"),
           "stored_weights": ("stored_weights_per_chip", "stored synaptic weights")}


def _check_limits(graph: Graph, ctx: LoweringContext) -> Graph:
    """Neurons and stored weights against the profile's per-chip limits (data in ``hardware/``):
    the chips they take, :math:`\max_r \lceil n_r / \mathrm{limit}_r \rceil`, must fit the
    profile's system; the count goes into ``resources["chips"]``. Stored weights, not
    connections: a convolution shares one kernel over all positions. The mapping onto
    neuro-cores (per-core memory and axons) is ``spikeclip-deploy map``'s, on the export."""
    if ctx.profile is None:
        raise LoweringError(f"target '{ctx.target}' checks limits but names no hardware profile")
    limits, res = ctx.profile.limits, graph.meta["resources"]
    chips = {count: -(-res[count] // getattr(limits, key)) for count, (key, _) in LIMITED.items()}
    worst = max(chips, key=chips.get)
    if chips[worst] > limits.chips_per_system:
        key, what = LIMITED[worst]
        capacity = getattr(limits, key) * limits.chips_per_system
        raise HardwareLimitError(
            f"the {graph.side} encoder needs {res[worst]:,} {what}, {chips[worst]} chips' worth "
            f"at {getattr(limits, key):,} per chip ({key}): {res[worst] - capacity:,} more than "
            f"{ctx.profile.name}'s system holds ({limits.chips_per_system} chips, "
            f"{limits.system}); use a smaller model config")
    return graph.replace(meta={**graph.meta, "resources": {**res, "chips": max(1, chips[worst])}})


CHECK_LIMITS = Pass("check_limits", _check_limits,
                    requires=lambda g: None if "resources" in g.meta else "no resource counts")

PASSES: dict[str, Pass] = {p.name: p for p in (FOLD_BN, GRADED_STREAMS, SPLIT_FAN_IN, SPLIT_FANOUT,
                                               ATTENTION, PARTITION, ALIGN_DELAYS,
                                               QUANTIZE, RESOURCES, CHECK_LIMITS)}


def passes_named(names: tuple[str, ...]) -> tuple[Pass, ...]:
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise LoweringError(f"unknown lowering pass(es) {unknown}; known: {', '.join(PASSES)}")
    return tuple(PASSES[n] for n in names)


__all__ = ["LoweringContext", "PASSES", "passes_named"]
