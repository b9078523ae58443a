"""Checkpointing a training run: its state (model, optimizer, stage, epoch, step within the
epoch, RNG) saved beside the output after every epoch and every ``checkpoint_every`` steps, the
metrics log rewritten from it, and resumption from it, which continues exactly where an
interruption stopped (the epoch's draws are replayed, its finished steps skipped). Resuming a
finished run with a larger epoch count for a stage reopens training at that stage."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import first_non_finite
from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..fileutil import atomic_write
from ..lowering.qat import plain_state_dict
from ..safeload import load_tensors_only
from .recipe import Recipe

STAGES = ("text", "distill", "finetune", "qat", "done")
#: the recipe fields a run stopped mid-epoch must resume with, to replay its draws exactly
EXACT = ("batch_size", "text_batch_size", "seed", "max_steps_per_epoch")
HINT = "pass the NAME.train-state.pt that `train` writes beside its --out checkpoint"


@dataclass
class TrainState:
    stage: str = "text"
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    step: int = 0  # steps done in the current epoch (mid-epoch checkpoints)
    loss_sum: float = 0.0
    epoch_rng: Any = None  # generator state at the start of the current epoch, to replay it


class StateFile:
    """``NAME.train-state.pt`` and ``NAME.metrics.jsonl`` beside the checkpoint ``out``."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out).with_suffix(".train-state.pt")
        self.metrics = Path(out).with_suffix(".metrics.jsonl")

    def save(self, model: torch.nn.Module, state: TrainState, opt: torch.optim.Optimizer | None,
             gen: torch.Generator, recipe: Recipe, cfg: ModelConfig) -> None:
        """Write the state atomically, then the metrics log; weights holding NaN or an infinity
        are never written (:meth:`non_finite`)."""
        weights = plain_state_dict(model)
        found = first_non_finite(weights)
        if found:
            raise self.non_finite(f"weight {found[0]} holds {found[1]} NaN or infinite "
                                  f"value(s)", state, state.stage, state.step)
        blob = {"model": weights, "state": asdict(state),
                "optimizer": opt.state_dict() if opt else None, "rng": gen.get_state(),
                "recipe": asdict(recipe), "config": cfg.to_dict()}
        atomic_write(self.path, lambda tmp: torch.save(blob, tmp))
        self.write_metrics(state.history)

    def write_metrics(self, history: list[dict]) -> None:
        """One line per finished epoch, rewritten from the saved state's history (never
        appended), so a kill at any moment cannot leave it out of step."""
        lines = "".join(json.dumps(record) + "\n" for record in history)
        atomic_write(self.metrics, lambda tmp: tmp.write_text(lines))

    def non_finite(self, what: str, state: TrainState, stage: str, step: int) -> ConfigError:
        """The error that stops training before ``what`` (a NaN loss, an infinite weight)
        reaches the training state: the one on disk stays the last good one."""
        option = f"--{'distill' if stage == 'text' else stage}-lr"
        fix = (f"{self.path} holds the last good state: lower {option} (or the loss weights) "
               f"and --resume from it" if self.path.is_file() else
               f"lower {option} (or the loss weights) and train again")
        return ConfigError(f"training stopped: {what} at {stage} epoch {state.epoch + 1}, "
                           f"step {step}; nothing was saved from it: {fix}")


def load_state(path: Path, model: torch.nn.Module, cfg: ModelConfig, recipe: Recipe,
               gen: torch.Generator) -> tuple[TrainState, dict | None]:
    """Restore a saved state into ``model`` and ``gen`` -> (its state, its optimizer's)."""
    blob = load_tensors_only(path, "a training state", HINT)
    fields = ("model", "state", "rng", "config")
    missing = [k for k in fields if k not in blob] if isinstance(blob, dict) else list(fields)
    if missing:
        raise CheckpointError(f"cannot resume from {path}: a training state needs the "
                              f"field(s) {', '.join(missing)}; {HINT}")
    if blob.get("config") != cfg.to_dict():
        raise CheckpointError(f"{path} was trained with another model config; pass the same "
                              f"--model")
    model.load_state_dict(blob["model"])
    state = TrainState(**blob["state"])
    saved = blob.get("recipe", {})
    changed = [k for k in EXACT if k in saved and saved[k] != getattr(recipe, k)]
    if state.step and changed:
        raise CheckpointError(f"{path} stopped mid-epoch with other {', '.join(changed)}; "
                              f"resume with the same values to continue the epoch exactly")
    gen.set_state(blob["rng"])
    return state, blob.get("optimizer")


def reopened(state: TrainState, recipe: Recipe) -> TrainState | None:
    """The state at the first finished stage now given more epochs than its history shows
    (None: there is none)."""
    for stage in STAGES[:STAGES.index(state.stage)]:
        done = sum(1 for h in state.history if h["stage"] == stage)
        if getattr(recipe, f"{stage}_epochs") > done:
            return TrainState(stage=stage, epoch=done, history=state.history)
    return None
