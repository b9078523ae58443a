r"""Synaptic operations and energy per inference (the SpikeCLIP paper's Appendix F model).

For a synapse layer :math:`l` fed by spikes :math:`s_{t,i}`:

.. math::

    \mathrm{SOP}_l = \sum_t \sum_i s_{t,i}\, \mathrm{fanout}_l(i)
    \quad\text{(counted)},\qquad
    \widehat{\mathrm{SOP}}_l = r_l \cdot T \cdot \mathrm{FLOPs}_l \quad\text{(analytic check)}

:math:`E_{SNN} = E_{AC} \sum_l \mathrm{SOP}_l + E_{MAC}(T\cdot\mathrm{MAC}_{stem} + T\cdot
\mathrm{MAC}_{ops} + \mathrm{MAC}_{readout})`, :math:`E_{ANN} = E_{MAC}(\mathrm{MAC}_{stem} +
\sum_l \mathrm{FLOPs}_l + \mathrm{MAC}_{ops} + \mathrm{MAC}_{readout})`, where
:math:`\mathrm{MAC}_{ops}` are the host ops between chip subgraphs (spiking attention's
:math:`Q K^\top V`; a real-valued max-pool with the synapse layer before it), evaluated once per
step. Only computation is counted, not memory access or data movement.

The partition's share of the work: :func:`chip_sop_share` over :func:`host_macs_executed`;
``chip_part_sop_share`` leaves out the stem and readout, which every deployment keeps on the
host: 1 when everything between them runs on neuro-cores.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import nir
import numpy as np

from ..hardware import EnergyModel
from ..lowering.resources import fan_out, flops
from ..nirgraph import ChipLayer, HostOpNode

PJ_PER_MJ = 1e9


def host_op_macs(layers: Iterable[ChipLayer]) -> int:
    """MACs of one evaluation of every host op between chip subgraphs (each op's
    ``metadata["macs"]``, the host-placed synapses before it included)."""
    return sum(int(la.node.metadata["macs"]) for la in layers if isinstance(la.node, HostOpNode))


def host_macs_executed(stem_macs: int, readout_macs: int, op_macs: int, time_steps: int) -> int:
    """The host's MACs per inference as executed: the stem once per sample (direct coding: its
    current is the same at every step), the host ops once per step, the readout once."""
    return stem_macs + time_steps * op_macs + readout_macs


def chip_sop_share(chip_sops: float, host_macs: float) -> float:
    """The chip's share of an inference's operations: its SOPs over its SOPs plus the host's
    MACs (:func:`host_macs_executed`)."""
    return chip_sops / (chip_sops + host_macs)


def energy_report(layers: list[ChipLayer], spikes: list[np.ndarray],
                  stem_macs: int, readout_macs: int, energy_model: EnergyModel) -> dict[str, Any]:
    """``layers``: an encoder's chip layers in topological order; ``spikes``: one
    ``[N, T, *shape]`` array per LIF layer, in that order."""
    e_ac, e_mac = energy_model.e_ac_pj, energy_model.e_mac_pj
    n, t = spikes[0].shape[:2]
    lif_names = [la.name for la in layers if isinstance(la.node, nir.LIF)]
    by_lif = dict(zip(lif_names, spikes))
    rows = []
    op_macs = host_op_macs(layers)
    for la in layers:
        if isinstance(la.node, (nir.LIF, HostOpNode)):
            continue
        (src,) = la.inputs
        s = by_lif[src]
        in_shape = s.shape[2:]
        fo = fan_out(la.node, in_shape)
        sops = float((s.reshape(n, t, -1).sum((0, 1)).astype(np.float64) * fo.reshape(-1)).sum() / n)
        rate = float(s.mean())
        fl = flops(la.node, in_shape)
        rows.append({"name": la.name, "copy_of": la.node.metadata.get("copy_of"),
                     "type": type(la.node).__name__, "input": src,
                     "firing_rate": rate, "sops": sops, "sops_analytic": rate * t * fl,
                     "flops": fl, "energy_pj": sops * e_ac})
    # a synapse copied for several readers (a residual stream's term) is one layer of the model:
    # the model's operations count it once; the chip executes every copy
    model_rows = {row["copy_of"] or row["name"]: row for row in rows}.values()
    total_sops = sum(row["sops"] for row in model_rows)
    host = host_macs_executed(stem_macs, readout_macs, op_macs, t)
    e_snn = e_ac * total_sops + e_mac * (t * stem_macs + t * op_macs + readout_macs)
    e_ann = e_mac * (stem_macs + sum(row["flops"] for row in model_rows) + op_macs + readout_macs)
    return {
        "n": int(n), "time_steps": int(t), "layers": rows,
        "neuron_firing_rates": {nm: float(s.mean()) for nm, s in zip(lif_names, spikes)},
        "first_layer_macs": int(stem_macs), "first_layer_energy_pj": e_mac * t * stem_macs,
        "readout_macs": int(readout_macs), "total_sops": total_sops,
        "chip_sops_all_copies": sum(row["sops"] for row in rows),
        "host_op_macs_per_step": op_macs,
        "host_macs_executed": int(host),
        "chip_sop_share": chip_sop_share(total_sops, host),
        "chip_part_sop_share": total_sops / (total_sops + t * op_macs) if total_sops else 0.0,
        "energy_per_inference_mj": e_snn / PJ_PER_MJ,
        "ann_energy_per_inference_mj": e_ann / PJ_PER_MJ,
        "energy_ratio_snn_over_ann": e_snn / e_ann,
        "energy_reduction": 1.0 - e_snn / e_ann,
        "energy_model": dataclasses.asdict(energy_model),
        "note": energy_model.scope,
    }
