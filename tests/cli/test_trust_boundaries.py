"""No file a user is handed runs code: a malicious pickle planted where each command reads a
file is refused with a one-line error, and its code never runs (its marker file stays absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


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


def _reseal(export, rel):
    """Record ``rel``'s new sha256 in the manifest and seal it again: a forged export, as its
    author could make one (the digest catches edits, not forgers)."""
    import hashlib
    import json

    from spikeclip_deploy.exchange.manifest import seal

    path = export / "manifest.json"
    m = json.loads(path.read_text())
    m["files"][rel] = hashlib.sha256((export / rel).read_bytes()).hexdigest()
    path.write_text(json.dumps(seal(m)))


def test_run_on_an_export_whose_label_features_are_a_pickle(cli, hostile, micro_exports,
                                                            tmp_path, cat_png):
    import shutil

    export = tmp_path / "exp"
    shutil.copytree(micro_exports["cpu"], export)
    hostile.npy_file(export / "host" / "label_features.npy")
    _reseal(export, "host/label_features.npy")
    r = cli.invoke("run", "--target", "cpu", "--export", export, "--image", cat_png,
                   "--labels", "cat,dog")
    cli.clean_failure(r, 1, "label_features.npy is not a numeric array", "export --force")
    assert not hostile.ran()


def test_checkpoints_are_safetensors_a_pickle_is_refused(cli, hostile, micro_ckpt, tmp_path):
    """A pickle under a checkpoint's name, its card's sha256 updated to match: --model,
    --init-text-from and --init-image-from read it as safetensors, never unpickle it."""
    import hashlib
    import json
    import shutil

    bad = tmp_path / "bad.safetensors"
    hostile.torch_file(bad)
    card = json.loads(micro_ckpt.with_suffix(".json").read_text())
    card["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    bad.with_suffix(".json").write_text(json.dumps(card))
    shutil.copytree(micro_ckpt.with_suffix(".tokenizer"), bad.with_suffix(".tokenizer"))
    r = cli.invoke("export", "--target", "cpu", "--model", bad, "--out", tmp_path / "exp")
    cli.clean_failure(r, 1, str(bad), "not a readable safetensors file")
    for flag in ("--init-text-from", "--init-image-from"):
        r = cli.invoke("train", "--model", "spikeclip-micro", "--data", tmp_path / "no-data",
                       "--out", tmp_path / "m.safetensors", flag, bad)
        assert r.exit_code == 1 and "Traceback" not in r.output
    assert not hostile.ran()


def test_torchvision_cifar_batches_are_unpickled_only_after_their_md5(cli, hostile, tmp_path):
    """torchvision's CIFAR files are pickles: torchvision checks each file's published md5
    before it unpickles one, so a planted batch is refused unread."""
    from torchvision.datasets import CIFAR10

    root = tmp_path / "cifar"
    (root / CIFAR10.base_folder).mkdir(parents=True)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list + [(CIFAR10.meta["filename"], 0)]:
        hostile.torch_file(root / CIFAR10.base_folder / name, lambda evil: evil)
    r = cli.invoke("verify", "--model", "spikeclip-micro", "--init", "random",
                   "--data", f"torchvision:cifar10:{root}", "--limit", 1)
    cli.clean_failure(r, 1, str(root))
    assert not hostile.ran()


def test_a_shard_that_is_a_pickle_is_not_json(cli, hostile, tmp_path):
    part = hostile.torch_file(tmp_path / "p0.json")
    r = cli.invoke("verify", "merge", part)
    cli.clean_failure(r, 1, str(part), "partial verification result")
    assert not hostile.ran()


def test_run_refuses_an_animated_image(cli, micro_exports, tmp_path):
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r = cli.invoke("run", "--target", "cpu", "--export", micro_exports["cpu"],
                   "--image", tmp_path / "anim.gif", "--labels", "cat,dog")
    cli.clean_failure(r, 1, "anim.gif is an animated or multi-frame GIF image (2 frames)")


def test_an_edited_export_is_refused_before_anything_runs(cli, micro_exports, tmp_path,
                                                          cat_png, monkeypatch):
    """time_steps edited in the manifest: one line naming the field, and no backend built."""
    import json
    import shutil

    from spikeclip_deploy.backends import host_runtime

    export = tmp_path / "exp"
    shutil.copytree(micro_exports["cpu"], export)
    m = json.loads((export / "manifest.json").read_text())
    (export / "manifest.json").write_text(json.dumps({**m, "time_steps": m["time_steps"] + 1}))
    monkeypatch.setattr(host_runtime, "onnx_session", lambda *a, **k: pytest.fail("ran"))
    r = cli.invoke("run", "--target", "cpu", "--export", export, "--image", cat_png,
                   "--labels", "cat,dog")
    cli.clean_failure(r, 1, "field 'time_steps' was edited after export")
    r = cli.invoke("map", export)
    cli.clean_failure(r, 1, "field 'time_steps' was edited after export")


def _shard(tmp_path, name, data):
    import json

    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_verify_merge_malformed_shards_are_one_line_errors(cli, tmp_path):
    """``[]``, a partial record, and a well-shaped shard whose spike tallies are garbage: each a
    one-line error naming the file (and the field where the reader can tell), nothing written."""
    from spikeclip_deploy.verify.results import PARTIAL_FORMAT

    empty = _shard(tmp_path, "empty.json", [])
    partial = _shard(tmp_path, "partial.json", {"format": PARTIAL_FORMAT, "shard": [0, 1]})
    good = {"format": PARTIAL_FORMAT, "shard": [0, 1],
            "run": {k: None for k in ("model", "weights", "checkpoint_sha256", "data",
                                      "labels", "templates", "protocol", "export", "backends",
                                      "energy", "checkpoint_metrics", "config")}
            | {"classes": ["a", "b"]},
            "positions": [0], "index": [0], "labels": [1], "preds": {"emu": [1]},
            "tallies": {"emu": {"n": "many"}}, "divergence": {}}
    garbage = _shard(tmp_path, "garbage.json", good)
    out = tmp_path / "merged.json"
    r = cli.invoke("verify", "merge", empty, "--json", out)
    cli.clean_failure(r, 1, str(empty), "is not a partial verification result (format 'list'")
    r = cli.invoke("verify", "merge", partial, "--json", out)
    cli.clean_failure(r, 1, str(partial), "field 'run' must be an object")
    r = cli.invoke("verify", "merge", garbage, "--json", out)
    cli.clean_failure(r, 1, str(garbage), "hold malformed records")
    assert not out.exists()


def test_verify_merge_refuses_to_write_over_an_input(cli, tmp_path):
    part = _shard(tmp_path, "p0.json", {"any": "thing"})
    before = part.read_bytes()
    for flag in ("--json", "--energy-json"):
        r = cli.invoke("verify", "merge", part, flag, part)
        cli.clean_failure(r, 1, f"{flag} {part} is one of the shards being merged")
    assert part.read_bytes() == before
