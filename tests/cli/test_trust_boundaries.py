"""No file a user is handed runs code: a malicious pickle planted where each command reads a
file is refused with a one-line error, and its code never runs (its marker file stays absent)."""
from __future__ import annotations

import torch


def test_the_hostile_pickle_runs_code_when_unpickled_unsafely(hostile, tmp_path):
    """The fixture's payload is real: ``weights_only=False`` runs it (so the tests below, which
    see no marker, show that the tool refused the file, not that the payload is inert)."""
    path = hostile.torch_file(tmp_path / "x.pt")
    torch.load(path, weights_only=False)
    assert hostile.ran()


def test_train_resume_from_a_hostile_training_state(cli, hostile, image_folder, tower, tmp_path):
    state = hostile.torch_file(tmp_path / "m.train-state.pt",
                               lambda evil: {"model": {}, "state": {"stage": "text", "x": evil},
                                             "rng": torch.zeros(1), "config": {}})
    r = cli.invoke("train", "--model", "spikeclip-micro", "--teacher", f"offline-minilm:{tower}",
                   "--data", image_folder, "--out", tmp_path / "m.safetensors",
                   "--resume", state, "--text-epochs", "0", "--distill-epochs", "0",
                   "--finetune-epochs", "0")
    cli.clean_failure(r, 1, str(state), "Python object exec", "nothing from the file was run")
    assert not hostile.ran()
