"""Bad input through the CLI: a one-line error naming the file/option before any work, no
traceback, nothing written or changed."""
import json
import tarfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from spikeclip_deploy.cli import main
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.paths import PROJECT_ROOT


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def clean_failure(r, exit_code, *messages):
    assert r.exit_code == exit_code, r.output
    assert "Traceback" not in r.output and r.exc_info[0] is SystemExit, r.output
    for m in messages:
        assert m in r.output, r.output


def snapshot(folder):
    """Every file under ``folder`` with its bytes, to show that nothing was written or changed."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TRAIN = ["train", "--model", "spikeclip-micro"]
VERIFY = ["verify", "--target", "cpu"]


RANGES = [
    (TRAIN, "--batch-size", 0), (TRAIN, "--text-batch-size", 0), (TRAIN, "--text-epochs", -1),
    (TRAIN, "--distill-epochs", -1), (TRAIN, "--finetune-epochs", -1), (TRAIN, "--qat-epochs", -1),
    (TRAIN, "--limit", 0), (TRAIN, "--max-steps-per-epoch", 0), (TRAIN, "--checkpoint-every", -1),
    (TRAIN, "--val-fraction", 0), (TRAIN, "--val-fraction", 1), (TRAIN, "--seed", -1),
    (TRAIN, "--kl-weight", -0.5), (TRAIN, "--distill-lr", "0,1e-4"),
    (TRAIN, "--finetune-lr", "1e-4,-1"), (TRAIN, "--qat-lr", "nan,1e-5"),
    (["train-teacher"], "--epochs", -1), (["train-teacher"], "--batch-size", 0),
    (["train-teacher"], "--lr", 0), (["train-teacher"], "--width", 0),
    (["train-teacher"], "--val-fraction", 1.5), (["train-teacher"], "--seed", -1),
    (VERIFY, "--limit", 0), (VERIFY, "--noisy-labels", 0), (VERIFY, "--synonyms", 1.5),
    (VERIFY, "--synonyms", -0.1), (["energy"], "--limit", 0),
]


@pytest.mark.parametrize("command, option, value", RANGES,
                         ids=[f"{c[0]} {o}={v}" for c, o, v in RANGES])
def test_numeric_options_are_range_checked_first(command, option, value, tmp_path):
    """A usage error (exit 2) while parsing, before the command reads --data (missing here)."""
    out = ["--out", tmp_path / "m.safetensors"] if command[0].startswith("train") else []
    r = invoke(*command, "--data", tmp_path / "no-data", *out, option, value)
    clean_failure(r, 2, f"Invalid value for '{option}'")
    assert not list(tmp_path.iterdir())


def test_config_file_values_are_range_checked(tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"batch-size": 0}))
    r = invoke(*TRAIN, "--config", cfg, "--data", tmp_path / "no-data",
               "--out", tmp_path / "m.safetensors")
    clean_failure(r, 2, "Invalid value for '--batch-size'", "0 is not in the range x>=1")
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.json"]


def test_truncated_tarball(image_folder, tmp_path):
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(image_folder, arcname="train")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    before = snapshot(tmp_path)
    r = invoke("train-teacher", "--data", cut, "--out", tmp_path / "t.safetensors")
    clean_failure(r, 1, f"cannot extract {cut}", "truncated or corrupt")
    assert "Aborted!" not in r.output and snapshot(tmp_path) == before


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda card: {**card, "metadata": ["x"]}, "field 'metadata' must be a JSON object",
                 id="metadata-list"),
    pytest.param(lambda card: {**card, "config": {**card["config"], "time_steps": "4"}},
                 "field 'time_steps' must be an integer", id="time_steps-str"),
])
def test_export_of_a_wrong_card(ckpt_with_card, tmp_path, edit, message):
    bad = ckpt_with_card(edit)
    before = snapshot(tmp_path)
    r = invoke("export", "--target", "cpu", "--model", bad, "--out", tmp_path / "exp")
    clean_failure(r, 1, str(bad.with_suffix(".json")), message)
    assert snapshot(tmp_path) == before and not (tmp_path / "exp").exists()


def test_export_with_a_profile_without_limits(micro_ckpt, tmp_path, monkeypatch):
    profile = json.loads((PROJECT_ROOT / "hardware" / "loihi2.json").read_text())
    del profile["limits"]
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "loihi2.json").write_text(json.dumps(profile))
    monkeypatch.setenv("SPIKECLIP_HARDWARE", str(tmp_path / "hw"))
    load_profile.cache_clear()
    before = snapshot(tmp_path)
    try:
        r = invoke("export", "--target", "loihi", "--model", micro_ckpt, "--out", tmp_path / "exp")
    finally:
        load_profile.cache_clear()
    clean_failure(r, 1, str(tmp_path / "hw" / "loihi2.json"), "limits.neurons_per_chip")
    assert snapshot(tmp_path) == before and not (tmp_path / "exp").exists()


def _torch_file(obj):
    def write(path):
        torch.save(obj, path)
    return write


@pytest.mark.parametrize("write, message", [
    pytest.param(lambda p: p.write_text("not a training state\n"), "not a readable training state",
                 id="text"),
    pytest.param(lambda p: p.write_bytes(b""), "not a readable training state", id="empty"),
    pytest.param(_torch_file([1, 2]), "needs the field(s) model, state, rng, config",
                 id="torch-list"),
    pytest.param(_torch_file({"model": {}}), "needs the field(s) state, rng, config",
                 id="torch-dict"),
])
def test_train_resume_from_a_wrong_file(image_folder, tmp_path, write, message):
    state = tmp_path / "old.train-state.pt"
    write(state)
    before = snapshot(tmp_path)
    r = invoke(*TRAIN, "--data", image_folder, "--out", tmp_path / "m.safetensors",
               "--resume", state, "--text-epochs", 1, "--distill-epochs", 0,
               "--finetune-epochs", 0, "--max-steps-per-epoch", 1)
    clean_failure(r, 1, f"cannot resume from {state}", message, "train-state.pt")
    assert snapshot(tmp_path) == before


def test_run_warns_about_labels_the_tokenizer_cannot_tell_apart(micro_exports, tmp_path, caplog):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    r = invoke("run", "--target", "cpu", "--export", micro_exports["cpu"], "--image", img,
               "--labels", "Cat,cat,dog,\U0001F431")
    assert r.exit_code == 0, r.output
    assert "['Cat', 'cat']] tokenize identically" in caplog.text
    assert "labels ['\U0001F431'] are unknown tokens only" in caplog.text
    assert "dog" not in caplog.text


def test_run_decompression_bomb(micro_exports, tmp_path, monkeypatch):
    img = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(img)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = invoke("run", "--target", "cpu", "--export", micro_exports["cpu"], "--image", img,
               "--labels", "cat,dog")
    clean_failure(r, 1, f"{img} is too large to open safely", "MAX_IMAGE_PIXELS = 1,000")
