"""The max pools of currents on chip, lowered from spikeclip-former-micro (its two tokenizer pools,
3x3 stride 2 padding 1, of 12 x 32 x 32 and 16 x 16 x 16 currents): the layers, delays, the
pass's record and log by the contract's counts; --current-pool host keeps the host ops; a
payload that cannot fit the graded spike is refused at export, naming the layer, the bound and
the limit, with nothing written."""
import json
import logging

import pytest
from click.testing import CliRunner

from spikeclip_deploy.cli import main
from spikeclip_deploy.config import get_config
from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.exchange.current_pool import PoolNode, pool_tree, tree_costs
from spikeclip_deploy.exchange.nirgraph import HostOpNode, is_relay
from spikeclip_deploy.export import lower_encoder
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.nn.init import random_init
from spikeclip_deploy.paths import PROJECT_ROOT
from spikeclip_deploy.targets import get_target


@pytest.fixture(scope="module")
def former():
    return random_init(get_config("spikeclip-former-micro"), seed=0)


def test_the_pools_go_on_chip(former, caplog):
    with caplog.at_level(logging.INFO, logger="spikeclip_deploy.lowering.current_pool"):
        graph = lower_encoder(former, "image", get_target("loihi"))
    assert not [la for la in graph.layers if isinstance(la.node, HostOpNode)
                and la.node.op == "HostMaxPool"]
    assert all(la.placement == "chip" for la in graph.layers)
    names = [la.name for la in graph.layers]
    for pool, conv, lif, shape in (("host0", "conv1", "lif2", (12, 32, 32)),
                                   ("host1", "conv2", "lif3", (16, 16, 16))):
        relay = graph.layer(f"{pool}_relay")
        assert is_relay(relay.node) and relay.inputs == (conv,)
        levels = [graph.layer(f"{pool}_l{k}") for k in range(1, 5)]
        assert [la.inputs for la in levels] == [(f"{pool}_relay",), *((f"{pool}_l{k}",)
                                                                      for k in range(1, 4))]
        assert all(isinstance(la.node, PoolNode) and la.node.delay == 0 for la in levels)
        assert graph.layer(lif).inputs == (f"{pool}_l4",)
        assert names.index(conv) < names.index(relay.name) < names.index(lif)
        # the levels' payloads are twice the relay's bound, in the LIF's units
        bound = relay.node.metadata["payload_bound"]
        assert {la.node.metadata["payload_bound"] for la in levels} == {2 * bound}
        assert {la.node.metadata["scale"] for la in [relay, *levels]} == \
            {graph.layer(lif).node.metadata["scale"]}
        tree = pool_tree(shape[0], shape[1:], 3, 2, 1, "separable")
        forms = tree_costs(shape[0], shape[1:], 3, 2, 1)
        rec = graph.meta["current_pool"]["layers"][pool]
        assert rec["tree"] == "separable" and rec["forms"] == forms
        assert (rec["neurons"], rec["relu_neurons"], rec["synapses"]) == (
            shape[0] * shape[1] * shape[2] + tree.neurons, tree.neurons, tree.synapses)
        assert f"max pool {pool} of {conv} on chip" in caplog.text
    assert graph.meta["current_pool"]["form"] == "chip"
    res = graph.meta["resources"]
    assert res["relu_neurons"] == sum(
        pool_tree(c, g, 3, 2, 1, "separable").neurons for c, g in ((12, (32, 32)), (16, (16, 16))))


def test_current_pool_host_keeps_the_host_ops(former):
    graph = lower_encoder(former, "image", get_target("loihi"), current_pool="host")
    ops = [la for la in graph.layers if isinstance(la.node, HostOpNode)]
    assert [la.node.op for la in ops] == ["HostMaxPool", "HostMaxPool"]
    assert graph.layer("conv1").placement == "host"
    assert graph.meta["current_pool"] == {"form": "host", "layers": {}}
    with pytest.raises(LoweringError, match="unknown current pool form 'gpu'"):
        lower_encoder(former, "image", get_target("loihi"), current_pool="gpu")


def test_a_model_without_current_pools_has_no_record():
    """Models that pool spikes (or nothing) lower as before: no record in their graph."""
    graph = lower_encoder(random_init(get_config("spikeclip-micro"), seed=0), "image",
                          get_target("loihi"))
    assert "current_pool" not in graph.meta


def test_a_payload_beyond_the_graded_spike_is_refused(tmp_path, monkeypatch):
    """A chip whose graded spikes hold 14 bits (8 191): the first pool's relay fits, its levels
    (twice the relay's bound) do not; export refuses with the layer, the bound and the limit,
    names the fix, and leaves no export behind."""
    folder = tmp_path / "hw"
    folder.mkdir()
    for p in (PROJECT_ROOT / "hardware").glob("*.json"):
        data = json.loads(p.read_text())
        if p.name == "loihi2.json":
            data["fixed_point"]["graded_payload_bits"] = 14
        (folder / p.name).write_text(json.dumps(data))
    monkeypatch.setenv("SPIKECLIP_HARDWARE", str(folder))
    load_profile.cache_clear()
    try:
        out = tmp_path / "exp"
        r = CliRunner().invoke(main, ["export", "--model", "spikeclip-former-micro", "--init",
                                      "random", "--out", str(out)])
    finally:
        load_profile.cache_clear()
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "max pool level 'host0_l1' can reach a payload of 10,136 (twice its relay's 5,068), " \
           "beyond the 14-bit graded spike (8,191); export with --current-pool host" in r.output
    assert not out.exists() and not list(tmp_path.glob(".exp*"))
