r"""Max pools of currents on neuro-cores instead of the host (run by the ``attention`` pass,
after spiking attention).

Each ``HostMaxPool`` host op (Spikingformer's max pool of a convolution's current before its
LIF) and the convolution before it, which the partition would put on the host with it, become
chip layers: the convolution feeds a graded relay (its current, exactly), the relay the pool's
levels of graded ReLU neurons (:mod:`spikeclip_deploy.exchange.current_pool`), in the tree form
of fewer neurons (``flat`` or ``separable``: both are counted), and the pooled LIF reads the last
level. The LIF still sums the convolution (its bias is the convolution's). The pass logs, per
pool, both forms' levels, neurons and synapses, and the neurons, synapses and messages the chip
gains (every neuron active every step: a bound), and keeps them in the graph's
``meta["current_pool"]`` (only where the graph has such pools, so other exports are unchanged).
``form`` ``host`` (``export --current-pool host``) keeps the host ops.
"""
from __future__ import annotations

import dataclasses
import logging

import nir
import numpy as np

from ..errors import LoweringError
from ..exchange.current_pool import PoolNode, cheaper_form, level_specs, tree_costs
from ..exchange.nirgraph import HostOpNode, relay_node
from ..nn.chip_graph import HostMaxPool
from ..targets import CURRENT_POOL_FORMS
from .graph import Graph, Layer

log = logging.getLogger(__name__)


def _costs(levels: list[PoolNode], relay_neurons: int) -> dict:
    """What one pool adds to the chip per step at full activity: ``neurons`` (the relay's and
    the levels'), ``synapses`` (into the levels and the LIF) and ``messages`` (one per neuron
    of the relay and of each level and each population of its readers it reaches)."""
    tree = levels[0].tree
    pops = [n.population for n in levels]
    read_out = np.bincount(tree.readout[0].ravel(), weights=(tree.readout[1] != 0).ravel(),
                           minlength=tree.size(len(pops)))
    return {"neurons": relay_neurons + tree.neurons, "relu_neurons": tree.neurons,
            "synapses": tree.synapses,
            "messages": sum(int(np.count_nonzero(p.fan_out(0))) for p in pops)
            + int(np.count_nonzero(read_out))}


def lower_current_pools(graph: Graph, form: str) -> Graph:
    """The pass (module docstring)."""
    if form not in CURRENT_POOL_FORMS:
        raise LoweringError(f"unknown current pool form '{form}'; choose one of "
                            f"{', '.join(CURRENT_POOL_FORMS)}")
    ops = [la for la in graph.layers if isinstance(la.node, HostOpNode)
           and la.node.op == HostMaxPool.__name__]
    if not ops:
        return graph
    if form == "host":
        return graph.replace(meta={**graph.meta, "current_pool": {"form": form, "layers": {}}})
    new: dict[str, list[Layer]] = {}
    last: dict[str, str] = {}
    report = {}
    for op in ops:
        (src,) = op.inputs
        conv = graph.layer(src)
        if not isinstance(conv.node, nir.Conv2d) or [r.name for r in graph.consumers(src)] != \
                [op.name]:
            raise LoweringError(f"max pool '{op.name}' reads '{src}', which is not a "
                                f"convolution read by it alone: only such a current is pooled "
                                f"on chip (export with --current-pool host)")
        for reader in graph.consumers(op.name):
            if not isinstance(reader.node, nir.LIF) or reader.inputs != (op.name,):
                raise LoweringError(f"max pool '{op.name}' is read by '{reader.name}', which is "
                                    f"not a LIF reading it alone: only such a LIF takes the pool "
                                    f"on chip (export with --current-pool host)")
        c, h, w = op.node.input_shapes[0]
        k, s, p = (int(op.node.metadata[key]) for key in ("kernel_size", "stride", "padding"))
        forms = tree_costs(c, (h, w), k, s, p)
        tree = cheaper_form(forms)
        relay = Layer(f"{op.name}_relay", relay_node((c, h, w), {"pool": op.name}), (src,),
                      conv.source)
        levels = [Layer(spec.name, PoolNode(spec=spec), spec.inputs, op.source)
                  for spec in level_specs(op.name, c, (h, w), k, s, p, tree, relay.name)]
        new[op.name], last[op.name] = [relay, *levels], levels[-1].name
        report[op.name] = cost = {"tree": tree, "channels": c, "grid": [h, w], "kernel": k,
                                  "stride": s, "padding": p, "forms": forms,
                                  **_costs([la.node for la in levels], c * h * w)}
        log.info("%s encoder, max pool %s of %s on chip (%d x %d x %d, kernel %d, stride %d, "
                 "padding %d): flat %s, separable %s: %s; adds %d neurons (%d ReLU neurons in "
                 "%d levels, a relay of %d), %d synapses, %d messages a step at full activity",
                 graph.side, op.name, src, c, h, w, k, s, p, forms["flat"], forms["separable"],
                 tree, cost["neurons"], cost["relu_neurons"], len(levels), c * h * w,
                 cost["synapses"], cost["messages"])
    layers: list[Layer] = []
    for la in graph.layers:
        if la.name in new:
            layers += new[la.name]
        elif la.inputs and la.inputs[0] in last:
            layers.append(dataclasses.replace(la, inputs=(last[la.inputs[0]],)))
        else:
            layers.append(la)
    return graph.replace(layers=tuple(layers),
                         meta={**graph.meta, "current_pool": {"form": form, "layers": report}})


__all__ = ["lower_current_pools"]
