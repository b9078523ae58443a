r"""CPU reference: a plain PyTorch interpreter of the float NIR graph, batched over samples.

Any graph: each layer takes the sum of its inputs of the same step (fan-in).
LIF per step (dt = 1): :math:`v \leftarrow v + (v_{leak} - v + r I)/\tau`,
:math:`s = [v > V_{th}]`, :math:`v \leftarrow v_{reset}` where :math:`s = 1`.
State is zero at the start of every sample.
"""
from __future__ import annotations

from typing import Callable

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..nirgraph import INPUT, ChipLayer, pair
from .base import Backend, chip_input


def _affine(node: nir.Affine, x: torch.Tensor) -> torch.Tensor:
    return x @ torch.as_tensor(node.weight, dtype=x.dtype).T + torch.as_tensor(node.bias, dtype=x.dtype)


def _conv2d(node: nir.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, torch.as_tensor(node.weight, dtype=x.dtype),
                    torch.as_tensor(node.bias, dtype=x.dtype), stride=pair(node.stride),
                    padding=pair(node.padding), dilation=pair(node.dilation),
                    groups=int(np.asarray(node.groups)))


class LIFState:
    def __init__(self, node: nir.LIF, dtype: torch.dtype) -> None:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        self.tau, self.r, self.v_leak = t(node.tau), t(node.r), t(node.v_leak)
        self.v_th = t(node.v_threshold)
        self.v_reset = t(node.v_reset if node.v_reset is not None else np.zeros_like(node.tau))
        self.v: torch.Tensor | None = None

    def step(self, current: torch.Tensor) -> torch.Tensor:
        v = self.v if self.v is not None else torch.zeros_like(current)
        v = v + (self.v_leak - v + self.r * current) / self.tau
        s = v > self.v_th
        self.v = torch.where(s, self.v_reset, v)
        return s.to(current.dtype)


class CPUBackend(Backend):
    """Runs the float NIR graph step by step (float64, so it is a reference, not a fast path)."""

    name = "cpu"
    handlers: dict[type, Callable] = {nir.LIF: LIFState, nir.Affine: _affine, nir.Conv2d: _conv2d}
    runs = {"cpu": "the float graph in float64",
            "loihi": "the fixed-point graph read in float64 (integer weights and thresholds, "
                     "exact decays): close to the chip, not bit-exact (its decay truncates)"}

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        x_in = torch.as_tensor(chip_input(current, self.graphs[side]), dtype=torch.float64)
        return run_graph(self.layers[side], x_in, self.time_steps, self.handlers)


def run_graph(layers: list[ChipLayer], x_in: torch.Tensor, time_steps: int,
              handlers: dict[type, Callable]) -> list[np.ndarray]:
    """Every layer in topological order at each step, on the sum of its inputs of the same step
    (the float semantics: no synaptic delay). -> spikes ``[B, T, *shape]`` of every LIF."""
    states = {la.name: LIFState(la.node, x_in.dtype) for la in layers if isinstance(la.node, nir.LIF)}
    record: dict[str, list[torch.Tensor]] = {name: [] for name in states}
    for _ in range(time_steps):
        out = {INPUT: x_in}
        for la in layers:
            x = out[la.inputs[0]]
            for extra in la.inputs[1:]:
                x = x + out[extra]
            if la.name in states:
                out[la.name] = states[la.name].step(x)
                record[la.name].append(out[la.name])
            else:
                out[la.name] = handlers[type(la.node)](la.node, x)
    return [torch.stack(record[n], 1).numpy().astype(np.uint8) for n in states]
