"""Exports never destroy what is not theirs, never leave stray files, and fail cleanly."""
import json
import os
import resource
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from spikeclip_deploy import export as export_mod
from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.cli import main
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.manifest import REQUIRED_FILES, load_export


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


def test_force_refuses_a_directory_that_is_not_an_export(micro_ckpt, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    (out / "sub" / "manifest.json").write_text('{"format": "spikeclip-deploy/export@1"}')
    before = snapshot(out)
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out, "--force")
    one_line_error(r, str(out), "not an export")
    assert snapshot(out) == before and strays(tmp_path, "mine") == []


def test_force_refuses_the_working_directory(micro_ckpt, micro_exports, tmp_path, monkeypatch):
    here = tmp_path / "here"
    shutil.copytree(micro_exports["cpu"], here)  # even a real export is not replaced from inside
    before = snapshot(here)
    monkeypatch.chdir(here)
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", ".", "--force")
    one_line_error(r, "current directory")
    assert snapshot(here) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no `..old-*` beside it


def test_force_replaces_an_export(micro_ckpt, micro_exports, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(micro_exports["loihi"], out)
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert load_export(out)["target"] == "cpu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.parametrize("force", [False, True])
def test_a_destination_that_appears_during_the_run_is_not_replaced(micro_ckpt, tmp_path,
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
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", out,
               *(["--force"] if force else []))
    one_line_error(r, str(out), "not an export" if force else "appeared while this export ran")
    assert snapshot(out) == {"theirs.txt": b"other run"}
    assert strays(tmp_path, "exp") == []


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


def test_out_below_a_file_is_a_clean_error(micro_ckpt, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = invoke("export", "--target", "cpu", "--model", micro_ckpt, "--out", tmp_path / "afile" / "e")
    one_line_error(r, str(tmp_path / "afile"), "is a file, not a directory")
    assert (tmp_path / "afile").read_text() == "x"


def test_file_size_limit_fails_cleanly_and_leaves_nothing(micro_ckpt, tmp_path):
    """A file-size limit (as a full disk) while writing the NIR files: a one-line error naming
    the file, exit 1, no partial directory. (h5py writing to the file itself segfaulted.)"""
    out = tmp_path / "exp"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "spikeclip_deploy.cli", "export", "--target",
                           "cpu", "--model", str(micro_ckpt), "--out", str(out)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          env={**os.environ, "SPIKECLIP_LIF_COMPILE": "0"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")] == \
        [proc.stderr.strip().splitlines()[-1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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


def test_unlisted_and_unparsable_manifests(export_copy, tmp_path):
    (export_copy / "chip" / "extra.nir").write_bytes(b"x")
    with pytest.raises(ExportError, match="chip/extra.nir"):
        load_export(export_copy)
    (export_copy / "chip" / "extra.nir").unlink()
    load_export(export_copy)  # intact again
    (export_copy / "manifest.json").write_text("{not json")
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    r = invoke("run", "--target", "cpu", "--export", export_copy, "--image", png, "--labels", "a,b")
    one_line_error(r, "manifest.json is not valid JSON")


def test_every_file_a_backend_reads_is_required():
    """The required list names exactly the files the host runtime and chip loader open."""
    assert set(REQUIRED_FILES) == {f"chip/{s}_encoder.nir" for s in ("image", "text")} | {
        f"host/{n}.onnx" for n in ("image_encode", "text_encode", "image_readout", "text_readout")
    } | {"host/labels.json", "host/label_features.npy"}


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
    assert json.loads(out.read_text())["backends"]["cpu"]["export_target"] == "loihi"
