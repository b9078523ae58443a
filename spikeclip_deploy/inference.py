"""``spikeclip-deploy run``: zero-shot classification of one image on a backend."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .backends import get_backend
from .checkpoint import default_checkpoint_name
from .data import load_image
from .export import ExportConfig, default_out, export_model
from .prompts import parse_labels
from .zeroshot import warn_indistinct_labels

log = logging.getLogger(__name__)


def classify_image(target: str, export_dir: Path | None, image: Path, labels_text: str) -> dict:
    labels = parse_labels(labels_text)
    backend_cls = get_backend(target)
    if export_dir is None:
        export_dir = default_out(default_checkpoint_name(), target)
        if not export_dir.exists():
            log.warning("no export at %s yet: creating it from the shipped model %s (as "
                        "`spikeclip-deploy export --target %s` does)", export_dir,
                        default_checkpoint_name(), target)
            export_model(ExportConfig(model=default_checkpoint_name(), target=target,
                                      out=export_dir))
    with backend_cls(export_dir) as backend:
        warn_indistinct_labels(backend.host.tokenizer, labels)
        size = int(backend.manifest["host"]["image_size"])
        img = load_image(image, size).numpy()[None]
        class_w = backend.class_weights(labels)
        feats, _ = backend.encode_images(img)
    scores = (feats @ class_w.T)[0]
    return {"prediction": labels[int(np.argmax(scores))], "target": target,
            "export": str(export_dir),
            "scores": {lbl: float(s) for lbl, s in zip(labels, scores)}}
