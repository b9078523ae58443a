"""Benchmark: one training step (forward + backward, batch 64, T = 4, 32x32) of the paper image
encoder (Spikingformer-4-384, config ``spikeclip-vit4-384``) with different multi-step LIF
implementations, measured side by side in one run:

* ``per-step``: the plain per-time-step autograd LIF (``MultiStepLIF(fused=False)``, the reference);
* ``fused-eager``: the fused time loops with hand-written BPTT, not compiled
  (``MultiStepLIF(use_compile=False)``, the fallback when ``torch.compile`` is unavailable);
* ``fused``: the library default (``MultiStepLIF()``: the fused loops compiled with
  ``torch.compile``; it is the same as ``fused-eager`` when compilation is disabled by
  ``SPIKECLIP_LIF_COMPILE=0`` or fails);
* ``spikingjelly``: spikingjelly's multi-step LIF node (what the SpikeCLIP reference code uses)
  when spikingjelly is installed (``pip install -r requirements/bench.txt``; benchmark-only).

Run from the repository root::

    .venv/bin/python benchmarks/train_step.py [--batch 64] [--repeats 3] [--threads N]

Every variant is a copy of one randomly initialised model (same weights) fed the same random
uint8 images; the loss is the mean square of the image features. Each variant first runs one
untimed warm-up step (for ``fused`` it includes the ``torch.compile`` compilation of the LIF
loops, which is therefore excluded from the figures; its duration is shown as "first step");
then ``--repeats`` rounds time one step of every variant in turn (interleaved, so that load from
other processes hits all variants alike).

Prints, per variant: images/s from the median step time (and the best step time), the
activation memory autograd keeps for the backward pass (distinct saved tensors, measured in the
warm-up step), and whether the outputs and all parameter gradients match the per-step reference
(``allclose``: outputs rtol 1e-4 / atol 1e-5, gradients rtol 1e-3 / atol 1e-5), with the largest
differences relative to the largest output / gradient. The last line is
``speedup <ratio>``: the median step time of ``per-step`` over that of ``fused``.

On a machine busy with other processes, timings are depressed and noisy, and with more than one
thread the per-step variant (thousands of small parallel element-wise ops, each waiting for all
threads to be scheduled) suffers far more than the others: compare with ``--threads 1`` too.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from spikeclip_deploy.config import get_config
from spikeclip_deploy.nn.lif import MultiStepLIF, compile_enabled
from spikeclip_deploy.nn.spikeclip import SpikeCLIP


def set_lif(model: torch.nn.Module, make) -> None:
    """Replace every MultiStepLIF in ``model`` by ``make(old)``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, MultiStepLIF):
                setattr(parent, name, make(child))


def spikingjelly_lif():
    """A factory MultiStepLIF -> spikingjelly node with the same dynamics, and a reset function.

    Same neuron: ``decay_input=True`` gives H = V + (X - V) / tau with ``v_reset=0``, hard reset
    to 0 detached from the graph (``detach_reset=True``), sigmoid surrogate with the same alpha.
    spikingjelly fires at ``H >= V_th``, MultiStepLIF at ``H > V_th`` (as Loihi); membranes land
    exactly on the threshold often here (the attention LIF sees multiples of 1/8), so the node
    gets the next float32 above V_th as its threshold: ``H >= next(V_th)`` is ``H > V_th``. (Its
    surrogate is then evaluated 1 ulp of V_th off, far below the gradient tolerance.)
    The nodes keep their membrane between calls: reset them before every step.
    """
    def above(v_th: float) -> float:
        return torch.nextafter(torch.tensor(v_th), torch.tensor(float("inf"))).item()

    try:  # spikingjelly >= 0.0.0.0.13: activation_based, step_mode="m"
        from spikingjelly.activation_based import functional, neuron, surrogate

        def make(c: MultiStepLIF):
            return neuron.LIFNode(tau=c.tau, decay_input=True, v_threshold=above(c.v_threshold),
                                  v_reset=0.0, surrogate_function=surrogate.Sigmoid(alpha=c.alpha),
                                  detach_reset=True, step_mode="m")
    except ImportError:  # older releases (the SpikeCLIP code): clock_driven.MultiStepLIFNode
        from spikingjelly.clock_driven import functional, neuron, surrogate

        def make(c: MultiStepLIF):
            return neuron.MultiStepLIFNode(tau=c.tau, decay_input=True,
                                           v_threshold=above(c.v_threshold), v_reset=0.0,
                                           detach_reset=True,
                                           surrogate_function=surrogate.Sigmoid(alpha=c.alpha))
    return make, functional.reset_net


def train_step(model, images, reset=None) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if reset is not None:  # stateful neurons (spikingjelly): membranes back to 0
        reset(model)
    t0 = time.perf_counter()
    out = model.image(model.normalize(images))
    out.square().mean().backward()
    return time.perf_counter() - t0, out.detach()


def warm_up(model, images, reset=None) -> tuple[float, int]:
    """One untimed step; returns its time and the bytes of the distinct tensors autograd keeps
    for the backward pass (the activation memory of a training step)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sec = train_step(model, images, reset)[0]
    return sec, sum(storages.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = SpikeCLIP(get_config("spikeclip-vit4-384")).train()
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)

    variants: dict[str, tuple[torch.nn.Module, object]] = {}
    for name, kw in (("per-step", {"fused": False}), ("fused-eager", {"use_compile": False}),
                     ("fused", {})):
        model = copy.deepcopy(base)
        set_lif(model, lambda c, kw=kw: MultiStepLIF(c.tau, c.v_threshold, c.alpha, **kw))
        variants[name] = (model, None)
    try:
        make, reset = spikingjelly_lif()
        model = copy.deepcopy(base)
        set_lif(model, make)
        variants["spikingjelly"] = (model, reset)
    except ImportError:
        print("spikingjelly: not installed (pip install -r requirements/bench.txt to compare)")

    print(f"paper image encoder, batch {args.batch}, T = {base.image.time_steps}, 32x32, "
          f"{args.threads} threads, torch {torch.__version__}; torch.compile of the fused LIF: "
          f"{'on' if compile_enabled() else 'off (SPIKECLIP_LIF_COMPILE)'}")
    outs, grads, times, first, saved = {}, {}, {name: [] for name in variants}, {}, {}
    for name, (model, reset) in variants.items():  # warm-up (compiles the fused loops)
        first[name], saved[name] = warm_up(model, images, reset)
    for _ in range(args.repeats):
        for name, (model, reset) in variants.items():
            sec, outs[name] = train_step(model, images, reset)
            times[name].append(sec)
            grads[name] = {n: p.grad.detach().clone() for n, p in model.image.named_parameters()
                           if p.grad is not None}

    ref_out, ref_grads = outs["per-step"], grads["per-step"]
    grad_scale = max(g.abs().max() for g in ref_grads.values())
    for name in variants:
        med, best = statistics.median(times[name]), min(times[name])
        same = (grads[name].keys() == ref_grads.keys()
                and torch.allclose(outs[name], ref_out, rtol=1e-4, atol=1e-5)
                and all(torch.allclose(grads[name][k], g, rtol=1e-3, atol=1e-5)
                        for k, g in ref_grads.items()))
        out_err = ((outs[name] - ref_out).abs().max() / ref_out.abs().max()).item()
        grad_err = (max((grads[name][k] - g).abs().max() for k, g in ref_grads.items())
                    / grad_scale).item() if grads[name].keys() == ref_grads.keys() else float("nan")
        print(f"{name:>12s}: {args.batch / med:6.2f} images/s  ({med:.3f} s/step median, best "
              f"{best:.3f}; first step {first[name]:.1f} s)  saved for backward "
              f"{saved[name] / 2**20:5.0f} MiB  matches per-step: {same} (max diff / max: "
              f"outputs {out_err:.1e}, gradients {grad_err:.1e})")
    print("(first step = warm-up, not in the figures; for 'fused' it includes torch.compile)")
    print(f"speedup {statistics.median(times['per-step']) / statistics.median(times['fused']):.2f}")


if __name__ == "__main__":
    main()
