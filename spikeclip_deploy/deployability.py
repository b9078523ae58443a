r"""Whether a registered config deploys to Loihi, and the chip's share of its work, judged from a
seeded random initialisation (no checkpoint, no data): what ``models --deployability`` lists.

``deployable``: ``chip`` when both encoders lower for the ``loihi`` target with every layer on
neuro-cores; ``partitioned`` when they lower with host ops between chip subgraphs (what no
neuro-core computes, e.g. spiking attention's :math:`Q K^\top V`; ``deployable_reason`` names
them); ``no`` when lowering fails (``deployable_reason``: the error's message).

``chip_sop_share`` of an image inference at full activity: with no data to run, every neuron
spikes at every step, so each chip synapse layer performs all its connections at every step:

.. math::

    \mathrm{share} = \frac{T (S + G + P + A)}{T (S + G + P + A) + \mathrm{MAC}_{stem}
    + \mathrm{MAC}_{readout} + T \sum_h \mathrm{MAC}_h}

:math:`S`: the lowered image graph's ``resources["synapses"]`` (dense-equivalent connections of
its chip layers: every copy of a copied synapse, a convolution's padded taps included);
:math:`G`: its ``resources["graded_synapses"]`` (the identity synapses of its stream relays,
which the chip executes too: :func:`~.verify.energy.chip_sop_share`, verify's definition);
:math:`P` and :math:`A`: with spiking attention on chip, its ``product_neurons`` (each
multiplies at every step) and ``attention_synapses`` (the spike and graded synapses into and
out of its populations, each carrying an event at every step), and with max pools of currents on
chip, their ``pool_synapses`` (the signed graded synapses into and out of their ReLU levels,
each carrying a payload at every step);
:math:`\mathrm{MAC}_h`: one evaluation of host op :math:`h` (its ``metadata["macs"]``, the
host-placed synapses before it included); the host's MACs as verify counts them
(:func:`~.verify.energy.host_macs_executed`). verify's ``chip_sop_share`` is measured: the SOPs
its recorded spikes cause (a copied synapse once, no padded taps), so it is at most this value.

Rows are cached in ``cache_dir()/deployability/`` (``$XDG_CACHE_HOME/spikeclip-deploy`` by
default), keyed by the config, the package version, :data:`ROWS` and the target's hardware
profile: computed once (seconds per config), read afterwards (milliseconds).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import ModelConfig
from .errors import HardwareLimitError, LoweringError
from .fileutil import write_cache
from .hardware import profile_text
from .paths import cache_dir
from .targets import get_target

if TYPE_CHECKING:  # the build side is imported only when a row is computed
    from .lowering.graph import Graph

TARGET = "loihi"
SEED = 0
BASIS = ("full activity (every neuron spikes at every step), image inference; verify measures "
         "it from recorded spikes, at most this value")
FIELDS = ("deployable", "deployable_reason", "chip_sop_share", "chip_sop_share_basis")
#: what the rows mean, raised where the lowering changes a row of an unchanged config and
#: version (2: max pools of currents on chip), so that rows cached before are computed again
ROWS = 2


def full_activity_share(image: Graph, once_macs: tuple[int, int]) -> float:
    """``chip_sop_share`` of the lowered image graph at full activity (every synapse and, for a
    residual stream on graded relays, every identity synapse once per step; with attention on
    chip, every product neuron and attention synapse once per step, and every synapse of a
    max pool's levels); ``once_macs``: the
    host's MACs done once per sample, (stem, readout)."""
    from .lowering.graph import run_side_layers
    from .verify.energy import chip_sop_share, host_macs_executed, host_op_macs

    t = image.meta["time_steps"]
    host = host_macs_executed(*once_macs, host_op_macs(run_side_layers(image)), t)
    res = image.meta["resources"]
    attention = (res.get("product_neurons", 0) + res.get("attention_synapses", 0)
                 + res.get("pool_synapses", 0))
    return chip_sop_share(t * res["synapses"], t * res["graded_synapses"], host, t * attention)


def assess(cfg: ModelConfig) -> dict[str, Any]:
    """The row of ``cfg`` (:data:`FIELDS`), from its seeded random initialisation
    (:func:`~.nn.init.random_init`) lowered for the ``loihi`` target."""
    from .export import lower_encoder
    from .export.host import host_macs
    from .exchange.nirgraph import HostOpNode
    from .nn.init import random_init

    model = random_init(cfg, SEED)
    try:
        graphs = [lower_encoder(model, side, get_target(TARGET)) for side in ("image", "text")]
    except (LoweringError, HardwareLimitError) as exc:
        return dict(zip(FIELDS, ("no", str(exc), None, BASIS)))
    ops = [f"{g.side} {la.name} ({la.node.op})" for g in graphs for la in g.layers
           if isinstance(la.node, HostOpNode)]
    macs = host_macs(model)
    share = full_activity_share(graphs[0], (macs["image_stem_macs"], macs["image_readout_macs"]))
    reason = f"host ops between chip subgraphs: {', '.join(ops)}" if ops else None
    return dict(zip(FIELDS, ("partitioned" if ops else "chip", reason, share, BASIS)))


def cache_path(cfg: ModelConfig) -> Path:
    """Where ``cfg``'s row is cached: named by the config, the package version, :data:`ROWS` and
    the target's hardware profile (their contents, hashed)."""
    _, profile = profile_text(get_target(TARGET).hardware)
    key = hashlib.sha256(json.dumps([cfg.to_dict(), __version__, ROWS, profile]).encode()
                         ).hexdigest()
    return cache_dir() / "deployability" / f"{cfg.name}-{key[:16]}.json"


def deployability(cfg: ModelConfig) -> dict[str, Any]:
    """:func:`assess`, read from the cache when it holds the row; a computed row is cached (a
    cache that cannot be written is a warning)."""
    path = cache_path(cfg)
    try:
        row = json.loads(path.read_text())
        if isinstance(row, dict) and tuple(row) == FIELDS:
            return row
    except (OSError, ValueError):
        pass  # not cached yet, or unreadable: compute it
    row = assess(cfg)
    write_cache(path, lambda tmp: tmp.write_text(json.dumps(row, indent=1) + "\n"),
                "deployability")
    return row
