"""The mapper on hand-built chip graphs whose tiling is worked out by hand, on a small core
(100 neurons, 8000 bits of synaptic memory, 1000 input axons, 4 cores a chip)."""
import dataclasses

import nir
import numpy as np
import pytest

from spikeclip_deploy.errors import ConfigError, HardwareLimitError
from spikeclip_deploy.exchange.chip import Cores, System
from spikeclip_deploy.mapping import assume, map_encoder
from spikeclip_deploy.exchange.nirgraph import INPUT, ChipLayer

CORES = Cores(cores_per_chip=4, neurons_per_core=100, synaptic_memory_bits_per_core=8000,
              dense_bits_per_synapse=8, sparse_bits_per_synapse=21, conv_bits_per_weight=8,
              input_axons_per_core=1000, output_axons_per_core=100_000,
              systems=(System("one", 1), System("two", 2)), sources={})
TWO = CORES.systems[1]


def lif(name, shape, src):
    z = np.zeros(shape)
    return ChipLayer(name, nir.LIF(tau=z + 1, r=z + 1, v_leak=z, v_threshold=z + 1), (src,))


def dense(name, w, src):
    return ChipLayer(name, nir.Affine(weight=np.asarray(w, float), bias=np.zeros(len(w))), (src,))


def chain(n_in, w):
    """input -> a (n_in neurons) -> dense w -> b."""
    return [lif("a", (n_in,), INPUT), dense("d", w, "a"), lif("b", (len(w),), "d")]


def rows(m):
    return {la.name: la for la in m.layers}


def test_two_cores_by_neurons_and_two_by_memory():
    """a: 150 neurons, 100 a core -> 2 cores. b: 10 neurons of fan-in 150, 150 * 8 = 1200 bits
    each; 8000 bits hold 6 (7200; 7 would be 8400) -> 6 + 4, 2 cores, 12 000 bits."""
    m = map_encoder("image", chain(150, np.ones((10, 150))), (150,), CORES, TWO)
    a, b = rows(m)["a"], rows(m)["b"]
    assert (a.neurons, a.cores, a.tile, a.limited_by) == (150, 2, (1, 100), "neurons")
    assert (b.neurons, b.synapses, b.memory_bits) == (10, 1500, 12_000)
    assert (b.cores, b.tile, b.limited_by) == (2, (1, 6), "memory")
    assert (m.total("cores"), m.chips, m.chip_crossings) == (4, 1, 0)  # 4 cores: one chip


def test_sparse_weights_cost_weight_and_index():
    """Neuron j's 10 nonzero weights are columns 10j..10j+9: the 10 neurons (one core) read
    100 columns, a dense block of 100 x 8 = 800 bits a neuron, sparse 10 x 21 = 210: sparse."""
    w = np.zeros((10, 150))
    for j in range(10):
        w[j, 10 * j:10 * j + 10] = 1
    b = rows(map_encoder("image", chain(150, w), (150,), CORES, TWO))["b"]
    assert (b.memory_bits, b.cores) == (10 * 210, 1)


def test_a_core_reads_and_stores_only_the_columns_its_neurons_use():
    """Every neuron's 10 nonzero weights are columns 0-9 of 150: a core reads 10 input axons
    and stores a dense 10-column block, 10 x 8 = 80 bits a neuron (sparse: 210), and a's
    spikes from columns 10-149 go nowhere: a's first core (neurons 0-99) sends 10 spikes to
    b's one core, the most of any run of a."""
    w = np.zeros((10, 150))
    w[:, :10] = 1
    cores = dataclasses.replace(CORES, output_axons_per_core=10)
    m = rows(map_encoder("image", chain(150, w), (150,), cores, TWO))
    assert (m["b"].memory_bits, m["b"].cores, m["b"].synapse_reach) == (10 * 80, 1, (1,))
    assert (m["a"].cores, m["a"].tile, m["a"].limited_by) == (2, (1, 100), "neurons")


def test_output_axons_split_the_sender():
    """a's spikes go to both of b's cores: 2 output axons a neuron; 100 a core -> 50 neurons."""
    cores = dataclasses.replace(CORES, output_axons_per_core=100)
    a = rows(map_encoder("image", chain(150, np.ones((10, 150))), (150,), cores, TWO))["a"]
    assert (a.cores, a.tile, a.limited_by) == (3, (1, 50), "output_axons")


def test_conv_stores_its_kernel_once_per_core():
    """conv 2 -> 3 channels, 3x3, 6x6 (padding 1): 108 neurons. A tile of 3 channels x 5 rows
    (90 neurons) fits, 6 rows (108) do not -> 2 cores, each holding the whole kernel once:
    2 * 3*2*3*3 * 8 = 864 bits (a dense matrix would be 108 * 72 * 8). Input axons of the
    5-row tile: 2 channels x 6 wide x all 6 rows = 72."""
    conv = nir.Conv2d(input_shape=(6, 6), weight=np.ones((3, 2, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(3))
    layers = [lif("a", (2, 6, 6), INPUT), ChipLayer("c", conv, ("a",)), lif("b", (3, 6, 6), "c")]
    b = rows(map_encoder("image", layers, (2, 6, 6), CORES, TWO))["b"]
    assert (b.neurons, b.cores, b.tile, b.limited_by) == (108, 2, (3, 5), "neurons")
    assert b.memory_bits == 2 * 54 * 8
    assert b.synapses == 3 * 36 * 2 * 9  # dense-equivalent taps, padding included
    # a spike of a reaches the row tiles its 3x3 window touches: rows 0-4 and 5, both tiles
    assert (b.synapse_layers, b.synapse_reach, b.chip_cores) == (("c",), (2,), (2,))


def test_a_neuron_larger_than_a_core_is_named():
    """Fan-in 1100: one neuron needs 8800 bits of the core's 8000."""
    with pytest.raises(HardwareLimitError, match=r"the text encoder's layer 'b' cannot be mapped: "
                       r"one neuron needs 8,800 bits of synaptic memory where a neuro-core "
                       r"holds 8,000 \(synaptic_memory_bits_per_core\): 800 over"):
        map_encoder("text", chain(1100, np.ones((2, 1100))), (1100,), CORES, TWO)


def test_an_assumed_axon_budget_changes_the_outcome():
    """b: 2 neurons reading all 5000 of a's (2 x 5000 x 8 = 80 000 bits). Its 5000 input axons
    exceed 4096 (904 over); assuming 8192, b takes 1 core and a (5000 neurons of 8192) 1 core.
    Only the figure assumed changes; the record keeps the profile's."""
    cores = dataclasses.replace(CORES, neurons_per_core=8192, input_axons_per_core=4096,
                                synaptic_memory_bits_per_core=10**6)
    w = np.ones((2, 5000))
    with pytest.raises(HardwareLimitError, match=r"one neuron needs 5,000 input axons where a "
                       r"neuro-core holds 4,096 \(input_axons_per_core\): 904 over.*"
                       r"`map --assume input_axons_per_core=N`"):
        map_encoder("image", chain(5000, w), (5000,), cores, TWO)
    wider, record = assume(cores, ["input_axons_per_core=8192"])
    assert wider == dataclasses.replace(cores, input_axons_per_core=8192)
    assert record == {"input_axons_per_core": {"assumed": 8192, "profile": 4096}}
    m = map_encoder("image", chain(5000, w), (5000,), wider, TWO)
    assert [(p.name, p.cores, p.memory_bits) for p in m.layers] == [("a", 1, 0),
                                                                  ("b", 1, 80_000)]


@pytest.mark.parametrize("item, what", [("axons=8192", "unknown key 'axons'"),
                                        ("input_axons_per_core=0", "the value must be a positive integer"),
                                        ("input_axons_per_core=-5", "the value must be a positive integer"),
                                        ("input_axons_per_core", "the value must be a positive integer")])
def test_a_bad_assumption_names_the_valid_keys(item, what):
    with pytest.raises(ConfigError, match=rf"--assume '{item}': {what}.*valid keys: "
                       r"cores_per_chip, neurons_per_core, .*output_axons_per_core$"):
        assume(CORES, [item])


def test_placement_keeps_layers_whole_and_counts_chips():
    """a: 3 cores on chip 0; b (4 cores) does not fit chip 0's last core: it starts chip 1,
    one chip crossing. On a one-chip system: 1 chip over, from b."""
    layers = chain(300, np.ones((12, 300)))  # b: 2400 bits a neuron, 3 a core -> 4 cores
    m = map_encoder("image", layers, (300,), CORES, TWO)
    assert [(p.name, p.cores, p.chips) for p in m.layers] == [("a", 3, (0,)), ("b", 4, (1,))]
    assert (m.chips, m.chip_crossings) == (2, 1)
    assert [(p.chip_cores, p.synapse_reach) for p in m.layers] == [((3,), ()), ((4,), (4,))]
    with pytest.raises(HardwareLimitError, match=r"needs 2 chips of 4 neuro-cores \(7 cores\); "
                       r"one holds 1: 1 chip\(s\) over, from layer 'b' on"):
        map_encoder("image", layers, (300,), CORES, CORES.systems[0])


def test_a_layer_larger_than_a_chip_fills_chips_in_turn():
    """a: 3 cores on chip 0; b: 18 neurons of fan-in 300, 3 a core -> 6 cores, more than a
    chip: chip 0's last core, all 4 of chip 1, 1 on chip 2. A spike of a reaches all 6."""
    m = map_encoder("image", chain(300, np.ones((18, 300))), (300,), CORES, System("three", 3))
    b = rows(m)["b"]
    assert (b.cores, b.chips, b.chip_cores, b.synapse_reach) == (6, (0, 1, 2), (1, 4, 1), (6,))


def test_the_mapper_reads_an_export_only():
    """Run side: no model, lowering or checkpoint code is imported."""
    import subprocess
    import sys

    code = ("import sys, spikeclip_deploy.mapping; "
            "print(sorted(m for m in sys.modules if m.startswith('spikeclip_deploy.')))")
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)  # our own printed list
    assert [m for m in loaded if m.split(".")[1] in ("nn", "lowering", "checkpoint", "export")] \
        == [] and "spikeclip_deploy.mapping" in loaded


def pointwise(name, c_in, c_out, src):
    w = np.ones((c_out, c_in, 1, 1))
    return ChipLayer(name, nir.Conv2d(input_shape=(2, 10), weight=w, stride=1, padding=0,
                                      dilation=1, groups=1, bias=np.zeros(c_out)), (src,))


def test_a_relay_is_placed_with_its_identity_synapses():
    """a (4 x 2 x 10) -> 1x1 conv c (4 -> 2) -> relay r (2 x 2 x 10) -> b (2 x 2 x 10). r: one
    row of one channel reads 4 channels x 10 columns = 40 axons, 2 x 2 x 10 = 40 neurons, 4 x 8
    x 2 = 64 bits of kernel: one core. b reads r through an identity synapse (a depthwise 1x1
    convolution of ones): 40 axons, 40 weights, one core; 40 graded synapses (a graded message
    per relay neuron and step); r's neurons send to b's one core."""
    from spikeclip_deploy.exchange.nirgraph import relay_node

    layers = [lif("a", (4, 2, 10), INPUT), pointwise("c", 4, 2, "a"),
              ChipLayer("r", relay_node((2, 2, 10), {}), ("c",)), lif("b", (2, 2, 10), "r")]
    m = map_encoder("image", layers, (4, 2, 10), CORES, TWO)
    r, b = rows(m)["r"], rows(m)["b"]
    assert (r.neurons, r.cores, r.synapse_layers, r.graded_synapses) == (40, 1, ("c",), 0)
    assert (b.synapse_layers, b.synapses, b.memory_bits, b.graded_synapses, b.synapse_reach) \
        == (("r>b",), 40, 2 * 8, 40, (1,))


def test_a_pointwise_layer_is_tiled_in_runs_of_positions():
    """a (150 x 2 x 10) -> 1x1 conv (150 -> 2) -> b (2 x 2 x 10), cores of 1050 input axons:
    a position of b reads its own 150 inputs, so a core holds a run of 7 positions (1050
    axons; 8: 1200) in row-major order, across the row boundary, and both channels (memory 2 x
    150 x 8 = 2400 bits, 14 neurons): 20 positions in runs of 7, 3 cores (tiles of whole
    rectangles: one row holds 7 of its 10 columns, 2 rows x 2 column runs = 4 cores). Each
    core stores the 300-weight kernel once: 3 x 300 x 8 bits."""
    layers = [lif("a", (150, 2, 10), INPUT), pointwise("c", 150, 2, "a"), lif("b", (2, 2, 10), "c")]
    b = rows(map_encoder("image", layers, (150, 2, 10), dataclasses.replace(
        CORES, neurons_per_core=10_000, input_axons_per_core=1050), TWO))["b"]
    assert (b.cores, b.tile, b.columns, b.limited_by) == (3, (2, 7), 0, "input_axons")
    assert (b.memory_bits, b.synapse_reach) == (3 * 300 * 8, (1,))


def conv3x3(name, c_in, c_out, hw, src, groups=1):
    return ChipLayer(name, nir.Conv2d(input_shape=hw, weight=np.ones((c_out, c_in // groups, 3, 3)),
                                      stride=1, padding=1, dilation=1, groups=groups,
                                      bias=np.zeros(c_out)), (src,))


def test_a_tile_is_a_block_of_rows_and_columns():
    """a (20 x 12 x 24) -> 3x3 conv (20 -> 1, padding 1) -> b (1 x 12 x 24). A tile of u rows
    by v columns reads 20 min(12, u + 2) min(24, v + 2) axons: one whole row reads
    20 x 3 x 24 = 1440 > 1000, and runs of one row hold 14 columns (960): 12 x 2 = 24 cores.
    A block of 3 rows x 8 columns reads 20 x 5 x 10 = 1000 (4 rows: 1200): 4 x 3 = 12
    cores, the fewest (4 x 6, 6 x 4: 12 too; 6 x 6 would read 1280; 2 x 10: 18). Each core
    stores the 180-weight kernel once: 12 x 180 x 8 bits. A spike of a reaches 2 row tiles x
    2 column tiles."""
    layers = [lif("a", (20, 12, 24), INPUT), conv3x3("c", 20, 1, (12, 24), "a"),
              lif("b", (1, 12, 24), "c")]
    b = rows(map_encoder("image", layers, (20, 12, 24), CORES, System("many", 100)))["b"]
    assert (b.cores, b.tile, b.columns, b.limited_by) == (12, (1, 3), 8, "input_axons")
    assert (b.memory_bits, b.synapse_reach) == (12 * 180 * 8, (4,))


def test_a_reader_is_tiled_for_its_writers_output_axons_too():
    """a (10 x 2 x 10) -> depthwise 3x3 conv -> b (10 x 2 x 10); 100 neurons and 100 output
    axons a core. b fits 2 cores two ways: 10 channels x 1 row (a spike reaches both row
    tiles) or 5 channels x both rows (a depthwise spike reaches the one tile holding its
    channel). Alone the first wins the tie (fewer channel groups), but then a's 200 neurons
    send 2 spikes each: 400 output axons, 4 cores; with the second a takes 2 (its 100-neuron
    budget). The mapper takes the second: 4 cores in all, not 6."""
    cores = dataclasses.replace(CORES, output_axons_per_core=100)
    layers = [lif("a", (10, 2, 10), INPUT), conv3x3("c", 10, 10, (2, 10), "a", groups=10),
              lif("b", (10, 2, 10), "c")]
    m = rows(map_encoder("image", layers, (10, 2, 10), cores, TWO))
    a, b = m["a"], m["b"]
    assert (b.cores, b.tile, b.columns, b.limited_by, b.synapse_reach) \
        == (2, (5, 2), 0, "neurons", (1,))
    assert (a.cores, a.tile, a.limited_by) == (2, (1, 100), "neurons")


@pytest.mark.parametrize("run, block, most", [(1, 5, 1), (3, 2, 2), (5, 1, 5), (6, 4, 2),
                                              (3, 5, 2), (4, 2, 2), (5, 3, 3)])
def test_the_blocks_a_channel_run_overlaps_by_hand(run, block, most):
    """Runs of ``run`` channels at 0, run, 2 run, ... against blocks of ``block``: (3, 2):
    [0-2] and [3-5] each overlap 2 blocks; (5, 3): [5-9] overlaps blocks 1-3; (1, 5): one."""
    from spikeclip_deploy.mapping import _groups_touched

    seen = max(len({ch // block for ch in range(k * run, (k + 1) * run)}) for k in range(60))
    assert _groups_touched(run, block, 100) == most == seen


def test_a_fan_in_split_on_relays_maps_where_the_whole_layer_cannot():
    """a (40) -> a 5 x 40 dense layer of ones into b: 40 input axons a neuron, over cores of
    24. Split as the split_fan_in pass does: part0 (columns 0-19) -> r0, part1 (20-39) ->
    r1 = r0 + part1 -> b. r0: 20 axons, one core. r1: its identity synapse from r0 reads only
    its own block's relay neurons (u of them) and part1 20 columns: u + 20 <= 24 holds 4
    neurons, 2 cores. Memory of r1: identity blocks 4 x min(4 x 8, 21) + 1 x min(8, 21) = 92,
    part1 4 x 160 + 160 = 800. A spike of a in columns 20-39 reaches both of r1's cores."""
    from spikeclip_deploy.exchange.nirgraph import relay_node

    cores = dataclasses.replace(CORES, input_axons_per_core=24)
    w = np.ones((5, 40))
    with pytest.raises(HardwareLimitError, match="one neuron needs 40 input axons"):
        map_encoder("text", chain(40, w), (40,), cores, TWO)
    part0, part1 = np.zeros((5, 40)), np.zeros((5, 40))
    part0[:, :20], part1[:, 20:] = 1, 1
    layers = [lif("a", (40,), INPUT), dense("p0", part0, "a"),
              ChipLayer("r0", relay_node((5,), {}), ("p0",)), dense("p1", part1, "a"),
              ChipLayer("r1", relay_node((5,), {}), ("r0", "p1")), lif("b", (5,), "r1")]
    m = rows(map_encoder("text", layers, (40,), cores, TWO))
    assert (m["r0"].cores, m["r0"].synapse_reach) == (1, (1,))
    assert (m["r1"].cores, m["r1"].tile, m["r1"].limited_by) == (2, (1, 4), "input_axons")
    assert (m["r1"].synapse_layers, m["r1"].synapse_reach) == (("r0>r1", "p1"), (1, 2))
    assert m["r1"].memory_bits == 92 + 800
    assert (m["b"].cores, m["b"].graded_synapses) == (1, 5)


def attention(order="k_first"):
    """input (8) -> dense -> q, k, v LIFs (4, 2, 3): 2 heads of d = 2 over N = 6 tokens -> per
    head its four populations (exchange.attention.head_specs) -> the attention LIF 'a'."""
    from spikeclip_deploy.exchange.attention import AttentionNode, head_specs
    layers = []
    for s in "qkv":
        layers += [dense(f"w{s}", np.ones((24, 8)), INPUT), lif(s, (4, 2, 3), f"w{s}")]
    ys = []
    for h in range(2):
        for spec in head_specs("att", h, 2, (2, 3), 2, order, ("q", "k", "v")):
            layers.append(ChipLayer(spec.name, AttentionNode(spec=spec), spec.inputs))
        ys.append(spec.name)
    return layers + [dataclasses.replace(lif("a", (4, 2, 3), ys[0]), inputs=tuple(ys))]


def test_attention_populations_are_placed_by_their_input_axons():
    """12 input axons a core. k_first, per head: kv (24 neurons, token-major, 4 a token) reads
    K[n, 0..1] and V[n, 0..1] of each token it holds: runs of 12 would read 12, but the mapper
    bisects for the tallest run, and 11 reads 13 in its second run (6 K, 7 V), so 10: 3 cores;
    m (4) reads 6 kv each: 2 a core, 2 cores; qm (24) reads Q[n, 0..1] and all 4 of m: 4 tokens
    (16 neurons) read 12, 17 read 13: 2 cores; y (12) reads 2 qm each: 6 a core, 2 cores; the
    attention LIF (24, channels 0-1 from head 0's y, 2-3 from head 1's) one y each, its heads'
    synapses summed per run: 12 a core, 2 cores; q, k, v (8 inputs each) 1 core each. An m
    neuron reaches both qm cores, a Q spike one."""
    cores = dataclasses.replace(CORES, neurons_per_core=8192, input_axons_per_core=12,
                                synaptic_memory_bits_per_core=10**6, cores_per_chip=64)
    m = map_encoder("image", attention(), (8,), cores, System("one", 1))
    got = {la.name: (la.cores, la.kind) for la in m.layers}
    for h in (0, 1):
        assert {s: got[f"att_h{h}_{s}"] for s in ("kv", "m", "qm", "y")} == {
            "kv": (3, "product"), "m": (2, "sum"), "qm": (2, "product"), "y": (2, "sum")}
    assert got["a"] == (2, "neurons") and [got[s][0] for s in "qkv"] == [1, 1, 1]
    qm = rows(m)["att_h0_qm"]
    assert dict(zip(qm.synapse_layers, qm.synapse_reach)) == {"att_h0_qm<q": 1,
                                                              "att_h0_qm<att_h0_m": 2}
    assert qm.synapses == 48 and rows(m)["a"].synapses == 24 and m.total("cores") == 23
    from spikeclip_deploy.mapping import Mapping
    from spikeclip_deploy.report import mapping_summary
    text = mapping_summary(Mapping("x", "test", System("one", 1), (m,)))
    assert "spiking attention on chip: 10 cores of product neurons, 8 of graded sums (78.3 % " \
        "of the cores)" in text


def test_a_convolutions_kernel_memory_bounds_its_channels_per_core():
    """a (4 x 4 x 4) -> 3x3 conv (4 -> 16, padding 1) -> b (16 x 4 x 4), cores of 1000 bits:
    an output channel's kernel is 4 x 3 x 3 = 36 weights, 288 bits, so a core holds 3 channels
    (864 bits; 4: 1152) of all 16 positions (48 neurons): 6 cores, bound by memory."""
    layers = [lif("a", (4, 4, 4), INPUT), conv3x3("c", 4, 16, (4, 4), "a"),
              lif("b", (16, 4, 4), "c")]
    b = rows(map_encoder("image", layers, (4, 4, 4), dataclasses.replace(
        CORES, synaptic_memory_bits_per_core=1000), System("many", 100)))["b"]
    assert (b.cores, b.tile, b.columns, b.limited_by) == (6, (3, 4), 0, "memory")


def current_pool(form="flat"):
    """a (2 x 4 x 4) -> 1x1 conv c (2 -> 1) -> relay r (1 x 4 x 4) -> a 2x2 max pool of stride
    2 as ReLU levels (exchange.current_pool) -> b (1 x 2 x 2)."""
    from spikeclip_deploy.exchange.current_pool import PoolNode, level_specs
    from spikeclip_deploy.exchange.nirgraph import relay_node

    layers = [lif("a", (2, 4, 4), INPUT), pointwise("c", 2, 1, "a"),
              ChipLayer("r", relay_node((1, 4, 4), {}), ("c",))]
    for spec in level_specs("p", 1, (4, 4), 2, 2, 0, form, "r"):
        layers.append(ChipLayer(spec.name, PoolNode(spec=spec), spec.inputs))
    return layers + [lif("b", (1, 2, 2), spec.name)]


def test_current_pool_levels_are_placed_by_their_input_axons():
    """12 input axons a core. Four windows of 4 values (no overlap): level 1 pairs each
    window's values, (a, b) -> relu(a - b), relu(b), relu(-b) (4 synapses): 6 neurons a window
    (24 neurons, 32 synapses) reading its window's 4 relay positions; the mapper bisects for
    the tallest run (runs start at multiples of its length): 13 read at most 10, 19 read 14 in
    the first run, 16, 17 and 18 read 12: 2 cores. Level 2: 3 neurons a window, relu(A - B)
    reading its 6 level-1 neurons, relu(B) and relu(-B) B's 3 (12 neurons, 48 synapses): 7
    read 18 in the first run, 4 read 12 (a window and the next one's first neuron; then 3 + 6
    twice), 5 read 15 in the second run (0-4, 5-9): 3 cores. b reads 3
    level-2 neurons a neuron (the readout, 12 synapses): 1 core; r reads 2 channels a position:
    6 positions a core, 3 cores. Level 1's rows hold at most 2 weights: its first core sparse
    (18 rows x 2 x 21 bits, less than 12 columns x 8), its second dense (6 rows x 4 columns x
    8); a relay neuron reaches one level-1 core."""
    cores = dataclasses.replace(CORES, input_axons_per_core=12, cores_per_chip=64)
    m = map_encoder("image", current_pool(), (2, 4, 4), cores, System("one", 1))
    got = {la.name: (la.neurons, la.synapses, la.cores, la.kind) for la in m.layers}
    assert got == {"a": (32, 0, 1, "neurons"), "r": (16, 32, 3, "neurons"),
                   "p_l1": (24, 32, 2, "relu"), "p_l2": (12, 48, 3, "relu"),
                   "b": (4, 12, 1, "neurons")}
    l1, b = rows(m)["p_l1"], rows(m)["b"]
    assert (l1.synapse_layers, l1.synapse_reach, l1.memory_bits) == (("p_l1<r",), (1,),
                                                                      18 * 2 * 21 + 6 * 4 * 8)
    assert (b.synapse_layers, b.synapse_reach) == (("b<p_l2",), (1,))
    from spikeclip_deploy.mapping import Mapping
    from spikeclip_deploy.report import mapping_summary
    text = mapping_summary(Mapping("x", "test", System("one", 1), (m,)))
    assert "max pools of currents on chip: 5 cores of ReLU levels (50.0 % of the cores)" in text
