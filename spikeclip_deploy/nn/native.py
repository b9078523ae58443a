r"""Loihi-native Spikingformer: every synapse layer reads spikes, so all of it runs on neuro-cores.

Spikingformer's layout with its two chip-incompatible operations replaced:

* spike-domain pooling: max pooling stands after the LIF (:class:`~.chip_graph.SpikeMaxPool`,
  the OR of binary spikes), not on the real-valued conv output before it;
* token mixing by static synapses instead of spiking self-attention (:math:`Q K^\top V`
  multiplies two activations): a depthwise :math:`k \times k` convolution over the token grid,
  the SepConv / ConvMixer token mixer of Spike-driven Transformer V2 (Yao et al., ICLR 2024).

With ``channels`` :math:`(C_0, \dots, C_n = D)`: host stem :math:`X = \mathrm{BN}(\mathrm{Conv}_3(I))`
(:math:`3 \to C_0`, direct coding); chip tokenizer, for :math:`i = 1..n`,

.. math::

    z_i = \mathrm{BN}(\mathrm{Conv}_3(P_i(\mathrm{LIF}(z_{i-1})))), \qquad z_0 = X,

:math:`C_{i-1} \to C_i`, where :math:`P_i` is ``SpikeMaxPool(3, 2, 1)`` for the last two stages
(as Spikingformer pools twice: :math:`(H/4)^2` tokens) and the identity otherwise;
:math:`x = z_n` starts the residual stream. Each of the ``depth`` blocks (hidden width
:math:`H`):

.. math::

    x \leftarrow x + \mathrm{BN}(\mathrm{DWConv}_k(\mathrm{LIF}(x))), \qquad
    x \leftarrow x + \mathrm{BN}(W_2\, \mathrm{LIF}(\mathrm{BN}(W_1\, \mathrm{LIF}(x))))

(:math:`W_1: D \to H`, :math:`W_2: H \to D` 1x1 convs). :math:`x` is a sum of synapse-layer
outputs that is never materialised: every LIF reading it lists all terms summed so far as its
inputs (fan-in). A final LIF reads :math:`x`; its spikes leave the chip for the host readout
(token mean, TDW, projection to ``embed_dim``).

With ``neuron="relu"`` every LIF is a ReLU and :math:`T = 1`: the ANN twin of the same graph
(ScratchCLIP's role in SpikeCLIP), whose pools max-pool ReLU outputs.
"""
from __future__ import annotations

from typing import Sequence


from .chip_graph import HOST_INPUT, GraphBuilder, SpikeMaxPool
from .encoders import Readout, SpikingEncoder, conv_bn


def build_native_spikingformer(channels: Sequence[int], depth: int, mlp_hidden: int,
                               mixer_kernel: int, embed_dim: int, time_steps: int, tau: float,
                               v_threshold: float, tdw: bool, neuron: str = "lif"
                               ) -> SpikingEncoder:
    """The encoder above; ``channels[0]`` is the host stem, ``channels[-1]`` the width D."""
    g = GraphBuilder(tau, v_threshold, neuron)
    add, lif = g.add, g.lif
    n, dim = len(channels) - 1, channels[-1]
    z = HOST_INPUT
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        s = lif(z)
        if i >= n - 2:
            s = add(SpikeMaxPool(3, 2, 1), s)
        z = add(conv_bn(c_in, c_out, 3, 1), s)
    x = [z]  # the residual stream's terms
    for _ in range(depth):
        x.append(add(conv_bn(dim, dim, mixer_kernel, 1, groups=dim), lif(*x)))
        h = add(conv_bn(dim, mlp_hidden, 1, 1), lif(*x))
        x.append(add(conv_bn(mlp_hidden, dim, 1, 1), lif(h)))
    lif(*x)
    return SpikingEncoder(conv_bn(3, channels[0], 3, 1), g.graph(),
                          Readout(dim, embed_dim, time_steps, tdw), time_steps)
