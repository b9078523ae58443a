"""Where exports go and how commands are handed one: `export` and `run` write under the working
directory, `energy` and `map` take `--export DIR` as `verify` and `run` do, and a command given
none makes one first, saying so."""
from __future__ import annotations

import json

import pytest


def test_export_without_out_writes_under_the_working_directory(cli, micro_ckpt, tmp_path,
                                                               monkeypatch):
    here = tmp_path / "somewhere" / "else"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    r = cli.invoke("-q", "export", "--target", "cpu", "--model", micro_ckpt)
    assert r.exit_code == 0, r.output
    out = here / "exports" / "micro-cpu"
    assert json.loads((out / "manifest.json").read_text())["target"] == "cpu"
    assert sorted(p.name for p in here.iterdir()) == ["exports"]


def test_run_without_export_makes_the_default_one_under_the_working_directory(
        cli, micro_ckpt, tmp_path, cat_png, monkeypatch, caplog):
    from spikeclip_deploy import export

    monkeypatch.setattr(export, "default_checkpoint_name", lambda: str(micro_ckpt))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="spikeclip_deploy.export"):
        r = cli.invoke("run", "--target", "loihi-emu", "--image", cat_png, "--labels", "cat,dog",
                       "--json")
    assert r.exit_code == 0, r.output
    made = tmp_path / "exports" / "micro-loihi"  # the loihi export the emulator runs
    assert json.loads(r.output)["export"] == str(made) and "no export at" in caplog.text
    assert json.loads((made / "manifest.json").read_text())["target"] == "loihi"


def test_energy_runs_on_the_export_it_is_given(cli, micro_ckpt, micro_exports, image_folder,
                                               tmp_path, monkeypatch, caplog):
    """With --export no export is made (the exporter would fail here); the report equals the one
    from an export made first, which the command says it makes."""
    from spikeclip_deploy import export

    common = ("energy", "--model", micro_ckpt, "--data", image_folder, "--limit", 3)
    with caplog.at_level("WARNING", logger="spikeclip_deploy.export"):
        r = cli.invoke(*common, "--json", tmp_path / "made.json")
    assert r.exit_code == 0, r.output
    assert "no --export given: exporting" in caplog.text
    monkeypatch.setattr(export, "export_model", lambda cfg: pytest.fail("exported again"))
    r = cli.invoke(*common, "--json", tmp_path / "given.json", "--export", micro_exports["loihi"])
    assert r.exit_code == 0, r.output
    given, made = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("given", "made"))
    assert given == made and given["n"] == 3


def test_map_takes_the_export_as_an_option_or_an_argument(cli, micro_exports, tmp_path):
    export = micro_exports["loihi"]
    for args, out in ((("--export", export), "a.json"), ((export,), "b.json"),
                      ((export, "--export", export), "c.json")):
        r = cli.invoke("map", *args, "--json", tmp_path / out)
        assert r.exit_code == 0, r.output
    a, b, c = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json", "c.json"))
    assert a == b == c and a["encoders"]["image"]["totals"]["cores"] > 0
    cli.clean_failure(cli.invoke("map", export, "--export", tmp_path), 2, "differ")
    cli.clean_failure(cli.invoke("map"), 2, "--export")
