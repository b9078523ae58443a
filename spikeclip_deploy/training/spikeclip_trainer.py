r"""SpikeCLIP's two training stages (the paper's recipe).

1. Distillation: :math:`\mathcal{L} = 1 - \cos(f_s, f_t)` for texts (labels x templates) and
   images; only the student learns. Teacher image features are computed once per epoch-invariant
   view (image and its mirror) and cached on disk.
2. Dual-loss fine-tuning, text encoder frozen: class weights are the normalised mean of each
   class's normalised prompt features; logits :math:`= s \cos`;
   :math:`\mathcal{L} = \mathrm{CE}_\epsilon(z_s, y) + \lambda\, \tau^2
   \mathrm{KL}(p_t^\tau \,\|\, p_s^\tau)` (batch mean; :math:`p^\tau = \mathrm{softmax}(z/\tau)`,
   :math:`\epsilon` the label smoothing; the paper's recipe: :math:`\tau = 1, \epsilon = 0`).

Recipe options beyond the paper's: ``logit_distill_weight`` :math:`\mu` adds
:math:`\mu\,\tau^2 \mathrm{KL}(p_t^\tau \| p_s^\tau)` on the zero-shot logits to the image
distillation loss (feature plus logit distillation); ``augment="crop-flip"`` adds pad-4 random
crops to the flips and runs the teacher on the very view the student sees (consistent teaching,
Beyer et al., CVPR 2022), instead of reading cached features of the image and its mirror.
3. Optional quantization-aware fine-tuning (same loss; :mod:`..lowering.qat`): the chip
   synapses train through the Loihi export's quantizer and end on its grid; the host current is
   rounded to the chip's input grid.

``init_text`` (a checkpoint with the same text encoder config) replaces the student's text
encoder and tokenizer by that checkpoint's; with no text epochs, distillation and fine-tuning
then need the teacher's text tower only for its class weights, which are cached on disk.
``init_image`` (a checkpoint whose image encoder has the same weights' names and shapes) starts
the image encoder from its weights: how a Spikingformer's ``spike_pool`` rewrite fine-tunes from
the original model.

Training state (model, optimizer, stage, epoch, step within the epoch, RNG) is saved next to the
output after every epoch and every ``checkpoint_every`` steps, so ``resume`` continues exactly
where an interruption stopped (the epoch's draws are replayed, its finished steps skipped).
Resuming a finished run with a larger epoch count for a stage reopens training at that stage.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import (first_non_finite, load_tokenizer, read_safetensors, resolve_checkpoint,
                          save_model)
from ..config import ModelConfig
from ..data import ImageDataset
from ..errors import CheckpointError, ConfigError
from ..fileutil import atomic_write, sha256_file, write_cache
from ..hardware import load_profile
from ..label_sets import distillation_text_set
from ..lowering import qat
from ..nn.spikeclip import SpikeCLIP
from ..paths import cache_dir
from ..progress import progress
from ..safeload import load_tensors_only
from ..prompts import CIFAR_TEMPLATES, prompts_for
from ..teachers.base import Teacher
from ..zeroshot import class_weights, student_text_encoder, tokenize
from .common import (batches, cosine_lr, distillation_loss, kd_loss, random_crop, random_flip,
                     seed_everything, zero_shot_accuracy)
from .distributed import Dist, bf16_supported, init_distributed
from .precision import image_features, memory_format
from .recipe import AUGMENTATIONS, Recipe

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    stage: str = "text"
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    step: int = 0  # steps done in the current epoch (mid-epoch checkpoints)
    loss_sum: float = 0.0
    epoch_rng: Any = None  # generator state at the start of the current epoch, to replay it


STAGES = ("text", "distill", "finetune", "qat", "done")
CROP_PAD = 4  # pixels of zero padding a side before a random crop
TEXT_FIELDS = ("text_arch", "vocab_size", "context_length", "text_width", "text_hidden",
               "embed_dim", "time_steps", "tau", "v_threshold", "tdw")  # define the text encoder


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


def teacher_image_features(teacher: Teacher, ds: ImageDataset, tag: str, dist: Dist) -> np.ndarray:
    """``[2, N, D]`` teacher features of the images and their mirrors, computed once and cached
    on disk as a memory-mapped ``.npy`` keyed by teacher, data and preprocessing."""
    key = hashlib.sha256(repr((teacher.describe(), tag, ds.images.shape, "uint8-flip")).encode()
                         + ds.images.numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / "teacher-features" / f"{key}.npy"
    if dist.is_main and not path.exists():
        log.info("computing teacher image features for %d images (cached at %s)", len(ds), path)
        feats = torch.stack([
            torch.cat([teacher.encode_images(v[idx]) for idx in batches(len(ds), 512, None)])
            for v in (ds.images, ds.images.flip(-1))]).numpy().astype(np.float32)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, feats)
        if dist.world > 1:  # the other ranks read the file: it must be written
            atomic_write(path, write)
        elif not write_cache(path, write, "teacher feature"):
            return feats  # kept in memory
    dist.barrier()
    return np.load(path, mmap_mode="r")


class Trainer:
    def __init__(self, cfg: ModelConfig, teacher: Teacher, train: ImageDataset, val: ImageDataset,
                 recipe: Recipe, out: Path, data_desc: dict, command: str,
                 init_text: str | None = None, init_image: str | None = None) -> None:
        self.cfg, self.teacher, self.train_ds, self.val_ds = cfg, teacher, train, val
        self.recipe, self.out, self.data_desc, self.command = recipe, Path(out), data_desc, command
        if recipe.augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation {recipe.augment!r}; pick one of "
                              f"{', '.join(AUGMENTATIONS)}")
        self.gen = seed_everything(recipe.seed)
        self.dist = init_distributed(recipe.device)
        self.device = self.dist.device(recipe.device)
        self.amp = recipe.bf16 and bf16_supported(self.device)
        self.model = SpikeCLIP(cfg).to(self.device)
        self.model.image.to(memory_format=memory_format(recipe.channels_last))
        if recipe.qat_epochs > 0:  # fail now, not after hours of earlier stages
            qat.check_supported(self.model, load_profile(recipe.hardware))
        self.init_text = self._init_text(init_text) if init_text else None
        self.init_image = self._init_image(init_image) if init_image else None
        self.net = self.dist.wrap(self.model)  # what training forwards go through
        self.state = TrainState()
        self.labels = list(train.class_names)

    def _init_text(self, name: str) -> dict:
        """Load checkpoint ``name``'s text encoder into the student; -> its description."""
        path = resolve_checkpoint(name)
        state, card = read_safetensors(path)
        src = card.get("config", {})
        differ = [f for f in TEXT_FIELDS if src.get(f) != getattr(self.cfg, f)]
        if differ:
            raise CheckpointError(f"{path} has another text encoder than '{self.cfg.name}' "
                                  f"(config fields {', '.join(differ)} differ)")
        text = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
        self.model.text.load_state_dict(text)
        self._tokenizer = load_tokenizer(path)
        return {"checkpoint": path.name, "sha256": sha256_file(path)}

    def _init_image(self, name: str) -> dict:
        """Load checkpoint ``name``'s image encoder into the student; -> its description."""
        path = resolve_checkpoint(name)
        state, _ = read_safetensors(path)
        image = {k[len("image."):]: v for k, v in state.items() if k.startswith("image.")}
        want = self.model.image.state_dict()
        missing = sorted(set(want) ^ set(image))
        shapes = [k for k in want if k in image and image[k].shape != want[k].shape]
        if missing or shapes:
            raise CheckpointError(f"{path}'s image encoder does not fit '{self.cfg.name}': "
                                  f"{len(missing)} weights differ by name "
                                  f"({', '.join(missing[:3]) or 'none'}), {len(shapes)} by shape "
                                  f"({', '.join(shapes[:3]) or 'none'}); pick a checkpoint of the "
                                  f"same architecture")
        self.model.image.load_state_dict(image)
        return {"checkpoint": path.name, "sha256": sha256_file(path)}

    def tokenizer(self):
        """The student's tokenizer: the ``init_text`` checkpoint's, else the teacher's."""
        return self._tokenizer if self.init_text else self.teacher.tokenizer()

    # -- state -----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out.with_suffix(".train-state.pt")

    def _save_state(self, opt: torch.optim.Optimizer | None) -> None:
        if not self.dist.is_main:
            return
        weights = qat.plain_state_dict(self.model)
        found = first_non_finite(weights)
        if found:
            raise self._non_finite(f"weight {found[0]} holds {found[1]} NaN or infinite "
                                   f"value(s)", self.state.stage, self.state.step)
        blob = {"model": weights, "state": asdict(self.state),
                "optimizer": opt.state_dict() if opt else None, "rng": self.gen.get_state(),
                "recipe": asdict(self.recipe), "config": self.cfg.to_dict()}
        atomic_write(self.state_path, lambda tmp: torch.save(blob, tmp))
        self._write_metrics()

    def _write_metrics(self) -> None:
        """``NAME.metrics.jsonl``: one line per finished epoch, rewritten from the saved state's
        history (never appended), so a kill at any moment cannot leave it out of step."""
        lines = "".join(json.dumps(record) + "\n" for record in self.state.history)
        atomic_write(self.out.with_suffix(".metrics.jsonl"), lambda tmp: tmp.write_text(lines))

    def resume(self, path: Path) -> dict | None:
        hint = "pass the NAME.train-state.pt that `train` writes beside its --out checkpoint"
        blob = load_tensors_only(path, "a training state", hint)
        fields = ("model", "state", "rng", "config")
        missing = [k for k in fields if k not in blob] if isinstance(blob, dict) else list(fields)
        if missing:
            raise CheckpointError(f"cannot resume from {path}: a training state needs the "
                                  f"field(s) {', '.join(missing)}; {hint}")
        if blob.get("config") != self.cfg.to_dict():
            raise CheckpointError(f"{path} was trained with another model config; pass the same --model")
        self.model.load_state_dict(blob["model"])
        self.state = TrainState(**blob["state"])
        saved = blob.get("recipe", {})
        exact = ("batch_size", "text_batch_size", "seed", "max_steps_per_epoch")
        changed = [k for k in exact if k in saved and saved[k] != getattr(self.recipe, k)]
        if self.state.step and changed:
            raise CheckpointError(f"{path} stopped mid-epoch with other {', '.join(changed)}; "
                                  f"resume with the same values to continue the epoch exactly")
        self.gen.set_state(blob["rng"])
        if self.dist.is_main:
            self._write_metrics()
        if self._reopen():
            log.info("reopened the run at stage %s epoch %d (more epochs requested)",
                     self.state.stage, self.state.epoch)
            return None
        log.info("resumed at stage %s epoch %d", self.state.stage, self.state.epoch)
        return blob.get("optimizer")

    def _epochs(self, stage: str) -> int:
        return getattr(self.recipe, f"{stage}_epochs")

    def _reopen(self) -> bool:
        """Go back to the first finished stage now given more epochs than its history shows."""
        for stage in STAGES[:STAGES.index(self.state.stage)]:
            done = sum(1 for h in self.state.history if h["stage"] == stage)
            if self._epochs(stage) > done:
                self.state = TrainState(stage=stage, epoch=done, history=self.state.history)
                return True
        return False

    # -- evaluation ------------------------------------------------------------------------
    def class_weights(self) -> torch.Tensor:
        self.model.eval()
        return class_weights(student_text_encoder(self.model, self.tokenizer()),
                             self.labels).to(self.device)

    def evaluate(self) -> float:
        self.model.eval()
        return zero_shot_accuracy(lambda x: self.model.encode_image(x.to(self.device)).cpu(),
                                  self.class_weights().cpu(), self.val_ds)

    # -- stages ----------------------------------------------------------------------------
    def _run_stage(self, stage: str, epochs: int, lr: tuple[float, float], params, step_fn,
                   n_items: int, batch_size: int, opt_state: dict | None,
                   train_mode=None) -> None:
        opt = torch.optim.Adam(params, lr=lr[0], amsgrad=True)
        if opt_state:
            opt.load_state_dict(opt_state)
        steps = -(-n_items // batch_size)
        if self.recipe.max_steps_per_epoch:
            steps = min(steps, self.recipe.max_steps_per_epoch)
        every = self.recipe.checkpoint_every
        while self.state.epoch < epochs:
            self.model.train()
            if train_mode:
                train_mode(self.model)
            if self.state.step == 0:
                self.state.epoch_rng = self.gen.get_state()
            else:  # resumed mid-epoch: replay this epoch's draws, skip the steps already done
                self.gen.set_state(self.state.epoch_rng)
                log.info("resuming %s epoch %d at step %d", stage, self.state.epoch + 1,
                         self.state.step)
            bar = progress(batches(n_items, batch_size, self.gen), total=steps,  # items/s
                           unit="text" if stage == "text" else "img", unit_scale=batch_size,
                           desc=f"{stage} {self.state.epoch + 1}/{epochs}",
                           disable=not self.dist.is_main)
            for i, idx in enumerate(bar):
                if i >= steps:
                    break
                # every rank draws the same batch and augmentation seed, then takes its shard
                batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
                if i < self.state.step:
                    continue
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(self.state.epoch * steps + i, epochs * steps, *lr)
                loss = step_fn(self.dist.shard(idx), batch_seed)
                value = loss.item()
                if not math.isfinite(value):
                    raise self._non_finite(f"the loss became {value}", stage, i + 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.state.loss_sum += value
                self.state.step = i + 1
                bar.set_postfix(loss=f"{value:.4f}")
                if every and self.state.step % every == 0 and self.state.step < steps:
                    self._save_state(opt)
            self.state.epoch += 1
            record = {"stage": stage, "epoch": self.state.epoch,
                      "loss": self.state.loss_sum / max(steps, 1)}
            self.state.step, self.state.loss_sum, self.state.epoch_rng = 0, 0.0, None
            if stage != "text":
                record["val_zero_shot_top1"] = self.evaluate()
            self.state.history.append(record)
            if self.dist.is_main:
                log.info("%s", record)
            self._save_state(opt)
        self.state.stage = STAGES[STAGES.index(stage) + 1]
        self.state.epoch = 0
        self._save_state(None)

    def _non_finite(self, what: str, stage: str, step: int) -> ConfigError:
        """The error that stops training before ``what`` (a NaN loss, an infinite weight)
        reaches the training state: the one on disk stays the last good one."""
        option = f"--{'distill' if stage == 'text' else stage}-lr"
        fix = (f"{self.state_path} holds the last good state: lower {option} (or the loss "
               f"weights) and --resume from it" if self.state_path.is_file() else
               f"lower {option} (or the loss weights) and train again")
        return ConfigError(f"training stopped: {what} at {stage} epoch {self.state.epoch + 1}, "
                           f"step {step}; nothing was saved from it: {fix}")

    def _text_step(self, tokens: torch.Tensor, targets: torch.Tensor):
        def step(idx: torch.Tensor, _seed: int) -> torch.Tensor:
            student = F.normalize(self.net(tokens=tokens[idx].to(self.device))[0], dim=-1)
            return distillation_loss(student, targets[idx].to(self.device))
        return step

    def _image_forward(self, idx: torch.Tensor, feats: np.ndarray | None, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (normalised student features, teacher features, student logit scale) of the
        augmented batch; the teacher's from the cache (flips) or computed on the view (crops)."""
        gen = torch.Generator().manual_seed(seed)
        images, flipped = random_flip(self.train_ds.images[idx], gen)
        if feats is None:  # crop-flip: the teacher sees the student's view
            images = random_crop(images, CROP_PAD, gen)
            with torch.no_grad():
                teacher = self.teacher.encode_images(images).float()
        else:
            rows = idx.numpy()
            teacher = torch.where(flipped[:, None], torch.from_numpy(feats[1, rows]),
                                  torch.from_numpy(feats[0, rows]))
        student, scale = image_features(self.net, images, self.device, self.amp,
                                        self.recipe.channels_last)
        return student, teacher.to(self.device), scale

    def run(self, opt_state: dict | None = None) -> dict:
        r = self.recipe
        if (self.state.stage == "text" and self.state.epoch == 0 and self.state.step == 0
                and not self.state.history and not self.init_text):
            init_text_embeddings(self.model, self.teacher)
        feats = None
        if self.state.stage == "text" and r.text_epochs == 0:  # no teacher text features needed
            self.state.stage = "distill"
        if self.state.stage == "text":
            texts = distillation_text_set(r.text_datasets)
            known = set(texts)
            texts += [p for lbl in self.labels for p in prompts_for(lbl) if p not in known]
            tokens = torch.from_numpy(tokenize(self.tokenizer(), texts,
                                               self.cfg.context_length))
            targets = self.teacher.text_features(texts)
            self._run_stage("text", r.text_epochs, r.distill_lr, self.model.text.parameters(),
                            self._text_step(tokens, targets), len(texts), r.text_batch_size, opt_state)
            opt_state = None
        if self.state.stage in ("distill", "finetune", "qat") and r.augment == "flip":
            feats = teacher_image_features(self.teacher, self.train_ds,
                                           self.data_desc.get("sha256", ""), self.dist)
        if self.state.stage == "distill":
            self._run_stage("distill", r.distill_epochs, r.distill_lr, self.model.image.parameters(),
                            self._distill_step(feats), len(self.train_ds), r.batch_size, opt_state)
            opt_state = None
        params = lambda: list(self.model.image.parameters()) + [self.model.logit_scale]  # noqa: E731
        if self.state.stage == "finetune":
            self._run_stage("finetune", r.finetune_epochs, r.finetune_lr, params(),
                            self._finetune_step(feats), len(self.train_ds), r.batch_size, opt_state)
            opt_state = None
        if self.state.stage == "qat" and r.qat_epochs > 0:
            fp = load_profile(r.hardware).fixed_point
            qat.snap_to_grid(self.model.text, fp)  # frozen text encoder: quantized as is
            qat.quantize_inputs(self.model, fp)
            qat.enable(self.model.image, fp)
            self.net = self.dist.wrap(self.model)  # DDP must see the parametrized weights
            if self.amp:
                log.warning("quantization-aware epochs run in float32: bf16 would move the "
                            "weights off the chip's grid")
                self.amp = False
            self._run_stage("qat", r.qat_epochs, r.qat_lr, params(), self._finetune_step(feats),
                            len(self.train_ds), r.batch_size, opt_state,
                            train_mode=qat.freeze_batchnorm)
        elif self.state.stage == "qat":
            self.state.stage = "done"
        return self.finish()

    def _heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's and the teacher's zero-shot class weights, text encoders frozen
        (computed once per stage)."""
        return (self.class_weights(),
                self.teacher.class_weights(self.labels, CIFAR_TEMPLATES).to(self.device))

    def _logits(self, heads: tuple[torch.Tensor, torch.Tensor], s: torch.Tensor, t: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (student, teacher) zero-shot logits, each its model's logit scale times cosines."""
        return scale * s @ heads[0].T, self.teacher.logit_scale * t @ heads[1].T

    def _distill_step(self, feats: np.ndarray | None):
        """1 - cos against the teacher's features, plus the logits' KD term if asked."""
        r = self.recipe
        heads = self._heads() if r.logit_distill_weight else None

        def step(idx: torch.Tensor, seed: int) -> torch.Tensor:
            s, t, scale = self._image_forward(idx, feats, seed)
            loss = distillation_loss(s, t)
            if heads:
                loss = loss + r.logit_distill_weight * kd_loss(
                    *self._logits(heads, s, t, scale), r.kd_temperature)
            return loss
        return step

    def _finetune_step(self, feats: np.ndarray | None):
        """CE (label-smoothed if asked) + lambda KL against the teacher."""
        heads, r = self._heads(), self.recipe

        def step(idx: torch.Tensor, seed: int) -> torch.Tensor:
            s, t, scale = self._image_forward(idx, feats, seed)
            z_s, z_t = self._logits(heads, s, t, scale)
            labels = self.train_ds.labels[idx].to(self.device)
            ce = F.cross_entropy(z_s, labels, label_smoothing=r.label_smoothing)
            return ce + r.kl_weight * kd_loss(z_s, z_t, r.kd_temperature)
        return step

    def finish(self) -> dict:
        teacher_w = self.teacher.class_weights(self.labels, CIFAR_TEMPLATES)
        self.model.cpu().image.to(memory_format=torch.contiguous_format)  # as export reads it
        self.device = torch.device("cpu")
        quantization = None
        if self.recipe.qat_epochs > 0:  # the float model ends on the chip's grid
            fp = load_profile(self.recipe.hardware).fixed_point
            for encoder in (self.model.text, self.model.image):
                qat.snap_to_grid(encoder, fp)
            qat.quantize_inputs(self.model, fp)
            quantization = {"hardware": self.recipe.hardware, "input_grid": True,
                            "grid_error": max(qat.grid_error(e, fp)
                                              for e in (self.model.text, self.model.image))}
            if quantization["grid_error"] > 1e-3:
                log.warning("a chip layer did not settle on the quantization grid (error %.3g "
                            "mantissa steps); the export will re-round it",
                            quantization["grid_error"])
        metrics = {
            "val_zero_shot_top1_student": self.evaluate(),
            "val_zero_shot_top1_teacher": zero_shot_accuracy(self.teacher.encode_images, teacher_w,
                                                             self.val_ds),
            "n_val": len(self.val_ds), "labels": self.labels, "templates": list(CIFAR_TEMPLATES),
        }
        if quantization:
            metrics["quantization_aware"] = quantization
        meta = {"teacher": self.teacher.describe(), "data": self.data_desc,
                **({"init_text_from": self.init_text} if self.init_text else {}),
                **({"init_image_from": self.init_image} if self.init_image else {}),
                "recipe": {**asdict(self.recipe), "command": self.command},
                "metrics": metrics, "history": self.state.history}
        if self.dist.is_main:
            save_model(self.out, self.model, meta)
            self.tokenizer().save_pretrained(str(self.out.with_suffix(".tokenizer")))
        self.dist.barrier()
        return meta
