"""Checkpoints: ``NAME.safetensors`` (tensors) + ``NAME.json`` (config, metadata, sha256).

Writes are atomic (temp file + rename, JSON last) so an interrupted save never corrupts an
existing checkpoint; reads verify the hash, so truncation is caught before any tensor is used.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .fieldtypes import has_type
from .fileutil import atomic_write, sha256_file
from .nn.chip_graph import InputGrid
from .nn.lif import MultiStepLIF
from .nn.spikeclip import SpikeCLIP
from .paths import models_dir

FORMAT = "spikeclip-deploy/checkpoint@1"


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def write_safetensors(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and a JSON sidecar ``{format, sha256, **meta}`` atomically."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p)))
    write_card(path, {"format": FORMAT, "sha256": sha256_file(path), **meta})


def write_card(path: Path, card: dict[str, Any]) -> None:
    """The JSON sidecar of checkpoint ``path``, written atomically."""
    atomic_write(sidecar(path), lambda p: p.write_text(json.dumps(card, indent=2) + "\n"))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint; every problem is a CheckpointError naming the file."""
    path = Path(path)
    card_path = sidecar(path)
    for p in (path, card_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} is missing; a checkpoint is NAME.safetensors "
                                  f"plus NAME.json side by side")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{card_path} is not valid JSON ({exc}); restore it or retrain") from None
    _check_card(card, card_path)
    if card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path} has format {card.get('format')!r}, expected {FORMAT!r}")
    digest = sha256_file(path)
    if digest != card.get("sha256"):
        raise CheckpointError(f"{path} is truncated or corrupt: sha256 {digest[:12]}... does not "
                              f"match {str(card.get('sha256'))[:12]}... in {card_path.name}; "
                              f"copy it again or retrain")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    return state, card


def _check_card(card: Any, card_path: Path) -> None:
    """The card's shape: a JSON object whose ``config`` and ``metadata`` are objects."""
    if not isinstance(card, dict):
        raise CheckpointError(f"{card_path} must hold a JSON object (format, sha256, config, "
                              f"metadata), got {json.dumps(card)[:60]}; restore it or retrain")
    for key in ("config", "metadata"):
        if not isinstance(card.get(key), dict):
            got = f"got {json.dumps(card[key])[:60]}" if key in card else "it is missing"
            raise CheckpointError(f"{card_path}: field '{key}' must be a JSON object ({got}); "
                                  f"restore the card or retrain")


def first_non_finite(tensors: dict[str, torch.Tensor]) -> tuple[str, int, int] | None:
    """``(name, non-finite count, size)`` of the first floating-point tensor holding NaN or an
    infinity, or None when all are finite."""
    for name, value in tensors.items():
        if value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return name, bad, value.numel()
    return None


def resolve_checkpoint(name_or_path: str) -> Path:
    """A path to ``.safetensors``, or the name of a checkpoint shipped in ``models/``."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists() or os.sep in name_or_path:
        return p if p.suffix == ".safetensors" else p.with_suffix(".safetensors")
    shipped = models_dir() / f"{name_or_path}.safetensors"
    if not shipped.exists():
        avail = sorted(x.stem for x in models_dir().glob("*.safetensors"))
        raise CheckpointError(f"no checkpoint named '{name_or_path}'; shipped: {', '.join(avail) or 'none'}"
                              f"; or pass a path to a .safetensors file")
    return shipped


def input_grids(model: SpikeCLIP) -> dict[str, dict[str, Any]]:
    """What quantization-aware training sets beside the weights, which the card stores by
    module name: ``grids``, each host current's grid ``[s, lo, hi]``
    (:class:`~.nn.chip_graph.InputGrid`, where set), and ``thresholds``, every LIF's
    :math:`v_{th}` (those reading a host op's current take the export's)."""
    return {"grids": {name: [float(v) for v in m.grid] for name, m in model.named_modules()
                      if isinstance(m, InputGrid) and m.grid is not None},
            "thresholds": {name: float(m.v_threshold) for name, m in model.named_modules()
                           if isinstance(m, MultiStepLIF)}}


def save_model(path: Path, model: SpikeCLIP, metadata: dict[str, Any],
               extra: dict[str, torch.Tensor] | None = None) -> None:
    state = dict(model.state_dict())
    state.update(extra or {})
    write_safetensors(path, state, {"config": model.cfg.to_dict(), "metadata": metadata,
                                    "input_grids": input_grids(model)})


#: fills in the input grids of a quantization-aware checkpoint of an earlier version, which
#: stores none: ``(model, hardware profile name)``
GridRecompute = Callable[[SpikeCLIP, str], None]


def load_model(name_or_path: str, recompute_grids: GridRecompute | None = None
               ) -> tuple[SpikeCLIP, dict[str, Any], dict[str, torch.Tensor]]:
    """-> (model in eval mode, with the input grids its card stores; card; extra tensors not
    part of the model such as optimizer-free class weights). A quantization-aware checkpoint
    that stores no grids (an earlier version's) gets them from ``recompute_grids``, or is a
    CheckpointError naming the command that adds them."""
    path = resolve_checkpoint(name_or_path)
    state, card = read_safetensors(path)
    try:
        cfg = ModelConfig.from_dict(card["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{sidecar(path)} has no valid model config: {exc}") from None
    model = SpikeCLIP(cfg)
    own = model.state_dict()
    model_state = {k: v for k, v in state.items() if k in own}
    extra = {k: v for k, v in state.items() if k not in own}
    missing = sorted(set(own) - set(model_state))
    wrong = sorted(k for k in model_state if model_state[k].shape != own[k].shape)
    if missing or wrong:
        raise CheckpointError(f"{path} does not match config '{cfg.name}': missing {missing[:5]}, "
                              f"wrong shapes {wrong[:5]}")
    model.load_state_dict(model_state)
    grids = card.get("input_grids")
    qa = card["metadata"].get("metrics", {}).get("quantization_aware")
    if grids is None and qa and qa.get("input_grid"):  # on the chip's grid, not stored
        if recompute_grids is None:
            raise CheckpointError(f"{sidecar(path)} is quantization-aware but stores no input "
                                  f"grids (a checkpoint of an earlier version); add them with "
                                  f"`spikeclip-deploy upgrade-checkpoint {path}`")
        recompute_grids(model, qa["hardware"])
    else:
        _set_grids(model, {} if grids is None else grids, sidecar(path))
    return model.eval(), card, extra


def _set_grids(model: SpikeCLIP, record: Any, card_path: Path) -> None:
    """Set what a card stores (:func:`input_grids`; an empty record: nothing); a malformed
    record is a CheckpointError naming it."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{card_path}: 'input_grids' {what}; restore the card or retrain")

    def positive(v: Any) -> bool:
        return has_type(v, float) and math.isfinite(v) and v > 0

    if record == {}:
        return
    if not (isinstance(record, dict) and set(record) == {"grids", "thresholds"}
            and all(isinstance(v, dict) for v in record.values())):
        raise bad("must be an object of 'grids' and 'thresholds'")
    modules = dict(model.named_modules())
    for name, grid in record["grids"].items():
        if not (isinstance(modules.get(name), InputGrid) and isinstance(grid, list)
                and len(grid) == 3 and positive(grid[0])
                and all(has_type(v, float) and math.isfinite(v) for v in grid)):
            raise bad(f"entry {str(name)[:60]!r} is not a grid [scale, lo, hi] of a host "
                      f"current of this model")
        modules[name].grid = tuple(float(v) for v in grid)
    for name, vth in record["thresholds"].items():
        if not (isinstance(modules.get(name), MultiStepLIF) and positive(vth)):
            raise bad(f"threshold {str(name)[:60]!r} is not a positive number of a LIF of "
                      f"this model")
        modules[name].v_threshold = float(vth)


def load_tokenizer(ckpt: Path):
    """The tokenizer saved beside a checkpoint (``NAME.tokenizer/``, written by ``train``)."""
    from transformers import AutoTokenizer

    folder = Path(ckpt).with_suffix(".tokenizer")
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder} is missing beside the checkpoint; it is "
                              f"written by `spikeclip-deploy train` and travels with the checkpoint")
    return AutoTokenizer.from_pretrained(str(folder))


def default_checkpoint_name() -> str:
    return "spikeclip-native-small-cifar10"


__all__ = ["save_model", "load_model", "read_safetensors", "write_safetensors", "resolve_checkpoint",
           "sha256_file"]
