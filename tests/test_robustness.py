import pytest

from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.prompts import CIFAR10_CLASSES
from spikeclip_deploy.robustness import with_distractors, with_synonyms

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
