"""Label names and prompt templates of zero-shot benchmarks, and the distillation text set.

CIFAR-10/100 and STL-10 names are torchvision's class names; the others and all templates come
from the data files of ``clip-benchmark`` (the CLIP paper's names and prompts), read without
importing that package.
"""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError
from .prompts import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR_TEMPLATES

STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_BUILTIN = {"cifar10": CIFAR10_CLASSES, "cifar100": tuple(CIFAR100_CLASSES), "stl10": STL10_CLASSES}
# clip-benchmark's keys for the datasets we name differently
_ALIASES = {"flowers102": "flowers", "oxford_pets": "pets", "imagenet": "imagenet1k"}
DATASETS = ("cifar10", "cifar100", "stl10", "caltech101", "flowers102", "oxford_pets", "imagenet1k")


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
