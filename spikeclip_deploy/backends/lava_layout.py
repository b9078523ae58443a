"""Lava's array layout, and a LIF's bias mantissas in it: shared by the Lava backend and the
emulator, which reproduces Lava's arithmetic (neither imports the other)."""
from __future__ import annotations

import nir
import numpy as np

from ..exchange.fixed_point import bias_mantissa


def to_lava_layout(a: np.ndarray) -> np.ndarray:
    """PyTorch ``[C, H, W]`` -> Lava ``(X, Y, C)`` = ``[W, H, C]``; 1-D unchanged."""
    return a.transpose(2, 1, 0) if a.ndim == 3 else a


def from_lava_layout(a: np.ndarray) -> np.ndarray:
    """Lava ``[W, H, C, T]`` -> ``[T, C, H, W]``; ``[N, T]`` -> ``[T, N]``."""
    return a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T


def synapse_bias_mant(syn: nir.NIRNode, lif: nir.LIF, shift: int) -> np.ndarray:
    """Per-neuron bias mantissa (Lava layout) of the LIF after ``syn``
    (:func:`~spikeclip_deploy.exchange.fixed_point.bias_mantissa`, ``shift`` the activation
    shift)."""
    m = bias_mantissa(syn.bias, int(lif.metadata["loihi"]["bias_exp"]), shift)
    shape = np.asarray(lif.tau).shape
    full = np.broadcast_to(m.reshape(-1, *([1] * (len(shape) - 1))), shape)
    return to_lava_layout(full).astype(np.int32)


def lava_positions(shape: tuple[int, ...]) -> np.ndarray:
    """For each neuron of a PyTorch-layout ``shape`` (its flat C-order index), its flat index
    in Lava's layout (:func:`to_lava_layout`)."""
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.int64)
    out[to_lava_layout(np.arange(n).reshape(shape)).ravel()] = np.arange(n)
    return out
