"""Where the project's data files live (shipped model configs, checkpoints, hardware profiles)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Shipped model configs and checkpoints (``$SPIKECLIP_MODELS`` overrides)."""
    return Path(os.environ.get("SPIKECLIP_MODELS", PROJECT_ROOT / "models"))


def hardware_dir() -> Path:
    """Hardware profiles as data (``$SPIKECLIP_HARDWARE`` overrides)."""
    return Path(os.environ.get("SPIKECLIP_HARDWARE", PROJECT_ROOT / "hardware"))


def cache_dir() -> Path:
    """Decoded datasets and teacher features (``$SPIKECLIP_CACHE`` overrides)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spikeclip-deploy"
    return Path(os.environ.get("SPIKECLIP_CACHE", default))
