r"""The ``split_fan_in`` pass: a dense layer whose neurons read more inputs than a neuro-core
holds input axons, summed as partial sums on graded relays.

A neuro-core receives a spike on one input axon per presynaptic neuron, so a neuron of an
affine layer with fan-in :math:`F` above the core's ``input_axons_per_core`` :math:`A` cannot
be placed at all. As Loihi 2 users split such a fan-in, the pass cuts the layer's input columns
into :math:`K = \lceil F / P \rceil` runs of :math:`P = \lfloor A/2 \rfloor` columns (the other
half of a core's axons left to the identity synapse below) and chains graded relays (Lava's
``GradedVec``, threshold 0, the residual streams' relays):

.. math::

    r_1 = W_{:,1}\,s, \qquad r_k = r_{k-1} + W_{:,k}\,s \quad (k = 2..K), \qquad
    \mathrm{LIF} \leftarrow r_K

where :math:`W_{:,k}` is the weight with every column outside run :math:`k` zero (the bias
stays with the first part) and each relay reaches the next, and the LIF, through an identity
synapse. The partial sums are integers once quantized and the relays add them exactly, so the
LIF receives the layer's own current: its reader reads every part at one scale (as a stream's
terms), and each part's integer weights are the columns of the layer's. Each relay hop is one
synapse more, which the delay alignment counts (part :math:`k` is held :math:`k - 1` steps).

A pointwise (1x1, stride 1, unpadded, ungrouped) convolution read by one relay or LIF has a
fan-in well inside a core's input axons (a neuron reads :math:`C_{in}` inputs), yet a core
holding :math:`c` of its channels at :math:`p` positions reads :math:`p\,C_{in}` input axons
and stores :math:`c` kernels of :math:`C_{in}` weights: the per-core budgets, not one
neuron's fan-in, bound it. Its input channels are cut into :math:`K` runs of
:math:`\lceil C_{in}/K \rceil` and summed on the same chain; where its reader is a relay
(a residual stream's term), the chain folds into the stream: the first sum adds the relay's
other inputs, the last sum *is* the reader (its name and readers kept),

.. math::

    r_1 = x + W_{:,1}\,s, \qquad r_k = r_{k-1} + W_{:,k}\,s, \qquad r_K = \mathrm{reader}.

:math:`K` is the count, :math:`1 \le K \le C_{in}`, for which the writer LIF, its synapses,
the sums, the reader's other inputs and its readers take the fewest neuro-cores, tiled as ``map`` tiles
them under the profile's per-core figures (:func:`~spikeclip_deploy.mapping.tiled_cores`;
ties to fewer parts; the search stops where each sum's least cores alone,
:math:`K \lceil N / \mathrm{neurons\ per\ core} \rceil`, reach the best count): :math:`K = 1`
leaves the layer whole.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

import nir
import numpy as np

from ..exchange.chip import Cores
from ..exchange.nirgraph import INPUT, ChipLayer, is_relay, pair, relay_node
from ..mapping import tiled_cores
from .graph import Graph, Layer

log = logging.getLogger(__name__)


def split_fan_in(graph: Graph, cores: Cores) -> Graph:
    """The pass (module docstring): every affine layer of fan-in above the cores' input axons
    read only by LIFs, and every pointwise convolution where parts take fewer cores, as parts
    chained through graded relays."""
    return _split_pointwise(_split_dense(graph, cores.input_axons_per_core), cores)


def _split_dense(graph: Graph, input_axons_per_core: int) -> Graph:
    part = max(1, input_axons_per_core // 2)
    last: dict[str, str] = {}  # split layer -> the relay its readers read
    layers: list[Layer] = []
    for la in graph.layers:
        w = np.asarray(la.node.weight) if isinstance(la.node, nir.Affine) else None
        readers = graph.consumers(la.name)
        if w is None or w.shape[1] <= input_axons_per_core or not readers or not all(
                isinstance(r.node, nir.LIF) for r in readers):
            layers.append(la)
            continue
        parts = -(-w.shape[1] // part)
        layers += _chain(la, part, (), f"{la.name}_sum{parts - 1}", {})
        last[la.name] = f"{la.name}_sum{parts - 1}"
        log.info("%s encoder: %s reads %d inputs a neuron, over a core's %d input axons: "
                 "summed from %d parts of at most %d on graded relays", graph.side, la.name,
                 w.shape[1], input_axons_per_core, parts, part)
    if not last:
        return graph
    return graph.replace(layers=tuple(dataclasses.replace(
        la, inputs=tuple(last.get(i, i) for i in la.inputs)) for la in layers))


def _chain(la: Layer, size: int, head: tuple[str, ...], last: str, last_meta: dict
           ) -> list[Layer]:
    """``la`` as parts of ``size`` input columns (channels; the last may hold fewer), each
    summed on a relay ``NAME_sumK`` (the first adding ``head``), the last named ``last`` with
    ``last_meta``."""
    w = np.asarray(la.node.weight)
    parts = -(-w.shape[1] // size)
    out, prev = [], head
    for k in range(parts):
        lo, hi = k * size, min(w.shape[1], (k + 1) * size)
        wk = np.zeros_like(w)
        wk[:, lo:hi] = w[:, lo:hi]
        node = dataclasses.replace(la.node, weight=wk, bias=np.asarray(la.node.bias) * (k == 0),
                                   metadata={**la.node.metadata, "part_of": la.name,
                                             "columns": [lo, hi]})
        out.append(Layer(f"{la.name}_part{k}", node, la.inputs, la.source))
        name, meta = ((last, last_meta) if k == parts - 1 else (f"{la.name}_sum{k}", {}))
        shape = (w.shape[0],) if isinstance(la.node, nir.Affine) else _shape(la, w)
        out.append(Layer(name, relay_node(shape, {**meta, "fan_in_of": la.name}),
                         prev + (f"{la.name}_part{k}",), la.source))
        prev = (name,)
    return out


def _shape(la: Layer, w: np.ndarray) -> tuple[int, ...]:
    """The output shape of a pointwise convolution."""
    return (w.shape[0], *(int(n) for n in np.asarray(la.node.input_shape)))


def _pointwise_term(graph: Graph, la: Layer) -> tuple[Layer, Layer] | None:
    """(reader, writer) where ``la`` is a pointwise convolution this pass may split: ungrouped,
    1x1, stride 1, no padding, reading one LIF and read by one relay (whose other inputs are
    relays) or one LIF."""
    if not isinstance(la.node, nir.Conv2d) or int(np.asarray(la.node.groups)) != 1 or \
            np.asarray(la.node.weight).shape[2:] != (1, 1) or pair(la.node.stride) != (1, 1) \
            or pair(la.node.padding) != (0, 0) or len(la.inputs) != 1 or la.inputs[0] == INPUT:
        return None
    readers, writer = graph.consumers(la.name), graph.layer(la.inputs[0])
    if len(readers) != 1 or not isinstance(writer.node, nir.LIF):
        return None
    reader = readers[0]
    others = [graph.layer(i) for i in reader.inputs if i != la.name]
    if is_relay(reader.node) and all(is_relay(o.node) for o in others) or \
            isinstance(reader.node, nir.LIF) and not others:
        return reader, writer
    return None


def _shape_of(graph: Graph, name: str) -> tuple[int, ...] | None:
    """The shape of population ``name`` (a LIF's, a relay's); None for a layer that is none
    (a synapse layer the host runs, before a host op)."""
    node = graph.layer(name).node
    values = node.tau if isinstance(node, nir.LIF) else getattr(node, "scale", None)
    return None if values is None else tuple(np.asarray(values).shape)


def _trial(graph: Graph, la: Layer, reader: Layer, writer: Layer, size: int
           ) -> tuple[list[ChipLayer], tuple[int, ...]] | None:
    """The populations the part size changes, as ``map`` reads them: the writer (its synapses
    reading ``INPUT``), ``la`` in parts of ``size`` channels (whole at its full width) and its
    sums, the reader, its other inputs (relays without inputs) and its readers
    (:func:`_downstream`). None where the writer reads the host input, or synapses reading
    layers of different shapes or layers that are no populations."""
    if INPUT in writer.inputs:
        return None
    syns = [graph.layer(i) for i in writer.inputs]
    if any(is_relay(s.node) or isinstance(s.node, nir.LIF) or s.inputs[0] == INPUT
           for s in syns):
        return None
    shapes = {_shape_of(graph, s.inputs[0]) for s in syns}
    if len(shapes) != 1 or None in shapes:
        return None
    relay = is_relay(reader.node)
    head = tuple(i for i in reader.inputs if i != la.name)
    if size == np.asarray(la.node.weight).shape[1]:
        split = [la, reader]
    else:
        split = _chain(la, size, head if relay else (), reader.name if relay else "sum", {})
        split += [] if relay else [dataclasses.replace(reader, inputs=("sum",))]
    layers = ([ChipLayer(h, graph.layer(h).node, ()) for h in head]
              + [ChipLayer(s.name, s.node, (INPUT,)) for s in syns]
              + [ChipLayer(x.name, x.node, x.inputs) for x in [writer, *split]])
    return layers + _downstream(graph, reader), _shape_of(graph, syns[0].inputs[0])


def _downstream(graph: Graph, reader: Layer) -> list[ChipLayer]:
    """The populations that read ``reader`` (through its synapse layers, or a relay's identity
    synapses), each with those inputs only: they set the reader's output axons."""
    out: list[ChipLayer] = []
    for x in graph.consumers(reader.name):
        out.append(ChipLayer(x.name, x.node, (reader.name,)))
        if not isinstance(x.node, (nir.LIF, nir.Scale)):
            out += [ChipLayer(y.name, y.node, (x.name,)) for y in graph.consumers(x.name)
                    if isinstance(y.node, (nir.LIF, nir.Scale))]
    return out


def _structure(layers: list[ChipLayer]) -> tuple:
    """What the mapper reads of ``layers``, names left out: per layer its node type, its
    inputs (by position), its arrays' shapes and a convolution's geometry or an affine
    layer's nonzero pattern. Equal structures take equal cores."""
    at = {la.name: k for k, la in enumerate(layers)}
    out = []
    for la in layers:
        n = la.node
        arrays = tuple(np.asarray(getattr(n, a)).shape for a in ("weight", "tau", "scale")
                       if hasattr(n, a))
        geometry = ((tuple(pair(n.stride)), tuple(pair(n.padding)), tuple(pair(n.dilation)),
                     int(np.asarray(n.groups)), tuple(n.metadata.get("columns", ())))
                    if isinstance(n, nir.Conv2d) else
                    hashlib.sha256(np.packbits(np.asarray(n.weight) != 0).tobytes()).hexdigest()
                    if isinstance(n, nir.Affine) else None)
        out.append((type(n).__name__, tuple(at.get(i, -1) for i in la.inputs), arrays, geometry))
    return tuple(out)


def _part_size(graph: Graph, la: Layer, reader: Layer, writer: Layer, cores: Cores,
               seen: dict[tuple, int]) -> int:
    """The part size of fewest cores (module docstring): the input channels, whole, where the
    trial cannot be built or no split takes fewer; ``seen``: the answers for the structures
    (:func:`_structure`) met before, a model's repeated blocks mapped once."""
    channels = np.asarray(la.node.weight).shape[1]
    whole = _trial(graph, la, reader, writer, channels)
    if whole is None:
        return channels
    key = (_structure(whole[0]), whole[1])
    if key not in seen:
        seen[key] = _least_size(graph, la, reader, writer, cores)
    return seen[key]


def _least_size(graph: Graph, la: Layer, reader: Layer, writer: Layer, cores: Cores) -> int:
    """The part size of fewest cores by trial (module docstring)."""
    channels = np.asarray(la.node.weight).shape[1]
    sums = -(-int(np.prod(_shape(la, np.asarray(la.node.weight)))) // cores.neurons_per_core)
    best, best_cores = channels, None
    for size in dict.fromkeys(-(-channels // k) for k in range(1, channels + 1)):
        if best_cores is not None and -(-channels // size) * sums >= best_cores:
            break
        n = tiled_cores(graph.side, *_trial(graph, la, reader, writer, size), cores)
        if best_cores is None or n < best_cores:
            best, best_cores = size, n
    return best


def _split_pointwise(graph: Graph, cores: Cores) -> Graph:
    layers = list(graph.layers)
    seen: dict[tuple, int] = {}
    for la in graph.layers:
        found = _pointwise_term(graph, la)
        if found is None:
            continue
        reader, writer = found
        channels = np.asarray(la.node.weight).shape[1]
        size = _part_size(graph, la, reader, writer, cores, seen)
        if size == channels:
            continue
        relay = is_relay(reader.node)
        parts = -(-channels // size)
        last = reader.name if relay else f"{la.name}_sum{parts - 1}"
        chain = _chain(la, size, tuple(i for i in reader.inputs if i != la.name) if relay else (),
                       last, dict(reader.node.metadata) if relay else {})
        names = [x.name for x in layers]
        del layers[names.index(la.name)]
        at = names.index(reader.name) - 1
        layers[at:at + 1] = chain + ([] if relay else [dataclasses.replace(reader, inputs=tuple(
            last if i == la.name else i for i in reader.inputs))])
        log.info("%s encoder: %s (pointwise, %d input channels) summed from %d parts of at most "
                 "%d on graded relays: the fewest neuro-cores under the profile's per-core "
                 "figures", graph.side, la.name, channels, parts, size)
    return graph.replace(layers=tuple(layers))
