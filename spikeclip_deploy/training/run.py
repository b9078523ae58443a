"""One entry point for ``spikeclip-deploy train``: data, teacher, trainer, resume."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import get_config
from ..data import load_dataset, stratified_split
from ..errors import ConfigError
from ..fileutil import sha256_file
from ..teachers import load_teacher
from ..torchvision_data import is_torchvision_spec
from ..zeroshot import warn_indistinct_labels
from .spikeclip_trainer import Recipe, Trainer


@dataclass(frozen=True)
class TrainConfig:
    """What to train from what; the hyperparameters are the :class:`Recipe`."""

    model: str
    teacher: str
    data: Path
    out: Path
    download: bool = False  # let torchvision fetch a torchvision:NAME:ROOT dataset
    recipe: Recipe = field(default_factory=Recipe)
    resume: Path | None = None
    val_fraction: float = 0.1
    limit: int | None = None
    init_text_from: str | None = None  # checkpoint whose text encoder and tokenizer to start from
    init_image_from: str | None = None  # checkpoint whose image encoder weights to start from
    command: str = ""


@dataclass
class TrainResult:
    meta: dict
    model: torch.nn.Module


def run_training(tc: TrainConfig) -> TrainResult:
    if tc.out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors (got {tc.out})")
    cfg = get_config(tc.model)
    teacher = load_teacher(tc.teacher)
    if teacher.embed_dim != cfg.embed_dim:
        raise ConfigError(f"model '{cfg.name}' has embed_dim {cfg.embed_dim} but teacher "
                          f"'{teacher.name}' has {teacher.embed_dim}; pick a matching config")
    ds = load_dataset(tc.data, cfg.image_size, download=tc.download)
    tr, va = stratified_split(ds.labels, tc.val_fraction, tc.recipe.seed)
    if tc.limit:
        gen = torch.Generator().manual_seed(tc.recipe.seed)
        tr = tr[torch.randperm(len(tr), generator=gen)[:tc.limit]]
        va = va[torch.randperm(len(va), generator=gen)[:max(tc.limit // 4, 10)]]
    data_desc = {"source": str(tc.data) if is_torchvision_spec(tc.data) else tc.data.name,
                 "n_train": len(tr), "n_val": len(va),
                 "val_fraction": tc.val_fraction, "split_seed": tc.recipe.seed,
                 "sha256": sha256_file(tc.data) if tc.data.is_file() else None}
    trainer = Trainer(cfg, teacher, ds.subset(tr), ds.subset(va), tc.recipe, tc.out, data_desc,
                      tc.command, init_text=tc.init_text_from, init_image=tc.init_image_from)
    warn_indistinct_labels(trainer.tokenizer(), list(ds.class_names))
    opt_state = trainer.resume(tc.resume) if tc.resume else None
    return TrainResult(trainer.run(opt_state), trainer.model)
