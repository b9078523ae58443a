"""Static resource counts of a chip graph: fan-out, dense-equivalent MACs, neurons, synapses
(connections, what the chip computes) and stored weights (what it must hold in memory)."""
from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F

from .attention import AttentionNode
from .current_pool import PoolNode
from .nirgraph import HostOpNode, flops, is_relay, pair, part_columns


def fan_out(node: nir.NIRNode, in_shape: tuple[int, ...]) -> np.ndarray:
    """Synapses leaving each input neuron (shape ``in_shape``; a part of a split fan-in: its own
    columns or input channels only)."""
    lo, hi = part_columns(node)
    if isinstance(node, nir.Affine):
        out = np.zeros(in_shape, dtype=np.int64)
        out[lo:hi] = np.asarray(node.weight).shape[0]
        return out
    w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float64)
    ones = torch.zeros_like(w)
    ones[:, lo:hi] = 1
    ones_in = torch.ones(1, *in_shape, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(ones_in, ones, stride=pair(node.stride), padding=pair(node.padding),
                   dilation=pair(node.dilation), groups=int(np.asarray(node.groups)))
    out.sum().backward()  # d(sum of outputs)/d(input i) = synapses leaving i
    return ones_in.grad[0].round().numpy().astype(np.int64)


def stored_weights(node: nir.NIRNode) -> int:
    """Weights a chip stores for one synapse layer: a convolution's kernel once (its weights are
    shared over all positions), a dense layer's matrix in full (a part of a split fan-in: its
    own columns or input channels)."""
    w = np.asarray(node.weight)
    lo, hi = part_columns(node)
    return int(w.shape[0] * (hi - lo) * np.prod(w.shape[2:]))


def graph_resources(layers: list[tuple[str, nir.NIRNode, tuple[str, ...]]],
                    in_shape: tuple[int, ...]) -> dict[str, int]:
    """Counts of the run side's layers ``(name, node, inputs)`` in topological order
    (``"input"``: shape ``in_shape``; host ops count nothing here): ``neurons`` (LIF state),
    ``synapses`` (dense-equivalent connections, one per input-output pair of every synapse
    layer, a convolution's padded taps included: what the chip computes, the basis of the energy
    model) and ``stored_weights`` (:func:`stored_weights` summed: what its synaptic memory
    holds). A synapse layer copied for several readers counts once per copy in both: each copy
    has weights of its own. Graded stream relays count as ``relay_neurons`` (also in
    ``neurons``: they take compartments) and their identity synapses, one per relay neuron and
    reader, as ``graded_synapses`` (also stored weights). Attention populations
    (:func:`~.attention.expand`) count as ``attention_neurons`` (``product_neurons`` of them
    product neurons; all also in ``neurons``) and their synapses, ``y``'s into the attention LIF
    included, as ``attention_synapses`` (also stored weights), and the levels of max pools of
    currents (:func:`~.current_pool.expand`) as ``relu_neurons`` (also in ``neurons``) and
    their signed synapses, those into the pooled LIF included, as ``pool_synapses`` (also
    stored weights): keys a graph without them lacks."""
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(in_shape)}
    neurons = synapses = stored = relay_neurons = graded = 0
    attention = {"attention_neurons": 0, "product_neurons": 0, "attention_synapses": 0}
    pools = {"relu_neurons": 0, "pool_synapses": 0}
    relays: set[str] = set()
    for name, node, inputs in layers:
        if isinstance(node, PoolNode):  # its synapses are its own, signed (not identities)
            pop = node.population
            shapes[name] = node.output_type["output"].tolist()
            read_out = int(np.count_nonzero(node.tree.readout[1])) if node.last else 0
            neurons += pop.neurons
            pools["relu_neurons"] += pop.neurons
            pools["pool_synapses"] += pop.synapses + read_out
            stored += pop.synapses + read_out
            continue
        graded += sum(int(np.prod(shapes[i])) for i in inputs if i in relays)
        if isinstance(node, AttentionNode):
            pop = node.population
            shapes[name] = node.spec.block_shape
            neurons += pop.neurons
            attention["attention_neurons"] += pop.neurons
            attention["product_neurons"] += pop.neurons if pop.kind == "product" else 0
            attention["attention_synapses"] += pop.synapses
            stored += pop.synapses
        elif isinstance(node, HostOpNode):  # host work, counted by energy as host MACs
            shapes[name] = node.output_shape
        elif isinstance(node, nir.LIF) or is_relay(node):
            shapes[name] = np.asarray(node.tau if isinstance(node, nir.LIF) else node.scale).shape
            neurons += int(np.prod(shapes[name]))
            if is_relay(node):
                relays.add(name)
                relay_neurons += int(np.prod(shapes[name]))
        else:
            synapses += flops(node, shapes[inputs[0]])
            stored += stored_weights(node)
            shapes[name] = shapes[inputs[0]]
    return {"neurons": neurons, "synapses": synapses, "stored_weights": stored + graded,
            "relay_neurons": relay_neurons, "graded_synapses": graded,
            **(attention if attention["attention_neurons"] else {}),
            **(pools if pools["relu_neurons"] else {})}
