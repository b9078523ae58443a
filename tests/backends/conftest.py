"""Shared helpers of the backend tests, as a fixture (tests do not import one another): a small
spiking encoder's export read back from its NIR file, and its runs on the emulator and Lava."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends.base import input_mantissa
from spikeclip_deploy.backends.emulator import Emulation
from spikeclip_deploy.exchange.nirgraph import graph_layers
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering.graph import run_passes, to_nir, trace
from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
from spikeclip_deploy.targets import get_target


class ChipRuns:
    """An encoder exported for a target, written as NIR and read back; the Loihi export run for
    ``steps`` steps on the emulator or Lava under the ``loihi2`` profile's fixed point, every
    LIF's u and v and every population's payloads recorded."""

    fixed_point = load_profile("loihi2").fixed_point

    @staticmethod
    def export(enc, shape: tuple[int, ...], tmp_path, target: str = "loihi") -> nir.NIRGraph:
        t = get_target(target)
        ctx = LoweringContext(t.name, load_profile(t.hardware) if t.hardware else None, None)
        g = run_passes(trace(enc, "image", torch.zeros(1, *shape)), passes_named(t.passes), ctx)
        path = tmp_path / f"{target}.nir"
        nir.write(path, to_nir(g))
        return nir.read(path)

    @classmethod
    def emulate(cls, graph: nir.NIRGraph, current: torch.Tensor, steps: int):
        """The emulator's run of ``graph`` on the host current ``current``, state recorded."""
        return Emulation(graph_layers(graph), steps, cls.fixed_point,
                         graph.metadata["synapse_delay_steps"], ".").run(
            input_mantissa(current.numpy().astype(np.float64), graph, "image"), record_state=True)

    @classmethod
    def lava(cls, graph: nir.NIRGraph, current: torch.Tensor, steps: int, layers=None):
        """The Lava backend's run of ``graph`` (or of its ``layers``), state recorded."""
        from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

        return _Network(_lava(), layers or graph_layers(graph), steps, LavaBackend.handlers,
                        cls.fixed_point.activation_shift,
                        graph.metadata["synapse_delay_steps"], ".").record(
            input_mantissa(current.numpy().astype(np.float64), graph, "image"), state=True)

    @staticmethod
    def assert_lava_equals_emulator(lava, emu) -> None:
        """Every LIF's spikes, u and v and every population's payloads, every step and
        sample."""
        assert list(lava.spikes) == list(emu.spikes)
        assert sorted(lava.payloads) == sorted(emu.payloads)
        for name in emu.spikes:
            for var in ("spikes", "u", "v"):
                np.testing.assert_array_equal(getattr(lava, var)[name], getattr(emu, var)[name],
                                              err_msg=f"{name} {var}")
        for name, p in emu.payloads.items():
            np.testing.assert_array_equal(lava.payloads[name], p, err_msg=name)


@pytest.fixture(scope="session")
def chip_runs() -> type[ChipRuns]:
    """:class:`ChipRuns`."""
    return ChipRuns
