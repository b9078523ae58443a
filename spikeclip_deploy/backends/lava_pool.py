r"""A current max pool's ReLU levels (:mod:`spikeclip_deploy.exchange.current_pool`) as Lava's
stock processes: each level a ``GradedReluVec`` (threshold 0: :math:`v = a_{in}`,
:math:`s = v\,[v > 0]`, memoryless, sent as a graded spike) of one flat dimension in the order
of the level's neurons, reading its source (the pool's graded relay, or the level before)
through a graded ``Sparse`` of its signed weights (``DelaySparse`` holding them the level's
``delay`` steps more where that is nonzero); the pooled LIF reads the last level through a
graded ``Sparse`` of the readout's signed weights. Every synapse delivers in the next step, as
the chip graph's depths count (:func:`~spikeclip_deploy.exchange.nirgraph.depths`): a relay's
payloads of chip step :math:`t` reach the LIF at :math:`t + L + 1` for :math:`L` levels.

Lava's (and Loihi's) mixed-sign synapses keep 8 weight bits, one of them the sign: they drop a
weight's least significant bit (``truncate_weights``), so :math:`\pm 1` would become 0 and
:math:`-2`. A unit weight is written :math:`\pm 2` with ``weight_exp`` :math:`-1`
(:data:`UNIT`): each reader's sum :math:`\sum \pm 2 a` is even and :math:`\gg 1` halves it
exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from ..exchange.current_pool import PoolNode
from .lava_layout import lava_positions
from .lava_sparse import sparse_synapse

#: a unit weight as mixed-sign synapses hold it: mantissa 2, exponent -1 (module docstring)
UNIT = (2, -1)


def _signed(sources: np.ndarray, weights: np.ndarray, rows: np.ndarray, cols: np.ndarray | None,
            shape: tuple[int, int]) -> csr_matrix:
    r"""``[readers, fan_in]`` sources and :math:`\pm 1` weights (0: none) -> the csr matrix
    ``[readers, sources]`` of :data:`UNIT` mantissas, readers at ``rows``, sources renumbered by
    ``cols`` (None: kept)."""
    r, k = np.nonzero(weights)
    c = sources[r, k] if cols is None else cols[sources[r, k]]
    return csr_matrix((UNIT[0] * weights[r, k].astype(np.int32), (rows[r], c)), shape=shape)


def level(L: dict, node: PoolNode) -> Any:
    """The level's process: ``GradedReluVec`` with its threshold."""
    return L["GradedReluVec"](shape=(node.population.neurons,),
                              vth=int(node.metadata["loihi"]["vth"]))


def _bits(node: PoolNode) -> int:
    return int(node.metadata["loihi"]["num_message_bits"])


def level_weights(node: PoolNode) -> csr_matrix:
    """The level's synapses ``[neurons, source neurons]`` (level 1: its relay's, in Lava's
    layout)."""
    pop = node.population
    (src,), (w,), (size,) = pop.sources, pop.weights, pop.source_sizes
    cols = lava_positions(node.spec.block_shape) if node.spec.level == 1 else None
    return _signed(src, w, np.arange(pop.neurons), cols, (pop.neurons, size))


def level_synapse(L: dict, node: PoolNode) -> Any:
    """The graded synapses into the level (:func:`level_weights`), held ``delay`` steps more."""
    return sparse_synapse(L, level_weights(node), _bits(node), node.delay, UNIT[1])


def readout_weights(node: PoolNode) -> csr_matrix:
    """The last level's synapses into the pooled LIF ``[LIF neurons (Lava layout), neurons]``:
    each window's maximum (:attr:`~.current_pool.PoolTree.readout`)."""
    src, w = node.tree.readout
    n = int(np.prod(node.spec.out_shape))
    return _signed(src, w, lava_positions(node.spec.out_shape), None,
                   (n, node.population.neurons))


def readout_synapse(L: dict, node: PoolNode) -> Any:
    """The graded synapses from the last level into the pooled LIF (:func:`readout_weights`)."""
    return sparse_synapse(L, readout_weights(node), _bits(node), 0, UNIT[1])


def relu_levels(L: dict, relay: Any, levels: list[PoolNode]) -> tuple[list[Any], Any]:
    """A pool's ``levels`` (data-flow order) wired from the ``relay`` process that holds its
    current: the levels' processes and the readout synapse's flat output port (what the pooled
    LIF sums)."""
    procs, port = [], relay.s_out.flatten() if len(relay.s_out.shape) > 1 else relay.s_out
    for node in levels:
        syn, proc = level_synapse(L, node), level(L, node)
        port.connect(syn.s_in)
        syn.a_out.connect(proc.a_in)
        procs.append(proc)
        port = proc.s_out
    syn = readout_synapse(L, levels[-1])
    port.connect(syn.s_in)
    return procs, syn.a_out
