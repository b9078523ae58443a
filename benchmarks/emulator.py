"""Benchmark: the image chip graph of a ``--target loihi`` export on Lava (``loihi``, both
convolution lowerings) and on the emulator (``loihi-emu``), for the shipped default model
(``spikeclip-native-small-cifar10``), the tiny one (``spikeclip-tiny-cifar10``) and the
paper-size Loihi-native encoder (``spikeclip-vit4-384-native``, random init, seed 0), quiet and
under a competing load the benchmark starts itself (one busy process per core), in one run.

Run from the repository root::

    .venv/bin/python benchmarks/emulator.py

It prints the CPU's model, vector extensions and instruction-set caps first. To emulate a CPU
without int8 dot products (AVX2 only) on one that has them, cap every library's instruction
set::

    DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        NUMBA_CPU_NAME=haswell .venv/bin/python benchmarks/emulator.py

torch sends ``_int_mm`` to oneDNN where the CPU itself (not the cap) has int8 dot products, so
under the cap it runs oneDNN's capped int8 x int8 kernel, whose pair sums saturate: the
emulator's probe (``emulator_gemm.int_mm_exact``) then leaves the ``int8`` kernel out, as an
AVX2-only CPU's slow fallback would never be chosen. ``--no-onednn`` turns oneDNN off for all
of torch, grouped convolutions included (a slower path than an AVX2 CPU takes; the ``onednn``
kernel calls oneDNN directly and stays). The caps cannot change the microarchitecture (this
CPU's cores, caches and clock run the AVX2 code) nor a library that reads the CPU's flags
itself. Exports are made when absent. Images are seeded random uint8 images; the host computes
their input mantissas once, outside every timing. Per model and condition:

- Lava, im2col lowering (this package's default): one run of ``--lava-images`` images (fewer
  for the paper-size encoder) and one of the first image only, each in a process of its own
  (start-up included, as ``verify`` pays it): images/s with start-up, and the steady rate
  (the extra images over the extra seconds, when the noise leaves those positive);
- Lava, stock ``Conv`` (the reference lowering; the tiny model, quiet) on ``--ref-images``
  images, or why it is skipped (its ``DelaySparse`` matrices, 16 bytes per delayed synapse,
  held twice);
- the emulator: median images/s of ``--repeats`` runs of ``--images`` images after a warm-up,
  with the threads ``verify`` would take (the cores other work leaves idle) and with one
  thread, and whether its spikes equal Lava's (every LIF, step and neuron);
- the bound: the multiply-accumulates of one image (every distinct synapse the emulator runs
  once: a fused fan-in's whole product, not its parts) at the rate of the fastest exact
  kernel at each synapse's shape and input density (a product's kernels at its GEMM shape, a
  convolution's direct ones too; measured right after the emulator, as the emulator measures
  its choice: which one is printed; the sparse kernels' rates count the dense product's
  MACs), and the emulator's share of it. With ``n``
  threads, the faster of the kernels on ``n`` threads each and ``n`` times their rate on one
  thread (the emulator's ``n`` workers each run their own products on one thread);
- the emulator's images/s over the fastest Lava figure.

Last line: ``speedup R``, the minimum of that ratio over the models and both conditions.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import nir
import numpy as np
import torch

from lava_conv import delayed_synapses
from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.backends.base import input_mantissa
from spikeclip_deploy.backends import emulator_gemm
from spikeclip_deploy.backends.emulator_gemm import (density_step, int_mm_exact,
                                                     measure_rows, power_of_two, random_spikes)
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.exchange.manifest import load_export
from spikeclip_deploy.export import ExportConfig, default_out, export_model
from spikeclip_deploy.machine import (VECTOR_FLAGS, cpu_model, free_cores, isa_caps, set_threads,
                                      vector_extensions)
from spikeclip_deploy.exchange.nirgraph import conv_out_hw

PAPER = "spikeclip-vit4-384-native"
TINY = "spikeclip-tiny-cifar10"
DEFAULT = "spikeclip-native-small-cifar10"
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
    """``out``, exported first where it holds no export this version reads (none, or one made
    by an earlier version: renewed)."""
    try:
        load_export(out)
    except ExportError:
        export_model(ExportConfig(model=model, target="loihi", init=init, seed=0, out=out,
                                  force=out.exists()))
    return out


def direct_seconds(syn, node: nir.Conv2d, samples: int) -> dict[str, float]:
    """Seconds of each direct kernel exact on convolution ``syn`` (``CONV_KERNELS``) on
    ``samples`` samples of random spikes at the synapse's input density: as many samples as
    the emulator's own timing takes (``Conv.timed_samples``), the time scaled to ``samples``."""
    names = syn.direct_kernels()
    if not names:
        return {}
    hw = tuple(int(v) for v in np.asarray(node.input_shape))
    timed = syn.timed_samples(samples, conv_out_hw(node, hw))
    x = random_spikes((timed, *hw, syn.weight.shape[1] * syn.groups), density_step(syn.density))
    times = emulator_gemm.seconds({name: partial(syn.make_direct(name), x) for name in names})
    return {name: t * samples / timed for name, t in times.items()}


def gemm_bound(emu, images: int) -> tuple[float, float, dict[str, int]]:
    """(MACs of one image, MACs/s of the fastest exact kernel at each distinct synapse's shape
    for ``images`` images and its input density in the emulator's run, measured now, how many
    synapses each kernel is fastest on): a product's kernels at its GEMM shape, and a
    convolution's direct kernels where they are exact; grouped convolutions without it count at
    the others' rate."""
    em = emu.emulations["image"]
    by_name = {la.name: la for la in em.fused}
    macs, timed_macs, seconds, kernels = 0, 0, 0.0, {}
    for name, syn in em.synapses.items():
        if name not in by_name:  # a part of a fused fan-in (run where state is recorded)
            continue
        node = by_name[name].node
        w = np.asarray(node.weight)  # [out, in (per group), kernel...]
        rows = images * em.time_steps
        if isinstance(node, nir.Conv2d):
            rows *= int(np.prod(conv_out_hw(node, tuple(np.asarray(node.input_shape)))))
        k, n = int(np.prod(w.shape[1:])), int(w.shape[0])
        macs += rows * k * n
        times = {}
        if isinstance(node, nir.Conv2d):
            times.update(direct_seconds(syn, node, images * em.time_steps))
        if hasattr(syn, "matrix"):  # a product (groups 1)
            wq = syn.matrix >> power_of_two(syn.matrix)
            exact = emulator_gemm.exact_kernels(wq, syn.bound_in, timed=True)
            m = measure_rows(wq, rows)
            times.update({kernel: t * rows / m for kernel, t in emulator_gemm.measure(
                wq, m, exact, density_step(syn.density)).items()})
        if not times:
            continue
        best = min(times, key=times.get)
        kernels[best] = kernels.get(best, 0) + 1
        timed_macs += rows * k * n
        seconds += times[best]
    return macs / images, timed_macs / seconds, kernels


class Load:
    """One busy process per core while in use (the competing load)."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(os.cpu_count() or 1)]
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def emulator_rate(em, mant: np.ndarray, args, threads: int) -> float:
    set_threads(threads)
    em.run(mant[:args.images])  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        em.run(mant[:args.images])
        times.append(time.perf_counter() - start)
    return args.images / statistics.median(times)


def measure(name: str, export: Path, args, lava_images: int, ref_images: int,
            condition: str) -> float:
    """Prints one model's figures in one condition; returns the emulator's images/s over the
    fastest Lava path's."""
    emu = get_backend("loihi-emu")(export)
    graph = emu.graphs["image"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (max(args.images, lava_images), 3, 32, 32), dtype=np.uint8)
    mant = input_mantissa(emu.host.image_current(images), graph, "image")
    em = emu.emulations["image"]
    syn = [la.name for la in em.fused if isinstance(la.node, (nir.Affine, nir.Conv2d))]
    print(f"{name} ({export.name}), {condition}: image chip graph, T = {emu.time_steps}, "
          f"{len(emu.lif_names('image'))} LIF layers, {len(syn)} synapse layers run "
          f"({sum(n in em.synapses for n in syn)} distinct; fan-ins fused: "
          f"{len(em.layers) - len(em.fused)} layers fewer); load average "
          f"{os.getloadavg()[0]:.2f}")

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
    stock = None
    if condition != "quiet" or not ref_images:
        pass  # the stock lowering: the tiny model, quiet only (it is never the fastest path)
    elif 2 * delayed * CSR_BYTES > memory:  # the building process's matrices and Lava's copy
        print(f"  lava stock Conv: skipped: its DelaySparse matrices ({delayed / 1e6:.0f} M "
              f"delayed synapses) need >= 2 x {delayed * CSR_BYTES / 2**30:.1f} GiB (the "
              f"building process and Lava's), this machine has {memory / 2**30:.1f} GiB")
    else:
        stock = lava_run(export, "stock", mant[:ref_images])
        rates.append(ref_images / stock["seconds"])
        print(f"  lava stock Conv: {ref_images} images {stock['seconds']:.2f} s = "
              f"{rates[-1]:.3f} images/s with start-up")

    got = em.run(mant[:lava_images]).spikes.values()
    equal = hashes(list(got)) == full["sha256"]
    if stock is not None:
        ref = em.run(mant[:ref_images]).spikes.values()
        equal = equal and hashes(list(ref)) == stock["sha256"]
    threads = args.threads or free_cores()
    rate = emulator_rate(em, mant, args, threads)
    single = emulator_rate(em, mant, args, 1) if threads > 1 else rate
    print(f"  emulator: {args.images} images, median of {args.repeats}: {rate:.1f} images/s "
          f"with {threads} thread(s), {single:.1f} with 1 (ratio {rate / single:.3f})")
    print(f"  spikes equal to Lava's (every LIF, step and neuron): {equal}")
    set_threads(threads)
    macs, mac_rate, kernels = gemm_bound(emu, min(args.images, em.chunk))
    how = f"{threads} thread(s) on each product"
    if threads > 1:  # the emulator's workers run one product each, on one thread each
        set_threads(1)
        _, one_rate, one_kernels = gemm_bound(emu, min(args.images, em.chunk))
        set_threads(threads)
        if threads * one_rate > mac_rate:
            mac_rate, kernels = threads * one_rate, one_kernels
            how = f"{threads} x its rate on 1 thread"
    bound = mac_rate / macs
    print(f"  bound: {macs / 1e6:.1f} M MACs per image at {mac_rate / 1e9:.1f} GMAC/s ({how}; "
          f"the fastest exact kernel per synapse shape: "
          f"{', '.join(f'{k} on {n}' for k, n in kernels.items())}) = {bound:.0f} images/s; "
          f"emulator at {100 * rate / bound:.1f} % of it")
    print(f"  emulator / fastest Lava path: {rate / max(rates):.3g}x")
    return rate / max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="images per emulator run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lava-images", type=int, default=64, help="Lava's images, tiny model")
    ap.add_argument("--default-lava-images", type=int, default=64,
                    help="Lava's images, the shipped default")
    ap.add_argument("--ref-images", type=int, default=2,
                    help="Lava's images with the stock Conv lowering, tiny model, quiet")
    ap.add_argument("--paper-lava-images", type=int, default=16,
                    help="Lava's images, paper-size encoder")
    ap.add_argument("--threads", type=int,
                    help="emulator threads [the cores other work leaves idle]")
    ap.add_argument("--no-onednn", action="store_true",
                    help="torch without oneDNN (torch._int_mm's fallback, and grouped "
                         "convolutions on torch's own path)")
    ap.add_argument("--conditions", default="quiet,load",
                    help="quiet, load (one busy process per core) or both")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    torch.backends.mkldnn.enabled = not args.no_onednn
    # the emulator's kernel choices measured in this run, not read from a cache
    os.environ["SPIKECLIP_CACHE"] = tempfile.mkdtemp(prefix="emulator-benchmark-")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; vector extensions: "
          f"{' '.join(vector_extensions()) or 'none of ' + ' '.join(VECTOR_FLAGS)}; caps: "
          f"{isa_caps() or 'none'}; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; torch._int_mm "
          f"{'exact' if int_mm_exact(torch.backends.mkldnn.enabled) else 'saturates here'}")
    models = [("shipped default", export_of(DEFAULT, "checkpoint", default_out(DEFAULT, "loihi")),
               args.default_lava_images, 0),
              ("tiny", export_of(TINY, "checkpoint", default_out(TINY, "loihi")),
               args.lava_images, args.ref_images),
              ("paper-size", export_of(PAPER, "random", default_out(f"{PAPER}-random", "loihi")),
               args.paper_lava_images, 0)]
    ratios = {}
    for condition in args.conditions.split(","):
        with Load() if condition == "load" else contextlib.nullcontext():
            for name, export, lava_images, ref_images in models:
                ratios[name, condition] = measure(name, export, args, lava_images, ref_images,
                                                  condition)
    worst = min(ratios, key=ratios.get)
    print(f"lowest: {worst[0]}, {worst[1]}")
    print(f"speedup {ratios[worst]:.3g}")


if __name__ == "__main__":
    main()
