"""Image datasets: an ImageFolder directory, a tarball of one, or a torchvision dataset
(``torchvision:NAME[:SPLIT]:ROOT``, see :mod:`.torchvision_data`), decoded once to a uint8 cache.

A dataset here is ``(images uint8 [N, 3, H, W], labels int64 [N], class_names)``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .fileutil import owned_tempdir, sha256_file, write_cache
from .images import ImageDataset, fit_image
from .paths import cache_dir

log = logging.getLogger(__name__)
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# bump when the same source decodes to other pixels (2: CLIP's resize and centre crop for every
# path; version 1's torchvision-path crops were offset by up to a pixel)
CACHE_VERSION = 2


def load_image(path: Path, size: int) -> torch.Tensor:
    """One image file of any size -> uint8 RGB ``[3, size, size]`` (:func:`.images.fit_image`);
    an image too large to open safely, an animated or multi-frame one (which frame would be
    meant?) or a non-image is a DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    raise DataError(f"{path} is an animated or multi-frame {img.format} image "
                                    f"({frames} frames); pass a single-frame image (PNG or "
                                    f"JPEG), e.g. the frame you mean saved on its own")
                return fit_image(img, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path} is too large to open safely ({exc}; the limit is Pillow's "
                        f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}); downscale it below "
                        f"that limit (images of any smaller size are resized to {size}x{size})"
                        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}); pass a PNG or JPEG file") from None


def _find_root(folder: Path) -> Path:
    """The ImageFolder root inside an extracted tarball: the deepest single-child folder."""
    root = folder
    while True:
        children = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and children[0].is_dir():
            sub = [p for p in children[0].iterdir() if p.is_dir()]
            if sub:
                root = children[0]
                continue
        return root


def _empty_class_folders(root: Path) -> list[str]:
    """Class sub-folders without a single image file (ImageFolder refuses the whole set)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        return []
    return [d.name for d in sorted(root.iterdir()) if d.is_dir() and not any(
        f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS) for f in d.rglob("*"))]


def _decode_folder(root: Path, size: int) -> ImageDataset:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        empty = _empty_class_folders(root)
        if empty:
            raise DataError(f"class folder(s) {', '.join(empty)} in {root} hold no image files; "
                            f"add images (PNG, JPEG, ...) or remove those folders") from None
        raise DataError(f"{root} is not an ImageFolder directory (one sub-folder of images per "
                        f"class): {exc}") from None
    images = torch.empty((len(folder.samples), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        images[i] = load_image(Path(path), size)
    labels = torch.tensor(folder.targets, dtype=torch.int64)
    return ImageDataset(images, labels, tuple(folder.classes))


def content_digest(ds: ImageDataset) -> str:
    """sha256 of what a dataset holds, wherever it was read from: its class names, then every
    image's label and decoded pixels, in order (the very tensors an evaluation reads)."""
    h = hashlib.sha256(json.dumps(list(ds.class_names)).encode())
    h.update(ds.labels.numpy().astype("<i8").tobytes())
    h.update(ds.images.contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_file(key: str, size: int) -> Path:
    """The decoded dataset's cache: keyed by the source's content, the image size and
    :data:`CACHE_VERSION`."""
    return cache_dir() / "datasets" / f"{key}-{size}-v{CACHE_VERSION}.npz"


def _read_cache(cached: Path) -> ImageDataset:
    with np.load(cached) as z:
        return ImageDataset(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                            tuple(str(c) for c in z["class_names"]))


def _write_cache(cached: Path, ds: ImageDataset) -> None:
    """Cache a decoded dataset as ``.npz``; a cache that cannot be written (read-only, full, not
    a folder) is skipped with a warning."""
    arrays = {"images": ds.images.numpy(), "labels": ds.labels.numpy(),
              "class_names": np.array(ds.class_names)}

    def write(tmp: Path) -> None:  # not np.savez: it leaves its zip file open on a write error
        with zipfile.ZipFile(tmp, "w") as z:
            for name, arr in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, arr)
    write_cache(cached, write, "dataset")


def _folder_stamp(root: Path) -> str:
    """Cache key of an ImageFolder: every file's relative path, size and modification time, so
    an image added, deleted or replaced in any class folder invalidates the cache."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_torchvision(spec_text: str, size: int, download: bool) -> ImageDataset:
    from . import torchvision_data as tvd

    spec = tvd.parse_spec(spec_text)
    key = tvd.cache_stamp(spec) if spec.root.is_dir() else None
    if key and _cache_file(key, size).exists():
        return _read_cache(_cache_file(key, size))
    log.info("decoding %s (first use)", spec)
    ds = tvd.decode(spec, size, download)
    key = tvd.cache_stamp(spec)  # after a download the files are new
    if key:
        log.info("cached %s at %s", spec, _cache_file(key, size))
        _write_cache(_cache_file(key, size), ds)
    return ds


def load_dataset(source: str | os.PathLike, size: int = 32, download: bool = False
                 ) -> ImageDataset:
    """Load an ImageFolder directory, a tarball of one, or ``torchvision:NAME[:SPLIT]:ROOT``
    (cached, keyed by content). ``download`` lets torchvision fetch a missing dataset."""
    from .torchvision_data import is_torchvision_spec

    if is_torchvision_spec(os.fspath(source)):
        return _load_torchvision(os.fspath(source), size, download)
    if download:
        log.warning("--download applies to torchvision:NAME[:SPLIT]:ROOT data only; ignored for %s",
                    source)
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path {source} does not exist; pass an ImageFolder directory, "
                        f"a .tar.gz of one, or torchvision:NAME[:SPLIT]:ROOT")
    is_tar = source.is_file() and source.name.endswith(TARBALL_SUFFIXES)
    if not source.is_dir() and not is_tar:
        raise DataError(f"{source} is neither a directory nor a tarball ({', '.join(TARBALL_SUFFIXES)})")
    key = sha256_file(source)[:16] if is_tar else _folder_stamp(source)
    cached = _cache_file(key, size)
    if cached.exists():
        return _read_cache(cached)
    log.info("decoding %s (first use; cached at %s)", source, cached)
    if is_tar:
        with owned_tempdir(None, "spikeclip-data-") as tmp:
            try:
                with tarfile.open(source) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise DataError(f"cannot extract {source}: {exc}; the archive is truncated or "
                                f"corrupt: copy or download it again") from None
            ds = _decode_folder(_find_root(Path(tmp)), size)
    else:
        ds = _decode_folder(source, size)
    _write_cache(cached, ds)
    return ds


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class random split with a fixed seed -> (train indices, validation indices)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_val = max(1, round(idx.numel() * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
