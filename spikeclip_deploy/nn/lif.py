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
loop without building an autograd graph, keeps only :math:`H` for the backward pass and
back-propagates through time by hand,

.. math::

    \bar H_t = \bar S_t\,\sigma'_\alpha(H_t - V_{th}) + \bar V_t (1 - S_t),\quad
    \bar X_t = \bar H_t / \tau,\quad \bar V_{t-1} = \bar H_t - \bar X_t

(the same operations in the same order as autograd on the per-step version, so the eager
fused gradients equal the reference's bit for bit); ``fused=False`` is the plain per-step
autograd version (the reference).

With gradients (training), the fused forward and backward time loops are compiled with
``torch.compile`` (inductor, dynamic shapes: on CPU one C++ kernel for each whole loop, which
needs a C++ compiler) the first time a fused layer runs; the first training step takes that much
longer (tens of seconds; inductor caches the kernels on disk). If compilation fails, a warning is
logged and the eager fused loops are used from then on. Turn compilation off per layer with
``use_compile=False`` or for the process with the environment variable
``SPIKECLIP_LIF_COMPILE=0``. Without gradients (inference), a CPU float32/float64 layer runs one
numba pass over its steps (:mod:`.lif_kernel`: the eager loop's arithmetic, the same spikes bit
for bit), any other the eager fused loop. Compiled and eager loops give the same spikes;
inductor's ``sigmoid`` may differ from ATen's in the last bits on some CPUs. On bfloat16
currents (bf16 autocast) the compiled loops carry the membrane in float32 from step to step
(storing :math:`H` rounded to bfloat16), the eager ones round it at every operation, so their
spikes can differ.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)

#: Environment variable: ``0`` (or ``false``/``no``/``off``) turns the compiled LIF loops off.
COMPILE_ENV = "SPIKECLIP_LIF_COMPILE"


class SigmoidSpike(torch.autograd.Function):
    r"""Strict step forward; :math:`\alpha\sigma(\alpha x)(1-\sigma(\alpha x))` backward.

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


# The fused loops, on [T, N] rows. Each mirrors, operation for operation, what autograd does on
# the per-step reference, so that the results agree bit for bit. The out-of-place versions are
# what torch.compile turns into one C++ loop each; the eager versions compute the same values in
# place in preallocated buffers (fewer and smaller allocations than the per-step graph).
# ``1 - S`` is computed as ``H <= V_th`` (the same values; NaN gives NaN either way).

def _lif_forward(x: torch.Tensor, tau: float, v_th: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and membrane ``H`` (kept for the backward pass) for ``x`` ``[T, N]``."""
    v = torch.zeros_like(x[0])
    spikes, hs = [], []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        spikes.append((h > v_th).to(x.dtype))
        v = h * (h <= v_th).to(x.dtype)
        hs.append(h)
    return torch.stack(spikes), torch.stack(hs)


def _lif_backward(grad_s: torch.Tensor, h: torch.Tensor, tau: float, v_th: float,
                  alpha: float) -> torch.Tensor:
    """Gradient with respect to the input current, by back-propagation through time."""
    grad_v = torch.zeros_like(h[0])
    grad_x = [grad_v] * h.shape[0]
    for t in range(h.shape[0] - 1, -1, -1):
        u = h[t] - v_th
        sig = torch.sigmoid(alpha * u)
        grad_h = grad_s[t] * alpha * sig * (1.0 - sig) + grad_v * (u <= 0).to(h.dtype)
        grad_x[t] = grad_h / tau
        grad_v = grad_h - grad_x[t]
    return torch.stack(grad_x)


def _lif_forward_eager(x: torch.Tensor, tau: float, v_th: float, keep_h: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    spikes = torch.empty_like(x)
    h_all = torch.empty_like(x) if keep_h else None
    h_buf = None if keep_h else torch.empty_like(x[0])
    v, keep = torch.empty_like(x[0]), torch.empty_like(x[0])
    for t in range(x.shape[0]):
        h = h_all[t] if keep_h else h_buf
        if t == 0:  # V_0 = 0: H = X / tau
            torch.div(x[0], tau, out=h)
        else:
            torch.sub(x[t], v, out=h).div_(tau).add_(v)
        torch.gt(h, v_th, out=spikes[t])
        torch.le(h, v_th, out=keep)
        torch.mul(h, keep, out=v)
    return spikes, h_all


def compiled_inference(x: torch.Tensor) -> bool:
    """Whether an inference step (no gradient needed) on ``x`` runs on a compiled numba kernel:
    a CPU float32/float64 tensor, outside tracing and ``torch.compile``."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
        and not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def count_type(time_steps: int) -> type:
    """The type a neuron's spike count over ``time_steps`` steps is exact in: uint8 below 256
    steps."""
    return np.uint8 if time_steps < 256 else np.int64


def _lif_spikes(x: torch.Tensor, tau: float, v_th: float
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spikes only (no gradient needed), ``x [T, N]`` -> (spikes, each neuron's count over the
    steps ``[N]`` (:func:`count_type`) or None): one compiled pass (:mod:`.lif_kernel`) where
    :func:`compiled_inference`, counting too, else the eager loop; the same spikes either
    way."""
    if not compiled_inference(x):
        return _lif_forward_eager(x, tau, v_th, keep_h=False)[0], None
    from .lif_kernel import lif_spikes_rows  # numba: only where a model runs inference

    out = torch.empty_like(x)
    counts = np.empty(x.shape[1], dtype=count_type(x.shape[0]))
    lif_spikes_rows(x.numpy(), np.array([tau, v_th, 0, 1], dtype=x.numpy().dtype), out.numpy(),
                    counts)
    return out, torch.from_numpy(counts)


def _lif_backward_eager(grad_s: torch.Tensor, h: torch.Tensor, tau: float, v_th: float,
                        alpha: float) -> torch.Tensor:
    grad_x = torch.empty_like(h)
    u, sig, tmp, grad_h, grad_v = (torch.empty_like(h[0]) for _ in range(5))
    for t in range(h.shape[0] - 1, -1, -1):
        torch.sub(h[t], v_th, out=u)
        torch.mul(u, alpha, out=sig).sigmoid_()
        torch.mul(grad_s[t], alpha, out=grad_h).mul_(sig)
        grad_h.mul_(torch.neg(sig, out=tmp).add_(1.0))
        if t < h.shape[0] - 1:
            grad_h.add_(torch.le(u, 0, out=tmp).mul_(grad_v))
        torch.div(grad_h, tau, out=grad_x[t])
        torch.sub(grad_h, grad_x[t], out=grad_v)
    return grad_x


_EAGER = {"forward": _lif_forward_eager, "backward": _lif_backward_eager}
_TO_COMPILE = {"forward": _lif_forward, "backward": _lif_backward}
_compiled: dict[str, object] = {}
_compiled_ok: set[str] = set()
_compile_failed = False


def compile_enabled() -> bool:
    """Whether the environment allows compiled LIF loops (``SPIKECLIP_LIF_COMPILE``)."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _run(name: str, use_compile: bool, *args):
    """Run one fused loop, compiled when allowed; fall back to eager if compilation fails."""
    global _compile_failed
    fn = _EAGER[name]
    if torch.compiler.is_compiling():  # inside a compiled model: let it trace the pure version
        return _TO_COMPILE[name](*args)
    if not use_compile or _compile_failed or torch.jit.is_tracing():
        return fn(*args)
    if name in _compiled_ok:  # compiled and ran once: later errors (e.g. out of memory) are real
        return _compiled[name](*args)
    try:
        if name not in _compiled:
            _compiled[name] = torch.compile(_TO_COMPILE[name], dynamic=True, fullgraph=True)
        out = _compiled[name](*args)
        _compiled_ok.add(name)
        return out
    except Exception as exc:  # noqa: BLE001  (no C++ compiler, unsupported platform, ...)
        _compile_failed = True
        log.warning("torch.compile of the fused LIF loops failed; using the eager fused loops "
                    "(set %s=0 to skip compiling): %s: %s", COMPILE_ENV, type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return fn(*args)


class _Rows:
    """The memory order of a ``[T, ...]`` tensor: views it, and tensors laid out like it, as
    ``[T, N]`` rows (copying only what is not laid out so), and gives ``[T, N]`` results back its
    shape and strides (so channels-last in, channels-last out)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.perm = [0, *sorted(range(1, x.dim()), key=lambda d: -x.stride(d))]
        if not x.permute(self.perm).is_contiguous():  # overlapping, gaps or time not outermost
            self.perm = list(range(x.dim()))
        self.shape = [x.shape[d] for d in self.perm]
        self.inverse = sorted(range(x.dim()), key=self.perm.__getitem__)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        # detached: not a view of x's base, whose layout the compiled loops would otherwise
        # guard on (one recompilation per base layout and dtype, until torch's limit stops them)
        return x.permute(self.perm).reshape(self.shape[0], -1).contiguous().detach()

    def unflat(self, y: torch.Tensor) -> torch.Tensor:
        return y.view(self.shape).permute(self.inverse)

    def unflat_step(self, y: torch.Tensor) -> torch.Tensor:
        """A ``[N]`` result (one value per neuron) -> the shape of one step, ``x[0]``'s."""
        return y.view(self.shape[1:]).permute([d - 1 for d in self.inverse[1:]])


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float, v_th: float, alpha: float,
                use_compile: bool) -> torch.Tensor:
        rows = _Rows(x)
        spikes, h = _run("forward", use_compile, rows.flat(x), tau, v_th)
        ctx.save_for_backward(h)
        ctx.consts = (tau, v_th, alpha, use_compile)
        ctx.rows = rows
        return rows.unflat(spikes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s: torch.Tensor):
        (h,) = ctx.saved_tensors
        tau, v_th, alpha, use_compile = ctx.consts
        grad_x = _run("backward", use_compile, ctx.rows.flat(grad_s), h, tau, v_th, alpha)
        return ctx.rows.unflat(grad_x), None, None, None, None


class MultiStepLIF(nn.Module):
    """LIF over a leading time dimension: ``[T, ...] -> [T, ...]`` spikes (0/1).

    ``fused`` (default) selects the fused time loops, ``fused=False`` the per-step autograd
    reference. ``use_compile`` (fused only): compile the training loops with ``torch.compile``;
    ``None`` (default) follows the environment variable ``SPIKECLIP_LIF_COMPILE`` (on unless
    ``0``).
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 4.0,
                 fused: bool = True, use_compile: bool | None = None) -> None:
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1 (got {tau})")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)
        self.fused = fused
        self.use_compile = use_compile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            use_compile = getattr(self, "use_compile", None)  # None also for older pickles
            use_compile = compile_enabled() if use_compile is None else bool(use_compile)
            if torch.is_grad_enabled() and x.requires_grad:
                return _FusedLIF.apply(x, self.tau, self.v_threshold, self.alpha, use_compile)
            return self.spikes_and_counts(x)[0]
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            h = v + (x_t - v) / self.tau
            s = SigmoidSpike.apply(h - self.v_threshold, self.alpha)
            v = h * (1.0 - s.detach())
            out.append(s)
        return torch.stack(out)

    def spikes_and_counts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference (no gradient) of the fused layer: (spikes ``[T, ...]``, each neuron's
        spike count over the steps ``[...]`` where the compiled pass counted them, else
        None)."""
        rows = _Rows(x)
        spikes, counts = _lif_spikes(rows.flat(x), self.tau, self.v_threshold)
        return rows.unflat(spikes), None if counts is None else rows.unflat_step(counts)

    def extra_repr(self) -> str:
        use_compile = getattr(self, "use_compile", None)
        extra = "" if use_compile is None else f", use_compile={use_compile}"
        return (f"tau={self.tau}, v_threshold={self.v_threshold}, alpha={self.alpha}, "
                f"fused={self.fused}{extra}")
