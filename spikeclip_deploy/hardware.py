"""Hardware profiles (``hardware/NAME.json``, data, not code) as typed, frozen records.

A chip profile holds every fixed-point constant the lowering and the backends use; an energy
profile the per-operation energies of a cost model (the 45 nm compute-only model, or a chip's
own: synaptic ops, neuron updates, spike messages, static power). Loading checks each field's presence and
type and names the file and the field when one is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fieldtypes import has_type, type_name
from .paths import hardware_dir


@dataclass(frozen=True)
class FixedPoint:
    r"""Loihi-style fixed point as Lava's bit-accurate models compute it: 8-bit weight mantissas
    (:math:`w 2^{e_w}`), biases :math:`b_m 2^{b_e}`, inputs and biases shifted left by
    ``activation_shift`` into the 24-bit state, thresholds :math:`v_{th} 2^{\mathrm{threshold\_shift}}`,
    12-bit decays, ``state_bits``-bit :math:`u` and :math:`v` (``du_instant_current``: :math:`u` holds only this step's input),
    graded spikes of ``graded_payload_bits`` signed bits."""

    weight_bits: int
    weight_mant_range: tuple[int, int]
    weight_exp: int
    bias_mant_range: tuple[int, int]
    bias_exp_range: tuple[int, int]
    vth_range: tuple[int, int]
    decay_bits: int
    state_bits: int  # u and v: signed, u wraps and v saturates at this width
    du_instant_current: int
    activation_shift: int
    threshold_shift: int
    input_port_bits: int
    input_bias_exp: int
    input_vth: int
    graded_payload_bits: int  # a graded spike's signed payload (a stream relay's sum)


@dataclass(frozen=True)
class Limits:
    """Per-chip capacity, checked for a whole encoder at lowering: neurons (compartments) and
    synaptic memory counted in stored weights (a convolution's kernel once per layer); an
    encoder may span the ``chips_per_system`` chips of ``system``. The precise mapping onto
    neuro-cores is :class:`Cores`' (``spikeclip-deploy map``). ``sources``: where each figure
    comes from."""

    neurons_per_chip: int
    stored_weights_per_chip: int
    system: str
    chips_per_system: int
    sources: dict[str, str]


@dataclass(frozen=True)
class System:
    """A board or rack of chips that one encoder may span."""

    name: str
    chips: int


@dataclass(frozen=True)
class Cores:
    """What one neuro-core holds, the mapper's resources: neurons, synaptic memory in bits
    (a dense synapse costs ``dense_bits_per_synapse``, a sparse one its weight and index,
    ``sparse_bits_per_synapse``; a convolution stores its kernel once per core at
    ``conv_bits_per_weight``), input axons (distinct presynaptic neurons) and output axons (one
    per neuron and destination core); ``systems``: the boards a mapping may target.
    ``sources``: where each figure comes from, or the assumption taken where none is
    published."""

    cores_per_chip: int
    neurons_per_core: int
    synaptic_memory_bits_per_core: int
    dense_bits_per_synapse: int
    sparse_bits_per_synapse: int
    conv_bits_per_weight: int
    input_axons_per_core: int
    output_axons_per_core: int
    systems: tuple[System, ...]
    sources: dict[str, str]


@dataclass(frozen=True)
class ChipProfile:
    name: str
    description: str
    fixed_point: FixedPoint
    synapse_delay_steps: int  # steps a spike takes through one synapse layer
    limits: Limits
    cores: Cores


@dataclass(frozen=True)
class EnergyModel:
    name: str
    description: str
    e_mac_pj: float  # one multiply-accumulate (real-valued input)
    e_ac_pj: float  # one accumulate (a synaptic operation driven by a spike)
    scope: str  # what the model counts, stated in every report
    e_graded_op_pj: float  # a graded synaptic op (a stream relay's identity synapse)
    e_relay_update_pj: float  # one update of a stream relay neuron
    sources: dict[str, str]  # how the figures beyond the paper's model were taken


@dataclass(frozen=True)
class ChipEnergyModel:
    r"""A neuromorphic chip's own energy per operation: a synaptic op, a neuron update that
    emits a spike (active) or not (inactive), a spike message to one destination core, a graded
    synaptic op, relay update and graded message (residual streams), and the static power of a
    chip. ``left_out``: the terms the model does not price and why;
    ``sources``: the citation of every figure."""

    name: str
    description: str
    e_synaptic_op_pj: float
    e_neuron_update_active_pj: float
    e_neuron_update_inactive_pj: float
    e_spike_message_pj: float
    e_graded_op_pj: float  # a graded synaptic op (a stream relay's identity synapse)
    e_relay_update_pj: float  # one update of a stream relay neuron
    e_graded_message_pj: float  # a graded spike sent to one destination core
    static_mw_per_chip: float
    scope: str
    left_out: tuple[str, ...]
    sources: dict[str, str]


KINDS = {"chip": ChipProfile, "energy": EnergyModel, "chip-energy": ChipEnergyModel}


def _build(cls: type, data: Any, where: str, path: Path) -> Any:
    """``cls`` from JSON ``data``; a missing or mistyped field is a ConfigError naming it."""
    if not isinstance(data, dict):
        raise ConfigError(f"hardware profile {path}: '{where or 'the file'}' must be a JSON "
                          f"object")
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    missing = [prefix + f.name for f in dataclasses.fields(cls) if f.name not in data]
    if missing:
        raise ConfigError(f"hardware profile {path} lacks the field(s) {', '.join(missing)} "
                          f"that every {_kind(cls)} profile needs; restore them, as in the "
                          f"shipped hardware/*.json")
    return cls(**{f.name: _value(hints[f.name], data[f.name], prefix + f.name, path)
                  for f in dataclasses.fields(cls)})


def _kind(cls: type) -> str:
    return next((k for k, c in KINDS.items() if c is cls), "chip")


def _value(hint: Any, value: Any, dotted: str, path: Path) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, dotted, path)
    item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
    if dataclasses.is_dataclass(item) and isinstance(value, list):
        return tuple(_build(item, v, f"{dotted}[{k}]", path) for k, v in enumerate(value))
    value = tuple(value) if isinstance(value, list) else value  # JSON lists are tuples here
    if not has_type(value, hint):
        raise ConfigError(f"hardware profile {path}: field {dotted} must be {type_name(hint)}, "
                          f"got {value!r}")
    return value


#: a profile's name: a file name in hardware/ (never a path), as manifests and results record it
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def profile_text(name: str) -> tuple[Path, str]:
    """(path, text) of ``hardware/NAME.json``; a missing or unreadable one, or a name that is
    not a plain file name, is a ConfigError."""
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"hardware profile name {str(name)[:40]!r} is not a name in "
                          f"{hardware_dir()} (letters, digits, - and _)")
    path = hardware_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir().glob("*.json"))
        raise ConfigError(f"no hardware profile '{name}' in {hardware_dir()}; known: {', '.join(known)}")
    try:
        return path, path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read hardware profile {path}: {exc}") from None


@lru_cache(maxsize=None)
def load_profile(name: str, kind: str = "chip") -> Any:
    """``hardware/NAME.json`` as a :class:`ChipProfile` (``kind="chip"``), an
    :class:`EnergyModel` (``kind="energy"``) or a :class:`ChipEnergyModel`
    (``kind="chip-energy"``)."""
    path, text = profile_text(name)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"cannot read hardware profile {path}: {exc}") from None
    return _build(KINDS[kind], data, "", path)
