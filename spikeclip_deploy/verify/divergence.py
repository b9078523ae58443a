"""Where two backends' spikes part: per sample, the first layer (in topological order) and step
at which any spike differs and how many of that layer's neurons differ; per layer, how many
spike values differ over the whole set. Integer sums, so the tallies of shards add up exactly."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: per-sample fields of a first divergence
FIELDS = ("position", "layer", "step", "neurons")


class Divergence:
    """Running comparison of backend ``a``'s spikes with backend ``b``'s on the same samples."""

    def __init__(self, lif_shapes: dict[str, tuple[int, ...]], time_steps: int) -> None:
        self.lif_shapes, self.time_steps = lif_shapes, time_steps
        self.n = 0
        self.mismatches = {name: 0 for name in lif_shapes}
        self.first: dict[str, list[int]] = {k: [] for k in FIELDS}

    def add(self, positions: np.ndarray, a: list[np.ndarray], b: list[np.ndarray]) -> None:
        """Spikes ``[B, T, *shape]`` per LIF layer of both backends on the samples at
        ``positions`` (their places in the verified selection)."""
        count = len(positions)
        first_layer = np.full(count, -1)
        step, neurons = np.zeros(count, np.int64), np.zeros(count, np.int64)
        for k, (name, x, y) in enumerate(zip(self.lif_shapes, a, b, strict=True)):
            diff = (x != y).reshape(count, self.time_steps, -1)
            self.mismatches[name] += int(diff.sum(dtype=np.int64))
            per_step = diff.any(2)  # [B, T]
            new = (first_layer < 0) & per_step.any(1)
            first_layer[new] = k
            step[new] = per_step.argmax(1)[new]
            neurons[new] = diff.any(1).sum(1)[new]
        hit = first_layer >= 0
        for key, values in zip(FIELDS, (positions, first_layer, step, neurons)):
            self.first[key] += np.asarray(values)[hit].astype(int).tolist()
        self.n += count

    def state(self) -> dict[str, Any]:
        """JSON-ready data (for the partial results of a sharded run)."""
        return {"lif_shapes": {k: list(v) for k, v in self.lif_shapes.items()},
                "time_steps": self.time_steps, "n": self.n, "mismatches": self.mismatches,
                "first": self.first}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Divergence":
        div = cls({k: tuple(v) for k, v in state["lif_shapes"].items()}, state["time_steps"])
        div.merge(state)
        return div

    def merge(self, state: dict[str, Any]) -> None:
        """Add another comparison's :meth:`state` (disjoint samples)."""
        self.n += int(state["n"])
        for name in self.mismatches:
            self.mismatches[name] += int(state["mismatches"][name])
        for key in FIELDS:
            self.first[key] += [int(v) for v in state["first"][key]]

    def report(self) -> dict[str, Any]:
        """``samples`` compared, ``samples_diverging``, ``spike_mismatches`` (all layers), per
        layer the differing spike values and their fraction, and where samples first diverge:
        per layer, how many samples, their earliest step and mean number of differing neurons;
        ``first`` lists every diverging sample (position in the selection, layer, step,
        neurons)."""
        names = list(self.lif_shapes)
        order = np.argsort(self.first["position"], kind="stable")
        first = {k: [self.first[k][i] for i in order] for k in FIELDS}
        first["layer"] = [names[k] for k in first["layer"]]
        by_layer = {}
        for name in names:
            rows = [i for i, layer in enumerate(first["layer"]) if layer == name]
            if rows:
                by_layer[name] = {"samples": len(rows),
                                  "earliest_step": min(first["step"][i] for i in rows),
                                  "neurons_mean": float(np.mean([first["neurons"][i]
                                                                 for i in rows]))}
        return {
            "samples": self.n, "samples_diverging": len(first["position"]),
            "spike_mismatches": sum(self.mismatches.values()),
            "mismatches_by_layer": {
                name: {"spikes": m, "fraction": m / (self.n * self.time_steps
                                                     * math.prod(self.lif_shapes[name]))}
                for name, m in self.mismatches.items()} if self.n else {},
            "first_divergence": by_layer, "first": first,
        }
