r"""Spiking self-attention on neuro-cores: its populations in the chip graph, and the one
expansion of their structure that every consumer walks (lowering, emulator, CPU reference, Lava,
mapper, energy). numpy and nir only.

Spikingformer's attention, per head :math:`h` and step (no softmax):
:math:`Y_h = c\,(Q_h K_h^\top) V_h`, with :math:`Q, K, V \in \{0, 1\}^{N \times d}` the spikes
of three LIFs of shape ``(C, H, W)`` (:math:`N = HW` tokens, token :math:`n = yW + x`;
:math:`d = C/\text{heads}`, channel :math:`i` of head :math:`h` is :math:`hd + i`). Every entry
of :math:`Q K^\top V` is an integer count, so the chip computes it exactly with *product
neurons* (Lava's ``ProdNeuron``: :math:`p = a_0 a_1`, sent as a graded spike; of two spikes, their
AND) and *graded sums* (Lava's ``GradedVec``, threshold 0: :math:`p = \sum_k a_k`), each head in
four populations, in one of two orders:

================  ===========================  =================  ======================
order             population (kind)            neurons ``shape``  payload
================  ===========================  =================  ======================
``k_first``       ``kv`` (product)             ``(N, d, d)``      :math:`K_{ni} V_{nj}`
\                 ``m`` (sum)                  ``(d, d)``         :math:`M_{ij} = \sum_n kv_{nij}`
\                 ``qm`` (product)             ``(N, d, d)``      :math:`Q_{ni} M_{ij}`
\                 ``y`` (sum)                  ``(d, N)``         :math:`Y_{jn} = \sum_i qm_{nij}`
``q_first``       ``qk`` (product)             ``(N, N, d)``      :math:`Q_{ni} K_{mi}`
\                 ``s`` (sum)                  ``(N, N)``         :math:`S_{nm} = \sum_i qk_{nmi}`
\                 ``sv`` (product)             ``(N, N, d)``      :math:`S_{nm} V_{mj}`
\                 ``y`` (sum)                  ``(d, N)``         :math:`Y_{jn} = \sum_m sv_{nmj}`
================  ===========================  =================  ======================

``k_first`` takes :math:`2Nd^2` products per head and step, ``q_first`` :math:`2N^2d`
(:func:`products`). Each population's inputs (its *ports*, in order: a product population's two
factors, a sum's one summed population) reach it through synapses of weight 1, each holding its
payload ``synapse_delay_steps`` plus the population's ``delays[k]`` steps, so that a product's two
factors of the same model step meet; the populations are memoryless (a population's output of a
step is its inputs of that step). ``y``'s neuron :math:`(j, n)` drives channel :math:`hd + j`,
token :math:`n` of the attention LIF through one synapse of weight ``weight`` (the scale
:math:`c` on a float export; on a fixed-point one the integer :math:`S c/\tau` of the LIF's
scale :math:`S`, whose threshold :math:`S V_{th}` the quantizer sets). A model step's counts
reach that LIF four synapse hops after :math:`Q, K, V` are spiked, plus ``y``'s hop into it.

In the chip graph a population is an :class:`AttentionNode` (the run side's node type, which
backends dispatch on), named ``ATTN_hH_STAGE``. In a NIR file it is written as a ``nir.Scale`` of
the block's shape ``(C, H, W)`` (ones; ``y``: ``weight`` on its head's channels, 0 elsewhere)
whose ``metadata["attention"]`` holds the small structure (:class:`AttentionSpec`: attention,
head, heads, tokens, grid, d, order, stage, its ports' source names in order, its delays), and
``metadata["loihi"]`` its registers once quantized: ``nir.read`` reads it, and a consumer that
does not know the metadata sees a chain of scales (NIR has no product of two activations).
:func:`expand` is the one place that turns a spec into neurons, input sources, synapses and
fan-outs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import nir
import numpy as np

from ..errors import LoweringError
from .nirvalues import plain

ATTENTION = "attention"  # the metadata key of a population in a NIR file
ORDERS = ("k_first", "q_first")
#: per order: a head's stages in data-flow order -> (kind, its ports: "q", "k", "v" are the
#: attention's input LIFs, any other name a stage before it)
STAGES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "k_first": {"kv": ("product", ("k", "v")), "m": ("sum", ("kv",)),
                "qm": ("product", ("q", "m")), "y": ("sum", ("qm",))},
    "q_first": {"qk": ("product", ("q", "k")), "s": ("sum", ("qk",)),
                "sv": ("product", ("s", "v")), "y": ("sum", ("sv",))},
}
#: the attention's inputs, in the order the host op and the float model take them
QKV = ("q", "k", "v")


def products(order: str, tokens: int, d: int) -> int:
    """Product-neuron updates of one head and step: :math:`2Nd^2` (``k_first``) or
    :math:`2N^2d` (``q_first``)."""
    return 2 * tokens * d * (d if order == "k_first" else tokens)


def cheaper_order(tokens: int, d: int) -> str:
    """The order of fewer products (``k_first`` on a tie)."""
    return min(ORDERS, key=lambda o: (products(o, tokens, d), o != "k_first"))


def population_name(attention: str, head: int, stage: str) -> str:
    return f"{attention}_h{head}_{stage}"


@dataclass(frozen=True)
class AttentionSpec:
    """One population's structure: plain values, what ``metadata["attention"]`` holds."""

    attention: str  # the attention's name (its populations share it)
    head: int
    heads: int
    grid: tuple[int, int]  # (H, W): tokens N = H W
    d: int  # channels per head
    order: str
    stage: str
    inputs: tuple[str, ...]  # the layers its ports read, in port order

    def __post_init__(self) -> None:
        if self.order not in STAGES or self.stage not in STAGES[self.order]:
            raise LoweringError(f"attention population '{self.attention}' has order "
                                f"{self.order!r} and stage {self.stage!r}; orders: {ORDERS}, "
                                f"stages: {STAGES}")
        if len(self.inputs) != len(self.ports):
            raise LoweringError(f"attention population {self.name} reads {list(self.inputs)}; "
                                f"its stage '{self.stage}' has ports {self.ports}")

    @property
    def name(self) -> str:
        return population_name(self.attention, self.head, self.stage)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def kind(self) -> str:
        return STAGES[self.order][self.stage][0]

    @property
    def ports(self) -> tuple[str, ...]:
        return STAGES[self.order][self.stage][1]

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the attention's Q, K, V and output LIFs."""
        return (self.heads * self.d, *self.grid)

    def record(self) -> dict[str, Any]:
        """As NIR metadata (plain lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "AttentionSpec":
        r = plain(record)
        return cls(str(r["attention"]), int(r["head"]), int(r["heads"]),
                   tuple(int(x) for x in r["grid"]), int(r["d"]), str(r["order"]),
                   str(r["stage"]), tuple(str(x) for x in r["inputs"]))


@dataclass(eq=False)
class AttentionNode(nir.NIRNode):
    """A population of spiking self-attention on chip (module docstring): ``spec`` its
    structure, ``delays`` the extra steps of each port's synapses, ``weight`` (``y`` only) the
    weight of its synapses into the attention LIF; ``metadata["loihi"]`` its registers once
    quantized."""

    spec: AttentionSpec
    weight: float = 1.0
    delays: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.delays = tuple(int(x) for x in self.delays) or (0,) * len(self.spec.ports)
        shape = np.array(self.spec.block_shape)
        self.input_type = {"input": shape}
        self.output_type = {"output": shape}

    @cached_property
    def population(self) -> "Population":
        return expand(self.spec)


def is_attention(node: nir.NIRNode) -> bool:
    """Whether a NIR node read from a file is an attention population (module docstring)."""
    return isinstance(node, nir.Scale) and ATTENTION in node.metadata


def written(node: AttentionNode) -> nir.Scale:
    """The population as a NIR file holds it (module docstring)."""
    spec = node.spec
    scale = np.ones(spec.block_shape, dtype=np.float32)
    if spec.stage == "y":
        scale[:] = 0
        scale[spec.head * spec.d:(spec.head + 1) * spec.d] = node.weight
    meta = {k: v for k, v in node.metadata.items() if k != ATTENTION}
    return nir.Scale(scale=scale, metadata={ATTENTION: {**spec.record(),
                                                        "delays": list(node.delays)}, **meta})


def from_written(node: nir.Scale) -> AttentionNode:
    """The inverse of :func:`written` (also on a node read back by ``nir.read``)."""
    record = plain(dict(node.metadata[ATTENTION]))
    spec = AttentionSpec.from_record(record)
    weight = 1.0
    if spec.stage == "y":
        weight = float(np.asarray(node.scale)[spec.head * spec.d].flat[0])
    meta = {k: v for k, v in node.metadata.items() if k != ATTENTION}
    return AttentionNode(spec=spec, weight=weight, delays=tuple(record.get("delays", ())),
                         metadata=meta)


@dataclass(frozen=True)
class Population:
    r"""A population expanded (:func:`expand`; a current max pool's ReLU level:
    :func:`.current_pool.expand`): what its neurons compute and read.

    ``shape``: its neurons as an array (C order; their flat index is the neuron's index).
    ``sources[k]``: ``[neurons, fan_in_k]`` int64, for each neuron the flat indices it reads on
    port ``k``: into the source LIF's ``(C, H, W)`` (PyTorch layout, :math:`c N + n`) for a
    port ``q``, ``k`` or ``v``, into the source population's own ``shape`` otherwise.
    ``weights`` (``relu`` only): ``weights[k]`` the signed weight of each of those synapses
    (0: no synapse, padding a neuron of fewer inputs); without it every synapse weighs 1. A
    product neuron reads one index per port and sends :math:`a_0 a_1`; a sum neuron reads
    ``fan_in`` indices on its one port and sends their sum; a ReLU neuron sends
    :math:`\max(\sum_k w_k a_k, 0)`. ``targets`` (``y`` only): each neuron's flat index in the
    attention LIF's ``(C, H, W)``. ``bound``: the largest payload (:math:`|p|`) it can send
    (a ReLU level's: in units of the largest payload of its pool's relay)."""

    spec: Any  # an AttentionSpec, or a current pool's PoolSpec
    shape: tuple[int, ...]
    sources: tuple[np.ndarray, ...]
    source_sizes: tuple[int, ...]  # neurons of each port's source
    bound: int
    targets: np.ndarray | None = None
    weights: tuple[np.ndarray, ...] | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))

    def _present(self, port: int) -> np.ndarray | None:
        """Which entries of ``sources[port]`` are synapses (None: all)."""
        return None if self.weights is None else self.weights[port] != 0

    @property
    def synapses(self) -> int:
        """Synapses into the population (one per neuron and input it reads), and, for ``y``,
        its synapses into the attention LIF (one per neuron)."""
        into = sum(int(s.size) if self._present(k) is None else int(np.count_nonzero(
            self._present(k))) for k, s in enumerate(self.sources))
        return into + (self.neurons if self.targets is not None else 0)

    def fan_out(self, port: int) -> np.ndarray:
        """For each neuron of port ``port``'s source (its flat index): the neurons of this
        population it reaches, so the synaptic ops one event of it causes here (it sends one
        message to each core that holds them)."""
        present = self._present(port)
        return np.bincount(self.sources[port].ravel(), minlength=self.source_sizes[port],
                           weights=None if present is None else present.ravel()
                           ).astype(np.int64)

    def binary(self, port: int) -> bool:
        """Whether port ``port`` carries binary spikes (a Q, K or V LIF) rather than graded
        payloads."""
        return self.spec.ports[port] in QKV


def expand(spec: AttentionSpec) -> Population:
    """The population's neurons, sources, targets and bound (module docstring's table)."""
    n, d, c0 = spec.tokens, spec.d, spec.head * spec.d
    cn = spec.heads * d * n  # neurons of a Q, K or V LIF
    ar = np.arange
    if spec.stage in ("kv", "qm"):  # [n, i, j]
        nn, ii, jj = np.meshgrid(ar(n), ar(d), ar(d), indexing="ij")
        first = ((c0 + ii) * n + nn).reshape(-1, 1)  # K (kv) or Q (qm) at channel i, token n
        second = (((c0 + jj) * n + nn) if spec.stage == "kv" else ii * d + jj).reshape(-1, 1)
        sizes = (cn, cn if spec.stage == "kv" else d * d)
        bound = 1 if spec.stage == "kv" else n
        return Population(spec, (n, d, d), (first, second), sizes, bound)
    if spec.stage == "m":  # [i, j] = sum over n of kv[n, i, j]
        ii, jj, nn = np.meshgrid(ar(d), ar(d), ar(n), indexing="ij")
        return Population(spec, (d, d), ((nn * d * d + ii * d + jj).reshape(d * d, n),),
                          (n * d * d,), n)
    if spec.stage == "qk":  # [n, m, i]
        nn, mm, ii = np.meshgrid(ar(n), ar(n), ar(d), indexing="ij")
        return Population(spec, (n, n, d), (((c0 + ii) * n + nn).reshape(-1, 1),
                                            ((c0 + ii) * n + mm).reshape(-1, 1)), (cn, cn), 1)
    if spec.stage == "s":  # [n, m] = sum over i of qk[n, m, i]
        nn, mm, ii = np.meshgrid(ar(n), ar(n), ar(d), indexing="ij")
        return Population(spec, (n, n), ((nn * n * d + mm * d + ii).reshape(n * n, d),),
                          (n * n * d,), d)
    if spec.stage == "sv":  # [n, m, j]
        nn, mm, jj = np.meshgrid(ar(n), ar(n), ar(d), indexing="ij")
        return Population(spec, (n, n, d), ((nn * n + mm).reshape(-1, 1),
                                            ((c0 + jj) * n + mm).reshape(-1, 1)),
                          (n * n, cn), d)
    # y: [j, n] = sum over i of qm[n, i, j] (k_first), over m of sv[n, m, j] (q_first)
    jj, nn, kk = np.meshgrid(ar(d), ar(n), ar(d if spec.order == "k_first" else n),
                             indexing="ij")
    src = (nn * d * d + kk * d + jj) if spec.order == "k_first" else (nn * n * d + kk * d + jj)
    return Population(spec, (d, n), (src.reshape(d * n, -1),), (n * d * d if spec.order ==
                                                               "k_first" else n * n * d,),
                      d * n, targets=((c0 + jj[:, :, 0]) * n + nn[:, :, 0]).reshape(-1))


def fire(pop: Population, ports: list[np.ndarray]) -> np.ndarray:
    r"""What the population sends in one step, from its ports' inputs ``ports[k]``
    ``[..., source_sizes[k]]`` (flat, any leading axes): ``[..., neurons]``, a product neuron's
    :math:`a_0 a_1`, a sum neuron's :math:`\sum_k a_k` over its fan-in, a ReLU neuron's
    :math:`\max(\sum_k w_k a_k, 0)`, walking
    ``pop.sources`` (the reference form; fast backends compute the same per head as matrix
    products)."""
    if pop.kind == "product":
        a, b = (x[..., src[:, 0]] for x, src in zip(ports, pop.sources))
        return a * b
    (x,), (src,) = ports, pop.sources
    if pop.kind == "relu":
        return np.maximum((x[..., src] * pop.weights[0]).sum(-1), 0)
    return x[..., src].sum(-1)


#: sum stage -> its counts per head and step from the two factors of the product population it
#: sums (``[..., N, d]``, or a sum's counts), as matrix products
_SUMS = {"m": lambda k, v: k.swapaxes(-1, -2) @ v,  # M = K^T V, [d, d]
         "s": lambda q, k: q @ k.swapaxes(-1, -2),  # S = Q K^T, [N, N]
         "y": lambda a, b: (a @ b).swapaxes(-1, -2)}  # Y = (Q M)^T or (S V)^T, [d, N]


def head_sums(stage: str, a: Any, b: Any) -> Any:
    r"""A sum population's counts (its ``shape``) of one head, over any leading axes (samples,
    steps, heads), from the factors ``a, b`` of the product population it sums: ``m``,
    :math:`K^\top V`; ``s``, :math:`Q K^\top`; ``y``, :math:`(Q M)^\top` (``k_first``) or
    :math:`(S V)^\top` (``q_first``); :math:`Q, K, V` ``[..., N, d]``, :math:`M, S` a sum's
    counts. What :func:`fire` sums neuron by neuron, as matrix products: numpy arrays and torch
    tensors alike (exact in floats while every partial sum is an integer within the mantissa)."""
    return _SUMS[stage](a, b)


def head_specs(attention: str, head: int, heads: int, grid: tuple[int, int], d: int,
               order: str, qkv: tuple[str, str, str]) -> list[AttentionSpec]:
    """One head's populations in data-flow order, their ports wired to the LIFs ``qkv`` (Q, K,
    V) and to the head's earlier populations."""
    names = dict(zip(QKV, qkv))
    specs = []
    for stage, (_, ports) in STAGES[order].items():
        inputs = tuple(names[p] if p in names else population_name(attention, head, p)
                       for p in ports)
        specs.append(AttentionSpec(attention, head, heads, tuple(grid), d, order, stage, inputs))
    return specs


__all__ = ["ATTENTION", "ORDERS", "STAGES", "QKV", "AttentionNode", "AttentionSpec",
           "Population", "cheaper_order", "expand", "fire", "from_written", "head_specs",
           "head_sums", "is_attention", "population_name", "products", "written"]
