"""Runs an export's host part (the ONNX networks of :mod:`spikeclip_deploy.export.host`, the
tokenizer and the default labels) with onnxruntime: the run side's half of the host/chip
partition."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..exchange.manifest import REEXPORT


def onnx_session(path: Path, threads: int = 0):
    """An onnxruntime CPU session (``threads`` 0: onnxruntime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantize_host_output(y: np.ndarray, q: dict | None) -> np.ndarray:
    """A host op's current on the chip's input grid (``q``: its ``output_quantization``):
    :math:`\mathrm{clip}(\mathrm{round}(y\,s), \pm l)`; unchanged for a float export."""
    if q is None:
        return y
    return np.clip(np.round(y.astype(np.float64) * q["scale"]), -q["limit"], q["limit"])


class HostOpRunner:
    """One host op of an export: its ONNX function, then the chip's input grid."""

    def __init__(self, export_dir: Path, metadata: dict, threads: int = 0) -> None:
        self.session = onnx_session(Path(export_dir) / metadata["onnx"], threads)
        self.quantization = metadata.get("output_quantization")

    def __call__(self, *spikes: np.ndarray) -> np.ndarray:
        """Spikes ``[B, ...]`` per input (PyTorch layout) -> current ``[B, ...]``."""
        feeds = {f"in{k}": s.astype(np.float32) for k, s in enumerate(spikes)}
        return quantize_host_output(self.session.run(None, feeds)[0], self.quantization)


class HostRuntime:
    """Runs an export's host part with onnxruntime, and its tokenizer."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self._sessions = {name: onnx_session(folder / f"{name}.onnx")
                          for name in ("image_encode", "text_encode", "image_readout", "text_readout")}
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.labels: list[str] = json.loads((folder / "labels.json").read_text())
        try:  # never a pickle: an object array is refused, not unpickled
            self.label_features = np.load(folder / "label_features.npy", allow_pickle=False)
        except ValueError as exc:
            raise ExportError(f"{folder / 'label_features.npy'} is not a numeric array ({exc}); "
                              f"{REEXPORT}") from None

    def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        sess = self._sessions[name]
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]

    def image_current(self, images: np.ndarray) -> np.ndarray:
        return self._run("image_encode", images.astype(np.uint8))

    def text_current(self, tokens: np.ndarray) -> np.ndarray:
        return self._run("text_encode", tokens)

    def readout(self, side: str, spikes: np.ndarray) -> np.ndarray:
        """``spikes [B, T, ...]`` -> normalised embeddings ``[B, D]``."""
        return self._run(f"{side}_readout", spikes.astype(np.float32))
