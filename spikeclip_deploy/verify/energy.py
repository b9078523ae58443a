r"""Synaptic operations and energy per inference (the SpikeCLIP paper's Appendix F model).

For a synapse layer :math:`l` fed by spikes :math:`s_{t,i}`:

.. math::

    \mathrm{SOP}_l = \sum_t \sum_i s_{t,i}\, \mathrm{fanout}_l(i)
    \quad\text{(counted)},\qquad
    \widehat{\mathrm{SOP}}_l = r_l \cdot T \cdot \mathrm{FLOPs}_l \quad\text{(analytic check)}

:math:`E_{SNN} = E_{AC} \sum_l \mathrm{SOP}_l + E_{MAC}(\mathrm{MAC}_{stem} + T\cdot
\mathrm{MAC}_{ops} + \mathrm{MAC}_{readout})` (chip plus host, the host's work as executed:
under direct coding the stem's current is the same at every step, so it is computed once per
sample; the paper's convention, the stem :math:`T` times, is the extra figure
``energy_per_inference_mj_stem_every_step``), :math:`E_{ANN} = E_{MAC}(\mathrm{MAC}_{stem} +
\sum_l \mathrm{FLOPs}_l + \mathrm{MAC}_{ops} + \mathrm{MAC}_{readout})`, where
:math:`\mathrm{MAC}_{ops}` are the host ops between chip subgraphs (spiking attention's
:math:`Q K^\top V`; a real-valued max-pool with the synapse layer before it), evaluated once per
step. Only computation is counted, not memory access or data movement; the chip's own energy
model (:mod:`.chip_energy`) counts neuron updates and spike traffic too.

Graded stream relays (a residual stream on graded spikes) are counted apart: every relay neuron
updates at every step, and is counted as sending one graded spike per step to each reader (an
identity synapse: one graded synaptic op per neuron, step and reader). That is an upper bound:
a relay sends only nonzero sums. The 45 nm model prices them at the energy model's
``e_graded_op_pj`` and ``e_relay_update_pj`` (assumptions stated in its file).

A max pool of a current on chip (:mod:`~..exchange.current_pool`: ReLU levels after a relay) is
counted the same way (:func:`pool_rows`): every ReLU neuron updates at every step
(``e_relu_update_pj``), and every signed synapse into a level and from the last level into the
pooled LIF is a graded synaptic op at every step (``e_graded_op_pj``): an upper bound, as a
ReLU neuron sends only positive sums.

Spiking attention on chip (:mod:`~..exchange.attention`: product and graded sum populations per
head) is counted from the recorded Q, K and V spikes, exactly
(:mod:`.attention_counts`): nonzero products at the energy model's ``e_product_pj`` (a multiply
of two nonzero inputs), their graded spikes times the neurons each reaches (graded synaptic
ops, ``e_graded_op_pj``), Q, K and V spikes times the product neurons each reaches (synaptic
ops, :math:`E_{AC}`), and the graded sum neurons' updates, every one at every step
(``e_relay_update_pj``). The ANN counterpart evaluates :math:`Q K^\top V` densely, as the host
op would.

The partition's share of the work: :func:`chip_sop_share` over :func:`host_macs_executed`;
``chip_part_sop_share`` leaves out the stem and readout, which every deployment keeps on the
host: 1 when everything between them runs on neuro-cores.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable

import nir
import numpy as np

from ..errors import ConfigError, LoweringError
from ..hardware import ChipEnergyModel, EnergyModel
from ..nn.lif import count_type
from ..exchange.resources import fan_out, flops
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PoolNode
from ..exchange.nirgraph import ChipLayer, HostOpNode, is_relay
from .attention_counts import attention_rows, attention_totals, population_events
from .chip_energy import PJ_PER_MJ, chip_energy_report, pool_counts, relay_counts
from .stats import mean_ci95


def host_op_macs(layers: Iterable[ChipLayer]) -> int:
    """MACs of one evaluation of every host op between chip subgraphs (each op's
    ``metadata["macs"]``, the host-placed synapses before it included)."""
    return sum(int(la.node.metadata["macs"]) for la in layers if isinstance(la.node, HostOpNode))


def host_macs_executed(stem_macs: int, readout_macs: int, op_macs: int, time_steps: int) -> int:
    """The host's MACs per inference as executed: the stem once per sample (direct coding: its
    current is the same at every step), the host ops once per step, the readout once."""
    return stem_macs + time_steps * op_macs + readout_macs


def chip_sop_share(chip_sops: float, graded_sops: float, host_macs: float,
                   attention_ops: float) -> float:
    r"""The chip's share of an inference's operations, :math:`(\mathrm{SOP} +
    \mathrm{SOP}_{graded} + A) / (\mathrm{SOP} + \mathrm{SOP}_{graded} + A +
    \mathrm{MAC}_{host})`: its synaptic ops with the graded identity synaptic ops of its stream
    relays and the graded synaptic ops of its max pools' ReLU levels, and :math:`A`, the
    operations of spiking attention on chip (products, and the graded
    and spike synaptic ops into and out of its populations; the chip executes those too), over
    those plus the host's MACs (:func:`host_macs_executed`, or any part of them); 0 when
    neither does anything."""
    ops = chip_sops + graded_sops + attention_ops
    return ops / (ops + host_macs) if ops + host_macs else 0.0


def synapse_rows(layers: list[ChipLayer]) -> list[dict[str, Any]]:
    """Every synapse layer of a chip graph (each reads a LIF): its name, ``copy_of`` (the
    synapse it copies for another reader, or None), NIR type, input LIF and the FLOPs of one
    dense evaluation (:func:`~..exchange.resources.flops`)."""
    lifs = {la.name: tuple(np.asarray(la.node.tau).shape) for la in layers
            if isinstance(la.node, nir.LIF)}
    return [{"name": la.name, "copy_of": la.node.metadata.get("copy_of"),
             "type": type(la.node).__name__, "input": la.inputs[0],
             "flops": flops(la.node, lifs[la.inputs[0]])}
            for la in layers if not isinstance(la.node, (nir.LIF, HostOpNode, nir.Scale,
                                                         AttentionNode, PoolNode))]


def part_fan_out(name: str, node: nir.NIRNode, fan: np.ndarray) -> int | None:
    """The synapses leaving each of a split fan-in's part's own inputs, the same for each (a
    dense part: the layer's output rows; a pointwise convolution's part: its output channels),
    so that its synaptic ops over it are the spikes it carries; None for a whole synapse
    layer."""
    if "part_of" not in node.metadata:
        return None
    own = np.unique(fan[fan > 0])
    if own.size != 1:
        raise LoweringError(f"'{name}', a part of the split fan-in of "
                            f"'{node.metadata['part_of']}', sends {own.tolist()} synapses from "
                            f"its inputs, where a part of the split_fan_in pass sends the same "
                            f"number from each: lower the model again with this package")
    return int(own[0])


def relay_rows(layers: list[ChipLayer]) -> list[dict[str, Any]]:
    """Every graded stream relay: its name, neurons and readers (layers reading it, each
    through an identity synapse; a current pool's first level reads it through its own
    synapses, counted with the level: :func:`pool_rows`)."""
    return [{"name": la.name, "neurons": int(np.asarray(la.node.scale).size),
             "readers": [r.name for r in layers if la.name in r.inputs
                         and not isinstance(r.node, PoolNode)]}
            for la in layers if is_relay(la.node)]


def pool_rows(layers: list[ChipLayer]) -> list[dict[str, Any]]:
    """Every level of a current max pool on chip: its name, neurons, source (its relay, or the
    level before) and that source's neurons, the signed synapses into it (``synapses``,
    named ``LEVEL<SOURCE``), and for the last level its readout into the pooled LIF
    (``readout``: the synapse layer ``LIF<LEVEL`` and its synapses)."""
    rows = []
    for la in layers:
        if not isinstance(la.node, PoolNode):
            continue
        pop, (src,) = la.node.population, la.inputs
        row = {"name": la.name, "neurons": pop.neurons, "source": src,
               "source_neurons": pop.source_sizes[0], "synapses": {f"{la.name}<{src}":
                                                                    pop.synapses}}
        if la.node.last:
            (reader,) = (r.name for r in layers if la.name in r.inputs)
            row["readout"] = {f"{reader}<{la.name}": int(np.count_nonzero(
                la.node.tree.readout[1]))}
        rows.append(row)
    return rows


def model_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the model's synapse layers: a synapse copied for several readers (a residual
    stream's term) is one layer of the model, counted once (the chip executes every copy)."""
    return list({row["copy_of"] or row["name"]: row for row in rows}.values())


def ann_macs(stem_macs: int, rows: Iterable[dict[str, Any]], op_macs: int,
             readout_macs: int) -> int:
    r"""MACs of one inference of the graph run as an ANN, every layer evaluated once, densely:
    :math:`\mathrm{MAC}_{stem} + \sum_l \mathrm{FLOPs}_l + \mathrm{MAC}_{ops} +
    \mathrm{MAC}_{readout}` over the model's synapse layers (:func:`model_rows`)."""
    return int(stem_macs + sum(row["flops"] for row in model_rows(rows)) + op_macs
               + readout_macs)


class SpikeTally:
    """Running integer sums of one encoder's recorded spikes over samples: spikes per LIF layer,
    synaptic operations per synapse layer and per sample (:math:`\sum_t \sum_i s_{t,i}
    \mathrm{fanout}(i)`, copies of a synapse counted once). Integers, so tallies of disjoint
    sample sets add up exactly (:meth:`merge`) to the tally of their union. :meth:`state` holds
    the sums and what the energy report needs of the graph, as JSON-ready data. With spiking
    attention on chip, also per population the graded spikes it sends
    (:func:`~.attention_counts.population_events`), per synapse layer from a Q, K or V LIF into
    a product population the spikes it carries and its synaptic ops, and per sample the
    attention's (products, graded synaptic ops, spike synaptic ops)."""

    def __init__(self, layers: list[ChipLayer], time_steps: int) -> None:
        lifs = {la.name: list(np.asarray(la.node.tau).shape) for la in layers
                if isinstance(la.node, nir.LIF)}
        nodes = {la.name: la.node for la in layers}
        rows = synapse_rows(layers)
        self._fan_out = {row["name"]: fan_out(nodes[row["name"]], tuple(lifs[row["input"]]))
                         .reshape(-1) for row in rows}
        for row in rows:
            row["part_fan_out"] = part_fan_out(row["name"], nodes[row["name"]],
                                               self._fan_out[row["name"]])
        attention, self._attention = attention_rows(layers)
        self._port_fan = {syn: (lif, nodes[row["name"]].population.fan_out(
            list(nodes[row["name"]].spec.inputs).index(lif)))
            for row in attention for syn, lif in row["ports"].items()}
        self.data: dict[str, Any] = {
            "time_steps": time_steps, "lif_shapes": lifs, "synapses": rows,
            "relays": relay_rows(layers), "pools": pool_rows(layers),
            "host_op_macs_per_step": host_op_macs(layers), "n": 0,
            "attention_ann_macs_per_step": sum(a["ann_macs"] for a in self._attention.values()),
            "spikes": {name: 0 for name in lifs}, "sops": {row["name"]: 0 for row in rows},
            "sample_sops": [], "attention": attention,
            "attention_events": {row["name"]: 0 for row in attention},
            "attention_port_spikes": dict.fromkeys(self._port_fan, 0),
            "attention_port_sops": dict.fromkeys(self._port_fan, 0), "sample_attention": []}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SpikeTally":
        """A tally read back from :meth:`state` (it merges; it cannot :meth:`add` spikes)."""
        tally = cls.__new__(cls)
        tally._fan_out, tally._attention, tally._port_fan = {}, {}, {}
        tally.data = json.loads(json.dumps(state))  # a deep copy
        return tally

    def add(self, spikes: list[np.ndarray]) -> None:
        """One batch: a ``[B, T, *shape]`` array of 0/1 per LIF layer, in layer order, of any
        strides. Each LIF's spikes are counted over the steps once (per sample and neuron:
        exact in uint8 below 256 steps), then :meth:`add_counts`."""
        b = len(spikes[0])
        acc = count_type(self.data["time_steps"])
        self.add_counts([np.add.reduce(s.astype(acc, copy=False), axis=1, dtype=acc)
                         .reshape(b, -1) for s in spikes], spikes)

    def add_counts(self, counts: list[np.ndarray],
                   spikes: list[np.ndarray] | None = None) -> None:
        """One batch as each LIF's spikes counted over the steps: ``[B, N]`` per LIF layer, in
        layer order, integers of any numeric type (a float sum of at most :math:`2^{24}` steps
        is exact); each synapse reading a LIF takes its counts (times its fan-out, in int64).
        Where :attr:`needs_steps`, ``spikes`` are the per-step spikes :meth:`add` takes."""
        d = self.data
        acc = count_type(d["time_steps"])
        counts = {name: c.astype(acc, copy=False)
                  for name, c in zip(d["lif_shapes"], counts, strict=True)}
        b = len(next(iter(counts.values())))
        per_sample = np.zeros(b, dtype=np.int64)
        counted = set()
        for row in d["synapses"]:
            sops = np.einsum("bf,f->b", counts[row["input"]], self._fan_out[row["name"]])
            d["sops"][row["name"]] += int(sops.sum())
            if (row["copy_of"] or row["name"]) not in counted:  # copies: one model layer
                counted.add(row["copy_of"] or row["name"])
                per_sample += sops
        for name, c in counts.items():
            d["spikes"][name] += int(c.sum(dtype=np.int64))
        d["sample_sops"] += per_sample.tolist()
        if self.needs_steps:
            if spikes is None:
                raise ValueError("a tally of attention on chip needs each step's spikes: "
                                 "call add, not add_counts")
            self._add_attention(dict(zip(d["lif_shapes"], spikes)), counts)
        d["n"] += b

    @property
    def needs_steps(self) -> bool:
        """Whether :meth:`add_counts` needs each step's spikes too (attention on chip: its
        products are coincidences within a step, which counts over the steps lose)."""
        return bool(self.data["attention"])

    def _add_attention(self, spikes: dict[str, np.ndarray], counts: dict[str, np.ndarray]
                       ) -> None:
        """The attention's part of :meth:`add` (class docstring)."""
        d = self.data
        b = len(next(iter(counts.values())))
        products, graded, spike_sops = (np.zeros(b, np.int64) for _ in range(3))
        rows = {(r["attention"], r["head"], r["stage"]): r for r in d["attention"]}
        for name, a in self._attention.items():
            events = population_events(spikes[a["q"]], spikes[a["k"]], spikes[a["v"]],
                                       a["heads"], a["order"])
            for stage, per_head in events.items():
                for head in range(a["heads"]):
                    row = rows[(name, head, stage)]
                    d["attention_events"][row["name"]] += int(per_head[:, head].sum())
                    graded += per_head[:, head] * sum(row["readers"].values())
                    if row["kind"] == "product":
                        products += per_head[:, head]
        for syn, (lif, fan) in self._port_fan.items():
            sops = np.einsum("bf,f->b", counts[lif], fan)
            d["attention_port_sops"][syn] += int(sops.sum())
            d["attention_port_spikes"][syn] += int(np.einsum("bf,f->", counts[lif],
                                                             (fan > 0).astype(np.int64)))
            spike_sops += sops
        d["sample_attention"] += np.stack([products, graded, spike_sops], 1).tolist()

    @property
    def n(self) -> int:
        return self.data["n"]

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron and step, per LIF layer."""
        d = self.data
        return {name: d["spikes"][name] / (d["n"] * d["time_steps"] * math.prod(shape))
                for name, shape in d["lif_shapes"].items()}

    def state(self) -> dict[str, Any]:
        return self.data

    def merge(self, state: dict[str, Any]) -> None:
        """Add another tally's :meth:`state` (disjoint samples of the same encoder)."""
        d = self.data
        if state["synapses"] != d["synapses"] or state["lif_shapes"] != d["lif_shapes"] \
                or state.get("relays", []) != d["relays"] \
                or state.get("pools", []) != d["pools"] \
                or state.get("attention", []) != d["attention"]:
            raise ConfigError("the partial results hold different chip graphs; merge the "
                              "shards of one verification only")
        d["n"] += int(state["n"])
        for key in ("spikes", "sops", "attention_events", "attention_port_spikes",
                    "attention_port_sops"):
            for name in d[key]:
                d[key][name] += int(state[key][name])
        d["sample_sops"] += [int(x) for x in state["sample_sops"]]
        d["sample_attention"] += [[int(x) for x in row]
                                  for row in state.get("sample_attention", [])]


def energy_report(tally: SpikeTally, stem_macs: int, readout_macs: int,
                  energy_model: EnergyModel, chip_model: ChipEnergyModel | None = None,
                  placement: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-layer SOPs, energy per inference under the 45 nm model (with its 95 % interval over
    the samples; chip and host apart, each with its share) and the ANN counterpart's energy,
    from an encoder's :class:`SpikeTally`; with ``chip_model`` and the mapper's ``placement``
    (:func:`~.chip_energy.placement_state`), the chip's own energy too, under ``"loihi"``
    (:func:`~.chip_energy.chip_energy_report`)."""
    e_ac, e_mac = energy_model.e_ac_pj, energy_model.e_mac_pj
    d = tally.state()
    n, t, op_macs = d["n"], d["time_steps"], d["host_op_macs_per_step"]
    rates = tally.firing_rates()
    rows = [{**row, "firing_rate": rates[row["input"]], "sops": d["sops"][row["name"]] / n,
             "sops_analytic": rates[row["input"]] * t * row["flops"],
             "energy_pj": d["sops"][row["name"]] / n * e_ac} for row in d["synapses"]]
    total_sops = sum(row["sops"] for row in model_rows(rows))
    host = host_macs_executed(stem_macs, readout_macs, op_macs, t)
    host_pj = e_mac * host
    graded = relay_counts(d.get("relays", []), t)
    graded_pj = (energy_model.e_graded_op_pj * graded["graded_sops"]
                 + energy_model.e_relay_update_pj * graded["relay_updates"])
    pools = pool_counts(d.get("pools", []), t)
    pool_pj = (energy_model.e_graded_op_pj * pools["pool_graded_sops"]
               + energy_model.e_relu_update_pj * pools["relu_updates"])
    att = attention_totals(d)
    att_ops = att["products"] + att["attention_graded_sops"] + att["attention_spike_sops"]
    # per sample: (products, graded synaptic ops, spike synaptic ops) at their energies
    att_sample_pj = (np.asarray(d.get("sample_attention") or np.zeros((n, 3)), np.float64)
                     @ [energy_model.e_product_pj, energy_model.e_graded_op_pj, e_ac]
                     + energy_model.e_relay_update_pj * att["sum_updates"])
    att_pj = float(att_sample_pj.mean())
    chip_pj = e_ac * total_sops + graded_pj + pool_pj + att_pj
    graded_sops = graded["graded_sops"] + pools["pool_graded_sops"]
    e_snn = chip_pj + host_pj
    e_ann = e_mac * ann_macs(stem_macs, rows, op_macs + d.get("attention_ann_macs_per_step", 0),
                             readout_macs)
    # sorted: the interval of merged shards equals one run's to the last bit
    per_sample_mj = np.sort(e_ac * np.asarray(d["sample_sops"], np.float64) + att_sample_pj
                            + graded_pj + pool_pj + host_pj) / PJ_PER_MJ
    report = {
        "n": int(n), "time_steps": int(t), "layers": rows,
        "neuron_firing_rates": rates,
        "first_layer_macs": int(stem_macs), "first_layer_energy_pj": e_mac * stem_macs,
        "readout_macs": int(readout_macs), "total_sops": total_sops,
        "chip_sops_all_copies": sum(row["sops"] for row in rows),
        **graded, "graded_energy_pj": graded_pj,
        **({**pools, "pool_energy_pj": pool_pj} if d.get("pools") else {}),
        **({**att, "attention_energy_pj": att_pj} if d.get("attention") else {}),
        "host_op_macs_per_step": op_macs,
        "host_macs_executed": int(host),
        "chip_sop_share": chip_sop_share(total_sops, graded_sops, host, att_ops),
        "chip_part_sop_share": chip_sop_share(total_sops, graded_sops, t * op_macs, att_ops),
        "chip_energy_pj": chip_pj, "host_energy_pj": host_pj,
        "chip_energy_share": chip_pj / e_snn, "host_energy_share": host_pj / e_snn,
        "energy_per_inference_mj": e_snn / PJ_PER_MJ,
        "energy_per_inference_mj_ci95": mean_ci95(per_sample_mj),
        "energy_per_inference_mj_stem_every_step":
            (e_snn + e_mac * (t - 1) * stem_macs) / PJ_PER_MJ,
        "ann_energy_per_inference_mj": e_ann / PJ_PER_MJ,
        "energy_ratio_snn_over_ann": e_snn / e_ann,
        "energy_reduction": 1.0 - e_snn / e_ann,
        "terms": [f"synaptic ops x E_AC {e_ac} pJ (a synapse copied for several readers once)",
                  f"stream relays: graded synaptic ops x {energy_model.e_graded_op_pj} pJ and "
                  f"relay updates x {energy_model.e_relay_update_pj} pJ (every relay neuron "
                  f"sending at every step: an upper bound)",
                  *([f"max pools of currents on chip: graded synaptic ops (every signed "
                     f"synapse into and out of the ReLU levels at every step) x "
                     f"{energy_model.e_graded_op_pj} pJ and ReLU neuron updates (every one at "
                     f"every step) x {energy_model.e_relu_update_pj} pJ: an upper bound"]
                    if d.get("pools") else []),
                  *([f"spiking attention on chip: nonzero products x "
                     f"{energy_model.e_product_pj} pJ, graded synaptic ops into and out of its "
                     f"populations x {energy_model.e_graded_op_pj} pJ, Q, K and V spikes' "
                     f"synaptic ops into product neurons x E_AC, and graded sum neuron updates "
                     f"(every one at every step) x {energy_model.e_relay_update_pj} pJ"]
                    if d.get("attention") else []),
                  f"host MACs as executed x E_MAC {e_mac} pJ: the stem once (direct coding: "
                  f"its current is the same at every step), host ops once per step, the "
                  f"readout once"],
        "energy_model": dataclasses.asdict(energy_model),
        "note": energy_model.scope,
    }
    if chip_model is not None and placement is not None:
        report["loihi"] = chip_energy_report(d, placement, chip_model, host_pj)
    return report
