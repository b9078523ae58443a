"""Benchmark: spiking self-attention's populations on Lava's stock processes
(``backends/lava_attention.py``): how Lava's run time and memory grow with the product neurons
(N d^2 per head and stage, K first), and which lowering of the populations Lava runs best:

- ``per-head``: one process per head and population, synapses as ``Sparse`` / ``DelaySparse``
  (the backend's lowering: the chip graph's nodes one to one);
- ``merged``: every head's neurons of a stage in one process (the heads' synapse matrices
  stacked), ``Sparse`` / ``DelaySparse``;
- ``dense``: ``merged`` with ``Dense`` / ``DelayDense`` over the dense-equivalent matrices
  (skipped, with their size, where they pass ``--dense-limit``).

Every Lava run is a process of its own, on random Q, K and V spikes (density 0.3) of an 8 x 8
token grid (N = 64, the small SSA model's), 2 heads of d channels, from ``RingBuffer`` sources
through every population and the y synapses into one sink (the attention LIF's input port);
it runs ``--steps`` and ``3 --steps`` steps and reports the wall time of each run (start-up
and compilation included), the time per step between them (the steady cost of one attention
layer per step), its peak memory (the proportional set size of its whole process tree,
sampled every 0.2 s: Lava forks a process per Lava process, sharing the parent's pages) and
whether the sink's input equals numpy's w (Q K^T V) of every step.

Run from the repository root::

    .venv/bin/python benchmarks/lava_attention.py [--d 8 16 32 64]

Prints figures; asserts nothing about time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

VARIANTS = ("per-head", "merged", "dense")
TOKENS_HW = (8, 8)
HEADS = 2
WEIGHT = 2
#: synapse hops from the sources to the sink: K, V -> kv -> m -> qm -> y -> sink
HOPS = 5
REGISTERS = {"product": {"vth": 0, "exp": 0, "num_message_bits": 24},
             "sum": {"vth": 0, "num_message_bits": 24}}
ALIGNED = {"qm": (2, 0)}


def tree_pss(root: int) -> int:
    """Proportional set size (bytes) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except OSError:
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total


def dense_lava(L: dict) -> dict:
    """``L`` with ``Sparse`` and ``DelaySparse`` built as ``Dense`` and ``DelayDense``."""
    def dense(weights, **kw):
        return L["Dense"](weights=weights.toarray(), **kw)

    def delay_dense(weights, delays, **kw):
        return L["DelayDense"](weights=weights.toarray(), delays=delays.toarray(), **kw)
    return {**L, "Sparse": dense, "DelaySparse": delay_dense}


def head_nodes(d: int) -> list[list]:
    """Per head, its four populations (K first) on the LIFs ``q``, ``k``, ``v``."""
    from spikeclip_deploy.exchange.attention import AttentionNode, head_specs

    return [[AttentionNode(spec=s, weight=WEIGHT if s.stage == "y" else 1.0,
                           delays=ALIGNED.get(s.stage, ()),
                           metadata={"loihi": dict(REGISTERS[s.kind])})
             for s in head_specs("attn", h, HEADS, TOKENS_HW, d, "k_first", ("q", "k", "v"))]
            for h in range(HEADS)]


def wire(L: dict, variant: str, d: int, sources: dict, sink) -> None:
    """The populations between ``sources`` (``q``, ``k``, ``v``) and ``sink``."""
    from scipy.sparse import block_diag, hstack, vstack

    from spikeclip_deploy.backends import lava_attention as la
    from spikeclip_deploy.backends.lava_sparse import sparse_synapse

    heads = head_nodes(d)
    if variant == "per-head":
        groups = [[[node] for node in head] for head in heads]
    else:  # one group per stage, every head in it
        groups = [[[head[s] for head in heads] for s in range(len(heads[0]))]]
    for stages in groups:
        procs: dict[str, object] = dict(sources)
        for nodes in stages:
            first = nodes[0]
            neurons = sum(n.population.neurons for n in nodes)
            kind = first.population.kind
            proc = (L["ProdNeuron"](shape=(neurons,), vth=0, exp=0) if kind == "product"
                    else L["GradedVec"](shape=(neurons,), vth=0))
            for k, port in enumerate(la.in_ports(proc)):
                parts = [la.port_weights(n, k) for n in nodes]
                weights = (vstack(parts) if first.population.binary(k) else
                           block_diag(parts)).tocsr()
                syn = sparse_synapse(L, weights, la.port_bits(first, k), first.delays[k])
                src = procs[first.spec.ports[k]]
                (src.flatten() if len(src.shape) > 1 else src).connect(syn.s_in)
                syn.a_out.connect(port)
            procs[first.spec.stage] = proc.s_out
        ys = stages[-1]  # the heads' y synapses side by side
        syn = sparse_synapse(L, hstack([la.output_weights(n) for n in ys]).tocsr(),
                             la.port_bits(ys[0], 0), 0, la.weight_mantissa(WEIGHT, "y")[1])
        procs["y"].connect(syn.s_in)
        syn.a_out.connect(sink.a_in)


def run_one(d: int, variant: str, steps: int) -> dict:
    """One Lava run (in this process) -> its figures."""
    from spikeclip_deploy.backends.lava import _lava, no_inherited_garbage
    from spikeclip_deploy.backends.lava_layout import to_lava_layout

    L = _lava()
    from lava.proc.io.sink import RingBuffer as Sink

    if variant == "dense":
        L = dense_lava(L)
    h, w = TOKENS_HW
    c = HEADS * d
    rng = np.random.default_rng(0)
    spikes = {n: (rng.random((steps + HOPS, c, h, w)) < 0.3).astype(np.int32) for n in "qkv"}
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss(os.getpid()))
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()
    start = time.perf_counter()
    sources = {n: L["Source"](data=np.stack([to_lava_layout(x) for x in s], -1))
               for n, s in spikes.items()}
    sink = Sink(shape=(c * h * w,), buffer=steps + HOPS)
    wire(L, variant, d, {n: s.s_out for n, s in sources.items()}, sink)
    with no_inherited_garbage():
        sources["q"].run(condition=L["RunSteps"](num_steps=steps + HOPS), run_cfg=L["run_cfg"]())
    wall = time.perf_counter() - start
    done.set()
    got = sink.data.get().T.reshape(steps + HOPS, w, h, c).transpose(0, 3, 2, 1)
    sources["q"].stop()
    exact = not got[:HOPS].any()
    for t in range(steps):
        q, k, v = (spikes[n][t].reshape(HEADS, d, h * w).transpose(0, 2, 1).astype(np.int64)
                   for n in "qkv")
        y = ((q @ k.transpose(0, 2, 1)) @ v).transpose(0, 2, 1).reshape(c, h, w)
        exact &= bool(np.array_equal(got[t + HOPS], WEIGHT * y))
    return dict(wall_s=wall, peak_pss_gb=peak[0] / 1e9, exact=exact)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, nargs="+", default=[8, 16, 32, 64],
                    help="channels per head (N = 64 tokens, 2 heads)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--dense-limit", type=float, default=1.0,
                    help="largest dense-equivalent synapse matrices to run, GB (int32)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # d variant steps: a child run
    args = ap.parse_args()
    if args.one:
        d, variant, steps = args.one
        print(json.dumps(run_one(int(d), variant, int(steps))))
        return
    n = TOKENS_HW[0] * TOKENS_HW[1]
    print(f"load average {os.getloadavg()}; N = {n} tokens, {HEADS} heads, K first")
    print("d, N d^2 per head and stage, variant: wall s (S / 3S steps), s per step, peak GB, "
          "exact")
    for d in args.d:
        products = HEADS * n * d * d  # neurons of one product stage
        c = HEADS * d
        # dense-equivalent entries: kv's and qm's Q/K/V ports, m's, qm's M port, y's, y -> sink
        entries = 3 * products * n * c + 2 * products * HEADS * d * d + 2 * n * c * products
        dense_gb = 4 * entries / 1e9
        for variant in VARIANTS:
            if variant == "dense" and dense_gb > args.dense_limit:
                print(f"{d}, {n * d * d}, dense: skipped, its matrices hold {dense_gb:.1f} GB")
                continue
            runs = []
            for steps in (args.steps, 3 * args.steps):
                out = subprocess.run([sys.executable, __file__, "--one", str(d), variant,
                                      str(steps)], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{d} {variant} {steps}: {out.stderr[-2000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            per_step = (runs[1]["wall_s"] - runs[0]["wall_s"]) / (2 * args.steps)
            print(f"{d}, {n * d * d}, {variant}: {runs[0]['wall_s']:.1f} / "
                  f"{runs[1]['wall_s']:.1f}, {per_step:.3f}, "
                  f"{max(r['peak_pss_gb'] for r in runs):.2f}, "
                  f"{all(r['exact'] for r in runs)}", flush=True)


if __name__ == "__main__":
    main()
