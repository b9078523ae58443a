"""``torchvision:NAME[:SPLIT]:ROOT`` data on a tiny fake CIFAR-10 in torchvision's on-disk format.

torchvision checks each CIFAR file against the md5 of the real release; the fixture points those
class attributes at the md5s of the fake files, so the real integrity check runs on them.
"""
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from spikeclip_deploy.data import load_dataset
from spikeclip_deploy.errors import DataError
from spikeclip_deploy.label_sets import label_set
from spikeclip_deploy.torchvision_data import parse_spec

PER_BATCH = 3  # images per data batch (5 batches) and in the test batch
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar10(root: Path, seed: int = 0, names=NAMES, register=None) -> dict:
    """``root/cifar-10-batches-py`` with 5 data batches, a test batch and batches.meta; returns
    the raw rows and labels per split. ``register(train_list, test_list, meta)`` gets the md5s."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    train_list, test_list = [], []
    for fname, split, out in [(f"data_batch_{i}", "train", train_list) for i in range(1, 6)] + \
                             [("test_batch", "test", test_list)]:
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, PER_BATCH).tolist()
        with open(folder / fname, "wb") as f:
            pickle.dump({"batch_label": fname, "data": data, "labels": lab,
                         "filenames": [f"{fname}_{i}.png" for i in range(PER_BATCH)]}, f)
        rows[split].append(data)
        labels[split] += lab
        out.append([fname, _md5(folder / fname)])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(names), "num_cases_per_batch": PER_BATCH,
                     "num_vis": 3072}, f)
    meta = {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")}
    if register:
        register(train_list, test_list, meta)
    return {"rows": {k: np.concatenate(v) for k, v in rows.items()}, "labels": labels}


@pytest.fixture()
def register_md5s(monkeypatch):
    def register(train_list, test_list, meta):
        monkeypatch.setattr(CIFAR10, "train_list", train_list)
        monkeypatch.setattr(CIFAR10, "test_list", test_list)
        monkeypatch.setattr(CIFAR10, "meta", meta)
    return register


@pytest.fixture()
def fake_cifar(tmp_path, register_md5s):
    root = tmp_path / "cifar"
    return root, write_fake_cifar10(root, register=register_md5s)


def test_loads_fake_cifar10_train_and_test(fake_cifar):
    root, raw = fake_cifar
    ds = load_dataset(f"torchvision:cifar10:{root}", 32)
    assert ds.images.shape == (5 * PER_BATCH, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == raw["labels"]["train"] and ds.labels.dtype == torch.int64
    assert ds.class_names == label_set("cifar10") == tuple(NAMES)
    # CIFAR rows are channel-major 3x32x32 planes
    assert torch.equal(ds.images, torch.from_numpy(raw["rows"]["train"].reshape(-1, 3, 32, 32)))

    test = load_dataset(f"torchvision:CIFAR10:test:{root}", 32)  # class name, any case
    assert test.labels.tolist() == raw["labels"]["test"]
    assert torch.equal(test.images, torch.from_numpy(raw["rows"]["test"].reshape(-1, 3, 32, 32)))
    # the explicit default split and a Path-typed spec give the same data
    same = load_dataset(Path(f"torchvision:cifar10:train:{root}"), 32)
    assert torch.equal(same.images, ds.images)


def test_resizes_to_the_model_size(tmp_path, register_md5s):
    root = tmp_path / "cifar"
    write_fake_cifar10(root, register=register_md5s)
    small = load_dataset(f"torchvision:cifar10:{root}", 16)
    assert small.images.shape == (5 * PER_BATCH, 3, 16, 16)
    big = load_dataset(f"torchvision:cifar10:{root}", 48)
    assert big.images.shape == (5 * PER_BATCH, 3, 48, 48)
    # a bicubic 2x2 mean of a random image is near its mean, not a copy of pixel (0, 0)
    full = load_dataset(f"torchvision:cifar10:{root}", 32)
    assert abs(small.images.float().mean() - full.images.float().mean()) < 2.0


def test_second_load_comes_from_the_cache(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    first = load_dataset(f"torchvision:cifar10:{root}", 32)

    def boom(*a, **k):
        raise AssertionError("torchvision was asked again")
    monkeypatch.setattr(CIFAR10, "__init__", boom)
    again = load_dataset(f"torchvision:cifar10:{root}", 32)
    assert torch.equal(first.images, again.images) and again.class_names == first.class_names
    # a changed data file is a cache miss (here: torchvision is asked again)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    st = batch.stat()
    os.utime(batch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="asked again"):
        load_dataset(f"torchvision:cifar10:{root}", 32)


@pytest.mark.parametrize("spec, message", [
    ("torchvision:mnist:/data", "unknown torchvision dataset 'mnist'; known: cifar10, cifar100"),
    ("torchvision::/data", "names no dataset"),
    ("torchvision:cifar10", "names no ROOT"),
    ("torchvision:cifar10:val:/data", "'val' is not a split of cifar10; valid splits: train, test"),
    ("torchvision:caltech101:train:/data", "valid splits: all"),
    ("torchvision:flowers102:trainval:/data", "valid splits: train, val, test"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(spec)


def test_split_aliases_and_defaults():
    assert parse_spec("torchvision:oxford_pets:/d").split == "trainval"
    assert parse_spec("torchvision:OxfordIIITPet:train:/d").split == "trainval"
    assert parse_spec("torchvision:imagenet:test:/d").name == "imagenet1k"
    assert parse_spec("torchvision:imagenet:test:/d").split == "val"
    assert parse_spec("torchvision:cifar10:test:/a:b").root == Path("/a:b")


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass --download") as err:
        load_dataset(f"torchvision:cifar10:{tmp_path / 'nope'}")
    assert "cifar-10-batches-py" in str(err.value)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(f"torchvision:cifar10:{tmp_path / 'file'}")


def test_files_not_present_without_download(tmp_path):
    with pytest.raises(DataError, match="is not present under") as err:
        load_dataset(f"torchvision:cifar10:{tmp_path}")
    assert "pass --download to fetch it, or point ROOT at a directory holding cifar-10-batches-py/" \
        in str(err.value)
    with pytest.raises(DataError, match="cannot be downloaded automatically.*ILSVRC2012_devkit"):
        load_dataset(f"torchvision:imagenet1k:val:{tmp_path}")


def test_download_without_network(tmp_path, monkeypatch):
    # a closed local port: urllib fails the same way as with no route to the internet
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    root = tmp_path / "new"
    with pytest.raises(DataError, match="could not download cifar10 .*network is unreachable"):
        load_dataset(f"torchvision:cifar10:{root}", download=True)
    assert root.is_dir()  # --download creates ROOT
    with pytest.raises(DataError, match="cannot be downloaded automatically"):
        load_dataset(f"torchvision:imagenet1k:{tmp_path}", download=True)


def test_corrupt_files(tmp_path, register_md5s):
    root = tmp_path / "cifar"
    write_fake_cifar10(root, register=register_md5s)
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated: fails the md5 check
    with pytest.raises(DataError, match="incomplete or corrupt.*delete .*--download"):
        load_dataset(f"torchvision:cifar10:{root}")


def test_unreadable_file_with_matching_md5(tmp_path, monkeypatch):
    root = tmp_path / "cifar"

    def register(train_list, test_list, meta):
        bad = root / "cifar-10-batches-py" / "data_batch_2"
        bad.write_bytes(b"not a pickle at all")
        train_list[1][1] = _md5(bad)
        monkeypatch.setattr(CIFAR10, "train_list", train_list)
        monkeypatch.setattr(CIFAR10, "test_list", test_list)
        monkeypatch.setattr(CIFAR10, "meta", meta)
    write_fake_cifar10(root, register=register)
    with pytest.raises(DataError, match="cannot read cifar10 files under .*UnpicklingError"):
        load_dataset(f"torchvision:cifar10:{root}")


def test_wrong_class_count(tmp_path, register_md5s):
    root = tmp_path / "cifar"
    write_fake_cifar10(root, names=NAMES[:9], register=register_md5s)
    with pytest.raises(DataError, match="reports 9 classes but the 'cifar10' label set has 10"):
        load_dataset(f"torchvision:cifar10:{root}")


def test_class_order_must_match_the_label_set(tmp_path, register_md5s):
    root = tmp_path / "cifar"
    names = list(NAMES)
    names[3], names[5] = names[5], names[3]
    write_fake_cifar10(root, names=names, register=register_md5s)
    with pytest.raises(DataError, match="names class 3 'dog' where the 'cifar10' label set has "
                                        "'cat' \\(2 classes differ\\)"):
        load_dataset(f"torchvision:cifar10:{root}")


def test_caltech101_drops_background_and_resizes(tmp_path):
    """torchvision's Caltech101 has 101 classes (no BACKGROUND_Google): the label set's 102
    names lose their first; images of any size and mode come out RGB at the model size."""
    from PIL import Image

    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    (cats / "BACKGROUND_Google").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(cats / "BACKGROUND_Google" / "image_0001.jpg")
    for i in range(101):
        (cats / f"c{i:03d}").mkdir()
    Image.new("L", (90, 60), 200).save(cats / "c000" / "image_0001.jpg")  # grey, landscape
    Image.new("RGB", (40, 80), (255, 0, 0)).save(cats / "c100" / "image_0001.png")
    (cats / "c100" / "image_0001.png").rename(cats / "c100" / "image_0001.jpg")
    ds = load_dataset(f"torchvision:caltech101:{tmp_path}", 32)
    assert ds.class_names == label_set("caltech101")[1:] and len(ds.class_names) == 101
    assert ds.class_names[0] == "off-center face" and ds.labels.tolist() == [0, 100]
    assert ds.images.shape == (2, 3, 32, 32)
    assert abs(int(ds.images[0].float().mean()) - 200) <= 2 and ds.images[1, 0].min() > 240
    (cats / "c050").rmdir()
    with pytest.raises(DataError, match="reports 100 classes but the 'caltech101' label set has 101"):
        load_dataset(f"torchvision:caltech101:{tmp_path}", 16)


def test_unreadable_image_file(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    for name in ["BACKGROUND_Google"] + [f"c{i:03d}" for i in range(101)]:
        (cats / name).mkdir(parents=True)
    (cats / "c007" / "image_0001.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(DataError, match="caltech101 \\(all split\\) image 0 under .* is unreadable"):
        load_dataset(f"torchvision:caltech101:{tmp_path}", 32)


def test_caltech101_missing_leaves_root_clean(tmp_path):
    with pytest.raises(DataError, match="caltech101/101_ObjectCategories/"):
        load_dataset(f"torchvision:caltech101:{tmp_path}")
    assert list(tmp_path.iterdir()) == []


def test_torchvision_and_image_folder_paths_give_the_same_pixels(tmp_path):
    """The same 40x64 image through torchvision's Caltech101 and through an ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (64, 40, 3), dtype=np.uint8)
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    for name in ["BACKGROUND_Google"] + [f"c{i:03d}" for i in range(101)]:
        (cats / name).mkdir(parents=True)
    Image.fromarray(pixels).save(cats / "c003" / "image_0001.png")
    (cats / "c003" / "image_0001.png").rename(cats / "c003" / "image_0001.jpg")  # PNG content
    folder = tmp_path / "folder" / "c003"
    folder.mkdir(parents=True)
    Image.fromarray(pixels).save(folder / "0.png")
    via_torchvision = load_dataset(f"torchvision:caltech101:{tmp_path}", 32)
    via_folder = load_dataset(tmp_path / "folder", 32)
    assert via_torchvision.images.shape == (1, 3, 32, 32)
    assert torch.equal(via_torchvision.images, via_folder.images)
