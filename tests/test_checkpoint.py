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


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda card: [card], "must hold a JSON object", id="list"),
    pytest.param(lambda card: {k: v for k, v in card.items() if k != "metadata"},
                 "field 'metadata' must be a JSON object \\(it is missing\\)", id="no-metadata"),
    pytest.param(lambda card: {**card, "metadata": ["x"]},
                 "field 'metadata' must be a JSON object", id="metadata-list"),
    pytest.param(lambda card: {**card, "config": None}, "field 'config' must be a JSON object",
                 id="config-null"),
    pytest.param(lambda card: {**card, "config": {**card["config"], "time_steps": "4"}},
                 "field 'time_steps' must be an integer, got '4'", id="time_steps-str"),
    pytest.param(lambda card: {**card, "config": {**card["config"], "time_steps": 4.5}},
                 "field 'time_steps' must be an integer, got 4.5", id="time_steps-float"),
    pytest.param(lambda card: {**card, "config": {**card["config"], "image_channels": [8, "16"]}},
                 "field 'image_channels' must be a list of integers", id="channels-str"),
])
def test_card_that_parses_but_is_wrong(ckpt_with_card, edit, message):
    bad = ckpt_with_card(edit)
    with pytest.raises(CheckpointError, match=f"{bad.with_suffix('.json')}.*{message}"):
        load_model(str(bad))
