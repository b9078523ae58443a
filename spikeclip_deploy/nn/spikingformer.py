r"""Spikingformer-4-384 image encoder as SpikeCLIP uses it, and its ANN twin.

Tokenizer: 3x3 convs with BatchNorm 3-48-96-192-384(-384), max pools after the third and fourth,
LIF after each but the last, giving 64 tokens x 384 at 32x32. With ``spike_pool`` the two max
pools move after their LIFs (the OR of spikes, :class:`~.chip_graph.SpikeMaxPool`, as on chip);
the modules and state-dict names stay the same, so original weights fine-tune. (The chip-native
variant, :mod:`.native`, always pools spikes.) Blocks keep a real-valued
residual stream :math:`x`:

.. math::

    x \leftarrow x + \mathrm{SSA}(x), \qquad x \leftarrow x + \mathrm{MLP}(x)

with spiking self-attention :math:`\mathrm{SSA}(x) = \mathrm{BN}(W_o\,
\mathrm{LIF}_{0.5}(0.125\,(Q K^\top) V))`, :math:`Q, K, V = \mathrm{LIF}(\mathrm{BN}(W_{q,k,v}
\mathrm{LIF}(x)))` (no softmax, 8 heads), and :math:`\mathrm{MLP}(x) = \mathrm{BN}(W_2\,
\mathrm{LIF}(\mathrm{BN}(W_1 \mathrm{LIF}(x))))`. Readout: token mean, TDW, projection.
"""
from __future__ import annotations

import torch
from torch import nn

from .chip_graph import SpikeMaxPool
from .encoders import Readout
from .lif import MultiStepLIF


class TimeDistributed(nn.Module):
    """Apply a per-sample module to ``[T, B, ...]`` by folding T into the batch."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.body(x.flatten(0, 1))
        return y.reshape(t, b, *y.shape[1:])


def conv_bn(c_in: int, c_out: int, k: int = 1, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=bias), nn.BatchNorm2d(c_out)]


class SpikingSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, tau: float, attn_threshold: float, scale: float = 0.125,
                 spiking: bool = True) -> None:
        super().__init__()
        act = (lambda th=1.0: MultiStepLIF(tau, th)) if spiking else (lambda th=1.0: nn.Identity())
        self.heads, self.scale = heads, scale
        self.in_lif = act()
        self.q, self.k, self.v = (TimeDistributed(*conv_bn(dim, dim)) for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = act(), act(), act()
        self.attn_lif = act(attn_threshold)
        self.proj = TimeDistributed(*conv_bn(dim, dim, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        t, b, c, h, w = x.shape
        s = self.in_lif(x)

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(t, b, self.heads, c // self.heads, h * w).transpose(-1, -2)
        q, k, v = (heads(lif(conv(s))) for conv, lif in
                   ((self.q, self.q_lif), (self.k, self.k_lif), (self.v, self.v_lif)))
        y = (q @ k.transpose(-1, -2)) @ v * self.scale  # [T, B, heads, N, d]
        y = y.transpose(-1, -2).reshape(t, b, c, h, w)
        return self.proj(self.attn_lif(y))


class SpikingMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, tau: float, spiking: bool = True) -> None:
        super().__init__()
        act = (lambda: MultiStepLIF(tau)) if spiking else nn.GELU
        self.body = nn.Sequential(act(), TimeDistributed(*conv_bn(dim, hidden)), act(),
                                  TimeDistributed(*conv_bn(hidden, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Spikingformer(nn.Module):
    """Normalised images ``[B, 3, H, W]`` -> features ``[B, embed_dim]``."""

    def __init__(self, embed_dim: int, dim: int = 384, depth: int = 4, heads: int = 8,
                 mlp_hidden: int = 1536, time_steps: int = 4, tau: float = 2.0,
                 attn_threshold: float = 0.5, tdw: bool = True, stem: tuple[int, ...] = (48, 96, 192),
                 spike_pool: bool = False) -> None:
        super().__init__()
        self.time_steps = time_steps
        chans = (3, *stem, dim)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            pool = i >= len(chans) - 3
            if pool and spike_pool:  # parameter-free modules: the state-dict names do not change
                layers += [TimeDistributed(*conv_bn(c_in, c_out, 3)),
                           nn.Sequential(MultiStepLIF(tau), TimeDistributed(SpikeMaxPool(3, 2, 1)))]
            else:
                layers += [TimeDistributed(*conv_bn(c_in, c_out, 3),
                                           *([nn.MaxPool2d(3, 2, 1)] if pool else [])),
                           MultiStepLIF(tau)]
        layers.append(TimeDistributed(*conv_bn(dim, dim, 3)))
        self.tokenizer = nn.Sequential(*layers)
        self.blocks = nn.ModuleList(
            nn.ModuleList([SpikingSelfAttention(dim, heads, tau, attn_threshold),
                           SpikingMLP(dim, mlp_hidden, tau)]) for _ in range(depth))
        self.readout = Readout(dim, embed_dim, time_steps, tdw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokenizer(images.unsqueeze(0).expand(self.time_steps, *images.shape))
        for attn, mlp in self.blocks:
            x = x + attn(x)
            x = x + mlp(x)
        return self.readout(x)


class ScratchCLIPImage(nn.Module):
    """ANN counterpart: the same stem without spikes (ReLU), 4 pre-LN transformer layers, mean
    pool, projection."""

    def __init__(self, embed_dim: int, dim: int = 384, depth: int = 4, heads: int = 8,
                 mlp_hidden: int = 1536, stem: tuple[int, ...] = (48, 96, 192)) -> None:
        super().__init__()
        chans = (3, *stem, dim)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [*conv_bn(c_in, c_out, 3),
                       *([nn.MaxPool2d(3, 2, 1)] if i >= len(chans) - 3 else []), nn.ReLU()]
        layers += conv_bn(dim, dim, 3)
        self.stem = nn.Sequential(*layers)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_hidden, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2)  # [B, N, C]
        return self.proj(self.transformer(x).mean(1))
