"""Benchmark: the Lava backend's convolution lowering, Lava's stock one (``old``: scipy
``PyConvModelFixed``; a delayed convolution as ``DelaySparse`` over its dense-equivalent matrix,
one of 128 groups or more as ``Sparse``) against this package's (``new``: the im2col
``PyConvModelFast``, ``DelayConv``), side by side in one run.

Every Lava run is a process of its own, which reports steps/s (wall time of the run, start-up
included), its peak resident memory (``getrusage`` maxrss: its own, holding the network it
built, and that of its largest Lava process, which includes the pages it shares with its
parent) and a hash of every LIF's spikes:

1. ``shipped`` (with ``--export``): the image encoder of a ``--target loihi`` export on
   ``--images`` CIFAR-10 images (``--data``, through the export's host part), both lowerings.
2. ``wide``: a residual graph at the paper's width: a 3x3 C->C convolution on 8x8 tokens read by
   ``--readers`` LIFs (so ``--readers - 1`` delayed copies), 1x1 C->C convolutions between them,
   ``--channels`` C, random weights and input, both lowerings.
3. ``paper`` (with ``--paper-export``, e.g. of ``--model spikeclip-vit4-384-native --init random
   --seed 0``): as ``shipped``, new lowering only; for the old one it prints the size of the
   dense-equivalent matrices of the delayed convolutions (``kernels`` gives its time per layer).
4. ``kernels``: one step of the paper-size convolutions (3x3 192->384 at 16x16, 1x1 384->1536 and
   1536->384 at 8x8, depthwise 3x3 384 at 8x8), Lava's ``conv`` (scipy, what
   ``PyConvModelFixed`` calls) against :class:`Im2colConv`, outside Lava.

Run from the repository root, after ``spikeclip-deploy export --target loihi --model
spikeclip-native-small-cifar10 --out /tmp/lc/ns`` (and of the paper model to ``/tmp/lc/paper``)::

    .venv/bin/python benchmarks/lava_conv.py --export /tmp/lc/ns [--paper-export /tmp/lc/paper]

Prints figures and old/new ratios; asserts nothing about time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import nir
import numpy as np

from spikeclip_deploy.backends.base import quantize_input
from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network
from spikeclip_deploy.backends.lava_procs.conv import Im2colConv
from spikeclip_deploy.exchange.nirgraph import ChipLayer, conv_out_hw, graph_layers

LOWERINGS = ("old", "new")


class Workload(NamedTuple):
    layers: list[ChipLayer]
    meta: dict
    current: np.ndarray  # the host current of every sample
    time_steps: int
    export_dir: str  # where host ops find their ONNX files ("" for a graph without any)


def export_workload(export: str, args) -> Workload:
    """An export's image encoder on the first ``args.images`` images of ``args.data``."""
    from spikeclip_deploy.data import load_dataset

    backend = LavaBackend(export)
    images = load_dataset(args.data).images[:args.images].numpy()
    return Workload(backend.layers["image"], backend.graphs["image"].metadata,
                    backend.host.image_current(images), backend.time_steps, export)


def wide_workload(args) -> Workload:
    """A 3x3 conv read by ``args.readers`` LIFs, 1x1 convs between them (initial weights x6, so
    that every LIF fires, about 10 % in the float model), lowered for loihi; a random current."""
    import torch
    from torch import nn

    from spikeclip_deploy.hardware import load_profile
    from spikeclip_deploy.lowering.graph import run_passes, to_nir, trace
    from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
    from spikeclip_deploy.nn.chip_graph import ChipGraph
    from spikeclip_deploy.nn.encoders import SpikingEncoder, conv_bn
    from spikeclip_deploy.nn.lif import MultiStepLIF
    from spikeclip_deploy.targets import get_target

    torch.manual_seed(0)
    c, t = args.channels, 4
    layers, inputs = [MultiStepLIF(), conv_bn(c, c, 3, 1), MultiStepLIF()], [(-1,), (0,), (1,)]
    for _ in range(1, args.readers):
        layers += [conv_bn(c, c, 1, 1), MultiStepLIF()]
        inputs += [(len(layers) - 3,), (1, len(layers) - 2)]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, inputs), nn.Identity(), t).eval()
    with torch.no_grad():
        for conv in (m for m in enc.modules() if isinstance(m, nn.Conv2d)):
            conv.weight.mul_(6)
    current = torch.rand(1, c, 8, 8) * 2
    target = get_target("loihi")
    ctx = LoweringContext(target.name, load_profile(target.hardware), enc.input_grid.grid)
    graph = to_nir(run_passes(trace(enc, "image", current), passes_named(target.passes), ctx))
    return Workload(graph_layers(graph), graph.metadata, current.numpy().astype(np.float64), t,
                    "")


def delayed_synapses(layers: list[ChipLayer]) -> int:
    """Synapses of the delayed convolutions (border taps counted: an upper bound), which the old
    lowering holds as DelaySparse matrices."""
    n = 0
    for la in layers:
        if isinstance(la.node, nir.Conv2d) and la.node.metadata.get("delay", 0):
            h, w = conv_out_hw(la.node, tuple(np.asarray(la.node.input_shape)[-2:]))
            n += int(h * w * np.asarray(la.node.weight).size)
    return n


def child(source: str, lowering: str, args) -> None:
    """Runs in a process of its own (``getrusage`` then sees only this run's Lava processes):
    one Lava run of ``source`` ("wide" or an export); prints a JSON line."""
    w = wide_workload(args) if source == "wide" else export_workload(source, args)
    q = w.meta["input_quantization"]
    net = _Network(_lava(reference=lowering == "old"), w.layers, w.time_steps,
                   LavaBackend.handlers, q["activation_shift"], w.meta["synapse_delay_steps"],
                   w.export_dir)
    t0 = time.perf_counter()
    spikes = net.run(quantize_input(w.current, q))
    sec = time.perf_counter() - t0
    lifs = [la.name for la in w.layers if isinstance(la.node, nir.LIF)]
    print(json.dumps({"steps": net.steps(len(w.current)), "seconds": sec,
                      "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB
                      "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                      "layers": len(w.layers),
                      "delayed_synapses": delayed_synapses(w.layers),
                      "rates": {n: float(s.mean()) for n, s in zip(lifs, spikes)},
                      "sha256": {n: hashlib.sha256(s.tobytes()).hexdigest()
                                 for n, s in zip(lifs, spikes)}}))


def measured(name: str, source: str, lowering: str, args) -> dict:
    """:func:`child` in a new process; prints and returns its figures."""
    cmd = [sys.executable, __file__, "--child", source, lowering, "--images", str(args.images),
           "--data", args.data, "--channels", str(args.channels), "--readers", str(args.readers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"{name} {lowering} ({r['layers']} layers): {r['steps']} steps in {r['seconds']:.1f} s "
          f"= {r['steps'] / r['seconds']:.3f} steps/s; peak RSS builder "
          f"{r['self_kib'] / 2**20:.2f} GiB, largest Lava process {r['children_kib'] / 2**20:.2f} "
          f"GiB; LIF firing rates {' '.join(f'{x:.2f}' for x in r['rates'].values())}")
    return r


def compared(name: str, source: str, args) -> None:
    """Both lowerings of ``source``: ratios, and which LIFs' spikes differ."""
    old, new = (measured(name, source, lowering, args) for lowering in LOWERINGS)
    differ = [n for n in old["sha256"] if old["sha256"][n] != new["sha256"][n]]
    print(f"{name} speedup {new['steps'] / new['seconds'] / (old['steps'] / old['seconds']):.1f}x;"
          f" peak RSS old/new: builder {old['self_kib'] / new['self_kib']:.1f}x, largest Lava "
          f"process {old['children_kib'] / new['children_kib']:.1f}x; delayed synapses "
          f"{old['delayed_synapses'] / 1e6:.1f} M; spikes identical in every LIF: {not differ}"
          + (f" (differ: {', '.join(differ)})" if differ else ""))


def paper(args) -> None:
    r = measured("paper", args.paper_export, "new", args)
    n = r["delayed_synapses"]
    print(f"paper old (not run): DelaySparse over <= {n / 1e6:.0f} M delayed synapses, >= "
          f"{n * 16 / 2**30:.1f} GiB as csr weights and delays (int32 value + int32 index each)")


def kernels() -> None:
    from lava.proc.conv import utils

    rng = np.random.default_rng(0)
    for c_in, c_out, k, hw, groups in ((192, 384, 3, 16, 1), (384, 1536, 1, 8, 1),
                                       (1536, 384, 1, 8, 1), (384, 384, 3, 8, 384)):
        w = rng.integers(-128, 128, (c_out, k, k, c_in // groups)).astype(np.int32) * 2
        s = rng.random((hw, hw, c_in)) < 0.2
        p = k // 2
        conv = Im2colConv(w, s.shape, (1, 1), (p, p), (1, 1), groups, graded=False)
        t0 = time.perf_counter()
        want = utils.conv(s, w, (k, k), (1, 1), (p, p), (1, 1), groups)
        scipy_s = time.perf_counter() - t0
        got = conv(s)  # the first call (warm-up) is not timed
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            conv(s)
            times.append(time.perf_counter() - t0)
        fast = statistics.median(times)
        print(f"kernel {c_in}->{c_out} {k}x{k} groups {groups} at {hw}x{hw}: scipy "
              f"{scipy_s:.3f} s, im2col {1e3 * fast:.2f} ms (median of 5), ratio "
              f"{scipy_s / fast:.0f}x, identical {np.array_equal(got, want)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", help="a --target loihi export of the shipped model")
    ap.add_argument("--paper-export", help="a --target loihi export of a paper-size model")
    ap.add_argument("--data", default="../shared/data/cifar10-train.tar.gz")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("SOURCE", "LOWERING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args)
    if args.export:
        compared("shipped", args.export, args)
    print(f"wide graph: C = {args.channels} on 8x8, {args.readers} readers")
    compared("wide", "wide", args)
    if args.paper_export:
        paper(args)
    kernels()


if __name__ == "__main__":
    main()
