"""Human-readable summaries printed by the CLI (the JSON files carry the full data)."""
from __future__ import annotations

from pathlib import Path


def export_summary(path: Path, manifest: dict) -> str:
    lines = [f"export ({manifest['target']}) -> {path}",
             f"  dt={manifest['dt']}  T={manifest['time_steps']}  hardware={manifest['hardware']}"]
    for side, layers in manifest["layers"].items():
        lines.append(f"  {side} encoder (chip):")
        for row in layers:
            shape = row.get("shape") or row.get("weight_shape")
            q = row.get("loihi", {})
            extra = (f"  graded payload <= {row['payload_bound']:,} "
                     f"({q['num_message_bits']} bits)"
                     if "relay" in row or "attention" in row or "current_pool" in row
                     else
                     f"  vth={q['vth']} bias_exp={q['bias_exp']}" if "vth" in q else
                     f"  weight_exp={q['weight_exp']} scale={row.get('scale', 0):.1f}" if q else "")
            lines.append(f"    {row['name']:<8s} {row['type']:<7s} {str(shape):<22s}{extra}")
    for side, streams in manifest.get("streams", {}).items():
        for cost in streams.values():
            c, g = cost["copies"], cost["graded"]
            lines.append(f"  {side} residual stream read by {', '.join(cost['readers'])}: "
                         f"{cost['form']} kept; per step at full activity, copies "
                         f"{c['synaptic_ops']:,} synaptic ops ({c['energy_pj'] / 1e6:,.2f} uJ)"
                         f"; graded {g['synaptic_ops']:,} synaptic ops + "
                         f"{g['graded_messages']:,} graded messages + {g['relay_updates']:,} "
                         f"relay updates ({g['energy_pj'] / 1e6:,.2f} uJ)")
    for side, layers in manifest.get("attention", {}).get("layers", {}).items():
        for name, a in layers.items():
            p = a["products"]
            lines.append(f"  {side} attention {name} on chip ({a['heads']} heads, N={a['tokens']}, "
                         f"d={a['d']}): {a['order']} ({p['k_first']:,} products a step k_first, "
                         f"{p['q_first']:,} q_first); {a['neurons']:,} neurons "
                         f"({a['product_neurons']:,} product), {a['synapses']:,} synapses, "
                         f"{a['messages']:,} messages a step at full activity")
    for side, pools in manifest.get("current_pool", {}).get("layers", {}).items():
        for name, p in pools.items():
            forms = ", ".join(f"{f} {c['neurons']:,}" for f, c in p["forms"].items())
            lines.append(f"  {side} max pool {name} on chip ({p['channels']} x {p['grid'][0]} x "
                         f"{p['grid'][1]}, kernel {p['kernel']}, stride {p['stride']}, padding "
                         f"{p['padding']}): {p['tree']} tree (ReLU neurons: {forms}); "
                         f"{p['neurons']:,} neurons ({p['relu_neurons']:,} ReLU), "
                         f"{p['synapses']:,} synapses, {p['messages']:,} messages a step at full "
                         f"activity")
    lines.append(f"  files: {len(manifest['files'])} (sha256 in manifest.json)")
    return "\n".join(lines)


def verify_summary(r: dict) -> str:
    d = r["data"]
    split = "every image" if d["split"] == "all" else f"the {d['split']} split"
    shard = "" if r["complete"] else f", shard {r['shard'][0]}/{r['shard'][1]} (partial)"
    lines = [f"verify {r['model']} on {r['n']} images: {split} of {d['source']} "
             f"({d['available']} images" + (f", first {d['selected']} in seeded order"
                                            if d["selected"] < d["available"] else "")
             + f"){shard}"]
    lines.append("  zero-shot top-1 (95 % interval, images):")
    for k, acc in r["accuracy"].items():
        lo, hi = r["accuracy_ci95"][k]
        n = r["lava_n"] if k == "lava" else r["n"]
        lines.append(f"    {k:<6s} {100 * acc:6.2f} %  [{100 * lo:.2f}, {100 * hi:.2f}]  n={n}")
    if r["agreement"]:
        lines.append("  top-1 agreement: " + "  ".join(
            f"{k} {v:.4f} (n={r['agreement_n'][k]})" for k, v in r["agreement"].items()))
    for pair, div in r["divergence"].items():
        where = "; ".join(f"{layer}: {row['samples']} images from step {row['earliest_step']}, "
                          f"{row['neurons_mean']:.1f} neurons"
                          for layer, row in div["first_divergence"].items())
        lines.append(f"  spikes {pair}: {div['spike_mismatches']} mismatches, "
                     f"{div['samples_diverging']} of {div['samples']} images diverge"
                     + (f" (first at {where})" if where else ""))
    for key, b in r["backends"].items():
        lines.append(f"  {key}: {b['runs']}" + (f" (first {b['limit']} images)"
                                                 if b["limit"] is not None else ""))
    for key, rates in r["firing_rates"].items():
        lines.append(f"  firing rates ({key}): " +
                     "  ".join(f"{k} {v:.3f}" for k, v in rates.items()))
    return "\n".join(lines)


def energy_summary(e: dict) -> str:
    """Per layer and in total, side by side: the 45 nm compute-only model and, where the
    report has it, the chip's own model (``loihi``); chip and host apart, with their shares."""
    from .verify.chip_energy import PJ_PER_MJ

    chip = e.get("loihi")
    names = [r["name"] for r in chip["layers"]] if chip else [r["name"] for r in e["layers"]]
    w = max(8, *(len(name) + 1 for name in names))
    source = {"emu": "the emulator's spikes", "lava": "Lava's spikes"}[e["spikes_from"]]
    nm45 = {r["name"]: r for r in e["layers"]}
    loihi = {r["name"]: r for r in chip["layers"]} if chip else {}
    lines = [f"energy per image inference (n={e['n']}, T={e['time_steps']}, from {source})",
             f"  {'layer':<{w}s}{'input':<7s}{'rate':>7s}{'SOPs':>14s}{'rate*T*FLOPs':>14s}"
             f"{'45 nm pJ':>12s}" + (f"{'updates':>12s}{'messages':>12s}{'Loihi pJ':>12s}"
                                     if chip else "")]
    for name in names:
        a, b = nm45.get(name), loihi.get(name, {})
        cols = (f"{a['input']:<7s}{a['firing_rate']:>7.3f}{a['sops']:>14,.0f}"
                f"{a['sops_analytic']:>14,.0f}{a['energy_pj']:>12,.0f}" if a else
                f"{'':<7s}{'':>7s}{'':>14s}{'':>14s}{'':>12s}")
        if chip:
            messages = b.get("messages", b.get("graded_messages"))
            updates = b.get("neuron_updates", b.get("relay_updates", b.get("relu_updates", "")))
            cols += (f"{updates:>12}"
                     f"{'' if messages is None else format(messages, ',.0f'):>12s}"
                     f"{b['energy_pj']:>12,.0f}")
        copy = (f"  (copy of {a['copy_of']}: counted once at 45 nm)" if a and a["copy_of"]
                else "  (graded stream relay: updates and graded messages)"
                if b.get("kind") == "relay" else
                f"  (attention {b['kind']} population: updates and graded messages)"
                if b.get("kind") in ("product", "sum") else
                "  (max pool ReLU level: updates and graded messages)"
                if b.get("kind") == "relu" else "")
        lines.append(f"  {name:<{w}s}{cols}{copy}")
    lines.append(f"  first layer (host, real-valued): {e['first_layer_macs']:,d} MACs, once "
                 f"(its current is the same at every step)")
    if e["host_op_macs_per_step"]:
        lines.append(f"  host ops between chip subgraphs: {e['host_op_macs_per_step']:,d} MACs x T")
    lines += [f"  chip share of the work: {100 * e['chip_sop_share']:.1f} % (chip SOPs vs host "
              f"MACs as executed); between stem and readout: "
              f"{100 * e['chip_part_sop_share']:.1f} %",
              f"  45 nm model: SNN {e['energy_per_inference_mj']:.6f} mJ (95 % interval "
              f"{e['energy_per_inference_mj_ci95'][0]:.6f} .. "
              f"{e['energy_per_inference_mj_ci95'][1]:.6f}): chip "
              f"{e['chip_energy_pj'] / PJ_PER_MJ:.6f} mJ ({100 * e['chip_energy_share']:.1f} %), host "
              f"{e['host_energy_pj'] / PJ_PER_MJ:.6f} mJ ({100 * e['host_energy_share']:.1f} %)",
              f"    vs ANN counterpart {e['ann_energy_per_inference_mj']:.6f} mJ (ratio "
              f"{e['energy_ratio_snn_over_ann']:.3f}, reduction {100 * e['energy_reduction']:.1f}"
              f" %); the paper's convention, the stem at every step: "
              f"{e['energy_per_inference_mj_stem_every_step']:.6f} mJ",
              f"    E_AC={e['energy_model']['e_ac_pj']} pJ, E_MAC={e['energy_model']['e_mac_pj']} "
              f"pJ; {e['note']}"]
    if e.get("relay_updates"):
        lines.insert(-3, f"  graded stream relays (every neuron at every step, an upper bound): "
                         f"{e['relay_updates']:,d} relay updates, {e['graded_sops']:,d} graded "
                         f"synaptic ops; chip SOPs with every copy {e['chip_sops_all_copies']:,.0f}"
                         f" = {e['chip_sops_all_copies'] / e['total_sops']:.2f} x the model's")
    if "relu_updates" in e:
        lines.insert(-3, f"  max pools of currents on chip (every ReLU neuron at every step, an "
                         f"upper bound): {e['relu_updates']:,d} ReLU updates, "
                         f"{e['pool_graded_sops']:,d} graded synaptic ops: "
                         f"{e['pool_energy_pj'] / PJ_PER_MJ:.6f} mJ at 45 nm")
    if "products" in e:
        lines.insert(-3, f"  spiking attention on chip: {e['products']:,.0f} nonzero products "
                         f"({e['product_updates']:,d} product neuron updates), "
                         f"{e['sum_updates']:,d} graded sum updates, "
                         f"{e['attention_graded_sops']:,.0f} graded and "
                         f"{e['attention_spike_sops']:,.0f} spike synaptic ops: "
                         f"{e['attention_energy_pj'] / PJ_PER_MJ:.6f} mJ at 45 nm")
    if chip:
        t = chip["terms_pj"]
        lines += [f"  chip model ({chip['model']}): {chip['total_mj']:.6f} mJ: chip "
                  f"{chip['chip_pj'] / PJ_PER_MJ:.6f} mJ ({100 * chip['chip_share']:.1f} %: "
                  + ", ".join(f"{k.replace('_', ' ')} {v / PJ_PER_MJ:.6f}" for k, v in t.items())
                  + f"), host {chip['host_pj'] / PJ_PER_MJ:.6f} mJ ({100 * chip['host_share']:.1f} %)"
                  "; its own figure, not in the ANN comparison"]
        p = chip["placement"]
        lines.append(f"    placement: {p['chips']} chip(s) of {p['system']}, "
                     f"{chip['messages']:,.0f} spike messages, "
                     f"{chip.get('graded_messages') or 0:,.0f} graded messages "
                     f"({chip['messages_between_chips']:,.0f} between chips); static power {chip['static_mw']:.1f} mW x the "
                     "inference's time (not known: not in the total)" if "error" not in p
                     else f"    placement: none ({p['error']})")
        lines += ["    counts: " + "; ".join(chip["terms"]),
                  "    left out: " + "; ".join(chip["left_out"])]
    return "\n".join(lines)


def models_summary(found: dict) -> str:
    lines = ["model configs:"]
    width = max(len(c["name"]) for c in found["configs"])
    for c in found["configs"]:
        params = (f"  image {c['image_params']:>10,d}  text {c['text_params']:>10,d}"
                  if "image_params" in c else "")
        deploy = ""
        if "deployable" in c:
            share = (f"chip share {100 * c['chip_sop_share']:5.1f} %"
                     if c["chip_sop_share"] is not None else "")
            deploy = f"  {c['deployable']:<11s} {share}".rstrip()
        lines.append(f"  {c['name']:<{width}s}  {c['image_arch']:<20s} {c['text_arch']:<11s} "
                     f"T={c['time_steps']}{params}{deploy}")
    if any("deployable" in c for c in found["configs"]):
        lines.append("  (deployable to Loihi: chip, partitioned (host ops between chip parts) "
                     "or no; chip share: the chip's share of an image inference's operations at "
                     "full activity; --json gives the reasons)")
    lines.append("shipped checkpoints (validation zero-shot top-1 as measured at training):")
    for k in found["checkpoints"]:
        acc = k["val_zero_shot_top1"]
        measured = (f"{100 * acc:.2f} % (n={k['n_val']}, teacher "
                    f"{100 * k['teacher_val_zero_shot_top1']:.2f} %)" if acc is not None
                    else "not recorded")
        lines.append(f"  {k['name']}  config {k['config']}  {measured}"
                     + ("  quantization-aware" if k["quantization_aware"] else ""))
    return "\n".join(lines)


def run_summary(result: dict) -> str:
    lines = []
    for r in result["results"]:
        lines.append(f"{r['image']}: prediction: {r['prediction']}  (target {result['target']})")
        for label, score in sorted(r["scores"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {label:>20s}  {score:+.4f}")
    return "\n".join(lines)


def mapping_summary(m) -> str:
    """The ``map`` table: per layer neurons, synapses, memory, cores and chips; totals."""
    lines = [f"map {m.export} onto {m.system.name} ({m.system.chips} chip(s) of {m.hardware})"]
    lines += [f"  assuming {key} = {a['assumed']:,} (the profile's: {a['profile']:,})"
              for key, a in m.assumptions.items()]
    for e in m.encoders:
        lines.append(f"  {e.side} encoder:")
        lines.append(f"    {'layer':<8s} {'neurons':>9s} {'synapses':>13s} {'memory KiB':>10s} "
                     f"{'cores':>5s} {'tile c x rows':>13s}  chips  bound by")
        for la in e.layers:
            chips = f"{la.chips[0]}" + (f"-{la.chips[-1]}" if len(la.chips) > 1 else "")
            tile = (f"{la.tile[0]} x {la.tile[1]}" + ("p" if la.position_runs else "")
                    + (f" x {la.columns}" if la.columns else ""))
            lines.append(f"    {la.name:<8s} {la.neurons:>9,d} {la.synapses:>13,d} "
                         f"{la.memory_bits / 8192:>10.1f} {la.cores:>5d} {tile:>13s}  "
                         f"{chips:<5s}  {la.limited_by}")
        lines.append(f"    {'total':<8s} {e.total('neurons'):>9,d} {e.total('synapses'):>13,d} "
                     f"{e.total('memory_bits') / 8192:>10.1f} {e.total('cores'):>5d} {'':>13s}  "
                     f"{e.chips} chip(s), {e.chip_crossings} chip crossing(s)")
        kinds = {k: sum(la.cores for la in e.layers if la.kind == k) for k in ("product", "sum")}
        if any(kinds.values()):
            lines.append(f"    spiking attention on chip: {kinds['product']:,d} cores of product "
                         f"neurons, {kinds['sum']:,d} of graded sums "
                         f"({100 * sum(kinds.values()) / e.total('cores'):.1f} % of the cores)")
        relu = sum(la.cores for la in e.layers if la.kind == "relu")
        if relu:
            lines.append(f"    max pools of currents on chip: {relu:,d} cores of ReLU levels "
                         f"({100 * relu / e.total('cores'):.1f} % of the cores)")
    if any(la.position_runs for e in m.encoders for la in e.layers):
        lines.append("  (tile c x Np: c channels by a run of N positions in row-major order)")
    return "\n".join(lines)
