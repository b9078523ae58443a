"""Where the Lava backend runs: on Loihi 2 hardware (``Loihi2HwCfg``) or on Lava's bit-accurate
simulation of it (``Loihi2SimCfg(select_tag="fixed_pt")``).

Hardware needs Intel's hardware support package lava-loihi (``lava.utils.loihi.is_installed``)
and a reachable board: a host named by ``NXSDKHOST`` (a Kapoho Point or Oheo Gulch system on
the network, which must answer ping) or a SLURM controller (``sinfo``; ``PARTITION``, ``BOARD``
and ``LOIHI_GEN`` choose). Lava's own ``lava.utils.loihi`` functions check both and set up its
environment for the run.
"""
from __future__ import annotations

import logging
import os

from .. import lava_compat
from ..errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

#: the ``--chip`` choices
CHIPS = ("auto", "sim", "hw")
#: the environment variable that sets ``--chip``
CHIP_ENV = "SPIKECLIP_CHIP"


def board_unavailable() -> str | None:
    """Why no Loihi 2 board can run a graph from here, or None when one can (lava's
    environment is then set up for it)."""
    lava_compat.install()
    from lava.utils import loihi

    if not loihi.is_installed():
        return ("Intel's Loihi 2 hardware support package lava-loihi is not installed "
                "(lava.utils.loihi2_profiler does not import)")
    host = os.environ.get("NXSDKHOST")
    try:
        gen = loihi.ChipGeneration(os.environ.get("LOIHI_GEN", "N3B3"))
        if host:
            loihi.use_ethernet_host(host, loihi_gen=gen)
        else:
            loihi.use_slurm_host(partition=os.environ.get("PARTITION"),
                                 board=os.environ.get("BOARD"), loihi_gen=gen)
    except (ImportError, ValueError, OSError) as exc:  # OSError: no sinfo or ping here
        where = f"host NXSDKHOST={host}" if host else "a SLURM controller (sinfo)"
        return f"lava-loihi is installed but no Loihi 2 board is reachable through {where}: {exc}"
    return None


def select_chip(chip: str) -> str:
    """``hw`` or ``sim`` for the choice ``chip``: ``hw`` needs a board (else a
    :class:`BackendUnavailableError` saying why and how to simulate), ``auto`` takes one where
    there is one and otherwise simulates (logged at INFO), ``sim`` simulates."""
    if chip not in CHIPS:
        raise ConfigError(f"unknown chip '{chip}'; choose one of {', '.join(CHIPS)}")
    if chip == "sim":
        return "sim"
    why = board_unavailable()
    if why is None:
        return "hw"
    if chip == "hw":
        raise BackendUnavailableError(
            f"--chip hw asks for Loihi 2 hardware, but {why}; to run on Lava's bit-accurate "
            f"Loihi 2 simulator instead, pass --chip sim (or --chip auto, which uses a board "
            f"when there is one), or set {CHIP_ENV}=sim")
    log.info("no Loihi 2 hardware (%s): Lava simulates the chip bit-accurately (Loihi2SimCfg)",
             why)
    return "sim"
