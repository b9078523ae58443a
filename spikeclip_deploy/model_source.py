"""Where a model comes from: a checkpoint (verified, every weight finite), or a seeded random
initialisation of a registered config. The exporter lowers it; ``verify`` compares its float
outputs with an export's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

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
    net, info, tokenizer = model_first(model, init, seed)
    return net, tokenizer(), info


def model_first(model: str, init: str = "checkpoint", seed: int = 0
                ) -> tuple[SpikeCLIP, dict[str, Any], Callable[[], Any]]:
    """:func:`model_source`'s model and description, and a function that loads its tokenizer
    (a checkpoint's imports transformers, a second or two: a caller may start other work
    first)."""
    if init == "random":
        config = get_config(model)
        return random_init(config, seed), {
            "name": config.name, "weights": "random-init", "seed": seed,
            "checkpoint_sha256": None, "metrics": {}}, \
            lambda: tokenizer_for_vocab(config.vocab_size)
    if init != "checkpoint":
        raise ExportError(f"unknown --init '{init}'; choose checkpoint or random")
    ckpt = resolve_checkpoint(model)
    net, card, _ = load_model(str(ckpt))
    check_finite(net, ckpt)
    return net, {
        "name": ckpt.stem, "weights": "checkpoint", "checkpoint_sha256": card["sha256"],
        "metrics": card["metadata"].get("metrics", {})}, lambda: load_tokenizer(ckpt)


def check_finite(model: torch.nn.Module, source: Path) -> None:
    """Every weight and buffer of ``model`` finite; else an ExportError naming the layer (NaN or
    an infinity cannot be quantized, and would reach the chip as garbage)."""
    found = first_non_finite(model.state_dict())
    if found:
        (layer, _, field), bad, size = found[0].rpartition("."), found[1], found[2]
        raise ExportError(f"{source}: layer {layer} holds {bad} NaN or infinite value(s) in "
                          f"its {field} (of {size}); the checkpoint is broken (a training that "
                          f"diverged?): retrain, or resume from an earlier training state")
