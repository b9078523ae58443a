import json

import pytest

from spikeclip_deploy.checkpoint import load_model, resolve_checkpoint
from spikeclip_deploy.errors import CheckpointError


def test_roundtrip(micro_ckpt):
    model, card, _ = load_model(str(micro_ckpt))
    assert model.cfg.name == "spikeclip-micro" and card["metadata"]["metrics"]["labels"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_unknown_name():
    with pytest.raises(CheckpointError, match="no checkpoint named 'nope'"):
        resolve_checkpoint("nope")


def test_truncated_checkpoint(micro_ckpt, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(micro_ckpt.read_bytes()[:1000])
    bad.with_suffix(".json").write_text(micro_ckpt.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(str(bad))


def test_mismatched_config(micro_ckpt, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(micro_ckpt.read_bytes())
    card = json.loads(micro_ckpt.with_suffix(".json").read_text())
    card["config"]["image_mlp_hidden"] = 32
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="does not match config"):
        load_model(str(bad))
