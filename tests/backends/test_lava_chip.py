"""Where the Lava backend runs: Loihi 2 hardware when asked for and there, else the simulator,
with the hardware probe replaced; on this machine the probe says what is missing."""
import logging

import numpy as np
import pytest

from spikeclip_deploy.backends import lava_chip
from spikeclip_deploy.backends.lava_chip import board_unavailable, select_chip
from spikeclip_deploy.errors import BackendUnavailableError, ConfigError

NO_BOARD = "lava-loihi is installed but no Loihi 2 board is reachable through sinfo"


def _probe(monkeypatch, answer):
    """The hardware probe answers ``answer``; returns the list of its calls."""
    calls = []
    monkeypatch.setattr(lava_chip, "board_unavailable", lambda: calls.append(1) or answer)
    return calls


def test_sim_never_probes(monkeypatch):
    calls = _probe(monkeypatch, None)
    assert select_chip("sim") == "sim" and calls == []


def test_auto_takes_a_board_when_there_is_one(monkeypatch):
    _probe(monkeypatch, None)
    assert select_chip("auto") == "hw" and select_chip("hw") == "hw"


def test_auto_simulates_without_a_board_and_says_why(monkeypatch, caplog):
    _probe(monkeypatch, NO_BOARD)
    with caplog.at_level(logging.INFO, logger=lava_chip.__name__):
        assert select_chip("auto") == "sim"
    (record,) = caplog.records
    assert record.levelno == logging.INFO and NO_BOARD in record.getMessage()
    assert "simulates" in record.getMessage()


def test_hw_without_a_board_names_the_cause_and_the_simulator(monkeypatch):
    _probe(monkeypatch, NO_BOARD)
    with pytest.raises(BackendUnavailableError) as err:
        select_chip("hw")
    message = str(err.value)
    assert NO_BOARD in message and "--chip sim" in message and "SPIKECLIP_CHIP=sim" in message


def test_an_unknown_choice_is_refused():
    with pytest.raises(ConfigError, match="choose one of auto, sim, hw"):
        select_chip("gpu")


@pytest.mark.lava
def test_without_lava_loihi_the_probe_says_so():
    """This machine has lava-nc but not Intel's lava-loihi."""
    from lava.utils import loihi

    if loihi.is_installed():
        pytest.skip("lava-loihi is installed here")
    assert "lava-loihi is not installed" in board_unavailable()


@pytest.mark.lava
def test_the_backend_runs_where_it_was_told(micro_exports, monkeypatch):
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

    from spikeclip_deploy.backends.lava import LavaBackend, _lava

    _probe(monkeypatch, NO_BOARD)
    assert LavaBackend(micro_exports["loihi"]).chip == "sim"
    with pytest.raises(BackendUnavailableError, match="--chip sim"):
        LavaBackend(micro_exports["loihi"], chip="hw")
    sim, hw = _lava(chip="sim"), _lava(chip="hw")
    assert type(sim["run_cfg"]()) is Loihi2SimCfg and type(hw["run_cfg"]()) is Loihi2HwCfg
    # on hardware, Lava's own convolution processes (neuro-core models), not this package's
    assert hw["conv"] is _lava(reference=True)["conv"] and len(hw["models"]) < len(sim["models"])


@pytest.mark.lava
@pytest.mark.hardware
def test_on_loihi_2_hardware_the_spikes_are_the_emulators(micro_exports):
    """Needs lava-loihi and a reachable Loihi 2 board; skipped with the probe's reason."""
    why = board_unavailable()
    if why:
        pytest.skip(why)
    from spikeclip_deploy.backends.emulator import EmulatorBackend
    from spikeclip_deploy.backends.lava import LavaBackend

    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    with LavaBackend(micro_exports["loihi"], chip="hw") as chip, \
            EmulatorBackend(micro_exports["loihi"]) as emu:
        for got, want in zip(chip.encode_images(images)[1], emu.encode_images(images)[1]):
            assert np.array_equal(got, want)
