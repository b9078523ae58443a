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


def test_shipped_profiles_are_complete():
    assert load_profile("loihi2")["limits"] and load_profile("energy-45nm", "energy")["e_ac_pj"]


@pytest.mark.parametrize("drop, field", [("limits", "limits.neurons_per_chip"),
                                         ("fixed_point", "fixed_point.weight_bits")])
def test_chip_profile_without_a_section(profiles, drop, field):
    profile = shipped("loihi2")
    del profile[drop]
    (profiles / "loihi2.json").write_text(json.dumps(profile))
    with pytest.raises(ConfigError, match=f"{profiles / 'loihi2.json'} lacks .*{field}"):
        load_profile("loihi2")


def test_energy_profile_fields_and_broken_json(profiles):
    (profiles / "e.json").write_text(json.dumps({"e_mac_pj": 4.6}))
    with pytest.raises(ConfigError, match=r"e.json lacks the field\(s\) e_ac_pj that every energy"):
        load_profile("e", "energy")
    (profiles / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read hardware profile .*broken.json"):
        load_profile("broken")
