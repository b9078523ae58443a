import shutil
import tarfile

import numpy as np
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


def test_truncated_tarball_is_a_data_error(image_folder, tmp_path):
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(image_folder, arcname="train")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match=f"cannot extract {cut}.*truncated or corrupt"):
        load_dataset(cut)


def test_16_bit_greyscale_png_keeps_its_range(tmp_path):
    grey = (np.arange(32 * 32, dtype=np.uint16) * 64).reshape(32, 32)  # 0 .. 65472
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    img = load_image(tmp_path / "g16.png", 32)
    expected = torch.from_numpy((grey >> 8).astype(np.uint8))
    assert all(torch.equal(img[c], expected) for c in range(3))


@pytest.mark.parametrize("limit", [400, 600])  # 32x32 = 1024 pixels: PIL's error, its warning
def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch, limit):
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match=f"big.png is too large to open safely.*{limit}"):
        load_image(tmp_path / "big.png", 32)


def test_folder_cache_follows_the_files(image_folder, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(image_folder, root)
    assert len(load_dataset(root)) == 24
    Image.new("RGB", (32, 32), (7, 7, 7)).save(root / "bird" / "new.png")
    ds = load_dataset(root)
    assert len(ds) == 25 and (ds.images == 7).all(dim=(1, 2, 3)).sum() == 1
    (root / "bird" / "new.png").unlink()
    (root / "airplane" / "0.png").unlink()
    assert len(load_dataset(root)) == 23
    Image.new("RGB", (32, 32), (9, 9, 9)).save(root / "airplane" / "1.png")  # replaced in place
    assert (load_dataset(root).images == 9).all(dim=(1, 2, 3)).sum() == 1


def test_unwritable_cache_falls_back_with_a_warning(image_folder, tmp_path, monkeypatch, caplog):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPIKECLIP_CACHE", str(not_a_folder))
    assert len(load_dataset(image_folder)) == 24
    assert "cannot write the dataset cache" in caplog.text and str(not_a_folder) in caplog.text
    assert not_a_folder.read_text() == "a file where the cache folder should be"


def test_full_cache_disk_falls_back_with_a_warning(image_folder, tmp_path, monkeypatch):
    """A write that fails midway (here: over a file-size limit, as on a full disk) leaves no
    cache file and no "seek of closed file" noise from an unclosed zip file."""
    import gc
    import resource
    import signal
    import sys

    from spikeclip_deploy import fileutil

    warned, unraisable = [], []
    monkeypatch.setattr(fileutil.log, "warning", lambda msg, *args: warned.append(msg % args))
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setenv("SPIKECLIP_CACHE", str(tmp_path / "cache"))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # the cache needs ~75 kB
    try:
        assert len(load_dataset(image_folder)) == 24
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    gc.collect()
    assert len(warned) == 1 and "cannot write the dataset cache" in warned[0], warned
    assert not unraisable and not list((tmp_path / "cache" / "datasets").iterdir())


def test_image_folder_of_any_size_is_fitted_like_the_torchvision_path(tmp_path):
    """A 40x64 and a 32x32 PNG load as 32x32 through the one function the torchvision path
    uses. The tall one: white rows 0-15 over (10, 20, 30); shorter side 40 -> 32 (x 0.8), so
    64 -> 51 rows and the crop keeps rows 10-41 (offset round(9.5) = 10). Output row r samples
    source row (r + 0.5) / 0.8 - 0.5 with bicubic's reach of 2 / 0.8 = 2.5 source rows: crop row
    0 (r = 10) sees only white, row 2 (r = 12, source 12.7-17.7) straddles the edge, rows >= 5
    (r >= 15, source >= 16.4) see only (10, 20, 30)."""
    from spikeclip_deploy.images import fit_image

    root = tmp_path / "imgs"
    (root / "tall").mkdir(parents=True)
    (root / "square").mkdir()
    tall = np.zeros((64, 40, 3), np.uint8)
    tall[:16] = 255
    tall[16:] = (10, 20, 30)
    Image.fromarray(tall).save(root / "tall" / "0.png")
    rng = np.random.default_rng(1)
    square = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(square).save(root / "square" / "0.png")
    ds = load_dataset(root, 32)
    assert ds.images.shape == (2, 3, 32, 32) and ds.class_names == ("square", "tall")
    assert torch.equal(ds.images[0], torch.from_numpy(square).permute(2, 0, 1))
    with Image.open(root / "tall" / "0.png") as img:
        assert torch.equal(ds.images[1], fit_image(img, 32))
    assert (ds.images[1, :, 0] == 255).all()
    assert ((ds.images[1, :, 2] > 30) & (ds.images[1, :, 2] < 255)).all()
    body = torch.tensor([10, 20, 30], dtype=torch.uint8)[:, None, None]
    assert (ds.images[1, :, 5:] == body).all()
    assert torch.equal(load_image(root / "tall" / "0.png", 32), ds.images[1])


def test_cache_of_another_version_is_not_read(image_folder, monkeypatch):
    from spikeclip_deploy import data

    monkeypatch.setattr(data, "CACHE_VERSION", 1)
    old = load_dataset(image_folder)
    cached = next((data.cache_dir() / "datasets").glob("*-32-v1.npz"))
    data._write_cache(cached, data.ImageDataset(torch.zeros_like(old.images), old.labels,
                                                old.class_names))  # v1 meant other pixels
    assert (load_dataset(image_folder).images == 0).all()  # v1 reads its own cache
    monkeypatch.setattr(data, "CACHE_VERSION", 2)
    assert torch.equal(load_dataset(image_folder).images, old.images)


def _frames(n: int):
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("name, fmt", [("a.gif", "GIF"), ("a.png", "PNG"), ("a.tiff", "TIFF")])
def test_animated_or_multi_frame_images_are_refused(tmp_path, name, fmt):
    """An animated GIF, an animated PNG, a two-page TIFF: refused, naming the frame count (no
    silent first frame); the same formats with one frame load, pixel for pixel."""
    first, *rest = _frames(3)
    first.save(tmp_path / name, format=fmt, save_all=True, append_images=rest)
    with pytest.raises(DataError, match=rf"{name} is an animated or multi-frame {fmt} image "
                                        r"\(3 frames\); pass a single-frame image"):
        load_image(tmp_path / name, 32)
    first.save(tmp_path / f"one-{name}", format=fmt)
    with Image.open(tmp_path / f"one-{name}") as img:
        want = np.asarray(img.convert("RGB"))
    assert np.array_equal(load_image(tmp_path / f"one-{name}", 32).permute(1, 2, 0).numpy(), want)


def test_an_image_folder_holding_an_animated_png_is_refused(image_folder, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    first, *rest = _frames(2)
    first.save(root / "bird" / "moving.png", save_all=True, append_images=rest)
    with pytest.raises(DataError, match="moving.png is an animated or multi-frame PNG"):
        load_dataset(root)
