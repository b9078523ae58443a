r"""An export's chip graphs mapped onto the neuro-cores and chips of a Loihi 2 system
(``spikeclip-deploy map``), with the per-core resources of the hardware profile's ``cores``.

A core holds neurons and the synapses that end on them, so a *layer* here is a LIF, or a graded
stream relay, with the synapse layers summed into it; a relay reaches each reader through an
identity synapse (one graded spike per relay neuron and step, one weight and one input axon per
reader neuron), mapped as the depthwise 1x1 convolution of ones it equals (a flat relay's: a
diagonal affine layer). A LIF of shape :math:`(C, H, W)` fed by convolutions is cut into
tiles of :math:`c` channels by :math:`u` rows by :math:`v` columns; one fed by pointwise
synapses only (1x1 convolutions of stride 1 without padding, identity synapses included: each
position reads its own input position) is taken as :math:`(C, HW, 1)`, so its tiles are
:math:`c` channels by a run of :math:`u` positions in row-major order, which need not cover
the grid in rectangles; any other LIF (:math:`N` neurons, taken as :math:`(1, N, 1)`) is cut
into runs of :math:`u` neurons; one tile a core. A tile needs

.. math::

    \mathrm{neurons} &= c\,u\,v \\
    \mathrm{memory} &= \textstyle\sum_{conv} c\,F_{conv} k^2\,b_{conv}
        + \sum_{affine} u\,\min(F_u\,b_{dense},\ \max_j \mathrm{nnz}_j\,b_{sparse}) \\
    \mathrm{input\ axons} &= \textstyle\sum_{conv} C_{read}(c)
        \min(W_{in}, (v-1)s + d(k-1) + 1) \min(H_{in}, (u-1)s + d(k-1) + 1)
        + \sum_{affine} F_u \\
    \mathrm{output\ axons} &= \textstyle\sum_{i \in tile} \sum_{readers} \mathrm{reach}_i

Weight sharing: a core stores the kernel of the channels it holds once, for every position it
holds (:math:`F_{conv}`: the input channels one output channel reads, :math:`C_{in}/g` for
:math:`g` groups, and of a part of a split fan-in (``split_fan_in``) its own channels only;
:math:`C_{read}(c)`: the input channels those :math:`c` output channels read, all
:math:`C_{in}` unless grouped or a part). :math:`F_u`: the input columns an affine
layer's run of :math:`u` target neurons reads (a nonzero weight in one of its rows; the most
of any run), held as a dense block of :math:`u \times F_u` weights (its columns given by the
input axons) or sparse, :math:`\mathrm{nnz}_j` the nonzero weights into neuron :math:`j` (the
most in the run): a diagonal (a flat relay's identity synapse) reads :math:`u` inputs, and a
part of a split fan-in (``split_fan_in``) its own columns. A spike's *reach* from input
neuron :math:`i`: the reader's cores it is sent to; of an affine reader's, the runs with a
nonzero weight from :math:`i`; of a convolution's, at most
:math:`(\lceil \lfloor d(k-1)/s \rfloor / u_r \rceil + 1)` row tiles times
:math:`(\lceil \lfloor d(k-1)/s \rfloor / v_r \rceil + 1)` column tiles (each at most the
reader's count) times the channel groups that read its channel, for every :math:`i` (none
for the channels outside a part's own). A run of
a flat layer sends its own neurons' reach; a tile of a layer with channels, :math:`c\,u\,v`
times the largest reach of any of its neurons.

The tiling: for each :math:`c` (one per channel-group count :math:`\lceil C/c \rceil`) and
:math:`v`, the tallest :math:`u` within all four per-core budgets; a layer takes
:math:`\lceil C/c \rceil \lceil H/u \rceil \lceil W/v \rceil` cores. Readers are tiled first
(reverse topological order), since a layer's output axons depend on their tiling, and a reader
takes the tiling that minimises its own cores plus, for each layer :math:`w` it reads, the
least cores :math:`w` can then take,
:math:`\max(n_w, \lceil \sum_i \mathrm{fan}_{w,i} / A_{out} \rceil)` (:math:`n_w`: :math:`w`'s
cores with no output axons; :math:`\mathrm{fan}_{w,i}`: the reach of :math:`w`'s neuron
:math:`i` over its readers tiled so far, this tiling's included; :math:`A_{out}`: output axons
a core); ties to fewer channel groups, then wider tiles. This only chooses among tilings;
every layer, writers included, is then held to all four budgets with its readers' actual
reach. Host currents into the chip and spikes to the host take no axons here.

Spiking self-attention on chip (:mod:`.exchange.attention`) adds, per head, product and
graded sum populations: each is a flat layer whose synapses come from its ports, listed by
index (:func:`~.exchange.attention.expand`'s ``sources``; weight 1, one synapse per neuron and
input), and the attention LIF reads each head's ``y`` population through one synapse per ``y``
neuron. Their runs are held to the same four budgets, with the synapses listed by index summed
per run (an attention LIF's heads feed disjoint runs) where other synapse layers add the most of
any run.

A max pool of a current on chip (:mod:`.exchange.current_pool`) adds its ReLU levels the same
way: each level a flat layer (its neurons channel by channel) whose synapses, listed by index
(:func:`~.exchange.current_pool.expand`'s signed ``sources``: one synapse per nonzero weight),
come from the pool's relay (level 1) or the level before; the pooled LIF reads the last level
through the readout's synapses (each window's maximum, two or three a window).

Placement is greedy in topological order, which keeps consecutive layers together: a layer
goes on the current chip if its cores fit there, else on a fresh chip (a layer that fits one
chip is never split across two), and one larger than a chip fills chips in turn. A *chip
crossing* is a synapse layer whose neurons sit on more than one chip. Each encoder is mapped
onto the whole system on its own (they need not run at once).

A what-if mapping (``map --assume KEY=VALUE``) replaces some of the profile's per-core figures;
the mapping records each assumed figure beside the profile's.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import nir
import numpy as np

from .errors import ConfigError, HardwareLimitError
from .fileutil import atomic_write
from .exchange.attention import AttentionNode
from .exchange.current_pool import PoolNode
from .exchange.chip import Cores, System
from .exchange.manifest import chip_record, load_export
from .exchange.resources import stored_weights
from .exchange.nirgraph import (INPUT, ChipLayer, HostOpNode, flops, graph_layers, is_relay, pair,
                                part_columns)

SIDES = ("image", "text")


@dataclass(frozen=True)
class LayerPlacement:
    """One LIF layer and the synapse layers into it, as mapped."""

    name: str
    synapse_layers: tuple[str, ...]
    neurons: int
    synapses: int  # dense-equivalent connections, a convolution's padded taps included
    memory_bits: int  # synaptic memory over all its cores (a kernel once per core)
    cores: int
    tile: tuple[int, int]  # (channels, rows) per core; (1, neurons) for a flat layer;
    # (channels, positions) for a layer in runs of positions (``position_runs``)
    chips: tuple[int, ...]
    limited_by: str  # the per-core budget that set its tile size
    chip_cores: tuple[int, ...]  # its cores on each of ``chips``
    synapse_reach: tuple[int, ...]  # per synapse layer: the most cores an input spike is sent to
    graded_synapses: int = 0  # identity synapses from relays: graded messages per step, at most
    columns: int = 0  # per core where a tile holds part of a row (0: whole rows)
    kind: str = "neurons"  # LIF or relay; "product" or "sum" for an attention population,
    # "relu" for a current pool's level
    position_runs: bool = False  # fed by pointwise synapses only: tiles are runs of positions


@dataclass(frozen=True)
class EncoderMapping:
    side: str
    layers: tuple[LayerPlacement, ...]
    chips: int
    chip_crossings: int

    def total(self, field: str) -> int:
        return sum(getattr(la, field) for la in self.layers)


@dataclass(frozen=True)
class Mapping:
    export: str
    hardware: str
    system: System
    encoders: tuple[EncoderMapping, ...]
    assumptions: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"export": self.export, "hardware": self.hardware, "system": asdict(self.system),
                "assumptions": self.assumptions,
                "encoders": {e.side: {"layers": [asdict(la) for la in e.layers],
                                      "totals": {f: e.total(f) for f in
                                                 ("neurons", "synapses", "memory_bits", "cores",
                                                  "graded_synapses")}
                                      | {"chips": e.chips, "chip_crossings": e.chip_crossings}}
                             for e in self.encoders}}


#: per-core budget -> (the Cores field, what messages call it)
BUDGETS = {"neurons": ("neurons_per_core", "neurons"),
           "memory": ("synaptic_memory_bits_per_core", "bits of synaptic memory"),
           "input_axons": ("input_axons_per_core", "input axons"),
           "output_axons": ("output_axons_per_core", "output axons")}
#: the ``cores`` figures a what-if mapping may replace (``map --assume``)
ASSUMABLE = tuple(f.name for f in dataclasses.fields(Cores) if f.type in (int, "int"))


@dataclass(frozen=True)
class _Layer:
    """A LIF as tiled: ``dims`` (channels, rows, width); its synapse layers (name, node, input
    shape)."""

    name: str
    dims: tuple[int, int, int]
    synapses: tuple[tuple[str, nir.NIRNode, tuple[int, ...]], ...]
    kind: str = "neurons"  # LayerPlacement.kind
    runs: bool = False  # pointwise synapses only: rows are positions (C, H W, 1)
    blocks: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def neurons(self) -> int:
        return int(np.prod(self.dims))

    @functools.cached_property
    def convs(self) -> dict[str, _Conv]:
        """Each convolution synapse's geometry, by name, computed once: the tiling search reads
        it for every trial tile."""
        return {syn: _Conv.of(node) for syn, node, _ in self.synapses
                if isinstance(node, nir.Conv2d)}


@dataclass(frozen=True)
class _Blocks:
    """An affine synapse's target neurons in blocks of ``u`` consecutive ones (one a core):
    per block its rows, the input columns it reads (a nonzero weight in one of its rows) and
    the most nonzero weights into one of its neurons; per input neuron, the blocks reading it."""

    rows: np.ndarray
    columns: np.ndarray
    nnz: np.ndarray
    readers: np.ndarray

    def bits(self, cores: Cores) -> np.ndarray:
        """Per block: a dense matrix over the columns it reads, or sparse where smaller."""
        return self.rows * np.minimum(self.columns * cores.dense_bits_per_synapse,
                                      self.nnz * cores.sparse_bits_per_synapse)


@dataclass(frozen=True, eq=False)
class _Connections:
    """Synapses listed by index (an attention population's, :func:`_attention_synapses`):
    synapse ``k`` runs from input neuron ``sources[k]`` to target neuron ``targets[k]``."""

    targets: np.ndarray
    sources: np.ndarray
    n_targets: int
    n_sources: int


def _connection_blocks(node: _Connections, u: int) -> _Blocks:
    """:class:`_Blocks` of ``u`` target neurons of synapses listed by index."""
    n, blocks = node.n_targets, -(-node.n_targets // u)
    pairs = np.unique(node.targets // u * node.n_sources + node.sources)  # (block, input)
    per_target = np.bincount(node.targets, minlength=n)
    return _Blocks(np.minimum(u, n - np.arange(0, n, u)),
                   np.bincount(pairs // node.n_sources, minlength=blocks),
                   np.pad(per_target, (0, -n % u)).reshape(-1, u).max(axis=1),
                   np.bincount(pairs % node.n_sources, minlength=node.n_sources))


def _blocks(layer: _Layer, syn: str, node: nir.Affine | _Connections, u: int) -> _Blocks:
    """``syn``'s :class:`_Blocks` of ``u`` target neurons (kept on ``layer``)."""
    if (syn, u) not in layer.blocks and isinstance(node, _Connections):
        layer.blocks[(syn, u)] = _connection_blocks(node, u)
    if (syn, u) not in layer.blocks:
        nz = np.asarray(node.weight) != 0
        n = nz.shape[0]
        padded = np.pad(nz, ((0, -n % u), (0, 0))).reshape(-1, u, nz.shape[1])
        hit = padded.any(axis=1)
        layer.blocks[(syn, u)] = _Blocks(np.minimum(u, n - np.arange(0, n, u)), hit.sum(axis=1),
                                         padded.sum(axis=2).max(axis=1), hit.sum(axis=0))
    return layer.blocks[(syn, u)]


@dataclass(frozen=True)
class _Tiling:
    channels: int  # per core
    rows: int  # per core
    cores: int
    bound: str  # the budget that stops a taller tile
    columns: int  # per core


@dataclass(frozen=True)
class _Conv:
    """A convolution synapse's geometry as the tiling reads it: kernel height, stride,
    dilation, groups, output channels per group, the input channels ``[lo, hi)`` it reads (a
    part of a split fan-in: its own) and the kernel's area."""

    kernel: int
    stride: int
    dilation: int
    groups: int
    per_group: int
    lo: int
    hi: int
    area: int

    @classmethod
    def of(cls, node: nir.Conv2d) -> "_Conv":
        w = np.asarray(node.weight)
        groups = int(np.asarray(node.groups))
        return cls(w.shape[2], pair(node.stride)[0], pair(node.dilation)[0], groups,
                   w.shape[0] // groups, *part_columns(node), int(np.prod(w.shape[2:])))


def _groups_touched(channels: int, per_group: int, groups: int) -> int:
    """The most of ``groups`` blocks of ``per_group`` channels that a run of ``channels``
    channels, starting at a multiple of ``channels``, overlaps: such a run starts at each
    multiple of :math:`g = \gcd(channels, per\_group)` within a block, and from the last of
    them it overlaps :math:`\lceil (channels - g) / per\_group \rceil + 1` blocks."""
    g = math.gcd(channels, per_group)
    return min(groups, -(-(channels - g) // per_group) + 1)


def _reach(syn: str, node: nir.NIRNode, in_shape: tuple[int, ...], reader: _Tiling,
           layer: _Layer) -> np.ndarray | int:
    """Cores of a reader ``layer`` tiled as ``reader`` that an input neuron's spike is sent to
    through ``syn``: per input neuron for an affine synapse, an attention population's
    connections and a part of a split fan-in (none from the channels outside its own), at most
    for a convolution."""
    if not isinstance(node, nir.Conv2d):
        return _blocks(layer, syn, node, reader.rows).readers
    conv = layer.convs[syn]
    if (conv.lo, conv.hi) != (0, np.asarray(node.weight).shape[1]):
        own = np.zeros(in_shape[0], np.int64)
        own[conv.lo:conv.hi] = _conv_reach(conv, reader, layer)
        return np.repeat(own, int(np.prod(in_shape[1:])))
    return _conv_reach(conv, reader, layer)


def _conv_reach(conv: _Conv, reader: _Tiling, layer: _Layer) -> int:
    """The most cores of a reader ``layer`` tiled as ``reader`` that one input neuron's spike
    reaches through the convolution ``conv`` (module docstring)."""
    reader_dims = layer.dims
    k, s, d, per_group, groups = (conv.kernel, conv.stride, conv.dilation, conv.per_group,
                                  conv.groups)
    row_tiles = min(-(-reader_dims[1] // reader.rows), -(-(d * (k - 1) // s) // reader.rows) + 1)
    column_tiles = min(-(-reader_dims[2] // reader.columns),
                       -(-(d * (k - 1) // s) // reader.columns) + 1)
    channel_tiles = -(-reader_dims[0] // reader.channels)
    channel_reach = channel_tiles if groups == 1 else _groups_touched(
        per_group, reader.channels, channel_tiles)  # the tiles of the channels reading it
    return row_tiles * column_tiles * channel_reach


def _needs(layer: _Layer, c: int, u: int, fan: np.ndarray, cores: Cores, v: int | None = None
           ) -> dict[str, int]:
    """Per-core needs of a tile of ``c`` channels by ``u`` rows by ``v`` columns (default: the
    whole width); ``fan``: per neuron, its reach over readers."""
    v = layer.dims[2] if v is None else v
    memory = axons = 0
    for syn, node, in_shape in layer.synapses:
        if isinstance(node, nir.Conv2d):
            conv = layer.convs[syn]
            k, s, d = conv.kernel, conv.stride, conv.dilation
            lo, hi = conv.lo, conv.hi  # a part of a split fan-in: its own input channels
            memory += c * (hi - lo) * conv.area * cores.conv_bits_per_weight
            read = _groups_touched(c, conv.per_group, conv.groups) * (hi - lo)
            axons += (read * min(in_shape[2], (v - 1) * s + d * (k - 1) + 1)
                      * min(in_shape[1], (u - 1) * s + d * (k - 1) + 1))
        elif not isinstance(node, _Connections):
            blocks = _blocks(layer, syn, node, u)
            memory += int(blocks.bits(cores).max())
            axons += int(blocks.columns.max())
    listed = [_blocks(layer, syn, node, u) for syn, node, _ in layer.synapses
              if isinstance(node, _Connections)]
    if listed:  # summed per run (an attention LIF's heads each reach their own runs)
        memory += int(sum(b.bits(cores) for b in listed).max())
        axons += int(sum(b.columns for b in listed).max())
    neurons = c * u * v
    if layer.dims[::2] == (1, 1):  # runs of u neurons: the most any run sends
        out = int(np.pad(fan, (0, -fan.size % u)).reshape(-1, u).sum(axis=1).max())
    else:
        out = neurons * int(fan.max(initial=0))
    return {"neurons": neurons, "memory": memory, "input_axons": axons, "output_axons": out}


def _over(needs: dict[str, int], cores: Cores) -> list[str]:
    return [r for r, (key, _) in BUDGETS.items() if needs[r] > getattr(cores, key)]


def _bound(layer: _Layer, t: _Tiling, fan: np.ndarray, cores: Cores) -> str:
    """The budget that a tile one row taller (at full height: one column wider; at full height
    and width: one channel wider) would break."""
    channels, rows, width = layer.dims
    c, u, v = t.channels, t.rows, t.columns
    if (c, u, v) == (channels, rows, width):
        return "whole layer"
    bigger = (c, u + 1, v) if u < rows else (c, u, v + 1) if v < width else (c + 1, u, v)
    over = _over(_needs(layer, bigger[0], bigger[1], fan, cores, bigger[2]), cores)
    return over[0] if over else "fewest cores"


def _tilings(layer: _Layer, fan: np.ndarray, cores: Cores, side: str) -> Iterator[_Tiling]:
    """For each channel count and column count within every per-core budget, its tallest tile
    (needs grow with rows), fewer channel groups and wider tiles first; ``bound`` is left
    empty."""
    first = _needs(layer, 1, 1, fan, cores, 1)
    over = _over(first, cores)
    if over:
        key, what = BUDGETS[over[0]]
        unit = ("one neuron of one channel" if layer.dims[0] > 1 else "one neuron")
        raise HardwareLimitError(
            f"the {side} encoder's layer '{layer.name}' cannot be mapped: {unit} needs "
            f"{first[over[0]]:,} {what} where a neuro-core holds {getattr(cores, key):,} "
            f"({key}): {first[over[0]] - getattr(cores, key):,} over; narrow the layer (fewer "
            f"channels or inputs) or use a hardware profile whose cores hold more (what if "
            f"they did: `map --assume {key}=N`)")
    channels, rows, width = layer.dims
    seen = set()
    for groups in range(1, channels + 1):
        c = -(-channels // groups)
        if c in seen:
            continue
        seen.add(c)
        for v in range(width, 0, -1):
            if _over(_needs(layer, c, 1, fan, cores, v), cores):
                continue
            lo, hi = 1, rows
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (lo, mid - 1) if _over(_needs(layer, c, mid, fan, cores, v), cores) \
                    else (mid, hi)
            yield _Tiling(c, lo, -(-channels // c) * -(-rows // lo) * -(-width // v), "", v)


def _tile(layer: _Layer, fan: np.ndarray, cores: Cores, side: str,
          writers: Callable[[_Tiling], int] | None = None) -> _Tiling:
    """The tiling with fewest cores, its own plus ``writers(tiling)`` (the cores its writers
    would need at least, given the reach it gives them), within every per-core budget (module
    docstring)."""
    best, key = None, None
    for t in _tilings(layer, fan, cores, side):
        k = t.cores + (writers(t) if writers else 0)
        if key is None or k < key:
            best, key = t, k
    return dataclasses.replace(best, bound=_bound(layer, best, fan, cores))


def identity_synapse(shape: tuple[int, ...]) -> nir.NIRNode:
    """A relay's identity synapse to one reader, as the layer it equals: a depthwise 1x1
    convolution of ones over ``(C, H, W)``, a diagonal affine layer over ``(N,)``."""
    if len(shape) == 3:
        c = shape[0]
        return nir.Conv2d(input_shape=shape[1:], weight=np.ones((c, 1, 1, 1), np.float32),
                          stride=1, padding=0, dilation=1, groups=c,
                          bias=np.zeros(c, np.float32))
    n = int(np.prod(shape))
    return nir.Affine(weight=np.eye(n, dtype=np.float32), bias=np.zeros(n, np.float32))


def _listed(targets: np.ndarray, sources: np.ndarray, weights: np.ndarray | None,
            n_targets: int, n_sources: int) -> _Connections:
    """Synapses ``[targets, fan_in]`` listed by source index (``weights``: 0 where there is
    none; None: every entry is one)."""
    rows = np.broadcast_to(np.asarray(targets)[:, None], sources.shape)
    keep = np.ones(sources.shape, bool) if weights is None else weights != 0
    return _Connections(rows[keep], sources[keep], n_targets, n_sources)


def _port_synapses(la: ChipLayer) -> list[tuple[str, _Connections, tuple[int, ...]]]:
    """An attention population's (or a current pool level's) synapses from its ports' sources
    (:func:`~.exchange.attention.expand`, :func:`~.exchange.current_pool.expand`), one layer
    per port, named ``POPULATION<SOURCE``."""
    pop = la.node.population
    weights = pop.weights or (None,) * len(pop.sources)
    return [(f"{la.name}<{src}", _listed(np.arange(pop.neurons), idx, w, pop.neurons, size),
             (size,))
            for src, idx, w, size in zip(la.inputs, pop.sources, weights, pop.source_sizes)]


def _read_synapses(la: ChipLayer, nodes: dict[str, ChipLayer], neurons: int
                   ) -> list[tuple[str, _Connections, tuple[int, ...]]]:
    """A LIF's synapses from the populations it reads, into its ``neurons``, named
    ``LIF<POPULATION``: an attention ``y`` population's (one synapse per ``y`` neuron), a
    current pool's last level's (its readout: each window's maximum,
    :attr:`~.exchange.current_pool.PoolTree.readout`)."""
    out = []
    for i in la.inputs:
        node = nodes[i].node if i in nodes else None
        if isinstance(node, AttentionNode):
            pop = node.population
            syn = _Connections(pop.targets, np.arange(pop.neurons), neurons, pop.neurons)
        elif isinstance(node, PoolNode):
            src, w = node.tree.readout
            syn = _listed(np.arange(len(src)), src, w, neurons, node.population.neurons)
        else:
            continue
        out.append((f"{la.name}<{i}", syn, (syn.n_sources,)))
    return out


def _layers(layers: list[ChipLayer], in_shape: tuple[int, ...]
            ) -> tuple[list[_Layer], dict[str, str]]:
    """The populations (LIFs, relays and attention populations) with their synapse layers, and
    each synapse layer's source population (a relay's identity synapse to ``R`` is named
    ``RELAY>R``, an attention synapse ``READER<SOURCE``)."""
    shapes: dict[str, tuple[int, ...]] = {INPUT: in_shape}
    nodes = {la.name: la for la in layers}
    out, sources = [], {}
    for la in layers:
        if isinstance(la.node, (AttentionNode, PoolNode)):
            syn = _port_synapses(la)
            sources.update((name, name.split("<", 1)[1]) for name, _, _ in syn)
            out.append(_Layer(la.name, (1, la.node.population.neurons, 1), tuple(syn),
                              la.node.spec.kind))
        elif isinstance(la.node, HostOpNode):
            shapes[la.name] = la.node.output_shape
        elif isinstance(la.node, nir.LIF) or is_relay(la.node):
            shapes[la.name] = tuple(np.asarray(la.node.tau if isinstance(la.node, nir.LIF)
                                               else la.node.scale).shape)
            syn = _read_synapses(la, nodes, int(np.prod(shapes[la.name])))
            sources.update((name, name.split("<", 1)[1]) for name, _, _ in syn)
            for i in la.inputs:
                if i not in nodes or isinstance(nodes[i].node, (nir.LIF, HostOpNode,
                                                                AttentionNode, PoolNode)):
                    continue
                if is_relay(nodes[i].node):
                    name = f"{i}>{la.name}"
                    syn.append((name, identity_synapse(shapes[i]), shapes[i]))
                    sources[name] = i
                else:
                    syn.append((i, nodes[i].node, shapes[nodes[i].inputs[0]]))
                    sources[i] = nodes[i].inputs[0]
            shape = shapes[la.name]
            runs = bool(syn) and all(_pointwise(n) for _, n, _ in syn)
            if runs:
                syn = [(name, n, (s[0], int(np.prod(s[1:])), 1)) for name, n, s in syn]
                shape = (shape[0], int(np.prod(shape[1:])), 1)
            conv = any(isinstance(n, nir.Conv2d) for _, n, _ in syn)
            out.append(_Layer(la.name, shape if conv else (1, int(np.prod(shape)), 1),
                              tuple(syn), runs=runs))
    return out, sources


def _pointwise(node: nir.NIRNode) -> bool:
    """A 1x1 convolution of stride 1 without padding: each position reads its own input
    position only."""
    return isinstance(node, nir.Conv2d) and np.asarray(node.weight).shape[2:] == (1, 1) and \
        pair(node.stride) == (1, 1) and pair(node.padding) == (0, 0)


def _place(counts: list[int], per_chip: int) -> list[tuple[tuple[int, int], ...]]:
    """(chip, cores there) of each layer's cores, greedy in order (see the module's
    docstring)."""
    chip, free, placed = 0, per_chip, []
    for n in counts:
        if n > free and n <= per_chip:
            chip, free = chip + 1, per_chip
        used = []
        while n:
            if free == 0:
                chip, free = chip + 1, per_chip
            take = min(n, free)
            used.append((chip, take))
            n, free = n - take, free - take
        placed.append(tuple(used))
    return placed


def _tile_all(lifs: list[_Layer], sources: dict[str, str], cores: Cores, side: str
              ) -> tuple[dict[str, _Tiling], dict[str, np.ndarray | int]]:
    """Each population's tiling, readers first (module docstring), and each synapse layer's
    reach under its reader's tiling."""
    named = {la.name: la for la in lifs}
    tiles: dict[str, _Tiling] = {}
    reach: dict[str, np.ndarray | int] = {}  # per synapse layer, once its reader is tiled
    alone: dict[str, int] = {}  # a writer's cores with no output axons

    def fan(writer: str) -> np.ndarray:  # per neuron, its reach over the readers tiled so far
        return sum((reach[syn] for reader in lifs for syn, _, _ in reader.synapses
                    if sources[syn] == writer and syn in reach),
                   np.zeros(named[writer].neurons, np.int64))

    def writers(layer: _Layer, t: _Tiling) -> int:
        """At least the cores ``layer``'s writers need if it is tiled as ``t``."""
        extra: dict[str, np.ndarray] = {}
        for syn, node, shape in layer.synapses:
            if sources[syn] in named:
                w = sources[syn]
                extra[w] = extra.get(w, fan(w)) + _reach(syn, node, shape, t, layer)
        total = 0
        for w, f in extra.items():
            if w not in alone:
                alone[w] = _tile(named[w], np.zeros(named[w].neurons, np.int64), cores,
                                 side).cores
            total += max(alone[w], -(-int(f.sum()) // cores.output_axons_per_core))
        return total

    for layer in reversed(lifs):  # readers first: output axons depend on their tiling
        tiles[layer.name] = _tile(layer, fan(layer.name), cores, side,
                                  lambda t, layer=layer: writers(layer, t))
        reach.update({syn: _reach(syn, node, shape, tiles[layer.name], layer)
                      for syn, node, shape in layer.synapses})
    return tiles, reach


def tiled_cores(side: str, layers: list[ChipLayer], in_shape: tuple[int, ...], cores: Cores
                ) -> int:
    """The neuro-cores that the populations of ``layers`` (``graph_layers`` order; ``INPUT``
    of shape ``in_shape``) take, tiled as :func:`map_encoder` tiles them, before placement on
    chips: what a lowering pass compares its choices by."""
    lifs, sources = _layers(layers, in_shape)
    return sum(t.cores for t in _tile_all(lifs, sources, cores, side)[0].values())


def map_encoder(side: str, layers: list[ChipLayer], in_shape: tuple[int, ...], cores: Cores,
                system: System) -> EncoderMapping:
    """Tile and place one encoder's chip layers (``graph_layers`` order) on ``system``."""
    lifs, sources = _layers(layers, in_shape)
    tiles, reach = _tile_all(lifs, sources, cores, side)
    placed = dict(zip((la.name for la in lifs),
                      _place([tiles[la.name].cores for la in lifs], cores.cores_per_chip)))
    chips = {name: tuple(c for c, _ in on) for name, on in placed.items()}
    placements = []
    for layer in lifs:
        t = tiles[layer.name]
        kernels = sum(stored_weights(n) for _, n, _ in layer.synapses
                      if isinstance(n, nir.Conv2d))
        dense = sum(int(_blocks(layer, syn, n, t.rows).bits(cores).sum())
                    for syn, n, _ in layer.synapses if not isinstance(n, nir.Conv2d))
        row_tiles = -(-layer.dims[1] // t.rows) * -(-layer.dims[2] // t.columns)
        placements.append(LayerPlacement(
            layer.name, tuple(s for s, _, _ in layer.synapses), layer.neurons,
            sum(n.targets.size if isinstance(n, _Connections) else flops(n, shape)
                for _, n, shape in layer.synapses),
            row_tiles * kernels * cores.conv_bits_per_weight + dense,
            t.cores, (t.channels, t.rows), chips[layer.name], t.bound,
            tuple(n for _, n in placed[layer.name]),
            tuple(int(np.max(reach[syn])) for syn, _, _ in layer.synapses),
            sum(layer.neurons for syn, _, _ in layer.synapses if ">" in syn),
            t.columns if t.columns < layer.dims[2] else 0, kind=layer.kind,
            position_runs=layer.runs))
    used = max((c for p in placements for c in p.chips), default=-1) + 1
    if used > system.chips:
        first = next(p for p in placements if max(p.chips) >= system.chips)
        raise HardwareLimitError(
            f"the {side} encoder needs {used} chips of {cores.cores_per_chip} neuro-cores "
            f"({sum(p.cores for p in placements):,} cores); {system.name} holds {system.chips}: "
            f"{used - system.chips} chip(s) over, from layer '{first.name}' on; choose a "
            f"larger --system or a smaller model")
    crossings = sum(1 for p in placements for s in p.synapse_layers
                    if len(set(p.chips) | set(chips.get(sources[s], ()))) > 1)
    return EncoderMapping(side, tuple(placements), used, crossings)


def system_named(cores: Cores, name: str) -> System:
    found = {s.name: s for s in cores.systems}
    if name not in found:
        raise ConfigError(f"unknown system '{name}'; known: {', '.join(found)}")
    return found[name]


def assume(cores: Cores, items: Iterable[str]) -> tuple[Cores, dict[str, dict[str, int]]]:
    """``cores`` with the figures ``KEY=VALUE`` (``map --assume``; a positive integer, a key
    of :data:`ASSUMABLE`) replaced, and the record ``{key: {"assumed": value, "profile":
    the profile's}}``."""
    valid = f"valid keys: {', '.join(ASSUMABLE)}"
    assumed: dict[str, int] = {}
    for item in items:
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in ASSUMABLE:
            raise ConfigError(f"--assume {item!r}: unknown key '{key}'; {valid}")
        if not value.isdigit() or int(value) <= 0:
            raise ConfigError(f"--assume {item!r}: the value must be a positive integer "
                              f"(e.g. {key}={getattr(cores, key)}); {valid}")
        assumed[key] = int(value)
    return dataclasses.replace(cores, **assumed), {
        key: {"assumed": v, "profile": getattr(cores, key)} for key, v in assumed.items()}


def chip_of(export_dir: Path) -> tuple[str, Cores]:
    """The hardware profile a ``--target loihi`` export was lowered for: its name and per-core
    figures, as the export's manifest carries them."""
    manifest = load_export(Path(export_dir))
    return manifest["hardware"], chip_record(manifest, export_dir).cores


def map_side(export_dir: Path, side: str, system: str = "kapoho-point",
             cores: Cores | None = None) -> EncoderMapping:
    """Map one encoder (``side``: image or text) of a ``--target loihi`` export onto
    ``system`` (a name in the hardware profile's ``cores.systems``), with ``cores`` (default:
    the profile's per-core figures)."""
    cores = cores or chip_of(export_dir)[1]
    graph = nir.read(Path(export_dir) / "chip" / f"{side}_encoder.nir")
    in_shape = tuple(int(n) for n in np.asarray(graph.nodes[INPUT].input_type["input"]))
    return map_encoder(side, graph_layers(graph), in_shape, cores, system_named(cores, system))


def map_export(export_dir: Path, system: str = "kapoho-point",
               json_out: Path | None = None, assumptions: Iterable[str] = ()) -> Mapping:
    """Map both encoders of a ``--target loihi`` export onto ``system`` (:func:`map_side`),
    with the per-core figures ``assumptions`` (``KEY=VALUE``, :func:`assume`) in place of the
    profile's; also write the mapping to ``json_out``."""
    hardware, profile_cores = chip_of(export_dir)
    cores, assumed = assume(profile_cores, assumptions)
    mapping = Mapping(str(export_dir), hardware, system_named(cores, system),
                      tuple(map_side(export_dir, side, system, cores) for side in SIDES), assumed)
    if json_out is not None:
        atomic_write(Path(json_out), lambda p: p.write_text(json.dumps(mapping.to_json(),
                                                                       indent=1)))
    return mapping
