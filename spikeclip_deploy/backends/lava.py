r"""Lava backend: the fixed-point chip graph on Lava's bit-accurate Loihi 2 models
(``Loihi2SimCfg(select_tag="fixed_pt")``).

Each NIR node becomes a Lava process through a handler map (LIF -> ``LIF``, Affine -> ``Dense``,
Conv2d -> ``Conv``). The first LIF is driven by the host current as its per-neuron bias
(direct coding). Lava delays every synapse layer's output by one step, so one sample runs
``T + n_synapses`` steps and the k-th LIF layer's spikes are read from steps ``k .. k+T-1``
(RingBuffer sinks). Before every sample, ``u``, ``v`` and the synapses' activation buffers are
set to 0, since Lava never resets state by itself.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import nir
import numpy as np

from .. import lava_compat
from ..errors import BackendUnavailableError
from .base import Backend, quantize_input
from ..lowering.resources import pair

log = logging.getLogger(__name__)


def _lava():
    lava_compat.install()
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer
        from lava.proc.lif.process import LIF
    except ImportError as exc:
        raise BackendUnavailableError(f"the loihi target needs lava-nc and lava-dl ({exc}); "
                                      f"run `make venv`") from None
    return dict(RunSteps=RunSteps, Loihi2SimCfg=Loihi2SimCfg, Conv=Conv, Dense=Dense,
                RingBuffer=RingBuffer, LIF=LIF)


def to_lava_layout(a: np.ndarray) -> np.ndarray:
    """PyTorch ``[C, H, W]`` -> Lava ``(X, Y, C)`` = ``[W, H, C]``; 1-D unchanged."""
    return a.transpose(2, 1, 0) if a.ndim == 3 else a


def from_lava_layout(a: np.ndarray) -> np.ndarray:
    """Lava ``[W, H, C, T]`` -> ``[T, C, H, W]``; ``[N, T]`` -> ``[T, N]``."""
    return a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T


def _lif(L: dict, node: nir.LIF, shape: tuple[int, ...]) -> Any:
    q = node.metadata["loihi"]
    bias = np.asarray(node.metadata.get("bias_mant", 0))
    return L["LIF"](shape=shape, du=int(q["du"]), dv=int(q["dv"]), vth=int(q["vth"]),
                    bias_mant=bias, bias_exp=int(q["bias_exp"]))


def _dense(L: dict, node: nir.Affine, shape: tuple[int, ...]) -> Any:
    return L["Dense"](weights=np.asarray(node.weight).astype(np.int32),
                      weight_exp=int(node.metadata["loihi"]["weight_exp"]), num_message_bits=0)


def _conv(L: dict, node: nir.Conv2d, shape: tuple[int, ...]) -> Any:
    w = np.asarray(node.weight).astype(np.int32)  # [Cout, Cin, kH, kW] (correlation)
    lava_w = w.transpose(0, 3, 2, 1)[:, ::-1, ::-1].copy()  # Lava flips: true convolution
    return L["Conv"](weight=lava_w, input_shape=shape, stride=pair(node.stride)[::-1],
                     padding=pair(node.padding)[::-1], dilation=pair(node.dilation)[::-1],
                     groups=int(np.asarray(node.groups)),
                     weight_exp=int(node.metadata["loihi"]["weight_exp"]))


def synapse_bias_mant(syn: nir.NIRNode, lif: nir.LIF) -> np.ndarray:
    """Per-neuron bias mantissa (Lava layout) of the LIF after ``syn``: ``bias * 2^6 / 2^e``."""
    exp = int(lif.metadata["loihi"]["bias_exp"])
    b = np.asarray(syn.bias, dtype=np.float64) * 64.0 / 2**exp
    shape = np.asarray(lif.tau).shape
    full = np.broadcast_to(b.reshape(-1, *([1] * (len(shape) - 1))), shape)
    return to_lava_layout(np.round(full)).astype(np.int32)


class _Network:
    """One encoder's chain as connected Lava processes with spike sinks."""

    def __init__(self, L: dict, chain: list, time_steps: int,
                 handlers: dict[type, Callable]) -> None:
        self.L, self.time_steps = L, time_steps
        self.n_syn = sum(1 for _, n in chain if not isinstance(n, nir.LIF))
        self.n_steps = time_steps + self.n_syn
        self.lifs, self.synapses, self.sinks = [], [], []
        prev = None
        prev_syn = None
        for _, node in chain:
            if isinstance(node, nir.LIF):
                shape = to_lava_layout(np.zeros(np.asarray(node.tau).shape)).shape
                if prev_syn is not None:
                    node.metadata["bias_mant"] = synapse_bias_mant(prev_syn, node)
                proc = handlers[nir.LIF](L, node, shape)
                sink = L["RingBuffer"](shape=shape, buffer=self.n_steps)
                proc.s_out.connect(sink.a_in)
                if prev is not None:
                    prev.a_out.connect(proc.a_in)
                self.lifs.append(proc)
                self.sinks.append(sink)
                prev = proc
            else:
                in_shape = self.lifs[-1].s_out.shape
                proc = handlers[type(node)](L, node, in_shape)
                prev.s_out.connect(proc.s_in)
                self.synapses.append(proc)
                prev, prev_syn = proc, node
        self.started = False

    def run_sample(self, bias_mant: np.ndarray) -> list[np.ndarray]:
        first = self.lifs[0]
        bias = to_lava_layout(bias_mant).astype(np.int32)
        if not self.started:  # no runtime yet: initial values are the reset state
            first.bias_mant.init = bias
        else:
            first.bias_mant.set(bias)
            for var in [p.u for p in self.lifs] + [p.v for p in self.lifs] + [
                    s.a_buff if hasattr(s, "a_buff") else s.a_buf for s in self.synapses]:
                var.set(np.zeros(var.shape))
        first.run(condition=self.L["RunSteps"](num_steps=self.n_steps),
                  run_cfg=self.L["Loihi2SimCfg"](select_tag="fixed_pt"))
        self.started = True
        out = []
        for k, sink in enumerate(self.sinks):
            data = sink.data.get()[..., k:k + self.time_steps]
            out.append(from_lava_layout(data).astype(np.uint8))
        return out

    def stop(self) -> None:
        if self.started:
            self.lifs[0].stop()
            self.started = False


class LavaBackend(Backend):
    """Fixed-point chip simulation on Lava (exports made with ``--target loihi``)."""

    name = "loihi"
    handlers: dict[type, Callable] = {nir.LIF: _lif, nir.Affine: _dense, nir.Conv2d: _conv}

    def __init__(self, export_dir) -> None:
        super().__init__(export_dir)
        if self.manifest["target"] != "loihi":
            from ..errors import ExportError
            raise ExportError(f"{export_dir} is a '{self.manifest['target']}' export; the loihi "
                              f"backend needs one made with --target loihi")
        self._L = _lava()
        self._nets: dict[str, _Network] = {}

    def _net(self, side: str) -> _Network:
        if side not in self._nets:
            self._nets[side] = _Network(self._L, self.chains[side],
                                        self.time_steps, self.handlers)
        return self._nets[side]

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        q = self.graphs[side].metadata["input_quantization"]
        net = self._net(side)
        per_sample = [net.run_sample(quantize_input(c, q)) for c in current]
        return [np.stack([s[k] for s in per_sample]) for k in range(len(net.lifs))]

    def close(self) -> None:
        for net in self._nets.values():
            net.stop()
        self._nets.clear()
