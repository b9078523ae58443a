"""What the teacher gives the student to learn: its image features, of each image and its
mirror, computed once and cached on disk (``augment="flip"``), or computed on the very view the
student sees (``augment="crop-flip"``: consistent teaching, Beyer et al., CVPR 2022)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from ..data import ImageDataset
from ..fileutil import atomic_write, write_cache
from ..paths import cache_dir
from ..teachers.base import Teacher
from .common import batches
from .distributed import Dist

log = logging.getLogger(__name__)


def teacher_image_features(teacher: Teacher, ds: ImageDataset, tag: str, dist: Dist) -> np.ndarray:
    """``[2, N, D]`` teacher features of the images and their mirrors, computed once and cached
    on disk as a memory-mapped ``.npy`` keyed by teacher, data and preprocessing."""
    key = hashlib.sha256(repr((teacher.describe(), tag, ds.images.shape, "uint8-flip")).encode()
                         + ds.images.numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / "teacher-features" / f"{key}.npy"
    if dist.is_main and not path.exists():
        log.info("computing teacher image features for %d images (cached at %s)", len(ds), path)
        feats = torch.stack([
            torch.cat([teacher.encode_images(v[idx]) for idx in batches(len(ds), 512, None)])
            for v in (ds.images, ds.images.flip(-1))]).numpy().astype(np.float32)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, feats)
        if dist.world > 1:  # the other ranks read the file: it must be written
            atomic_write(path, write)
        elif not write_cache(path, write, "teacher feature"):
            return feats  # kept in memory
    dist.barrier()
    return np.load(path, mmap_mode="r")


def teacher_targets(teacher: Teacher, images: torch.Tensor, idx: torch.Tensor,
                    flipped: torch.Tensor, feats: np.ndarray | None) -> torch.Tensor:
    """The teacher's features of the batch ``images`` (rows ``idx`` of the training set,
    ``flipped`` its mirrored ones): read from the cache ``feats``, or, without one, computed
    on the view itself."""
    if feats is None:
        with torch.no_grad():
            return teacher.encode_images(images).float()
    rows = idx.numpy()
    return torch.where(flipped[:, None], torch.from_numpy(feats[1, rows]),
                       torch.from_numpy(feats[0, rows]))
