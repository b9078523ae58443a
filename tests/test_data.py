import tarfile

import pytest
import torch
from PIL import Image

from spikeclip_deploy.data import load_dataset, load_image, stratified_split
from spikeclip_deploy.errors import DataError


def test_image_folder_and_tarball_agree(image_folder, tmp_path):
    ds = load_dataset(image_folder)
    assert ds.images.shape == (24, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.class_names == ("airplane", "automobile", "bird")
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(image_folder, arcname="train")
    ds2 = load_dataset(tar)
    assert torch.equal(ds.images, ds2.images) and torch.equal(ds.labels, ds2.labels)


def test_stratified_split_is_deterministic_and_disjoint():
    labels = torch.arange(10).repeat_interleave(20)
    tr, va = stratified_split(labels, 0.1, seed=3)
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert len(va) == 20 and torch.bincount(labels[va]).tolist() == [2] * 10
    assert not set(tr.tolist()) & set(va.tolist())


def test_bad_data_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="neither a directory nor a tarball"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(DataError, match="not a readable image"):
        load_image(tmp_path / "x.txt", 32)


@pytest.mark.data
def test_shared_cifar10_tarball(shared_cifar10):
    ds = load_dataset(shared_cifar10)
    assert len(ds) == 50000 and len(ds.class_names) == 10
    assert torch.bincount(ds.labels).tolist() == [5000] * 10


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "cat" / "0.png")
    (root / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder\\(s\\) dog in .* hold no image files"):
        load_dataset(root)
    (root / "dog" / "0.png").write_text("not a png")
    with pytest.raises(DataError, match="0.png is not a readable image"):
        load_dataset(root)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="is not an ImageFolder directory"):
        load_dataset(tmp_path / "flat")
    bad_tar = tmp_path / "broken.tar.gz"
    bad_tar.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot extract"):
        load_dataset(bad_tar)
