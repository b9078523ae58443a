"""End-to-end CLI tests on the micro model, including the bad inputs."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spikeclip_deploy.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_then_run_cpu(micro_ckpt, tmp_path, cat_png):
    out = tmp_path / "exp"
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out)
    assert r.exit_code == 0, r.output
    assert "conv0" in r.output and (out / "manifest.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dt"] == 1e-4 and "chip/image_encoder.nir" in manifest["files"]
    r = invoke("run", "--target", "cpu", "--export", out, "--image", cat_png, "--labels", "cat,dog,ship")
    assert r.exit_code == 0, r.output
    assert "prediction:" in r.output and all(lbl in r.output for lbl in ("cat", "dog", "ship"))


@pytest.mark.parametrize("target", ["cpu", "loihi-emu",
                                    pytest.param("loihi", marks=pytest.mark.lava)])
def test_run_predicts_the_highest_independent_score(target, micro_ckpt, micro_exports, zero_shot,
                                                    tmp_path):
    """`run` on each target: the scores computed here without the backends (the PyTorch model
    for the float export, the fixed-point model for the loihi one, which loihi-emu runs too)
    and their argmax."""
    from spikeclip_deploy.inference import classify_images
    from spikeclip_deploy.targets import export_target

    export = micro_exports[export_target(target).name]

    labels = ["cat", "dog", "ship", "truck"]
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    paths = [tmp_path / "x.png", tmp_path / "y.png"]
    for p, px in zip(paths, pixels):
        Image.fromarray(px).save(p)
    images = pixels.transpose(0, 3, 1, 2)
    want = (zero_shot.float_model(micro_ckpt, images, labels) if target == "cpu"
            else zero_shot.loihi(export, images, labels))
    top2 = np.sort(want, axis=1)[:, -2:]
    assert np.all(top2[:, 1] - top2[:, 0] > 1e-4)  # a clear winner at atol 1e-5
    result = classify_images(target, export, paths, ",".join(labels),
                             batch_size=1)  # two runs of one image
    for r, w, p in zip(result["results"], want, paths):
        assert (r["image"], r["prediction"]) == (str(p), labels[int(np.argmax(w))])
        np.testing.assert_allclose([r["scores"][lbl] for lbl in labels], w, atol=1e-5)
    r = invoke("run", "--target", target, "--export", export, "--image",
               paths[0], "--labels", ",".join(labels))
    want = want[:1]
    assert r.exit_code == 0 and f"prediction: {labels[int(np.argmax(want))]} " in r.output



def test_models_lists_configs_and_shipped_checkpoints():
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP, parameter_count
    from spikeclip_deploy.paths import models_dir

    found = json.loads(invoke("models", "--json").output)
    assert {"spikeclip-tiny", "spikeclip-micro"} <= {c["name"] for c in found["configs"]}
    assert not any("image_params" in c for c in found["configs"])  # counted only on request
    card = json.loads((models_dir() / "spikeclip-tiny-cifar10.json").read_text())
    tiny = next(k for k in found["checkpoints"] if k["name"] == "spikeclip-tiny-cifar10")
    assert tiny["config"] == "spikeclip-tiny"
    assert tiny["val_zero_shot_top1"] == card["metadata"]["metrics"]["val_zero_shot_top1_student"]
    r = invoke("models")
    assert f"{100 * tiny['val_zero_shot_top1']:.2f} %" in r.output
    counted = json.loads(invoke("models", "--json", "--params").output)
    micro = next(c for c in counted["configs"] if c["name"] == "spikeclip-micro")
    model = SpikeCLIP(get_config("spikeclip-micro"))
    assert (micro["image_params"], micro["text_params"]) == (parameter_count(model.image),
                                                             parameter_count(model.text))


def test_models_deployability_on_request(monkeypatch):
    """The CLI asks the library for each config's row (computed and cached there: see
    tests/test_deployability.py) only with --deployability."""
    from spikeclip_deploy import catalog

    rows = {"spikeclip-micro": ("chip", None, 0.785), "spikeclip-vit4-384": ("no", "why", None)}
    fields = ("deployable", "deployable_reason", "chip_sop_share")
    monkeypatch.setattr(catalog, "deployability",
                        lambda cfg: dict(zip(fields, rows.get(cfg.name, ("no", "-", None)))))
    plain = json.loads(invoke("models", "--json").output)["configs"]
    assert not any("deployable" in c for c in plain)
    found = {c["name"]: c for c in
             json.loads(invoke("models", "--json", "--deployability").output)["configs"]}
    assert [found["spikeclip-micro"][f] for f in fields] == ["chip", None, 0.785]
    assert found["spikeclip-vit4-384"]["deployable_reason"] == "why"
    lines = invoke("models", "--deployability").output.splitlines()
    micro = next(ln for ln in lines if " spikeclip-micro " in ln)
    assert micro.endswith("T=4  chip        chip share  78.5 %")
    assert next(ln for ln in lines if " spikeclip-vit4-384 " in ln).endswith("T=4  no")


def test_version_and_target_choices():
    from spikeclip_deploy import __version__

    assert invoke("--version").output.strip() == f"spikeclip-deploy, version {__version__}"
    r = invoke("export", "--target", "fpga")
    assert r.exit_code == 2 and "'fpga' is not one of 'loihi', 'loihi-emu', 'cpu'" in r.output


@pytest.mark.lava
def test_verify_and_energy_on_micro(micro_ckpt, image_folder, tmp_path):
    """The emulator on every image of the folder, Lava confirming the first 2, spike for spike;
    `energy` counts the emulator's spikes on the same images."""
    vj, ej, e2 = tmp_path / "v.json", tmp_path / "e.json", tmp_path / "e2.json"
    r = invoke("verify", "--model", micro_ckpt, "--data", image_folder, "--lava-limit", 2,
               "--json", vj, "--energy-json", ej, "--plots", tmp_path / "figs")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "energy-per-layer.png", "firing-rates.png", "spike-raster.png", "synaptic-ops.png"]
    assert f"figures -> {tmp_path / 'figs'}" in r.output
    v = json.loads(vj.read_text())
    assert v["n"] == 24 and v["lava_n"] == 2 and set(v["accuracy"]) == {"float", "emu", "lava"}
    assert v["agreement"]["emu_vs_lava"] == 1.0 and v["spike_mismatches"] == {"emu_vs_lava": 0}
    assert "on 24 images: every image of" in r.output and "n=2" in r.output
    e = json.loads(ej.read_text())
    assert e == v["energy"] and e["spikes_from"] == "emu" and e["n"] == 24
    r = invoke("energy", "--model", micro_ckpt, "--data", image_folder, "--json", e2,
               "--plots", tmp_path / "efigs")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "efigs" / "energy-per-layer.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(e2.read_text()) == e and "from the emulator's spikes" in r.output
    chip = e["loihi"]  # the chip's own model beside the 45 nm one, with its citations
    assert chip["placement"]["chips"] == 1 and chip["messages"] > 0
    assert {row["name"] for row in chip["layers"]} == set(e["neuron_firing_rates"]) | {
        row["name"] for row in e["layers"]}
    assert "Davies et al." in chip["sources"]["e_synaptic_op_pj"]
    assert np.isclose(chip["total_mj"] * 1e9, chip["chip_pj"] + e["host_energy_pj"])
    assert "45 nm model: SNN" in r.output and "chip model (energy-loihi)" in r.output
    # a what-if per-core figure reaches the chip model's placement, recorded as assumed
    e3 = tmp_path / "e3.json"
    r = invoke("energy", "--model", micro_ckpt, "--data", image_folder, "--json", e3,
               "--assume", "output_axons_per_core=100000")
    assert r.exit_code == 0, r.output
    placed = json.loads(e3.read_text())["loihi"]["placement"]
    assert placed["assumptions"] == {"output_axons_per_core": {"assumed": 100000,
                                                               "profile": 4096}}
    r = invoke("energy", "--model", micro_ckpt, "--data", image_folder, "--assume", "axons=1")
    assert r.exit_code == 1 and "unknown key 'axons'" in r.output


def test_verify_shards_merge_to_one_run(micro_ckpt, micro_exports, image_folder, tmp_path):
    """`verify --shard I/N` twice, then `verify merge`: the single run's JSON, byte for byte."""
    common = ("verify", "--model", micro_ckpt, "--data", image_folder, "--split", "val",
              "--val-fraction", "0.5", "--lava-limit", 0, "--backends", "loihi-emu,cpu",
              "--export", micro_exports["loihi"])
    r = invoke(*common, "--json", tmp_path / "one.json")
    assert r.exit_code == 0, r.output
    assert "on 12 images: the val split of" in r.output
    for i in range(2):
        r = invoke(*common, "--shard", f"{i}/2", "--json", tmp_path / f"p{i}.json")
        assert r.exit_code == 0 and "shard %d/2 (partial)" % i in r.output, r.output
    r = invoke("verify", "merge", tmp_path / "p1.json", tmp_path / "p0.json", "--json",
               tmp_path / "merged.json", "--plots", tmp_path / "figs")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "figs" / "spike-raster.png").exists()  # shard 0 kept the first image's
    assert (tmp_path / "merged.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    r = invoke(*common, "--shard", "0/2")
    assert r.exit_code == 1 and "--shard 0/2 writes a partial result" in r.output
    r = invoke("verify", "merge", tmp_path / "one.json")
    assert r.exit_code == 1 and "not a partial verification result" in r.output
    r = invoke("verify", "--model", micro_ckpt)
    assert r.exit_code == 2 and "Missing option '--data'" in r.output


def test_train_config_file_with_flag_override(image_folder, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({
        "model": "spikeclip-micro", "text-epochs": 1, "distill_epochs": 1, "finetune-epochs": 2,
        "batch-size": 8, "text-batch-size": 64, "max-steps-per-epoch": 1, "val-fraction": 0.25,
        "finetune-lr": [1e-4, 1e-5]}))
    out = tmp_path / "m.safetensors"
    r = invoke("train", "--config", cfg, "--data", image_folder, "--out", out,
               "--finetune-epochs", "1", "--channels-last")
    assert r.exit_code == 0, r.output
    recipe = json.loads(out.with_suffix(".json").read_text())["metadata"]["recipe"]
    assert recipe["finetune_epochs"] == 1  # the flag beats the file
    assert recipe["channels_last"] and not recipe["bf16"]
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


def test_run_creates_the_default_export_and_says_so(micro_ckpt, tmp_path, cat_png, monkeypatch,
                                                     caplog):
    from spikeclip_deploy import export
    from spikeclip_deploy.backends import get_backend
    from spikeclip_deploy.data import load_image

    auto = tmp_path / "auto-export"
    monkeypatch.setattr(export, "default_out", lambda model, target: auto)
    monkeypatch.setattr(export, "default_checkpoint_name", lambda: str(micro_ckpt))
    with caplog.at_level("WARNING", logger="spikeclip_deploy.export"):
        r = invoke("run", "--target", "cpu", "--image", cat_png, "--labels", "cat,dog,ship",
                   "--json")
    assert r.exit_code == 0, r.output
    assert f"no export at {auto} yet: creating it" in caplog.text
    result = json.loads(r.output)
    with get_backend("cpu")(auto) as cpu:  # the same answer, computed here
        feats, _ = cpu.encode_images(load_image(cat_png, 32).numpy()[None])
        scores = (feats @ cpu.class_weights(["cat", "dog", "ship"]).T)[0]
    (one,) = result["results"]
    assert one["scores"] == pytest.approx(dict(zip(["cat", "dog", "ship"], scores.tolist())))
    assert one["prediction"] == ["cat", "dog", "ship"][int(np.argmax(scores))]
    assert (result["target"], result["export"], one["image"]) == ("cpu", str(auto), str(cat_png))


def test_help_names_the_data_sources():
    for command in ("train", "train-teacher", "verify", "energy"):
        r = invoke(command, "--help")
        assert r.exit_code == 0 and "torchvision:NAME[:SPLIT]:ROOT" in r.output
        assert "--download" in r.output


def test_export_random_init_of_a_config(tmp_path, image_folder):
    """A registered config with no checkpoint: a seeded random initialisation exports, the same
    seed byte for byte, and the manifest says what it is."""
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        r = invoke("-q", "export", "--target", "loihi", "--model", "spikeclip-native-small",
                   "--init", "random", "--seed", seed, "--out", out)
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((out / "manifest.json").read_text())
    assert runs["a"]["model"]["weights"] == "random-init" and runs["a"]["model"]["seed"] == 3
    assert runs["a"]["model"]["checkpoint_sha256"] is None
    assert runs["a"]["files"] == runs["b"]["files"]  # deterministic
    assert runs["a"]["files"]["chip/image_encoder.nir"] != runs["c"]["files"]["chip/image_encoder.nir"]
    assert runs["a"]["partition"]["image"]["pool0"]["placement"] == "chip"
    r = invoke("verify", "--target", "cpu", "--model", "spikeclip-tiny-cifar10", "--data",
               image_folder, "--limit", 2, "--export", tmp_path / "a")
    assert r.exit_code == 1 and "random initialisation of 'spikeclip-native-small'" in r.output
    r = invoke("export", "--init", "random", "--out", tmp_path / "d")
    assert r.exit_code == 2 and "--init random needs --model CONFIG" in r.output
    r = invoke("export", "--init", "random", "--model", "nope", "--out", tmp_path / "d")
    assert r.exit_code == 1 and "unknown model config 'nope'" in r.output


def test_run_uses_an_export_another_run_created_meanwhile(micro_exports, tmp_path, cat_png,
                                                          monkeypatch):
    """Two `run`s without an export: the one whose export lost the race uses the winner's."""
    import shutil

    from spikeclip_deploy import export
    from spikeclip_deploy.errors import ExportError

    auto = tmp_path / "auto-export"

    def lost_the_race(cfg):
        shutil.copytree(micro_exports["cpu"], auto)  # the other run finished first
        raise ExportError(f"{auto} appeared while this export ran")

    monkeypatch.setattr(export, "default_out", lambda model, target: auto)
    monkeypatch.setattr(export, "export_model", lost_the_race)
    assert export.default_export("cpu") == auto
    monkeypatch.setattr(export, "export_model", lambda cfg: pytest.fail("exported again"))
    assert export.default_export("cpu") == auto  # an export there is used as it is


@pytest.mark.lava
def test_verify_a_random_init_spikingformer_with_its_host_ops(image_folder, tmp_path):
    """The paper's layout in miniature, exported with `--attention host --current-pool host`:
    `verify --init random` runs Lava with Q K^T V and the two max pools as host processes inside
    the simulation."""
    out, export = tmp_path / "v.json", tmp_path / "former"
    r = invoke("export", "--model", "spikeclip-former-micro", "--init", "random", "--seed", "0",
               "--attention", "host", "--current-pool", "host", "--out", export)
    assert r.exit_code == 0, r.output
    r = invoke("verify", "--target", "loihi", "--model", "spikeclip-former-micro", "--init",
               "random", "--seed", "0", "--export", export, "--data", image_folder, "--limit", 2,
               "--json", out)
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    assert v["weights"] == "random-init" and v["n"] == 2 and v["lava_n"] == 2
    assert v["spike_mismatches"] == {"emu_vs_lava": 0}
    e = v["energy"]
    # per step, by hand: attention 2 * 64^2 * 16; conv 8->12 at 32x32 + 3x3 pool to 12x16x16;
    # conv 12->16 at 16x16 + 3x3 pool to 16x8x8
    assert e["host_op_macs_per_step"] == (2 * 64**2 * 16 + 12 * 32 * 32 * 8 * 9 + 12 * 16 * 16 * 9
                                          + 16 * 16 * 16 * 12 * 9 + 16 * 8 * 8 * 9)
    # the chip part's share counts the relays' graded ops (T = 4 steps of host ops)
    chip = e["total_sops"] + e["graded_sops"]
    assert e["graded_sops"] > 0
    assert e["chip_part_sop_share"] == chip / (chip + 4 * e["host_op_macs_per_step"])
    assert "host ops between chip subgraphs" in r.output


def test_verify_under_torchrun_merges_one_shard_per_rank(micro_ckpt, micro_exports, image_folder,
                                                         tmp_path):
    """Two ranks (gloo), each its shard; rank 0 writes the merged result: the single run's
    JSON, byte for byte."""
    import os
    import socket
    import subprocess
    import sys

    common = ["verify", "--model", str(micro_ckpt), "--data", str(image_folder), "--limit", "7",
              "--lava-limit", "0", "--export", str(micro_exports["loihi"])]
    assert invoke(*common, "--json", tmp_path / "one.json").exit_code == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "spikeclip_deploy.cli",
           *common, "--json", str(tmp_path / "ranks.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("zero-shot top-1") == 1  # rank 0 alone reports
    assert (tmp_path / "ranks.json").read_bytes() == (tmp_path / "one.json").read_bytes()


def test_verify_with_named_labels_and_templates(micro_ckpt, micro_exports, image_folder, tmp_path):
    """--labels and --templates reach the zero-shot weights and the report; a label list that
    does not match the classes is a clean error."""
    out = tmp_path / "v.json"
    common = ("verify", "--model", micro_ckpt, "--data", image_folder, "--limit", 3,
              "--lava-limit", 0, "--export", micro_exports["loihi"])
    r = invoke(*common, "--labels", "plane,car,bird", "--templates", "single", "--json", out)
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    assert v["labels"] == ["plane", "car", "bird"] and v["templates"] == ["a photo of a {}."]
    assert set(v["per_class_accuracy"]["emu"]) <= {"plane", "car", "bird"}
    r = invoke(*common, "--labels", "cat,dog")
    assert r.exit_code == 1 and "2 labels but the dataset has 3 classes" in r.output


@pytest.mark.lava
def test_run_on_loihi_hardware_without_a_board_says_how_to_simulate(micro_exports, cat_png, cli,
                                                                     monkeypatch):
    from spikeclip_deploy.backends import lava_chip

    monkeypatch.setattr(lava_chip, "board_unavailable", lambda: "no board in this test")
    common = ("run", "--target", "loihi", "--export", micro_exports["loihi"], "--image", cat_png,
              "--labels", "cat,dog")
    cli.clean_failure(invoke(*common, "--chip", "hw"), 1, "--chip hw asks for Loihi 2 hardware",
                      "no board in this test", "pass --chip sim")
    monkeypatch.setenv("SPIKECLIP_CHIP", "hw")
    cli.clean_failure(invoke(*common), 1, "no board in this test")



def test_export_offers_exactly_the_residual_forms_the_lowering_knows(tmp_path):
    """``--residual`` offers RESIDUAL_FORMS, the forms the graded_streams pass takes; an unknown
    one is refused naming them, before anything is written."""
    from spikeclip_deploy.targets import RESIDUAL_FORMS

    option = next(p for p in main.commands["export"].params if p.name == "residual")
    assert tuple(option.type.choices) == RESIDUAL_FORMS == ("graded", "copies")
    r = invoke("export", "--residual", "relays", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "'graded', 'copies'" in r.output, r.output
    assert not (tmp_path / "x").exists()
