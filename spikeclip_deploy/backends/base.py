"""The backend interface: run an export's chip graphs on a batch of input currents.

A backend implements one method, :meth:`Backend.run_chip`, dispatching NIR node types through a
``{node type: handler}`` map; the host part (ONNX) and zero-shot logic are shared here.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from ..errors import ExportError, UnsupportedNodeError
from ..exchange.fixed_point import bias_value
from ..exchange.manifest import load_export
from ..exchange.nirgraph import graph_layers, is_relay
from ..prompts import CIFAR_TEMPLATES
from ..targets import export_target
from ..zeroshot import class_weights, tokenize
from .host_runtime import HostRuntime

log = logging.getLogger(__name__)


@dataclass
class ChipRun:
    """One batch's run of a chip graph: spikes ``[B, T, *shape]`` (uint8) of every LIF, in layer
    order, and, when recorded, its ``u`` and ``v`` after every step (int64, same shape) and
    every graded stream relay's payloads (int64), and every attention population's and max
    pool level's (``[B, T, *shape]`` in its own shape, :class:`~..exchange.attention.Population`)."""

    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    u: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    payloads: dict[str, np.ndarray] = field(default_factory=dict)


def quantize_input(current: np.ndarray, q: dict) -> np.ndarray:
    """Host current -> integer bias mantissa of the first chip layer (clipped to its range)."""
    lo, hi = q["bias_mant_range"]
    return np.clip(np.round(current * q["input_scale"]), lo, hi)


def input_mantissa(current: np.ndarray, graph: nir.NIRGraph, side: str) -> np.ndarray:
    """The host current as the first LIF's input mantissa, fed through ``a_in`` (shifted by the
    activation shift) as the Lava backend feeds it; that equals the bias ``mant << bias_exp``
    only when the input exponent is the activation shift."""
    q = graph.metadata["input_quantization"]
    if q["bias_exp"] != q["activation_shift"]:
        raise ExportError(f"the {side} graph's input exponent is {q['bias_exp']}; the chip "
                          f"input enters through a_in (<< {q['activation_shift']}) and needs "
                          f"{q['activation_shift']}: re-export with this version")
    return quantize_input(current, q)


def chip_input(current: np.ndarray, graph: nir.NIRGraph) -> np.ndarray:
    """The graph's input in its own units: float current, or :math:`b_m 2^{b_e} / 2^{a}` (fixed
    point, :math:`a` the activation shift)."""
    q = graph.metadata.get("input_quantization")
    if q is None:
        return current
    return bias_value(quantize_input(current, q), q["bias_exp"], q["activation_shift"])


class Backend(ABC):
    """Loads an export; runs its chip graphs; shares the host part."""

    name: str = "abstract"
    handlers: dict[type, str] = {}
    #: export target -> what this backend computes on such an export
    runs: dict[str, str] = {}
    #: whether the constructor takes ``chip`` (auto, sim, hw: Loihi 2 hardware or a simulator)
    chip_choice: bool = False
    #: whether a run forks processes: then no other thread of this process may be running
    #: (a child gets a copy of every lock another thread holds, and never its release)
    forks: bool = False

    def __init__(self, export_dir: Path) -> None:
        self.export_dir = Path(export_dir)
        self.manifest = load_export(self.export_dir)
        target = self.manifest["target"]
        if target not in self.runs:
            raise ExportError(f"{export_dir} is a --target {target} export; the {self.name} "
                              f"backend runs exports made with --target "
                              f"{' or '.join(sorted(self.runs))}")
        #: what runs, for reports: this backend on this export
        self.description = f"{self.name} backend on a --target {target} export: {self.runs[target]}"
        if target != export_target(self.name).name:
            log.warning("%s (%s)", self.description, self.export_dir)
        self.time_steps = int(self.manifest["time_steps"])
        self.host = HostRuntime(self.export_dir / "host")
        self.graphs = {side: nir.read(self.export_dir / "chip" / f"{side}_encoder.nir")
                       for side in ("image", "text")}
        #: each encoder's chip layers in topological order, with the layers summed into each
        self.layers = {side: graph_layers(g) for side, g in self.graphs.items()}
        for side, layers in self.layers.items():
            for layer in layers:
                if type(layer.node) not in self.handlers:
                    raise UnsupportedNodeError(self.name, f"{side}/{layer.name}",
                                               type(layer.node).__name__)
                if isinstance(layer.node, nir.Scale) and not is_relay(layer.node):
                    raise UnsupportedNodeError(self.name, f"{side}/{layer.name}",
                                               "Scale that is no stream relay")

    def lif_names(self, side: str) -> list[str]:
        """The LIF layers of an encoder, in the order :meth:`run_chip` returns their spikes."""
        return [la.name for la in self.layers[side] if isinstance(la.node, nir.LIF)]

    @abstractmethod
    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        """Host currents ``[B, *in]`` -> spikes of every LIF layer (:meth:`lif_names` order,
        the last one leaves the chip), each ``[B, T, *shape]`` in PyTorch layout."""

    def close(self) -> None:
        """Release simulator resources."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- shared zero-shot pipeline ------------------------------------------------------------
    def encode_images(self, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """uint8 ``[B,3,H,W]`` -> (normalised embeddings, per-layer spikes)."""
        spikes = self.run_chip("image", self.host.image_current(images))
        return self.host.readout("image", spikes[-1]), spikes

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = tokenize(self.host.tokenizer, texts, self.manifest["host"]["context_length"])
        spikes = self.run_chip("text", self.host.text_current(tokens))
        return self.host.readout("text", spikes[-1])

    def class_weights(self, labels: list[str], templates: tuple[str, ...] = CIFAR_TEMPLATES
                      ) -> np.ndarray:
        """Per label: normalised mean of its prompts' features, computed on this backend."""
        return class_weights(self.encode_texts, labels, templates).numpy()
