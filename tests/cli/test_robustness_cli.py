"""`spikeclip-deploy robustness`: the table written as JSON and Markdown (the same table as
printed), and clean refusals."""
import json


def test_cli_writes_json_and_markdown(cli, micro_ckpt, micro_exports, image_folder, tower,
                                      tmp_path):
    r = cli.invoke("robustness", "--model", micro_ckpt, "--data", image_folder, "--limit", 4,
                   "--teacher", f"offline-minilm:{tower}", "--distractors", "stl10",
                   "--export", micro_exports["loihi"],
                   "--json", tmp_path / "t.json", "--markdown", tmp_path / "t.md")
    assert r.exit_code == 0, r.output
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["n"] == 4 and len(table["rows"]) == 8
    assert table["export"] == str(micro_exports["loihi"])
    md = (tmp_path / "t.md").read_text()
    assert md == r.output
    body = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert len(body) == 8 and all(ln.count(" % [") == 3 for ln in body)
    assert "| distractors: + stl10 labels | 11 | 18 |" in md
    assert "airplane -> aircraft, automobile -> car, bird -> songbird" in md


def test_cli_refuses_an_ann_and_no_data(cli, twin_ckpt, image_folder):
    cli.clean_failure(cli.invoke("robustness", "--model", twin_ckpt, "--data", image_folder),
                      1, "is an ANN", "spiking model")
    cli.clean_failure(cli.invoke("robustness", "--model", twin_ckpt), 2, "--data")
