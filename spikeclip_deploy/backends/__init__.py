"""Backends: plug-ins that run an export's chip graphs. Look one up with :func:`get_backend`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # the registry itself stays import-light (the CLI reads it at start-up)
    from .base import Backend

_BACKENDS = {"cpu": "spikeclip_deploy.backends.cpu:CPUBackend",
             "loihi": "spikeclip_deploy.backends.lava:LavaBackend"}


def targets() -> tuple[str, ...]:
    """The registered target names."""
    return tuple(_BACKENDS)


def get_backend(name: str) -> type["Backend"]:
    """The backend class for a target name (imported lazily: lava only when asked for)."""
    import importlib

    if name not in _BACKENDS:
        raise ConfigError(f"unknown target '{name}'; choose one of {', '.join(_BACKENDS)}")
    module, _, cls = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["get_backend", "targets"]
