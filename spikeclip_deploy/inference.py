"""``spikeclip-deploy run``: zero-shot classification of images on a backend."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .backends import open_backend
from .checkpoint import default_checkpoint_name
from .data import load_image
from .errors import ExportError
from .export import ExportConfig, default_out, export_model
from .exchange.manifest import is_export
from .progress import encode_in_batches
from .prompts import parse_labels
from .zeroshot import warn_indistinct_labels

log = logging.getLogger(__name__)


def classify_images(target: str, export_dir: Path | None, images: list[Path], labels_text: str,
                    batch_size: int = 32, chip: str = "auto") -> dict:
    """Zero-shot classify ``images`` on ``target``'s backend (the default model's export when
    ``export_dir`` is None, created if missing; ``chip``: where Lava runs, see
    :func:`~.backends.open_backend`): ``{target, export, labels, results}`` with one
    ``{image, prediction, scores}`` per image."""
    labels = parse_labels(labels_text)
    if export_dir is None:
        export_dir = default_out(default_checkpoint_name(), target)
        if not export_dir.exists():
            log.warning("no export at %s yet: creating it from the shipped model %s (as "
                        "`spikeclip-deploy export --target %s` does)", export_dir,
                        default_checkpoint_name(), target)
            try:
                export_model(ExportConfig(model=default_checkpoint_name(), target=target,
                                          out=export_dir))
            except ExportError:
                if not is_export(export_dir):
                    raise
                log.warning("another run created %s meanwhile: using it", export_dir)
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
