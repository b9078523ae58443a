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
synapse's :math:`\lfloor (W s) 2^{e_w} \rfloor` (Lava's ``Dense``/``Sparse`` bit-accurate
models: weights clipped to 8 bits, mixed-sign weights without their lowest bit) and each host
op's quantized current. A convolution computes as Lava's ``Conv`` (``PyConvModelFixed``, which
the Lava backend's ``Conv`` and ``DelayConv`` reproduce): the raw kernel, no ``weight_exp`` (a
nonzero one is refused, as there), the sum wrapped to 24 signed bits. A synapse's bias is part
of its LIF's bias mantissa.

Timing: every synapse delays by one step plus its aligning ``delay``, and a LIF of depth
:math:`d` is read (and its state zeroed) in its window :math:`d .. d+T-1`
(:func:`~spikeclip_deploy.nirgraph.depths`), so in window-local time a synapse's input at
step :math:`t` is its source's spikes at step :math:`t`. The emulator therefore runs layer by
layer: a synapse's :math:`T` steps in one batched product, a LIF's steps in a loop. Every value
is an integer, held in int64, or in float32/float64 where each operation on it is exact (faster
on CPUs without 64-bit integer vector multiplies).
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
from ..nirgraph import INPUT, ChipLayer, HostOpNode, depths, pair
from .base import Backend, ChipRun, input_mantissa
from .host_runtime import HostOpRunner
from .lava import synapse_bias_mant, to_lava_layout

#: float32 sums integers exactly while every partial sum stays below 2^24
FLOAT32_EXACT = 2**24


def lava_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Integer weights as Lava's bit-accurate ``Dense``/``Sparse`` models use them
    (``clip_weights`` and ``truncate_weights``, lava/utils/weightutils.py:204-295, sign mode from
    ``determine_sign_mode``, :36-41): clipped to ``bits`` bits of magnitude, and a matrix of both
    signs loses each weight's lowest bit (``(w >> 1) << 1``)."""
    w = np.asarray(w).astype(np.int64)
    top = 2**bits - 1
    if w.min() >= 0:
        return np.clip(w, 0, top)
    if w.max() <= 0:
        return -np.clip(-w, 0, top)
    return (np.clip(w, -(2**bits), top) >> 1) << 1


def wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` wrapped to ``bits`` signed bits: Lava's ``signed_clamp`` (lava/proc/conv/utils.py:
    67-84), which ``PyConvModelFixed.clamp_precision`` applies to a convolution's sum."""
    half = 2 ** (bits - 1)
    return torch.remainder(x + half, 2 * half) - half


def shift(x: torch.Tensor, exp: int) -> torch.Tensor:
    """:math:`x 2^{e}` as Lava shifts: left for :math:`e > 0`, arithmetic (flooring) right
    otherwise (lava/proc/dense/models.py:103-107, lava/proc/lif/models.py:117-121)."""
    return x << exp if exp > 0 else x >> -exp


def truncating_decay(x: torch.Tensor, keep: int, bits: int) -> torch.Tensor:
    r""":math:`\mathrm{sign}(x k)\,(|x k| \gg D)`: the product truncated toward zero
    (lava/proc/lif/models.py:149-152 and :180-183). On float64 integers below :math:`2^{41}`:
    :math:`k 2^{-D}` and :math:`x k 2^{-D}` are exact (:math:`|x k| < 2^{53}`)."""
    if keep == 0:
        return torch.zeros_like(x)
    if keep == 2**bits:
        return x
    return torch.trunc(x * (keep / 2**bits))


@dataclass
class _Batch:
    """A run in progress: input mantissas, each layer's output ``[B, T, *shape]`` (spikes or
    current), the result."""

    mant: torch.Tensor
    record_state: bool
    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    out: ChipRun = field(default_factory=ChipRun)


class Emulation:
    """One encoder's chip graph, ready to emulate batches (weights prepared once)."""

    def __init__(self, layers: list[ChipLayer], time_steps: int, fp: FixedPoint,
                 synapse_delay: int, export_dir: Path | str, device: str = "cpu") -> None:
        depths(layers, synapse_delay)  # the paths into every LIF must be aligned, as on Lava
        self.layers, self.time_steps, self.fp = layers, time_steps, fp
        self.device = torch.device(device)
        by_name = {la.name: la for la in layers}
        self.weights: dict[str, torch.Tensor] = {}
        self.bias: dict[str, torch.Tensor] = {}
        self.host_ops: dict[str, HostOpRunner] = {}
        for la in layers:
            if isinstance(la.node, (nir.Affine, nir.Conv2d)):
                self.weights[la.name] = self._weights(la)
            elif isinstance(la.node, HostOpNode):
                self.host_ops[la.name] = HostOpRunner(Path(export_dir), la.node.metadata)
            elif isinstance(la.node, nir.LIF):
                syns = [by_name[i].node for i in la.inputs
                        if i != INPUT and not isinstance(by_name[i].node, HostOpNode)]
                shape = np.asarray(la.node.tau).shape
                mant = sum((to_lava_layout(synapse_bias_mant(s, la.node, fp.activation_shift))
                            for s in syns), np.zeros(shape, dtype=np.int64))  # back: an involution
                self.bias[la.name] = shift(torch.as_tensor(mant, dtype=torch.int64,
                                                           device=self.device),
                                           int(la.node.metadata["loihi"]["bias_exp"]))

    def _weights(self, la: ChipLayer) -> torch.Tensor:
        """Lava's integer weights (``Dense``'s clipped ones; ``Conv``'s kernel as it is), as
        float32 where every sum of them is exact, else float64."""
        node, exp = la.node, int(la.node.metadata["loihi"]["weight_exp"])
        if isinstance(node, nir.Affine):
            w = lava_weights(node.weight, self.fp.weight_bits)
        elif exp:
            raise ExportError(f"convolution '{la.name}' has weight_exp {exp}, which Lava's Conv "
                              f"ignores; re-export with a hardware profile whose weight_exp is 0")
        else:
            w = np.asarray(node.weight).astype(np.int64)
        fan_in = np.abs(w).reshape(len(w), -1).sum(1).max(initial=0)
        exact32 = fan_in < FLOAT32_EXACT and self.device.type == "cpu"  # no TF32 on the CPU
        return torch.as_tensor(w, dtype=torch.float32 if exact32 else torch.float64,
                               device=self.device)

    def run(self, mant: np.ndarray, record_state: bool = False) -> ChipRun:
        """Input mantissas ``[B, *in]`` (PyTorch layout) -> every LIF's spikes (and state)."""
        batch = _Batch(torch.as_tensor(np.asarray(mant), dtype=torch.int64, device=self.device),
                       record_state)
        with torch.no_grad():
            for la in self.layers:
                HANDLERS[type(la.node)](self, la, batch)
        return batch.out

    # -- handlers: each writes its layer's output ([B, T, *shape]) into ``batch.acts`` --------
    def _synapse(self, la: ChipLayer, batch: _Batch) -> None:
        (src,) = la.inputs
        s = batch.acts[src]
        b, t = s.shape[:2]
        w = self.weights[la.name]
        x = s.reshape(b * t, *s.shape[2:]).to(w.dtype)
        node = la.node
        if isinstance(node, nir.Affine):
            y = shift((x @ w.T).to(torch.int64), int(node.metadata["loihi"]["weight_exp"]))
        else:  # Conv's a_buf: 24 bits (lava/proc/conv/models.py:75-79)
            y = wrap(F.conv2d(x, w, stride=pair(node.stride), padding=pair(node.padding),
                              dilation=pair(node.dilation), groups=int(np.asarray(node.groups))
                              ).to(torch.int64), self.fp.state_bits)
        batch.acts[la.name] = y.reshape(b, t, *y.shape[1:])

    def _host_op(self, la: ChipLayer, batch: _Batch) -> None:
        """The op's ONNX function on every sample and step at once (it has no state), then the
        chip's input grid; no delay (it answers within the step)."""
        args = [batch.acts[i] for i in la.inputs]
        b, t = args[0].shape[:2]
        y = self.host_ops[la.name](*(a.reshape(b * t, *a.shape[2:]).cpu().numpy() for a in args))
        batch.acts[la.name] = torch.as_tensor(y, device=self.device).to(torch.int64).reshape(
            b, t, *y.shape[1:])

    def _lif(self, la: ChipLayer, batch: _Batch) -> None:
        fp, q = self.fp, la.node.metadata["loihi"]
        shape = tuple(np.asarray(la.node.tau).shape)
        a_in = sum(batch.mant[:, None] if i == INPUT else batch.acts[i] for i in la.inputs)
        b = len(batch.mant)
        a_in = (a_in << fp.activation_shift).to(torch.float64)  # exact: integers < 2^53
        top = 2 ** (fp.state_bits - 1)  # lava/proc/lif/models.py:101-102
        keep_u = 2**fp.decay_bits - (int(q["du"]) + 1)  # ds_offset 1: models.py:94, :145
        keep_v = 2**fp.decay_bits - int(q["dv"])  # dm_offset 0: models.py:95, :174
        vth = int(q["vth"]) << fp.threshold_shift  # models.py PyLifResetModelBitAcc.scale_threshold
        bias = self.bias[la.name].to(torch.float64)
        # |u| <= t max|a_in| after t steps (its decay only shrinks it): no wrap below that
        wraps = int(a_in.abs().max()) * self.time_steps >= top
        a_in = a_in.expand(b, self.time_steps, *shape)
        u = torch.zeros((b, *shape), dtype=torch.float64, device=self.device)  # zeroed at the
        v = torch.zeros_like(u)  # window start, as LIFReset does (models.py:434-436)
        spikes, us, vs = [], [], []
        for t in range(self.time_steps):
            u = truncating_decay(u, keep_u, fp.decay_bits) + a_in[:, t]
            if wraps:  # one wrap only, as Lava writes it (lava/proc/lif/models.py:161-170)
                u = torch.where(u > top, u - 2 * top, torch.where(u <= -top, u + 2 * top, u))
            v = (truncating_decay(v, keep_v, fp.decay_bits) + u).add_(bias).clamp_(
                -top + 1, top - 1)  # saturates, models.py:176-186
            s = v > vth
            v.masked_fill_(s, 0)
            spikes.append(s)
            if batch.record_state:
                us.append(u)
                vs.append(v)
        batch.acts[la.name] = torch.stack(spikes, 1).to(torch.uint8)
        batch.out.spikes[la.name] = batch.acts[la.name].cpu().numpy()
        if batch.record_state:
            batch.out.u[la.name] = torch.stack(us, 1).to(torch.int64).cpu().numpy()
            batch.out.v[la.name] = torch.stack(vs, 1).to(torch.int64).cpu().numpy()


HANDLERS: dict[type, Callable] = {nir.LIF: Emulation._lif, nir.Affine: Emulation._synapse,
                                  nir.Conv2d: Emulation._synapse, HostOpNode: Emulation._host_op}


class EmulatorBackend(Backend):
    """Lava's bit-accurate Loihi 2 arithmetic emulated in torch (``--target loihi`` exports)."""

    name = "loihi-emu"
    handlers: dict[type, Callable] = HANDLERS
    runs = {"loihi": "Lava's bit-accurate fixed point, emulated exactly in torch integers"}

    def __init__(self, export_dir, device: str = "cpu") -> None:
        super().__init__(export_dir)
        fp = load_profile(self.manifest["hardware"]).fixed_point
        self.emulations = {side: Emulation(self.layers[side], self.time_steps, fp,
                                           g.metadata["synapse_delay_steps"], self.export_dir,
                                           device)
                           for side, g in self.graphs.items()}

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        mant = input_mantissa(current, self.graphs[side], side)
        return list(self.emulations[side].run(mant).spikes.values())
