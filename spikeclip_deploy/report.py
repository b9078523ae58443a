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
            extra = (f"  vth={q['vth']} bias_exp={q['bias_exp']}" if "vth" in q else
                     f"  weight_exp={q['weight_exp']} scale={row.get('scale', 0):.1f}" if q else "")
            lines.append(f"    {row['name']:<8s} {row['type']:<7s} {str(shape):<22s}{extra}")
    lines.append(f"  files: {len(manifest['files'])} (sha256 in manifest.json)")
    return "\n".join(lines)


def verify_summary(r: dict) -> str:
    acc = "  ".join(f"{k} {v:.4f}" for k, v in r["accuracy"].items())
    agr = "  ".join(f"{k} {v:.4f}" for k, v in r["agreement"].items())
    lines = [f"verify {r['model']} on {r['n']} validation images of {r['data']}",
             f"  zero-shot top-1: {acc}", f"  top-1 agreement: {agr}"]
    for target, b in r.get("backends", {}).items():
        lines.append(f"  {target}: {b['runs']} ({b['export']})")
    for target, rates in r["firing_rates"].items():
        lines.append(f"  firing rates ({target}): " +
                     "  ".join(f"{k} {v:.3f}" for k, v in rates.items()))
    return "\n".join(lines)


def energy_summary(e: dict) -> str:
    w = max(8, *(len(layer["name"]) + 1 for layer in e["layers"]))
    lines = [f"energy per image inference (n={e['n']}, T={e['time_steps']}, from Lava spikes)",
             f"  {'layer':<{w}s}{'input':<7s}{'rate':>7s}{'SOPs':>14s}{'rate*T*FLOPs':>14s}"]
    for layer in e["layers"]:
        copy = f"  (copy of {layer['copy_of']}: counted once)" if layer["copy_of"] else ""
        lines.append(f"  {layer['name']:<{w}s}{layer['input']:<7s}{layer['firing_rate']:>7.3f}"
                     f"{layer['sops']:>14,.0f}{layer['sops_analytic']:>14,.0f}{copy}")
    lines.append(f"  first layer (host, real-valued): {e['first_layer_macs']:,d} MACs x T")
    if e["host_op_macs_per_step"]:
        lines.append(f"  host ops between chip subgraphs: {e['host_op_macs_per_step']:,d} MACs x T")
    lines += [f"  chip share of the work: {100 * e['chip_sop_share']:.1f} % (chip SOPs vs host "
              f"MACs as executed); between stem and readout: "
              f"{100 * e['chip_part_sop_share']:.1f} %",
              f"  SNN {e['energy_per_inference_mj']:.6f} mJ  vs ANN counterpart "
              f"{e['ann_energy_per_inference_mj']:.6f} mJ  (ratio {e['energy_ratio_snn_over_ann']:.3f},"
              f" reduction {100 * e['energy_reduction']:.1f} %)",
              f"  E_AC={e['energy_model']['e_ac_pj']} pJ, E_MAC={e['energy_model']['e_mac_pj']} pJ; "
              + e["note"]]
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
