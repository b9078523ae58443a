"""Both training stages on a tiny ImageFolder with the offline teacher (untrained tower)."""
import json

import pytest
import torch

from spikeclip_deploy.checkpoint import load_model, write_safetensors
from spikeclip_deploy.training.run import TrainConfig, run_training


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    from spikeclip_deploy.teachers.offline import ImageTower

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tower") / "tower.safetensors"
    write_safetensors(path, ImageTower(width=8).state_dict(), {"config": {"width": 8}, "metadata": {}})
    return path


def test_train_both_stages_then_resume(image_folder, tower, tmp_path):
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(model="spikeclip-micro", teacher=f"offline-minilm:{tower}", data=image_folder,
                      out=out, val_fraction=0.25, text_epochs=1, distill_epochs=1,
                      finetune_epochs=1, batch_size=8, max_steps_per_epoch=2)
    meta = run_training(cfg).meta
    model, card, _ = load_model(str(out))
    assert [h["stage"] for h in card["metadata"]["history"]] == ["text", "distill", "finetune"]
    assert 0.0 <= meta["metrics"]["val_zero_shot_top1_student"] <= 1.0
    assert out.with_suffix(".tokenizer").is_dir()
    state = out.with_suffix(".train-state.pt")
    assert state.exists()
    # resume from the finished state with one more fine-tuning epoch: only that epoch runs
    more = TrainConfig(**{**cfg.__dict__, "finetune_epochs": 2, "resume": state})
    blob = torch.load(state, weights_only=False)
    blob["state"] = {"stage": "finetune", "epoch": 1, "history": blob["state"]["history"]}
    torch.save(blob, state)
    meta2 = run_training(more).meta
    stages = [(h["stage"], h["epoch"]) for h in meta2["history"]]
    assert stages == [("text", 1), ("distill", 1), ("finetune", 1), ("finetune", 2)]
    assert json.loads(out.with_suffix(".json").read_text())["sha256"]


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
           "--batch-size", "8", "--max-steps-per-epoch", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint ->") == 2  # both ranks finish; rank 0 alone writes
    _, card, _ = load_model(str(out))
    assert [h["stage"] for h in card["metadata"]["history"]] == ["text", "distill", "finetune"]
