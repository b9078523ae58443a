"""The paper's robustness protocols (Table 2) as transformations of a label list.

* noisy labels: extend the ``n`` true labels to ``factor * n`` with unrelated distractors (CIFAR-100
  names not among them); a prediction of a distractor is wrong.
* unseen labels: replace a fraction of the label names by synonyms.

Accuracy is always measured against the true class, whose index is unchanged (distractors are
appended after the true labels).
"""
from __future__ import annotations

import math
import random

from .errors import ConfigError
from .prompts import CIFAR100_CLASSES

SYNONYMS = {
    "airplane": "aircraft", "automobile": "car", "bird": "songbird", "cat": "tabby cat",
    "deer": "roe deer", "dog": "puppy", "frog": "toad", "horse": "pony", "ship": "boat",
    "truck": "pickup truck",
}


def with_distractors(labels: list[str], factor: int, seed: int = 0) -> list[str]:
    """``labels`` followed by ``(factor - 1) * len(labels)`` unrelated labels."""
    if factor < 1:
        raise ConfigError(f"the noisy-label factor must be >= 1, got {factor}")
    pool = [c.replace("_", " ") for c in CIFAR100_CLASSES if c.replace("_", " ") not in labels]
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
