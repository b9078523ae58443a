"""Benchmark: the Lava backend's convolution lowering, Lava's stock one (``old``: scipy
``PyConvModelFixed``, a delayed convolution as ``DelaySparse`` over its dense-equivalent matrix)
against this package's (``new``: im2col ``PyConvModelFast``, ``DelayConv``), side by side in one
run:

1. ``shipped``: the image encoder of a ``--target loihi`` export (``--export``) on ``--images``
   CIFAR-10 images (``--data``), both lowerings: wall time of the Lava run (start-up included),
   steps/s, and whether every LIF's spikes agree.
2. ``wide``: a residual graph at the paper's width: a 3x3 C->C convolution on 8x8 tokens read by
   ``--readers`` LIFs (so ``--readers - 1`` delayed copies), 1x1 C->C convolutions between them,
   ``--channels`` C, random weights and input. Each lowering runs in a process of its own, which
   reports steps/s and its peak resident memory (``getrusage`` maxrss: its own, holding the
   network it built, and that of its largest Lava process, which includes the pages it shares
   with its parent).
3. ``kernels``: one step of the paper-size convolutions (spikeclip-vit4-384-native: 3x3 192->384
   at 16x16, 1x1 384->1536 and 1536->384 at 8x8, depthwise 3x3 384 at 8x8), Lava's ``conv``
   (scipy, what ``PyConvModelFixed`` calls) against :class:`Im2colConv`, outside Lava.
4. ``paper`` (with ``--paper``): the image graph of a random initialisation of
   ``spikeclip-vit4-384-native`` (lowered with the loihi passes but ``check_limits``, which
   refuses it on one chip) on ``--images`` random images, in a process of its own, on the new
   lowering only; for the old one it prints the size of the dense-equivalent matrices of the
   delayed convolutions (the ``kernels`` ratios give its time). With random weights most of its
   LIFs stay silent; the new lowering's matrix products cost the same whatever the spikes.

Run from the repository root (after ``spikeclip-deploy export --target loihi --model
spikeclip-native-small-cifar10 --out /tmp/lc/ns``)::

    .venv/bin/python benchmarks/lava_conv.py --export /tmp/lc/ns [--images 2] [--paper]

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

import nir
import numpy as np

from spikeclip_deploy.backends.base import quantize_input
from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network
from spikeclip_deploy.backends.lava_procs.conv import Im2colConv
from spikeclip_deploy.nirgraph import ChipLayer, conv_out_hw, graph_layers

LOWERINGS = ("old", "new")
T = 4  # time steps of the wide and paper graphs


def run_network(layers: list[ChipLayer], meta: dict, x: np.ndarray, time_steps: int,
                lowering: str) -> tuple[list[np.ndarray], int, float]:
    """Spikes of every LIF, the steps simulated and the wall time of one Lava run."""
    q = meta["input_quantization"]
    net = _Network(_lava(reference=lowering == "old"), layers, time_steps, LavaBackend.handlers,
                   q["activation_shift"], meta["synapse_delay_steps"])
    t0 = time.perf_counter()
    spikes = net.run(quantize_input(x, q))
    return spikes, len(x) * net.period, time.perf_counter() - t0


def shipped(args) -> None:
    from spikeclip_deploy.data import load_dataset

    backend = LavaBackend(args.export)
    images = load_dataset(args.data).images[:args.images].numpy()
    current = backend.host.image_current(images)
    meta = backend.graphs["image"].metadata
    out = {}
    for lowering in LOWERINGS:
        out[lowering] = run_network(backend.layers["image"], meta, current, backend.time_steps,
                                    lowering)
        _, steps, sec = out[lowering]
        print(f"shipped {lowering}: {steps} steps in {sec:.1f} s = {steps / sec:.2f} steps/s")
    print(f"shipped speedup (new steps/s over old): {out['old'][2] / out['new'][2]:.1f}x")
    for name, a, b in zip(backend.lif_names("image"), out["old"][0], out["new"][0]):
        if not np.array_equal(a, b):
            print(f"  {name}: spikes differ at {np.count_nonzero(a != b)} of {a.size} "
                  f"(old {a.mean():.3f}, new {b.mean():.3f} firing rate)")
    print(f"shipped spikes identical in every LIF: "
          f"{all(np.array_equal(a, b) for a, b in zip(out['old'][0], out['new'][0]))}")
    wrapped = [la.name for la in backend.layers["image"] if isinstance(la.node, nir.Conv2d)
               and int(np.asarray(la.node.groups)) >= 128 and not la.node.metadata.get("delay")]
    print(f"  undelayed convolutions with >= 128 groups, which Lava's stock Conv model (groups in "
          f"an int8 Var) gets wrong: {', '.join(wrapped) or 'none'}")


def lowered(enc, side: str, example, skip: tuple[str, ...] = ()) -> nir.NIRGraph:
    """``enc``'s chip graph through the loihi target's passes (but ``skip``), as the run side
    reads it."""
    from spikeclip_deploy.hardware import load_profile
    from spikeclip_deploy.lowering.graph import run_passes, to_nir, trace
    from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
    from spikeclip_deploy.targets import get_target

    target = get_target("loihi")
    g = trace(enc, side, example)
    ctx = LoweringContext("loihi", load_profile(target.hardware), enc.input_grid.grid)
    passes = tuple(p for p in target.passes if p not in skip)
    return to_nir(run_passes(g, passes_named(passes), ctx))


def wide_graph(args) -> tuple[nir.NIRGraph, np.ndarray]:
    """A 3x3 conv read by ``args.readers`` LIFs, 1x1 convs between them, their initial weights
    x6 so that every LIF fires (about 10 % in the float model); a random current."""
    import torch
    from torch import nn

    from spikeclip_deploy.nn.chip_graph import ChipGraph
    from spikeclip_deploy.nn.encoders import SpikingEncoder, conv_bn
    from spikeclip_deploy.nn.lif import MultiStepLIF

    torch.manual_seed(0)
    c = args.channels
    layers, inputs = [MultiStepLIF(), conv_bn(c, c, 3, 1), MultiStepLIF()], [(-1,), (0,), (1,)]
    for _ in range(1, args.readers):
        layers += [conv_bn(c, c, 1, 1), MultiStepLIF()]
        inputs += [(len(layers) - 3,), (1, len(layers) - 2)]
    enc = SpikingEncoder(nn.Identity(), ChipGraph(layers, inputs), nn.Identity(), T).eval()
    with torch.no_grad():
        for conv in (m for m in enc.modules() if isinstance(m, nn.Conv2d)):
            conv.weight.mul_(6)
    current = torch.rand(1, c, 8, 8) * 2
    return lowered(enc, "image", current, ("check_limits",)), current.numpy().astype(np.float64)


def paper_graph(args) -> tuple[nir.NIRGraph, np.ndarray]:
    """spikeclip-vit4-384-native, random initialisation: its image graph, ``args.images``
    random images' current."""
    import torch

    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP

    torch.manual_seed(0)
    model = SpikeCLIP(get_config("spikeclip-vit4-384-native")).eval()
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        current = model.image.current(model.normalize(images))
    graph = lowered(model.image, "image", current[:1], ("check_limits",))
    return graph, current.numpy().astype(np.float64)


GRAPHS = {"wide": wide_graph, "paper": paper_graph}


def delayed_synapses(layers: list[ChipLayer]) -> int:
    """Synapses of the delayed convolutions (border taps counted: an upper bound), which the old
    lowering holds as DelaySparse matrices."""
    n = 0
    for la in layers:
        if isinstance(la.node, nir.Conv2d) and la.node.metadata.get("delay", 0):
            h, w = conv_out_hw(la.node, tuple(np.asarray(la.node.input_shape)[-2:]))
            n += int(h * w * np.asarray(la.node.weight).size)
    return n


def child(graph: str, lowering: str, args) -> None:
    """Runs in a process of its own (``getrusage`` then sees only this run's Lava processes):
    one lowering of one graph; prints a JSON line."""
    g, current = GRAPHS[graph](args)
    layers = graph_layers(g)
    spikes, steps, sec = run_network(layers, g.metadata, current, T, lowering)
    kib = lambda who: resource.getrusage(who).ru_maxrss  # noqa: E731 (KiB on Linux)
    print(json.dumps({"steps": steps, "seconds": sec, "self_kib": kib(resource.RUSAGE_SELF),
                      "children_kib": kib(resource.RUSAGE_CHILDREN), "layers": len(layers),
                      "delayed_synapses": delayed_synapses(layers),
                      "rates": [float(s.mean()) for s in spikes],
                      "spikes_sha256": hashlib.sha256(b"".join(s.tobytes() for s in spikes)
                                                      ).hexdigest()}))


def measured(graph: str, lowering: str, args) -> dict:
    """:func:`child` in a new process; prints and returns its figures."""
    cmd = [sys.executable, __file__, "--child", graph, lowering, "--images", str(args.images),
           "--channels", str(args.channels), "--readers", str(args.readers)]
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True
                                  ).stdout.strip().splitlines()[-1])
    print(f"{graph} {lowering} ({r['layers']} layers): {r['steps']} steps in {r['seconds']:.1f} s "
          f"= {r['steps'] / r['seconds']:.3f} steps/s; peak RSS builder "
          f"{r['self_kib'] / 2**20:.2f} GiB, largest Lava process {r['children_kib'] / 2**20:.2f} "
          f"GiB; LIF firing rates {' '.join(f'{x:.2f}' for x in r['rates'])}")
    return r


def wide(args) -> None:
    print(f"wide graph: C = {args.channels} on 8x8, {args.readers} readers")
    old, new = (measured("wide", lowering, args) for lowering in LOWERINGS)
    print(f"wide speedup {new['steps'] / new['seconds'] / (old['steps'] / old['seconds']):.1f}x; "
          f"peak RSS old/new: builder {old['self_kib'] / new['self_kib']:.1f}x, largest Lava "
          f"process {old['children_kib'] / new['children_kib']:.1f}x; delayed synapses "
          f"{old['delayed_synapses'] / 1e6:.0f} M; spikes identical in every LIF: "
          f"{old['spikes_sha256'] == new['spikes_sha256']}")


def paper(args) -> None:
    r = measured("paper", "new", args)
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
    ap.add_argument("--data", default="../shared/data/cifar10-train.tar.gz")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--paper", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("GRAPH", "LOWERING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args)
    wide(args)  # first: a child's peak RSS starts from its parent's size when it forks
    if args.paper:
        paper(args)
    kernels()
    if args.export:
        shipped(args)


if __name__ == "__main__":
    main()
