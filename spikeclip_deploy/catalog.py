"""What ``spikeclip-deploy models`` lists: registered configs and shipped checkpoints.

Read from JSON only (configs and checkpoint cards), so listing takes milliseconds; parameter
counts, on request, come from building each model on PyTorch's ``meta`` device (no memory);
deployability, on request, from :mod:`.deployability` (computed once per config, then cached).
"""
from __future__ import annotations

import json
from typing import Any

from .config import ModelConfig, list_configs
from .deployability import deployability
from .paths import models_dir
from .progress import progress


def shipped_checkpoints() -> list[dict[str, Any]]:
    """Every ``models/NAME.safetensors`` with its config name and the accuracy its card records
    (validation zero-shot top-1 measured when it was trained)."""
    rows = []
    for weights in sorted(models_dir().glob("*.safetensors")):
        card_path = weights.with_suffix(".json")
        try:
            card = json.loads(card_path.read_text())
            config = card["config"]["name"]
            metrics = card["metadata"].get("metrics", {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a student checkpoint (a teacher tower) or an unreadable card
        rows.append({"name": weights.stem, "config": config,
                     "val_zero_shot_top1": metrics.get("val_zero_shot_top1_student"),
                     "teacher_val_zero_shot_top1": metrics.get("val_zero_shot_top1_teacher"),
                     "n_val": metrics.get("n_val"),
                     "quantization_aware": bool(metrics.get("quantization_aware"))})
    return rows


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    import torch

    from .nn.spikeclip import SpikeCLIP, parameter_count

    with torch.device("meta"):
        model = SpikeCLIP(cfg)
    return {"image_params": parameter_count(model.image), "text_params": parameter_count(model.text)}


def catalog(params: bool = False, deployable: bool = False) -> dict[str, list[dict[str, Any]]]:
    """``{"configs": [...], "checkpoints": [...]}``; ``params``: with parameter counts;
    ``deployable``: with :func:`~.deployability.deployability`'s fields."""
    configs = []
    for cfg in progress(list_configs(), disable=not deployable, desc="deployability",
                        unit="config"):
        row: dict[str, Any] = {"name": cfg.name, "image_arch": cfg.image_arch,
                               "text_arch": cfg.text_arch, "time_steps": cfg.time_steps,
                               "image_size": cfg.image_size, "embed_dim": cfg.embed_dim}
        if params:
            row.update(parameter_counts(cfg))
        if deployable:
            row.update(deployability(cfg))
        configs.append(row)
    return {"configs": configs, "checkpoints": shipped_checkpoints()}
