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
:math:`p = \sum_i y_i`, through an identity synapse of weight 1, which passes it unchanged).
A synapse's bias is part of its LIF's bias mantissa (a stream's terms: of every LIF summing
them).

Timing: every synapse delays by one step plus its aligning ``delay``, and a LIF of depth
:math:`d` is read (and its state zeroed) in its window :math:`d .. d+T-1`
(:func:`~spikeclip_deploy.nirgraph.depths`), so in window-local time a synapse's input at
step :math:`t` is its source's spikes at step :math:`t`. The emulator therefore runs layer by
layer: a synapse's :math:`T` steps in one batched product (copies of one synapse for several
readers, which differ only in their delays, computed once), a LIF's steps in a loop over
batch chunks small enough to stay in the CPU's cache. Image layers are held channels last
(``[B, T, H, W, C]``) and returned in PyTorch layout.

Every value is an integer; a LIF runs in float32 where bounds (its inputs' bounds from their
weights, or the batch's actual maxima where those are too loose, :math:`T`, its bias, decays
and threshold) keep every value it computes below :math:`2^{24}`, else in float64 (below
:math:`2^{53}`): each operation is then exact.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ExportError
from ..hardware import FixedPoint, load_profile
from ..nirgraph import INPUT, ChipLayer, HostOpNode, depths, summed_synapses
from .base import Backend, ChipRun, input_mantissa
from .emulator_synapses import FLOAT32_EXACT, FLOAT64_EXACT, Conv, Current, Dense, Synapse
from .host_runtime import HostOpRunner
from .lava import synapse_bias_mant, to_lava_layout

#: neurons x samples a LIF steps through at once: its state, input and spikes of a step then
#: stay in the CPU's level-2 cache across the step's operations
LIF_CHUNK = 2**16
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


def decay_(x: torch.Tensor, keep: int, bits: int) -> torch.Tensor:
    r""":math:`x \leftarrow \mathrm{sign}(x k)\,(|x k| \gg D)` in place: the product truncated
    toward zero (lava/proc/lif/models.py:149-152 and :180-183). With :math:`k = m 2^j`
    (:math:`m` odd), :math:`k 2^{-D}` is exact and so is :math:`x k 2^{-D} = x m 2^{j-D}` while
    :math:`|x| m` is below the float type's exact range (:meth:`Emulation._lif` checks it)."""
    if keep == 0:
        return x.zero_()
    if keep == 2**bits:
        return x
    return x.mul_(keep / 2**bits).trunc_()


def odd_part(k: int) -> int:
    return k // (k & -k) if k else 0


@dataclass(frozen=True)
class LifPlan:
    """How a LIF runs on one batch: its float type, whether its ``u`` can wrap and its ``v``
    saturate."""

    dtype: torch.dtype | None  # None: beyond float64's exact integers
    wraps: bool
    clamps: bool


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

    def plan(self, a: int, steps: int) -> LifPlan:
        r"""The plan for inputs :math:`|2^a a_{in}| \le` ``a`` over ``steps`` steps.

        Bounds on every value the LIF computes: :math:`|u| \le a` without decay, else
        :math:`|u_t| \le t a` (the decay only shrinks it), so no wrap while that stays below
        ``top``; with wraps, :math:`|u_t| \le t (a + 2\,\mathrm{top})`;
        :math:`|v_t| \le t (\max|u| + \max|b|)`, and below ``top`` once it saturates; the sums
        :math:`\mathrm{decay}(v) + u + b` and :math:`v + v_{th} + 1`, and a decay's product
        :math:`|x| m` (:func:`decay_`). float32 where all stay below :math:`2^{24}`, float64
        below :math:`2^{53}`, else None."""
        top, bias_max = self.top, int(self.bias.abs().max()) if self.bias.numel() else 0
        u_max = a if self.keep_u == 0 else steps * a
        wraps = u_max >= top
        if wraps:  # one wrap per step (models.py:161-170)
            u_max = steps * (a + 2 * top)
        clamps = steps * (u_max + bias_max) >= top
        v_max = top - 1 if clamps else steps * (u_max + bias_max)
        biggest = max(a + bias_max, u_max * odd_part(self.keep_u), v_max * odd_part(self.keep_v),
                      v_max + u_max + bias_max, v_max + self.vth + 1,
                      u_max + 2 * top if wraps else 0)
        dtype = torch.float32 if biggest < FLOAT32_EXACT else \
            torch.float64 if biggest < FLOAT64_EXACT else None
        return LifPlan(dtype, wraps, clamps)

    def window(self, plan: LifPlan, drive: torch.Tensor, fold: bool, u: torch.Tensor,
               w: torch.Tensor, spikes: torch.Tensor,
               state: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The steps of one window: ``drive [N, T, *inner]`` (:math:`2^a a_{in}`, plus the bias
        where ``fold``) -> ``spikes`` (int8), and ``state`` (``u``, ``v``) if given; ``u`` and
        ``w`` (:math:`-v`) are zeroed buffers of one step."""
        bias, top = self.bias.to(plan.dtype), self.top
        for t in range(drive.shape[1]):
            if fold:
                u = drive[:, t]
            else:
                u = decay_(u, self.keep_u, self.decay_bits).add_(drive[:, t])
                if plan.wraps:  # one wrap only, as Lava writes it (models.py:161-170)
                    u = torch.where(u > top, u - 2 * top, torch.where(u <= -top, u + 2 * top, u))
            decay_(w, self.keep_v, self.decay_bits).sub_(u)  # trunc is odd: decays -v as v
            if not fold:
                w.sub_(bias)
            if plan.clamps:  # saturates, models.py:176-186
                w.clamp_(-top + 1, top - 1)
            torch.lt(w, -self.vth, out=spikes[:, t])  # v > vth
            F.threshold_(w, -self.vth - 1, 0)  # v <- 0 where v > vth: integers, w >= -vth kept
            if state:
                state[0][:, t] = u - bias if fold else u
                state[1][:, t] = -w


def sum_inputs(ins: list[Current], rows: slice, out: torch.Tensor, tmp: torch.Tensor,
               bias: torch.Tensor | None, shift: int) -> torch.Tensor:
    r"""``out`` :math:`\leftarrow \sum_i 2^{a} y_i 2^{e_i}` (+ ``bias``) over ``rows`` of the
    inputs, in ``out``'s float type (converted first: mixed types take a slow path)."""
    for k, c in enumerate(ins):
        alpha = 2 ** (c.exp + shift)
        (tmp if k else out).copy_(c.y[rows].expand(out.shape))
        if k:
            out.add_(tmp, alpha=alpha)
        elif bias is not None:
            torch.add(bias, out, alpha=alpha, out=out)
        else:
            out.mul_(alpha)
    return out


@dataclass
class _Batch:
    """A run in progress: ``size`` samples, computed ``rows`` at a time; the chunk's layer
    outputs (a LIF's spikes ``[rows, T, *inner]`` int8, a synapse's or host op's
    :class:`~.emulator_synapses.Current`); every LIF's spikes (and state) for all samples."""

    size: int
    record_state: bool
    rows: slice = field(default_factory=lambda: slice(0))
    acts: dict[str, torch.Tensor | Current] = field(default_factory=dict)
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    u: dict[str, torch.Tensor] = field(default_factory=dict)
    v: dict[str, torch.Tensor] = field(default_factory=dict)
    payloads: dict[str, torch.Tensor] = field(default_factory=dict)

    def full(self, store: dict[str, torch.Tensor], name: str, shape: tuple[int, ...],
             dtype: type) -> torch.Tensor:
        """``store[name]`` (``[size, *shape]``, allocated on first use), at ``rows``."""
        if name not in store:  # numpy's memory (huge pages): fewer page faults than torch's
            store[name] = torch.from_numpy(np.empty((self.size, *shape), dtype=dtype))
        return store[name][self.rows]


def _numpy(store: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``[B, T, *inner]`` tensors -> ``[B, T, *shape]`` arrays (PyTorch layout, views)."""
    return {k: from_inner(x, x.ndim - 2).numpy() for k, x in store.items()}


def _synapse_key(la: ChipLayer) -> tuple:
    """What determines a synapse's output in window-local time (its delay does not)."""
    node = la.node
    geometry = () if isinstance(node, nir.Affine) else tuple(
        np.asarray(getattr(node, k)).tobytes() for k in ("stride", "padding", "dilation", "groups"))
    w = np.asarray(node.weight)
    return (type(node), la.inputs, node.metadata["loihi"]["weight_exp"], geometry, w.shape,
            w.tobytes())


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
        summed = summed_synapses(layers)
        for la in layers:
            node = la.node
            if isinstance(node, (nir.Affine, nir.Conv2d)):
                key = _synapse_key(la)
                if key in first:
                    self.copy_of[la.name] = first[key]
                    continue
                first[key] = la.name
                self.synapses[la.name] = (Dense(node, fp.weight_bits)
                                          if isinstance(node, nir.Affine)
                                          else Conv(la.name, node, fp.state_bits))
            elif isinstance(node, HostOpNode):
                self.host_ops[la.name] = HostOpRunner(Path(export_dir), node.metadata)
            elif isinstance(node, nir.LIF):
                syns = [by_name[i].node for i in summed[la.name]]
                shape, q = np.asarray(node.tau).shape, node.metadata["loihi"]
                mant = sum((to_lava_layout(synapse_bias_mant(s, node, fp.activation_shift))
                            for s in syns), np.zeros(shape, dtype=np.int64))  # back: an involution
                bias = to_inner(torch.as_tensor(mant.astype(np.int64) << int(q["bias_exp"])),
                                len(shape))
                self.lifs[la.name] = Lif(la.name, 2**fp.decay_bits - int(q["du"]) - 1,
                                         2**fp.decay_bits - int(q["dv"]),
                                         int(q["vth"]) << fp.threshold_shift,
                                         2 ** (fp.state_bits - 1), fp.decay_bits, bias)

    def run(self, mant: np.ndarray, record_state: bool = False) -> ChipRun:
        """Input mantissas ``[B, *in]`` (PyTorch layout) -> every LIF's spikes (and state)."""
        mant = torch.as_tensor(np.asarray(mant), dtype=torch.int64)
        batch = _Batch(len(mant), record_state)
        with torch.no_grad():
            for lo in range(0, len(mant), self.chunk):
                batch.rows = slice(lo, lo + self.chunk)
                m = mant[batch.rows]
                batch.acts = {INPUT: Current(to_inner(m, m.ndim - 1)[:, None].contiguous(), 0,
                                             int(m.abs().max()) if m.numel() else 0)}
                for la in self.layers:
                    HANDLERS[type(la.node)](self, la, batch)
        return ChipRun(_numpy({k: s.view(torch.uint8) for k, s in batch.spikes.items()}),
                       _numpy(batch.u), _numpy(batch.v), _numpy(batch.payloads))

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
        """A graded stream relay: the exact sum of its inputs, in int64 (a payload of at most
        ``graded_payload_bits`` bits, which the export checked statically: every partial sum
        is far below :math:`2^{63}`), delivered to each reader by an identity synapse."""
        ins = [batch.acts[i] for i in la.inputs]
        y = sum(c.y.to(torch.int64) << c.exp for c in ins)
        batch.acts[la.name] = Current(y, 0, sum(c.bound for c in ins))
        if batch.record_state:
            out = batch.full(batch.payloads, la.name, (self.time_steps, *y.shape[2:]), np.int64)
            out.copy_(y.expand(out.shape))

    def _lif(self, la: ChipLayer, batch: _Batch) -> None:
        lif, steps, shift = self.lifs[la.name], self.time_steps, self.fp.activation_shift
        ins = [batch.acts[i] for i in la.inputs]
        plan = lif.plan(sum(c.bound << shift for c in ins), steps)
        if plan.dtype != torch.float32 or plan.wraps:  # loose static bounds: the actual maxima
            plan = lif.plan(sum(c.actual() << shift for c in ins), steps)
        if plan.dtype is None:
            raise ExportError(f"LIF '{la.name}': its state can exceed 2^53, beyond Lava's int32 "
                              f"arithmetic; re-export with smaller weights or inputs")
        fold = lif.keep_u == 0 and not plan.wraps  # u is a_in itself: the bias joins it once
        inner = tuple(lif.bias.shape)
        spikes = batch.full(batch.spikes, la.name, (steps, *inner), np.int8)
        state = tuple(batch.full(x, la.name, (steps, *inner), np.int64)
                      for x in (batch.u, batch.v)) if batch.record_state else None
        # buffers of one chunk, reused: its state, input and spikes stay in the cache; an input
        # constant in time (the chip input) is held once
        b, held = len(spikes), max(c.y.shape[1] for c in ins)
        chunk = max(1, min(b, LIF_CHUNK // max(1, lif.bias.numel())))
        drive, tmp = (torch.empty((chunk, held, *inner), dtype=plan.dtype) for _ in range(2))
        u, w = (torch.empty((chunk, *inner), dtype=plan.dtype) for _ in range(2))
        bias = lif.bias.to(plan.dtype) if fold else None
        for lo in range(0, b, chunk):
            part = slice(lo, lo + chunk)
            n = len(range(b)[part])
            d = sum_inputs(ins, part, drive[:n], tmp[:n], bias, shift)
            lif.window(plan, d.expand(n, steps, *inner), fold, u[:n].zero_(), w[:n].zero_(),
                       spikes[part], state and (state[0][part], state[1][part]))
        batch.acts[la.name] = spikes


HANDLERS: dict[type, Callable] = {nir.LIF: Emulation._lif, nir.Affine: Emulation._synapse,
                                  nir.Conv2d: Emulation._synapse, HostOpNode: Emulation._host_op,
                                  nir.Scale: Emulation._relay}


class EmulatorBackend(Backend):
    """Lava's bit-accurate Loihi 2 arithmetic emulated in torch (``--target loihi`` exports)."""

    name = "loihi-emu"
    handlers: dict[type, Callable] = HANDLERS
    runs = {"loihi": "Lava's bit-accurate fixed point, emulated exactly in torch integers"}

    def __init__(self, export_dir) -> None:
        super().__init__(export_dir)
        fp = load_profile(self.manifest["hardware"]).fixed_point
        self.emulations = {side: Emulation(self.layers[side], self.time_steps, fp,
                                           g.metadata["synapse_delay_steps"], self.export_dir)
                           for side, g in self.graphs.items()}

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        mant = input_mantissa(current, self.graphs[side], side)
        return list(self.emulations[side].run(mant).spikes.values())
