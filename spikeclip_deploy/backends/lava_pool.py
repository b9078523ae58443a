r"""A max pool of integer currents on Lava's stock processes: a tree of graded ReLU levels.

:math:`\max(a, b) = \mathrm{relu}(a - b) + \mathrm{relu}(b) - \mathrm{relu}(-b)`, so a window's
maximum is a tree of levels, each a ``GradedReluVec`` (threshold 0: :math:`v = a_{in}`,
:math:`s = v\,[v > 0]`, memoryless, sent as a graded spike) reading the level below (the first:
the graded relay that holds the currents) through a graded ``Sparse`` of weights :math:`\pm 1`;
the last level reaches its reader through a graded ``Sparse`` of weights :math:`\pm 1` too. A
level's values are never materialised: each is a signed sum of the level's neurons.

Lava's (and Loihi's) mixed-sign synapses keep 8 weight bits, one of them the sign: they drop a
weight's least significant bit (``truncate_weights``), so :math:`\pm 1` would become 0 and
:math:`-2`. A unit weight is written :math:`\pm 2` with ``weight_exp`` :math:`-1`
(:data:`UNIT`): each reader's sum :math:`\sum \pm 2 a` is even and :math:`\gg 1` halves it
exactly.

A level is given as its signed weights ``[neurons, source neurons]`` (csr, weights +1 or -1;
sources and the readout's rows in PyTorch's flat C order, the relay and the reader converted to
Lava's layout here). Every synapse delivers in the next step, so a relay's payloads of chip step
:math:`t` reach the reader at :math:`t + L + 1` for :math:`L` levels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from .lava_layout import lava_positions
from .lava_sparse import sparse_synapse

#: a unit weight as mixed-sign synapses hold it: mantissa 2, exponent -1 (module docstring)
UNIT = (2, -1)


def _signed(weights: csr_matrix, rows: np.ndarray | None, cols: np.ndarray | None,
            shape: tuple[int, int]) -> csr_matrix:
    """``weights`` (:math:`\pm 1`) with its rows and columns renumbered (``None``: kept), as
    int32 mantissas of :data:`UNIT`."""
    w = weights.tocoo()
    r = w.row if rows is None else rows[w.row]
    c = w.col if cols is None else cols[w.col]
    return csr_matrix((UNIT[0] * w.data.astype(np.int32), (r, c)), shape=shape)


def relu_levels(L: dict, source: Any, source_shape: tuple[int, ...],
                levels: list[csr_matrix], readout: csr_matrix, out_shape: tuple[int, ...],
                bits: int) -> tuple[list[Any], Any]:
    """Wire ``source`` (a graded relay's process of PyTorch ``source_shape``, Lava layout)
    through ``levels`` of ``GradedReluVec`` to a graded ``Sparse`` of ``readout`` into a reader
    of PyTorch ``out_shape`` (Lava layout): the levels' processes and that synapse's flat
    output port."""
    procs: list[Any] = []
    port = source.s_out.flatten() if len(source.s_out.shape) > 1 else source.s_out
    n_src = int(np.prod(source_shape))
    cols: np.ndarray | None = lava_positions(source_shape)
    for w in levels:
        syn = sparse_synapse(L, _signed(w, None, cols, (w.shape[0], n_src)), bits, 0, UNIT[1])
        port.connect(syn.s_in)
        proc = L["GradedReluVec"](shape=(w.shape[0],), vth=0)
        syn.a_out.connect(proc.a_in)
        procs.append(proc)
        port, n_src, cols = proc.s_out, w.shape[0], None
    n_out = int(np.prod(out_shape))
    syn = sparse_synapse(L, _signed(readout, lava_positions(out_shape), None, (n_out, n_src)),
                         bits, 0, UNIT[1])
    port.connect(syn.s_in)
    return procs, syn.a_out
