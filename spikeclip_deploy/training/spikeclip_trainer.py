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
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
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
from ..label_sets import distillation_text_set
from ..prompts import CIFAR_TEMPLATES, prompts_for
from ..teachers.base import Teacher
from ..zeroshot import class_weights, student_text_encoder, tokenize
from .distributed import init_distributed
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
    text_datasets: tuple[str, ...] = ("cifar10", "cifar100")
    seed: int = 0
    bf16: bool = False  # bf16 autocast for the image forward pass (no speed-up measured on this CPU)
    max_steps_per_epoch: int | None = None  # for smoke runs


@dataclass
class TrainState:
    stage: str = "text"
    epoch: int = 0
    history: list[dict] = field(default_factory=list)


STAGES = ("text", "distill", "finetune", "done")


def init_text_embeddings(model: SpikeCLIP, teacher: Teacher) -> None:
    """Initialise the student's token table from the teacher's: a copy when the widths match,
    else a PCA projection to ``text_width`` dims."""
    emb = teacher.token_embeddings().float()
    vocab, width = model.text.encode.token.weight.shape
    if emb.shape[0] != vocab:
        raise CheckpointError(f"teacher vocabulary {emb.shape[0]} != model vocab_size {vocab}")
    if emb.shape[1] == width:
        model.text.encode.token.weight.data.copy_(emb)
        return
    centered = emb - emb.mean(0)
    _, _, v = torch.pca_lowrank(centered, q=width, center=False)
    proj = centered @ v[:, :width]
    model.text.encode.token.weight.data.copy_(proj / proj.std() * 0.5)


def teacher_image_features(teacher: Teacher, ds: ImageDataset, tag: str, is_main: bool = True,
                           barrier=lambda: None) -> np.ndarray:
    """``[2, N, D]`` teacher features of the images and their mirrors, computed once and cached
    on disk as a memory-mapped ``.npy`` keyed by teacher, data and preprocessing."""
    key = hashlib.sha256(repr((teacher.describe(), tag, ds.images.shape, "uint8-flip")).encode()
                         + ds.images.numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / "teacher-features" / f"{key}.npy"
    if is_main and not path.exists():
        log.info("computing teacher image features for %d images (cached at %s)", len(ds), path)
        feats = torch.stack([
            torch.cat([teacher.encode_images(v[idx]) for idx in batches(len(ds), 512, None)])
            for v in (ds.images, ds.images.flip(-1))]).numpy().astype(np.float32)
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), feats))
    barrier()
    return np.load(path, mmap_mode="r")


class Trainer:
    def __init__(self, cfg: ModelConfig, teacher: Teacher, train: ImageDataset, val: ImageDataset,
                 recipe: Recipe, out: Path, data_desc: dict, command: str) -> None:
        self.cfg, self.teacher, self.train_ds, self.val_ds = cfg, teacher, train, val
        self.recipe, self.out, self.data_desc, self.command = recipe, Path(out), data_desc, command
        self.gen = seed_everything(recipe.seed)
        self.dist = init_distributed()
        self.model = SpikeCLIP(cfg)
        self.net = self.dist.wrap(self.model)  # what training forwards go through
        self.state = TrainState()
        self.labels = list(train.class_names)

    # -- state -----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out.with_suffix(".train-state.pt")

    def _save_state(self, opt: torch.optim.Optimizer | None) -> None:
        if not self.dist.is_main:
            return
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
                       desc=f"{stage} {self.state.epoch + 1}/{epochs}", leave=False,
                       disable=not self.dist.is_main)
            total = 0.0
            for i, idx in enumerate(bar):
                if i >= steps:
                    break
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(self.state.epoch * steps + i, epochs * steps, *lr)
                # every rank draws the same batch and augmentation seed, then takes its shard
                batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
                loss = step_fn(self.dist.shard(idx), batch_seed)
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
            if self.dist.is_main:
                log.info("%s", record)
                with open(self.out.with_suffix(".metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
            self._save_state(opt)
        self.state.stage = STAGES[STAGES.index(stage) + 1]
        self.state.epoch = 0
        self._save_state(None)

    def _text_step(self, tokens: torch.Tensor, targets: torch.Tensor):
        def step(idx: torch.Tensor, _seed: int) -> torch.Tensor:
            student = F.normalize(self.net(tokens=tokens[idx])[0], dim=-1)
            return (1 - (student * targets[idx]).sum(-1)).mean()
        return step

    def _image_forward(self, idx: torch.Tensor, feats: np.ndarray, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (normalised student features, teacher features, student logit scale)."""
        images, flipped = random_flip(self.train_ds.images[idx], torch.Generator().manual_seed(seed))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.recipe.bf16):
            student, scale = self.net(images=images)
        rows = idx.numpy()
        teacher = torch.where(flipped[:, None], torch.from_numpy(feats[1, rows]),
                              torch.from_numpy(feats[0, rows]))
        return F.normalize(student.float(), dim=-1), teacher, scale

    def run(self, opt_state: dict | None = None) -> dict:
        r = self.recipe
        if self.state.stage == "text" and self.state.epoch == 0 and not self.state.history:
            init_text_embeddings(self.model, self.teacher)
        feats = None
        if self.state.stage == "text":
            texts = distillation_text_set(r.text_datasets)
            known = set(texts)
            texts += [p for lbl in self.labels for p in prompts_for(lbl) if p not in known]
            tokens = torch.from_numpy(tokenize(self.teacher.tokenizer(), texts,
                                               self.cfg.context_length))
            targets = self.teacher.encode_texts(texts)
            self._run_stage("text", r.text_epochs, r.distill_lr, self.model.text.parameters(),
                            self._text_step(tokens, targets), len(texts), r.text_batch_size, opt_state)
            opt_state = None
        if self.state.stage in ("distill", "finetune"):
            feats = teacher_image_features(self.teacher, self.train_ds, self.data_desc.get("sha256", ""),
                                           self.dist.is_main, self.dist.barrier)
        if self.state.stage == "distill":
            def distill(idx: torch.Tensor, seed: int) -> torch.Tensor:
                s, t, _ = self._image_forward(idx, feats, seed)
                return (1 - (s * t).sum(-1)).mean()
            self._run_stage("distill", r.distill_epochs, r.distill_lr, self.model.image.parameters(),
                            distill, len(self.train_ds), r.batch_size, opt_state)
            opt_state = None
        if self.state.stage == "finetune":
            student_w = self.class_weights()  # text encoder frozen: computed once
            teacher_w = self.teacher.class_weights(self.labels, CIFAR_TEMPLATES)

            def finetune(idx: torch.Tensor, seed: int) -> torch.Tensor:
                s, t, scale = self._image_forward(idx, feats, seed)
                logits = scale * s @ student_w.T
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
        if self.dist.is_main:
            save_model(self.out, self.model, meta)
            self.teacher.save_tokenizer(self.out.with_suffix(".tokenizer"))
        self.dist.barrier()
        return meta
