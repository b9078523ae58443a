"""``--data torchvision:NAME[:SPLIT]:ROOT`` and ``--download`` through the CLI: clean errors."""
import pytest
from click.testing import CliRunner
from torchvision.datasets import CIFAR10

from spikeclip_deploy.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def clean_failure(r, *messages):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output and r.exc_info[0] is SystemExit, r.output
    for m in messages:
        assert m in r.output, r.output


def test_train_teacher_missing_root_and_files(tmp_path):
    out = tmp_path / "tower.safetensors"
    r = invoke("train-teacher", "--data", f"torchvision:cifar10:{tmp_path / 'nope'}", "--out", out)
    clean_failure(r, "does not exist", "pass --download", "cifar-10-batches-py")
    r = invoke("train-teacher", "--data", f"torchvision:cifar10:test:{tmp_path}", "--out", out)
    clean_failure(r, "cifar10 (test split) is not present under", "pass --download to fetch it",
                  "cifar-10-batches-py/")
    assert "download=True" not in r.output  # torchvision's Python hint is not the CLI's
    r = invoke("train-teacher", "--data", f"torchvision:svhn:{tmp_path}", "--out", out)
    clean_failure(r, "unknown torchvision dataset 'svhn'", "cifar10, cifar100, stl10")
    assert not out.exists()


def test_train_missing_files(tmp_path):
    r = invoke("train", "--model", "spikeclip-micro", "--data", f"torchvision:cifar10:{tmp_path}",
               "--out", tmp_path / "m.safetensors")
    clean_failure(r, "is not present under", "pass --download")


@pytest.mark.parametrize("command", ["verify", "energy"])
def test_verify_and_energy_data_errors(command, micro_ckpt, tmp_path, monkeypatch):
    extra = ["--target", "cpu"] if command == "verify" else []
    r = invoke(command, *extra, "--model", micro_ckpt, "--data",
               f"torchvision:cifar10:{tmp_path / 'nope'}")
    clean_failure(r, "does not exist", "pass --download")
    # --download reaches torchvision: a closed local port stands in for an unreachable network
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    r = invoke(command, *extra, "--model", micro_ckpt, "--data", f"torchvision:cifar10:{tmp_path}",
               "--download")
    clean_failure(r, "could not download cifar10", "network is unreachable")


def test_help_names_the_spec():
    for command in ("train", "train-teacher", "verify", "energy"):
        r = invoke(command, "--help")
        assert r.exit_code == 0 and "torchvision:NAME[:SPLIT]:ROOT" in r.output
        assert "--download" in r.output
