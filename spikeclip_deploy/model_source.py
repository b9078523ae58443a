"""Where a model comes from: a checkpoint (verified, every weight finite), or a seeded random
initialisation of a registered config. The exporter lowers it; ``verify`` compares its float
outputs with an export's."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import first_non_finite, load_model, load_tokenizer, resolve_checkpoint
from .config import get_config
from .errors import ExportError
from .nn.init import random_init
from .nn.spikeclip import SpikeCLIP
from .tokenizers import tokenizer_for_vocab


def model_source(model: str, init: str = "checkpoint", seed: int = 0
                 ) -> tuple[SpikeCLIP, Any, dict[str, Any]]:
    """(model, tokenizer, the manifest's model description) from a checkpoint, or a seeded
    random initialisation of a registered config (:func:`~.nn.init.random_init`: to check an
    architecture's deployability and cost before training it; the manifest says
    ``"weights": "random-init"``)."""
    if init == "random":
        config = get_config(model)
        return random_init(config, seed), tokenizer_for_vocab(config.vocab_size), {
            "name": config.name, "weights": "random-init", "seed": seed,
            "checkpoint_sha256": None, "metrics": {}}
    if init != "checkpoint":
        raise ExportError(f"unknown --init '{init}'; choose checkpoint or random")
    ckpt = resolve_checkpoint(model)
    model, card, _ = load_model(str(ckpt))
    check_finite(model, ckpt)
    return model, load_tokenizer(ckpt), {
        "name": ckpt.stem, "weights": "checkpoint", "checkpoint_sha256": card["sha256"],
        "metrics": card["metadata"].get("metrics", {})}


def check_finite(model: torch.nn.Module, source: Path) -> None:
    """Every weight and buffer of ``model`` finite; else an ExportError naming the layer (NaN or
    an infinity cannot be quantized, and would reach the chip as garbage)."""
    found = first_non_finite(model.state_dict())
    if found:
        (layer, _, field), bad, size = found[0].rpartition("."), found[1], found[2]
        raise ExportError(f"{source}: layer {layer} holds {bad} NaN or infinite value(s) in "
                          f"its {field} (of {size}); the checkpoint is broken (a training that "
                          f"diverged?): retrain, or resume from an earlier training state")
