"""The bad-input corpus: every user mistake we know of, run through the CLI. Each case asserts
the exit code (2 usage, 1 user error), a one-line ``Error:`` naming the file or option and the
fix, no traceback, and that no partial or stray file is left and no existing file changed."""
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from spikeclip_deploy import export as export_mod
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.paths import PROJECT_ROOT

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
def test_numeric_options_are_range_checked_first(cli, command, option, value, tmp_path):
    """A usage error (exit 2) while parsing, before the command reads --data (missing here)."""
    out = ["--out", tmp_path / "m.safetensors"] if command[0].startswith("train") else []
    r = cli.invoke(*command, "--data", tmp_path / "no-data", *out, option, value)
    cli.clean_failure(r, 2, f"Invalid value for '{option}'")
    assert not list(tmp_path.iterdir())


def test_config_file_values_are_range_checked(cli, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"batch-size": 0}))
    r = cli.invoke(*TRAIN, "--config", cfg, "--data", tmp_path / "no-data",
               "--out", tmp_path / "m.safetensors")
    cli.clean_failure(r, 2, "Invalid value for '--batch-size'", "0 is not in the range x>=1")
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.json"]


def test_truncated_tarball(cli, image_folder, tmp_path):
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(image_folder, arcname="train")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    before = cli.snapshot(tmp_path)
    r = cli.invoke("train-teacher", "--data", cut, "--out", tmp_path / "t.safetensors")
    cli.clean_failure(r, 1, f"cannot extract {cut}", "truncated or corrupt")
    assert "Aborted!" not in r.output and cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda card: {**card, "metadata": ["x"]}, "field 'metadata' must be a JSON object",
                 id="metadata-list"),
    pytest.param(lambda card: {**card, "config": {**card["config"], "time_steps": "4"}},
                 "field 'time_steps' must be an integer", id="time_steps-str"),
])
def test_export_of_a_wrong_card(cli, ckpt_with_card, tmp_path, edit, message):
    bad = ckpt_with_card(edit)
    before = cli.snapshot(tmp_path)
    r = cli.invoke("export", "--target", "cpu", "--model", bad, "--out", tmp_path / "exp")
    cli.clean_failure(r, 1, str(bad.with_suffix(".json")), message)
    assert cli.snapshot(tmp_path) == before and not (tmp_path / "exp").exists()


def test_export_with_a_profile_without_limits(cli, micro_ckpt, tmp_path, monkeypatch):
    profile = json.loads((PROJECT_ROOT / "hardware" / "loihi2.json").read_text())
    del profile["limits"]
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "loihi2.json").write_text(json.dumps(profile))
    monkeypatch.setenv("SPIKECLIP_HARDWARE", str(tmp_path / "hw"))
    load_profile.cache_clear()
    before = cli.snapshot(tmp_path)
    try:
        r = cli.invoke("export", "--target", "loihi", "--model", micro_ckpt, "--out", tmp_path / "exp")
    finally:
        load_profile.cache_clear()
    cli.clean_failure(r, 1, str(tmp_path / "hw" / "loihi2.json"), "lacks the field(s) limits")
    assert cli.snapshot(tmp_path) == before and not (tmp_path / "exp").exists()


def _torch_file(obj):
    def write(path):
        torch.save(obj, path)
    return write


@pytest.mark.parametrize("write, message", [
    pytest.param(lambda p: p.write_text("not a training state\n"), "as a training state",
                 id="text"),
    pytest.param(lambda p: p.write_bytes(b""), "as a training state", id="empty"),
    pytest.param(_torch_file([1, 2]), "needs the field(s) model, state, rng, config",
                 id="torch-list"),
    pytest.param(_torch_file({"model": {}}), "needs the field(s) state, rng, config",
                 id="torch-dict"),
])
def test_train_resume_from_a_wrong_file(cli, image_folder, tmp_path, write, message):
    state = tmp_path / "old.train-state.pt"
    write(state)
    before = cli.snapshot(tmp_path)
    r = cli.invoke(*TRAIN, "--data", image_folder, "--out", tmp_path / "m.safetensors",
               "--resume", state, "--text-epochs", 1, "--distill-epochs", 0,
               "--finetune-epochs", 0, "--max-steps-per-epoch", 1)
    cli.clean_failure(r, 1, str(state), message, "train-state.pt")
    assert cli.snapshot(tmp_path) == before


def test_run_warns_about_labels_the_tokenizer_cannot_tell_apart(cli, micro_exports, tmp_path, caplog):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    r = cli.invoke("run", "--target", "cpu", "--export", micro_exports["cpu"], "--image", img,
               "--labels", "Cat,cat,dog,\U0001F431")
    assert r.exit_code == 0, r.output
    assert "['Cat', 'cat']] tokenize identically" in caplog.text
    assert "labels ['\U0001F431'] are unknown tokens only" in caplog.text
    assert "dog" not in caplog.text


def test_run_decompression_bomb(cli, micro_exports, tmp_path, monkeypatch):
    img = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(img)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = cli.invoke("run", "--target", "cpu", "--export", micro_exports["cpu"], "--image", img,
               "--labels", "cat,dog")
    cli.clean_failure(r, 1, f"{img} is too large to open safely", "MAX_IMAGE_PIXELS = 1,000")


# -- data sources ------------------------------------------------------------------------------
def test_torchvision_root_and_files_missing(cli, tmp_path):
    out = tmp_path / "tower.safetensors"
    before = cli.snapshot(tmp_path)
    r = cli.invoke("train-teacher", "--data", f"torchvision:cifar10:{tmp_path / 'nope'}",
                   "--out", out)
    cli.clean_failure(r, 1, "does not exist", "pass --download", "cifar-10-batches-py")
    r = cli.invoke("train-teacher", "--data", f"torchvision:cifar10:test:{tmp_path}", "--out", out)
    cli.clean_failure(r, 1, "cifar10 (test split) is not present under", "pass --download")
    assert "download=True" not in r.output  # torchvision's Python hint is not the CLI's
    r = cli.invoke("train-teacher", "--data", f"torchvision:svhn:{tmp_path}", "--out", out)
    cli.clean_failure(r, 1, "unknown torchvision dataset 'svhn'", "cifar10, cifar100, stl10")
    r = cli.invoke("train", "--model", "spikeclip-micro", "--data",
                   f"torchvision:cifar10:{tmp_path}", "--out", tmp_path / "m.safetensors")
    cli.clean_failure(r, 1, "is not present under", "pass --download")
    assert cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["verify", "energy"])
def test_verify_and_energy_data_errors(cli, command, micro_ckpt, tmp_path, monkeypatch):
    extra = ["--target", "cpu"] if command == "verify" else []
    r = cli.invoke(command, *extra, "--model", micro_ckpt, "--data",
                   f"torchvision:cifar10:{tmp_path / 'nope'}")
    cli.clean_failure(r, 1, "does not exist", "pass --download")
    # --download reaches torchvision: a closed local port stands in for an unreachable network
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    r = cli.invoke(command, *extra, "--model", micro_ckpt, "--data",
                   f"torchvision:cifar10:{tmp_path}", "--download")
    cli.clean_failure(r, 1, "could not download cifar10", "network is unreachable")


# -- exports: nothing that is not ours is replaced, nothing is left behind -----------------------
def test_force_refuses_a_directory_that_is_not_an_export(cli, micro_ckpt, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    (out / "sub" / "manifest.json").write_text('{"format": "spikeclip-deploy/export@1"}')
    before = cli.snapshot(tmp_path)
    r = cli.invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out, "--force")
    cli.clean_failure(r, 1, str(out), "not an export")
    assert cli.snapshot(tmp_path) == before


def test_force_refuses_the_working_directory(cli, micro_ckpt, micro_exports, tmp_path,
                                             monkeypatch):
    here = tmp_path / "here"
    shutil.copytree(micro_exports["cpu"], here)  # even a real export is not replaced from inside
    before = cli.snapshot(tmp_path)
    monkeypatch.chdir(here)
    r = cli.invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", ".", "--force")
    cli.clean_failure(r, 1, "current directory")
    assert cli.snapshot(tmp_path) == before  # and no `..old-*` beside it


def test_existing_export_is_kept_without_force(cli, micro_ckpt, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = cli.snapshot(tmp_path)
    r = cli.invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out)
    cli.clean_failure(r, 1, "already exists", "--force")
    assert cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("force", [False, True])
def test_a_destination_that_appears_during_the_run_is_not_replaced(cli, micro_ckpt, tmp_path,
                                                                    monkeypatch, force):
    """Another run creates ``out`` while this one is writing: without --force this one fails
    and leaves theirs alone; with --force it still replaces only an export."""
    out = tmp_path / "exp"
    real = export_mod.write_host_part

    def racing(*args, **kwargs):
        out.mkdir()
        (out / "theirs.txt").write_text("other run")
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, "write_host_part", racing)
    r = cli.invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out,
                   *(["--force"] if force else []))
    cli.clean_failure(r, 1, str(out), "not an export" if force else "appeared while this export ran")
    assert cli.snapshot(tmp_path) == {"exp": b"<dir>", "exp/theirs.txt": b"other run"}


def test_export_that_fails_midway_leaves_nothing(cli, tmp_path, micro_ckpt):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(micro_ckpt.read_bytes())
    ckpt.with_suffix(".json").write_text(micro_ckpt.with_suffix(".json").read_text())
    before = cli.snapshot(tmp_path)
    # no tokenizer folder beside this copy: the export fails after lowering started
    r = cli.invoke("export", "--target", "cpu", "--model", ckpt, "--out", tmp_path / "exp")
    cli.clean_failure(r, 1, "tokenizer folder", "c.tokenizer")
    assert cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_export_of_a_missing_or_corrupt_checkpoint(cli, micro_ckpt, tmp_path, case):
    bad = tmp_path / "bad.safetensors"
    if case == "truncated":
        bad.write_bytes(micro_ckpt.read_bytes()[:-10])
        bad.with_suffix(".json").write_text(micro_ckpt.with_suffix(".json").read_text())
    before = cli.snapshot(tmp_path)
    r = cli.invoke("export", "--target", "cpu", "--model", bad, "--out", tmp_path / "e")
    cli.clean_failure(r, 1, str(bad), "missing" if case == "missing" else "truncated or corrupt")
    assert cli.snapshot(tmp_path) == before


def test_out_below_a_file(cli, micro_ckpt, tmp_path):
    (tmp_path / "afile").write_text("x")
    before = cli.snapshot(tmp_path)
    r = cli.invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out",
                   tmp_path / "afile" / "e")
    cli.clean_failure(r, 1, str(tmp_path / "afile"), "is a file, not a directory")
    assert cli.snapshot(tmp_path) == before


def test_file_size_limit_fails_cleanly_and_leaves_nothing(micro_ckpt, tmp_path):
    """A file-size limit (as a full disk) while writing the NIR files: a one-line error naming
    the file, exit 1, no partial directory (h5py writing to the file itself segfaulted)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "spikeclip_deploy.cli", "export", "--target",
                           "cpu", "--model", str(micro_ckpt), "--out", str(tmp_path / "exp")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          env={**os.environ, "SPIKECLIP_LIF_COMPILE": "0"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
    assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr
    assert "File too large" in errors[0] and str(tmp_path) in errors[0]
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_unparsable_manifest(cli, micro_exports, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(micro_exports["cpu"], exp)
    (exp / "manifest.json").write_text("{not json")
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(png)
    before = cli.snapshot(tmp_path)
    r = cli.invoke("run", "--target", "cpu", "--export", exp, "--image", png, "--labels", "a,b")
    cli.clean_failure(r, 1, str(exp / "manifest.json"), "is not valid JSON", "--force")
    assert cli.snapshot(tmp_path) == before


def test_loihi_backend_on_a_cpu_export(cli, micro_exports, tmp_path):
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(png)
    r = cli.invoke("run", "--target", "loihi", "--export", micro_exports["cpu"], "--image", png,
                   "--labels", "a,b")
    cli.clean_failure(r, 1, "--target cpu export", "made with --target loihi")


# -- run ----------------------------------------------------------------------------------------
@pytest.fixture()
def cat_png(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_run_bad_inputs(cli, micro_exports, tmp_path, cat_png):
    exp = micro_exports["cpu"]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tall = tmp_path / "tall.png"
    Image.fromarray(np.zeros((64, 48, 3), dtype=np.uint8)).save(tall)
    before = cli.snapshot(tmp_path)
    r = cli.invoke("run", "--target", "cpu", "--export", exp, "--image", cat_png, "--labels", " , ")
    cli.clean_failure(r, 1, "label list is empty")
    r = cli.invoke("run", "--target", "cpu", "--export", exp, "--image", text, "--labels", "cat")
    cli.clean_failure(r, 1, str(text), "not a readable image")
    r = cli.invoke("run", "--target", "cpu", "--export", exp, "--image", tall, "--labels", "cat,dog")
    assert r.exit_code == 0, r.output  # any size is fitted (resized, centre-cropped), not refused
    r = cli.invoke("run", "--target", "tpu", "--export", exp, "--image", cat_png, "--labels", "cat")
    cli.clean_failure(r, 2, "'--target'", "'tpu' is not one of 'loihi', 'loihi-emu', 'cpu'")
    r = cli.invoke("export", "--target", "fpga")
    cli.clean_failure(r, 2, "'--target'", "'fpga' is not one of 'loihi', 'loihi-emu', 'cpu'")
    assert cli.snapshot(tmp_path) == before


def _number_options():
    """Every option of every command that takes a number (click's float types, and the
    START,END learning-rate pairs)."""
    import click

    from spikeclip_deploy import cli as cli_mod

    def walk(cmd, path):
        for p in cmd.params:
            if isinstance(p, click.Option) and (isinstance(p.type, click.types.FloatParamType)
                                                or p.callback is cli_mod._lr_pair):
                yield path, p
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])
    return list(walk(cli_mod.main, []))


NUMBER_OPTIONS = _number_options()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("path, option", NUMBER_OPTIONS,
                         ids=[" ".join([*c, o.opts[0]]) for c, o in NUMBER_OPTIONS])
def test_every_number_option_refuses_nan_and_infinities(cli, path, option, value):
    """Each float option is the shared FiniteFloatRange; NaN and infinities are usage errors
    (click's FloatRange lets NaN through every bound), before any other option is looked at."""
    from spikeclip_deploy.cli_types import FiniteFloatRange

    assert isinstance(option.type, FiniteFloatRange) or option.name.endswith("_lr")
    text = f"{value},1e-4" if option.name.endswith("_lr") else value
    r = cli.invoke(*path, option.opts[0], text)
    cli.clean_failure(r, 2, f"Invalid value for '{option.opts[0]}'", "is not a finite number")


def test_number_options_found():
    names = {o.opts[0] for _, o in NUMBER_OPTIONS}
    assert {"--kl-weight", "--kd-temperature", "--logit-distill-weight", "--label-smoothing",
            "--val-fraction", "--lr", "--synonyms", "--distill-lr", "--finetune-lr",
            "--qat-lr"} <= names


def test_config_file_nan_is_refused(cli, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text('{"kl-weight": NaN}')
    r = cli.invoke(*TRAIN, "--config", cfg, "--data", tmp_path / "no-data",
                   "--out", tmp_path / "m.safetensors")
    cli.clean_failure(r, 2, "Invalid value for '--kl-weight'", "nan is not a finite number")
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.json"]
