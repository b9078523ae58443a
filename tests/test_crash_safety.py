"""``kill -9`` at several moments, then a rerun: no stray files, results complete or absent,
resumed training equal to an uninterrupted run, the metrics log in step with the state."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.export import ExportConfig, export_model
from spikeclip_deploy.exchange.manifest import load_export
from spikeclip_deploy.training.recipe import Recipe
from spikeclip_deploy.training.run import TrainConfig, run_training

CLI = [sys.executable, "-m", "spikeclip_deploy.cli"]


def kill_when(cmd, ready, env=None, timeout=300):
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` holds (or let it finish)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    return proc.returncode


def hidden(folder, prefix=""):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("." + prefix))


def staging(parent, name):
    return [p for p in parent.glob(f".{name}.tmp-*")]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["staging", "nir", "onnx"])
def test_export_killed_then_rerun(micro_ckpt, tmp_path, moment):
    out = tmp_path / "exp"

    def ready():
        dirs = staging(tmp_path, "exp")
        if moment == "staging":
            return bool(dirs)
        pattern = "chip/*.nir" if moment == "nir" else "host/*.onnx"
        return any(any(d.glob(pattern)) for d in dirs)

    rc = kill_when(CLI + ["export", "--target", "cpu", "--model", str(micro_ckpt), "--out",
                          str(out)], ready)
    assert rc == -signal.SIGKILL
    assert not out.exists()  # killed before the rename: nothing published
    assert staging(tmp_path, "exp"), "the kill should have left the staging dir behind"
    export_model(ExportConfig(model=str(micro_ckpt), target="cpu", out=out))
    assert load_export(out)["target"] == "cpu"
    assert hidden(tmp_path) == []


def test_a_force_replace_killed_between_its_renames_is_restored(micro_ckpt, micro_exports,
                                                                tmp_path):
    """The moved-aside old export is put back by the next run, which then needs --force."""
    import shutil

    stale = tmp_path / ".exp.old-abc"
    stale.mkdir()
    shutil.copytree(micro_exports["loihi"], stale / "x")
    with pytest.raises(ExportError, match="already exists"):
        export_model(ExportConfig(model=str(micro_ckpt), target="cpu", out=tmp_path / "exp"))
    assert load_export(tmp_path / "exp")["target"] == "loihi" and hidden(tmp_path) == []


@pytest.mark.slow
def test_verify_killed_then_rerun(micro_ckpt, image_folder, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    report = tmp_path / "v.json"
    cmd = CLI + ["verify", "--target", "cpu", "--model", str(micro_ckpt), "--data",
                 str(image_folder), "--limit", "2", "--json", str(report)]
    env = {"TMPDIR": str(tmp)}
    rc = kill_when(cmd, lambda: any(tmp.glob("spikeclip-verify-*/cpu/manifest.json")), env)
    assert rc == -signal.SIGKILL and not report.exists()
    assert list(tmp.glob("spikeclip-verify-*"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp.glob("spikeclip-*")) == []  # (other libraries keep their caches there)
    assert json.loads(report.read_text())["n"] == 2


RECIPE = Recipe(text_epochs=1, distill_epochs=2, finetune_epochs=1, batch_size=4,
                text_batch_size=256, max_steps_per_epoch=3, checkpoint_every=1)


def train_args(tower, image_folder, out, recipe=RECIPE):
    return ["train", "--model", "spikeclip-micro", "--teacher", f"offline-minilm:{tower}",
            "--data", str(image_folder), "--out", str(out), "--val-fraction", "0.25",
            *[a for k in ("text_epochs", "distill_epochs", "finetune_epochs", "batch_size",
                          "text_batch_size", "max_steps_per_epoch", "checkpoint_every")
              for a in (f"--{k.replace('_', '-')}", str(getattr(recipe, k)))]]


def assert_log_matches_state(out):
    _, card, _ = load_model(str(out))
    lines = out.with_suffix(".metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln) for ln in lines] == card["metadata"]["history"]


@pytest.mark.slow
def test_train_killed_then_resumed_equals_uninterrupted(tower, image_folder, tmp_path):
    a, b = tmp_path / "a" / "m.safetensors", tmp_path / "b" / "m.safetensors"
    base = dict(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                val_fraction=0.25, recipe=RECIPE)
    run_training(TrainConfig(out=a, **base))
    state = b.with_suffix(".train-state.pt")

    def in_distillation():  # a mid-epoch state of the image stage has been saved
        if not state.exists():
            return False
        try:
            s = torch.load(state, weights_only=True)["state"]
        except Exception:  # noqa: BLE001 - being replaced right now; look again
            return False
        return s["stage"] == "distill" and s["step"] >= 1

    b.parent.mkdir()
    rc = kill_when(CLI + train_args(tower, image_folder, b), in_distillation)
    assert rc == -signal.SIGKILL and not b.exists()
    run_training(TrainConfig(out=b, resume=state, **base))
    ma, _, _ = load_model(str(a))
    mb, _, _ = load_model(str(b))
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert hidden(b.parent) == []
    assert_log_matches_state(b)


def test_metrics_log_never_duplicates_an_epoch(tower, image_folder, tmp_path, monkeypatch):
    """Killed while saving the state after an epoch: the resumed run repeats that epoch, and
    the log still holds each finished epoch once (it was appended before the save)."""
    from spikeclip_deploy.training.spikeclip_trainer import Trainer

    out = tmp_path / "m.safetensors"
    recipe = replace(RECIPE, text_epochs=0, finetune_epochs=0, checkpoint_every=0)
    base = dict(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                val_fraction=0.25, recipe=recipe)
    save = Trainer._save_state

    def killed_at_second_epoch_end(self, opt):
        if len(self.state.history) == 2 and self.state.stage == "distill":
            raise KeyboardInterrupt
        save(self, opt)

    monkeypatch.setattr(Trainer, "_save_state", killed_at_second_epoch_end)
    with pytest.raises(KeyboardInterrupt):
        run_training(TrainConfig(out=out, **base))
    monkeypatch.setattr(Trainer, "_save_state", save)
    run_training(TrainConfig(out=out, resume=out.with_suffix(".train-state.pt"), **base))
    assert_log_matches_state(out)
    _, card, _ = load_model(str(out))
    assert [(h["stage"], h["epoch"]) for h in card["metadata"]["history"]] == \
        [("distill", 1), ("distill", 2)]


def test_unwritable_cache_trains_without_it(tower, image_folder, tmp_path, monkeypatch):
    """A cache folder that cannot be written: teacher features stay in memory, with a warning."""
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPIKECLIP_CACHE", str(blocked))
    recipe = replace(RECIPE, text_epochs=0, distill_epochs=1, finetune_epochs=0)
    run_training(TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}",
                             data=image_folder, out=tmp_path / "m.safetensors", val_fraction=0.25,
                             recipe=recipe))
    assert blocked.read_text() == "a file where the cache folder should be"
