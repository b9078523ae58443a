r"""Multi-step leaky integrate-and-fire neuron with a sigmoid surrogate gradient.

For input current :math:`X_t` (:math:`t = 1..T`), membrane :math:`V_0 = 0`:

.. math::

    H_t = V_{t-1} + \frac{X_t - V_{t-1}}{\tau}, \qquad
    S_t = \Theta(H_t - V_{th}), \qquad
    V_t = H_t\,(1 - S_t)

:math:`\Theta` is the strict step (spike when :math:`H_t > V_{th}`, as Loihi tests
``v > vth``); its gradient is replaced by the sigmoid surrogate
:math:`\alpha\,\sigma(\alpha x)(1-\sigma(\alpha x))` (snntorch's ``surrogate.sigmoid``).
The reset is hard (to 0) and detached from the graph.
"""
from __future__ import annotations

import torch
from snntorch import surrogate
from torch import nn


class MultiStepLIF(nn.Module):
    """LIF over a leading time dimension: ``[T, ...] -> [T, ...]`` spikes (0/1)."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 4.0) -> None:
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1 (got {tau})")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)
        self._spike = surrogate.sigmoid(slope=alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            h = v + (x_t - v) / self.tau
            s = self._spike(h - self.v_threshold)
            v = h * (1.0 - s.detach())
            out.append(s)
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, alpha={self.alpha}"
