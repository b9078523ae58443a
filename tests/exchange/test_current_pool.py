"""A current max pool's one description (exchange/current_pool.py): its ReLU levels, walked by
``fire`` over ``expand``'s signed sources and read out by ``pooled``, give each window's maximum
(padding left out), in both tree forms; counts by hand; the NIR form round-trips through
nir.write / nir.read."""
from __future__ import annotations

import itertools

import nir
import numpy as np
import pytest

from spikeclip_deploy.errors import LoweringError
from spikeclip_deploy.exchange.attention import fire
from spikeclip_deploy.exchange.current_pool import (FORMS, PAYLOAD_FACTOR, PoolNode, PoolSpec,
                                                    cheaper_form, expand, is_current_pool,
                                                    level_specs, pool_tree, pooled, tree_costs,
                                                    written)
from spikeclip_deploy.exchange.nirgraph import (INPUT, depths, graph_layers, relay_node,
                                                summed_synapses)


def _max_pool(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Each window's maximum of ``x`` ``[C, H, W]`` over its in-bounds values, by loops."""
    c, h, w = x.shape
    ho, wo = ((n + 2 * padding - kernel) // stride + 1 for n in (h, w))
    out = np.empty((c, ho, wo), dtype=x.dtype)
    for ch, oy, ox in itertools.product(range(c), range(ho), range(wo)):
        ys = [y for y in range(oy * stride - padding, oy * stride - padding + kernel) if 0 <= y < h]
        xs = [x_ for x_ in range(ox * stride - padding, ox * stride - padding + kernel)
              if 0 <= x_ < w]
        out[ch, oy, ox] = max(x[ch, y, x_] for y in ys for x_ in xs)
    return out


def _run(specs: list[PoolSpec], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The levels fired in order on the relay's payloads ``x`` (flat): (what the pooled LIF
    receives, each level's payloads)."""
    payloads, a = [], x
    for spec in specs:
        a = fire(expand(spec), [a])
        payloads.append(a)
    return pooled(pool_tree(*specs[0].geometry), a), payloads


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("c,h,w,kernel,stride,padding,scale", [
    (2, 5, 5, 3, 2, 1, 50), (3, 7, 6, 3, 2, 1, 2**20), (1, 4, 4, 2, 2, 0, 3), (2, 8, 8, 3, 1, 1, 9),
    (1, 1, 1, 3, 2, 1, 7), (2, 6, 5, 4, 2, 2, 100), (1, 3, 3, 3, 3, 0, 1), (2, 9, 4, 5, 3, 2, 30)])
def test_levels_compute_each_windows_maximum(form, c, h, w, kernel, stride, padding, scale):
    """Random signed currents (all negative too: padding must not count as 0): the readout
    equals the loops' maximum, and every payload is non-negative within twice the largest
    |x|."""
    rng = np.random.default_rng(c * 1000 + h * 10 + w)
    for x in (rng.integers(-scale, scale + 1, (c, h, w)), -rng.integers(1, scale + 1, (c, h, w))):
        specs = level_specs("p", c, (h, w), kernel, stride, padding, form, "relay")
        got, payloads = _run(specs, x.reshape(-1))
        np.testing.assert_array_equal(got.reshape(specs[0].out_shape),
                                      _max_pool(x, kernel, stride, padding))
        top = np.abs(x).max()
        for p in payloads:
            assert p.min() >= 0 and p.max() <= PAYLOAD_FACTOR * top


def test_a_batch_of_steps_at_once():
    """``fire`` takes leading axes (samples, steps)."""
    rng = np.random.default_rng(5)
    x = rng.integers(-40, 40, (3, 4, 2, 6, 6))
    specs = level_specs("p", 2, (6, 6), 3, 2, 1, "separable", "relay")
    got, _ = _run(specs, x.reshape(3, 4, -1))
    want = np.stack([[_max_pool(x[b, t], 3, 2, 1) for t in range(4)] for b in range(3)])
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_counts_by_hand():
    """One channel, 3 x 3 grid, one 3 x 3 window (no padding), flat: 9 values. Level 1 passes
    v0 on (relu(v0), relu(-v0): 2 neurons) and pairs (v1, v2) .. (v7, v8) (3 each): 14
    neurons; a pair's relu(a - b) reads 2 synapses, relu(b) and relu(-b) 1 each, so 4 x 4 + 2
    = 18. Level 2: 5 values -> 2 + 2 x 3 = 8 neurons; level 3: 3 values -> 5; level 4: 2
    values -> 3; 30 neurons, and the LIF reads 3 (+1, +1, -1)."""
    tree = pool_tree(1, (3, 3), 3, 3, 0, "flat")
    assert [len(src) for src, _ in tree.levels] == [14, 8, 5, 3]
    assert int(np.count_nonzero(tree.levels[0][1])) == 18
    assert tree.neurons == 30
    assert np.count_nonzero(tree.readout[1]) == 3
    assert sorted(tree.readout[1][0][tree.readout[1][0] != 0].tolist()) == [-1, 1, 1]
    pop = expand(PoolSpec("p", 1, (3, 3), 3, 3, 0, "flat", 1, ("relay",)))
    assert (pop.neurons, pop.synapses, pop.kind) == (14, 18, "relu")
    # each relay neuron: v0 feeds relu(v0) and relu(-v0); in a pair, a feeds relu(a - b), b three
    np.testing.assert_array_equal(pop.fan_out(0), [2, 1, 3, 1, 3, 1, 3, 1, 3])


def test_paper_model_pools_pick_the_separable_tree():
    """The paper model's two pools (3 x 3, stride 2, padding 1): the separable tree needs fewer
    neurons than the flat one, both 4 levels."""
    for c, grid in ((192, (32, 32)), (384, (16, 16))):
        costs = tree_costs(c, grid, 3, 2, 1)
        assert costs["separable"]["levels"] == costs["flat"]["levels"] == 4
        assert costs["separable"]["neurons"] < costs["flat"]["neurons"]
        assert cheaper_form(costs) == "separable"


def test_bad_geometry_is_refused():
    with pytest.raises(LoweringError, match="kernel of 2 or more"):
        PoolSpec("p", 1, (4, 4), 1, 1, 0, "flat", 1, ("r",))
    with pytest.raises(LoweringError, match="padding at most half"):
        PoolSpec("p", 1, (4, 4), 3, 2, 2, "flat", 1, ("r",))
    with pytest.raises(LoweringError, match="forms"):
        PoolSpec("p", 1, (4, 4), 3, 2, 1, "diagonal", 1, ("r",))
    with pytest.raises(LoweringError, match=r"level \(1 .. 4\)"):
        PoolSpec("p", 1, (4, 4), 3, 2, 1, "flat", 5, ("r",))


def test_written_form_round_trips_through_nir(tmp_path):
    """conv -> relay -> levels -> LIF written as NIR (scales, the last a sum pool) reads back
    with nir.read's type check; graph_layers gives the levels back with their delays, and the
    LIF sums the conv (its bias is the conv's)."""
    c, h, w = 2, 5, 5
    specs = level_specs("pool0", c, (h, w), 3, 2, 1, "separable", "relay0")
    out = specs[0].out_shape
    full = lambda shape, v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    nodes = {INPUT: nir.Input(input_type={"input": np.array([1, h, w])}),
             "lif0": nir.LIF(tau=full((1, h, w), 2), r=full((1, h, w), 1),
                             v_leak=full((1, h, w), 0), v_threshold=full((1, h, w), 1),
                             v_reset=full((1, h, w), 0)),
             "conv0": nir.Conv2d(input_shape=(h, w), weight=np.ones((c, 1, 3, 3), np.float32),
                                 stride=1, padding=1, dilation=1, groups=1,
                                 bias=np.ones(c, np.float32)),
             "relay0": relay_node((c, h, w), {"pool": "pool0"}),
             **{s.name: written(PoolNode(spec=s, delay=k % 2)) for k, s in enumerate(specs)},
             "lif1": nir.LIF(tau=full(out, 2), r=full(out, 1), v_leak=full(out, 0),
                             v_threshold=full(out, 1), v_reset=full(out, 0)),
             "output": nir.Output(output_type={"output": np.array(out)})}
    chain = [INPUT, "lif0", "conv0", "relay0", *(s.name for s in specs), "lif1", "output"]
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(chain, chain[1:])), type_check=False)
    assert isinstance(nodes[specs[-1].name], nir.SumPool2d)
    assert all(isinstance(nodes[s.name], nir.Scale) for s in specs[:-1])
    nir.write(tmp_path / "g.nir", graph)
    back = nir.read(tmp_path / "g.nir")
    assert all(is_current_pool(back.nodes[s.name]) for s in specs)
    layers = {la.name: la for la in graph_layers(back)}
    for k, s in enumerate(specs):
        node = layers[s.name].node
        assert isinstance(node, PoolNode) and node.spec == s and node.delay == k % 2
        assert layers[s.name].inputs == s.inputs
    assert layers[specs[-1].name].node.last and not layers[specs[0].name].node.last
    assert summed_synapses(list(layers.values()))["lif1"] == ("conv0",)
    # one synapse step per hop, plus each level's delay (0, 1, 0, 1)
    assert depths(list(layers.values()), 1) == {
        "lif0": 0, "conv0": 0, "relay0": 1, "pool0_l1": 2, "pool0_l2": 4, "pool0_l3": 5,
        "pool0_l4": 7, "lif1": 8}
