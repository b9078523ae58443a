import json

import pytest

from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.paths import PROJECT_ROOT


@pytest.fixture()
def profiles(tmp_path, monkeypatch):
    """An empty hardware folder in place of the shipped one (and load_profile's cache cleared)."""
    monkeypatch.setenv("SPIKECLIP_HARDWARE", str(tmp_path))
    load_profile.cache_clear()
    yield tmp_path
    load_profile.cache_clear()


def shipped(name: str) -> dict:
    return json.loads((PROJECT_ROOT / "hardware" / f"{name}.json").read_text())


def test_shipped_profiles_load_as_typed_records():
    chip, energy = load_profile("loihi2"), load_profile("energy-45nm", "energy")
    assert chip.limits.neurons_per_chip == shipped("loihi2")["limits"]["neurons_per_chip"]
    assert chip.fixed_point.weight_mant_range == (-256, 254)  # a JSON list becomes a tuple
    assert (energy.e_ac_pj, energy.e_mac_pj) == (0.9, 4.6)
    with pytest.raises(AttributeError):  # frozen
        chip.fixed_point.activation_shift = 7


def test_every_profile_key_is_a_typed_field():
    """No key in the shipped JSON that the typed record does not hold (and check)."""
    import dataclasses

    def keys(record):
        return {f.name: (keys(getattr(record, f.name))
                         if dataclasses.is_dataclass(getattr(record, f.name)) else None)
                for f in dataclasses.fields(record)}

    def json_keys(data):  # a "sources" object is one field, a mapping of its record's figures
        return {k: (json_keys(v) if isinstance(v, dict) and k != "sources" else None)
                for k, v in data.items()}

    assert json_keys(shipped("loihi2")) == keys(load_profile("loihi2"))
    assert json_keys(shipped("energy-45nm")) == keys(load_profile("energy-45nm", "energy"))
    assert json_keys(shipped("energy-loihi")) == keys(load_profile("energy-loihi", "chip-energy"))


def test_every_chip_energy_figure_names_its_source():
    """Each per-operation figure of the chip energy model has its citation, and the terms it
    leaves out are stated."""
    data = shipped("energy-loihi")
    figures = {k for k, v in data.items() if isinstance(v, (int, float))}
    assert set(data["sources"]) == figures
    assert all("Davies et al." in data["sources"][k] for k in figures - {"static_mw_per_chip"})
    model = load_profile("energy-loihi", "chip-energy")
    assert (model.e_synaptic_op_pj, model.e_neuron_update_active_pj,
            model.e_neuron_update_inactive_pj, model.e_spike_message_pj) == (23.6, 81, 52, 1.7)
    assert any("chip-to-chip" in text for text in model.left_out)


def test_every_core_figure_names_its_source():
    """Each figure of the per-chip limits and the per-core resources has a citation (or the
    assumption taken), and no source names a figure that is not there."""
    for section in ("limits", "cores"):
        data = shipped("loihi2")[section]
        figures = {k for k, v in data.items() if isinstance(v, (int, list))}
        assert set(data["sources"]) == figures, section
        assert all(len(text) > 20 for text in data["sources"].values())
    cores = load_profile("loihi2").cores
    assert (cores.cores_per_chip, cores.neurons_per_core) == (128, 8192)
    assert {s.name: s.chips for s in cores.systems} == {"oheo-gulch": 1, "kapoho-point": 8,
                                                        "hala-point": 1152}


def test_a_mistyped_field_is_named(profiles):
    profile = shipped("loihi2")
    profile["fixed_point"]["weight_bits"] = "8"
    profile["fixed_point"]["vth_range"] = [1]
    (profiles / "loihi2.json").write_text(json.dumps(profile))
    with pytest.raises(ConfigError, match="field fixed_point.weight_bits must be an integer"):
        load_profile("loihi2")
    profile["fixed_point"].update(weight_bits=8, vth_range=[1, 131071])
    profile["cores"]["sources"]["neurons_per_core"] = 8192
    (profiles / "loihi2.json").write_text(json.dumps(profile))
    load_profile.cache_clear()
    with pytest.raises(ConfigError, match="field cores.sources must be an object of strings"):
        load_profile("loihi2")
    profile["cores"]["sources"]["neurons_per_core"] = "cited"
    profile["cores"]["systems"][1]["chips"] = "8"
    (profiles / "loihi2.json").write_text(json.dumps(profile))
    load_profile.cache_clear()
    with pytest.raises(ConfigError, match=r"field cores.systems\[1\].chips must be an integer"):
        load_profile("loihi2")


@pytest.mark.parametrize("drop, field", [("limits", "limits"), ("fixed_point", "fixed_point")])
def test_chip_profile_without_a_section(profiles, drop, field):
    profile = shipped("loihi2")
    del profile[drop]
    (profiles / "loihi2.json").write_text(json.dumps(profile))
    with pytest.raises(ConfigError, match=f"{profiles / 'loihi2.json'} lacks .*{field}"):
        load_profile("loihi2")


def test_energy_profile_fields_and_broken_json(profiles):
    (profiles / "e.json").write_text(json.dumps({k: v for k, v in shipped("energy-45nm").items()
                                                 if k != "e_ac_pj"}))
    with pytest.raises(ConfigError, match=r"e.json lacks the field\(s\) e_ac_pj that every energy"):
        load_profile("e", "energy")
    (profiles / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read hardware profile .*broken.json"):
        load_profile("broken")
