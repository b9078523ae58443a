"""The SNN against its ANN twin (Table 7): figures from verify results, checked by hand."""
import dataclasses
import json

import pytest

from spikeclip_deploy.comparison import compare, markdown, write_report
from spikeclip_deploy.errors import ConfigError

EM = {"name": "energy-45nm", "description": "", "e_mac_pj": 4.6, "e_ac_pj": 0.9,
      "scope": "computation only"}
DATA = {"source": "/x/cifar10-train.tar.gz", "split": "val", "val_fraction": 0.1, "seed": 0,
        "limit": None, "available": 50000, "selected": 5000}
TWIN_MACS = 259072  # tests/test_costs.py: the tiny twin's MACs by hand


def result(config, accuracy, ci, **extra):
    """A verify summary with what the comparison reads."""
    return {"model": config.name + "-ckpt", "n": 5000, "data": dict(DATA),
            "labels": ["cat", "dog"], "templates": ["a photo of a {}."],
            "protocol": {"noisy_factor": 1, "synonym_fraction": 0.0},
            "accuracy": accuracy, "accuracy_ci95": ci, "config": config.to_dict(), **extra}


@pytest.fixture()
def snn(twin_config):
    """The tiny twin's spiking form; its energy layers are the tiny graph's FLOPs (the depthwise
    conv2 read by two LIFs: copied, counted once), 20 000 SOPs, E_SNN set to a quarter of the
    twin's 4.6 pJ x 259 072 MACs."""
    cfg = dataclasses.replace(twin_config, name="snn-tiny", neuron="lif", time_steps=4,
                              text_arch="spiking-mlp")
    flops = {"pool0": 9216, "conv0": 73728, "pool1": 4608, "conv1": 36864, "conv2": 4608,
             "conv3": 8192, "conv4": 8192}
    layers = [{"name": k, "copy_of": None, "flops": v} for k, v in flops.items()]
    layers.append({"name": "conv2_lif6", "copy_of": "conv2", "flops": 4608})
    energy = {"time_steps": 4, "layers": layers, "first_layer_macs": 110592,
              "readout_macs": 3072, "host_op_macs_per_step": 0, "total_sops": 20000,
              "host_macs_executed": 4 * 110592 + 3072,
              "energy_per_inference_mj": 4.6 * TWIN_MACS / 4 / 1e9,
              "energy_per_inference_mj_ci95": [2.9e-4, 3.0e-4],
              "ann_energy_per_inference_mj": 4.6 * TWIN_MACS / 1e9, "energy_model": EM,
              "spikes_from": "emu"}
    return result(cfg, {"float": 0.5, "emu": 0.45, "lava": 0.5},
                  {"float": [0.48, 0.52], "emu": [0.43, 0.47], "lava": [0.3, 0.7]},
                  energy=energy)


@pytest.fixture()
def twin(twin_config):
    return result(twin_config, {"float": 0.55}, {"float": [0.53, 0.57]})


def test_table_against_the_twin_by_hand(snn, twin):
    t = compare(snn, twin)
    s, a = t["rows"]
    assert (s["role"], a["role"]) == ("snn", "ann-twin")
    # parameters: the twin's 4 861 + 129 992 (tests/test_costs.py); the SNN's TDW has 4 steps
    # on both sides (+3 image, +4 text: spiking text MLP, no GELU) -> 134 860
    assert (a["parameters"], s["parameters"]) == (4861 + 129992, 134860)
    assert (s["time_steps"], a["time_steps"], s["neuron"], a["neuron"]) == (4, 1, "lif", "relu")
    assert s["accuracy"] == {"float": 0.5, "emu": 0.45} and a["accuracy"] == {"float": 0.55}
    assert a["accuracy_ci95"] == {"float": [0.53, 0.57]}
    assert (s["sops_per_inference"], s["macs_per_inference"]) == (20000, 4 * 110592 + 3072)
    assert (a["sops_per_inference"], a["macs_per_inference"]) == (0, TWIN_MACS)
    assert a["energy_per_inference_mj"] == pytest.approx(4.6 * TWIN_MACS / 1e9, rel=1e-12)
    assert t["energy_ratio_snn_over_ann"] == pytest.approx(0.25, rel=1e-12)
    assert t["energy_reduction"] == pytest.approx(0.75, rel=1e-12)
    assert t["snn_graph_ann_macs"] == TWIN_MACS and t["twin_has_snn_graph"]
    assert s["chip_model_energy_per_inference_mj"] is None  # a report without the chip model
    md = markdown(t)
    assert "**75.00 %**" in md and "259,072" in md and "0.001192" in md
    assert "50.00 % [48.00, 52.00]" in md and "45.00 % [43.00, 47.00]" in md
    assert "differ in more than the neuron" not in md


def test_chip_accuracy_is_that_of_the_backend_whose_spikes_were_counted(snn, twin):
    snn["energy"]["spikes_from"] = "lava"  # verify --backends loihi: Lava on every image
    t = compare(snn, twin)
    assert t["rows"][0]["accuracy"] == {"float": 0.5, "lava": 0.5}
    md = markdown(t)
    assert "top-1 on chip (lava)" in md and "50.00 % [30.00, 70.00]" in md
    assert "counted from Lava's spikes" in md


def test_the_chip_models_energy_is_its_own_column_not_in_the_reduction(snn, twin):
    snn["energy"]["loihi"] = {"total_mj": 0.0123456}
    t = compare(snn, twin)
    assert t["rows"][0]["chip_model_energy_per_inference_mj"] == 0.0123456
    assert t["rows"][1]["chip_model_energy_per_inference_mj"] is None
    assert t["energy_reduction"] == pytest.approx(0.75, rel=1e-12)  # the 45 nm figures only
    assert "| 0.012346 |" in markdown(t)


def test_without_a_twin_the_snn_graphs_ann_counterpart(snn):
    snn["energy"]["ann_energy_per_inference_mj"] = 4.6 * TWIN_MACS / 2 / 1e9
    t = compare(snn)
    a = t["rows"][1]
    assert (a["role"], a["accuracy"], a["parameters"]) == ("ann-counterpart", {}, None)
    assert a["macs_per_inference"] == TWIN_MACS
    assert t["energy_reduction"] == pytest.approx(0.5, rel=1e-12)
    assert "its graph as an ANN (snn-tiny)" in markdown(t)


def test_a_twin_of_another_graph_is_said_to_be_one(snn, twin):
    snn["energy"]["layers"][1]["flops"] += 1
    t = compare(snn, twin)
    assert not t["twin_has_snn_graph"] and t["snn_graph_ann_macs"] == TWIN_MACS + 1
    assert "differ in more than the neuron" in markdown(t)


@pytest.mark.parametrize("edit, needle", [
    (lambda s, t: t.update(n=4999), r"differ in n\)"),
    (lambda s, t: t["data"].update(split="all"), "differ in data.split"),
    (lambda s, t: t["data"].update(source="/y/cifar100.tar.gz"), "differ in data.source"),
    (lambda s, t: t.update(templates=["{}"]), "differ in templates"),
    (lambda s, t: t.update(config=s["config"]), "a spiking model"),
    (lambda s, t: s.pop("energy"), "has no energy report"),
    (lambda s, t: t.pop("config"), "does not record the model's config"),
])
def test_mismatched_inputs_are_refused_naming_the_fix(snn, twin, edit, needle):
    edit(snn, twin)
    with pytest.raises(ConfigError, match=needle):
        compare(snn, twin)


def test_the_same_data_at_another_path_compares(snn, twin):
    twin["data"]["source"] = "/elsewhere/cifar10-train.tar.gz"
    assert compare(snn, twin)["energy_reduction"] == pytest.approx(0.75)


def test_write_report_files(snn, twin, tmp_path):
    (tmp_path / "v.json").write_text(json.dumps(snn))
    (tmp_path / "t.json").write_text(json.dumps(twin))
    table = write_report(tmp_path / "v.json", tmp_path / "t.json", tmp_path / "r.json",
                         tmp_path / "r.md")
    assert json.loads((tmp_path / "r.json").read_text()) == table
    assert (tmp_path / "r.md").read_text() == markdown(table)
