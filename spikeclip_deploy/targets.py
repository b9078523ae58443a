"""The target registry: a target names its hardware profile, its lowering passes and its
backend, or runs another target's export on its own backend (``exports``). Adding a target is
one entry here. Import-light (strings only), so the CLI and the
run side can read it without loading the build side."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    hardware: str | None  # hardware/NAME.json whose fixed point the export uses (None: float)
    passes: tuple[str, ...]  # lowering passes, in order (spikeclip_deploy.lowering.passes)
    backend: str  # "module:Class" of the run-side backend
    exports: str | None = None  # the target whose export this one runs (None: its own)
    #: (chip profile, chip energy model) in hardware/ that price the residual forms
    #: (graded_streams): the float reference prices them as the chip it stands in for
    stream_costs: tuple[str, str] = ("loihi2", "energy-loihi")


#: the residual forms ``export --residual`` offers (the ``graded_streams`` pass)
RESIDUAL_FORMS = ("graded", "copies")

#: where ``export --attention`` puts spiking self-attention (the ``attention`` pass): on
#: neuro-cores (product neurons and graded sums), or on the host between chip subgraphs
ATTENTION_FORMS = ("chip", "host")

#: where ``export --current-pool`` puts max pools of currents (run by the ``attention`` pass):
#: on neuro-cores (levels of graded ReLU neurons), or on the host between chip subgraphs
CURRENT_POOL_FORMS = ("chip", "host")

LOIHI_PASSES = ("fold_bn", "graded_streams", "split_fan_in", "split_fanout", "attention",
                "partition", "align_delays", "quantize", "resources", "check_limits")

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("loihi", "Loihi 2 fixed point, run bit-accurately on Lava", "loihi2", LOIHI_PASSES,
           "spikeclip_deploy.backends.lava:LavaBackend"),
    Target("loihi-emu", "Loihi 2 fixed point (a --target loihi export), Lava's arithmetic "
           "emulated exactly in torch, batched", "loihi2", LOIHI_PASSES,
           "spikeclip_deploy.backends.emulator:EmulatorBackend", exports="loihi"),
    Target("cpu", "float reference: the float NIR graph interpreted in float64", None,
           ("fold_bn", "graded_streams", "split_fan_in", "split_fanout", "attention", "partition",
            "resources"),
           "spikeclip_deploy.backends.cpu:CPUBackend"),
)}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target '{name}'; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def export_target(name: str) -> Target:
    """The target whose export ``name`` runs (itself, unless it runs another's)."""
    target = get_target(name)
    return get_target(target.exports) if target.exports else target


def target_names() -> tuple[str, ...]:
    return tuple(TARGETS)
