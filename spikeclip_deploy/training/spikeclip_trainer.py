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
3. Optional quantization-aware fine-tuning (same loss; :mod:`.qat_stage`): the chip
   synapses train through the Loihi export's quantizer and end on its grid; the host current is
   rounded to the chip's input grid.

``init_text`` (a checkpoint with the same text encoder config) replaces the student's text
encoder and tokenizer by that checkpoint's; with no text epochs, distillation and fine-tuning
then need the teacher's text tower only for its class weights, which are cached on disk.
``init_image`` (a checkpoint whose image encoder has the same weights' names and shapes) starts
the image encoder from its weights: how a Spikingformer's ``spike_pool`` rewrite fine-tunes from
the original model.

The :class:`Trainer` runs the stages; each part it composes is a module of its own, to read or
swap one at a time: what the student sees (:mod:`.views`), what the teacher gives it
(:mod:`.teacher_targets`), the losses (:mod:`.losses`), where the student starts
(:mod:`.student_init`), the quantization-aware stage (:mod:`.qat_stage`), the training state
and resumption (:mod:`.checkpointing`) and the processes it runs in (:mod:`.distributed`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..config import ModelConfig
from ..data import ImageDataset
from ..errors import ConfigError
from ..label_sets import distillation_text_set
from ..nn.spikeclip import SpikeCLIP
from ..progress import progress
from ..prompts import CIFAR_TEMPLATES, prompts_for
from ..teachers.base import Teacher
from ..zeroshot import class_weights, student_text_encoder, tokenize
from . import qat_stage
from .checkpointing import STAGES, StateFile, TrainState, load_state, reopened
from .common import batches, cosine_lr, seed_everything, zero_shot_accuracy
from .distributed import bf16_supported, init_distributed
from .losses import distillation_loss, finetune_loss, kd_loss
from .precision import image_features, memory_format
from .recipe import AUGMENTATIONS, Recipe
from .student_init import image_encoder_from, init_text_embeddings, text_encoder_from
from .teacher_targets import teacher_image_features, teacher_targets
from .views import training_view

log = logging.getLogger(__name__)


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
            qat_stage.check(self.model, recipe.hardware)
        self.init_text, self._tokenizer = (text_encoder_from(self.model, cfg, init_text)
                                           if init_text else (None, None))
        self.init_image = image_encoder_from(self.model, cfg, init_image) if init_image else None
        self.net = self.dist.wrap(self.model)  # what training forwards go through
        self.state = TrainState()
        self.states = StateFile(self.out)
        self.labels = list(train.class_names)

    def tokenizer(self):
        """The student's tokenizer: the ``init_text`` checkpoint's, else the teacher's."""
        return self._tokenizer if self.init_text else self.teacher.tokenizer()

    # -- state -----------------------------------------------------------------------------
    def _save_state(self, opt: torch.optim.Optimizer | None) -> None:
        if self.dist.is_main:
            self.states.save(self.model, self.state, opt, self.gen, self.recipe, self.cfg)

    def resume(self, path: Path) -> dict | None:
        self.state, opt_state = load_state(path, self.model, self.cfg, self.recipe, self.gen)
        if self.dist.is_main:
            self.states.write_metrics(self.state.history)
        again = reopened(self.state, self.recipe)
        if again:
            self.state = again
            log.info("reopened the run at stage %s epoch %d (more epochs requested)",
                     self.state.stage, self.state.epoch)
            return None
        log.info("resumed at stage %s epoch %d", self.state.stage, self.state.epoch)
        return opt_state

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
                    raise self.states.non_finite(f"the loss became {value}", self.state, stage,
                                                 i + 1)
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

    def _text_step(self, tokens: torch.Tensor, targets: torch.Tensor):
        def step(idx: torch.Tensor, _seed: int) -> torch.Tensor:
            student = F.normalize(self.net(tokens=tokens[idx].to(self.device))[0], dim=-1)
            return distillation_loss(student, targets[idx].to(self.device))
        return step

    def _image_forward(self, idx: torch.Tensor, feats: np.ndarray | None, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (normalised student features, teacher features, student logit scale) of the
        augmented batch; the teacher's from the cache (flips) or computed on the view (crops)."""
        images, flipped = training_view(self.train_ds.images[idx], seed, crop=feats is None)
        teacher = teacher_targets(self.teacher, images, idx, flipped, feats)
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
            qat_stage.enter(self.model, r.hardware)
            self.net = self.dist.wrap(self.model)  # DDP must see the parametrized weights
            if self.amp:
                log.warning("quantization-aware epochs run in float32: bf16 would move the "
                            "weights off the chip's grid")
                self.amp = False
            self._run_stage("qat", r.qat_epochs, r.qat_lr, params(), self._finetune_step(feats),
                            len(self.train_ds), r.batch_size, opt_state,
                            train_mode=qat_stage.train_mode)
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
            return finetune_loss(z_s, z_t, self.train_ds.labels[idx].to(self.device), r)
        return step

    def finish(self) -> dict:
        teacher_w = self.teacher.class_weights(self.labels, CIFAR_TEMPLATES)
        self.model.cpu().image.to(memory_format=torch.contiguous_format)  # as export reads it
        self.device = torch.device("cpu")
        quantization = None
        if self.recipe.qat_epochs > 0:  # the float model ends on the chip's grid
            quantization = qat_stage.settle(self.model, self.recipe.hardware)
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
