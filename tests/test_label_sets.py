import re

import pytest

from spikeclip_deploy.errors import DataError
from spikeclip_deploy.label_sets import resolve_labels, resolve_templates
from spikeclip_deploy.prompts import CIFAR_TEMPLATES, prompts_for

THREE = ("cat", "dog", "ship")


def test_labels_by_set_name():
    cifar100 = resolve_labels("cifar100", tuple(f"c{i}" for i in range(100)))
    assert len(cifar100) == 100 and cifar100[:2] == ["apple", "aquarium fish"]
    assert cifar100[-1] == "worm"
    imagenet = resolve_labels("imagenet1k", tuple(f"n{i:08d}" for i in range(1000)))
    assert imagenet[:2] == ["tench", "goldfish"]
    flowers = resolve_labels("flowers102", tuple(str(i) for i in range(102)))
    assert flowers[0] == "pink primrose"


def test_labels_from_a_file_and_a_list(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# my three classes\n\ncat\n  dog_house  \n   # indented comment\nship\n\n")
    assert resolve_labels(str(f), ("a", "b", "c")) == ["cat", "dog house", "ship"]
    assert resolve_labels("cat, dog,ship", THREE) == ["cat", "dog", "ship"]
    assert resolve_labels("solo", ("x",)) == ["solo"]  # one word: a one-label list


def test_label_count_must_match_the_dataset(tmp_path):
    with pytest.raises(DataError, match=re.escape(
            "the label list has 2 labels but the dataset has 3 classes (cat, dog, ship); pass a "
            "label-set name (cifar10, cifar100, stl10, caltech101, flowers102, oxford_pets, "
            "imagenet1k), a file or a comma list with 3 labels, in the dataset's class order")):
        resolve_labels("cat,dog", THREE)
    with pytest.raises(DataError, match=re.escape(
            "label set 'cifar10' has 10 labels but the dataset has 4 classes (a, b, c, ...)")):
        resolve_labels("cifar10", ("a", "b", "c", "d"))
    f = tmp_path / "two.txt"
    f.write_text("cat\ndog\n")
    with pytest.raises(DataError, match=f"{re.escape(str(f))} has 2 labels but the dataset has 3"):
        resolve_labels(str(f), THREE)


def test_label_errors(tmp_path):
    with pytest.raises(DataError, match="class 0 is 'cat' but label 0 is 'dog'; list the labels "
                                        r"in the dataset's class order \(cat, dog\)"):
        resolve_labels("dog,cat", ("cat", "dog"))
    with pytest.raises(DataError, match="label file nope.txt does not exist"):
        resolve_labels("nope.txt", ("a",))
    f = tmp_path / "dupes.txt"
    f.write_text("cat\ncat\ndog\n")
    with pytest.raises(DataError, match=re.escape(f"duplicate labels ['cat'] in {f}")):
        resolve_labels(str(f), THREE)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="holds no labels; write one label per line"):
        resolve_labels(str(tmp_path / "empty.txt"), THREE)


def test_template_sets_by_name():
    assert resolve_templates("single") == ("a photo of a {}.",)
    assert resolve_templates("cifar") == CIFAR_TEMPLATES and len(CIFAR_TEMPLATES) == 18
    imagenet = resolve_templates("imagenet")
    assert len(imagenet) == 80 and len(set(imagenet)) == 80
    assert imagenet[0] == "a bad photo of a {}." and imagenet[-1] == "a tattoo of the {}."
    assert all(t.count("{}") == 1 for t in imagenet)
    assert resolve_templates("imagenet1k") == imagenet
    assert resolve_templates("flowers102") == ("a photo of a {}, a type of flower.",)


def test_templates_from_a_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# mine\na {} photo\n\n  an origami {}.  \n")
    assert resolve_templates(str(f)) == ("a {} photo", "an origami {}.")
    assert prompts_for("lawn_mower", resolve_templates(str(f))) == [
        "a lawn mower photo", "an origami lawn mower."]


@pytest.mark.parametrize("bad", ["a {c} photo", "a photo", "{} and {}", "a {} {x}", "a {0} photo"])
def test_template_file_errors(tmp_path, bad):
    f = tmp_path / "t.txt"
    f.write_text(f"a {{}} photo\n# comment\n{bad}\n")
    with pytest.raises(DataError, match=re.escape(f"line 3 of {f} ({bad!r}) is not a template: "
                                                  "each line needs exactly one '{}'")):
        resolve_templates(str(f))


def test_unknown_template_set():
    with pytest.raises(DataError, match=re.escape(
            "unknown template set 'fancy'; pass one of cifar, single, imagenet, cifar10")):
        resolve_templates("fancy")
    with pytest.raises(DataError, match="template file missing/t.txt does not exist"):
        resolve_templates("missing/t.txt")


def test_order_error_lists_at_most_ten_classes():
    names = tuple(f"c{i}" for i in range(12))
    with pytest.raises(DataError, match=re.escape("class order (c0, c1, c2, c3, c4, c5, c6, c7, "
                                                  "c8, c9, ...)")):
        resolve_labels(",".join(reversed(names)), names)
