r"""Spiking self-attention's populations (:mod:`spikeclip_deploy.exchange.attention`) as Lava's
stock processes: a product population is a ``ProdNeuron`` (:math:`v = (a_1 a_2) \gg exp`,
:math:`s = v\,[|v| > v_{th}]`; with :math:`v_{th} = 0`, :math:`exp = 0` it sends the product, of
two spikes their AND), a graded sum a ``GradedVec`` (:math:`s = a_{in}\,[|a_{in}| > v_{th}]`,
memoryless), each of one flat dimension in the order of the population's neurons.

Each port reads its source through a ``Sparse`` of unit weights from the population's
``sources`` (binary from a Q, K or V LIF, graded, ``num_message_bits`` > 0, from a population),
a ``DelaySparse`` holding it the port's ``delays[k]`` steps more where that is nonzero; the
``y`` populations reach the attention LIF through a graded ``Sparse`` of their integer weight
(mantissa and exponent) at their ``targets``. Every synapse delivers in the next step, as the
chip graph's depths count (:func:`~spikeclip_deploy.exchange.nirgraph.depths`).

Each population is one process, as the chip graph holds it (one per head and stage): Lava's
run time grows with the product neurons (N d^2 per head and stage) and the processes; the
measured cost of the alternatives (all heads of a stage in one process, dense synapses) is in
``benchmarks/lava_attention.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from ..errors import ExportError
from ..exchange.attention import AttentionNode
from .lava_layout import lava_positions
from .lava_sparse import sparse_synapse

#: the input ports of a product population's ``ProdNeuron``, in port order
PRODUCT_PORTS = ("a_in1", "a_in2")


def population(L: dict, node: AttentionNode) -> Any:
    """The population's process: ``ProdNeuron`` or ``GradedVec`` with its quantized registers."""
    pop, q = node.population, node.metadata["loihi"]
    if pop.kind == "product":
        return L["ProdNeuron"](shape=(pop.neurons,), vth=int(q["vth"]), exp=int(q["exp"]))
    return L["GradedVec"](shape=(pop.neurons,), vth=int(q["vth"]))


def in_ports(proc: Any) -> list[Any]:
    """A population process's input ports, in port order."""
    return [getattr(proc, p) for p in PRODUCT_PORTS] if hasattr(proc, "a_in1") else [proc.a_in]


def port_weights(node: AttentionNode, k: int) -> csr_matrix:
    """Port ``k``'s unit weights ``[neurons, source neurons]`` from each neuron's
    ``sources[k]`` (a Q, K or V LIF's neurons in Lava's layout)."""
    pop = node.population
    src = pop.sources[k]
    if pop.binary(k):  # PyTorch (C, H, W) flat -> Lava (X, Y, C) flat
        src = lava_positions(node.spec.block_shape)[src]
    rows = np.repeat(np.arange(pop.neurons), src.shape[1])
    return csr_matrix((np.ones(src.size, dtype=np.int32), (rows, src.ravel())),
                      shape=(pop.neurons, pop.source_sizes[k]))


def port_bits(node: AttentionNode, k: int) -> int:
    """Message bits of port ``k``: 0 for spikes, the graded payload's otherwise."""
    return 0 if node.population.binary(k) else int(node.metadata["loihi"]["num_message_bits"])


def port_synapse(L: dict, node: AttentionNode, k: int) -> Any:
    """The synapses of port ``k`` (:func:`port_weights`), held ``delays[k]`` steps more."""
    return sparse_synapse(L, port_weights(node, k), port_bits(node, k), node.delays[k])


def weight_mantissa(weight: float, name: str) -> tuple[int, int]:
    """An integer synapse weight :math:`w = m 2^e` with :math:`m` odd (or 0) -> ``(m, e)``,
    refused where it is no integer or :math:`m` passes Lava's 8-bit weights."""
    if weight != int(weight):
        raise ExportError(f"attention population '{name}' drives its LIF with weight {weight}, "
                          f"which is no integer: re-export it for --target loihi")
    w = int(weight)
    e = (w & -w).bit_length() - 1 if w else 0
    if abs(w >> e) > 255:
        raise ExportError(f"attention population '{name}' drives its LIF with weight {w} = "
                          f"{w >> e} * 2^{e}, whose mantissa passes 8 bits: re-export with "
                          f"--attention host")
    return w >> e, e


def output_weights(node: AttentionNode) -> csr_matrix:
    """A ``y`` population's weights into the attention LIF ``[LIF neurons (flat, Lava layout),
    neurons]``: its weight's mantissa (:func:`weight_mantissa`) at its ``targets``."""
    pop = node.population
    m, _ = weight_mantissa(node.weight, node.spec.name)
    return csr_matrix((np.full(pop.neurons, m, dtype=np.int32),
                       (lava_positions(node.spec.block_shape)[pop.targets],
                        np.arange(pop.neurons))),
                      shape=(int(np.prod(node.spec.block_shape)), pop.neurons))


def output_synapse(L: dict, node: AttentionNode) -> Any:
    """A ``y`` population's graded synapses into the attention LIF (:func:`output_weights`,
    and its weight's exponent)."""
    return sparse_synapse(L, output_weights(node), port_bits(node, 0), 0,
                          weight_exp=weight_mantissa(node.weight, node.spec.name)[1])
