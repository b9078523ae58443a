"""The hardware figures an export was lowered for, as its manifest carries them (the ``chip``
record): the fixed point the chip computes in and what one neuro-core holds. The run side reads
them from here, never from a hardware profile, so an export runs with nothing beside it.

The same typed records make up a hardware profile (:mod:`spikeclip_deploy.hardware` reads those
from ``hardware/NAME.json``); :func:`build_record` turns JSON into any of them, checking every
field's presence and type.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any

from ..fieldtypes import has_type, type_name

#: a profile's name: a file name in hardware/ (never a path), as manifests and results record it
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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
class ChipRecord:
    """The manifest's ``chip`` record: the fixed point the export's integers are in and the
    per-core resources it maps onto, as the profile it was lowered with held them."""

    fixed_point: FixedPoint
    cores: Cores

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RecordProblem(ValueError):
    """JSON that does not make a record; ``missing``: the absent fields (dotted), if that is
    the problem."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


def build_record(cls: type, data: Any, where: str = "") -> Any:
    """``cls`` (a dataclass of JSON-typed fields, dataclasses and tuples of them) from JSON
    ``data``; a missing or mistyped field is a :class:`RecordProblem` naming it."""
    if not isinstance(data, dict):
        raise RecordProblem(f"'{where or 'the file'}' must be a JSON object")
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    missing = tuple(prefix + f.name for f in dataclasses.fields(cls) if f.name not in data)
    if missing:
        raise RecordProblem(f"lacks the field(s) {', '.join(missing)}", missing)
    return cls(**{f.name: _value(hints[f.name], data[f.name], prefix + f.name)
                  for f in dataclasses.fields(cls)})


def _value(hint: Any, value: Any, dotted: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_record(hint, value, dotted)
    item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
    if dataclasses.is_dataclass(item) and isinstance(value, list):
        return tuple(build_record(item, v, f"{dotted}[{k}]") for k, v in enumerate(value))
    value = tuple(value) if isinstance(value, list) else value  # JSON lists are tuples here
    if not has_type(value, hint):
        raise RecordProblem(f"field {dotted} must be {type_name(hint)}, got {value!r}")
    return value
