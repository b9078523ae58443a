"""The SpikeCLIP paper's robustness protocols as one table: the student's float model, the
student on the chip (the emulator on a ``--target loihi`` export, bit-exact with Lava) and its
teacher, side by side, on the images verify selects.

An encoder's image features do not depend on the protocol, so each encoder encodes the images
once; a protocol changes only the class weights (labels x prompt templates, the text side).
Protocols (:func:`protocols`): the class names with CLIP's 18 CIFAR templates (baseline); the
class names followed by a whole label set as distractors; a growing fraction of the class names
replaced by synonyms; the class names with the single template ``a photo of a {}.``. A
prediction is correct only when it is the image's true class (distractors come after the class
names, so a class keeps its index). Accuracy: :math:`k/n` with its Wilson 95 % interval.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import content_digest, load_dataset
from ..errors import ConfigError
from ..fileutil import atomic_write, owned_tempdir
from ..model_source import model_source
from ..progress import progress
from ..prompts import CIFAR_TEMPLATES, SINGLE_TEMPLATE
from ..robustness import with_distractor_set, with_synonyms
from ..teachers import load_teacher
from ..zeroshot import class_weights, predict, student_text_encoder
from .harness import ExportMaker, export_made_by, open_backends
from .results import write_json
from .selection import data_record, select
from .stats import wilson_ci95

#: the synonym protocol's fractions of the class names replaced
SYNONYM_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
#: the encoders' keys, in the table's column order, and what each column is
COLUMNS = {"float": "student, float (PyTorch)",
           "emu": "student on chip (loihi-emu, bit-exact with Lava)",
           "teacher": "teacher"}
CHIP = "loihi-emu"  # the backend that runs the student's chip part


@dataclass(frozen=True)
class Protocol:
    """One row: the labels the images are classified among and their prompt templates."""

    name: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Encoder:
    """One column: uint8 images ``[B,3,H,W]`` -> features ``[B,D]``, and (labels, templates) ->
    class weights ``[L,D]`` in the same space."""

    description: str
    encode_images: Callable[[torch.Tensor], np.ndarray]
    class_weights: Callable[[list[str], tuple[str, ...]], np.ndarray]


@dataclass(frozen=True)
class RobustnessConfig:
    model: str
    data: Path
    teacher: str = "offline-minilm"
    split: str = "all"  # as verify's: all, or the training's stratified val / train split
    val_fraction: float = 0.1
    seed: int = 0
    limit: int | None = None
    batch_size: int = 64
    download: bool = False
    distractor_set: str = "cifar100"
    export: Path | None = None  # an existing --target loihi export of ``model`` to use as is
    make_export: ExportMaker | None = None  # without ``export``: writes one in a scratch dir


def protocols(classes: list[str], distractor_set: str = "cifar100") -> list[Protocol]:
    """Baseline, distractors (``distractor_set``'s labels after the classes), synonyms for each
    fraction of :data:`SYNONYM_FRACTIONS`, and the single template."""
    base = tuple(classes)
    return [Protocol("baseline: class names, 18 CIFAR templates", base, CIFAR_TEMPLATES),
            Protocol(f"distractors: + {distractor_set} labels",
                     tuple(with_distractor_set(classes, distractor_set)), CIFAR_TEMPLATES),
            *[Protocol(f"synonyms: {100 * f:.0f} % of the class names",
                       tuple(with_synonyms(classes, f)), CIFAR_TEMPLATES)
              for f in SYNONYM_FRACTIONS],
            Protocol("single template: 'a photo of a {}.'", base, SINGLE_TEMPLATE)]


def image_features(encoders: dict[str, Encoder], images: torch.Tensor, index: torch.Tensor,
                   batch_size: int) -> dict[str, np.ndarray]:
    """Every encoder's features of ``images[index]``, in batches (one pass over the images)."""
    feats: dict[str, list[np.ndarray]] = {key: [] for key in encoders}
    with progress(None, total=len(index), desc="robustness", unit="img") as bar:
        for start in range(0, len(index), batch_size):
            batch = images[index[start:start + batch_size]]
            for key, enc in encoders.items():
                feats[key].append(np.asarray(enc.encode_images(batch)))
            bar.update(len(batch))
    return {key: np.concatenate(f) for key, f in feats.items()}


def measure(encoders: dict[str, Encoder], feats: dict[str, np.ndarray], targets: np.ndarray,
            classes: list[str], rows: list[Protocol]) -> list[dict[str, Any]]:
    """Per protocol and encoder: the predictions (label indices), how many are the ``targets``
    (indices into ``classes``), accuracy and its 95 % interval; and which class names the
    protocol renamed."""
    out = []
    for p in rows:
        preds = {key: predict(feats[key], enc.class_weights(list(p.labels), p.templates))
                 for key, enc in encoders.items()}
        correct = {key: int((pr == targets).sum()) for key, pr in preds.items()}
        out.append({"protocol": p.name, "labels": list(p.labels), "templates": list(p.templates),
                    "renamed": {c: s for c, s in zip(classes, p.labels) if c != s},
                    "correct": correct,
                    "accuracy": {k: c / len(targets) for k, c in correct.items()},
                    "accuracy_ci95": {k: wilson_ci95(c, len(targets)) for k, c in correct.items()},
                    "predictions": {k: pr.tolist() for k, pr in preds.items()}})
    return out


def _student(model, tokenizer) -> Encoder:
    def encode(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.encode_image(images).numpy()

    text = student_text_encoder(model, tokenizer)
    return Encoder(COLUMNS["float"], encode,
                   lambda labels, templates: class_weights(text, labels, templates).numpy())


def _chip(backend) -> Encoder:
    return Encoder(backend.description, lambda images: backend.encode_images(images.numpy())[0],
                   backend.class_weights)


def _teacher(spec: str) -> tuple[Encoder, dict[str, Any]]:
    teacher = load_teacher(spec)
    return Encoder(f"teacher {spec}", lambda images: teacher.encode_images(images).numpy(),
                   lambda labels, templates: teacher.class_weights(labels, templates).numpy()
                   ), teacher.describe()


def robustness_table(cfg: RobustnessConfig) -> dict[str, Any]:
    """The protocols' accuracies for the student (float and on chip) and the teacher, on the
    images ``verify`` selects with the same data options."""
    model, tokenizer, info = model_source(cfg.model)
    if model.cfg.ann_reason():
        raise ConfigError(f"{info['name']} is an ANN ({model.cfg.ann_reason()}): it has no chip "
                          f"part; pass a spiking model")
    ds = load_dataset(cfg.data, model.cfg.image_size, download=cfg.download)
    sel = select(ds, cfg.split, cfg.val_fraction, cfg.seed, cfg.limit)
    classes = list(ds.class_names)
    rows = protocols(classes, cfg.distractor_set)
    teacher, described = _teacher(cfg.teacher)
    with owned_tempdir(None, "spikeclip-robustness-") as workdir, ExitStack() as stack:
        export_dir = cfg.export or export_made_by(cfg.make_export, cfg.model, "loihi",
                                                  "checkpoint", 0, workdir / "loihi")
        chip = open_backends(stack, {"emu": CHIP}, export_dir, info)
        encoders = {"float": _student(model, tokenizer), "emu": _chip(chip["emu"]),
                    "teacher": teacher}
        feats = image_features(encoders, ds.images, sel.index, cfg.batch_size)
        targets = ds.labels[sel.index].numpy()
        measured = measure(encoders, feats, targets, classes, rows)
    return {"model": info["name"], "checkpoint_sha256": info["checkpoint_sha256"],
            "export": str(cfg.export) if cfg.export else None, "teacher": described,
            "data": data_record(cfg.data, cfg.split, cfg.val_fraction, cfg.seed, cfg.limit, sel,
                                content_digest(ds)),
            "n": sel.total, "classes": classes, "index": sel.index.tolist(),
            "targets": targets.tolist(),
            "columns": {key: enc.description for key, enc in encoders.items()},
            "rows": measured}


def _cell(row: dict[str, Any], key: str) -> str:
    lo, hi = row["accuracy_ci95"][key]
    return f"{100 * row['accuracy'][key]:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}]"


def markdown(table: dict[str, Any]) -> str:
    """The table as Markdown, with the images and the synonyms used."""
    keys = list(table["columns"])
    lines = ["| protocol | labels | templates | " + " | ".join(
                f"{COLUMNS[k]} [95 %]" for k in keys) + " |",
             "|---" * (3 + len(keys)) + "|"]
    for r in table["rows"]:
        lines.append(f"| {r['protocol']} | {len(r['labels'])} | {len(r['templates'])} | "
                     + " | ".join(_cell(r, k) for k in keys) + " |")
    d = table["data"]
    renamed = max((r["renamed"] for r in table["rows"]), key=len)
    lines += ["", f"Images: {table['n']} of {d['source']} ({d['split']} split, seed {d['seed']}"
              + (f", first {d['limit']}" if d["limit"] else "") + f"); model {table['model']}, "
              f"teacher {table['teacher']['name']}. A prediction counts only when it is the "
              f"image's class.",
              "Synonyms (all of them; a fraction renames a seeded choice of the class names): "
              + ", ".join(f"{c} -> {s}" for c, s in renamed.items()) + "."]
    return "\n".join(lines) + "\n"


def write_table(cfg: RobustnessConfig, json_out: Path | None, markdown_out: Path | None
                ) -> dict[str, Any]:
    """:func:`robustness_table`, written as JSON and Markdown."""
    table = robustness_table(cfg)
    if json_out is not None:
        write_json(Path(json_out), table)
    if markdown_out is not None:
        atomic_write(Path(markdown_out), lambda tmp: tmp.write_text(markdown(table)))
    return table
