"""The attention populations' one description (exchange/attention.py): each head's chain of
populations, walked by ``fire`` over ``expand``'s sources, gives numpy's Q K^T V per head, in both
orders; counts by hand; the NIR form round-trips through nir.write / nir.read with its ports in
order."""
from __future__ import annotations

import nir
import numpy as np
import pytest

from spikeclip_deploy.exchange.attention import (ORDERS, AttentionNode, cheaper_order, expand,
                                                 fire, head_specs, is_attention, products,
                                                 written)
from spikeclip_deploy.exchange.nirgraph import INPUT, graph_layers


def _head_y(heads: int, d: int, grid: tuple[int, int], order: str, q, k, v, head: int):
    """The head's y population's payloads placed on the attention LIF's (C, N) grid."""
    outs = {"lq": q.reshape(-1), "lk": k.reshape(-1), "lv": v.reshape(-1)}
    for spec in head_specs("attn", head, heads, grid, d, order, ("lq", "lk", "lv")):
        pop = expand(spec)
        outs[spec.name] = fire(pop, [outs[i] for i in spec.inputs])
        assert outs[spec.name].shape == (pop.neurons,)
        assert np.abs(outs[spec.name]).max(initial=0) <= pop.bound
    full = np.zeros(heads * d * grid[0] * grid[1], dtype=np.int64)
    full[pop.targets] = outs[spec.name]
    return full.reshape(heads * d, -1)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("heads,d,grid,density", [(2, 3, (2, 3), 0.5), (3, 2, (1, 4), 0.9),
                                                  (1, 4, (3, 3), 0.2)])
def test_populations_compute_each_heads_qktv(order, heads, d, grid, density):
    rng = np.random.default_rng(heads * 100 + d)
    c, n = heads * d, grid[0] * grid[1]
    q, k, v = ((rng.random((c, n)) < density).astype(np.int64) for _ in range(3))
    for h in range(heads):
        y = _head_y(heads, d, grid, order, q, k, v, h)
        qh, kh, vh = (x[h * d:(h + 1) * d].T for x in (q, k, v))  # [N, d]
        np.testing.assert_array_equal(y[h * d:(h + 1) * d], (qh @ kh.T @ vh).T)
        others = np.delete(y, np.s_[h * d:(h + 1) * d], axis=0)
        assert not others.any()  # a head drives only its own channels


def test_counts_by_hand():
    """N = 6 tokens, d = 3: k_first kv/qm N d^2 = 54 neurons, m d^2 = 9 reading N = 6 each,
    y d N = 18 reading d = 3 each (+ 18 synapses into the LIF); q_first qk/sv N^2 d = 108,
    s N^2 = 36 reading d each, y reading N each."""
    k_first = [expand(s) for s in head_specs("a", 1, 2, (2, 3), 3, "k_first", ("q", "k", "v"))]
    assert [(p.neurons, p.synapses) for p in k_first] == [(54, 108), (9, 54), (54, 108),
                                                          (18, 54 + 18)]
    q_first = [expand(s) for s in head_specs("a", 1, 2, (2, 3), 3, "q_first", ("q", "k", "v"))]
    assert [(p.neurons, p.synapses) for p in q_first] == [(108, 216), (36, 108), (108, 216),
                                                          (18, 108 + 18)]
    assert products("k_first", 6, 3) == 108 and products("q_first", 6, 3) == 216
    assert cheaper_order(64, 48) == "k_first" and cheaper_order(4, 64) == "q_first"
    # a K spike of head 1, channel 0, reaches the d kv neurons (n, 0, j) of its token
    kv = k_first[0]
    fan = kv.fan_out(0).reshape(6, 6)  # K's (C, N)
    assert fan[3].tolist() == [3] * 6 and not fan[:3].any()
    assert kv.binary(0) and kv.binary(1) and not k_first[2].binary(1)


def test_nir_round_trip_keeps_ports_and_registers(tmp_path):
    """Written as nir.Scale nodes and read back by nir.read, the populations come back as
    AttentionNodes with their ports in order (q before m, though the edges list m first),
    delays, y's weight and registers."""
    shape = (4, 1, 2)
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    lif = lambda: nir.LIF(tau=full(2e-4), r=full(1.0), v_leak=full(0.0),  # noqa: E731
                          v_threshold=full(1.0), v_reset=full(0.0))
    specs = head_specs("host0", 1, 2, (1, 2), 2, "k_first", ("q", "k", "v"))
    nodes = {INPUT: nir.Input(input_type={"input": np.array(shape)}), "q": lif(), "k": lif(),
             "v": lif(), "a": lif(), "output": nir.Output(output_type={"output": np.array(shape)})}
    edges = [(INPUT, "q"), (INPUT, "k"), (INPUT, "v")]
    for s in specs:
        node = AttentionNode(spec=s, weight=8.0 if s.stage == "y" else 1.0,
                             delays=(2, 0) if s.stage == "qm" else (),
                             metadata={"loihi": {"vth": 0}})
        nodes[s.name] = written(node)
        edges += [(i, s.name) for i in reversed(s.inputs)]
    edges += [(specs[-1].name, "a"), ("a", "output")]
    path = tmp_path / "g.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    back = nir.read(path)  # type checks pass
    assert is_attention(back.nodes["host0_h1_qm"])
    layers = {la.name: la for la in graph_layers(back)}
    qm = layers["host0_h1_qm"]
    assert qm.inputs == ("q", "host0_h1_m") and qm.node.delays == (2, 0)
    assert qm.node.spec == specs[2] and qm.node.metadata["loihi"] == {"vth": 0}
    y = layers["host0_h1_y"].node
    assert y.weight == 8.0 and y.delays == (0,)
    np.testing.assert_array_equal(np.asarray(back.nodes["host0_h1_y"].scale)[:, 0, 0],
                                  [0, 0, 8, 8])  # head 1's channels only
