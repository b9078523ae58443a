r"""Max-pooling of an integer current on neuro-cores: its ReLU levels in the chip graph, and the
one expansion of their structure that every consumer walks (lowering, emulator, CPU reference,
Lava, mapper, energy). numpy and nir only.

Spikingformer max-pools the current :math:`x` of a convolution (``C`` channels on an ``(H, W)``
grid; on a fixed-point export the integer sum of its weights' mantissas over the spikes, its
bias left out: a LIF's bias is the sum of its synapse layers' biases, and
:math:`\max_w(x_w + b) = \max_w x_w + b` per channel) before its LIF. The chip computes that
maximum exactly with integers only: the current goes onto a graded relay (Lava's
``GradedVec``, threshold 0: its payload is its summed input), and

.. math::

    \max(a, b) = \mathrm{relu}(a - b) + \mathrm{relu}(b) - \mathrm{relu}(-b)

makes the maximum over a window a tree of *levels*, each a population of graded ReLU neurons
(Lava's ``GradedReluVec``, threshold 0: :math:`p = \max(\sum_k w_k a_k, 0)` of its inputs'
payloads :math:`a_k` through synapses of weight :math:`w_k = \pm 1`, sent as a graded spike).
A level pairs the values of each window: a pair :math:`(a, b)` takes three neurons
:math:`\mathrm{relu}(a - b), \mathrm{relu}(b), \mathrm{relu}(-b)`, a value left unpaired two,
:math:`\mathrm{relu}(a), \mathrm{relu}(-a)`. A value is never a population of its own: the next
level (and, after the last, the pooled LIF) reads the neurons it is made of with weights
:math:`+1, +1, -1` (a pair's maximum) or :math:`+1, -1` (a value passed on). Neurons that
compute the same signed sum are one neuron (a window shares them with its neighbours). Padding
is :math:`-\infty`: a window holds only its in-bounds values (4, 6 or 9 for 3x3, stride 2,
padding 1), and every window passes its values through the same number of levels, so that all
maxima reach the LIF in the same step.

Two trees (``FORMS``), both exact:

- ``flat``: the maximum of each window's values, :math:`\lceil \log_2 k^2 \rceil` levels;
- ``separable``: each row's maximum over the window's columns (one per row and output column,
  shared by the windows that overlap on it), then the maximum of those over the window's rows,
  :math:`2 \lceil \log_2 k \rceil` levels.

Every payload is at most twice the relay's largest :math:`|x|` (:math:`|a - b|` with
:math:`|a|, |b|` within it; a maximum of values is within it again).

In the chip graph a level is a :class:`PoolNode` named ``POOL_lL`` (``L`` from 1), reading the
relay (level 1) or the level before through its synapses, which hold their input ``delay`` steps
more than the chip's synapse delay; the pooled LIF reads the last level alone (its
:attr:`PoolTree.readout`). In a NIR file a level is written as a ``nir.Scale`` of ones of the
pooled current's shape ``(C, H, W)``, the last level as a ``nir.SumPool2d`` of the pool's
kernel, stride and padding (so that ``nir.read``'s type check sees ``(C, H, W)`` pooled into
the LIF's ``(C, H', W')``), each with ``metadata["current_pool"]`` holding the small structure
(:class:`PoolSpec`: pool, channels, grid, kernel, stride, padding, form, level, its source's
name, and its ``delay``) and ``metadata["loihi"]`` its registers once quantized: a consumer that
does not know the metadata sees the relay's current sum-pooled into the LIF. :func:`expand` and
:func:`pool_tree` are the one place that turns a spec into neurons, signed input sources,
synapses, fan-outs and the readout; :func:`~.attention.fire` computes a level's payloads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from typing import Any

import nir
import numpy as np

from ..errors import LoweringError
from .attention import Population
from .nirvalues import plain

POOL = "current_pool"  # the metadata key of a level in a NIR file
FORMS = ("flat", "separable")
#: a level's payloads are at most this many times the largest |payload| of the pool's relay
PAYLOAD_FACTOR = 2

#: a signed sum of a level's (or the relay's) neurons: ((index, weight), ...), sorted by index
Value = tuple[tuple[int, int], ...]


def out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Outputs of a pool along one axis of ``n`` inputs (torch's ``max_pool2d``)."""
    return (n + 2 * padding - kernel) // stride + 1


def windows(n: int, kernel: int, stride: int, padding: int) -> list[range]:
    """Per output along one axis, the in-bounds inputs of its window (padding is left out)."""
    return [range(max(0, o * stride - padding), min(n, o * stride - padding + kernel))
            for o in range(out_size(n, kernel, stride, padding))]


def level_name(pool: str, level: int) -> str:
    return f"{pool}_l{level}"


@dataclass(frozen=True)
class PoolSpec:
    """One level's structure: plain values, what ``metadata["current_pool"]`` holds."""

    pool: str  # the pool's name (its levels share it)
    channels: int
    grid: tuple[int, int]  # (H, W) of the pooled current
    kernel: int
    stride: int
    padding: int
    form: str
    level: int  # 1 .. levels
    inputs: tuple[str, ...]  # the layer it reads: the relay (level 1) or the level before

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise LoweringError(f"current pool '{self.pool}' has form {self.form!r}; forms: "
                                f"{FORMS}")
        if self.kernel < 2 or self.stride < 1 or not 0 <= 2 * self.padding <= self.kernel \
                or min(self.grid) + 2 * self.padding < self.kernel or self.channels < 1:
            raise LoweringError(f"current pool '{self.pool}': kernel {self.kernel}, stride "
                                f"{self.stride}, padding {self.padding} on {self.channels} x "
                                f"{self.grid[0]} x {self.grid[1]}: a pool needs a kernel of 2 "
                                f"or more that fits the padded grid, padding at most half of it")
        if not 1 <= self.level <= self.levels or len(self.inputs) != 1:
            raise LoweringError(f"current pool level {self.name} reads {list(self.inputs)}: a "
                                f"level (1 .. {self.levels}) reads one layer")

    @property
    def name(self) -> str:
        return level_name(self.pool, self.level)

    @property
    def kind(self) -> str:
        return "relu"

    @property
    def ports(self) -> tuple[str, ...]:
        return ("in",)

    @property
    def geometry(self) -> tuple:
        """What the tree depends on (:func:`pool_tree`'s arguments)."""
        return (self.channels, tuple(self.grid), self.kernel, self.stride, self.padding,
                self.form)

    @property
    def levels(self) -> int:
        return len(pool_tree(*self.geometry).levels)

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the pooled current (the relay's)."""
        return (self.channels, *self.grid)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(C, H', W')`` of the pooled LIF."""
        return (self.channels, *(out_size(n, self.kernel, self.stride, self.padding)
                                 for n in self.grid))

    def record(self) -> dict[str, Any]:
        """As NIR metadata (plain lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "PoolSpec":
        r = plain(record)
        return cls(str(r["pool"]), int(r["channels"]), tuple(int(x) for x in r["grid"]),
                   int(r["kernel"]), int(r["stride"]), int(r["padding"]), str(r["form"]),
                   int(r["level"]), tuple(str(x) for x in r["inputs"]))


def level_specs(pool: str, channels: int, grid: tuple[int, int], kernel: int, stride: int,
                padding: int, form: str, relay: str) -> list[PoolSpec]:
    """A pool's levels in data-flow order, the first reading ``relay``."""
    levels = len(pool_tree(channels, tuple(grid), kernel, stride, padding, form).levels)
    return [PoolSpec(pool, channels, tuple(grid), kernel, stride, padding, form, k,
                     (relay if k == 1 else level_name(pool, k - 1),))
            for k in range(1, levels + 1)]


@dataclass(frozen=True)
class PoolTree:
    r"""A pool expanded (:func:`pool_tree`). ``levels[l]``: ``(sources, weights)``, each
    ``[neurons, fan_in]`` (sources int64, weights int8 in :math:`\{-1, 0, 1\}`; 0 pads a
    neuron of fewer inputs): for each neuron of level ``l + 1`` (flat index :math:`c n_l + j`,
    :math:`n_l` its neurons per channel) the flat indices it reads in the level before (the
    relay's ``(C, H, W)`` for level 1, PyTorch layout). ``readout``: the same for each neuron
    of the pooled LIF (``(C, H', W')``), into the last level: :math:`\max` of its window."""

    levels: tuple[tuple[np.ndarray, np.ndarray], ...]
    readout: tuple[np.ndarray, np.ndarray]
    per_channel: tuple[int, ...]  # neurons per channel: the relay's H W, then each level's
    channels: int

    def size(self, level: int) -> int:
        """Neurons of level ``level`` (0: the relay)."""
        return self.channels * self.per_channel[level]

    @property
    def neurons(self) -> int:
        """ReLU neurons of all levels."""
        return sum(len(src) for src, _ in self.levels)

    @property
    def synapses(self) -> int:
        """Signed synapses into the levels and from the last into the pooled LIF."""
        return sum(int(np.count_nonzero(w)) for _, w in (*self.levels, self.readout))


def _signed(v: Value, sign: int) -> Value:
    return tuple((i, sign * w) for i, w in v)


def _reduce(groups: list[list[Value]], levels: int
            ) -> tuple[list[list[Value]], list[Value]]:
    """``levels`` ReLU levels over ``groups`` (each a window's values, signed sums of the
    source's neurons): (each level's neurons as signed sums of the level before, each group's
    maximum as a signed sum of the last level's neurons)."""
    out: list[list[Value]] = []
    for _ in range(levels):
        neurons: dict[Value, int] = {}

        def neuron(terms: Value) -> int:
            merged: dict[int, int] = {}
            for i, w in terms:
                merged[i] = merged.get(i, 0) + w
            key = tuple(sorted((i, w) for i, w in merged.items() if w))
            return neurons.setdefault(key, len(neurons))
        nxt = []
        for g in groups:
            vals = []
            if len(g) % 2:
                vals.append(((neuron(g[0]), 1), (neuron(_signed(g[0], -1)), -1)))
            for a, b in zip(g[len(g) % 2::2], g[len(g) % 2 + 1::2]):
                vals.append(((neuron(a + _signed(b, -1)), 1), (neuron(b), 1),
                             (neuron(_signed(b, -1)), -1)))
            nxt.append([tuple(sorted(v)) for v in vals])
        out.append(list(neurons))
        groups = nxt
    return out, [g[0] for g in groups]


def _depth(groups: list[list[Value]]) -> int:
    r"""Levels that bring the largest group to one value: :math:`\lceil \log_2 n \rceil`."""
    return (max(len(g) for g in groups) - 1).bit_length()


def _plane(grid: tuple[int, int], kernel: int, stride: int, padding: int, form: str
           ) -> tuple[list[list[Value]], list[Value]]:
    """One channel's tree: (each level's neurons, each output's maximum), channel-local
    indices."""
    h, w = grid
    rows, cols = (windows(n, kernel, stride, padding) for n in grid)
    if form == "flat":
        groups = [[((y * w + x, 1),) for y in r for x in c] for r in rows for c in cols]
        return _reduce(groups, max(1, _depth(groups)))
    used = sorted({y for r in rows for y in r})
    row_groups = [[((y * w + x, 1),) for x in c] for y in used for c in cols]
    first, row_max = _reduce(row_groups, _depth(row_groups))
    at = {(y, k): v for (y, k), v in zip(((y, k) for y in used for k in range(len(cols))),
                                         row_max)}
    groups = [[at[y, k] for y in r] for r in rows for k in range(len(cols))]
    second, maxima = _reduce(groups, max(1 if not first else 0, _depth(groups)))
    return first + second, maxima


def _tiled(neurons: list[Value], channels: int, source_per_channel: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """One channel's neurons (signed sums) -> ``(sources, weights)`` over all channels."""
    fan = max(len(v) for v in neurons)
    src = np.zeros((len(neurons), fan), np.int64)
    wts = np.zeros((len(neurons), fan), np.int8)
    for j, v in enumerate(neurons):
        src[j, :len(v)] = [i for i, _ in v]
        wts[j, :len(v)] = [x for _, x in v]
    offsets = (np.arange(channels, dtype=np.int64) * source_per_channel)[:, None, None]
    return ((src[None] + offsets).reshape(-1, fan),
            np.broadcast_to(wts, (channels, *wts.shape)).reshape(-1, fan))


@lru_cache(maxsize=16)
def pool_tree(channels: int, grid: tuple[int, int], kernel: int, stride: int, padding: int,
              form: str) -> PoolTree:
    """The pool's levels and readout (module docstring), every channel the same tree."""
    levels, maxima = _plane(tuple(grid), kernel, stride, padding, form)
    per = [grid[0] * grid[1]] + [len(n) for n in levels]
    tiled = tuple(_tiled(n, channels, p) for n, p in zip(levels, per))
    readout = _tiled(maxima, channels, per[-1])
    return PoolTree(tiled, readout, tuple(per), channels)


def expand(spec: PoolSpec) -> Population:
    """One level as a :class:`~.attention.Population` of kind ``relu`` (its ``bound`` in
    units of the relay's largest |payload|: ``PAYLOAD_FACTOR``)."""
    tree = pool_tree(*spec.geometry)
    src, w = tree.levels[spec.level - 1]
    return Population(spec, (spec.channels, tree.per_channel[spec.level]), (src,),
                      (tree.size(spec.level - 1),), PAYLOAD_FACTOR, weights=(w,))


def pooled(tree: PoolTree, last: np.ndarray) -> np.ndarray:
    """What the pooled LIF receives from the last level's payloads ``last`` ``[...,
    neurons]``: each window's maximum ``[..., C H' W']`` (flat, PyTorch layout)."""
    src, w = tree.readout
    return (last[..., src] * w).sum(-1)


@dataclass(eq=False)
class PoolNode(nir.NIRNode):
    """A level of a current max pool on chip (module docstring): ``spec`` its structure,
    ``delay`` the extra steps of its input synapses; ``metadata["loihi"]`` its registers once
    quantized."""

    spec: PoolSpec
    delay: int = 0

    def __post_init__(self) -> None:
        self.delay = int(self.delay)
        self.input_type = {"input": np.array(self.spec.block_shape)}
        self.output_type = {"output": np.array(self.spec.out_shape if self.last
                                               else self.spec.block_shape)}

    @property
    def last(self) -> bool:
        """Whether the pooled LIF reads this level."""
        return self.spec.level == self.spec.levels

    @cached_property
    def population(self) -> Population:
        return expand(self.spec)

    @property
    def tree(self) -> PoolTree:
        return pool_tree(*self.spec.geometry)


def is_current_pool(node: nir.NIRNode) -> bool:
    """Whether a NIR node read from a file is a level of a current max pool."""
    return isinstance(node, (nir.Scale, nir.SumPool2d)) and POOL in node.metadata


def written(node: PoolNode) -> nir.NIRNode:
    """The level as a NIR file holds it (module docstring)."""
    spec = node.spec
    meta = {POOL: {**spec.record(), "delay": node.delay},
            **{k: v for k, v in node.metadata.items() if k != POOL}}
    if node.last:
        pair = np.array([spec.kernel, spec.stride, spec.padding])[:, None].repeat(2, 1)
        return nir.SumPool2d(kernel_size=pair[0], stride=pair[1], padding=pair[2],
                             metadata=meta)
    return nir.Scale(scale=np.ones(spec.block_shape, dtype=np.float32), metadata=meta)


def from_written(node: nir.NIRNode) -> PoolNode:
    """The inverse of :func:`written` (also on a node read back by ``nir.read``)."""
    record = plain(dict(node.metadata[POOL]))
    meta = {k: v for k, v in node.metadata.items() if k != POOL}
    return PoolNode(spec=PoolSpec.from_record(record), delay=int(record.get("delay", 0)),
                    metadata=meta)


def tree_costs(channels: int, grid: tuple[int, int], kernel: int, stride: int, padding: int
               ) -> dict[str, dict[str, int]]:
    """Per form: ``levels``, ``neurons`` and ``synapses`` (into the levels and the LIF)."""
    return {f: {"levels": len(t.levels), "neurons": t.neurons, "synapses": t.synapses}
            for f in FORMS for t in (pool_tree(channels, tuple(grid), kernel, stride, padding,
                                               f),)}


def cheaper_form(costs: dict[str, dict[str, int]]) -> str:
    """The form of fewer neurons (then fewer synapses; ``separable`` on a tie)."""
    return min(FORMS, key=lambda f: (costs[f]["neurons"], costs[f]["synapses"],
                                     f != "separable"))


__all__ = ["FORMS", "PAYLOAD_FACTOR", "POOL", "PoolNode", "PoolSpec", "PoolTree",
           "cheaper_form", "expand", "from_written", "is_current_pool", "level_name",
           "level_specs", "out_size", "pool_tree", "pooled", "tree_costs", "windows", "written"]
