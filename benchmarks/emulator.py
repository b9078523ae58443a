"""Benchmark: the image chip graph of the shipped model's ``--target loihi`` export on Lava
(``loihi``) and on the emulator (``loihi-emu``), side by side, on the same images.

Run from the repository root::

    .venv/bin/python benchmarks/emulator.py [--images 16] [--export DIR] [--threads N]

The export is ``exports/<shipped model>-loihi`` (made with ``spikeclip-deploy export --target
loihi`` when absent). The images are seeded random uint8 images; the host computes their input
currents once, outside the timings. Lava runs the whole batch in one simulation (its start-up
included, as ``verify`` pays it); the emulator's figure is the median of ``--repeats`` runs after
a warm-up. Prints each backend's images/s, whether every LIF's spikes are equal, and last a line
``speedup <emulator images/s over Lava's>``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.checkpoint import default_checkpoint_name
from spikeclip_deploy.export import ExportConfig, default_out, export_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--export", type=Path, help="a --target loihi export [shipped model's]")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch threads for the emulator [torch default]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    export = args.export or default_out(default_checkpoint_name(), "loihi")
    if not (export / "manifest.json").exists():
        export_model(ExportConfig(model=default_checkpoint_name(), target="loihi", out=export))
    emu = get_backend("loihi-emu")(export)
    images = np.random.default_rng(0).integers(0, 255, (args.images, 3, 32, 32), dtype=np.uint8)
    current = emu.host.image_current(images)

    emu.run_chip("image", current)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        got = emu.run_chip("image", current)
        times.append(time.perf_counter() - start)
    emu_s = statistics.median(times)
    with get_backend("loihi")(export) as lava:
        start = time.perf_counter()
        want = lava.run_chip("image", current)
        lava_s = time.perf_counter() - start
    equal = all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    print(f"{export.name}: image chip graph, {args.images} images, T = {emu.time_steps}, "
          f"{len(got)} LIF layers, torch threads {torch.get_num_threads()}")
    print(f"    lava: {args.images / lava_s:10.3f} images/s  ({lava_s:.2f} s)")
    print(f"emulator: {args.images / emu_s:10.3f} images/s  ({emu_s:.4f} s, median of "
          f"{args.repeats})")
    print(f"spikes equal in every layer, step and neuron: {equal}")
    print(f"speedup {lava_s / emu_s:.0f}")


if __name__ == "__main__":
    main()
