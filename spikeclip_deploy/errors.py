"""Typed exceptions. The CLI converts every :class:`SpikeClipError` into a clean message."""
from __future__ import annotations


class SpikeClipError(Exception):
    """Base class: a user-facing problem with a message that names the fix."""


class ConfigError(SpikeClipError):
    """An unknown model name, bad option value or inconsistent config."""


class CheckpointError(SpikeClipError):
    """A missing, truncated, corrupt or mismatched checkpoint."""


class DataError(SpikeClipError):
    """Unreadable data, wrong image size, empty label list, ..."""


class ExportError(SpikeClipError):
    """An export that cannot be written or read (existing directory, bad manifest, hash mismatch)."""


class LoweringError(SpikeClipError):
    """A model part that cannot be lowered to NIR / the chip."""


class UnsupportedNodeError(LoweringError):
    """A graph node for which a backend has no handler."""

    def __init__(self, backend: str, node_name: str, node_type: str) -> None:
        super().__init__(
            f"backend '{backend}' cannot run node '{node_name}' of type {node_type}; "
            f"supported node types are listed by the backend's handler map"
        )
        self.node_name = node_name
        self.node_type = node_type


class HardwareLimitError(SpikeClipError):
    """A graph that does not fit the target hardware profile."""


class BackendUnavailableError(SpikeClipError):
    """A backend whose library is not installed."""


class VerificationError(SpikeClipError):
    """A verification whose backends that must agree bit for bit did not."""
