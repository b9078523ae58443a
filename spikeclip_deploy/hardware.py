"""Hardware profiles (``hardware/NAME.json``, data, not code) as typed, frozen records.

A chip profile holds every fixed-point constant the lowering and the backends use; an energy
profile the per-operation energies of a cost model (the 45 nm compute-only model, or a chip's
own: synaptic ops, neuron updates, spike messages, static power). Loading checks each field's presence and
type and names the file and the field when one is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .exchange.chip import (PROFILE_NAME, ChipRecord, Cores, FixedPoint, RecordProblem,
                            build_record)
from .paths import hardware_dir


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
class ChipProfile:
    name: str
    description: str
    fixed_point: FixedPoint
    synapse_delay_steps: int  # steps a spike takes through one synapse layer
    limits: Limits
    cores: Cores

    @property
    def record(self) -> ChipRecord:
        """What an export lowered with this profile carries of it (its manifest's ``chip``)."""
        return ChipRecord(self.fixed_point, self.cores)


@dataclass(frozen=True)
class EnergyModel:
    name: str
    description: str
    e_mac_pj: float  # one multiply-accumulate (real-valued input)
    e_ac_pj: float  # one accumulate (a synaptic operation driven by a spike)
    scope: str  # what the model counts, stated in every report
    e_graded_op_pj: float  # a graded synaptic op (a stream relay's identity synapse)
    e_relay_update_pj: float  # one update of a stream relay neuron
    e_relu_update_pj: float  # one update of a graded ReLU neuron (a current max pool on chip)
    e_product_pj: float  # one product of spiking attention (a multiply of two nonzero inputs)
    sources: dict[str, str]  # how the figures beyond the paper's model were taken


@dataclass(frozen=True)
class ChipEnergyModel:
    r"""A neuromorphic chip's own energy per operation: a synaptic op, a neuron update that
    emits a spike (active) or not (inactive), a spike message to one destination core, a graded
    synaptic op, relay update and graded message (residual streams), a product neuron's update
    (spiking attention on chip) with a nonzero product or not, a graded ReLU neuron's update (a
    current max pool on chip), and the static power of a chip.
    ``left_out``: the terms the model does not price and why;
    ``sources``: the citation of every figure."""

    name: str
    description: str
    e_synaptic_op_pj: float
    e_neuron_update_active_pj: float
    e_neuron_update_inactive_pj: float
    e_spike_message_pj: float
    e_graded_op_pj: float  # a graded synaptic op (a stream relay's identity synapse)
    e_relay_update_pj: float  # one update of a stream relay neuron
    e_relu_update_pj: float  # one update of a graded ReLU neuron (a current max pool on chip)
    e_graded_message_pj: float  # a graded spike sent to one destination core
    e_product_update_active_pj: float  # a product neuron's update that sends a nonzero product
    e_product_update_inactive_pj: float  # a product neuron's update whose product is zero
    static_mw_per_chip: float
    scope: str
    left_out: tuple[str, ...]
    sources: dict[str, str]


KINDS = {"chip": ChipProfile, "energy": EnergyModel, "chip-energy": ChipEnergyModel}


def _build(cls: type, data: Any, path: Path) -> Any:
    """``cls`` from JSON ``data``; a missing or mistyped field is a ConfigError naming it."""
    try:
        return build_record(cls, data)
    except RecordProblem as exc:
        if exc.missing:
            kind = next(k for k, c in KINDS.items() if c is cls)
            raise ConfigError(f"hardware profile {path} lacks the field(s) "
                              f"{', '.join(exc.missing)} that every {kind} profile needs; "
                              f"restore them, as in the shipped hardware/*.json") from None
        raise ConfigError(f"hardware profile {path}: {exc}") from None


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
    return _build(KINDS[kind], data, path)
