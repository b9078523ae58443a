r"""Quantization-aware fine-tuning for the chip stacks, on the grid the Loihi export uses.

Each chip synapse (Conv2d+BatchNorm2d, folded, or Linear) followed by a LIF of time constant
:math:`\tau` and threshold :math:`V_{th}` is trained through the export's quantizer
(:mod:`..lowering.quantize`) with a straight-through estimator:

.. math::

    v_{th} = \lfloor w_{max}\tau V_{th}/|W|_{max} \rfloor,\quad S = v_{th}/V_{th},\quad
    \hat W = \mathrm{clip}(\mathrm{round\_even}(S W/\tau))\,\tau/S,\quad
    \partial \hat W/\partial W := 1

BatchNorm statistics are frozen (eval mode) so the folded weight the forward pass quantizes is
the one the export folds. :func:`snap_to_grid` then writes the quantized values back into the
float parameters (weights and biases), and :func:`quantize_inputs` puts the host's input
current on the chip's input grid (``SpikingEncoder.input_grid``), so the float model *is* the
integer model up to the chip's truncating decay.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..hardware import ChipProfile, FixedPoint
from ..nn.encoders import SpikingEncoder
from ..nn.lif import MultiStepLIF
from .fold import bn_gain, folded_bias
from .quantize import input_quantization, layer_threshold, quantize_bias


def _synapses(encoder: SpikingEncoder) -> Iterator[tuple[nn.Module, nn.BatchNorm2d | None, MultiStepLIF]]:
    """(weight module, its BatchNorm or None, the LIF it drives) for every chip synapse of the
    encoder's chip graph."""
    graph = encoder.stack
    for i, syn in enumerate(graph):
        if isinstance(syn, MultiStepLIF):
            continue
        readers = graph.consumers(i)
        drives = [graph[j] for j in readers]
        if len(drives) != 1 or not isinstance(drives[0], MultiStepLIF) or \
                len(graph.inputs[readers[0]]) != 1:
            raise ConfigError(f"quantization-aware training needs every chip synapse to drive "
                              f"exactly one LIF that reads nothing else (fan-in shares one "
                              f"scale across synapses: not supported yet); layer {i} "
                              f"({type(syn).__name__}) drives {readers}")
        if isinstance(syn, nn.Sequential) and len(syn) == 2 and isinstance(syn[0], nn.Conv2d) \
                and isinstance(syn[1], nn.BatchNorm2d):
            yield syn[0], syn[1], drives[0]
        elif isinstance(syn, nn.Linear):
            yield syn, None, drives[0]
        else:
            raise ConfigError(f"quantization-aware training supports Conv2d+BatchNorm2d and Linear "
                              f"chip synapses, not {type(syn).__name__}; this model cannot be "
                              f"deployed by the Loihi export either")


def _folded(w: torch.Tensor, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(``w`` with ``bn`` folded in, the per-output-channel gain shaped to divide it back out);
    computed in ``w``'s dtype."""
    shape = (-1, *([1] * (w.dim() - 1)))
    if bn is None:
        gain = torch.ones(w.shape[0], dtype=w.dtype, device=w.device).view(shape)
    else:
        gain = bn_gain(bn.weight, bn.running_var, bn.eps).to(w.dtype).view(shape)
    return w * gain, gain


def on_grid(folded: torch.Tensor, tau: float, v_threshold: float, fp: FixedPoint
            ) -> tuple[torch.Tensor, float]:
    """(folded weights on the export's grid, their scale :math:`S`). When the largest weight
    rounds below the top mantissa (thresholds under ~254), the export would derive another
    :math:`S` from the result, so :math:`S` is re-derived until it is a fixed point."""
    lo, hi = fp.weight_mant_range
    vth = layer_threshold(float(folded.detach().abs().max()), tau, v_threshold, fp)
    for _ in range(8):
        s = vth / v_threshold
        q = torch.clamp(2.0 * torch.round(folded * (s / tau) / 2.0), lo, hi) * (tau / s)
        again = layer_threshold(float(q.detach().abs().max()), tau, v_threshold, fp)
        if again == vth:
            break
        vth = again
    return q, s


class FoldedFakeQuant(nn.Module):
    """Parametrization of a synapse weight: fold BN, quantize (STE), unfold."""

    def __init__(self, bn: nn.BatchNorm2d | None, tau: float, v_threshold: float,
                 fp: FixedPoint) -> None:
        super().__init__()
        self._bn = (bn,)  # a reference, not a submodule: its state stays where it is
        self.tau, self.v_threshold, self.fp = tau, v_threshold, fp

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        folded, gain = _folded(w, self._bn[0])
        q, _ = on_grid(folded, self.tau, self.v_threshold, self.fp)
        return (folded + (q - folded).detach()) / gain


def enable(encoder: SpikingEncoder, fp: FixedPoint) -> None:
    """Train ``encoder``'s chip synapses through the quantizer (idempotent)."""
    for weighted, bn, lif in _synapses(encoder):
        if not parametrize.is_parametrized(weighted, "weight"):
            parametrize.register_parametrization(
                weighted, "weight", FoldedFakeQuant(bn, lif.tau, lif.v_threshold, fp))


def quantize_inputs(model: nn.Module, fp: FixedPoint) -> None:
    """Round every spiking encoder's host current to the grid the export feeds the chip."""
    for encoder in (model.image, model.text):
        if not isinstance(encoder, SpikingEncoder):
            raise ConfigError(f"{type(encoder).__name__} is not a spiking chip encoder")
        first = encoder.stack[0]
        q = input_quantization(first.tau, first.v_threshold, fp)
        encoder.input_grid.grid = (q["input_scale"], *map(float, q["bias_mant_range"]))


def check_supported(model: nn.Module, profile: ChipProfile) -> None:
    """Raise a :class:`ConfigError` before training if quantization-aware training cannot
    apply: in both encoders every chip synapse must drive one LIF that reads nothing else."""
    for side in ("image", "text"):
        encoder = getattr(model, side)
        if not isinstance(encoder, SpikingEncoder):
            raise ConfigError(f"the {side} encoder ({type(encoder).__name__}) is not a spiking "
                              f"chip chain; quantization-aware training and the Loihi export "
                              f"need one")
        list(_synapses(encoder))


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
    for weighted, bn, lif in _synapses(encoder):
        if parametrize.is_parametrized(weighted, "weight"):
            parametrize.remove_parametrizations(weighted, "weight", leave_parametrized=False)
        if bn is None and weighted.bias is None:
            raise ConfigError("a chip Linear without bias cannot hold a quantized bias; "
                              "build it with bias=True")
        w = weighted.weight
        folded, gain_w = _folded(w.double(), bn)  # float64, so snapping twice is bit-identical
        gain = gain_w.flatten()
        b0 = weighted.bias.double() if weighted.bias is not None else 0.0
        bias = b0 if bn is None else folded_bias(b0, bn.bias.double(), bn.running_mean.double(), gain)
        w_q, s = on_grid(folded, lif.tau, lif.v_threshold, fp)
        mant, exp = quantize_bias(bias.cpu().numpy(), s, lif.tau, fp)
        b_q = torch.from_numpy(mant * 2.0**exp / act * lif.tau / s).to(w.device)
        weighted.weight.copy_((w_q / gain_w).to(w.dtype))
        if bn is None:
            weighted.bias.copy_(b_q.to(w.dtype))
        else:
            bn.bias.copy_((b_q - (b0 - bn.running_mean.double()) * gain).to(bn.bias.dtype))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with parametrized weights under their plain names (the float originals),
    so a training state saved mid-QAT loads into an unparametrized model."""
    return {k.replace("parametrizations.weight.original", "weight"): v
            for k, v in model.state_dict().items()}


def grid_error(encoder: SpikingEncoder, fp: FixedPoint) -> float:
    """Largest distance of a folded weight from the quantization grid, in mantissa units
    (0 after :func:`snap_to_grid`, up to float round-off)."""
    worst = 0.0
    with torch.no_grad():
        for weighted, bn, lif in _synapses(encoder):
            folded, _ = _folded(weighted.weight.double(), bn)
            q, s = on_grid(folded, lif.tau, lif.v_threshold, fp)
            worst = max(worst, float((folded - q).abs().max()) * s / lif.tau)
    return worst
