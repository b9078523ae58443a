"""Runs an export's host part (the ONNX networks of :mod:`spikeclip_deploy.host`, the tokenizer
and the default labels) with onnxruntime: the run side's half of the host/chip partition."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class HostRuntime:
    """Runs an export's host part with onnxruntime, and its tokenizer."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._sessions = {name: ort.InferenceSession(str(folder / f"{name}.onnx"), opts,
                                                     providers=["CPUExecutionProvider"])
                          for name in ("image_encode", "text_encode", "image_readout", "text_readout")}
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.labels: list[str] = json.loads((folder / "labels.json").read_text())
        self.label_features = np.load(folder / "label_features.npy")

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
