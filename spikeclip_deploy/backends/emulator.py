r"""Emulator backend (target ``loihi-emu``): a ``--target loihi`` export's chip graph with Lava's
bit-accurate fixed-point arithmetic reproduced in torch, on integers, batched over samples; no
Lava import.

Per LIF and step, as Lava's ``PyLifResetModelBitAcc`` computes it (integers; :math:`D` the decay
bits, :math:`a` the activation and threshold shift, :math:`n` the state bits):

.. math::
    u &\leftarrow \mathrm{wrap}_n\big(\mathrm{trunc}(u\,(2^D - d_u - 1) / 2^D) + 2^a a_{in}\big)\\
    v &\leftarrow \mathrm{sat}_n\big(\mathrm{trunc}(v\,(2^D - d_v) / 2^D) + u
         + b_m 2^{b_e}\big),\quad s = [v > 2^a v_{th}],\quad v \leftarrow 0 \text{ where } s

with :math:`a_{in}` the sum of what reaches the LIF: the input mantissa (the first LIF), each
synapse's output (:mod:`.emulator_synapses`: Lava's ``Dense``, ``Conv``), each host op's
quantized current and each graded stream relay's payload (Lava's ``GradedVec`` with threshold 0,
:math:`p = \sum_i y_i`, through an identity synapse of weight 1, which passes it unchanged),
each spiking-attention head's counts :math:`w Y` (:mod:`.emulator_attention`: its product
neurons and graded sums as Lava's ``ProdNeuron`` and ``GradedVec`` compute them, whose ports the
export's delays align), and each max pool's maximum of its relay's payloads over every window
(padding left out), which its levels of graded ReLU neurons compute exactly
(:mod:`spikeclip_deploy.exchange.current_pool`; their payloads are formed from that description
when state is recorded). A synapse's bias is part of its LIF's bias mantissa (a stream's terms: of every LIF summing
them).

Timing: every synapse delays by one step plus its aligning ``delay``, and a LIF of depth
:math:`d` is read (and its state zeroed) in its window :math:`d .. d+T-1`
(:func:`~spikeclip_deploy.exchange.nirgraph.depths`), so in window-local time a synapse's input at
step :math:`t` is its source's spikes at step :math:`t`. The emulator therefore runs layer by
layer: a synapse's :math:`T` steps in one batched product (copies of one synapse for several
readers, which differ only in their delays, computed once; :mod:`.emulator_gemm` chooses
its kernel), a LIF's :math:`T` steps in one compiled pass per sample (:mod:`.emulator_lif`,
int32 or int64) that also sums its inputs, a relay's sum in one pass, or not at all where its
readers (LIFs and relays) take its terms instead (:func:`deferred_relays`). Image layers are
held channels last (``[B, T, H, W, C]``) and returned in PyTorch layout. With several threads,
the samples run in shards on worker threads of one thread each (:meth:`Emulation.run`).

Every value is an integer; bounds (a LIF's inputs' bounds from their weights, or the batch's
actual maxima where those are too loose, :math:`T`, its bias, decays and threshold) keep every
value below :math:`2^{53}`, or the run is refused: each operation is then exact.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path

import nir
import numba
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ExportError
from ..exchange.chip import FixedPoint
from ..exchange.attention import AttentionNode, fire
from ..exchange.current_pool import PoolNode
from ..exchange.manifest import chip_record
from ..exchange.nirgraph import (INPUT, ChipLayer, HostOpNode, depths, readers,
                                 summed_synapses)
from .base import Backend, ChipRun, input_mantissa
from . import emulator_attention as attention
from .emulator_fusion import fuse_fan_ins
from .emulator_lif import lif_steps, sum_terms
from .emulator_gemm import FLOAT64_EXACT, INT32_EXACT
from .emulator_synapses import Conv, Current, Dense, Synapse
from .host_runtime import HostOpRunner
from .lava_layout import synapse_bias_mant, to_lava_layout

#: bytes of the largest layer output (int32 synapse sums, T steps) of the samples run at once:
#: the memory of one chunk is reused by the next (fresh memory costs page faults)
RUN_CHUNK = 2**23


def to_inner(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """PyTorch layout (trailing ``[C, H, W]``) -> the emulator's (``[H, W, C]``); a flat layer
    (``ndim`` 1) unchanged."""
    return x.movedim(-3, -1) if ndim == 3 else x


def from_inner(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """The inverse of :func:`to_inner` (a view)."""
    return x.movedim(-1, -3) if ndim == 3 else x


def odd_part(k: int) -> tuple[int, int]:
    """``(m, j)`` with ``k = m 2^j``, ``m`` odd (``(0, 0)`` for 0)."""
    j = (k & -k).bit_length() - 1 if k else 0
    return k >> j, j


#: ``lif_steps``'s state outputs where no state is recorded
_NO_STATE = np.empty((0, 0, 0), dtype=np.int64)

#: the types whose values int32 holds (float32 ones: exact integers below 2^24)
NARROW = {torch.int8, torch.int16, torch.int32, torch.float32}


def _flat(x: torch.Tensor) -> np.ndarray:
    """``[N, T, *inner]`` -> ``[N, T, F]`` (a view where ``x`` is contiguous)."""
    return x.reshape(len(x), x.shape[1], -1).numpy()


def term_arrays(ys: list[torch.Tensor], work: type) -> tuple[np.ndarray, ...]:
    """Terms ``[N, 1 or T, *inner]`` as C-ordered ``[N, 1 or T, F]`` arrays of one type (a
    tuple numba indexes at run time): theirs where they share one, else int32 where each is
    narrower or float32 (exact below :math:`2^{24}`) or the sum is computed in int32 (``work``:
    then every term lies within it), else int64."""
    types = {y.dtype for y in ys}
    common = types.pop() if len(types) == 1 else torch.int32 if (
        types <= NARROW or work == np.int32) else torch.int64
    return tuple(np.ascontiguousarray(_flat(y.to(common))) for y in ys)


@dataclass(frozen=True)
class Lif:
    """One LIF's integers as Lava's bit-accurate model uses them (lava/proc/lif/models.py)."""

    name: str
    keep_u: int  # 2^D - du - 1: ds_offset 1 (models.py:94, :145)
    keep_v: int  # 2^D - dv: dm_offset 0 (models.py:95, :174)
    vth: int  # vth << threshold shift (PyLifResetModelBitAcc.scale_threshold)
    top: int  # 2^(n-1): u wraps above it, v saturates below it (models.py:101-102)
    decay_bits: int
    bias: torch.Tensor  # b_m 2^b_e per neuron, int64, the emulator's layout
    _by_type: dict[type, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)  # :meth:`_constants`

    def biggest(self, a: int, steps: int) -> int:
        r"""A bound on every value the LIF computes for inputs :math:`|2^a a_{in}| \le` ``a``
        over ``steps`` steps: below :math:`2^{53}`, Lava's own arithmetic is exact, and the
        int64 steps of :mod:`.emulator_lif` with it; below :math:`2^{31}`, their int32 steps.

        Bounds: :math:`|u| \le a` without decay, else :math:`|u_t| \le t a` (the decay only
        shrinks it); where that reaches ``top``, :math:`|u_t| \le t (a + 2\,\mathrm{top})`
        (one wrap per step); :math:`|v_t| \le t (\max|u| + \max|b|)`, and below ``top`` once it
        saturates; the sums :math:`\mathrm{decay}(v) + u + b` and :math:`v + v_{th} + 1`, and
        a decay's product :math:`|x| m` (:math:`k = m 2^j`, :math:`m` odd)."""
        top, bias_max = self.top, self.bias_max
        u_max = a if self.keep_u == 0 else steps * a
        wraps = u_max >= top
        if wraps:  # one wrap per step (models.py:161-170)
            u_max = steps * (a + 2 * top)
        v_max = min(top - 1, steps * (u_max + bias_max))  # saturates (models.py:176-186)
        return max(a + bias_max, u_max * odd_part(self.keep_u)[0],
                   v_max * odd_part(self.keep_v)[0], v_max + u_max + bias_max,
                   v_max + self.vth + 1, u_max + 2 * top if wraps else 0)

    @cached_property
    def bias_max(self) -> int:
        return int(self.bias.abs().max()) if self.bias.numel() else 0

    def window(self, ins: list[tuple[torch.Tensor, int]], spikes: torch.Tensor,
               state: tuple[torch.Tensor, torch.Tensor] | None, biggest: int) -> None:
        """The steps of one window (:func:`.emulator_lif.lif_steps`): inputs ``(x, e)``,
        ``x [N, 1 or T, *inner]``, :math:`2^a a_{in} = \sum x\,2^e` -> ``spikes`` (int8),
        and ``state`` (``u``, ``v``) if given, in int32 where ``biggest`` (:meth:`biggest`)
        is below :math:`2^{31}`, else int64 (inputs of mixed types in one,
        :func:`term_arrays`)."""
        work = np.int32 if biggest < INT32_EXACT else np.int64
        bias, consts = self._constants(work)
        lif_steps(term_arrays([x for x, _ in ins], work), np.array([e for _, e in ins], dtype=work),
                  bias, consts, _flat(spikes),
                  *(map(_flat, state) if state else (_NO_STATE, _NO_STATE)))

    def _constants(self, work: type) -> tuple[np.ndarray, np.ndarray]:
        """The flat bias and :func:`~.emulator_lif.lif_steps`'s ``consts`` in ``work`` (made
        once per type)."""
        if work not in self._by_type:
            (mu, ju), (mv, jv) = odd_part(self.keep_u), odd_part(self.keep_v)
            self._by_type[work] = (
                self.bias.reshape(-1).numpy().astype(work),
                np.array([mu, self.decay_bits - ju, mv, self.decay_bits - jv, self.vth,
                          self.top], dtype=work))
        return self._by_type[work]


@dataclass
class _Batch:
    """A run in progress: ``size`` samples, computed ``rows`` at a time; the chunk's layer
    outputs (a LIF's spikes ``[rows, T, *inner]`` int8, a synapse's or host op's
    :class:`~.emulator_synapses.Current`, a deferred relay's terms); every LIF's spikes (and
    state) for all samples, shared by the copies (:func:`dataclasses.replace`) that worker
    threads compute other rows in."""

    size: int
    record_state: bool
    rows: slice = field(default_factory=lambda: slice(0))
    acts: dict[str, torch.Tensor | Current | tuple[Current, ...]] = field(default_factory=dict)
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    u: dict[str, torch.Tensor] = field(default_factory=dict)
    v: dict[str, torch.Tensor] = field(default_factory=dict)
    payloads: dict[str, torch.Tensor] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards the first use

    def full(self, store: dict[str, torch.Tensor], name: str, shape: tuple[int, ...],
             dtype: type) -> torch.Tensor:
        """``store[name]`` (``[size, *shape]``, allocated on first use), at ``rows``."""
        if name not in store:
            with self.lock:
                if name not in store:  # numpy's memory (huge pages): fewer page faults
                    store[name] = torch.from_numpy(np.empty((self.size, *shape), dtype=dtype))
        return store[name][self.rows]


def _one_thread() -> None:
    """A worker's start: one torch and one numba thread (both counts are the calling
    thread's own: numba's kernels then run serially, :func:`~..machine.by_threads`)."""
    torch.set_num_threads(1)
    numba.set_num_threads(1)


@cache
def _workers(n: int) -> ThreadPoolExecutor:
    """``n`` worker threads of one thread each (:func:`_one_thread`), made on first use and
    kept; an idle one waits on its queue, never spins."""
    return ThreadPoolExecutor(n, thread_name_prefix="emulator", initializer=_one_thread)


def shards(samples: int, chunk: int, workers: int) -> list[list[slice]]:
    """``samples`` rows in pieces of at most ``chunk`` (and of at most an equal share, so that
    each worker has one), dealt to ``workers`` in turn."""
    size = max(1, min(chunk, -(-samples // workers)))
    pieces = [slice(lo, min(lo + size, samples)) for lo in range(0, samples, size)]
    return [pieces[j::workers] for j in range(workers)]


def _numpy(store: dict[str, torch.Tensor], own: frozenset[str] = frozenset()
           ) -> dict[str, np.ndarray]:
    """``[B, T, *inner]`` tensors -> ``[B, T, *shape]`` arrays (PyTorch layout, views); those
    named in ``own`` (attention populations, held in their own shape) as they are."""
    return {k: (x if k in own else from_inner(x, x.ndim - 2)).numpy() for k, x in store.items()}


def _synapse_key(la: ChipLayer) -> tuple:
    """What determines a synapse's output in window-local time (its delay does not)."""
    node = la.node
    geometry = () if isinstance(node, nir.Affine) else tuple(
        np.asarray(getattr(node, k)).tobytes() for k in ("stride", "padding", "dilation", "groups"))
    w = np.asarray(node.weight)
    return (type(node), la.inputs, node.metadata["loihi"]["weight_exp"], geometry, w.shape,
            w.tobytes())


def terms(act: Current | tuple[Current, ...]) -> tuple[Current, ...]:
    """What a layer's output adds to a sum: a deferred relay's terms, else the output."""
    return act if isinstance(act, tuple) else (act,)


def deferred_relays(layers: list[ChipLayer]) -> frozenset[str]:
    r"""The relays whose sums are never formed: read only by LIFs and relays, they hand their
    readers their terms (:func:`terms`), which a LIF sums in its own pass (:meth:`Lif.window`)
    and a relay passes on or sums. Where it saves passes over memory: formed, a sum of
    :math:`k` terms costs :math:`k` reads and a write, and each of its :math:`R` readers reads
    it; deferred, each reader reads the :math:`k` terms: deferred where
    :math:`R k \le k + 1 + R` (one reader: always)."""
    read_by = readers(layers)
    handed: dict[str, int] = {}  # a deferred relay -> the terms it hands on
    for la in layers:
        if isinstance(la.node, nir.Scale):
            near, k = read_by.get(la.name, []), sum(handed.get(i, 1) for i in la.inputs)
            if all(isinstance(r.node, (nir.LIF, nir.Scale)) for r in near) and \
                    len(near) * k <= k + 1 + len(near):
                handed[la.name] = k
    return frozenset(handed)


class Emulation:
    """One encoder's chip graph, ready to emulate batches (weights prepared once)."""

    def __init__(self, layers: list[ChipLayer], time_steps: int, fp: FixedPoint,
                 synapse_delay: int, export_dir: Path | str) -> None:
        depths(layers, synapse_delay)  # the paths into every LIF must be aligned, as on Lava
        self.layers, self.time_steps, self.fp = layers, time_steps, fp
        by_name = {la.name: la for la in layers}
        neurons = max((int(np.prod(np.asarray(la.node.tau).shape)) for la in layers
                       if isinstance(la.node, nir.LIF)), default=1)
        self.chunk = max(1, RUN_CHUNK // (4 * time_steps * neurons))  # samples run at once
        self.synapses: dict[str, Synapse] = {}
        self.copy_of: dict[str, str] = {}  # a synapse -> the identical one computed before it
        first: dict[tuple, str] = {}
        self.lifs: dict[str, Lif] = {}
        self.host_ops: dict[str, HostOpRunner] = {}
        #: each relay's sum and the input, reused from chunk to chunk (fresh memory costs page
        #: faults)
        self.buffers: dict[str, torch.Tensor] = {}
        summed = summed_synapses(layers)
        self.populations = [la.name for la in layers
                            if isinstance(la.node, (AttentionNode, PoolNode))]
        self.replicas: list[Emulation] = [self]  # one per worker thread (:meth:`run`)
        for la in layers:
            node = la.node
            if isinstance(node, (nir.Affine, nir.Conv2d)):
                key = _synapse_key(la)
                if key in first:
                    self.copy_of[la.name] = first[key]
                    continue
                first[key] = la.name
                self.synapses[la.name] = self._synapse_of(la)
            elif isinstance(node, HostOpNode):
                self.host_ops[la.name] = HostOpRunner(Path(export_dir), node.metadata)
            elif isinstance(node, nir.LIF):
                syns = [by_name[i].node for i in summed[la.name]]
                shape, q = np.asarray(node.tau).shape, node.metadata["loihi"]
                mant = sum((to_lava_layout(synapse_bias_mant(s, node, fp.activation_shift))
                            for s in syns), np.zeros(shape, dtype=np.int64))  # back: an involution
                bias = to_inner(torch.as_tensor(mant.astype(np.int64) << int(q["bias_exp"])),
                                len(shape)).contiguous()
                self.lifs[la.name] = Lif(la.name, 2**fp.decay_bits - int(q["du"]) - 1,
                                         2**fp.decay_bits - int(q["dv"]),
                                         int(q["vth"]) << fp.threshold_shift,
                                         2 ** (fp.state_bits - 1), fp.decay_bits, bias)
        #: the layers a run that records no state computes: fan-in chains fused (each fused
        #: product's synapse prepared by :meth:`_fusable`)
        self.fused = fuse_fan_ins(layers, self._fusable)
        #: the relays whose sums are never formed, of a run that records state (``True``: every
        #: layer) and of one that does not (the fused layers)
        self.deferred = {True: deferred_relays(layers), False: deferred_relays(self.fused)}

    def _synapse_of(self, la: ChipLayer) -> Synapse:
        """Synapse layer ``la`` prepared (:mod:`.emulator_synapses`)."""
        if isinstance(la.node, nir.Affine):
            return Dense(la.node, self.fp.weight_bits, name=la.name)
        return Conv(la.name, la.node, self.fp.state_bits)

    def _fusable(self, parts: list[ChipLayer], whole: ChipLayer) -> bool:
        """Whether the relays of a fan-in chain of ``parts`` receive ``whole``'s product
        (:mod:`.emulator_fusion`): no convolution's sum wraps (a part's wrap is its own, and
        the whole's would come from the sum); a dense part's exponent is not negative (each
        part's sum would be floored) and Lava's weights of the parts (clipped, the lowest bit
        of a matrix of both signs dropped: each part's own) sum to the whole's. Where it does,
        ``whole``'s synapse joins :attr:`synapses`."""
        syns = [self.synapses[self.copy_of.get(la.name, la.name)] for la in parts]
        syns.append(self._synapse_of(whole))
        if isinstance(whole.node, nir.Conv2d):
            fusable = not any(s.wraps for s in syns)
        else:
            fusable = min(s.exp for s in syns) >= 0 and len({s.exp for s in syns}) == 1 and \
                np.array_equal(sum(s.matrix for s in syns[:-1]), syns[-1].matrix)
        if fusable:
            self.synapses[whole.name] = syns[-1]
        return fusable

    def run(self, mant: np.ndarray, record_state: bool = False) -> ChipRun:
        """Input mantissas ``[B, *in]`` (PyTorch layout) -> every LIF's spikes (and state).

        With ``n`` > 1 threads (the calling thread's torch and numba counts,
        :func:`~..machine.set_threads`) and ``B`` > 1, the samples run in :func:`shards` on
        ``n`` worker threads of one thread each, each on a :meth:`replica` of its own (the
        operations scale poorly over threads; the samples are independent); else on this
        thread, each operation on its ``n`` threads. Without ``record_state``, fan-in chains
        run fused (:mod:`.emulator_fusion`)."""
        mant = torch.as_tensor(np.asarray(mant))
        layers = self.layers if record_state else self.fused
        batch = _Batch(len(mant), record_state)
        threads = torch.get_num_threads()
        n = min(threads, numba.get_num_threads(), len(mant))
        if n > 1:
            while len(self.replicas) < n:
                self.replicas.append(self.replica())
            jobs = [_workers(n).submit(em._rows, mant, replace(batch, acts={}), pieces, layers)
                    for em, pieces in zip(self.replicas, shards(len(mant), self.chunk, n))]
            wait(jobs)  # all done before any error is raised: none still runs on a replica
            if torch.get_num_threads() != threads:  # a worker's start set torch's default
                torch.set_num_threads(threads)
            for job in jobs:
                job.result()
        else:
            self._rows(mant, batch, shards(len(mant), self.chunk, 1)[0], layers)
        return ChipRun(_numpy({k: s.view(torch.uint8) for k, s in batch.spikes.items()}),
                       _numpy(batch.u), _numpy(batch.v),
                       _numpy(batch.payloads, frozenset(self.populations)))

    def replica(self) -> Emulation:
        """This emulation with buffers of its own (its synapses' too), to run beside it."""
        twin = copy.copy(self)
        twin.buffers, twin.replicas = {}, []
        twin.synapses = {k: s.replica() for k, s in self.synapses.items()}
        return twin

    def _rows(self, mant: torch.Tensor, batch: _Batch, pieces: list[slice],
              layers: list[ChipLayer]) -> None:
        """Runs ``layers`` on the samples of ``pieces`` (each a chunk) into ``batch``."""
        with torch.no_grad():
            for rows in pieces:
                batch.rows = rows
                batch.acts = {INPUT: self._input(mant[rows])}
                for la in layers:
                    HANDLERS[type(la.node)](self, la, batch)

    def _input(self, m: torch.Tensor) -> Current:
        """A chunk's input mantissas ``[N, *in]`` (integer-valued, any type) as the first LIF's
        input ``[N, 1, *inner]``: one copy into a buffer the next chunk reuses, in int32 where
        they are below :math:`2^{31}`, else int64 (truncated toward zero, as the types'
        conversion does)."""
        lo, hi = torch.aminmax(m) if m.numel() else (torch.zeros(()), torch.zeros(()))
        bound = max(-int(lo), int(hi))  # int(): toward zero, as the conversion below
        dtype = torch.int32 if bound < INT32_EXACT else torch.int64
        x = to_inner(m, m.ndim - 1)[:, None]
        buf = self.buffers.get(INPUT)
        if buf is None or buf.dtype != dtype or len(buf) < len(x) or buf.shape[1:] != x.shape[1:]:
            buf = self.buffers[INPUT] = torch.empty(x.shape, dtype=dtype)
        return Current(buf[:len(x)].copy_(x), 0, bound)

    # -- handlers: each writes its layer's output into ``batch.acts`` ----------------------
    def _synapse(self, la: ChipLayer, batch: _Batch) -> None:
        if la.name in self.copy_of:
            batch.acts[la.name] = batch.acts[self.copy_of[la.name]]
            return
        (src,) = la.inputs
        s = batch.acts[src]
        b, t = s.shape[:2]
        c = self.synapses[la.name](s.reshape(b * t, *s.shape[2:]))
        batch.acts[la.name] = Current(c.y.reshape(b, t, *c.y.shape[1:]), c.exp, c.bound)

    def _host_op(self, la: ChipLayer, batch: _Batch) -> None:
        """The op's ONNX function on every sample and step at once (it has no state), then the
        chip's input grid; no delay (it answers within the step)."""
        args = [from_inner(batch.acts[i], batch.acts[i].ndim - 2) for i in la.inputs]
        b, t = args[0].shape[:2]
        y = self.host_ops[la.name](*(a.reshape(b * t, *a.shape[2:]).numpy() for a in args))
        y = torch.as_tensor(y).to(torch.int64)
        batch.acts[la.name] = Current(to_inner(y.reshape(b, t, *y.shape[1:]), y.ndim - 1), 0,
                                      int(y.abs().max()) if y.numel() else 0)

    def _relay(self, la: ChipLayer, batch: _Batch) -> None:
        """A graded stream relay: the exact sum of its inputs (a payload of at most
        ``graded_payload_bits`` bits, which the export checked statically), delivered to each
        reader by an identity synapse: its terms (:func:`terms`) where the run defers it
        (:attr:`deferred`), else :meth:`_sum`."""
        ins = [t for i in la.inputs for t in terms(batch.acts[i])]
        if la.name in self.deferred[batch.record_state]:
            batch.acts[la.name] = tuple(ins)
            if batch.record_state:
                self._record_payloads(la.name, self._sum(la.name, ins).y, batch)
            return
        c = batch.acts[la.name] = self._sum(la.name, ins)
        if batch.record_state:
            self._record_payloads(la.name, c.y, batch)

    def _sum(self, name: str, ins: list[Current]) -> Current:
        """The terms ``ins`` summed, in int32 where their bounds sum below :math:`2^{31}`, else
        int64 (every partial sum is far below :math:`2^{63}`), in one pass
        (:func:`~.emulator_lif.sum_terms`) into a buffer of relay ``name`` the next chunk
        reuses."""
        bound = sum(c.bound for c in ins)
        dtype = torch.int32 if bound < INT32_EXACT else torch.int64
        shape = torch.broadcast_shapes(*(c.y.shape for c in ins))  # [B, 1 or T, *inner]
        y = self.buffers.get(name)
        if y is None or y.dtype != dtype or len(y) < shape[0] or y.shape[1:] != shape[1:]:
            y = self.buffers[name] = torch.empty(shape, dtype=dtype)
        y = y[:shape[0]]
        work = np.int32 if dtype == torch.int32 else np.int64
        sum_terms(term_arrays([c.y for c in ins], work),
                  np.array([c.exp for c in ins], dtype=work), _flat(y))
        return Current(y, 0, bound)

    def _record_payloads(self, name: str, y: torch.Tensor, batch: _Batch) -> None:
        """A relay's payloads ``y`` (``[N, 1 or T, *inner]``) at ``batch``'s rows, every step."""
        out = batch.full(batch.payloads, name, (self.time_steps, *y.shape[2:]), np.int64)
        out.copy_(y.expand(out.shape))

    def _attention(self, la: ChipLayer, batch: _Batch) -> None:
        """An attention population (:mod:`.emulator_attention`): a product population holds its
        factors, a sum population computes their products' sums; ``y`` sends its counts into
        the attention LIF (int32, bounded by ``weight`` times its payload bound)."""
        node = la.node
        ports = [batch.acts[i] for i in la.inputs]
        if node.population.kind == "product":
            f = batch.acts[la.name] = attention.factors(node, ports)
            out = attention.payloads(node, f) if batch.record_state else None
        else:
            (f,) = ports
            out = attention.counts(node, f)
            batch.acts[la.name] = (Current(attention.into_lif(node, out), 0,
                                           int(node.weight) * node.population.bound)
                                   if node.spec.stage == "y" else out)
        if batch.record_state:
            rec = batch.full(batch.payloads, la.name, (self.time_steps, *node.population.shape),
                             np.int64)
            rec.copy_(out)

    def _pool(self, la: ChipLayer, batch: _Batch) -> None:
        """A max pool's level: a level before the last passes its relay's current on, the last
        sends the maximum of each window of it (torch's integer ``max_pool2d``: padding never
        wins), within the relay's bound. When state is recorded, each level's payloads
        (``[B, T, C, neurons per channel]``) are its ReLU neurons' (:func:`fire`) on the level
        before's."""
        node, (src,) = la.node, la.inputs
        relay = batch.acts[src]
        if batch.record_state:
            before = batch.payloads[src]
            flat = (from_inner(before, 3) if node.spec.level == 1 else before)[batch.rows]
            rec = batch.full(batch.payloads, la.name, (self.time_steps, *node.population.shape),
                             np.int64)
            rec.copy_(torch.from_numpy(fire(node.population, [
                flat.reshape(*flat.shape[:2], -1).numpy()]).reshape(rec.shape)))
        if not node.last:
            batch.acts[la.name] = relay
            return
        spec = node.spec
        y = from_inner(relay.y, 3)  # [B, 1 or T, C, H, W]
        pooled = F.max_pool2d(y.reshape(-1, *spec.block_shape), spec.kernel, spec.stride,
                              spec.padding)
        batch.acts[la.name] = Current(to_inner(pooled.reshape(*y.shape[:2], *spec.out_shape),
                                               3).contiguous(), relay.exp, relay.bound)

    def _lif(self, la: ChipLayer, batch: _Batch) -> None:
        lif, steps, shift = self.lifs[la.name], self.time_steps, self.fp.activation_shift
        acts = [batch.acts[i] for i in la.inputs]
        ins = [t for a in acts for t in terms(a)]
        biggest = lif.biggest(sum(c.bound << shift for c in ins), steps)
        if biggest >= INT32_EXACT:  # loose bounds: the batch's own maxima (of each input's sum,
            # the deferred relays' summed) may be smaller
            ins = [self._sum(i, list(a)) if isinstance(a, tuple) else a
                   for i, a in zip(la.inputs, acts)]
            biggest = min(biggest, lif.biggest(sum(c.actual() << shift for c in ins), steps))
        if biggest >= FLOAT64_EXACT:
            raise ExportError(f"LIF '{la.name}': its state can exceed 2^53, beyond Lava's int32 "
                              f"arithmetic; re-export with smaller weights or inputs")
        inner = tuple(lif.bias.shape)
        spikes = batch.full(batch.spikes, la.name, (steps, *inner), np.int8)
        state = tuple(batch.full(x, la.name, (steps, *inner), np.int64)
                      for x in (batch.u, batch.v)) if batch.record_state else None
        lif.window([(c.y, c.exp + shift) for c in ins], spikes, state, biggest)
        batch.acts[la.name] = spikes


HANDLERS: dict[type, Callable] = {nir.LIF: Emulation._lif, nir.Affine: Emulation._synapse,
                                  nir.Conv2d: Emulation._synapse, HostOpNode: Emulation._host_op,
                                  nir.Scale: Emulation._relay,
                                  AttentionNode: Emulation._attention, PoolNode: Emulation._pool}


class EmulatorBackend(Backend):
    """Lava's bit-accurate Loihi 2 arithmetic emulated in torch (``--target loihi`` exports)."""

    name = "loihi-emu"
    handlers: dict[type, Callable] = HANDLERS
    runs = {"loihi": "Lava's bit-accurate fixed point, emulated exactly in torch integers"}

    def __init__(self, export_dir) -> None:
        super().__init__(export_dir)
        fp = chip_record(self.manifest, self.export_dir).fixed_point
        self.emulations = {side: Emulation(self.layers[side], self.time_steps, fp,
                                           g.metadata["synapse_delay_steps"], self.export_dir)
                           for side, g in self.graphs.items()}

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        mant = input_mantissa(current, self.graphs[side], side)
        return list(self.emulations[side].run(mant).spikes.values())
