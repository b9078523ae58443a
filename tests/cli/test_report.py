"""`report` end to end: verify the micro SNN and a tiny ANN twin, then compare them."""
import json

import pytest

from spikeclip_deploy.costs import image_macs


@pytest.fixture(scope="module")
def verified(micro_ckpt, twin_ckpt, image_folder, tmp_path_factory):
    from spikeclip_deploy.cli import main
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("report")
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])  # noqa: E731
    common = ("--data", image_folder, "--split", "val", "--val-fraction", "0.5")
    r = run("verify", "--model", micro_ckpt, *common, "--lava-limit", 0, "--json",
            folder / "v.json")
    assert r.exit_code == 0, r.output
    r = run("verify", "--model", twin_ckpt, *common, "--json", folder / "t.json")
    assert r.exit_code == 0, r.output
    assert "float" in r.output and "emu" not in r.output
    return folder


def test_report_compares_the_measured_results(verified, twin_config, cli):
    v, t = (json.loads((verified / f"{k}.json").read_text()) for k in ("v", "t"))
    r = cli.invoke("report", "--verify-json", verified / "v.json", "--twin-json",
                   verified / "t.json", "--json", verified / "r.json", "--markdown",
                   verified / "r.md")
    assert r.exit_code == 0, r.output
    table = json.loads((verified / "r.json").read_text())
    snn, twin = table["rows"]
    assert snn["n"] == twin["n"] == 12
    assert snn["accuracy"] == {k: v["accuracy"][k] for k in ("float", "emu")}
    assert twin["accuracy"] == {"float": t["accuracy"]["float"]}
    assert snn["sops_per_inference"] == v["energy"]["total_sops"]
    assert twin["macs_per_inference"] == image_macs(twin_config) == 259072
    e_twin = 4.6 * 259072 / 1e9
    assert twin["energy_per_inference_mj"] == pytest.approx(e_twin, rel=1e-12)
    assert table["energy_reduction"] == pytest.approx(
        1 - v["energy"]["energy_per_inference_mj"] / e_twin, rel=1e-12)
    # the micro SNN is a conv chain, not the twin's graph: the table says so
    assert not table["twin_has_snn_graph"]
    md = (verified / "r.md").read_text()
    assert r.output == md and "differ in more than the neuron" in md
    assert f"{100 * table['energy_reduction']:.2f} %" in md


def test_report_on_other_images_fails_cleanly(verified, cli, tmp_path):
    t = json.loads((verified / "t.json").read_text())
    t["data"]["seed"] = 1
    (tmp_path / "t.json").write_text(json.dumps(t))
    r = cli.invoke("report", "--verify-json", verified / "v.json", "--twin-json",
                   tmp_path / "t.json")
    cli.clean_failure(r, 1, "data.seed", "--split-seed")
    r = cli.invoke("report", "--verify-json", verified / "t.json")
    cli.clean_failure(r, 1, "has no energy report")


def test_the_export_summary_states_each_max_pool_on_chip():
    """A level's row gives its payload bound (it has registers but no bias), and each pool its
    tree, both trees' ReLU neurons and what it adds."""
    from spikeclip_deploy.report import export_summary

    level = {"name": "host0_l1", "type": "PoolNode", "shape": [3, 20], "kind": "relu",
             "current_pool": {"level": 1}, "loihi": {"vth": 0, "num_message_bits": 24},
             "payload_bound": 508}
    pool = {"tree": "separable", "channels": 3, "grid": [7, 6], "kernel": 3, "stride": 2,
            "padding": 1, "forms": {"flat": {"neurons": 300}, "separable": {"neurons": 249}},
            "neurons": 375, "relu_neurons": 249, "synapses": 800, "messages": 500}
    text = export_summary("x", {"target": "loihi", "dt": 1.0, "time_steps": 4,
                                "hardware": "loihi2", "layers": {"image": [level]},
                                "current_pool": {"form": "chip", "layers": {"image": {
                                    "host0": pool}}}, "files": {}})
    assert "host0_l1 PoolNode [3, 20]                 graded payload <= 508 (24 bits)" in text
    assert ("image max pool host0 on chip (3 x 7 x 6, kernel 3, stride 2, padding 1): separable "
            "tree (ReLU neurons: flat 300, separable 249); 375 neurons (249 ReLU), 800 synapses, "
            "500 messages a step at full activity") in text
