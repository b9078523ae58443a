"""Backends: plug-ins that run an export's chip graphs. Look one up with :func:`get_backend`
(the target registry, :mod:`spikeclip_deploy.targets`, names each target's backend)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..targets import get_target

if TYPE_CHECKING:
    from .base import Backend


def get_backend(name: str) -> type["Backend"]:
    """The backend class of a target (imported lazily: lava only when asked for)."""
    module, _, cls = get_target(name).backend.partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["get_backend"]
