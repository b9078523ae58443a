"""Hardware profiles and energy models, read from ``hardware/*.json`` (data, not code)."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from .errors import ConfigError
from .paths import hardware_dir


@lru_cache(maxsize=None)
def load_profile(name: str) -> dict[str, Any]:
    path = hardware_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir().glob("*.json"))
        raise ConfigError(f"no hardware profile '{name}' in {hardware_dir()}; known: {', '.join(known)}")
    return json.loads(path.read_text())
