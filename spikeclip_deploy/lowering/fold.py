r"""BatchNorm folding, the one formula every user of it imports (the fold pass, the host stem,
quantization-aware training). Eval-mode BatchNorm after a weight layer equals the layer with

.. math::

    W' = W g, \qquad b' = \beta + (b - \mu) g, \qquad g = \gamma/\sqrt{\sigma^2+\epsilon}

per output channel. The functions take numpy arrays or torch tensors alike."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LoweringError


def bn_gain(gamma: Any, var: Any, eps: float) -> Any:
    r""":math:`g = \gamma/\sqrt{\sigma^2+\epsilon}` per channel."""
    return gamma / (var + eps) ** 0.5


def folded_bias(bias: Any, beta: Any, mean: Any, gain: Any) -> Any:
    r""":math:`\beta + (b-\mu) g` (:math:`b = 0` for a layer without bias)."""
    return beta + ((bias if bias is not None else 0.0) - mean) * gain


def fold_conv_bn(seq: nn.Module) -> tuple[np.ndarray, np.ndarray, nn.Conv2d]:
    """``Conv2d -> BatchNorm2d`` -> (weight, bias) of one conv with the same eval-mode output."""
    conv, bn = seq[0], seq[1]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise LoweringError(f"expected Conv2d + BatchNorm2d, got {type(conv).__name__} + {type(bn).__name__}")
    with torch.no_grad():
        gain = bn_gain(bn.weight, bn.running_var, bn.eps)
        w = conv.weight * gain.view(-1, 1, 1, 1)
        b = folded_bias(conv.bias, bn.bias, bn.running_mean, gain)
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32), conv
