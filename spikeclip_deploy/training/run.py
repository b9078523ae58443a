"""One entry point for ``spikeclip-deploy train``: data, teacher, trainer, resume."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..fileutil import sha256_file
from ..config import get_config
from ..data import load_dataset, stratified_split
from ..errors import ConfigError
from ..teachers import load_teacher
from .spikeclip_trainer import Recipe, Trainer


@dataclass(frozen=True)
class TrainConfig:
    model: str
    teacher: str
    data: Path
    out: Path
    resume: Path | None = None
    seed: int = 0
    val_fraction: float = 0.1
    text_epochs: int = 30
    distill_epochs: int = 2
    finetune_epochs: int = 1
    batch_size: int = 64
    kl_weight: float = 1.0
    bf16: bool = False
    text_datasets: tuple[str, ...] = ("cifar10", "cifar100")
    max_steps_per_epoch: int | None = None
    limit: int | None = None
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
    ds = load_dataset(tc.data, cfg.image_size)
    tr, va = stratified_split(ds.labels, tc.val_fraction, tc.seed)
    if tc.limit:
        gen = torch.Generator().manual_seed(tc.seed)
        tr = tr[torch.randperm(len(tr), generator=gen)[:tc.limit]]
        va = va[torch.randperm(len(va), generator=gen)[:max(tc.limit // 4, 10)]]
    data_desc = {"source": tc.data.name, "n_train": len(tr), "n_val": len(va),
                 "val_fraction": tc.val_fraction, "split_seed": tc.seed,
                 "sha256": sha256_file(tc.data) if tc.data.is_file() else None}
    recipe = Recipe(text_epochs=tc.text_epochs, distill_epochs=tc.distill_epochs,
                    finetune_epochs=tc.finetune_epochs, batch_size=tc.batch_size,
                    kl_weight=tc.kl_weight, seed=tc.seed, bf16=tc.bf16,
                    text_datasets=tc.text_datasets,
                    max_steps_per_epoch=tc.max_steps_per_epoch)
    trainer = Trainer(cfg, teacher, ds.subset(tr), ds.subset(va), recipe, tc.out, data_desc,
                      tc.command)
    opt_state = trainer.resume(tc.resume) if tc.resume else None
    return TrainResult(trainer.run(opt_state), trainer.model)
