r"""The chip part of an encoder as a graph of layers: what is traced and lowered to the chip.

Layers are LIF neurons (:class:`~.lif.MultiStepLIF`), synapses (``Conv2d + BatchNorm2d``,
``Linear``) and spike-domain pooling (:class:`SpikeMaxPool`). Layer ``i`` reads the **sum** of
the outputs of ``inputs[i]`` (``-1`` is the host's input current): several synapse layers
feeding one LIF is fan-in, which is how a real-valued residual stream
:math:`x \leftarrow x + f(x)` reaches the chip: every LIF that reads :math:`x` receives the
synapses of every term summed into :math:`x` so far. All paths are evaluated within the same
time step (the float semantics; the chip's one-step synaptic delay is the lowering's concern).
A chain is the graph whose layer ``i`` reads layer ``i - 1``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .lif import MultiStepLIF

HOST_INPUT = -1


class SpikeMaxPool(nn.Module):
    r"""Max-pooling of binary spikes: the OR over each window,
    :math:`s'_{t} = \max_{w} s_{t,w}` (on chip: a sum-pool synapse into a LIF whose threshold
    is below one spike). Stands after a LIF, where real-valued max-pooling cannot run on chip."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class ChipGraph(nn.ModuleList):
    """``self[i]`` applied to the sum of the outputs of ``inputs[i]``, in list order (a
    topological order). A ModuleList, so its tensors are named ``N.…`` as a plain layer list's."""

    def __init__(self, layers: Sequence[nn.Module],
                 inputs: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__(layers)
        if inputs is None:  # a chain
            inputs = [(i - 1,) for i in range(len(layers))]
        self.inputs = tuple(tuple(int(j) for j in ins) for ins in inputs)
        self._check()

    def _check(self) -> None:
        if len(self.inputs) != len(self):
            raise ValueError(f"{len(self)} layers but {len(self.inputs)} input lists")
        for i, ins in enumerate(self.inputs):
            if not ins or any(not HOST_INPUT <= j < i for j in ins):
                raise ValueError(f"layer {i} reads {ins}: inputs must be earlier layers "
                                 f"(or {HOST_INPUT}, the host current)")
        if not isinstance(self[-1], MultiStepLIF):
            raise ValueError("the chip graph must end in a LIF layer (its spikes leave the chip)")

    def forward(self, current: torch.Tensor, time_steps: int) -> list[torch.Tensor]:
        """Constant host current ``[B, ...]`` -> every layer's output ``[T, B, ...]``."""
        host = current.unsqueeze(0).expand(time_steps, *current.shape)
        outs: list[torch.Tensor] = []
        for layer, ins in zip(self, self.inputs):
            x = outs[ins[0]] if ins[0] != HOST_INPUT else host
            for j in ins[1:]:
                x = x + (outs[j] if j != HOST_INPUT else host)
            if isinstance(layer, MultiStepLIF):
                outs.append(layer(x))
            else:  # stateless: fold time into the batch
                t, b = x.shape[:2]
                y = layer(x.flatten(0, 1))
                outs.append(y.reshape(t, b, *y.shape[1:]))
        return outs

    def consumers(self, i: int) -> list[int]:
        """The layers that read layer ``i``'s output."""
        return [j for j, ins in enumerate(self.inputs) if i in ins]

    def lif_indices(self) -> list[int]:
        return [i for i, layer in enumerate(self) if isinstance(layer, MultiStepLIF)]
