r"""The ``split_fan_in`` pass: a dense layer whose neurons read more inputs than a neuro-core
holds input axons, summed as partial sums on graded relays.

A neuro-core receives a spike on one input axon per presynaptic neuron, so a neuron of an
affine layer with fan-in :math:`F` above the core's ``input_axons_per_core`` :math:`A` cannot
be placed at all. As Loihi 2 users split such a fan-in, the pass cuts the layer's input columns
into :math:`K = \lceil F / P \rceil` runs of :math:`P = \lfloor A/2 \rfloor` columns (the other
half of a core's axons left to the identity synapse below) and chains graded relays (Lava's
``GradedVec``, threshold 0, the residual streams' relays):

.. math::

    r_1 = W_{:,1}\,s, \qquad r_k = r_{k-1} + W_{:,k}\,s \quad (k = 2..K), \qquad
    \mathrm{LIF} \leftarrow r_K

where :math:`W_{:,k}` is the weight with every column outside run :math:`k` zero (the bias
stays with the first part) and each relay reaches the next, and the LIF, through an identity
synapse. The partial sums are integers once quantized and the relays add them exactly, so the
LIF receives the layer's own current: its reader reads every part at one scale (as a stream's
terms), and each part's integer weights are the columns of the layer's. Each relay hop is one
synapse more, which the delay alignment counts (part :math:`k` is held :math:`k - 1` steps).
Only affine layers whose readers are all LIFs are split; a convolution keeps its fan-in.
"""
from __future__ import annotations

import dataclasses
import logging

import nir
import numpy as np

from ..exchange.nirgraph import relay_node
from .graph import Graph, Layer

log = logging.getLogger(__name__)


def split_fan_in(graph: Graph, input_axons_per_core: int) -> Graph:
    """The pass (module docstring): every affine layer of fan-in above
    ``input_axons_per_core`` read only by LIFs, as parts chained through graded relays."""
    part = max(1, input_axons_per_core // 2)
    last: dict[str, str] = {}  # split layer -> the relay its readers read
    layers: list[Layer] = []
    for la in graph.layers:
        w = np.asarray(la.node.weight) if isinstance(la.node, nir.Affine) else None
        readers = graph.consumers(la.name)
        if w is None or w.shape[1] <= input_axons_per_core or not readers or not all(
                isinstance(r.node, nir.LIF) for r in readers):
            layers.append(la)
            continue
        parts = -(-w.shape[1] // part)
        prev: tuple[str, ...] = ()
        for k in range(parts):
            lo, hi = k * part, min(w.shape[1], (k + 1) * part)
            wk = np.zeros_like(w)
            wk[:, lo:hi] = w[:, lo:hi]
            node = dataclasses.replace(la.node, weight=wk, bias=np.asarray(la.node.bias) * (k == 0),
                                       metadata={**la.node.metadata, "part_of": la.name,
                                                 "columns": [lo, hi]})
            layers.append(Layer(f"{la.name}_part{k}", node, la.inputs, la.source))
            relay = f"{la.name}_sum{k}"
            layers.append(Layer(relay, relay_node((w.shape[0],), {"fan_in_of": la.name}),
                                prev + (f"{la.name}_part{k}",), la.source))
            prev = (relay,)
        last[la.name] = prev[0]
        log.info("%s encoder: %s reads %d inputs a neuron, over a core's %d input axons: "
                 "summed from %d parts of at most %d on graded relays", graph.side, la.name,
                 w.shape[1], input_axons_per_core, parts, part)
    if not last:
        return graph
    return graph.replace(layers=tuple(dataclasses.replace(
        la, inputs=tuple(last.get(i, i) for i in la.inputs)) for la in layers))
