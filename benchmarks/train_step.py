r"""Benchmark: one training step at batch 64, T = 4, 32x32, variants interleaved in one run.

Default: the recipe's image training step (``train``'s distillation step: the image forward pass
as the trainer runs it, the loss :math:`1 - \cos(f_s, f_t)` against fixed random teacher
features, backward, Adam with amsgrad at the recipe's distillation learning rate) on
``spikeclip-native-small`` (the shipped model's config), in five variants:

* ``fp32 per-step``: float32, the plain per-time-step autograd LIF (``MultiStepLIF(fused=False)``,
  the reference the speedup is relative to);
* ``fp32 fused``: float32, the library's LIF (fused time loops, ``torch.compile``d): the default;
* ``fp32 channels-last``: as ``train --channels-last``;
* ``bf16``: as ``train --bf16``: the image forward pass under bf16 autocast;
* ``bf16 channels-last``: as ``train --bf16 --channels-last``.

``--lif``: the multi-step LIF implementations on the paper image encoder (Spikingformer-4-384,
config ``spikeclip-vit4-384``), forward + backward of the image features' mean square, float32:

* ``per-step``: the plain per-time-step autograd LIF (the reference);
* ``fused-eager``: the fused time loops with hand-written BPTT, not compiled
  (``MultiStepLIF(use_compile=False)``, the fallback when ``torch.compile`` is unavailable);
* ``fused``: the library default (``MultiStepLIF()``: the fused loops compiled with
  ``torch.compile``; it is the same as ``fused-eager`` when compilation is disabled by
  ``SPIKECLIP_LIF_COMPILE=0`` or fails);
* ``spikingjelly``: spikingjelly's multi-step LIF node (what the SpikeCLIP reference code uses)
  when spikingjelly is installed (``pip install -r requirements/bench.txt``; benchmark-only).

Run from the repository root::

    .venv/bin/python benchmarks/train_step.py [--lif] [--batch 64] [--repeats N] [--threads 2]

Every variant is a copy of one randomly initialised model (same weights) fed the same random
uint8 images. Each variant first runs one untimed warm-up step (it includes the
``torch.compile`` compilation of the fused LIF loops, which is therefore excluded from the
figures; its duration is shown as "first step"); then ``--repeats`` rounds time one step of
every variant in turn (interleaved, so that load from other processes hits all variants alike;
the load average is printed before and after).

Prints, per variant, images/s from the median step time (and the best step time) and its ratio
to the reference. Recipe step: the first step's loss (the same weights and batch in every
variant: float32 variants agree, bf16 ones differ by their rounding). ``--lif``: the activation
memory autograd keeps for the backward pass (distinct saved tensors, measured in the warm-up
step), and whether the outputs and all parameter gradients match the per-step reference
(``allclose``: outputs rtol 1e-4 / atol 1e-5, gradients rtol 1e-3 / atol 1e-5), with the largest
differences relative to the largest output / gradient. The last line is ``speedup <ratio>``: the
median step time of the reference over that of the fastest bf16 variant (recipe step), or of
``fused`` (``--lif``).

On a machine busy with other processes, timings are depressed and noisy, and with more than one
thread the per-step variants (thousands of small parallel element-wise ops, each waiting for all
threads to be scheduled) suffer far more than the others: compare with ``--threads 1`` too.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Callable

import torch

from spikeclip_deploy.config import get_config
from spikeclip_deploy.nn.lif import MultiStepLIF, compile_enabled
from spikeclip_deploy.nn.spikeclip import SpikeCLIP
from spikeclip_deploy.training.losses import distillation_loss
from spikeclip_deploy.training.precision import image_features, memory_format
from spikeclip_deploy.training.recipe import Recipe

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


def timed_rounds(steps: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds of one timed step of every variant in turn -> each one's step times."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step())
    return times


def figures(batch: int, times: list[float], ref: list[float], first: float) -> str:
    med, best = statistics.median(times), min(times)
    return (f"{batch / med:6.2f} images/s  ({med:.3f} s/step median, best {best:.3f}; first step "
            f"{first:.1f} s)  x{statistics.median(ref) / med:.2f}")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def recipe_step(model: SpikeCLIP, images: torch.Tensor, targets: torch.Tensor, bf16: bool,
                channels_last: bool) -> Callable[[], tuple[float, float]]:
    """The trainer's distillation step on ``model`` -> a function running one: (seconds, loss)."""
    model.image.to(memory_format=memory_format(channels_last))
    opt = torch.optim.Adam(model.image.parameters(), lr=Recipe().distill_lr[0], amsgrad=True)
    cpu = torch.device("cpu")

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = distillation_loss(image_features(model, images, cpu, bf16, channels_last)[0],
                                 targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item()
    return step


def recipe_benchmark(args: argparse.Namespace) -> None:
    cfg = get_config("spikeclip-native-small")
    torch.manual_seed(0)
    base = SpikeCLIP(cfg).train()
    images = torch.randint(0, 256, (args.batch, 3, cfg.image_size, cfg.image_size),
                           dtype=torch.uint8)
    targets = torch.nn.functional.normalize(torch.randn(args.batch, cfg.embed_dim), dim=-1)
    steps = {}
    for name, fused, bf16, channels_last in (("fp32 per-step", False, False, False),
                                             ("fp32 fused", True, False, False),
                                             ("fp32 channels-last", True, False, True),
                                             ("bf16", True, True, False),
                                             ("bf16 channels-last", True, True, True)):
        model = copy.deepcopy(base)
        if not fused:
            set_lif(model, lambda c: MultiStepLIF(c.tau, c.v_threshold, c.alpha, fused=False))
        steps[name] = recipe_step(model, images, targets, bf16, channels_last)
    print(f"recipe training step (distillation) of {cfg.name}, batch {args.batch}, "
          f"T = {cfg.time_steps}, {cfg.image_size}x{cfg.image_size}, {args.threads} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"torch.compile of the fused LIF: {'on' if compile_enabled() else 'off'}")
    print(f"variants interleaved over {args.repeats} rounds, so that other processes' load hits "
          f"all alike; load average (1, 5, 15 min) before: {load_average()}")
    first, loss = {}, {}
    for name, step in steps.items():  # warm-up (compiles the fused loops, float32 and bf16)
        first[name], loss[name] = step()
    times = timed_rounds({name: lambda step=step: step()[0] for name, step in steps.items()},
                         args.repeats)
    ref = times["fp32 per-step"]
    for name in steps:
        print(f"{name:>18s}: {figures(args.batch, times[name], ref, first[name])} vs per-step; "
              f"first-step loss {loss[name]:.6f}")
    print(f"(first step = warm-up, not in the figures); load average after: {load_average()}")
    fastest = min(("bf16", "bf16 channels-last"), key=lambda n: statistics.median(times[n]))
    print(f"speedup {statistics.median(ref) / statistics.median(times[fastest]):.2f}")


def lif_benchmark(args: argparse.Namespace) -> None:
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
    print(f"variants interleaved over {args.repeats} rounds; load average before: "
          f"{load_average()}")
    outs, grads, first, saved = {}, {}, {}, {}
    for name, (model, reset) in variants.items():  # warm-up (compiles the fused loops)
        first[name], saved[name] = warm_up(model, images, reset)

    def step(name: str) -> float:
        model, reset = variants[name]
        sec, outs[name] = train_step(model, images, reset)
        grads[name] = {n: p.grad.detach().clone() for n, p in model.image.named_parameters()
                       if p.grad is not None}
        return sec

    times = timed_rounds({name: lambda name=name: step(name) for name in variants}, args.repeats)
    ref_out, ref_grads = outs["per-step"], grads["per-step"]
    grad_scale = max(g.abs().max() for g in ref_grads.values())
    for name in variants:
        same = (grads[name].keys() == ref_grads.keys()
                and torch.allclose(outs[name], ref_out, rtol=1e-4, atol=1e-5)
                and all(torch.allclose(grads[name][k], g, rtol=1e-3, atol=1e-5)
                        for k, g in ref_grads.items()))
        out_err = ((outs[name] - ref_out).abs().max() / ref_out.abs().max()).item()
        grad_err = (max((grads[name][k] - g).abs().max() for k, g in ref_grads.items())
                    / grad_scale).item() if grads[name].keys() == ref_grads.keys() else float("nan")
        print(f"{name:>12s}: {figures(args.batch, times[name], times['per-step'], first[name])}  "
              f"saved for backward {saved[name] / 2**20:5.0f} MiB  matches per-step: {same} "
              f"(max diff / max: outputs {out_err:.1e}, gradients {grad_err:.1e})")
    print("(first step = warm-up, not in the figures; for 'fused' it includes torch.compile); "
          f"load average after: {load_average()}")
    print(f"speedup {statistics.median(times['per-step']) / statistics.median(times['fused']):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lif", action="store_true",
                    help="compare LIF implementations on the paper image encoder instead")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (lif_benchmark if args.lif else recipe_benchmark)(args)


if __name__ == "__main__":
    main()
