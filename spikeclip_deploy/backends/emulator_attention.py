r"""The emulator's spiking self-attention populations (:mod:`spikeclip_deploy.exchange.attention`),
per head as matrix products in window-local time.

A product population's output is never formed on the run's path: its sum population computes
:math:`\sum` of its products as one matrix product of the two factors (``k_first``:
:math:`M = K_h^\top V_h`, then :math:`Y = (Q_h M)^\top`; ``q_first``: :math:`S = Q_h K_h^\top`,
then :math:`Y = (S V_h)^\top`), over a batch's samples and steps at once. Every factor and
partial sum is a non-negative integer no larger than the population's payload bound, so the
products run in float32 where that bound is below :math:`2^{24}` (else float64, below
:math:`2^{53}`) and are exact. When state is recorded, a product population's payloads are
formed too (an outer product of its factors, ``[B, T, *shape]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..exchange.attention import AttentionNode, head_sums
from .emulator_gemm import FLOAT32_EXACT

#: product stage -> einsum of its factors (heads' ``[B, T, N, d]`` slices, or a sum's counts)
#: into its payloads ``[B, T, *shape]``
PRODUCT = {"kv": "btni,btnj->btnij", "qm": "btni,btij->btnij", "qk": "btni,btmi->btnmi",
           "sv": "btnm,btmj->btnmj"}


@dataclass
class Factors:
    """A product population's two factors in a window, each ``[B, T, ...]`` of ``dtype``."""

    a: torch.Tensor
    b: torch.Tensor


def compute_dtype(node: AttentionNode) -> torch.dtype:
    """float32 where every value of the head's chain is an integer below :math:`2^{24}`."""
    return torch.float32 if node.population.bound < FLOAT32_EXACT else torch.float64


def head_slice(spikes: torch.Tensor, node: AttentionNode, dtype: torch.dtype) -> torch.Tensor:
    """A Q, K or V LIF's spikes ``[B, T, H, W, C]`` (channels last) -> its head's
    ``[B, T, N, d]``."""
    spec = node.spec
    b, t = spikes.shape[:2]
    c0 = spec.head * spec.d
    return spikes.reshape(b, t, spec.tokens, -1)[..., c0:c0 + spec.d].to(dtype)


def factors(node: AttentionNode, ports: list[torch.Tensor]) -> Factors:
    """A product population's factors from its ports' outputs: a LIF's spikes (sliced to the
    head) or a sum population's counts."""
    dtype = compute_dtype(node)
    a, b = (head_slice(x, node, dtype) if node.population.binary(k) else x.to(dtype)
            for k, x in enumerate(ports))
    return Factors(a, b)


def payloads(node: AttentionNode, f: Factors) -> torch.Tensor:
    """A product population's payloads ``[B, T, *shape]`` (int64)."""
    return torch.einsum(PRODUCT[node.spec.stage], f.a, f.b).to(torch.int64)


def counts(node: AttentionNode, f: Factors) -> torch.Tensor:
    """A sum population's counts ``[B, T, *shape]`` (in the factors' float type, exact:
    :func:`~spikeclip_deploy.exchange.attention.head_sums`)."""
    return head_sums(node.spec.stage, f.a, f.b)


def into_lif(node: AttentionNode, y: torch.Tensor) -> torch.Tensor:
    """A ``y`` population's counts ``[B, T, d, N]`` -> what it sends into the attention LIF,
    ``weight`` times them on its head's channels, ``[B, T, H, W, C]`` int32 (zero elsewhere)."""
    spec = node.spec
    b, t = y.shape[:2]
    out = torch.zeros(b, t, spec.tokens, spec.heads * spec.d, dtype=torch.int32)
    c0 = spec.head * spec.d
    out[..., c0:c0 + spec.d] = (y.transpose(-1, -2) * node.weight).to(torch.int32)
    return out.reshape(b, t, *spec.grid, -1)
