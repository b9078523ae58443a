r"""Ablation of the training recipe's options: each variant trains the same student from the
same start with one option changed, and the validation zero-shot top-1 of each is printed side
by side with its 95 % (Wilson) interval and its difference from the paper's recipe.

The runs share everything else: model config, teacher, data subset, seed (hence the same
initial weights and batch order), text encoder (taken from ``--init-text-from``, so no text
epochs run), schedule lengths. Variants (the recipe options of ``spikeclip-deploy train``):

* ``paper``: the paper's recipe: flips, feature distillation, :math:`\mathrm{CE} + \lambda
  \mathrm{KL}` at :math:`\tau = 1`;
* ``crop-flip``: ``--augment crop-flip`` (pad-4 random crops; the teacher runs on each view);
* ``logit-distill``: ``--logit-distill-weight 1 --kd-temperature 2`` (feature plus logit
  distillation; the fine-tuning KL at :math:`\tau = 2` too);
* ``label-smoothing``: ``--label-smoothing 0.1``;
* ``longer``: twice the distillation epochs;
* ``all``: the four together.

Run from the repository root (hours on 2 CPU cores at the defaults; a finished variant is read
back from its checkpoint, an interrupted one resumes from its training state)::

    .venv/bin/python benchmarks/recipe_ablation.py --data ../shared/data/cifar10-train.tar.gz \
        --out runs/ablation [--model spikeclip-tiny --init-text-from spikeclip-tiny-cifar10 \
        --limit 12000 --distill-epochs 1 --finetune-epochs 1 --variants paper,crop-flip,...] \
        [--bf16 --channels-last]

Prints one line per variant, then the table as Markdown.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from spikeclip_deploy.training.recipe import Recipe
from spikeclip_deploy.training.run import TrainConfig, run_training
from spikeclip_deploy.verify.stats import wilson_ci95

VARIANTS: dict[str, dict] = {
    "paper": {},
    "crop-flip": {"augment": "crop-flip"},
    "logit-distill": {"logit_distill_weight": 1.0, "kd_temperature": 2.0},
    "label-smoothing": {"label_smoothing": 0.1},
    "longer": {"distill_epochs": 2},  # times --distill-epochs
    "all": {"augment": "crop-flip", "logit_distill_weight": 1.0, "kd_temperature": 2.0,
            "label_smoothing": 0.1, "distill_epochs": 2},
}


def variant_recipe(base: Recipe, changes: dict) -> Recipe:
    """``base`` with ``changes``; ``distill_epochs`` there is a multiple of the base's."""
    if "distill_epochs" in changes:
        changes = {**changes, "distill_epochs": changes["distill_epochs"] * base.distill_epochs}
    return replace(base, **changes)


def run_variant(name: str, recipe: Recipe, args: argparse.Namespace) -> dict:
    """Train one variant (or read it back when its checkpoint exists) -> its metrics."""
    out = args.out / f"{name}.safetensors"
    card = out.with_suffix(".json")
    start = time.perf_counter()
    if card.exists():
        meta = json.loads(card.read_text())["metadata"]
    else:
        state = out.with_suffix(".train-state.pt")
        meta = run_training(TrainConfig(
            model=args.model, teacher=args.teacher, data=args.data, out=out, recipe=recipe,
            limit=args.limit, init_text_from=args.init_text_from,
            resume=state if state.exists() else None, command=f"recipe_ablation {name}")).meta
    m = meta["metrics"]
    acc, n = m["val_zero_shot_top1_student"], m["n_val"]
    return {"variant": name, "top1": acc, "n_val": n, "ci95": wilson_ci95(round(acc * n), n),
            "teacher": m["val_zero_shot_top1_teacher"],
            "history": [(h["stage"], h["epoch"], h.get("val_zero_shot_top1"))
                        for h in meta["history"]],
            "minutes_this_run": (time.perf_counter() - start) / 60}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="spikeclip-tiny")
    p.add_argument("--teacher", default="offline-minilm")
    p.add_argument("--init-text-from", default="spikeclip-tiny-cifar10")
    p.add_argument("--limit", type=int, default=12000)
    p.add_argument("--distill-epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--bf16", action="store_true", help="train --bf16 (every variant)")
    p.add_argument("--channels-last", action="store_true", help="train --channels-last")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; pick from {', '.join(VARIANTS)}")
    base = Recipe(text_epochs=0, distill_epochs=args.distill_epochs,
                  finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                  seed=args.seed, checkpoint_every=50, bf16=args.bf16,
                  channels_last=args.channels_last)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = run_variant(name, variant_recipe(base, VARIANTS[name]), args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = next((r["top1"] for r in rows if r["variant"] == "paper"), None)
    print(f"\nmodel {args.model}, {args.limit} training images, distill {args.distill_epochs} + "
          f"finetune {args.finetune_epochs} epochs, seed {args.seed}, bf16 {args.bf16}, "
          f"channels-last {args.channels_last}\n")
    print("| variant | options | val top-1 (95 % CI) | vs paper |\n|---|---|---|---|")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in VARIANTS[r["variant"]].items()) or "-"
        delta = f"{100 * (r['top1'] - ref):+.2f}" if ref is not None else "-"
        lo, hi = r["ci95"]
        print(f"| {r['variant']} | {opts} | {100 * r['top1']:.2f} % ({100 * lo:.1f}-{100 * hi:.1f}) "
              f"| {delta} |")


if __name__ == "__main__":
    main()
