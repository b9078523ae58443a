r"""Spiking image and text encoders.

Each encoder has three parts, and the split is the deployment boundary:

* ``encode`` (host, real-valued): the first layer that sees real input (direct coding). Its
  output :math:`X` (on the chip's input grid, for quantization-aware models) is the constant
  input current of the first spiking layer for all :math:`T` steps.
* ``stack`` (chip, a :class:`~.chip_graph.ChipGraph`): LIF neurons and synapse layers (Conv2d+BatchNorm,
  Linear), a chain or a graph with fan-in, ending in a LIF.
* ``readout`` (host): mean over tokens, time-dependent weights, projection.

Time-dependent weights (TDW): :math:`y = \sum_t w_t\, r_t`, with :math:`w_t` learnable and
initialised to :math:`\ln(0.1 \cdot 2^t)` (used directly as multipliers, as in SpikeCLIP).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .chip_graph import ChipGraph, InputGrid
from .lif import MultiStepLIF


class TimeDependentWeights(nn.Module):
    r""":math:`y = \sum_t w_t x_t` over the leading time axis (or the plain mean if disabled)."""

    def __init__(self, time_steps: int, learnable: bool = True) -> None:
        super().__init__()
        init = torch.tensor([math.log(0.1 * 2**t) for t in range(time_steps)])
        if not learnable:
            init = torch.full((time_steps,), 1.0 / time_steps)
        self.weight = nn.Parameter(init, requires_grad=learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("t,t...->...", self.weight, x)


class Readout(nn.Module):
    """Host readout: ``[T, B, C, *tokens]`` spikes -> token mean -> TDW -> projection."""

    def __init__(self, in_features: int, out_features: int, time_steps: int, tdw: bool) -> None:
        super().__init__()
        self.tdw = TimeDependentWeights(time_steps, learnable=tdw)
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        rates = spikes.flatten(3).mean(-1) if spikes.dim() > 3 else spikes
        return self.proj(self.tdw(rates))


class SpikingEncoder(nn.Module):
    """``encode`` (host) -> repeat over T -> ``stack`` (chip) -> ``readout`` (host)."""

    def __init__(self, encode: nn.Module, stack: ChipGraph, readout: Readout,
                 time_steps: int) -> None:
        super().__init__()
        self.encode = encode
        self.stack = stack
        self.readout = readout
        self.time_steps = time_steps
        self.input_grid = InputGrid()

    def current(self, inputs: torch.Tensor) -> torch.Tensor:
        """The host part: ``encode``, then the input grid."""
        return self.input_grid(self.encode(inputs))

    def run_stack(self, current: torch.Tensor) -> list[torch.Tensor]:
        """Run the chip part on a constant input current; return every LIF layer's spikes
        ``[T, B, ...]`` in layer order (the last one leaves the chip)."""
        outs = self.stack(current, self.time_steps)
        return [outs[i] for i in self.stack.lif_indices()]

    def chip_spikes(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Spikes ``[T, B, ...]`` of every LIF of the lowered chip graph, in its order (a spike
        max-pool's OR LIF included; the last leaves the chip)."""
        outs = self.stack(self.current(inputs), self.time_steps)
        return [outs[i] for i in self.stack.spike_indices()]

    def chip_counts(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Inference: (the last LIF's spikes ``[T, B, ...]``, each LIF of :meth:`chip_spikes`
        its spike counts over the steps ``[B, ...]``), counted where the compiled LIF pass made
        the spikes, else summed from them."""
        counted: dict[int, torch.Tensor] = {}
        outs = self.stack(self.current(inputs), self.time_steps, counted)
        return outs[-1], [counted[i] if i in counted else outs[i].sum(0)
                          for i in self.stack.spike_indices()]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_stack(self.current(inputs))[-1])


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(c_out),
    )


def build_image_encoder(channels: Sequence[int], mlp_hidden: int, embed_dim: int,
                        time_steps: int, tau: float, v_threshold: float, tdw: bool) -> SpikingEncoder:
    """Conv tokenizer (3x3 convs, stride 2 after the first) + a spiking 1x1 MLP layer.

    ``channels[0]`` is the host stem; each further entry halves the resolution on chip.
    """
    lif = lambda: MultiStepLIF(tau=tau, v_threshold=v_threshold)  # noqa: E731
    stack: list[nn.Module] = [lif()]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        stack += [conv_bn(c_in, c_out, 3, 2), lif()]
    stack += [conv_bn(channels[-1], mlp_hidden, 1, 1), lif()]
    return SpikingEncoder(conv_bn(3, channels[0], 3, 1), ChipGraph(stack),
                          Readout(mlp_hidden, embed_dim, time_steps, tdw), time_steps)


class TokenEmbedding(nn.Module):
    """Host text encoding: token + position embeddings, flattened to ``[B, L*E]``."""

    def __init__(self, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.zeros(context_length, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (self.token(tokens) + self.position).flatten(1)


def build_text_encoder(vocab_size: int, context_length: int, width: int, hidden: int,
                       embed_dim: int, time_steps: int, tau: float, v_threshold: float,
                       tdw: bool) -> SpikingEncoder:
    """Embeddings -> LIF -> Linear(L*E, hidden) -> LIF -> [host] TDW -> Linear(hidden, D)."""
    stack = [MultiStepLIF(tau, v_threshold), nn.Linear(context_length * width, hidden),
             MultiStepLIF(tau, v_threshold)]
    return SpikingEncoder(TokenEmbedding(vocab_size, context_length, width), ChipGraph(stack),
                          Readout(hidden, embed_dim, time_steps, tdw), time_steps)
