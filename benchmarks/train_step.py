"""Benchmark: one training step (forward + backward, batch 64, T = 4, 32x32) of the paper image
encoder (Spikingformer-4-384), fused multi-step LIF vs the plain per-time-step LIF, measured side
by side in one run; plus spikingjelly's MultiStepLIFNode when it is installed.

    .venv/bin/python benchmarks/train_step.py [--batch 64] [--repeats 3] [--threads N]

Prints images/s for each variant, checks that outputs and gradients agree, and ends with
``speedup <fused / per-step>``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from spikeclip_deploy.config import get_config
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.nn.spikeclip import SpikeCLIP


def set_lif(model: torch.nn.Module, make) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, MultiStepLIF) or type(child).__name__ == "MultiStepLIFNode":
                setattr(parent, name, make(child))


def step_time(model, images, repeats: int) -> tuple[float, torch.Tensor, dict]:
    times = []
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model.image(model.normalize(images))
        out.square().mean().backward()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    grads = {n: p.grad.detach().clone() for n, p in model.image.named_parameters() if p.grad is not None}
    return statistics.median(times), out.detach(), grads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SpikeCLIP(get_config("spikeclip-vit4-384")).train()
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
    results = {}
    for name, fused in (("per-step", False), ("fused", True)):
        set_lif(model, lambda c, f=fused: MultiStepLIF(c.tau, c.v_threshold, c.alpha, fused=f))
        results[name] = step_time(model, images, args.repeats)
    try:
        from spikingjelly.activation_based import neuron, surrogate

        set_lif(model, lambda c: neuron.MultiStepLIFNode(
            tau=c.tau, v_threshold=c.v_threshold, v_reset=0.0, decay_input=True,
            detach_reset=True, surrogate_function=surrogate.Sigmoid(alpha=c.alpha), step_mode="m"))
        results["spikingjelly"] = step_time(model, images, args.repeats)
    except ImportError:
        print("spikingjelly: not installed (pip install spikingjelly to compare)")
    ref_out, ref_grads = results["per-step"][1:]
    for name, (sec, out, grads) in results.items():
        same = torch.allclose(out, ref_out, rtol=1e-4, atol=1e-5) and all(
            torch.allclose(grads[k], ref_grads[k], rtol=1e-3, atol=1e-5) for k in ref_grads)
        print(f"{name:>13s}: {args.batch / sec:7.2f} images/s  ({sec:.3f} s/step)  "
              f"outputs and gradients match per-step: {same}")
    print(f"speedup {results['per-step'][0] / results['fused'][0]:.2f}")


if __name__ == "__main__":
    main()
