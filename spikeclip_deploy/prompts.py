"""Label sets and CLIP prompt templates."""
from __future__ import annotations

from .errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

# The CLIP paper's CIFAR templates.
CIFAR_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.",
    "a bad photo of the {}.", "a good photo of the {}.", "a photo of the small {}.",
    "a photo of the big {}.",
)
SINGLE_TEMPLATE = ("a photo of a {}.",)


def parse_labels(text: str) -> list[str]:
    """``"cat, dog,ship"`` -> ``["cat", "dog", "ship"]``; empty or duplicate labels are errors."""
    labels = [s.strip().replace("_", " ") for s in text.split(",") if s.strip()]
    if not labels:
        raise DataError("the label list is empty; pass labels as --labels \"cat,dog,ship\"")
    return distinct_labels(labels, "")


def distinct_labels(labels: list[str], where: str) -> list[str]:
    """``labels`` unchanged if no two are equal, else a DataError naming the duplicates (and
    ``where`` they come from, e.g. `` in labels.txt``)."""
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise DataError(f"duplicate labels {dupes}{where}; each class needs one distinct name")
    return labels


def prompts_for(label: str, templates: tuple[str, ...] = CIFAR_TEMPLATES) -> list[str]:
    return [t.format(label.replace("_", " ")) for t in templates]
