"""Benchmark: a current max pool's ReLU levels on Lava's stock processes
(``backends/lava_pool.py``): Lava's run time per step for the paper model's two tokenizer pools
(192 x 32 x 32 -> 16 x 16 and 384 x 16 x 16 -> 8 x 8, 3x3 windows, stride 2, padding 1) and a
small one (8 x 8 x 8 -> 4 x 4), each in the tree form the lowering keeps (fewer neurons).

Each size runs random signed integer currents (within +-2^20) from a ``RingBuffer`` source
through the pool's graded relay, its levels and their readout into a graded sink, in one
network run twice: ``--steps`` steps (start-up and compilation included), then ``3 --steps``
more, whose wall time per step is the steady cost of one pool per step. It reports both runs'
times, the levels, neurons and synapses, and whether the sink's payloads equal torch's max pool
(padding -inf) of each step, the levels' hops later.

Run from the repository root::

    .venv/bin/python benchmarks/lava_pool.py [--steps 10]

Prints figures; asserts nothing about time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spikeclip_deploy.backends.lava import _lava
from spikeclip_deploy.backends.lava_layout import from_lava_layout, to_lava_layout
from spikeclip_deploy.backends.lava_pool import relu_levels
from spikeclip_deploy.exchange.current_pool import (PoolNode, cheaper_form, level_specs,
                                                    tree_costs)
from spikeclip_deploy.fileutil import owned_tempdir

SIZES = {"small": (8, (8, 8)), "paper pool 1": (192, (32, 32)), "paper pool 2": (384, (16, 16))}
KERNEL, STRIDE, PADDING = 3, 2, 1
REGISTERS = {"vth": 0, "num_message_bits": 24}


def run(levels: list[PoolNode], currents: np.ndarray, warm: int
        ) -> tuple[np.ndarray, float, float]:
    """``currents [steps, C, H, W]`` through a relay, ``levels`` and a sink, in one network run
    twice: ``warm`` steps (start-up and compilation included), then the rest: the sink's
    payloads ``[steps, C, H', W']`` and the wall time of each run."""
    L = _lava()
    steps = len(currents)
    data = np.stack([to_lava_layout(x) for x in currents], -1).astype(np.int32)
    source = L["Source"](data=data)
    relay = L["GradedVec"](shape=data.shape[:-1], vth=0)
    source.s_out.connect(relay.a_in)
    _, port = relu_levels(L, relay, levels)
    out = to_lava_layout(np.zeros(levels[0].spec.out_shape)).shape
    sink = L["GradedVec"](shape=out, vth=0)
    port.reshape(out).connect(sink.a_in)
    walls = []
    with owned_tempdir(None, "spikeclip-bench-") as tmp:
        path = f"{tmp}/sink.npy"
        L["io"].new_recording(path, steps, out, np.int32)
        sink.s_out.connect(L["io"].SpikeRecorder(shape=out, path=path).a_in)
        for n in (warm, steps - warm):
            start = time.perf_counter()
            source.run(condition=L["RunSteps"](num_steps=n), run_cfg=L["run_cfg"]())
            walls.append(time.perf_counter() - start)
        source.stop()
        rec = np.load(path).astype(np.int64)
    return from_lava_layout(np.moveaxis(rec, 0, -1)), walls[0], walls[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for label, (c, grid) in SIZES.items():
        costs = tree_costs(c, grid, KERNEL, STRIDE, PADDING)
        form = cheaper_form(costs)
        levels = [PoolNode(spec=s, metadata={"loihi": dict(REGISTERS)}) for s in
                  level_specs("pool", c, grid, KERNEL, STRIDE, PADDING, form, "relay")]
        hops = len(levels) + 1
        steps = 4 * args.steps
        currents = rng.integers(-2 ** 20, 2 ** 20, (steps, c, *grid))
        got, first, rest = run(levels, currents, args.steps)
        want = torch.nn.functional.max_pool2d(torch.from_numpy(currents[:steps - hops]).double(),
                                              KERNEL, STRIDE, PADDING)
        exact = np.array_equal(got[hops:], want.long().numpy())
        print(f"{label}: {c} x {grid[0]} x {grid[1]} -> {levels[0].spec.out_shape}, form {form}, "
              f"{costs[form]['levels']} levels, {costs[form]['neurons']:,} ReLU neurons, "
              f"{costs[form]['synapses']:,} synapses; Lava: first {args.steps} steps {first:.1f} s "
              f"(start-up and compilation included), the next {steps - args.steps} "
              f"{rest:.1f} s: {rest / (steps - args.steps) * 1000:.1f} ms a step; equals torch's "
              f"max pool: {exact}", flush=True)


if __name__ == "__main__":
    main()
