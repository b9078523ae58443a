"""Label names and prompt templates of zero-shot benchmarks, the distillation text set, and
label / template sets given by name, file or list (:func:`resolve_labels`,
:func:`resolve_templates`).

CIFAR-10/100 and STL-10 names are torchvision's class names; the others and all templates come
from the data files of ``clip-benchmark`` (the CLIP paper's names and prompts), read without
importing that package.
"""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError, DataError
from .prompts import (CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR_TEMPLATES, SINGLE_TEMPLATE,
                      distinct_labels, parse_labels)

STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_BUILTIN = {"cifar10": CIFAR10_CLASSES, "cifar100": tuple(CIFAR100_CLASSES), "stl10": STL10_CLASSES}
# clip-benchmark's keys for the datasets we name differently
_ALIASES = {"flowers102": "flowers", "oxford_pets": "pets", "imagenet": "imagenet1k"}
DATASETS = ("cifar10", "cifar100", "stl10", "caltech101", "flowers102", "oxford_pets", "imagenet1k")
# template-set names: CIFAR's 18, the bare "a photo of a {}.", ImageNet's 80, each dataset's own
TEMPLATE_SETS = ("cifar", "single", "imagenet", *DATASETS)


@lru_cache(maxsize=None)
def _clip_benchmark_json(name: str) -> dict:
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("label sets beyond CIFAR/STL need clip-benchmark's data files; run `make venv`")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / name
    return json.loads(path.read_text())


def label_set(dataset: str) -> tuple[str, ...]:
    """Class names of a dataset, in its label order."""
    key = _ALIASES.get(dataset, dataset)
    if key in _BUILTIN:
        return tuple(c.replace("_", " ") for c in _BUILTIN[key])
    names = _clip_benchmark_json("en_classnames.json")
    if key not in names:
        raise ConfigError(f"no label set for '{dataset}'; known: {', '.join(DATASETS)}")
    return tuple(names[key])


def templates(dataset: str) -> tuple[str, ...]:
    """Prompt templates (``{c}`` -> label) for a dataset; CIFAR's 18 are the fallback."""
    key = _ALIASES.get(dataset, dataset)
    if key in ("cifar10", "cifar100"):
        return CIFAR_TEMPLATES
    found = _clip_benchmark_json("en_zeroshot_classification_templates.json").get(key)
    return tuple(t.replace("{c}", "{}") for t in found) if found else CIFAR_TEMPLATES


def distillation_text_set(datasets: tuple[str, ...] = DATASETS) -> list[str]:
    """Labels of many datasets x their templates, deduplicated, in a stable order."""
    seen: dict[str, None] = {}
    for ds in datasets:
        for label in label_set(ds):
            for t in templates(ds):
                seen.setdefault(t.format(label), None)
    return list(seen)


def resolve_labels(spec: str, class_names: tuple[str, ...]) -> list[str]:
    """Zero-shot labels for a dataset whose classes are ``class_names`` (its label order).

    ``spec`` is a label-set name of :data:`DATASETS`, else a text file (one label per line;
    blank lines and lines starting with ``#`` skipped), else a comma list (``"cat,dog,ship"``).
    Underscores become spaces. A count other than ``len(class_names)``, or the dataset's own
    class names in another order, is a DataError.
    """
    spec = spec.strip()
    if spec in DATASETS:
        labels, what = list(label_set(spec)), f"label set '{spec}'"
    elif _names_a_file(spec):
        path = Path(spec).expanduser()
        labels = [text.replace("_", " ") for _, text in _spec_lines(path, "label")]
        labels, what = distinct_labels(labels, f" in {path}"), str(path)
    else:
        labels, what = parse_labels(spec), "the label list"
    n = len(class_names)
    if len(labels) != n:
        raise DataError(f"{what} has {len(labels)} labels but the dataset has {n} classes "
                        f"({_preview(class_names, 3)}); pass a label-set name ({', '.join(DATASETS)}), a file or a "
                        f"comma list with {n} labels, in the dataset's class order")
    own = [c.replace("_", " ").lower() for c in class_names]
    given = [lbl.lower() for lbl in labels]
    if sorted(own) == sorted(given) and own != given:
        i = next(i for i, (a, b) in enumerate(zip(own, given)) if a != b)
        raise DataError(f"{what} names the dataset's classes in another order: class {i} is "
                        f"'{class_names[i]}' but label {i} is '{labels[i]}'; list the labels in "
                        f"the dataset's class order ({_preview(class_names, 10)})")
    return labels


def resolve_templates(spec: str) -> tuple[str, ...]:
    """Prompt templates (``{}`` -> label) from a name of :data:`TEMPLATE_SETS` or a text file
    (one template per line, each with exactly one ``{}`` and no other braces; blank lines and
    lines starting with ``#`` skipped)."""
    spec = spec.strip()
    if spec == "cifar":
        return CIFAR_TEMPLATES
    if spec == "single":
        return SINGLE_TEMPLATE
    if spec in TEMPLATE_SETS:
        return templates(spec)
    if not _names_a_file(spec):
        raise DataError(f"unknown template set '{spec}'; pass one of {', '.join(TEMPLATE_SETS)} "
                        f"or a text file with one template per line, e.g. 'a photo of a {{}}.'")
    path = Path(spec).expanduser()
    found = []
    for number, text in _spec_lines(path, "template"):
        if text.count("{") != 1 or text.count("}") != 1 or "{}" not in text:
            raise DataError(f"line {number} of {path} ({text!r}) is not a template: each line "
                            f"needs exactly one '{{}}' where the label goes and no other braces, "
                            f"e.g. 'a photo of a {{}}.'")
        found.append(text)
    return tuple(found)


def _preview(names: tuple[str, ...], k: int) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def _names_a_file(spec: str) -> bool:
    """``spec`` names a file: an existing path, or one with a folder or a ``.txt`` suffix (a
    missing file then gets its own error, not a one-label list)."""
    path = Path(spec).expanduser()
    return "," not in spec and (path.exists() or "/" in spec or path.suffix == ".txt")


def _spec_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of a label or template file's non-blank, non-``#`` lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{what} file {path} does not exist; pass an existing file (or a "
                        f"{what}-set name)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} file {path} ({exc}); pass a UTF-8 text file with "
                        f"one {what} per line") from None
    kept = [(i, t.strip()) for i, t in enumerate(lines, 1) if t.strip() and
            not t.strip().startswith("#")]
    if not kept:
        raise DataError(f"{what} file {path} holds no {what}s; write one {what} per line")
    return kept
