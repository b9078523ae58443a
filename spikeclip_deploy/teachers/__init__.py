"""Teachers for distillation: a real CLIP from a local directory, or the offline teacher."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Teacher


def load_teacher(spec: str) -> Teacher:
    """``offline-minilm[:TOWER.safetensors]`` or ``clip:DIR`` (a transformers CLIP directory)."""
    kind, _, arg = spec.partition(":")
    if kind == "offline-minilm":
        from .offline import OfflineMiniLMTeacher
        return OfflineMiniLMTeacher.load(Path(arg) if arg else None)
    if kind == "clip":
        if not arg:
            raise ConfigError("teacher 'clip' needs a directory: --teacher clip:/path/to/clip")
        from .hf_clip import HFCLIPTeacher
        return HFCLIPTeacher(Path(arg))
    raise ConfigError(f"unknown teacher '{spec}'; use 'offline-minilm' or 'clip:DIR'")


__all__ = ["Teacher", "load_teacher"]
