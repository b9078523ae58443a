r"""SpikeCLIP's two training stages (SPEC section 2).

1. Distillation: :math:`\mathcal{L} = 1 - \cos(f_s, f_t)` for texts (labels x templates) and
   images; only the student learns. Teacher image features are computed once per epoch-invariant
   view (image and its mirror) and cached on disk.
2. Dual-loss fine-tuning, text encoder frozen: class weights are the normalised mean of each
   class's normalised prompt features; logits :math:`= s \cos`;
   :math:`\mathcal{L} = \mathrm{CE}(z_s, y) + \lambda\, \mathrm{KL}(p_t \,\|\, p_s)` (batch mean).

Training state (model, optimizer, stage, epoch, RNG) is saved after every epoch next to the
output, so ``resume`` continues exactly where an interruption stopped.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import save_model
from ..config import ModelConfig
from ..data import ImageDataset
from ..errors import CheckpointError
from ..fileutil import atomic_write
from ..nn.spikeclip import SpikeCLIP
from ..paths import cache_dir
from ..prompts import CIFAR_TEMPLATES, distillation_texts, prompts_for
from ..teachers.base import Teacher
from ..zeroshot import class_weights, student_text_encoder, tokenize
from .common import batches, cosine_lr, random_flip, seed_everything, zero_shot_accuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    text_epochs: int = 30
    distill_epochs: int = 2
    finetune_epochs: int = 1
    batch_size: int = 64
    text_batch_size: int = 256
    distill_lr: tuple[float, float] = (5e-3, 5e-4)
    finetune_lr: tuple[float, float] = (5e-4, 1e-5)
    kl_weight: float = 1.0
    seed: int = 0
    bf16: bool = True
    max_steps_per_epoch: int | None = None  # for smoke runs


@dataclass
class TrainState:
    stage: str = "text"
    epoch: int = 0
    history: list[dict] = field(default_factory=list)


STAGES = ("text", "distill", "finetune", "done")


def init_text_embeddings(model: SpikeCLIP, teacher: Teacher) -> None:
    """Initialise the student's token table from the teacher's by PCA to ``text_width`` dims."""
    emb = teacher.token_embeddings().float()
    vocab, width = model.text.encode.token.weight.shape
    if emb.shape[0] != vocab:
        raise CheckpointError(f"teacher vocabulary {emb.shape[0]} != model vocab_size {vocab}")
    centered = emb - emb.mean(0)
    _, _, v = torch.pca_lowrank(centered, q=width, center=False)
    proj = centered @ v[:, :width]
    model.text.encode.token.weight.data.copy_(proj / proj.std() * 0.5)


def teacher_image_features(teacher: Teacher, ds: ImageDataset, tag: str) -> torch.Tensor:
    """``[2, N, D]`` teacher features of the images and their mirrors, cached on disk."""
    key = hashlib.sha256(repr((teacher.describe(), tag, ds.images.shape)).encode()
                         + ds.images[:: max(1, len(ds) // 64)].numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / "teacher-features" / f"{key}.pt"
    if path.exists():
        return torch.load(path)
    feats = torch.stack([
        torch.cat([teacher.encode_images(v[idx]) for idx in batches(len(ds), 512, None)])
        for v in (ds.images, ds.images.flip(-1))])
    atomic_write(path, lambda tmp: torch.save(feats, tmp))
    return feats


class Trainer:
    def __init__(self, cfg: ModelConfig, teacher: Teacher, train: ImageDataset, val: ImageDataset,
                 recipe: Recipe, out: Path, data_desc: dict, command: str) -> None:
        self.cfg, self.teacher, self.train_ds, self.val_ds = cfg, teacher, train, val
        self.recipe, self.out, self.data_desc, self.command = recipe, Path(out), data_desc, command
        self.gen = seed_everything(recipe.seed)
        self.model = SpikeCLIP(cfg)
        self.state = TrainState()
        self.labels = list(train.class_names)

    # -- state -----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out.with_suffix(".train-state.pt")

    def _save_state(self, opt: torch.optim.Optimizer | None) -> None:
        blob = {"model": self.model.state_dict(), "state": asdict(self.state),
                "optimizer": opt.state_dict() if opt else None, "rng": self.gen.get_state(),
                "recipe": asdict(self.recipe), "config": self.cfg.to_dict()}
        atomic_write(self.state_path, lambda tmp: torch.save(blob, tmp))

    def resume(self, path: Path) -> dict | None:
        try:
            blob = torch.load(path, weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise CheckpointError(f"cannot resume from {path}: {exc}") from None
        if blob.get("config") != self.cfg.to_dict():
            raise CheckpointError(f"{path} was trained with another model config; pass the same --model")
        self.model.load_state_dict(blob["model"])
        self.state = TrainState(**blob["state"])
        self.gen.set_state(blob["rng"])
        log.info("resumed at stage %s epoch %d", self.state.stage, self.state.epoch)
        return blob.get("optimizer")

    # -- evaluation ------------------------------------------------------------------------
    def class_weights(self) -> torch.Tensor:
        self.model.eval()
        return class_weights(student_text_encoder(self.model, self.teacher.tokenizer()), self.labels)

    def evaluate(self) -> float:
        self.model.eval()
        return zero_shot_accuracy(self.model.encode_image, self.class_weights(), self.val_ds)

    # -- stages ----------------------------------------------------------------------------
    def _run_stage(self, stage: str, epochs: int, lr: tuple[float, float], params, step_fn,
                   n_items: int, batch_size: int, opt_state: dict | None) -> None:
        opt = torch.optim.Adam(params, lr=lr[0], amsgrad=True)
        if opt_state:
            opt.load_state_dict(opt_state)
        steps = -(-n_items // batch_size)
        if self.recipe.max_steps_per_epoch:
            steps = min(steps, self.recipe.max_steps_per_epoch)
        while self.state.epoch < epochs:
            self.model.train()
            bar = tqdm(batches(n_items, batch_size, self.gen), total=steps, unit="batch",
                       desc=f"{stage} {self.state.epoch + 1}/{epochs}", leave=False)
            total = 0.0
            for i, idx in enumerate(bar):
                if i >= steps:
                    break
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(self.state.epoch * steps + i, epochs * steps, *lr)
                loss = step_fn(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
                bar.set_postfix(loss=f"{loss.item():.4f}")
            self.state.epoch += 1
            record = {"stage": stage, "epoch": self.state.epoch, "loss": total / max(steps, 1)}
            if stage != "text":
                record["val_zero_shot_top1"] = self.evaluate()
            self.state.history.append(record)
            log.info("%s", record)
            self._save_state(opt)
        self.state.stage = STAGES[STAGES.index(stage) + 1]
        self.state.epoch = 0
        self._save_state(None)

    def _text_step(self, tokens: torch.Tensor, targets: torch.Tensor):
        def step(idx: torch.Tensor) -> torch.Tensor:
            return (1 - (self.model.encode_text(tokens[idx]) * targets[idx]).sum(-1)).mean()
        return step

    def _image_forward(self, idx: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, flipped = random_flip(self.train_ds.images[idx], self.gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.recipe.bf16):
            student = self.model.image(self.model.normalize(images))
        teacher = torch.where(flipped[:, None], feats[1, idx], feats[0, idx])
        return F.normalize(student.float(), dim=-1), teacher

    def run(self, opt_state: dict | None = None) -> dict:
        r = self.recipe
        if self.state.stage == "text" and self.state.epoch == 0 and not self.state.history:
            init_text_embeddings(self.model, self.teacher)
        feats = None
        if self.state.stage == "text":
            texts = distillation_texts() + [p for lbl in self.labels for p in prompts_for(lbl)]
            tokens = torch.from_numpy(tokenize(self.teacher.tokenizer(), texts,
                                               self.cfg.context_length))
            targets = self.teacher.encode_texts(texts)
            self._run_stage("text", r.text_epochs, r.distill_lr, self.model.text.parameters(),
                            self._text_step(tokens, targets), len(texts), r.text_batch_size, opt_state)
            opt_state = None
        if self.state.stage in ("distill", "finetune"):
            feats = teacher_image_features(self.teacher, self.train_ds, self.data_desc.get("sha256", ""))
        if self.state.stage == "distill":
            def distill(idx: torch.Tensor) -> torch.Tensor:
                s, t = self._image_forward(idx, feats)
                return (1 - (s * t).sum(-1)).mean()
            self._run_stage("distill", r.distill_epochs, r.distill_lr, self.model.image.parameters(),
                            distill, len(self.train_ds), r.batch_size, opt_state)
            opt_state = None
        if self.state.stage == "finetune":
            student_w = self.class_weights()  # text encoder frozen: computed once
            teacher_w = self.teacher.class_weights(self.labels, CIFAR_TEMPLATES)

            def finetune(idx: torch.Tensor) -> torch.Tensor:
                s, t = self._image_forward(idx, feats)
                logits = self.model.logit_scale.exp() * s @ student_w.T
                p_t = F.softmax(self.teacher.logit_scale * t @ teacher_w.T, dim=-1)
                kl = F.kl_div(F.log_softmax(logits, -1), p_t, reduction="batchmean")
                return F.cross_entropy(logits, self.train_ds.labels[idx]) + r.kl_weight * kl
            params = list(self.model.image.parameters()) + [self.model.logit_scale]
            self._run_stage("finetune", r.finetune_epochs, r.finetune_lr, params, finetune,
                            len(self.train_ds), r.batch_size, opt_state)
        return self.finish()

    def finish(self) -> dict:
        teacher_w = self.teacher.class_weights(self.labels, CIFAR_TEMPLATES)
        metrics = {
            "val_zero_shot_top1_student": self.evaluate(),
            "val_zero_shot_top1_teacher": zero_shot_accuracy(self.teacher.encode_images, teacher_w,
                                                             self.val_ds),
            "n_val": len(self.val_ds), "labels": self.labels, "templates": list(CIFAR_TEMPLATES),
        }
        meta = {"teacher": self.teacher.describe(), "data": self.data_desc,
                "recipe": {**asdict(self.recipe), "command": self.command},
                "metrics": metrics, "history": self.state.history}
        save_model(self.out, self.model, meta)
        tok_dir = self.out.with_suffix(".tokenizer")
        self.teacher.save_tokenizer(tok_dir)
        return meta
