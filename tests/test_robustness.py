import random

import pytest

from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.prompts import CIFAR10_CLASSES, CIFAR100_CLASSES
from spikeclip_deploy.robustness import with_distractor_set, with_distractors, with_synonyms

LABELS = list(CIFAR10_CLASSES)


def test_distractors_keep_true_labels_first():
    out = with_distractors(LABELS, 5)
    assert out[:10] == LABELS and len(out) == 50 and len(set(out)) == 50
    assert with_distractors(LABELS, 1) == LABELS


def test_synonym_fractions():
    assert with_synonyms(LABELS, 1.0)[0] == "aircraft"
    assert with_synonyms(LABELS, 0.0) == LABELS
    changed = sum(a != b for a, b in zip(with_synonyms(LABELS, 0.4), LABELS))
    assert changed == 4


def test_bad_protocol_values():
    with pytest.raises(ConfigError):
        with_distractors(LABELS, 0)
    with pytest.raises(ConfigError):
        with_synonyms(LABELS, 1.5)


def test_distractor_set_appends_the_labels_not_yet_there():
    cifar100 = [c.replace("_", " ") for c in CIFAR100_CLASSES]
    assert with_distractor_set(LABELS, "cifar100") == LABELS + cifar100
    assert with_distractor_set(["apple", "cat"], "cifar100") == ["apple", "cat"] + cifar100[1:]


def test_distractors_sampled_from_cifar100():
    pool = [c.replace("_", " ") for c in CIFAR100_CLASSES]
    assert with_distractors(LABELS, 2, seed=3) == LABELS + random.Random(3).sample(pool, 10)
