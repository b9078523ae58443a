r"""Quantization-aware fine-tuning for the chip graphs, on the grid the Loihi export uses.

LIFs that read a common synapse, transitively (the readers of a residual stream), form a
scale group with one scale :math:`S`, as the export gives them
(:func:`~.quantize.quantize_layers`). Each chip synapse (Conv2d+BatchNorm2d, folded, or Linear)
feeding a group of time constant :math:`\tau` and threshold :math:`V_{th}` is trained through
the export's quantizer with a straight-through estimator:

.. math::

    v_{th} = \lfloor w_{max}\tau V_{th}/|W|_{max} \rfloor,\quad S = v_{th}/V_{th},\quad
    \hat W = \mathrm{clip}(\mathrm{round\_even}(S W/\tau))\,\tau/S,\quad
    \partial \hat W/\partial W := 1

(:math:`|W|_{max}` over all the group's synapses). BatchNorm statistics are frozen (eval mode) so
the folded weight the forward pass quantizes is the one the export folds. :func:`snap_to_grid`
then writes the quantized values back into the float parameters: the weights, and the biases
so that every LIF's summed bias becomes an exact bias mantissa of the export, a multiple of
:math:`2^{T-1}` chip units (for :math:`\tau = 2`: Lava's truncating decay then never truncates
within a sample), held a fraction of a unit below it (:func:`bias_on_grid`).
:func:`quantize_inputs` puts the host's input current and each host op's output on the chip's
input grids and gives the LIFs reading a host op the export's threshold. A max pool of a current
(``HostMaxPool``) is no host op here: the export computes it on chip by default
(``--current-pool chip``), so the LIF reading it is in the scale group of the synapses it pools,
whose maximum it receives exactly. The float model then spikes as the chip does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..checkpoint import input_grids, load_model, resolve_checkpoint, sidecar, write_card
from ..errors import ConfigError
from ..exchange.chip import FixedPoint
from ..exchange.nirgraph import HostOpNode
from ..hardware import ChipProfile, load_profile
from ..nn.chip_graph import HOST_INPUT, HostMaxPool, HostOp
from ..nn.encoders import SpikingEncoder
from ..nn.spikeclip import SpikeCLIP
from .fold import bn_gain, folded_bias
from .graph import trace
from .quantize import (bias_state, exact_decay_exp, host_input_quantization,
                       input_quantization, layer_threshold, shared_groups, split_bias)


@dataclass(frozen=True)
class Synapse:
    """A chip synapse: its weight module (Conv2d or Linear) and BatchNorm (or None)."""

    weighted: nn.Module
    bn: nn.BatchNorm2d | None


@dataclass(frozen=True)
class ScaleGroup:
    """LIFs sharing synapses, transitively, and every synapse that feeds them: one scale."""

    reads: Mapping[int, tuple[int, ...]]  # LIF (chip-graph index) -> the synapses it sums
    synapses: Mapping[int, Synapse]
    tau: float
    v_threshold: float

    def scale(self, fp: FixedPoint, dtype: torch.dtype) -> float:
        """The export's :math:`S` for the synapses' current weights (folded in ``dtype``)."""
        with torch.no_grad():
            peak = max(_folded(_weight(s.weighted).to(dtype), s.bn)[0].abs().max()
                       for s in self.synapses.values())
            return grid_scale(peak, self.tau, self.v_threshold, fp)


def _weight(module: nn.Module) -> torch.Tensor:
    """The float weight a module trains (under a parametrization: its original)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _synapse(graph: nn.Module, j: int, lif: int) -> Synapse:
    layer = graph[j] if j != HOST_INPUT else None
    if isinstance(layer, nn.Sequential) and len(layer) == 2 and \
            isinstance(layer[0], nn.Conv2d) and isinstance(layer[1], nn.BatchNorm2d):
        return Synapse(layer[0], layer[1])
    if isinstance(layer, nn.Linear):
        return Synapse(layer, None)
    what = "the host input" if layer is None else type(layer).__name__
    raise ConfigError(f"quantization-aware training supports LIFs fed by Conv2d+BatchNorm2d and "
                      f"Linear chip synapses (or by the host input or a host op alone); LIF {lif} "
                      f"reads {what}: this model cannot be deployed by the Loihi export either")


def _pooled(graph: nn.Module, ins: tuple[int, ...]) -> tuple[int, ...]:
    """What a LIF reading ``ins`` sums on chip: the synapses a max pool of their current reads
    (the pool on chip passes their maximum on), else ``ins``."""
    if len(ins) == 1 and ins[0] != HOST_INPUT and isinstance(graph[ins[0]], HostMaxPool):
        return graph.inputs[ins[0]]
    return ins


def scale_groups(encoder: SpikingEncoder) -> list[ScaleGroup]:
    """The scale groups of ``encoder``'s chip graph (the LIFs fed by chip synapses, through a
    max pool of their current or not; the LIF reading the host input and those reading any
    other host op are quantized by :func:`quantize_inputs`)."""
    graph = encoder.stack
    fed: dict[int, tuple[int, ...]] = {}
    synapses: dict[int, Synapse] = {}
    for i in graph.lif_indices():
        ins = _pooled(graph, graph.inputs[i])
        if ins == (HOST_INPUT,) or any(j != HOST_INPUT and isinstance(graph[j], HostOp)
                                       for j in ins):
            continue
        fed[i] = ins
        synapses.update({j: _synapse(graph, j, i) for j in ins})
    members: dict[int, list[int]] = {}
    for lif, first in shared_groups(fed).items():
        members.setdefault(first, []).append(lif)
    groups = []
    for first, lifs in members.items():
        params = {(graph[i].tau, graph[i].v_threshold) for i in lifs}
        if len(params) != 1:
            raise ConfigError(f"LIFs {lifs} share synapses but differ in (tau, V_th) {params}: "
                              f"a synapse's weights sit on one grid only if its readers share "
                              f"tau and V_th")
        (tau, v_th), = params
        groups.append(ScaleGroup({i: fed[i] for i in lifs},
                                 {j: synapses[j] for i in lifs for j in fed[i]}, tau, v_th))
    return groups


def _folded(w: torch.Tensor, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(``w`` with ``bn`` folded in, the per-output-channel gain shaped to divide it back out);
    computed in ``w``'s dtype."""
    shape = (-1, *([1] * (w.dim() - 1)))
    if bn is None:
        gain = torch.ones(w.shape[0], dtype=w.dtype, device=w.device).view(shape)
    else:
        gain = bn_gain(bn.weight, bn.running_var, bn.eps).to(w.dtype).view(shape)
    return w * gain, gain


def to_grid(folded: torch.Tensor, s: float, tau: float, fp: FixedPoint) -> torch.Tensor:
    r"""Folded weights on the grid of scale :math:`S`:
    :math:`\mathrm{clip}(\mathrm{round\_even}(S W/\tau))\,\tau/S`."""
    return torch.clamp(2.0 * torch.round(folded * (s / tau) / 2.0),
                       *fp.weight_mant_range) * (tau / s)


def grid_scale(peak: torch.Tensor, tau: float, v_threshold: float, fp: FixedPoint) -> float:
    """The export's scale :math:`S` for folded weights whose largest magnitude is ``peak``.
    When that weight rounds below the top mantissa (thresholds under ~254), the export would
    derive another :math:`S` from the result, so :math:`S` is re-derived until it is a fixed
    point."""
    vth = layer_threshold(float(peak), tau, v_threshold, fp)
    for _ in range(8):
        again = layer_threshold(float(to_grid(peak, vth / v_threshold, tau, fp).abs()), tau,
                                v_threshold, fp)
        if again == vth:
            break
        vth = again
    return vth / v_threshold


class FoldedFakeQuant(nn.Module):
    """Parametrization of a synapse weight: fold BN, quantize on its group's scale (STE),
    unfold."""

    def __init__(self, bn: nn.BatchNorm2d | None, group: ScaleGroup, fp: FixedPoint) -> None:
        super().__init__()
        self._bn, self._group = (bn,), (group,)  # references, not submodules
        self.fp = fp

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        group = self._group[0]
        folded, gain = _folded(w, self._bn[0])
        q = to_grid(folded, group.scale(self.fp, w.dtype), group.tau, self.fp)
        return (folded + (q - folded).detach()) / gain


def enable(encoder: SpikingEncoder, fp: FixedPoint) -> None:
    """Train ``encoder``'s chip synapses through the quantizer (idempotent)."""
    for group in scale_groups(encoder):
        for syn in group.synapses.values():
            if not parametrize.is_parametrized(syn.weighted, "weight"):
                parametrize.register_parametrization(syn.weighted, "weight",
                                                     FoldedFakeQuant(syn.bn, group, fp))


def bias_on_grid(raw: Mapping[int, np.ndarray], reads: Mapping[int, tuple[int, ...]],
                 tau: float, fp: FixedPoint, min_exp: int) -> dict[int, np.ndarray]:
    r"""Synapse biases in integer chip units (:math:`2^a S b/\tau`) -> snapped biases that every
    reader's sum turns into an exact bias mantissa. Each is rounded to a multiple of
    :math:`2^E`, :math:`E` the largest exponent any reader's summed bias needs
    (:func:`~.quantize.split_bias`, re-derived until it is a fixed point) and at least
    ``min_exp``, then lowered by :math:`\delta = 1/(2\tau m)` (:math:`m` the most synapses one
    reader sums). A reader's sum is then :math:`\Delta \le 1/(2\tau)` below a multiple of
    its :math:`2^{b_e}`, which the export rounds to; the float membrane stays
    :math:`\Delta \sum_k (1-1/\tau)^k < 1/2` unit below the chip's integer one, so where the
    chip's membrane lands exactly on the threshold (no spike: the test is strict), the float
    model's does not spike either, whatever its round-off below that margin."""
    exp = min_exp
    while True:
        q = {k: 2.0**exp * np.round(r / 2.0**exp) for k, r in raw.items()}
        need = max(split_bias(sum(q[j] for j in syns), fp)[1] for syns in reads.values())
        if need <= exp:
            break
        exp = need
    delta = 1.0 / (2.0 * tau * max(len(syns) for syns in reads.values()))
    return {k: v - delta for k, v in q.items()}


def quantize_inputs(model: nn.Module, fp: FixedPoint) -> None:
    """Put every spiking encoder's host currents on the grids the Loihi export feeds the chip:
    the input current (the first LIF's bias), and each host op's output, which the LIF reading
    it takes at its input port; that LIF's threshold becomes the export's, :math:`v_{th}/S`
    (:func:`~.quantize.host_input_quantization`)."""
    for side in ("image", "text"):
        encoder = getattr(model, side)
        if not isinstance(encoder, SpikingEncoder):
            raise ConfigError(f"{type(encoder).__name__} is not a spiking chip encoder")
        first = encoder.stack[0]
        q = input_quantization(first.tau, first.v_threshold, fp)
        encoder.input_grid.grid = (q["input_scale"], *map(float, q["bias_mant_range"]))
        if any(isinstance(m, HostOp) for m in encoder.stack):
            probe = copy.deepcopy(encoder).cpu().eval()  # the trace moves no statistics
            with torch.no_grad():
                graph = trace(probe, side, probe.current(model.example_input(side).cpu()))
            for op in (la for la in graph.layers if isinstance(la.node, HostOpNode)
                       and la.node.op != HostMaxPool.__name__):  # a pool runs on chip
                for reader in graph.consumers(op.name):
                    lif = encoder.get_submodule(reader.source)
                    vth, q = host_input_quantization(op.node, lif.tau, lif.v_threshold, fp)
                    encoder.get_submodule(op.source).output_grid.grid = (
                        q["scale"], -float(q["limit"]), float(q["limit"]))
                    lif.v_threshold = vth / (q["scale"] * lif.tau)


def upgrade_checkpoint(name_or_path: str) -> Path | None:
    """Store in a quantization-aware checkpoint of an earlier version, whose card holds no input
    grids, the grids and thresholds that version recomputed at every load (:func:`quantize_inputs`
    on its hardware profile's fixed point), so it loads without the lowering; the weights are
    untouched. Returns the card written, or None when it already holds them."""
    path = resolve_checkpoint(name_or_path)
    model, card, _ = load_model(str(path), lambda m, hardware: quantize_inputs(
        m, load_profile(hardware).fixed_point))
    if "input_grids" in card:
        return None
    write_card(path, {**card, "input_grids": input_grids(model)})
    return sidecar(path)


def check_supported(model: SpikeCLIP, profile: ChipProfile) -> None:
    """Raise a :class:`ConfigError` before training if quantization-aware training cannot
    apply to either encoder's chip graph."""
    ann = model.cfg.ann_reason()
    if ann:
        raise ConfigError(f"--qat-epochs: {ann}; quantization-aware training puts a spiking "
                          f"model on a chip's grid: train the ANN without --qat-epochs")
    for side in ("image", "text"):
        scale_groups(getattr(model, side))


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (frozen running statistics)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def snap_to_grid(encoder: SpikingEncoder, fp: FixedPoint) -> None:
    """Remove the parametrizations and write the quantized folded weights and biases back, so
    that folding then quantizing again reproduces the same integers."""
    act = 2 ** fp.activation_shift
    for group in scale_groups(encoder):
        for syn in group.synapses.values():
            if parametrize.is_parametrized(syn.weighted, "weight"):
                parametrize.remove_parametrizations(syn.weighted, "weight",
                                                    leave_parametrized=False)
            if syn.bn is None and syn.weighted.bias is None:
                raise ConfigError("a chip Linear without bias cannot hold a quantized bias; "
                                  "build it with bias=True")
        s = group.scale(fp, torch.float64)  # float64, so snapping twice is bit-identical
        folded = {j: _folded(syn.weighted.weight.double(), syn.bn)
                  for j, syn in group.synapses.items()}
        own = {j: syn.weighted.bias.double() if syn.weighted.bias is not None else 0.0
               for j, syn in group.synapses.items()}
        raw = {j: bias_state((own[j] if syn.bn is None else folded_bias(
                   own[j], syn.bn.bias.double(), syn.bn.running_mean.double(),
                   folded[j][1].flatten())).cpu().numpy(), s, group.tau, fp)
               for j, syn in group.synapses.items()}
        snapped = bias_on_grid(raw, group.reads, group.tau, fp,
                               exact_decay_exp(group.tau, encoder.time_steps, fp))
        for j, syn in group.synapses.items():
            w, (w_folded, gain) = syn.weighted.weight, folded[j]
            syn.weighted.weight.copy_((to_grid(w_folded, s, group.tau, fp) / gain).to(w.dtype))
            b_q = torch.from_numpy(snapped[j] * group.tau / (act * s)).to(w.device)
            if syn.bn is None:
                syn.weighted.bias.copy_(b_q.to(w.dtype))
            else:  # the folded bias beta + (b0 - mean) gain becomes b_q
                syn.bn.bias.copy_((b_q - (own[j] - syn.bn.running_mean.double()) * gain.flatten())
                                  .to(syn.bn.bias.dtype))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with parametrized weights under their plain names (the float originals),
    so a training state saved mid-QAT loads into an unparametrized model."""
    return {k.replace("parametrizations.weight.original", "weight"): v
            for k, v in model.state_dict().items()}


def grid_error(encoder: SpikingEncoder, fp: FixedPoint) -> float:
    """Largest distance of a folded weight from its group's quantization grid, in mantissa
    units (0 after :func:`snap_to_grid`, up to float round-off)."""
    worst = 0.0
    with torch.no_grad():
        for group in scale_groups(encoder):
            s = group.scale(fp, torch.float64)
            for syn in group.synapses.values():
                folded, _ = _folded(syn.weighted.weight.double(), syn.bn)
                q = to_grid(folded, s, group.tau, fp)
                worst = max(worst, float((folded - q).abs().max()) * s / group.tau)
    return worst
