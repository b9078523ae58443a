"""``spikeclip-deploy map`` on the micro model's export: the table, the JSON, clean failures."""
import json

import nir
import numpy as np


def lif_neurons(export, side):
    graph = nir.read(export / "chip" / f"{side}_encoder.nir")
    return sum(int(np.prod(np.asarray(n.tau).shape)) for n in graph.nodes.values()
               if isinstance(n, nir.LIF))


def test_map_micro_export(cli, micro_exports, tmp_path):
    """Every LIF neuron is placed once; the micro model fits one chip of one system; the JSON
    holds what the table prints."""
    export = micro_exports["loihi"]
    r = cli.invoke("map", export, "--system", "oheo-gulch", "--json", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    found = json.loads((tmp_path / "m.json").read_text())
    assert found["system"] == {"name": "oheo-gulch", "chips": 1}
    for side in ("image", "text"):
        totals = found["encoders"][side]["totals"]
        assert totals["neurons"] == lif_neurons(export, side)
        assert totals["chips"] == 1 and totals["chip_crossings"] == 0
        assert totals["cores"] == sum(la["cores"] for la in found["encoders"][side]["layers"])
        assert f"{totals['neurons']:,}" in r.output and f"{side} encoder:" in r.output
    assert "onto oheo-gulch (1 chip(s) of loihi2)" in r.output


def test_map_fails_cleanly(cli, micro_exports):
    cli.clean_failure(cli.invoke("map", micro_exports["loihi"], "--system", "cray"), 1,
                      "unknown system 'cray'", "kapoho-point")
    cli.clean_failure(cli.invoke("map", micro_exports["cpu"]), 1,
                      "--target cpu export", "map a --target loihi export")


def test_map_assume(cli, micro_exports, tmp_path):
    """An assumed figure is printed and recorded beside the profile's; a bad key fails cleanly
    naming the valid keys."""
    r = cli.invoke("map", micro_exports["loihi"], "--assume", "input_axons_per_core=8192",
                   "--json", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    assert "assuming input_axons_per_core = 8,192 (the profile's: 4,096)" in r.output
    assert json.loads((tmp_path / "m.json").read_text())["assumptions"] == {
        "input_axons_per_core": {"assumed": 8192, "profile": 4096}}
    cli.clean_failure(cli.invoke("map", micro_exports["loihi"], "--assume", "axons=1"), 1,
                      "unknown key 'axons'", "input_axons_per_core")
