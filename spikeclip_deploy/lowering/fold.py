"""Fold BatchNorm into the preceding conv/linear and lower the chip stack to float NIR nodes."""
from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from ..errors import LoweringError
from ..nn.encoders import SpikingEncoder
from ..nn.lif import MultiStepLIF


def fold_conv_bn(seq: nn.Module) -> tuple[np.ndarray, np.ndarray, nn.Conv2d]:
    """``Conv2d -> BatchNorm2d`` -> (weight, bias) of one conv with the same eval-mode output:
    :math:`W' = W \\gamma/\\sqrt{\\sigma^2+\\epsilon}`, :math:`b' = \\beta + (b-\\mu)\\gamma/\\sqrt{\\sigma^2+\\epsilon}`."""
    conv, bn = seq[0], seq[1]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise LoweringError(f"expected Conv2d + BatchNorm2d, got {type(conv).__name__} + {type(bn).__name__}")
    with torch.no_grad():
        w = conv.weight * bn_gain(bn).view(-1, 1, 1, 1)
        b = folded_bias(conv.bias, bn)
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32), conv


def bn_gain(bn: nn.BatchNorm2d) -> torch.Tensor:
    r""":math:`\gamma/\sqrt{\sigma^2+\epsilon}` per channel (eval-mode statistics)."""
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def folded_bias(bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> torch.Tensor:
    r""":math:`\beta + (b-\mu)\gamma/\sqrt{\sigma^2+\epsilon}` (:math:`b = 0` without a bias)."""
    b0 = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return bn.bias + (b0 - bn.running_mean) * bn_gain(bn)


def _lif(layer: MultiStepLIF, shape: tuple[int, ...]) -> nir.LIF:
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    return nir.LIF(tau=full(layer.tau), r=full(1.0), v_leak=full(0.0),
                   v_threshold=full(layer.v_threshold), v_reset=full(0.0))


def lower_stack(encoder: SpikingEncoder, input_shape: tuple[int, ...]) -> list[tuple[str, nir.NIRNode]]:
    """The chip stack as an ordered chain ``[(name, node)]`` of float NIR nodes (BN folded).

    ``input_shape`` is the shape of one sample's input current (``[C, H, W]`` or ``[N]``).
    """
    chain: list[tuple[str, nir.NIRNode]] = []
    shape = tuple(input_shape)
    n_lif = n_syn = 0
    for layer in encoder.stack:
        if isinstance(layer, MultiStepLIF):
            chain.append((f"lif{n_lif}", _lif(layer, shape)))
            n_lif += 1
        elif isinstance(layer, nn.Sequential) and isinstance(layer[0], nn.Conv2d):
            w, b, conv = fold_conv_bn(layer)
            node = nir.Conv2d(input_shape=shape[1:], weight=w, stride=conv.stride,
                              padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                              bias=b)
            chain.append((f"conv{n_syn}", node))
            with torch.no_grad():
                out = conv(torch.zeros(1, *shape))
            shape = tuple(out.shape[1:])
            n_syn += 1
        elif isinstance(layer, nn.Linear):
            w = layer.weight.detach().numpy().astype(np.float32)
            b = (layer.bias.detach().numpy() if layer.bias is not None
                 else np.zeros(w.shape[0])).astype(np.float32)
            chain.append((f"dense{n_syn}", nir.Affine(weight=w, bias=b)))
            shape = (w.shape[0],)
            n_syn += 1
        else:
            raise LoweringError(f"cannot lower chip layer {type(layer).__name__}: only LIF, "
                                f"Conv2d+BatchNorm2d and Linear run on chip")
    return chain
