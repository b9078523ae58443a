"""Exports: --force replaces exports only, racing runs never clobber each other, manifests are
complete (the CLI side of each bad input is in test_corpus.py)."""
import hashlib
import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from spikeclip_deploy import export as export_mod
from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.cli import main
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.exchange.manifest import load_export, seal


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder):
    """Every file under ``folder`` with its bytes (to prove nothing was modified)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strays(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.output.startswith("Error: "), r.output
    assert r.output.strip().count("\n") == 0, r.output
    for n in needles:
        assert n in r.output, r.output


def test_force_replaces_an_export(micro_ckpt, micro_exports, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(micro_exports["loihi"], out)
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert load_export(out)["target"] == "cpu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_force_renews_an_export_of_an_earlier_format(micro_ckpt, micro_exports, tmp_path):
    """An earlier format is refused with `export --force` as the fix, and --force replaces it."""
    out = tmp_path / "exp"
    shutil.copytree(micro_exports["cpu"], out)
    _edit_manifest(out, lambda m: {**m, "format": "spikeclip-deploy/export@2"})
    with pytest.raises(ExportError, match="export --force"):
        load_export(out)
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert load_export(out)["target"] == "cpu"


def test_two_racing_exports_one_wins_cleanly(micro_ckpt, tmp_path, monkeypatch):
    """The second export finishes inside the first one's run: the first then refuses."""
    out = tmp_path / "exp"
    real, calls = export_mod.write_host_part, []

    def inner_export(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            export_mod.export_model(export_mod.ExportConfig(model=str(micro_ckpt), target="cpu",
                                                            out=out))
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, "write_host_part", inner_export)
    with pytest.raises(ExportError, match="appeared while this export ran"):
        export_mod.export_model(export_mod.ExportConfig(model=str(micro_ckpt), target="loihi",
                                                        out=out))
    assert load_export(out)["target"] == "cpu"  # the winner is intact
    assert strays(tmp_path, "exp") == []


@pytest.fixture()
def export_copy(micro_exports, tmp_path):
    dst = tmp_path / "exp"
    shutil.copytree(micro_exports["cpu"], dst)
    return dst


def _edit_manifest(folder, edit):
    """Edit the manifest and seal it again (as a forger or a careless tool would), so that the
    checks behind its digest are the ones that must catch the edit."""
    path = folder / "manifest.json"
    m = edit(json.loads(path.read_text()))
    path.write_text(json.dumps(seal(m) if isinstance(m, dict) else m))


@pytest.mark.parametrize("edit, message", [
    (lambda m: {**m, "files": {}}, "incomplete"),
    (lambda m: {**m, "files": {k: v for k, v in m["files"].items()
                               if k != "host/label_features.npy"}}, "host/label_features.npy"),
    (lambda m: {k: v for k, v in m.items() if k != "time_steps"}, "lacks the field 'time_steps'"),
    (lambda m: [m], "holds a list"),
    (lambda m: {**m, "format": "something/else@1"}, "has format 'something/else@1'"),
    (lambda m: {**m, "time_steps": "4"}, "field 'time_steps' must be an integer, got \"4\""),
    (lambda m: {**m, "time_steps": 0}, "field 'time_steps' must be at least 1, got 0"),
    (lambda m: {**m, "host": {**m["host"], "image_size": 3.5}},
     "field 'host.image_size' must be an integer"),
    (lambda m: {**m, "hardware": "../../tmp/x"}, "field 'hardware' must name a profile"),
    (lambda m: {**m, "target": "gpu"}, "field 'target' is 'gpu'"),
    (lambda m: {**m, "files": {**m["files"], "host/labels.json": "0" * 63}},
     "'files' entry 'host/labels.json' has no sha256"),
])
def test_incomplete_or_wrong_manifest_is_refused(export_copy, edit, message):
    _edit_manifest(export_copy, edit)
    with pytest.raises(ExportError, match=re.escape(message)) as err:
        load_export(export_copy)
    assert "\n" not in str(err.value)


def test_backends_say_what_they_run(micro_exports):
    with get_backend("cpu")(micro_exports["loihi"]) as cpu:
        assert "--target loihi export" in cpu.description and "not bit-exact" in cpu.description
    with get_backend("cpu")(micro_exports["cpu"]) as cpu:
        assert cpu.description.startswith("cpu backend on a --target cpu export")
    with pytest.raises(ExportError, match="--target cpu export; the loihi backend runs exports "
                                          "made with --target loihi"):
        get_backend("loihi")(micro_exports["cpu"])


def test_verify_cpu_on_a_loihi_export_says_so(micro_ckpt, micro_exports, image_folder, tmp_path):
    out = tmp_path / "v.json"
    r = invoke("verify", "--target", "cpu", "--model", micro_ckpt, "--data", image_folder,
               "--limit", "2", "--export", micro_exports["loihi"], "--json", out)
    assert r.exit_code == 0, r.output
    assert "cpu: cpu backend on a --target loihi export: the fixed-point graph" in r.output
    assert json.loads(out.read_text())["export"]["target"] == "loihi"


def test_unlisted_files_are_refused(export_copy):
    (export_copy / "chip" / "extra.nir").write_bytes(b"x")
    with pytest.raises(ExportError, match="chip/extra.nir"):
        load_export(export_copy)
    (export_copy / "chip" / "extra.nir").unlink()
    assert load_export(export_copy)["target"] == "cpu"  # intact again


@pytest.mark.parametrize("field, value", [("time_steps", 5), ("dt", 0.001), ("target", "loihi"),
                                          ("passes", []), ("netx", {})])
def test_a_manifest_edited_after_export_is_refused_naming_the_field(export_copy, field, value):
    """Edits that keep the schema (a changed time step count, an added record) are caught by
    the manifest's own digest, field by field, before any file is hashed or run."""
    path = export_copy / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, field: value}, indent=1))
    what = "was added after export" if field == "netx" else "was edited after export"
    with pytest.raises(ExportError, match=f"field '{field}' {what}.*export --force") as err:
        load_export(export_copy)
    assert "\n" not in str(err.value)
    path.write_text(json.dumps({k: v for k, v in m.items() if k != "layers"}))
    with pytest.raises(ExportError, match="field 'layers' was removed after export"):
        load_export(export_copy)
    path.write_text(json.dumps({k: v for k, v in m.items() if k != "manifest_sha256"}))
    with pytest.raises(ExportError, match="lacks its digest record 'manifest_sha256'"):
        load_export(export_copy)
    path.write_text(json.dumps(m))  # the same content in other whitespace: intact
    assert load_export(export_copy)["time_steps"] == m["time_steps"]


def test_the_digest_is_the_sha256_of_each_fields_canonical_json(micro_exports):
    m = json.loads((micro_exports["loihi"] / "manifest.json").read_text())
    sealed = m.pop("manifest_sha256")
    assert sorted(sealed) == sorted(m)
    for key, value in m.items():
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        assert sealed[key] == hashlib.sha256(canonical).hexdigest(), key


@pytest.mark.parametrize("entry, why", [
    ("/etc/passwd", "is an absolute path"),
    ("../outside.bin", "climbs out with '..'"),
    ("host/../../outside.bin", "climbs out with '..'"),
    ("host/./labels.json", "is not a normalised path"),
    ("host//labels.json", "is not a normalised path"),
    ("host\\labels.json", "backslash"),
    ("C:/x", "is an absolute path"),
    ("", "is empty"),
])
def test_a_manifest_naming_a_file_outside_its_export_is_refused(export_copy, tmp_path, entry,
                                                                why):
    """Even sealed again (a forged export), a path outside the export is refused before any
    file is read."""
    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"secret")
    digest = hashlib.sha256(b"secret").hexdigest()
    _edit_manifest(export_copy, lambda m: {**m, "files": {**m["files"], entry: digest}})
    with pytest.raises(ExportError, match=re.escape(why)) as err:
        load_export(export_copy)
    assert "'files' entry" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["host/labels.json", "host/tokenizer", "chip/outside.bin"])
def test_a_symbolic_link_in_an_export_is_refused(export_copy, tmp_path, where):
    """A listed file replaced by a link to a copy of itself outside the export (same bytes, same
    sha256), a linked folder, or an unlisted link: each is refused, naming the link."""
    link = export_copy / where
    target = tmp_path / "elsewhere" / link.name
    target.parent.mkdir()
    if link.is_dir():
        shutil.copytree(link, target)
        shutil.rmtree(link)
    elif link.exists():
        shutil.copy(link, target)
        link.unlink()
    else:
        target.write_bytes(b"x")
    link.symlink_to(target)
    with pytest.raises(ExportError, match=f"{re.escape(str(link))} is a symbolic link"):
        load_export(export_copy)


@pytest.mark.parametrize("victim", ["host/labels.json", "chip/image_encoder.nir",
                                    "host/tokenizer/tokenizer_config.json"])
def test_a_file_listed_in_the_manifest_but_removed_is_refused(export_copy, victim):
    """A check that skipped missing files would accept this export."""
    assert victim in json.loads((export_copy / "manifest.json").read_text())["files"]
    (export_copy / victim).unlink()
    with pytest.raises(ExportError, match=f"export file {re.escape(str(export_copy / victim))} "
                                          f"is missing"):
        load_export(export_copy)


@pytest.mark.parametrize("key, value", [("image.stack.1.0.weight", float("nan")),
                                        ("text.readout.proj.weight", float("-inf"))])
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_layer(micro_ckpt, tmp_path,
                                                                         key, value):
    from spikeclip_deploy.checkpoint import load_model, save_model

    model, card, _ = load_model(str(micro_ckpt))
    with torch.no_grad():
        model.state_dict()[key].view(-1)[3] = value
    bad = tmp_path / "bad.safetensors"
    save_model(bad, model, card["metadata"])
    shutil.copytree(micro_ckpt.with_suffix(".tokenizer"), bad.with_suffix(".tokenizer"))
    layer, _, field = key.rpartition(".")
    r = invoke("export", "--target", "loihi", "--model", bad, "--out", tmp_path / "exp")
    one_line_error(r, f"layer {layer} holds 1 NaN or infinite value(s) in its {field}",
                   "retrain")
    assert not (tmp_path / "exp").exists()
