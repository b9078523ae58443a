"""Exports: --force replaces exports only, racing runs never clobber each other, manifests are
complete (the CLI side of each bad input is in test_corpus.py)."""
import json
import shutil

import pytest
from click.testing import CliRunner

from spikeclip_deploy import export as export_mod
from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.cli import main
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.manifest import load_export


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
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps(edit(m)))


@pytest.mark.parametrize("edit, message", [
    (lambda m: {**m, "files": {}}, "incomplete"),
    (lambda m: {**m, "files": {k: v for k, v in m["files"].items()
                               if k != "host/label_features.npy"}}, "host/label_features.npy"),
    (lambda m: {k: v for k, v in m.items() if k != "time_steps"}, "lacks the key(s) time_steps"),
    (lambda m: [m], "holds a list"),
    (lambda m: {**m, "format": "something/else@1"}, "has format 'something/else@1'"),
])
def test_incomplete_or_wrong_manifest_is_refused(export_copy, edit, message):
    _edit_manifest(export_copy, edit)
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_export(export_copy)


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
