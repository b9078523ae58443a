"""Deployability rows: classification, the chip's share at full activity (by hand) and the cache."""
import dataclasses
import json

import pytest

from spikeclip_deploy import deployability as dep
from spikeclip_deploy.config import ModelConfig, get_config
from spikeclip_deploy.exchange.current_pool import pool_tree
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.paths import PROJECT_ROOT

# spikeclip-micro's image inference, T = 4, by hand from its config (image 32x32, stem 3->4,
# spiking 3x3 stride-2 conv 4->8, spiking 1x1 8->16, readout 16->384):
STEM = 4 * 32 * 32 * 3 * 3 * 3  # host stem conv, 3x3 stride 1 on 32x32: 110 592 MACs, once
READOUT = 16 * 384  # readout projection: 6 144 MACs, once
CHIP = 4 * (8 * 16 * 16 * 4 * 3 * 3 + 16 * 16 * 16 * 8)  # T x (73 728 + 32 768) connections


def test_micro_deploys_on_chip_with_its_share_by_hand():
    row = dep.assess(get_config("spikeclip-micro"))
    assert row == {"deployable": "chip", "deployable_reason": None,
                   "chip_sop_share": CHIP / (CHIP + STEM + READOUT),  # = 208 / 265
                   "chip_sop_share_basis": dep.BASIS}


def test_former_micro_deploys_on_chip_with_its_share_by_hand():
    """spikeclip-former-micro (same stem and readout as micro): on chip, per step, conv0 8x32x32
    outputs x 4x3x3 taps, the convs before the two max pools (3x3 8->12 on 32x32, 3x3 12->16 on
    16x16), a 3x3 16->16 conv on 8x8 and six 1x1 16->16 on 8x8, each once (its residual stream
    on graded relays: 16x8x8 neurons each, relay0 and relay1 read by two layers, relay2 by one, 5
    identity synaptic ops per stream neuron), the pools' ReLU levels (their signed synapses, the
    separable tree's, counted in tests/exchange/test_current_pool.py), and spiking attention over
    N = 64 tokens, 2 heads of d = 8, K first (N d^2 = 4 096 products a stage and head against
    N^2 d = 32 768): 2 x 2 x 4 096 product neurons and, per head, 2 x 4 096 synapses into kv,
    64 x 64 into m, 2 x 4 096 into qm, 512 x 8 into y and 512 from y into the attention LIF;
    the host computes only the stem and the readout."""
    attention = 2 * 2 * 4096 + 2 * (2 * 4096 + 64 * 64 + 2 * 4096 + 512 * 8 + 512)
    pools = (pool_tree(12, (32, 32), 3, 2, 1, "separable").synapses
             + pool_tree(16, (16, 16), 3, 2, 1, "separable").synapses)
    chip = 4 * (8 * 32 * 32 * 4 * 9 + 12 * 32 * 32 * 8 * 9 + 16 * 16 * 16 * 12 * 9
                + 16 * 64 * 16 * 9 + 6 * 16 * 64 * 16 + 5 * 16 * 64 + attention + pools)
    row = dep.assess(get_config("spikeclip-former-micro"))
    assert (row["deployable"], row["deployable_reason"]) == ("chip", None)
    assert row["chip_sop_share"] == chip / (chip + STEM + READOUT)


def test_ssa_small_deploys_wholly_on_chip():
    """spikeclip-ssa-small pools spikes on chip and its attention runs on neuro-cores: nothing
    between the stem and the readout is left on the host."""
    row = dep.assess(get_config("spikeclip-ssa-small"))
    assert (row["deployable"], row["deployable_reason"]) == ("chip", None)


def test_an_ann_config_is_not_deployable_with_the_reason():
    ann = ModelConfig(name="ann-small", embed_dim=8, image_arch="scratch-transformer",
                      text_arch="ann-mlp", image_channels=(4, 8), image_mlp_hidden=8,
                      image_depth=1, image_heads=2, vocab_size=50, text_width=4, text_hidden=8)
    row = dep.assess(ann)
    assert (row["deployable"], row["chip_sop_share"]) == ("no", None)
    assert "nothing in it spikes" in row["deployable_reason"]


@pytest.fixture()
def hardware(tmp_path, monkeypatch):
    """A copy of the shipped hardware folder, to edit."""
    folder = tmp_path / "hw"
    folder.mkdir()
    for p in (PROJECT_ROOT / "hardware").glob("*.json"):
        (folder / p.name).write_text(p.read_text())
    monkeypatch.setenv("SPIKECLIP_HARDWARE", str(folder))
    load_profile.cache_clear()
    yield folder
    load_profile.cache_clear()


def test_over_the_chip_limit_is_not_deployable(hardware):
    """micro's text synapse 80 -> 16 stores 1 280 weights; a chip of 1 000 cannot hold it."""
    profile = json.loads((hardware / "loihi2.json").read_text())
    profile["limits"]["stored_weights_per_chip"] = 1000
    profile["limits"]["chips_per_system"] = 1
    (hardware / "loihi2.json").write_text(json.dumps(profile))
    row = dep.assess(get_config("spikeclip-micro"))
    assert row["deployable"] == "no" and row["chip_sop_share"] is None
    assert "the text encoder needs 1,280 stored synaptic weights, 2 chips' worth at 1,000 per " \
        "chip (stored_weights_per_chip): 280 more" in row["deployable_reason"]


def test_rows_are_cached_under_xdg_and_keyed_by_config_version_and_profile(
        tmp_path, monkeypatch, hardware):
    monkeypatch.delenv("SPIKECLIP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    micro = get_config("spikeclip-micro")
    computed = []
    monkeypatch.setattr(dep, "assess", lambda cfg: computed.append(cfg.name) or {
        "deployable": "chip", "deployable_reason": None, "chip_sop_share": 0.5,
        "chip_sop_share_basis": dep.BASIS})
    first = dep.deployability(micro)
    assert dep.deployability(micro) == first and computed == ["spikeclip-micro"]  # read back
    cached = list((tmp_path / "xdg" / "spikeclip-deploy" / "deployability").iterdir())
    assert [p.name for p in cached] == [dep.cache_path(micro).name]
    assert json.loads(cached[0].read_text()) == first
    # another config, package version, meaning of the rows or hardware profile is another
    # entry: computed again
    dep.deployability(dataclasses.replace(micro, time_steps=8))
    monkeypatch.setattr(dep, "__version__", "0.0.0-other")
    dep.deployability(micro)
    monkeypatch.setattr(dep, "ROWS", dep.ROWS + 1)
    dep.deployability(micro)
    (hardware / "loihi2.json").write_text((hardware / "loihi2.json").read_text() + "\n")
    dep.deployability(micro)
    assert len(computed) == 5
    assert len(list(cached[0].parent.iterdir())) == 5


def test_an_unwritable_cache_warns_and_returns_the_row(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPIKECLIP_CACHE", str(blocked))
    row = dep.deployability(get_config("spikeclip-micro"))
    assert row["deployable"] == "chip"
    assert "cannot write the deployability cache" in caplog.text and str(blocked) in caplog.text
