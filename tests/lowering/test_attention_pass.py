"""The attention pass on spikeclip-former-micro (one block, 2 heads of d = 8 over N = 64 tokens):
its populations, order and logged costs by hand; --attention host keeps the host op."""
import logging

import pytest

from spikeclip_deploy.config import get_config
from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.exchange.attention import AttentionNode
from spikeclip_deploy.exchange.nirgraph import HostOpNode
from spikeclip_deploy.export import lower_encoder
from spikeclip_deploy.nn.init import random_init
from spikeclip_deploy.targets import get_target


@pytest.fixture(scope="module")
def former():
    return random_init(get_config("spikeclip-former-micro"), seed=0)


def test_attention_on_chip_by_hand(former, caplog):
    """Per head: kv and qm 64 x 8 x 8 = 4 096 product neurons each, m 8 x 8 = 64 sums of 64,
    y 8 x 64 = 512 sums of 8 (+ 512 synapses into the LIF): 8 768 neurons, 8 192 + 4 096 +
    8 192 + 4 608 = 25 088 synapses; messages: K's and V's 512 neurons of the head into kv, kv's
    4 096 into m, Q's 512 and m's 64 into qm, qm's 4 096 into y, y's 512 into the LIF = 10 304.
    Products a step: k_first 2 x 2 N d^2 = 16 384, q_first 2 x 2 N^2 d = 131 072."""
    with caplog.at_level(logging.INFO, logger="spikeclip_deploy.lowering.attention"):
        graph = lower_encoder(former, "image", get_target("loihi"))
    assert not [la for la in graph.layers if isinstance(la.node, HostOpNode)
                and la.node.op == "SpikeAttention"]
    pops = [la for la in graph.layers if isinstance(la.node, AttentionNode)]
    assert [la.name for la in pops] == [f"host2_h{h}_{s}" for h in (0, 1)
                                        for s in ("kv", "m", "qm", "y")]
    assert all(la.placement == "chip" for la in pops)
    (lif,) = graph.consumers("host2_h0_y")
    assert lif.inputs == ("host2_h0_y", "host2_h1_y")
    assert graph.meta["attention"] == {"form": "chip", "layers": {"host2": {
        "order": "k_first", "heads": 2, "tokens": 64, "d": 8,
        "products": {"k_first": 16384, "q_first": 131072}, "neurons": 17536,
        "product_neurons": 16384, "synapses": 50176, "messages": 20608}}}
    assert "products a step k_first 16384, q_first 131072: k_first" in caplog.text
    res = graph.meta["resources"]
    assert (res["attention_neurons"], res["product_neurons"], res["attention_synapses"]) == \
        (17536, 16384, 50176)
    # with one synapse step, k_first's Q waits two steps for M
    assert {la.name: la.node.delays for la in pops if la.node.spec.head == 0} == {
        "host2_h0_kv": (0, 0), "host2_h0_m": (0,), "host2_h0_qm": (2, 0), "host2_h0_y": (0,)}


def test_attention_host_keeps_the_host_op(former):
    graph = lower_encoder(former, "image", get_target("loihi"), attention="host",
                          current_pool="host")
    ops = [la for la in graph.layers if isinstance(la.node, HostOpNode)]
    assert [la.node.op for la in ops] == ["HostMaxPool", "HostMaxPool", "SpikeAttention"]
    assert ops[-1].node.metadata["heads"] == 2
    assert not any(isinstance(la.node, AttentionNode) for la in graph.layers)
    assert graph.meta["attention"] == {"form": "host", "layers": {}}
    with pytest.raises(LoweringError, match="unknown attention form 'gpu'"):
        lower_encoder(former, "image", get_target("loihi"), attention="gpu")
