"""``spikeclip-deploy run``: zero-shot classification of images on a backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import open_backend
from .data import load_image
from .progress import encode_in_batches
from .prompts import parse_labels
from .zeroshot import warn_indistinct_labels


def classify_images(target: str, export_dir: Path, images: list[Path], labels_text: str,
                    batch_size: int = 32, chip: str = "auto") -> dict:
    """Zero-shot classify ``images`` on ``target``'s backend over the export ``export_dir``
    (``chip``: where Lava runs, see :func:`~.backends.open_backend`): ``{target, export,
    labels, results}`` with one ``{image, prediction, scores}`` per image."""
    labels = parse_labels(labels_text)
    with open_backend(target, export_dir, chip) as backend:
        warn_indistinct_labels(backend.host.tokenizer, labels)
        size = int(backend.manifest["host"]["image_size"])
        pixels = np.stack([load_image(p, size).numpy() for p in images])  # all checked first
        class_w = backend.class_weights(labels)
        feats, _ = encode_in_batches(backend.encode_images, pixels, batch_size,
                                     f"{target} backend")
    results = [{"image": str(path), "prediction": labels[int(np.argmax(scores))],
                "scores": {lbl: float(s) for lbl, s in zip(labels, scores)}}
               for path, scores in zip(images, feats @ class_w.T)]
    return {"target": target, "export": str(export_dir), "labels": labels, "results": results}
