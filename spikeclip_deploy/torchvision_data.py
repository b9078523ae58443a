"""Datasets read through torchvision's dataset classes: ``torchvision:NAME[:SPLIT]:ROOT``.

``NAME`` is a label-set name of :mod:`.label_sets` (or the torchvision class name, any case),
``SPLIT`` one of the dataset's splits (default: its training split) and ``ROOT`` the directory
torchvision reads (and, only when asked, downloads into). A ``ROOT`` that contains ``:`` needs an
explicit ``SPLIT``. Images are resized and centre-cropped to the model's size as on every data
path (:func:`.images.fit_image`), labelled with the project's label-set names, and cached like
the ImageFolder loader's.
"""
from __future__ import annotations

import hashlib
import http.client
import importlib
import logging
import pickle
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError

from .errors import DataError
from .images import ImageDataset, fit_image

log = logging.getLogger(__name__)
PREFIX = "torchvision:"
# what urllib / http.client raise when the network is down, refused or filtered
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
# what a truncated or garbled data file raises while torchvision parses it
UNREADABLE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
                     pickle.UnpicklingError)


@dataclass(frozen=True)
class TorchvisionSource:
    """How to construct one torchvision dataset class and label it with a project label set."""
    cls: str  # class name in torchvision.datasets
    folder: str  # what torchvision keeps under ROOT (``{split}`` is filled in)
    holds: str  # the files ROOT must hold, for error messages
    splits: Mapping[str, Mapping[str, Any]]  # split name -> constructor keyword arguments
    default_split: str
    split_aliases: Mapping[str, str] = field(default_factory=dict)
    classes_attr: str = "classes"  # the attribute listing the dataset's classes
    label_offset: int = 0  # label-set entries before the dataset's class 0
    same_names: bool = False  # the dataset's class names must equal the label set's (order check)
    downloadable: bool = True


SOURCES: dict[str, TorchvisionSource] = {
    "cifar10": TorchvisionSource(
        "CIFAR10", "cifar-10-batches-py", "cifar-10-batches-py/ (CIFAR-10, python version)",
        {"train": {"train": True}, "test": {"train": False}}, "train", same_names=True),
    "cifar100": TorchvisionSource(
        "CIFAR100", "cifar-100-python", "cifar-100-python/ (CIFAR-100, python version)",
        {"train": {"train": True}, "test": {"train": False}}, "train", same_names=True),
    "stl10": TorchvisionSource(
        "STL10", "stl10_binary", "stl10_binary/ (STL-10, binary version)",
        {"train": {"split": "train"}, "test": {"split": "test"}}, "train", same_names=True),
    # torchvision drops BACKGROUND_Google, the first of clip-benchmark's 102 names
    "caltech101": TorchvisionSource(
        "Caltech101", "caltech101", "caltech101/101_ObjectCategories/",
        {"all": {}}, "all", classes_attr="categories", label_offset=1),
    "flowers102": TorchvisionSource(
        "Flowers102", "flowers-102", "flowers-102/ (jpg/, imagelabels.mat, setid.mat)",
        {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, "train"),
    "oxford_pets": TorchvisionSource(
        "OxfordIIITPet", "oxford-iiit-pet", "oxford-iiit-pet/ (images/, annotations/)",
        {"trainval": {"split": "trainval"}, "test": {"split": "test"}}, "trainval",
        split_aliases={"train": "trainval"}),
    "imagenet1k": TorchvisionSource(
        "ImageNet", "{split}", "ILSVRC2012_devkit_t12.tar.gz and ILSVRC2012_img_{split}.tar "
        "(from image-net.org), or the {split}/ folder and meta.bin torchvision extracts from them",
        {"train": {"split": "train"}, "val": {"split": "val"}}, "train",
        split_aliases={"test": "val"}, downloadable=False),
}


@dataclass(frozen=True)
class TorchvisionSpec:
    name: str  # key of SOURCES (= the label-set name)
    split: str
    root: Path

    @property
    def source(self) -> TorchvisionSource:
        return SOURCES[self.name]

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}:{self.split}:{self.root}"


def is_torchvision_spec(data: object) -> bool:
    return str(data).startswith(PREFIX)


def _lookup(name: str) -> str:
    by_class = {s.cls.lower(): key for key, s in SOURCES.items()}
    key = name.strip().lower()
    if key in SOURCES:
        return key
    if key in by_class:
        return by_class[key]
    raise DataError(f"unknown torchvision dataset '{name}'; known: {', '.join(SOURCES)}")


def parse_spec(data: str) -> TorchvisionSpec:
    """``torchvision:NAME[:SPLIT]:ROOT`` -> a spec with the split resolved (aliases, default)."""
    syntax = f"use {PREFIX}NAME[:SPLIT]:ROOT, e.g. {PREFIX}cifar10:test:data/cifar"
    body = str(data)[len(PREFIX):]
    name, _, rest = body.partition(":")
    if not name:
        raise DataError(f"data spec '{data}' names no dataset; {syntax} "
                        f"(datasets: {', '.join(SOURCES)})")
    key = _lookup(name)
    src = SOURCES[key]
    split, sep2, root = rest.partition(":")
    if not sep2:
        split, root = "", rest
    if not root:
        raise DataError(f"data spec '{data}' names no ROOT directory; {syntax}")
    split = split or src.default_split
    split = src.split_aliases.get(split, split)
    if split not in src.splits:
        valid = ", ".join(list(src.splits) + [f"{a} (= {t})" for a, t in src.split_aliases.items()])
        raise DataError(f"'{split}' is not a split of {key}; valid splits: {valid} "
                        f"(default {src.default_split}); {syntax}")
    return TorchvisionSpec(key, split, Path(root).expanduser())


def cache_stamp(spec: TorchvisionSpec) -> str | None:
    """Identity of the files behind a spec: path, dataset, split and the modification times and
    sizes of the dataset folder's entries (one directory level; cheap even for ImageNet).
    None while the dataset folder is absent (nothing to cache yet)."""
    folder = spec.root / spec.source.folder.format(split=spec.split)
    parts = [PREFIX, spec.name, spec.split, str(spec.root.resolve())]
    try:
        parts.append(str(folder.stat().st_mtime_ns))
        for child in sorted(folder.iterdir()):
            st = child.stat()
            parts.append(f"{child.name}:{st.st_mtime_ns}:{st.st_size}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _detail(exc: BaseException) -> str:
    """torchvision's message without its Python-API hint (the CLI flag is --download)."""
    return str(exc).replace("You can use download=True to download it", "").strip(" .") or \
        type(exc).__name__


def _missing_files(spec: TorchvisionSpec, detail: str) -> DataError:
    src, holds = spec.source, spec.source.holds.format(split=spec.split)
    folder = spec.root / src.folder.format(split=spec.split)
    if src.folder != "{split}" and folder.is_dir() and any(folder.iterdir()):
        return DataError(f"{spec.name} files under {folder} are incomplete or corrupt (torchvision: "
                         f"{detail}); delete {folder} and pass --download to fetch it again, or "
                         f"restore the original files")
    fetch = ("pass --download to fetch it, or point ROOT at a directory holding " if src.downloadable
             else f"{spec.name} cannot be downloaded automatically: point ROOT at a directory holding ")
    return DataError(f"{spec.name} ({spec.split} split) is not present under {spec.root} "
                     f"(torchvision: {detail}); {fetch}{holds}")


def _make(spec: TorchvisionSpec, download: bool):
    src = spec.source
    cls = getattr(importlib.import_module("torchvision.datasets"), src.cls)
    kwargs = dict(src.splits[spec.split])
    if src.downloadable:
        kwargs["download"] = download
    folder = spec.root / src.folder.format(split=spec.split)
    existed = folder.exists()
    try:
        return cls(str(spec.root), **kwargs)
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # Caltech101 makes its folder before it finds no data in it
        raise


def _construct(spec: TorchvisionSpec, download: bool):
    """The torchvision dataset object, every failure mapped to a DataError."""
    src = spec.source
    try:
        return _make(spec, download)
    except NETWORK_ERRORS as exc:
        if not download:
            raise DataError(f"cannot read {spec.name} under {spec.root}: {exc}") from None
        raise DataError(f"could not download {spec.name} into {spec.root}: the network is "
                        f"unreachable ({exc}); fetch it on a machine with network access and "
                        f"point ROOT at a directory holding {src.holds.format(split=spec.split)}"
                        ) from None
    except RuntimeError as exc:
        if download:
            raise DataError(f"{spec.name} was downloaded into {spec.root} but failed torchvision's "
                            f"integrity check ({_detail(exc)}); delete the partial files and "
                            f"retry") from None
        raise _missing_files(spec, _detail(exc)) from None
    except ImportError as exc:
        raise DataError(f"reading {spec.name} needs a package that is not installed ({exc}); "
                        f"install it into the venv") from None
    except UNREADABLE_ERRORS as exc:
        what = "write to" if isinstance(exc, PermissionError) else "read"
        raise DataError(f"cannot {what} {spec.name} files under {spec.root}: "
                        f"{type(exc).__name__}: {exc}; delete the dataset folder and fetch it "
                        f"again (--download), or restore the original files") from None


def _class_names(spec: TorchvisionSpec, dataset) -> tuple[str, ...]:
    """The label-set names for the dataset's classes; a count or order mismatch is a DataError."""
    from .label_sets import label_set

    src = spec.source
    reported = [c[0] if isinstance(c, tuple) else str(c)
                for c in getattr(dataset, src.classes_attr)]  # ImageNet: tuples of synonyms
    names = label_set(spec.name)[src.label_offset:]
    if len(reported) != len(names):
        raise DataError(f"{spec.name} under {spec.root} reports {len(reported)} classes but the "
                        f"'{spec.name}' label set has {len(names)}; ROOT holds another dataset or "
                        f"a modified copy: point ROOT at the original {spec.name} files")
    if src.same_names:
        norm = [r.replace("_", " ").lower() for r in reported]
        bad = [i for i, (r, n) in enumerate(zip(norm, names)) if r != n.lower()]
        if bad:
            i = bad[0]
            raise DataError(f"{spec.name} under {spec.root} names class {i} '{reported[i]}' "
                            f"where the '{spec.name}' label set has '{names[i]}' ({len(bad)} "
                            f"classes differ); ROOT holds another dataset or a modified copy")
    return names


def decode(spec: TorchvisionSpec, size: int, download: bool = False):
    """Construct the dataset and decode every image -> ImageDataset (no cache here)."""
    if spec.root.exists() and not spec.root.is_dir():
        raise DataError(f"dataset root {spec.root} is a file; ROOT must be a directory")
    if not spec.root.is_dir():
        if not download:
            fetch = ("pass --download to fetch it there (the directory is created), or point "
                     "ROOT at a directory holding " if spec.source.downloadable
                     else "point ROOT at a directory holding ")
            raise DataError(f"dataset root {spec.root} does not exist; {fetch}"
                            f"{spec.source.holds.format(split=spec.split)}")
        if spec.source.downloadable:
            log.info("creating %s for the %s download", spec.root, spec.name)
            spec.root.mkdir(parents=True, exist_ok=True)
    if download and not spec.source.downloadable:
        raise DataError(f"{spec.name} cannot be downloaded automatically (the archives need an "
                        f"image-net.org account); drop --download and point ROOT at a directory "
                        f"holding {spec.source.holds.format(split=spec.split)}")
    dataset = _construct(spec, download)
    names = _class_names(spec, dataset)
    n = len(dataset)
    if n == 0:
        raise DataError(f"{spec.name} ({spec.split} split) under {spec.root} holds no images")
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        try:
            img, target = dataset[i]
        except (UnidentifiedImageError, *UNREADABLE_ERRORS) as exc:
            raise DataError(f"{spec.name} ({spec.split} split) image {i} under {spec.root} is "
                            f"unreadable ({exc}); the files are incomplete or corrupt: delete "
                            f"them and fetch them again (--download)") from None
        if not 0 <= int(target) < len(names):
            raise DataError(f"{spec.name} image {i} under {spec.root} has label {int(target)}, "
                            f"outside the {len(names)} classes; ROOT holds a modified copy")
        images[i] = fit_image(img, size)
        labels[i] = int(target)
    return ImageDataset(images, labels, names)
