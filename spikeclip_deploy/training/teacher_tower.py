"""Train the offline teacher's image tower LiT-style: frozen MiniLM prompt embeddings of the class
names are the classifier, the tower and a temperature are learned (cross-entropy)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import write_safetensors
from ..data import ImageDataset
from ..progress import progress
from ..prompts import CIFAR_TEMPLATES
from ..teachers.offline import OfflineMiniLMTeacher
from .common import batches, cosine_lr, seed_everything, zero_shot_accuracy
from .views import random_flip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TowerRecipe:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.05
    width: int = 48
    warmup_steps: int = 200
    weight_decay: float = 5e-4
    seed: int = 0
    bf16: bool = True


def random_crop(images: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect") if images.is_floating_point() \
        else F.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(images.dtype)
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train_tower(train: ImageDataset, val: ImageDataset, out: Path, recipe: TowerRecipe,
                command: str) -> dict:
    gen = seed_everything(recipe.seed)
    teacher = OfflineMiniLMTeacher.load(untrained=True, width=recipe.width)
    class_w = teacher.class_weights(list(train.class_names), CIFAR_TEMPLATES)
    tower = teacher.tower.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(tower.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                          weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(train) // recipe.batch_size)
    total, step = recipe.epochs * steps_per_epoch, 0
    for epoch in range(recipe.epochs):
        bar = progress(batches(len(train), recipe.batch_size, gen), total=steps_per_epoch,
                   desc=f"teacher tower epoch {epoch + 1}/{recipe.epochs}", unit="batch")
        for idx in bar:
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, recipe.lr, recipe.lr * 0.01) * min(
                    1.0, (step + 1) / recipe.warmup_steps)
            x, _ = random_flip(random_crop(train.images[idx], gen), gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                feats = tower(x.contiguous(memory_format=torch.channels_last))
            logits = tower.logit_scale.exp() * feats.float() @ class_w.T
            loss = F.cross_entropy(logits, train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
    tower.eval()
    acc = zero_shot_accuracy(tower, class_w, val)
    log.info("teacher tower validation zero-shot top-1: %.4f", acc)
    meta = {"kind": "offline-minilm image tower", "val_zero_shot_top1": acc, "n_val": len(val),
            "recipe": {**recipe.__dict__}, "command": command}
    write_safetensors(out, tower.state_dict(), {"config": {"embed_dim": teacher.embed_dim, "width": recipe.width},
                                                "metadata": meta})
    return meta
