r"""The ``attention`` pass: spiking self-attention on neuro-cores instead of the host.

Each ``SpikeAttention`` host op (:math:`Y_h = c\,(Q_h K_h^\top) V_h` per head, then the
attention LIF) becomes, per head, its chain of product-neuron and graded-sum populations
(:mod:`spikeclip_deploy.exchange.attention`), in the order of fewer products: ``k_first``
(:math:`2Nd^2` per head and step) or ``q_first`` (:math:`2N^2d`). The attention LIF then reads
its heads' ``y`` populations, whose synapses into it carry the scale :math:`c` (on a fixed-point
target the quantizer turns it into an integer weight and folds the rest into the LIF's
threshold). The pass logs, per attention, both orders' products and the neurons, synapses and
messages the chip gains (every neuron active every step: a bound), and keeps them in the graph's
``meta["attention"]``. ``form`` ``host`` (``export --attention host``) keeps the host op.
"""
from __future__ import annotations

import dataclasses
import logging

import nir
import numpy as np

from ..errors import LoweringError
from ..exchange.attention import ORDERS, AttentionNode, cheaper_order, head_specs, products
from ..exchange.nirgraph import HostOpNode
from ..nn.chip_graph import SpikeAttention
from ..targets import ATTENTION_FORMS
from .graph import Graph, Layer

log = logging.getLogger(__name__)


def _costs(nodes: list[AttentionNode], tokens: int, d: int, heads: int) -> dict:
    """One attention's figures per step (module docstring): ``products`` of both orders, and of
    its populations ``neurons``, ``product_neurons``, ``synapses`` and ``messages`` (one per
    source neuron and population it reaches, and one per ``y`` neuron into the LIF)."""
    pops = [n.population for n in nodes]
    messages = sum(int(np.count_nonzero(p.fan_out(k))) for p in pops for k in range(len(p.sources)))
    messages += sum(p.neurons for p in pops if p.targets is not None)
    return {"order": nodes[0].spec.order, "heads": heads, "tokens": tokens, "d": d,
            "products": {o: heads * products(o, tokens, d) for o in ORDERS},
            "neurons": sum(p.neurons for p in pops),
            "product_neurons": sum(p.neurons for p in pops if p.kind == "product"),
            "synapses": sum(p.synapses for p in pops), "messages": messages}


def lower_attention(graph: Graph, form: str) -> Graph:
    """The pass (module docstring)."""
    if form not in ATTENTION_FORMS:
        raise LoweringError(f"unknown attention form '{form}'; choose one of "
                            f"{', '.join(ATTENTION_FORMS)}")
    ops = [la for la in graph.layers if isinstance(la.node, HostOpNode)
           and la.node.op == SpikeAttention.__name__]
    if form == "host" or not ops:
        return graph.replace(meta={**graph.meta, "attention": {"form": form, "layers": {}}})
    ys: dict[str, tuple[str, ...]] = {}
    new: dict[str, list[Layer]] = {}
    report = {}
    for op in ops:
        for reader in graph.consumers(op.name):
            if not isinstance(reader.node, nir.LIF) or reader.inputs != (op.name,):
                raise LoweringError(f"attention '{op.name}' is read by '{reader.name}', which "
                                    f"is not a LIF reading it alone: only such a LIF takes "
                                    f"attention on chip (export with --attention host)")
        c, h, w = op.node.input_shapes[0]
        heads = int(op.node.metadata["heads"])
        d, tokens = c // heads, h * w
        order = cheaper_order(tokens, d)
        nodes = [AttentionNode(spec=spec, weight=float(op.node.metadata["grid"])
                               if spec.stage == "y" else 1.0)
                 for head in range(heads)
                 for spec in head_specs(op.name, head, heads, (h, w), d, order, op.inputs)]
        new[op.name] = [Layer(n.spec.name, n, n.spec.inputs, op.source) for n in nodes]
        ys[op.name] = tuple(n.spec.name for n in nodes if n.spec.stage == "y")
        report[op.name] = cost = _costs(nodes, tokens, d, heads)
        log.info("%s encoder, attention %s on chip (%d heads, N=%d tokens, d=%d): products a "
                 "step k_first %d, q_first %d: %s; adds %d neurons (%d product neurons), %d "
                 "synapses, %d messages a step at full activity", graph.side, op.name, heads,
                 tokens, d, cost["products"]["k_first"], cost["products"]["q_first"], order,
                 cost["neurons"], cost["product_neurons"], cost["synapses"], cost["messages"])
    layers: list[Layer] = []
    for la in graph.layers:
        if la.name in new:
            layers += new[la.name]
        elif len(la.inputs) == 1 and la.inputs[0] in ys:
            layers.append(dataclasses.replace(la, inputs=ys[la.inputs[0]]))
        else:
            layers.append(la)
    return graph.replace(layers=tuple(layers),
                         meta={**graph.meta, "attention": {"form": form, "layers": report}})


__all__ = ["lower_attention"]
