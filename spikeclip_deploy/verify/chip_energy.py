r"""Energy of an inference on the chip itself, from its recorded spikes and the mapper's placement
(:class:`~..hardware.ChipEnergyModel`, ``hardware/energy-loihi.json``), per layer and in total.

Per inference, for a LIF layer :math:`l` of :math:`N_l` neurons that emits :math:`S_l` spikes
in :math:`T` steps, and a synapse layer :math:`k` that reads :math:`l` and is executed for
:math:`\mathrm{SOP}_k` synaptic operations (every copy of a synapse: the chip runs each):

.. math::

    E_l &= E_{active} S_l + E_{inactive} (N_l T - S_l) \\
    E_k &= E_{SOP}\,\mathrm{SOP}_k + E_{msg}\,M_k, \qquad M_k = S_k\,\mathrm{reach}_k \\
    E_{chip} &= \textstyle\sum_l E_l + \sum_k E_k, \qquad
    E = E_{chip} + E_{MAC}\,\mathrm{MAC}_{host}

:math:`S_k`: the spikes :math:`k` carries, :math:`S_l`, or of a part of a split fan-in (which
reads its own input columns or channels only, each with the same fan-out :math:`f_k`: the
``split_fan_in`` pass) :math:`\mathrm{SOP}_k / f_k`, its own inputs' spikes.
:math:`\mathrm{reach}_k`: the reader's cores one spike is sent to (one message each, the
mapper's reach; of a part, over its own inputs). Of those messages,
:math:`1 - \sum_c p_l(c)\,p_r(c)` cross chips, with :math:`p(c)` a layer's share of its cores
on chip :math:`c` (spikes and messages spread evenly over a layer's cores); they are counted,
not priced (no figure is published). Host work (:math:`\mathrm{MAC}_{host}`, as executed) is
priced at the 45 nm model's :math:`E_{MAC}`. Static power is reported, not added: it needs the
time an inference takes.

A graded stream relay of :math:`N_r` neurons read by readers :math:`j` (identity synapses of
reach :math:`\mathrm{reach}_j`) costs :math:`E_r = T N_r (E_{relay} + \sum_j (E_{graded\,op}
+ E_{graded\,msg}\,\mathrm{reach}_j))`: every relay neuron counted as updating and sending at
every step (an upper bound: a relay sends only nonzero sums).

A max pool of a current on chip (:func:`pool_energy_rows`): every graded ReLU neuron of its
levels updates at every step (:math:`E_{relu}`), every signed synapse into a level and from the
last level into the pooled LIF is a graded synaptic op at every step, and every source neuron
sends a graded message per step to each core it reaches: an upper bound, as a relay's.

Spiking attention on chip (:func:`attention_energy_rows`): every product neuron updates at
every step, at :math:`E_{prod,active}` where it sends a nonzero product and
:math:`E_{prod,inactive}` otherwise; every graded sum neuron at :math:`E_{relay}`; each graded
spike a population sends (counted from Q, K and V: :mod:`.attention_counts`) costs
:math:`E_{graded\,op}` per neuron it reaches and :math:`E_{graded\,msg}` per destination core;
Q, K and V spikes into product neurons are synaptic ops and spike messages like any other.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from ..hardware import ChipEnergyModel
from ..mapping import EncoderMapping

PJ_PER_MJ = 1e9


def relay_counts(relays: Iterable[dict[str, Any]], time_steps: int) -> dict[str, int]:
    """Per inference: relay updates (every relay neuron at every step) and graded synaptic ops
    (one per relay neuron, step and reader: an upper bound, every relay neuron counted as
    sending at every step)."""
    relays = list(relays)
    return {"relay_updates": sum(r["neurons"] for r in relays) * time_steps,
            "graded_sops": sum(r["neurons"] * len(r["readers"]) for r in relays) * time_steps}


def pool_counts(pools: Iterable[dict[str, Any]], time_steps: int) -> dict[str, int]:
    """Per inference: ReLU neuron updates (every neuron of every level at every step) and graded
    synaptic ops (every signed synapse into a level and from the last level into the pooled
    LIF at every step: an upper bound, every ReLU neuron counted as sending at every step), of
    :func:`~.energy.pool_rows`."""
    pools = list(pools)
    return {"relu_updates": sum(p["neurons"] for p in pools) * time_steps,
            "pool_graded_sops": sum(sum(p["synapses"].values()) + sum(p.get("readout", {})
                                                                      .values())
                                    for p in pools) * time_steps}


def pool_energy_rows(pools: Iterable[dict[str, Any]], time_steps: int,
                     placement: dict[str, Any] | None, model: ChipEnergyModel
                     ) -> list[dict[str, Any]]:
    """Per inference, the chip model's rows of the max pools' ReLU levels (module docstring),
    one a level: its updates and graded synaptic ops (:func:`pool_counts`) and, with the
    mapper's ``placement``, the graded messages its source sends it (every source neuron at
    every step times the synapse layer's reach) and, of the last level, those it sends the
    pooled LIF."""
    rows = []
    for pool in pools:
        counts = pool_counts([pool], time_steps)
        row = {"name": pool["name"], "kind": "relu", **counts,
               "relu_pj": counts["relu_updates"] * model.e_relu_update_pj,
               "graded_sop_pj": counts["pool_graded_sops"] * model.e_graded_op_pj}
        if placement is not None:
            (into,) = pool["synapses"]
            messages = pool["source_neurons"] * placement["synapses"][into]["reach"]
            messages += sum(pool["neurons"] * placement["synapses"][syn]["reach"]
                            for syn in pool.get("readout", {}))
            row.update(graded_messages=messages * time_steps,
                       graded_message_pj=messages * time_steps * model.e_graded_message_pj)
        row["energy_pj"] = row["relu_pj"] + row["graded_sop_pj"] + row.get("graded_message_pj",
                                                                            0.0)
        rows.append(row)
    return rows


def attention_energy_rows(tally: dict[str, Any], placement: dict[str, Any] | None,
                          model: ChipEnergyModel) -> list[dict[str, Any]]:
    r"""Per inference, the chip model's rows of spiking attention on chip (module docstring),
    from a :class:`~.energy.SpikeTally`'s state: per population its updates, graded spikes
    :math:`G_p`, graded synaptic ops :math:`G_p F_p` (:math:`F_p`: the neurons one reaches in its
    reader) and, with the mapper's ``placement``, graded messages :math:`G_p\,\mathrm{reach}`;
    then per synapse layer from a Q, K or V LIF into a product population its synaptic ops and
    spike messages (the spikes of the LIF's neurons it reads times its reach)."""
    n, t = tally["n"], tally["time_steps"]
    rows: list[dict[str, Any]] = []
    for pop in tally.get("attention", []):
        events = tally["attention_events"][pop["name"]] / n
        updates = pop["neurons"] * t
        sops = events * sum(pop["readers"].values())
        row = {"name": pop["name"], "kind": pop["kind"], "neuron_updates": updates,
               "graded_spikes": events, "graded_sops": sops,
               "graded_sop_pj": sops * model.e_graded_op_pj}
        if pop["kind"] == "product":
            row.update(active_updates=events,
                       product_pj=events * model.e_product_update_active_pj
                       + (updates - events) * model.e_product_update_inactive_pj)
        else:
            row["sum_pj"] = updates * model.e_relay_update_pj
        if placement is not None:
            reach = sum(placement["synapses"][syn]["reach"] for syn in pop["readers"])
            row.update(graded_messages=events * reach,
                       graded_message_pj=events * reach * model.e_graded_message_pj)
        row["energy_pj"] = (row.get("product_pj", 0.0) + row.get("sum_pj", 0.0)
                            + row["graded_sop_pj"] + row.get("graded_message_pj", 0.0))
        rows.append(row)
        for syn, lif in pop["ports"].items():
            sops = tally["attention_port_sops"][syn] / n
            port = {"name": syn, "kind": "synapses", "input": lif, "sops": sops,
                    "sop_pj": sops * model.e_synaptic_op_pj}
            if placement is not None:
                messages = (tally["attention_port_spikes"][syn] / n
                            * placement["synapses"][syn]["reach"])
                port.update(messages=messages, message_pj=messages * model.e_spike_message_pj,
                            messages_between_chips=messages * crossing_share(
                                placement["lifs"][lif], placement["lifs"][pop["name"]]))
            port["energy_pj"] = port["sop_pj"] + port.get("message_pj", 0.0)
            rows.append(port)
    return rows


def placement_state(mapping: EncoderMapping, system: str) -> dict[str, Any]:
    """What the energy model needs of an encoder's mapping onto ``system``, as JSON-ready
    data: per LIF its chips and cores on each, per synapse layer its reader and reach, the
    chips used."""
    return {"system": system, "chips": mapping.chips,
            "lifs": {la.name: {"chips": list(la.chips), "chip_cores": list(la.chip_cores)}
                     for la in mapping.layers},
            "synapses": {syn: {"reader": la.name, "reach": reach} for la in mapping.layers
                         for syn, reach in zip(la.synapse_layers, la.synapse_reach)}}


def crossing_share(sender: dict[str, list[int]], reader: dict[str, list[int]]) -> float:
    r""":math:`1 - \sum_c p_s(c)\,p_r(c)`: the share of messages from ``sender``'s cores to
    ``reader``'s that cross chips (module docstring)."""
    def shares(lif: dict[str, list[int]]) -> dict[int, float]:
        return {c: n / sum(lif["chip_cores"]) for c, n in zip(lif["chips"], lif["chip_cores"])}
    s, r = shares(sender), shares(reader)
    return 1.0 - sum(p * r.get(c, 0.0) for c, p in s.items())


def chip_energy_report(tally: dict[str, Any], placement: dict[str, Any],
                       model: ChipEnergyModel, host_pj: float) -> dict[str, Any]:
    """The chip model's report from a :class:`~.energy.SpikeTally`'s state: ``layers`` (every
    LIF and synapse layer of the chip graph, each LIF followed by the synapse layers that read
    it, with ``energy_pj`` and its terms), ``chip_pj``, ``host_pj``, ``total_mj``, the shares,
    ``terms``, ``left_out`` and ``sources``. ``placement``: :func:`placement_state`, or
    ``{"error": why}`` where the encoder could not be mapped (no spike messages then)."""
    n, t = tally["n"], tally["time_steps"]
    spikes = {name: s / n for name, s in tally["spikes"].items()}
    mapped = "error" not in placement
    rows: list[dict[str, Any]] = []
    for name, shape in tally["lif_shapes"].items():
        updates = math.prod(shape) * t
        neuron_pj = (spikes[name] * model.e_neuron_update_active_pj
                     + (updates - spikes[name]) * model.e_neuron_update_inactive_pj)
        rows.append({"name": name, "kind": "neurons", "neuron_updates": updates,
                     "active_updates": spikes[name], "neuron_pj": neuron_pj,
                     "energy_pj": neuron_pj})
        for syn in (s for s in tally["synapses"] if s["input"] == name):
            sops = tally["sops"][syn["name"]] / n
            row = {"name": syn["name"], "kind": "synapses", "input": name, "sops": sops,
                   "sop_pj": sops * model.e_synaptic_op_pj}
            if mapped:
                where = placement["synapses"][syn["name"]]
                carried = sops / syn["part_fan_out"] if syn.get("part_fan_out") else spikes[name]
                messages = carried * where["reach"]
                row.update(messages=messages, message_pj=messages * model.e_spike_message_pj,
                           messages_between_chips=messages * crossing_share(
                               placement["lifs"][name], placement["lifs"][where["reader"]]))
            row["energy_pj"] = row["sop_pj"] + row.get("message_pj", 0.0)
            rows.append(row)
    for relay in tally.get("relays", []):
        counts = relay_counts([relay], t)
        updates = counts["relay_updates"]
        row = {"name": relay["name"], "kind": "relay", **counts,
               "relay_pj": updates * model.e_relay_update_pj,
               "graded_sop_pj": counts["graded_sops"] * model.e_graded_op_pj}
        if mapped:
            reach = sum(placement["synapses"][f"{relay['name']}>{r}"]["reach"]
                        for r in relay["readers"])
            row.update(graded_messages=updates * reach,
                       graded_message_pj=updates * reach * model.e_graded_message_pj)
        row["energy_pj"] = row["relay_pj"] + row["graded_sop_pj"] + row.get("graded_message_pj",
                                                                              0.0)
        rows.append(row)
    rows += pool_energy_rows(tally.get("pools", []), t, placement if mapped else None, model)
    rows += attention_energy_rows(tally, placement if mapped else None, model)
    graded = bool(tally.get("relays") or tally.get("attention") or tally.get("pools"))
    terms_pj = {"synaptic_ops": sum(r.get("sop_pj", 0.0) for r in rows),
                "neuron_updates": sum(r.get("neuron_pj", 0.0) for r in rows)}
    if tally.get("relays"):
        terms_pj["relay_updates"] = sum(r.get("relay_pj", 0.0) for r in rows)
    if tally.get("pools"):
        terms_pj["relu_updates"] = sum(r.get("relu_pj", 0.0) for r in rows)
    if tally.get("attention"):
        terms_pj["product_updates"] = sum(r.get("product_pj", 0.0) for r in rows)
        terms_pj["attention_sum_updates"] = sum(r.get("sum_pj", 0.0) for r in rows)
    if graded:
        terms_pj["graded_sops"] = sum(r.get("graded_sop_pj", 0.0) for r in rows)
    terms = [f"synaptic ops x {model.e_synaptic_op_pj} pJ (every copy of a synapse)",
             f"neuron updates of every LIF neuron at every step: {model.e_neuron_update_active_pj}"
             f" pJ emitting a spike, {model.e_neuron_update_inactive_pj} pJ otherwise"]
    left_out = list(model.left_out)
    if tally.get("relays"):
        terms.append(f"stream relays, every neuron at every step (an upper bound): updates x "
                     f"{model.e_relay_update_pj} pJ, graded synaptic ops (one per reader) x "
                     f"{model.e_graded_op_pj} pJ" + (f", graded messages (one per destination "
                                                     f"core) x {model.e_graded_message_pj} pJ"
                                                     if mapped else ""))
    if tally.get("pools"):
        terms.append(f"max pools of currents on chip, every ReLU neuron at every step (an upper "
                     f"bound): updates x {model.e_relu_update_pj} pJ, graded synaptic ops (every "
                     f"signed synapse into and out of the levels) x {model.e_graded_op_pj} pJ"
                     + (f", graded messages (one per source neuron and destination core) x "
                        f"{model.e_graded_message_pj} pJ" if mapped else ""))
    if tally.get("attention"):
        terms.append(f"spiking attention on chip, every product and graded sum neuron at every "
                     f"step: product neuron updates x {model.e_product_update_active_pj} pJ "
                     f"sending a nonzero product, {model.e_product_update_inactive_pj} pJ "
                     f"otherwise; graded sum updates x {model.e_relay_update_pj} pJ; graded "
                     f"synaptic ops into and out of the populations x {model.e_graded_op_pj} pJ, "
                     f"Q, K and V spikes' synaptic ops into product neurons x "
                     f"{model.e_synaptic_op_pj} pJ" + (f"; graded messages (one per nonzero "
                                                        f"output and destination core) x "
                                                        f"{model.e_graded_message_pj} pJ"
                                                        if mapped else ""))
    if mapped:
        terms_pj["spike_messages"] = sum(r.get("message_pj", 0.0) for r in rows)
        terms.append(f"spike messages, one per spike and destination core (the mapper's "
                     f"placement on {placement['system']}) x {model.e_spike_message_pj} pJ")
        if graded:
            terms_pj["graded_messages"] = sum(r.get("graded_message_pj", 0.0) for r in rows)
    else:
        left_out.insert(0, f"spike messages: the encoder could not be mapped onto cores "
                           f"({placement['error']})")
    terms.append("host MACs as executed x the 45 nm E_MAC")
    chip_pj = sum(terms_pj.values())
    total = chip_pj + host_pj
    return {
        "model": model.name, "layers": rows, "terms_pj": terms_pj,
        "chip_pj": chip_pj, "host_pj": host_pj, "total_mj": total / PJ_PER_MJ,
        "chip_share": chip_pj / total, "host_share": host_pj / total,
        "messages": sum(r.get("messages", 0.0) for r in rows) if mapped else None,
        "graded_messages": (sum(r.get("graded_messages", 0.0) for r in rows) if mapped
                            else None),
        "messages_between_chips": (sum(r.get("messages_between_chips", 0.0) for r in rows)
                                   if mapped else None),
        "placement": {**({"system": placement["system"], "chips": placement["chips"]} if mapped
                         else {"system": placement.get("system"), "error": placement["error"]}),
                      **({"assumptions": placement["assumptions"]} if "assumptions" in placement
                         else {})},
        "static_mw": placement["chips"] * model.static_mw_per_chip if mapped else None,
        "terms": terms, "left_out": left_out, "scope": model.scope,
        "description": model.description, "sources": model.sources,
    }
