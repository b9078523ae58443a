r"""Spikingformer-4-384 image encoder as SpikeCLIP uses it, and its ANN twin.

Tokenizer: 3x3 convs with BatchNorm 3-48-96-192-384(-384), max pools after the third and fourth,
LIF after each but the last, giving 64 tokens x 384 at 32x32. The first conv reads the image
(host, direct coding); the rest is a :class:`~.chip_graph.ChipGraph`. Its max pools act on the
real-valued conv output before the LIF (:class:`~.chip_graph.HostMaxPool`: the partition puts
that conv and pool on the host); with ``spike_pool`` they move after their LIFs (the OR of
spikes, :class:`~.chip_graph.SpikeMaxPool`, on chip), keeping every layer's index, so the
state-dict names stay the same and original weights fine-tune. Blocks keep a real-valued
residual stream :math:`x`, carried by fan-in (every LIF reading :math:`x` sums all its terms):

.. math::

    x \leftarrow x + \mathrm{SSA}(x), \qquad x \leftarrow x + \mathrm{MLP}(x)

with spiking self-attention :math:`\mathrm{SSA}(x) = \mathrm{BN}(W_o\,
\mathrm{LIF}_{0.5}(0.125\,(Q K^\top) V))`, :math:`Q, K, V = \mathrm{LIF}(\mathrm{BN}(W_{q,k,v}
\mathrm{LIF}(x)))` (no softmax, 8 heads; :math:`Q K^\top V` is a host op,
:class:`~.chip_graph.SpikeAttention`, between chip subgraphs), and :math:`\mathrm{MLP}(x) =
\mathrm{BN}(W_2\, \mathrm{LIF}(\mathrm{BN}(W_1 \mathrm{LIF}(x))))`. A final LIF reads
:math:`x` (only spikes leave a neuro-core); readout: token mean, TDW, projection.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .chip_graph import HOST_INPUT, GraphBuilder, HostMaxPool, SpikeAttention, SpikeMaxPool
from .encoders import Readout, SpikingEncoder, conv_bn


def build_spikingformer(channels: Sequence[int], depth: int, heads: int, mlp_hidden: int,
                        embed_dim: int, time_steps: int, tau: float, v_threshold: float,
                        attn_threshold: float, tdw: bool, spike_pool: bool = False,
                        attn_scale: float = 0.125) -> SpikingEncoder:
    """The encoder above; ``channels[0]`` is the host stem's width, ``channels[-1]`` the
    width D; the last two stages pool (3x3, stride 2)."""
    g = GraphBuilder(tau, v_threshold)
    add, lif = g.add, g.lif
    n, dim = len(channels) - 1, channels[-1]
    if n < 2:
        raise ValueError("a Spikingformer needs at least two tokenizer stages after the stem")
    s = lif(HOST_INPUT)  # the stem's output is the host current
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        conv = add(conv_bn(c_in, c_out, 3, 1), s)
        if i < n - 2:
            s = lif(conv)
        elif spike_pool:  # conv, LIF, pool: the same indices as conv, pool, LIF
            s = add(SpikeMaxPool(3, 2, 1), lif(conv))
        else:
            s = lif(add(HostMaxPool(3, 2, 1), conv))
    x = [add(conv_bn(dim, dim, 3, 1), s)]  # the residual stream's terms
    for _ in range(depth):
        s = lif(*x)
        q, k, v = (lif(add(conv_bn(dim, dim, 1, 1), s)) for _ in range(3))
        a = lif(add(SpikeAttention(heads, attn_scale), q, k, v), threshold=attn_threshold)
        x.append(add(conv_bn(dim, dim, 1, 1), a))
        h = add(conv_bn(dim, mlp_hidden, 1, 1), lif(*x))
        x.append(add(conv_bn(mlp_hidden, dim, 1, 1), lif(h)))
    lif(*x)
    return SpikingEncoder(conv_bn(3, channels[0], 3, 1), g.graph(),
                          Readout(dim, embed_dim, time_steps, tdw), time_steps)


class ScratchCLIPImage(nn.Module):
    """ANN counterpart: the same stem without spikes (ReLU), 4 pre-LN transformer layers, mean
    pool, projection."""

    def __init__(self, embed_dim: int, dim: int = 384, depth: int = 4, heads: int = 8,
                 mlp_hidden: int = 1536, stem: tuple[int, ...] = (48, 96, 192)) -> None:
        super().__init__()
        chans = (3, *stem, dim)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [*conv_bn(c_in, c_out, 3, 1),
                       *([nn.MaxPool2d(3, 2, 1)] if i >= len(chans) - 3 else []), nn.ReLU()]
        layers += [*conv_bn(dim, dim, 3, 1)]
        self.stem = nn.Sequential(*layers)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_hidden, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2)  # [B, N, C]
        return self.proj(self.transformer(x).mean(1))
