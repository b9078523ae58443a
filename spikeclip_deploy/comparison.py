r"""The spiking model against its ANN twin, as the SpikeCLIP paper's Table 7 compares SpikeCLIP
with ScratchCLIP: parameters, time steps, zero-shot accuracy, operations and energy per image
inference, and the energy reduction, from measured results only.

The SNN's figures come from its ``verify --json`` (accuracy of the float model and on the chip,
emulated, with 95 % intervals; SOPs counted from the chip's spikes; energy per inference with its
interval). The twin's accuracy comes from ``verify --json`` run on the twin's checkpoint (an ANN:
its float model) on the same images; its MACs per inference from its config
(:func:`~.costs.image_macs`), and its energy from them under the SNN's energy model:
:math:`E_{ANN} = E_{MAC} \cdot \mathrm{MACs}`. Energy reduction:
:math:`1 - E_{SNN} / E_{ANN}`. Without a twin, the second row is the SNN graph's ANN
counterpart as verify computes it (the same graph evaluated densely; no accuracy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ModelConfig
from .costs import model_costs, parameters
from .errors import ConfigError
from .fileutil import atomic_write
from .verify.energy import PJ_PER_MJ, ann_macs
from .verify.results import read_json, write_json

#: whose spikes the SNN's SOPs were counted from (verify's ``energy.spikes_from``)
SPIKES = {"emu": "the emulated chip's spikes (bit-exact with Lava)", "lava": "Lava's spikes"}
#: what two verifications must share to be compared: the same images, labels and prompts
SAME = ("n", "labels", "templates", "protocol")
SAME_DATA = ("split", "val_fraction", "seed", "limit", "available", "selected")


def _config(result: dict[str, Any], what: str) -> ModelConfig:
    if not result.get("config"):
        raise ConfigError(f"{what} does not record the model's config (written by an earlier "
                          f"version): run verify again")
    return ModelConfig.from_dict(result["config"])


def _check_same_images(snn: dict[str, Any], twin: dict[str, Any]) -> None:
    differ = [k for k in SAME if snn[k] != twin[k]] + \
        [f"data.{k}" for k in SAME_DATA if snn["data"][k] != twin["data"][k]] + \
        (["data.source"] if Path(snn["data"]["source"]).name != Path(twin["data"]["source"]).name
         else [])
    if differ:
        raise ConfigError(f"the two verifications ran on different images or prompts (they "
                          f"differ in {', '.join(differ)}): run verify on both models with the "
                          f"same --data, --split, --val-fraction, --split-seed, --limit, --labels "
                          f"and --templates")


def compare(snn: dict[str, Any], twin: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison of the SNN's verify result ``snn`` (with its energy report) and the ANN
    twin's ``twin`` (or, without one, the SNN graph's ANN counterpart): ``rows`` (SNN, ANN), the
    energy model, ``energy_reduction`` and ``energy_ratio_snn_over_ann``."""
    if "energy" not in snn:
        raise ConfigError(f"the SNN's verification of {snn['model']} has no energy report: run "
                          f"verify on a spiking model with its chip backends (the default)")
    snn_cfg = _config(snn, "the SNN's verify JSON")
    e = snn["energy"]
    graph_macs = ann_macs(e["first_layer_macs"], e["layers"], e["host_op_macs_per_step"],
                          e["readout_macs"])
    rows = [{"role": "snn", "model": snn["model"], "config": snn_cfg.name,
             "neuron": snn_cfg.neuron, "time_steps": e["time_steps"],
             "parameters": parameters(snn_cfg)["total"],
             "accuracy": {k: snn["accuracy"][k] for k in ("float", e["spikes_from"])},
             "accuracy_ci95": {k: snn["accuracy_ci95"][k] for k in ("float", e["spikes_from"])},
             "n": snn["n"], "sops_per_inference": e["total_sops"],
             "macs_per_inference": e["host_macs_executed"],
             "energy_per_inference_mj": e["energy_per_inference_mj"],
             "energy_per_inference_mj_ci95": e["energy_per_inference_mj_ci95"],
             "chip_model_energy_per_inference_mj": e["loihi"]["total_mj"] if "loihi" in e
             else None}]
    if twin is None:
        ann = {"role": "ann-counterpart", "model": None, "config": snn_cfg.name,
               "neuron": None, "time_steps": 1, "parameters": None, "accuracy": {},
               "accuracy_ci95": {}, "n": None, "macs_per_inference": graph_macs,
               "energy_per_inference_mj": e["ann_energy_per_inference_mj"]}
    else:
        twin_cfg = _config(twin, "the twin's verify JSON")
        if not twin_cfg.ann_reason():
            raise ConfigError(f"the twin's verification is of {twin['model']}, a spiking model "
                              f"(config {twin_cfg.name}); pass the verify JSON of an ANN twin "
                              f"(e.g. scratchclip-native-small)")
        _check_same_images(snn, twin)
        costs = model_costs(twin_cfg)
        ann = {"role": "ann-twin", "model": twin["model"], "config": twin_cfg.name,
               "neuron": twin_cfg.neuron, "time_steps": twin_cfg.time_steps,
               "parameters": costs["parameters"]["total"],
               "accuracy": {"float": twin["accuracy"]["float"]},
               "accuracy_ci95": {"float": twin["accuracy_ci95"]["float"]}, "n": twin["n"],
               "macs_per_inference": costs["image_macs"],
               "energy_per_inference_mj":
                   e["energy_model"]["e_mac_pj"] * costs["image_macs"] / PJ_PER_MJ}
    rows.append({**ann, "sops_per_inference": 0, "energy_per_inference_mj_ci95": None,
                 "chip_model_energy_per_inference_mj": None})
    ratio = rows[0]["energy_per_inference_mj"] / ann["energy_per_inference_mj"]
    return {"data": snn["data"], "labels": snn["labels"], "templates": snn["templates"],
            "energy_model": e["energy_model"], "spikes_from": e["spikes_from"], "rows": rows,
            "snn_graph_ann_macs": graph_macs,
            "twin_has_snn_graph": ann["macs_per_inference"] == graph_macs,
            "energy_ratio_snn_over_ann": ratio, "energy_reduction": 1.0 - ratio}


def _pct(acc: dict[str, float], ci: dict[str, list[float]], key: str) -> str:
    if key not in acc:
        return "-"
    lo, hi = ci[key]
    return f"{100 * acc[key]:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}]"


def markdown(table: dict[str, Any]) -> str:
    """The comparison as a Markdown table with the notes that say what each figure is."""
    em, chip = table["energy_model"], table["spikes_from"]
    spikes = SPIKES[chip]
    lines = ["| model (config) | role | neuron | parameters | T | zero-shot top-1, float [95 %] | "
             f"top-1 on chip ({chip}) [95 %] | SOPs / inference | MACs / inference | "
             "energy / inference (mJ) [95 %] | chip model energy / inference (mJ) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        ci, own = r["energy_per_inference_mj_ci95"], r.get("chip_model_energy_per_inference_mj")
        energy = f"{r['energy_per_inference_mj']:.6f}" + (
            f" [{ci[0]:.6f}, {ci[1]:.6f}]" if ci else "")
        lines.append(
            f"| {r['model'] or 'its graph as an ANN'} ({r['config']}) | {r['role']} | "
            f"{r['neuron'] or '-'} | "
            f"{'-' if r['parameters'] is None else format(r['parameters'], ',d')} | "
            f"{r['time_steps']} | {_pct(r['accuracy'], r['accuracy_ci95'], 'float')} | "
            f"{_pct(r['accuracy'], r['accuracy_ci95'], chip)} | "
            f"{r['sops_per_inference']:,.0f} | {r['macs_per_inference']:,d} | {energy} | "
            f"{'-' if own is None else format(own, '.6f')} |")
    d, snn = table["data"], table["rows"][0]
    lines += ["", f"Energy reduction of the SNN against the ANN (1 - E_SNN / E_ANN): "
              f"**{100 * table['energy_reduction']:.2f} %** (ratio "
              f"{table['energy_ratio_snn_over_ann']:.4f}).",
              "", f"Images: {snn['n']} of {d['source']} ({d['split']} split, seed {d['seed']}"
              + (f", first {d['limit']}" if d["limit"] else "") + f"); {len(table['labels'])} "
              f"labels, {len(table['templates'])} prompt templates.",
              f"Energy model {em['name']}: E_AC {em['e_ac_pj']} pJ per synaptic operation, "
              f"E_MAC {em['e_mac_pj']} pJ per multiply-accumulate; {em['scope']}.",
              f"SNN: SOPs counted from {spikes}, MACs those of the host as executed (stem "
              "once, host ops every step, readout once); its energy interval is over the "
              "images. ANN: every layer evaluated once, densely; its energy does not depend on "
              "the image. The chip model's energy (the chip's own per-operation energies, "
              "neuron updates and spike messages included, host at E_MAC) is its own column, "
              "not in the reduction."]
    if table["rows"][1]["role"] == "ann-twin" and not table["twin_has_snn_graph"]:
        lines.append(f"Note: the twin's graph is not the SNN's ({table['snn_graph_ann_macs']:,d} "
                     f"MACs as an ANN): the two differ in more than the neuron.")
    return "\n".join(lines) + "\n"


def _read(path: Path) -> dict[str, Any]:
    return read_json(path, "a verify result", "pass the --json file of `spikeclip-deploy verify`")


def write_report(verify_json: Path, twin_json: Path | None, json_out: Path | None,
                 markdown_out: Path | None) -> dict[str, Any]:
    """:func:`compare` of two ``verify --json`` files, written as JSON and Markdown."""
    table = compare(_read(verify_json), _read(twin_json) if twin_json else None)
    if json_out is not None:
        write_json(Path(json_out), table)
    if markdown_out is not None:
        atomic_write(Path(markdown_out), lambda tmp: tmp.write_text(markdown(table)))
    return table
