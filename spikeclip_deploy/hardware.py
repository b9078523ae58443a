"""Hardware profiles and energy models, read from ``hardware/*.json`` (data, not code)."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from .errors import ConfigError
from .paths import hardware_dir

_FIXED_POINT = ("weight_bits", "weight_mant_range", "weight_exp", "bias_mant_range",
                "bias_exp_range", "vth_range", "decay_bits", "activation_shift", "threshold_shift",
                "input_port_bits", "input_bias_exp", "input_vth")
# the fields each kind of profile must have (``a.b``: field b of object a)
FIELDS = {
    "chip": ("name", "synapse_delay_steps", "limits.neurons_per_chip", "limits.synapses_per_chip",
             *(f"fixed_point.{k}" for k in _FIXED_POINT)),
    "energy": ("e_mac_pj", "e_ac_pj"),
}


@lru_cache(maxsize=None)
def load_profile(name: str, kind: str = "chip") -> dict[str, Any]:
    """``hardware/NAME.json``, checked to hold the fields of a ``chip`` or ``energy`` profile."""
    path = hardware_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir().glob("*.json"))
        raise ConfigError(f"no hardware profile '{name}' in {hardware_dir()}; known: {', '.join(known)}")
    try:
        profile = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read hardware profile {path}: {exc}") from None
    missing = [f for f in FIELDS[kind] if not _has_field(profile, f)]
    if missing:
        raise ConfigError(f"hardware profile {path} lacks the field(s) {', '.join(missing)} "
                          f"that every {kind} profile needs; restore them, as in the shipped "
                          f"hardware/*.json")
    return profile


def _has_field(profile: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(profile, dict) or key not in profile:
            return False
        profile = profile[key]
    return True
