r"""A Loihi export's chip graphs as lava-dl netx HDF5 networks (``netx/SIDE_segN.net``), read by
stock ``lava.lib.dl.netx.hdf5.Network(net_config=...)``.

A ``.net`` file holds ``layer/0 .. layer/N-1``, each a group with ``type`` (``input``, ``conv``,
``dense``), ``shape`` (PyTorch order: ``[C, H, W]`` or ``[N]``; netx reverses it to Lava's
``(X, Y, C)``) and, for a neuron layer, a ``neuron`` group. Register mapping, from a LIF's
``metadata["loihi"]`` to netx's ``LOIHI`` neuron (netx builds Lava's ``LIF``, or ``LIFReset``
with ``reset_interval``):

* ``vThMant`` = ``vth`` (both models spike on :math:`v > v_{th} 2^6`);
* ``iDecay`` = ``du + 1`` (netx passes ``du = iDecay - 1``), ``vDecay`` = ``dv``;
* ``bias``: netx fixes ``bias_exp = 6``, so the file holds the LIF's summed bias
  :math:`b_m 2^{b_e} / 2^6`, exact only for :math:`b_e = 6`: ``export --format netx`` lowers with
  the bias exponent held at 6 (the biases on a grid of :math:`2^6` state units; the whole export,
  NIR included, then carries those biases, and ``verify`` measures them);
* ``weight``: a convolution's integer kernel ``[Cout, Cin/groups, kH, kW]`` as is (netx's
  ``Conv`` has no weight exponent: ``weight_exp`` must be 0); a dense matrix ``[out, in]`` as
  :math:`w 2^{e_w}` (netx re-splits it into mantissa and exponent, exactly for integers in
  :math:`[-256, 254]`); ``stride``, ``padding``, ``dilation`` as ``(H, W)``, ``groups``.

Synaptic delay: every netx block is a Lava synapse and a LIF, so it delays by one step as the
chip graph's synapses do; with ``reset_interval = P`` (a sample's period) and ``reset_offset``
as the segment's record says, netx resets each LIF at the step the Lava backend does.

What netx cannot express is left out of the files and named in the manifest: a LIF summing
several synapses (fan-in), a LIF fed by a host op, a synapse with an aligning delay, host ops,
a residual stream on graded relays (:data:`NO_RELAY`): the relays, the synapses into them
and the LIFs reading them, spiking attention on chip (:data:`NO_ATTENTION`): its
populations and the LIF reading them, and max pools of currents on chip (:data:`NO_POOL`): their
levels and the LIF reading them.
The rest is cut into chains, one ``.net`` per chain: the first LIF fed by the host current is an
``input`` layer with a neuron (netx's ``Input`` takes its input only through the neuron's bias:
set ``bias_mant`` to the input mantissa, which it equals since the input exponent is 6); any other
chain starts with a ``shape``-only input layer and reads the spikes of the LIF named in its
record (``input``), the output of another chain or of a layer left out.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import nir
import numpy as np

from ..errors import ExportError
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PoolNode
from ..exchange.fixed_point import bias_mantissa
from ..exchange.nirgraph import INPUT, ChipLayer, HostOpNode, is_relay, pair, readers
from ..fileutil import write_bytes
from ..hardware import ChipProfile

#: netx builds every LOIHI neuron with ``bias_exp = 6`` (``hdf5.Network.get_neuron_params``)
NETX_BIAS_EXP = 6
#: the dense weights netx's ``optimize_weight_bits`` keeps exactly (it clips beyond)
NETX_DENSE_RANGE = (-256, 254)


#: why netx cannot hold a graded stream relay (read in lava-dl 0.6.0,
#: ``lava/lib/dl/netx/hdf5.py``): a netx ``Network`` is a chain, each block reading the one
#: before it; a relay sums two inputs (its stream's previous relay and the block's new synapse
#: layer), and netx has no block with a second input: its ``concat`` and ``average`` layer types
#: raise ``NotImplementedError`` and a ``.net`` has no skip connection. (Its ``SDNN`` neurons,
#: Sigma and SigmaDelta, do send graded spikes, so a relay chain with its sums would need only
#: that summing block.)
NO_RELAY = ("graded stream relay: netx's Network is a chain of blocks, each reading the one "
            "before it, and has no block that sums two inputs (lava-dl 0.6.0: 'concat' and "
            "'average' raise NotImplementedError; no skip connections)")
NO_ATTENTION = ("spiking attention population (product neurons and graded sums): netx's "
                "blocks are synapses into LIF, sigma-delta or resonator neurons, none of which "
                "multiplies two inputs, and a block reads one layer")
NO_POOL = ("level of a max pool of a current (graded ReLU neurons): netx's blocks are synapses "
           "into LIF, sigma-delta or resonator neurons, none of which is a graded ReLU")


def netx_profile(profile: ChipProfile) -> ChipProfile:
    """The chip profile with the bias exponent held at netx's: every LIF bias on its grid."""
    fp = replace(profile.fixed_point, bias_exp_range=(NETX_BIAS_EXP, NETX_BIAS_EXP))
    return replace(profile, fixed_point=fp)


@dataclass
class Segment:
    """A chain ``[synapse, LIF]*`` (or a host-driven LIF first) that one ``.net`` holds."""

    source: str  # ``INPUT`` (the host current, through the input neuron's bias) or a LIF's name
    layers: list[ChipLayer] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.layers[-1].name


def _unexpressible(la: ChipLayer, by_name: dict[str, ChipLayer]) -> str | None:
    """Why netx cannot hold LIF ``la`` with the synapse before it (None: it can)."""
    if la.inputs == (INPUT,):
        return None
    if any(i in by_name and is_relay(by_name[i].node) for i in la.inputs):
        return f"reads a residual stream's relay {list(la.inputs)}; {NO_RELAY}"
    if any(i in by_name and isinstance(by_name[i].node, AttentionNode) for i in la.inputs):
        return f"reads spiking attention's populations {list(la.inputs)}; {NO_ATTENTION}"
    if any(i in by_name and isinstance(by_name[i].node, PoolNode) for i in la.inputs):
        return f"reads a max pool's last level {list(la.inputs)}; {NO_POOL}"
    if len(la.inputs) != 1:
        return f"fan-in: sums {len(la.inputs)} layers {list(la.inputs)} (a netx block has one synapse)"
    syn = by_name[la.inputs[0]]
    if isinstance(syn.node, HostOpNode):
        return f"fed by host op '{syn.name}' (netx's input layer takes input through its bias only)"
    if int(syn.node.metadata.get("delay", 0)):
        return f"its synapse '{syn.name}' holds an aligning delay (netx blocks have none)"
    return None


def segments(layers: list[ChipLayer]) -> tuple[list[Segment], dict[str, str]]:
    """Cut a chip graph into netx chains; returns (chains, {layer left out: why})."""
    by_name = {la.name: la for la in layers}
    read_by = readers(layers)
    chains: list[Segment] = []
    ends: dict[str, Segment] = {}  # LIF name -> the chain it ends
    left_out: dict[str, str] = {}
    for la in layers:
        if isinstance(la.node, HostOpNode):
            left_out[la.name] = "host op (runs on the host)"
            continue
        if isinstance(la.node, AttentionNode):
            left_out[la.name] = NO_ATTENTION
            continue
        if isinstance(la.node, PoolNode):
            left_out[la.name] = NO_POOL
            continue
        if is_relay(la.node):
            left_out[la.name] = NO_RELAY
            left_out.update({i: f"synapse into relay '{la.name}', left out" for i in la.inputs
                             if not is_relay(by_name[i].node)})
            continue
        if not isinstance(la.node, nir.LIF):
            continue
        why = _unexpressible(la, by_name)
        if why:
            left_out[la.name] = why
            left_out.update({i: f"synapse into '{la.name}', left out" for i in la.inputs
                             if i in by_name and not isinstance(by_name[i].node, (
                                 HostOpNode, AttentionNode, PoolNode))
                             and not is_relay(by_name[i].node)})
            continue
        if la.inputs == (INPUT,):
            chains.append(Segment(INPUT, [la]))
            ends[la.name] = chains[-1]
            continue
        syn = by_name[la.inputs[0]]
        (pre,) = syn.inputs
        chain = ends.pop(pre, None)
        # read elsewhere too, pre's spikes leave its chain: a new one reads them
        if chain is None or len(read_by[pre]) != 1:
            chain = Segment(pre)
            chains.append(chain)
        chain.layers += [syn, la]
        ends[la.name] = chain
    return chains, left_out


def _dataset(g: h5py.Group, name: str, value) -> None:
    g.create_dataset(name, data=value, track_times=False)


def _type(g: h5py.Group, name: str) -> None:
    g.create_dataset("type", (1,), "S10", [name.encode("ascii")], track_times=False)


def _neuron(g: h5py.Group, lif: nir.LIF) -> None:
    q = lif.metadata["loihi"]
    n = g.create_group("neuron")
    _type(n, "LOIHI")
    for key, value in (("iDecay", int(q["du"]) + 1), ("vDecay", int(q["dv"])),
                       ("vThMant", int(q["vth"])), ("refDelay", 1)):
        _dataset(n, key, value)


def _bias(syn: ChipLayer, lif: ChipLayer, shift: int) -> np.ndarray:
    """The LIF's bias in netx units (:math:`2^6` state units): its mantissa at exponent 6."""
    exp = int(lif.node.metadata["loihi"]["bias_exp"])
    if exp != NETX_BIAS_EXP:
        raise ExportError(f"LIF '{lif.name}' has bias exponent {exp}; netx fixes it at "
                          f"{NETX_BIAS_EXP}: export with `--format netx`")
    return bias_mantissa(syn.node.bias, NETX_BIAS_EXP, shift).astype(np.int32)


def _weight(syn: ChipLayer) -> np.ndarray:
    exp = int(syn.node.metadata["loihi"]["weight_exp"])
    w = np.asarray(syn.node.weight, dtype=np.float64)
    if isinstance(syn.node, nir.Conv2d):
        if exp:
            raise ExportError(f"convolution '{syn.name}' has weight_exp {exp}; netx's Conv has "
                              f"no weight exponent: export with a profile whose weight_exp is 0")
        return w.astype(np.int32)
    w = w * 2.0**exp
    lo, hi = NETX_DENSE_RANGE
    if w.min() < lo or w.max() > hi:
        raise ExportError(f"dense '{syn.name}': weights {w.min():.0f}..{w.max():.0f} (with "
                          f"weight_exp {exp}) exceed netx's exact range {lo}..{hi}")
    return w.astype(np.int32)


def _shape(lif: nir.LIF) -> np.ndarray:
    return np.asarray(np.asarray(lif.tau).shape, dtype=np.int64)


def write_segment(seg: Segment, by_name: dict[str, ChipLayer], shift: int) -> bytes:
    """One chain as netx HDF5 bytes (no timestamps: the same chain gives the same bytes)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", track_order=True) as f:
        top = f.create_group("layer", track_order=True)
        first = seg.layers[0]
        g = top.create_group("0")
        _type(g, "input")
        if seg.source == INPUT:
            _dataset(g, "shape", _shape(first.node))
            _neuron(g, first.node)
            rest = seg.layers[1:]
        else:
            _dataset(g, "shape", _shape(by_name[seg.source].node))
            rest = seg.layers
        for k, (syn, lif) in enumerate(zip(rest[::2], rest[1::2]), start=1):
            g = top.create_group(str(k))
            _dataset(g, "shape", _shape(lif.node))
            _dataset(g, "weight", _weight(syn))
            _dataset(g, "bias", _bias(syn, lif, shift))
            _neuron(g, lif.node)
            if isinstance(syn.node, nir.Conv2d):
                _type(g, "conv")
                for key in ("stride", "padding", "dilation"):
                    _dataset(g, key, np.asarray(pair(getattr(syn.node, key)), dtype=np.int64))
                _dataset(g, "groups", int(np.asarray(syn.node.groups)))
            else:
                _type(g, "dense")
    return buf.getvalue()


def write_netx(layers: list[ChipLayer], shift: int, export_root: Path, side: str) -> dict:
    """Write ``netx/SIDE_segN.net`` for each chain of an encoder's chip graph; returns the
    manifest's record of the chains (file, layers, what each reads, ``reset_offset``) and of the
    layers left out, with why."""
    chains, left_out = segments(layers)
    by_name = {la.name: la for la in layers}
    (export_root / "netx").mkdir(exist_ok=True)
    records = []
    for k, seg in enumerate(chains):
        rel = f"netx/{side}_seg{k}.net"
        write_bytes(export_root / rel, write_segment(seg, by_name, shift))
        records.append({
            "file": rel, "layers": [la.name for la in seg.layers], "input": seg.source,
            "input_kind": "input neuron bias_mant = input mantissa" if seg.source == INPUT
            else "spikes", "output": seg.output,
            # netx resets block i at reset_offset + 1 + i; the backend resets a LIF at 1 + depth
            "reset_offset": 0 if seg.source == INPUT else 1})
    return {"bias_exp": NETX_BIAS_EXP, "segments": records, "not_in_netx": left_out}


__all__ = ["NETX_BIAS_EXP", "NO_ATTENTION", "NO_POOL", "NO_RELAY", "Segment", "netx_profile", "segments", "write_netx", "write_segment"]
