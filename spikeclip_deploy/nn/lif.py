r"""Multi-step leaky integrate-and-fire neuron with a sigmoid surrogate gradient.

For input current :math:`X_t` (:math:`t = 1..T`), membrane :math:`V_0 = 0`:

.. math::

    H_t = V_{t-1} + \frac{X_t - V_{t-1}}{\tau}, \qquad
    S_t = \Theta(H_t - V_{th}), \qquad
    V_t = H_t\,(1 - S_t)

:math:`\Theta` is the strict step (spike when :math:`H_t > V_{th}`, as Loihi tests
``v > vth``); its gradient is replaced by the sigmoid surrogate
:math:`\alpha\,\sigma(\alpha x)(1-\sigma(\alpha x))` (snntorch's ``surrogate.sigmoid``, computed
stably).
The reset is hard (to 0) and detached from the graph.

Two implementations with identical outputs and gradients: ``fused`` (default) runs the time
loop without building an autograd graph and back-propagates through time by hand,

.. math::

    \bar H_t = \bar S_t\,\sigma'_\alpha(H_t - V_{th}) + \bar V_t (1 - S_t),\quad
    \bar V_{t-1} = (1 - 1/\tau)\,\bar H_t,\quad \bar X_t = \bar H_t / \tau;

``fused=False`` is the plain per-step autograd version (the reference).
"""
from __future__ import annotations

import torch
from torch import nn


class SigmoidSpike(torch.autograd.Function):
    """Strict step forward; :math:`\alpha\sigma(\alpha x)(1-\sigma(\alpha x))` backward.

    The same surrogate as snntorch's ``surrogate.sigmoid``, computed with ``torch.sigmoid``:
    snntorch's ``exp(-a x) / (exp(-a x) + 1)^2`` overflows to NaN once ``a x < -44``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * sig * (1.0 - sig), None


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float, v_th: float, alpha: float) -> torch.Tensor:
        decay = 1.0 - 1.0 / tau
        v = torch.zeros_like(x[0])
        h_all = torch.empty_like(x)
        s_all = torch.empty_like(x)
        for t in range(x.shape[0]):
            h = torch.add(v * decay, x[t], alpha=1.0 / tau)
            s = (h > v_th).to(x.dtype)
            v = h * (1.0 - s)
            h_all[t], s_all[t] = h, s
        ctx.save_for_backward(h_all, s_all)
        ctx.consts = (tau, v_th, alpha)
        return s_all

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        h_all, s_all = ctx.saved_tensors
        tau, v_th, alpha = ctx.consts
        decay = 1.0 - 1.0 / tau
        sig = torch.sigmoid(alpha * (h_all - v_th))
        surrogate_grad = alpha * sig * (1.0 - sig)
        grad_x = torch.empty_like(grad_s)
        grad_v = torch.zeros_like(grad_s[0])
        for t in range(grad_s.shape[0] - 1, -1, -1):
            grad_h = grad_s[t] * surrogate_grad[t] + grad_v * (1.0 - s_all[t])
            grad_x[t] = grad_h / tau
            grad_v = grad_h * decay
        return grad_x, None, None, None


class MultiStepLIF(nn.Module):
    """LIF over a leading time dimension: ``[T, ...] -> [T, ...]`` spikes (0/1)."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 4.0,
                 fused: bool = True) -> None:
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1 (got {tau})")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return _FusedLIF.apply(x, self.tau, self.v_threshold, self.alpha)
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            h = v + (x_t - v) / self.tau
            s = SigmoidSpike.apply(h - self.v_threshold, self.alpha)
            v = h * (1.0 - s.detach())
            out.append(s)
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, alpha={self.alpha}, fused={self.fused}"
