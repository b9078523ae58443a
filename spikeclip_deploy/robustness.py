"""The paper's robustness protocols (Table 2) as transformations of a label list.

* noisy labels: extend the ``n`` true labels to ``factor * n`` with unrelated distractors (CIFAR-100
  names not among them), or by a whole named label set (:func:`with_distractor_set`); a
  prediction of a distractor is wrong.
* unseen labels: replace a fraction of the label names by synonyms.

Accuracy is always measured against the true class, whose index is unchanged (distractors are
appended after the true labels).
"""
from __future__ import annotations

import math
import random

from .errors import ConfigError
from .label_sets import label_set

SYNONYMS = {
    "airplane": "aircraft", "automobile": "car", "bird": "songbird", "cat": "tabby cat",
    "deer": "roe deer", "dog": "puppy", "frog": "toad", "horse": "pony", "ship": "boat",
    "truck": "pickup truck",
}


def distractors(labels: list[str], dataset: str = "cifar100") -> list[str]:
    """The labels of the label set ``dataset`` that are not among ``labels``, in its order."""
    return [c for c in label_set(dataset) if c not in labels]


def with_distractor_set(labels: list[str], dataset: str) -> list[str]:
    """``labels`` followed by every label of the label set ``dataset`` not among them."""
    return list(labels) + distractors(labels, dataset)


def with_distractors(labels: list[str], factor: int, seed: int = 0) -> list[str]:
    """``labels`` followed by ``(factor - 1) * len(labels)`` unrelated labels (CIFAR-100's)."""
    if factor < 1:
        raise ConfigError(f"the noisy-label factor must be >= 1, got {factor}")
    pool = distractors(labels)
    need = (factor - 1) * len(labels)
    if need > len(pool):
        raise ConfigError(f"factor {factor} needs {need} distractors; only {len(pool)} are available")
    return list(labels) + random.Random(seed).sample(pool, need)


def with_synonyms(labels: list[str], fraction: float, seed: int = 0) -> list[str]:
    """Replace ``ceil(fraction * n)`` of the labels that have a synonym by it."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the synonym fraction must be in [0, 1], got {fraction}")
    candidates = [i for i, lbl in enumerate(labels) if lbl in SYNONYMS]
    chosen = random.Random(seed).sample(candidates, math.ceil(fraction * len(candidates)))
    return [SYNONYMS[lbl] if i in chosen else lbl for i, lbl in enumerate(labels)]
