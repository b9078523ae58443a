"""Teachers for distillation: a real CLIP from a local directory, or the offline teacher."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Teacher


def load_teacher(spec: str) -> Teacher:
    """``offline-minilm[:TOWER.safetensors]``, ``clip:DIR`` (a transformers CLIP directory) or
    ``open_clip:DIR`` (an open_clip directory, see :mod:`.open_clip_teacher`)."""
    kind, _, arg = spec.partition(":")
    if kind == "offline-minilm":
        from .offline import OfflineMiniLMTeacher
        return OfflineMiniLMTeacher.load(Path(arg) if arg else None)
    if kind == "clip":
        if not arg:
            raise ConfigError("teacher 'clip' needs a directory: --teacher clip:/path/to/clip")
        from .hf_clip import HFCLIPTeacher
        return HFCLIPTeacher(Path(arg))
    if kind == "open_clip":
        if not arg:
            raise ConfigError("teacher 'open_clip' needs a directory: "
                              "--teacher open_clip:/path/to/open_clip_model")
        from .open_clip_teacher import OpenCLIPTeacher
        return OpenCLIPTeacher(Path(arg))
    raise ConfigError(f"unknown teacher '{spec}'; use 'offline-minilm', 'clip:DIR' or 'open_clip:DIR'")


__all__ = ["Teacher", "load_teacher"]
