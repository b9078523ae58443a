"""Backends: plug-ins that run an export's chip graphs. Look one up with :func:`get_backend`
(the target registry, :mod:`spikeclip_deploy.targets`, names each target's backend), or open
one on an export with :func:`open_backend`."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..targets import get_target

if TYPE_CHECKING:
    from .base import Backend


def get_backend(name: str) -> type["Backend"]:
    """The backend class of a target (imported lazily: lava only when asked for)."""
    module, _, cls = get_target(name).backend.partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str, export_dir: Path, chip: str = "auto") -> "Backend":
    """Target ``name``'s backend on an export. ``chip`` (``auto``, ``sim``, ``hw``) says where
    a backend that can run on Loihi 2 hardware runs (:mod:`.lava_chip`); the others ignore it."""
    cls = get_backend(name)
    return cls(export_dir, chip=chip) if cls.chip_choice else cls(export_dir)


__all__ = ["get_backend", "open_backend"]
