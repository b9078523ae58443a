r"""The spiking part of an encoder as a graph of layers: what is traced and lowered.

Layers are LIF neurons (:class:`~.lif.MultiStepLIF`), synapses (``Conv2d + BatchNorm2d``,
``Linear``), spike-domain pooling (:class:`SpikeMaxPool`) and host operations
(:class:`HostOp`: what no neuro-core computes, run on the host between chip subgraphs). Layer
``i`` reads the **sum** of the outputs of ``inputs[i]`` (``-1`` is the host's input current);
a host op instead takes them as separate arguments, in order. Several synapse layers feeding one
LIF is fan-in, which is how a real-valued residual stream :math:`x \leftarrow x + f(x)` reaches
the chip: every LIF that reads :math:`x` receives the synapses of every term summed into
:math:`x` so far. All paths are evaluated within the same time step (the float semantics; the
chip's one-step synaptic delay is the lowering's concern). A chain is the graph whose layer
``i`` reads layer ``i - 1``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import NEURONS
from .lif import MultiStepLIF, compiled_inference

HOST_INPUT = -1


class SpikeMaxPool(nn.Module):
    r"""Max-pooling of binary spikes: the OR over each window,
    :math:`s'_{t} = \max_{w} s_{t,w}` (on chip: a sum-pool synapse into a LIF whose threshold
    is below one spike). Stands after a LIF, where real-valued max-pooling cannot run on chip.
    Inference on a contiguous CPU float tensor runs one compiled pass (:mod:`.pool_kernel`),
    the same values as torch's."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p = self.kernel_size, self.stride, self.padding
        if (torch.is_grad_enabled() and x.requires_grad) or x.dim() != 4 or 2 * p > k \
                or not x.is_contiguous() or not compiled_inference(x):
            return F.max_pool2d(x, k, s, p)
        from .pool_kernel import max_pool_planes  # numba: only where a model runs inference

        n, c, h, w = x.shape
        out = x.new_empty(n, c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        max_pool_planes(x.reshape(n * c, h, w).numpy(), k, s, p,
                        out.reshape(n * c, *out.shape[2:]).numpy())
        return out


class InputGrid(nn.Module):
    r"""A chip's grid for a current the host sends it (the input current, a host op's output),
    once set (quantization-aware models): :math:`x \mapsto \mathrm{clip}(\mathrm{round}(x s),
    lo, hi)/s`, straight-through gradient. Holds no tensors, so checkpoints do not change;
    ``grid`` is ``(s, lo, hi)`` or ``None``."""

    def __init__(self) -> None:
        super().__init__()
        self.grid: tuple[float, float, float] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is None:
            return x
        scale, lo, hi = self.grid
        q = torch.clamp(torch.round(x * scale), lo, hi) / scale
        return x + (q - x).detach() if x.requires_grad else q


class HostOp(nn.Module):
    """An operation that no neuro-core computes, run on the host between chip subgraphs:
    ``forward(*inputs)``, each ``[N, ...]`` (time folded into the batch), one output current
    ``[N, ...]`` for the LIFs that read it, put on ``output_grid`` (the chip's input grid for
    it, once set). ``grid``: every output is a multiple of it (exact on a chip whose input
    scale is a multiple of ``1/grid``), or None. ``reason``: why the host."""

    reason: str = ""
    grid: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.output_grid = InputGrid()

    def bound(self, in_shapes: Sequence[tuple[int, ...]], in_bounds: Sequence[float]) -> float:
        """Largest output magnitude, given the inputs' shapes and largest magnitudes."""
        raise NotImplementedError

    def macs(self, in_shapes: Sequence[tuple[int, ...]]) -> int:
        """Multiply-accumulates (or comparisons) of one evaluation on one sample."""
        raise NotImplementedError

    def params(self) -> dict[str, int]:
        """What a lowering needs to know of the op beyond its shapes (none by default)."""
        return {}


class SpikeAttention(HostOp):
    r"""Spiking self-attention's product of activations, per head :math:`h`:
    :math:`Y_h = c\,(Q_h K_h^\top) V_h` over the :math:`N` tokens of a ``[C, H, W]`` grid
    (:math:`d = C/\text{heads}` channels per head, no softmax). :math:`Q, K, V` are spikes, so
    :math:`Y` is a multiple of :math:`c` and at most :math:`c\,d\,N`."""

    reason = ("spiking self-attention multiplies two activations (Q K^T V): a neuro-core "
              "synapse multiplies a fixed weight by a spike")

    def __init__(self, heads: int, scale: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, scale
        self.grid = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, c, h, w = q.shape

        def split(z: torch.Tensor) -> torch.Tensor:  # [N, heads, tokens, d]
            return z.reshape(n, self.heads, c // self.heads, h * w).transpose(-1, -2)
        y = (split(q) @ split(k).transpose(-1, -2)) @ split(v) * self.scale
        return y.transpose(-1, -2).reshape(n, c, h, w)

    def bound(self, in_shapes, in_bounds) -> float:
        c, h, w = in_shapes[0]
        return self.scale * (c // self.heads) * h * w * float(np.prod(in_bounds))

    def macs(self, in_shapes) -> int:
        c, h, w = in_shapes[0]
        return 2 * (h * w) ** 2 * c  # Q K^T, then (Q K^T) V

    def params(self) -> dict[str, int]:
        return {"heads": self.heads}


class HostMaxPool(HostOp):
    """Max-pooling of a real-valued current (before a LIF). A chip export computes it on
    neuro-cores (levels of graded ReLU neurons, :mod:`spikeclip_deploy.exchange.current_pool`);
    with ``export --current-pool host`` the host does."""

    reason = ("max-pooling of a real-valued current before a LIF, on the host as asked "
              "(export --current-pool chip puts it on neuro-cores as levels of graded ReLU "
              "neurons)")

    def __init__(self, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def bound(self, in_shapes, in_bounds) -> float:
        return float(in_bounds[0])

    def macs(self, in_shapes) -> int:
        c, h, w = in_shapes[0]
        out = [(n + 2 * self.padding - self.kernel_size) // self.stride + 1 for n in (h, w)]
        return c * out[0] * out[1] * self.kernel_size**2

    def params(self) -> dict[str, int]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


#: layers without state over time (applied to each step alone)
STATELESS = (nn.Sequential, nn.Conv2d, nn.Linear, SpikeMaxPool, HostOp)


def is_neuron(layer: nn.Module) -> bool:
    """A neuron layer: reads the whole ``[T, B, ...]`` sequence (a :class:`~.lif.MultiStepLIF`,
    a drop-in multi-step neuron such as a benchmark's spikingjelly node, or an ANN twin's
    ``ReLU``)."""
    return not isinstance(layer, STATELESS)


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
            if isinstance(self[i], HostOp) and HOST_INPUT in ins:
                raise ValueError(f"host op {i} reads the host input: fold it into the encoder")
        if not is_neuron(self[-1]):
            raise ValueError("the chip graph must end in a LIF layer (its spikes leave the chip)")

    def forward(self, current: torch.Tensor, time_steps: int,
                counts: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Constant host current ``[B, ...]`` -> every layer's output ``[T, B, ...]``; with a
        dict ``counts`` (inference), each LIF layer's spike counts over the steps ``[B, ...]``
        go there under its index where its compiled pass counted them
        (:meth:`~.lif.MultiStepLIF.spikes_and_counts`)."""
        host = current.unsqueeze(0).expand(time_steps, *current.shape)
        outs: list[torch.Tensor] = []
        sums: dict[tuple[int, ...], torch.Tensor] | None = (
            None if torch.is_grad_enabled() else {})
        for layer, ins in zip(self, self.inputs):
            if isinstance(layer, HostOp):
                t, b = outs[ins[0]].shape[:2]
                y = layer.output_grid(layer(*(outs[j].flatten(0, 1) for j in ins)))
                outs.append(y.reshape(t, b, *y.shape[1:]))
                continue
            x = _fan_in(ins, outs, host, sums)
            if counts is not None and isinstance(layer, MultiStepLIF) and layer.fused:
                y, c = layer.spikes_and_counts(x)
                if c is not None:
                    counts[len(outs)] = c
                outs.append(y)
            elif is_neuron(layer):
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
        return [i for i, layer in enumerate(self) if is_neuron(layer)]

    def spike_indices(self) -> list[int]:
        """The layers the lowered graph has a LIF for, in order: every neuron and every spike
        max-pool (its OR LIF)."""
        return [i for i, layer in enumerate(self)
                if is_neuron(layer) or isinstance(layer, SpikeMaxPool)]


def _fan_in(ins: tuple[int, ...], outs: list[torch.Tensor], host: torch.Tensor,
            sums: dict[tuple[int, ...], torch.Tensor] | None) -> torch.Tensor:
    """The sum of the outputs of layers ``ins``, added left to right. With ``sums`` (without
    gradients), every partial sum is kept there under its layers, and a later fan-in whose
    inputs begin with the same layers starts from it: the same additions in the same order, so
    the same values (a residual stream's readers each add one term more than the last)."""
    def out(j: int) -> torch.Tensor:
        return outs[j] if j != HOST_INPUT else host

    k = next((m for m in range(len(ins), 1, -1) if ins[:m] in sums), 1) if sums else 1
    x = sums[ins[:k]] if k > 1 else out(ins[0])
    for m in range(k, len(ins)):
        x = x + out(ins[m])
        if sums is not None:
            sums[ins[:m + 1]] = x
    return x


class GraphBuilder:
    """Builds a :class:`ChipGraph` layer by layer: :meth:`add` returns the new layer's index,
    which later layers list among the layers they read. ``neuron``: ``lif``, or ``relu`` for an
    ANN twin of the same graph (run with one time step; :class:`SpikeMaxPool` then max-pools
    ReLU outputs)."""

    def __init__(self, tau: float, v_threshold: float, neuron: str = "lif") -> None:
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        self.tau, self.v_threshold, self.neuron = tau, v_threshold, neuron
        self.layers: list[nn.Module] = []
        self.inputs: list[tuple[int, ...]] = []

    def add(self, layer: nn.Module, *reads: int) -> int:
        self.layers.append(layer)
        self.inputs.append(reads)
        return len(self.layers) - 1

    def lif(self, *reads: int, threshold: float | None = None) -> int:
        """A LIF (a ReLU, for ``neuron`` relu) reading the sum of ``reads``."""
        if self.neuron == "relu":
            return self.add(nn.ReLU(), *reads)
        return self.add(MultiStepLIF(self.tau, threshold if threshold is not None
                                     else self.v_threshold), *reads)

    def graph(self) -> ChipGraph:
        return ChipGraph(self.layers, self.inputs)
