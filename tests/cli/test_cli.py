"""End-to-end CLI tests on the micro model, including the bad inputs."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spikeclip_deploy.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def cat_png(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_export_then_run_cpu(micro_ckpt, tmp_path, cat_png):
    out = tmp_path / "exp"
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out)
    assert r.exit_code == 0, r.output
    assert "conv0" in r.output and (out / "manifest.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dt"] == 1.0 and "chip/image_encoder.nir" in manifest["files"]
    r = invoke("run", "--target", "cpu", "--export", out, "--image", cat_png, "--labels", "cat,dog,ship")
    assert r.exit_code == 0, r.output
    assert "prediction:" in r.output and all(lbl in r.output for lbl in ("cat", "dog", "ship"))


@pytest.mark.parametrize("target", ["cpu", pytest.param("loihi", marks=pytest.mark.lava)])
def test_run_predicts_the_highest_independent_score(target, micro_ckpt, micro_exports, zero_shot,
                                                    tmp_path):
    """`run` on each target: the scores computed here without the backends (the PyTorch model
    for the float export, the fixed-point model for the loihi one) and their argmax."""
    from spikeclip_deploy.inference import classify_image

    labels = ["cat", "dog", "ship", "truck"]
    pixels = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    image = pixels.transpose(2, 0, 1)[None]
    want = (zero_shot.float_model(micro_ckpt, image, labels) if target == "cpu"
            else zero_shot.loihi(micro_exports[target], image, labels))[0]
    assert np.sort(want)[-1] - np.sort(want)[-2] > 1e-4  # a clear winner at atol 1e-5
    result = classify_image(target, micro_exports[target], tmp_path / "x.png", ",".join(labels))
    assert result["prediction"] == labels[int(np.argmax(want))]
    np.testing.assert_allclose([result["scores"][lbl] for lbl in labels], want, atol=1e-5)
    r = invoke("run", "--target", target, "--export", micro_exports[target], "--image",
               tmp_path / "x.png", "--labels", ",".join(labels))
    assert r.exit_code == 0 and f"prediction: {labels[int(np.argmax(want))]} " in r.output


def test_existing_export_directory_is_kept(micro_ckpt, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out)
    assert r.exit_code != 0 and "already exists" in r.output and "--force" in r.output
    assert (out / "keep.txt").read_text() == "mine"
    assert "Traceback" not in r.output


def test_failed_export_leaves_nothing(tmp_path, micro_ckpt):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(micro_ckpt.read_bytes())
    ckpt.with_suffix(".json").write_text(micro_ckpt.with_suffix(".json").read_text())
    # no tokenizer folder beside this copy -> the export fails after lowering started
    r = invoke("export", "--target", "cpu", "--model", ckpt, "--out", tmp_path / "exp")
    assert r.exit_code != 0 and "tokenizer" in r.output
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors", "c.json"] or \
        not (tmp_path / "exp").exists() and not any(p.name.startswith(".exp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["export", "--target", "fpga"], "unknown target 'fpga'"),
    (["export", "--model", "/nonexistent/m.safetensors"], "missing"),
])
def test_bad_export_inputs(args, message, tmp_path):
    r = invoke(*args, "--out", tmp_path / "x")
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_run_bad_inputs(micro_exports, tmp_path, cat_png):
    exp = micro_exports["cpu"]
    r = invoke("run", "--target", "cpu", "--export", exp, "--image", cat_png, "--labels", " , ")
    assert r.exit_code != 0 and "label list is empty" in r.output
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    r = invoke("run", "--target", "cpu", "--export", exp, "--image", text, "--labels", "cat")
    assert r.exit_code != 0 and "not a readable image" in r.output
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 48, 3), dtype=np.uint8)).save(big)
    r = invoke("run", "--target", "cpu", "--export", exp, "--image", big, "--labels", "cat")
    assert r.exit_code != 0 and "48x64" in r.output and "32x32" in r.output
    r = invoke("run", "--target", "tpu", "--export", exp, "--image", cat_png, "--labels", "cat")
    assert r.exit_code != 0 and "unknown target 'tpu'" in r.output


def test_corrupt_checkpoint_cli(micro_ckpt, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(micro_ckpt.read_bytes()[:-10])
    bad.with_suffix(".json").write_text(micro_ckpt.with_suffix(".json").read_text())
    r = invoke("export", "--target", "cpu", "--model", bad, "--out", tmp_path / "e")
    assert r.exit_code != 0 and "truncated or corrupt" in r.output and not (tmp_path / "e").exists()


def test_models_json():
    r = invoke("models", "--json")
    rows = json.loads(r.output)
    assert {"spikeclip-tiny", "spikeclip-micro"} <= {row["name"] for row in rows}
    assert all(row["image_params"] > 0 and row["text_params"] > 0 for row in rows)


@pytest.mark.lava
def test_verify_and_energy_on_micro(micro_ckpt, image_folder, tmp_path):
    vj, ej = tmp_path / "v.json", tmp_path / "e.json"
    r = invoke("verify", "--target", "loihi", "--model", micro_ckpt, "--data", image_folder,
               "--limit", 3, "--json", vj, "--energy-json", ej)
    assert r.exit_code == 0, r.output
    v = json.loads(vj.read_text())
    assert v["n"] == 3 and set(v["accuracy"]) == {"float", "cpu", "loihi"}
    assert set(v["agreement"]) >= {"loihi_vs_float", "loihi_vs_cpu"}
    assert v["firing_rates"]["loihi"]["lif0"] > 0
    e = json.loads(ej.read_text())
    assert e["layers"] and all({"name", "sops", "firing_rate"} <= set(layer) for layer in e["layers"])
    assert e["energy_per_inference_mj"] > 0 and "not counted" in r.output


def test_train_config_file_with_flag_override(image_folder, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({
        "model": "spikeclip-micro", "text-epochs": 1, "distill_epochs": 1, "finetune-epochs": 2,
        "batch-size": 8, "text-batch-size": 64, "max-steps-per-epoch": 1, "val-fraction": 0.25,
        "finetune-lr": [1e-4, 1e-5]}))
    out = tmp_path / "m.safetensors"
    r = invoke("train", "--config", cfg, "--data", image_folder, "--out", out,
               "--finetune-epochs", "1")
    assert r.exit_code == 0, r.output
    recipe = json.loads(out.with_suffix(".json").read_text())["metadata"]["recipe"]
    assert recipe["finetune_epochs"] == 1  # the flag beats the file
    assert recipe["distill_epochs"] == 1 and recipe["text_batch_size"] == 64
    assert recipe["finetune_lr"] == [1e-4, 1e-5]


def test_train_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('finetune_epochs = 2\nlearning_rate = 0.1\n')
    r = invoke("train", "--config", bad, "--data", tmp_path, "--out", tmp_path / "m.safetensors")
    assert r.exit_code == 2 and "unknown keys ['learning_rate']" in r.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = invoke("train", "--config", broken, "--data", tmp_path, "--out", tmp_path / "m.safetensors")
    assert r.exit_code != 0 and "cannot read option file" in r.output
    assert "Traceback" not in r.output
