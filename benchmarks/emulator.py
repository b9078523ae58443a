"""Benchmark: the image chip graph of a ``--target loihi`` export on Lava (``loihi``, both
convolution lowerings) and on the emulator (``loihi-emu``), for the shipped model and for the
paper-size Loihi-native encoder, in one run. "shipped" is ``spikeclip-tiny-cifar10``, the smaller
shipped model.

Run from the repository root::

    .venv/bin/python benchmarks/emulator.py --threads 1

Exports: ``exports/spikeclip-tiny-cifar10-loihi`` and ``exports/spikeclip-vit4-384-native-random-loihi``
(``--init random --seed 0``), made when absent. Images are seeded random uint8 images; the host
computes their input mantissas once, outside every timing. Per model it prints:

- Lava, im2col lowering (this package's default): one run of ``--lava-images`` images
  (``--paper-lava-images`` for the paper-size encoder) and one of the first image only, each
  in a process of its own (start-up included, as ``verify`` pays it): images/s with start-up,
  and the steady rate without it (the extra images over the extra seconds, when the noise
  leaves those positive);
- Lava, stock ``Conv`` (the reference lowering) on ``--ref-images`` images, or why it is
  skipped (a delayed convolution becomes a ``DelaySparse`` over its dense-equivalent matrix,
  16 bytes per synapse, held by the building process and by Lava's: for the paper-size encoder
  more than the machine's memory);
- the emulator: median images/s of ``--repeats`` runs of ``--images`` images after a warm-up,
  and whether its spikes equal Lava's (both lowerings' runs: every LIF, step and neuron);
- the integer-GEMM bound: the int8 multiply-accumulates of one image (every distinct synapse
  once, as the emulator computes it) at the rate ``torch._int_mm`` reaches on the model's
  synapse shapes (grouped convolutions at the others' rate), and the emulator's share of it;
- the emulator's images/s over the fastest Lava figure above.

Last line: ``speedup <that ratio for the shipped model>``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nir
import numpy as np
import torch

from lava_conv import delayed_synapses
from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.backends.base import input_mantissa
from spikeclip_deploy.export import ExportConfig, default_out, export_model
from spikeclip_deploy.nirgraph import conv_out_hw

PAPER = "spikeclip-vit4-384-native"
TINY = "spikeclip-tiny-cifar10"
#: a csr matrix holds a synapse as an int32 value and an int32 column index, DelaySparse a
#: second matrix of its delays: 16 bytes per delayed synapse
CSR_BYTES = 16


def hashes(spikes: list[np.ndarray]) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(s, dtype=np.uint8).tobytes()).hexdigest()
            for s in spikes]


def child(export: str, lowering: str, mant_path: str) -> None:
    """One Lava run, in a process of its own: prints seconds and the spikes' hashes."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    backend = LavaBackend(export)
    meta = backend.graphs["image"].metadata
    net = _Network(_lava(reference=lowering == "stock"), backend.layers["image"],
                   backend.time_steps, LavaBackend.handlers,
                   meta["input_quantization"]["activation_shift"], meta["synapse_delay_steps"],
                   export)
    mant = np.load(mant_path)
    start = time.perf_counter()
    spikes = net.run(mant)
    print(json.dumps({"seconds": time.perf_counter() - start, "sha256": hashes(spikes)}))


def lava_run(export: Path, lowering: str, mant: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/mant.npy"
        np.save(path, mant)
        out = subprocess.run([sys.executable, __file__, "--child", str(export), lowering, path],
                             capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def export_of(model: str, init: str, out: Path) -> Path:
    if not (out / "manifest.json").exists():
        export_model(ExportConfig(model=model, target="loihi", init=init, seed=0, out=out))
    return out


def gemm_bound(emu, images: int) -> tuple[float, float]:
    """(int8 MACs of one image, MACs/s of ``torch._int_mm``) over the distinct synapses of the
    image graph, each timed at its GEMM shape for ``images`` images (median of 5 after a
    warm-up); grouped convolutions count at the rate of the others."""
    em = emu.emulations["image"]
    by_name = {la.name: la for la in em.layers}
    macs, timed_macs, seconds = 0, 0, 0.0
    for name in em.synapses:
        node = by_name[name].node
        w = np.asarray(node.weight)  # [out, in (per group), kernel...]
        rows = images * em.time_steps
        if isinstance(node, nir.Conv2d):
            rows *= int(np.prod(conv_out_hw(node, tuple(np.asarray(node.input_shape)))))
        k, n = int(np.prod(w.shape[1:])), int(w.shape[0])
        macs += rows * k * n
        if isinstance(node, nir.Conv2d) and int(np.asarray(node.groups)) > 1:
            continue
        a = torch.randint(0, 2, (rows, k), dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), dtype=torch.int8)
        out = torch.empty((rows, n), dtype=torch.int32)
        torch._int_mm(a, b, out=out)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch._int_mm(a, b, out=out)
            times.append(time.perf_counter() - start)
        timed_macs += rows * k * n
        seconds += statistics.median(times)
    return macs / images, timed_macs / seconds


def measure(name: str, export: Path, args, lava_images: int, ref_images: int) -> float:
    """Prints one model's figures; returns the emulator's images/s over the fastest Lava
    path's."""
    emu = get_backend("loihi-emu")(export)
    graph = emu.graphs["image"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (max(args.images, lava_images), 3, 32, 32), dtype=np.uint8)
    mant = input_mantissa(emu.host.image_current(images), graph, "image")
    em = emu.emulations["image"]
    n_syn = sum(isinstance(la.node, (nir.Affine, nir.Conv2d)) for la in em.layers)
    print(f"{name} ({export.name}): image chip graph, T = {emu.time_steps}, "
          f"{len(emu.lif_names('image'))} LIF layers, {n_syn} synapse layers "
          f"({len(em.synapses)} distinct), torch threads {torch.get_num_threads()}")

    one, full = (lava_run(export, "im2col", mant[:n]) for n in (1, lava_images))
    rates = [lava_images / full["seconds"]]
    extra = full["seconds"] - one["seconds"]
    if lava_images > 1 and extra > 0:
        rates.append((lava_images - 1) / extra)
    print(f"  lava im2col: {lava_images} images {full['seconds']:.2f} s = {rates[0]:.3f} "
          f"images/s with start-up; 1 image {one['seconds']:.2f} s; steady "
          + (f"{rates[1]:.3f} images/s" if len(rates) > 1 else
             "n/a (the runs' noise exceeds the extra images' time)"))
    delayed = delayed_synapses(emu.layers["image"])
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 2 * delayed * CSR_BYTES > memory:  # the building process's matrices and Lava's copy
        print(f"  lava stock Conv: skipped: its DelaySparse matrices ({delayed / 1e6:.0f} M "
              f"delayed synapses) need >= 2 x {delayed * CSR_BYTES / 2**30:.1f} GiB (the "
              f"building process and Lava's), this machine has {memory / 2**30:.1f} GiB")
        stock = None
    else:
        stock = lava_run(export, "stock", mant[:ref_images])
        rates.append(ref_images / stock["seconds"])
        print(f"  lava stock Conv: {ref_images} images {stock['seconds']:.2f} s = "
              f"{rates[-1]:.3f} images/s with start-up")

    got = emu.emulations["image"].run(mant[:lava_images]).spikes.values()
    equal = hashes(list(got)) == full["sha256"]
    if stock is not None:
        ref = emu.emulations["image"].run(mant[:ref_images]).spikes.values()
        equal = equal and hashes(list(ref)) == stock["sha256"]
    em.run(mant[:args.images])  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        em.run(mant[:args.images])
        times.append(time.perf_counter() - start)
    rate = args.images / statistics.median(times)
    print(f"  emulator: {args.images} images, median of {args.repeats}: {rate:.1f} images/s")
    print(f"  spikes equal to Lava's (both lowerings run), every LIF, step and neuron: {equal}")
    macs, mac_rate = gemm_bound(emu, min(args.images, em.chunk))
    bound = mac_rate / macs
    print(f"  int-GEMM bound: {macs / 1e6:.1f} M int8 MACs per image at {mac_rate / 1e9:.0f} "
          f"GMAC/s (torch._int_mm at the synapse shapes) = {bound:.0f} images/s; emulator at "
          f"{100 * rate / bound:.0f} % of it")
    print(f"  emulator / fastest Lava path: {rate / max(rates):.0f}x")
    return rate / max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="images per emulator run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lava-images", type=int, default=64, help="Lava's images, shipped model")
    ap.add_argument("--ref-images", type=int, default=2,
                    help="Lava's images with the stock Conv lowering, shipped model")
    ap.add_argument("--paper-lava-images", type=int, default=3,
                    help="Lava's images, paper-size encoder (the stock lowering: same count)")
    ap.add_argument("--threads", type=int, help="torch threads for the emulator [torch default]")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = export_of(TINY, "checkpoint", default_out(TINY, "loihi"))
    paper = export_of(PAPER, "random", default_out(f"{PAPER}-random", "loihi"))
    speedup = measure("shipped", shipped, args, args.lava_images, args.ref_images)
    measure("paper-size", paper, args, args.paper_lava_images, args.paper_lava_images)
    print(f"speedup {speedup:.0f}")


if __name__ == "__main__":
    main()
