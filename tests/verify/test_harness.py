"""The verification harness on the micro model: accuracies, intervals and agreements recounted
from predictions made here; the emulator confirmed by Lava spike for spike; shards merged equal
one run; a planted emulator error is reported where it happens."""
import json

import numpy as np
import pytest
import torch

from spikeclip_deploy import backends
from spikeclip_deploy.backends.emulator import EmulatorBackend
from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.data import load_dataset
from spikeclip_deploy.errors import ConfigError, VerificationError
from spikeclip_deploy.plots import raster_matrix, write_plots
from spikeclip_deploy.verify.harness import (VerifyConfig, evaluate, merge, run_verification,
                                             verify)
from spikeclip_deploy.verify.results import summarize
from spikeclip_deploy.verify.selection import Shard, select
from spikeclip_deploy.verify.stats import wilson_ci95

NAMES = ["airplane", "automobile", "bird"]


def _cfg(micro_ckpt, micro_exports, image_folder, **kw):
    return VerifyConfig(model=str(micro_ckpt), data=image_folder, export=micro_exports["loihi"],
                        **kw)


def _images(cfg):
    ds = load_dataset(cfg.data, 32)
    sel = select(ds, cfg.split, cfg.val_fraction, cfg.seed, cfg.limit, cfg.shard)
    return ds.images[sel.index].numpy(), ds.labels[sel.index].numpy()


@pytest.mark.lava
def test_every_image_by_default_emulator_on_all_lava_on_a_sample(micro_ckpt, micro_exports,
                                                                  image_folder, zero_shot):
    """24 images (the whole folder); the emulator's and Lava's predictions are the fixed-point
    model's, computed here independently; Lava ran the first 5 of the seeded order."""
    cfg = _cfg(micro_ckpt, micro_exports, image_folder, lava_limit=5, batch_size=7,
               backends=("loihi-emu", "cpu"))
    r = run_verification(cfg)
    images, labels = _images(cfg)
    assert r["n"] == 24 == len(labels) and r["data"]["available"] == 24 and r["lava_n"] == 5
    fixed = zero_shot.loihi(micro_exports["loihi"], images, NAMES).argmax(1)
    flt = zero_shot.float_model(micro_ckpt, images, NAMES).argmax(1)
    assert r["accuracy"]["emu"] == float((fixed == labels).mean())
    assert r["accuracy"]["lava"] == float((fixed[:5] == labels[:5]).mean())
    assert r["accuracy"]["float"] == float((flt == labels).mean())
    assert r["accuracy_on_lava_sample"]["float"] == float((flt[:5] == labels[:5]).mean())
    assert r["agreement"]["emu_vs_float"] == float((fixed == flt).mean())
    assert r["agreement_n"] == {"emu_vs_lava": 5, "emu_vs_cpu": 24, "emu_vs_float": 24,
                                "lava_vs_cpu": 5, "lava_vs_float": 5, "cpu_vs_float": 24}
    assert r["spike_mismatches"]["emu_vs_lava"] == 0
    assert r["divergence"]["emu_vs_lava"]["samples"] == 5
    k = int((fixed == labels).sum())
    assert r["accuracy_ci95"]["emu"] == wilson_ci95(k, 24)
    for c, name in enumerate(NAMES):
        mine = labels == c
        assert r["per_class_accuracy"]["emu"][name] == float((fixed[mine] == c).mean())
    # the CPU reference reads the fixed-point graph with exact decays: close, not bit-exact
    assert r["divergence"]["emu_vs_cpu"]["samples"] == 24


@pytest.mark.lava
def test_the_float_model_beside_the_backends_changes_nothing(micro_ckpt, micro_exports,
                                                             image_folder, monkeypatch):
    """With two threads the float model runs in a thread of its own, from the set-up on: the
    partial result is one thread's, the threads are restored after, and Lava (which forks)
    never runs while the float model does, neither on the images nor on the class weights' texts
    in the set-up (its first piece is held long enough to be caught running)."""
    import threading
    import time

    import numba

    from spikeclip_deploy.backends.lava import LavaBackend
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP

    cfg = _cfg(micro_ckpt, micro_exports, image_folder, lava_limit=5, batch_size=7)
    torch.set_num_threads(1)
    one = evaluate(cfg)
    spans = {"float": [], "lava": []}
    lava = LavaBackend.run_chip

    def timed(floats):
        def float_model(self, images):
            began = time.perf_counter()
            if not spans["float"]:
                time.sleep(1.0)
            out = floats(self, images)
            spans["float"].append((began, time.perf_counter(), threading.get_ident()))
            return out
        return float_model

    def on_lava(self, side, current):
        began = time.perf_counter()
        out = lava(self, side, current)
        spans["lava"].append((began, time.perf_counter(), side))
        return out

    for name in ("encode_image_spikes", "encode_image_counts"):
        monkeypatch.setattr(SpikeCLIP, name, timed(getattr(SpikeCLIP, name)))
    monkeypatch.setattr(LavaBackend, "run_chip", on_lava)
    torch.set_num_threads(2)
    numba.set_num_threads(2)
    two = evaluate(cfg)
    assert torch.get_num_threads() == 2 and numba.get_num_threads() == 2
    assert {ident for *_, ident in spans["float"]} - {threading.get_ident()}
    assert {side for *_, side in spans["lava"]} == {"text", "image"}
    assert all(end <= l0 or f0 >= l1 for f0, end, _ in spans["float"]
               for l0, l1, _ in spans["lava"])
    assert json.dumps(two, sort_keys=True) == json.dumps(one, sort_keys=True)


def test_split_limit_and_shards_choose_the_images(image_folder):
    ds = load_dataset(image_folder, 32)
    every = select(ds, "all", 0.5, 3, None)
    assert sorted(every.index.tolist()) == list(range(24)) and every.available == 24
    val = select(ds, "val", 0.5, 3, None)
    assert len(val.index) == 12 and np.bincount(ds.labels[val.index]).tolist() == [4, 4, 4]
    first = select(ds, "val", 0.5, 3, 5)
    assert first.index.tolist() == val.index[:5].tolist() and first.total == 5
    shards = [select(ds, "val", 0.5, 3, 5, Shard(i, 2)) for i in range(2)]
    assert [s.positions.tolist() for s in shards] == [[0, 2, 4], [1, 3]]
    assert shards[1].index.tolist() == val.index[[1, 3]].tolist()
    with pytest.raises(ConfigError, match="I must be in 0 .. N-1"):
        Shard.parse("2/2")
    with pytest.raises(ConfigError, match="expected I/N"):
        Shard.parse("half")


def test_two_shards_merged_equal_one_run(micro_ckpt, micro_exports, image_folder, tmp_path):
    """Emulator on all 11 images, Lava replaced by the emulator on the first 4 (fast here):
    every figure of the merged shards equals the single run's."""
    cfg = _cfg(micro_ckpt, micro_exports, image_folder, limit=11, lava_limit=0, batch_size=4,
               backends=("loihi-emu", "cpu"))
    whole = verify(cfg, tmp_path / "whole.json")
    parts = [tmp_path / f"part{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        shard = verify(VerifyConfig(**{**cfg.__dict__, "shard": Shard(i, 2)}), part)
        assert shard["n"] == (6, 5)[i] and not shard["complete"]
    merged = merge(parts[::-1], tmp_path / "merged.json")
    assert merged == whole
    # the first image's spike raster travels in shard 0's partial result only
    assert [("raster" in json.loads(p.read_text())) for p in parts] == [True, False]
    assert (tmp_path / "merged.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    with pytest.raises(ConfigError, match=r"shards \[0\] of \[2\]"):
        merge(parts[:1])
    other = json.loads(parts[1].read_text())
    other["run"]["labels"] = ["a", "b", "c"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="differ in labels"):
        merge([parts[0], tmp_path / "other.json"])


class _OneSpikeOff(EmulatorBackend):
    """The emulator with one spike flipped: lif1, step 2, neuron (0, 3, 5) of every image."""

    def run_chip(self, side, current):
        spikes = super().run_chip(side, current)
        if side == "image":
            spikes[1][:, 2, 0, 3, 5] ^= 1
        return spikes


def test_a_spike_off_is_reported_where_it_happens(micro_ckpt, micro_exports, image_folder,
                                                  monkeypatch, tmp_path):
    """Lava's place taken by the true emulator, the emulator's by one with a spike flipped."""
    real = backends.get_backend
    monkeypatch.setattr(backends, "get_backend",
                        lambda name: {"loihi": EmulatorBackend, "loihi-emu": _OneSpikeOff}.get(
                            name) or real(name))
    cfg = _cfg(micro_ckpt, micro_exports, image_folder, limit=6, lava_limit=3)
    out = tmp_path / "v.json"
    with pytest.raises(VerificationError, match="first at layer lif1, step 2"):
        verify(cfg, out, figures=lambda result, raster: write_plots(result, raster,
                                                                     tmp_path / "figs"))
    assert (tmp_path / "figs" / "divergence.png").read_bytes()[:4] == b"\x89PNG"  # drawn first
    div = json.loads(out.read_text())["divergence"]["emu_vs_lava"]
    assert div["spike_mismatches"] == 3 and div["samples_diverging"] == 3
    assert div["first"] == {"position": [0, 1, 2], "layer": ["lif1"] * 3, "step": [2] * 3,
                            "neurons": [1, 1, 1]}
    assert div["mismatches_by_layer"]["lif1"] == {"spikes": 3, "fraction": 3 / (3 * 4 * 8 * 16 * 16)}
    assert div["mismatches_by_layer"]["lif0"]["spikes"] == 0


def test_float_rates_and_the_first_images_raster(micro_ckpt, micro_exports, image_folder,
                                                 image_spikes):
    """``firing_rates["float"]``: the float model's spikes in every chip LIF (spike pooling's
    OR included), recounted here; the raster: the emulator's spikes of the selection's first
    image, run here on that image alone."""
    cfg = _cfg(micro_ckpt, micro_exports, image_folder, limit=7, lava_limit=0, batch_size=3)
    partial = evaluate(cfg)
    rates = summarize(partial)["firing_rates"]
    images, _ = _images(cfg)
    model = load_model(str(micro_ckpt))[0]
    batches = [image_spikes.float_model(model, torch.from_numpy(images[i:i + 3]))[1]
               for i in range(0, 7, 3)]  # the harness's batches: the same float arithmetic
    spikes = [np.concatenate(layer) for layer in zip(*batches)]
    assert list(rates["float"]) == list(rates["emu"]) and len(spikes) == len(rates["float"])
    assert rates["float"] == {name: int(s.sum()) / s.size
                              for name, s in zip(rates["float"], spikes)}
    raster = partial["raster"]
    assert (raster["backend"], raster["position"], raster["index"]) == (
        "emu", 0, int(select(load_dataset(cfg.data, 32), "all", 0.1, 0, 7).index[0]))
    with EmulatorBackend(micro_exports["loihi"]) as emu:
        first = emu.encode_images(images[:1])[1]
    assert list(raster["layers"]) == list(rates["emu"])
    for layer, s in zip(raster["layers"].values(), first):
        t = s.shape[1]
        assert (raster_matrix(layer) == s[0].reshape(t, -1).T).all()


def test_shards_are_matched_by_image_content_not_by_path(micro_ckpt, micro_exports, image_folder,
                                                         tmp_path):
    """Shard 1 computed on a copy of the images under another path merges with shard 0 into
    the single run's figures; shard 1 computed after one image changed under the same path is
    refused, naming the content digest (the path alone could not tell)."""
    import hashlib
    import shutil

    from spikeclip_deploy.data import content_digest

    here, there = tmp_path / "here", tmp_path / "there"
    shutil.copytree(image_folder, here)
    shutil.copytree(image_folder, there)
    cfg = _cfg(micro_ckpt, micro_exports, here, limit=6, lava_limit=0, backends=("loihi-emu",))
    shard = lambda i, data, out: verify(replace_cfg(cfg, data=data, shard=Shard(i, 2)), out)  # noqa: E731
    whole = verify(cfg)
    shard(0, here, tmp_path / "p0.json")
    shard(1, there, tmp_path / "p1.json")
    merged = merge([tmp_path / "p0.json", tmp_path / "p1.json"])
    assert merged["accuracy"] == whole["accuracy"] and merged["n"] == 6
    ds = load_dataset(here, 32)
    h = hashlib.sha256(json.dumps(list(NAMES)).encode())  # the digest, recomputed here
    h.update(ds.labels.numpy().astype("<i8").tobytes())
    h.update(ds.images.numpy().tobytes())
    assert merged["data"]["content_sha256"] == h.hexdigest() == content_digest(ds)

    png = sorted((here / "bird").iterdir())[0]
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png)
    shard(1, here, tmp_path / "p1-changed.json")
    with pytest.raises(ConfigError, match=r"differ in data\.content_sha256\)"):
        merge([tmp_path / "p0.json", tmp_path / "p1-changed.json"])


def replace_cfg(cfg, **kw):
    return VerifyConfig(**{**cfg.__dict__, **kw})


def test_merge_never_writes_over_its_inputs(tmp_path, micro_ckpt, micro_exports, image_folder):
    cfg = _cfg(micro_ckpt, micro_exports, image_folder, limit=4, lava_limit=0,
               backends=("loihi-emu",))
    parts = [tmp_path / f"p{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        verify(replace_cfg(cfg, shard=Shard(i, 2)), part)
    before = [p.read_bytes() for p in parts]
    (tmp_path / "link.json").symlink_to(parts[1])
    for kw in ({"json_path": parts[0]}, {"energy_json": tmp_path / "link.json"},
               {"json_path": tmp_path / "." / "p1.json"}):
        with pytest.raises(ConfigError, match="is one of the shards being merged"):
            merge(parts, **kw)
    assert [p.read_bytes() for p in parts] == before


def test_verification_never_builds_an_export_itself(micro_ckpt, micro_exports, image_folder):
    """Given no export, it runs the one ``make_export`` writes (the command line's exporter,
    here a copy of an export made beforehand), asked once with the run's model and target;
    given neither, it asks for one."""
    import shutil

    asked = []

    def make(model, target, init, seed, out):
        asked.append((model, target, init, seed))
        return shutil.copytree(micro_exports["loihi"], out)

    cfg = VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=2, lava_limit=0)
    made = run_verification(replace_cfg(cfg, make_export=make))
    given = run_verification(replace_cfg(cfg, export=micro_exports["loihi"]))
    assert asked == [(str(micro_ckpt), "loihi", "checkpoint", 0)]
    assert made["accuracy"] == given["accuracy"] and made["n"] == 2
    with pytest.raises(ConfigError, match="no export of .* for --target loihi was given; make "
                                          "one with `spikeclip-deploy export --target loihi`"):
        evaluate(cfg)


def test_the_float_models_attention_on_chip_is_tallied_step_by_step(image_folder, tmp_path):
    """former-micro (random init) exported with attention on chip (its max pools on the host:
    this is attention's tally): verify tallies the float model's spikes step by step (a product
    is a coincidence within a step, which counts over the steps lose), the same tally as one
    built here from the float model's own spikes."""
    from spikeclip_deploy.export import ExportConfig, export_model
    from spikeclip_deploy.model_source import model_source
    from spikeclip_deploy.verify.energy import SpikeTally

    export = export_model(ExportConfig(model="spikeclip-former-micro", init="random",
                                       current_pool="host", out=tmp_path / "former"))[0]
    cfg = VerifyConfig(model="spikeclip-former-micro", init="random", data=image_folder,
                       export=export, backends=("loihi-emu",), lava_limit=0, limit=5)
    got = evaluate(cfg)["tallies"]["float"]
    model = model_source("spikeclip-former-micro", "random", 0)[0]
    emu = EmulatorBackend(export)
    want = SpikeTally(emu.layers["image"], emu.time_steps)
    with torch.inference_mode():
        spikes = model.encode_image_spikes(torch.from_numpy(_images(cfg)[0]))[1]
    want.add([s.to(torch.uint8).transpose(0, 1).numpy() for s in spikes])
    assert sum(want.data["attention_events"].values()) > 0
    assert got["attention_events"] == want.data["attention_events"]
    assert got["sample_attention"] == want.data["sample_attention"]
