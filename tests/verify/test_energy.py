import nir
import numpy as np
import pytest

from spikeclip_deploy.hardware import ChipEnergyModel, EnergyModel
from spikeclip_deploy.exchange.resources import fan_out, flops
from spikeclip_deploy.exchange.nirgraph import ChipLayer, HostOpNode, relay_node
from spikeclip_deploy.verify.chip_energy import crossing_share, placement_state
from spikeclip_deploy.verify.energy import SpikeTally, energy_report
from spikeclip_deploy.verify.stats import mean_ci95, wilson_ci95

EM = EnergyModel("test", "", e_mac_pj=4.6, e_ac_pj=0.9,
                 scope="computation only: memory access and data movement are not counted",
                 e_graded_op_pj=0.5, e_relay_update_pj=0.25, e_relu_update_pj=0.125,
                 e_product_pj=3.5, sources={})


def lif(shape):
    f = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    return nir.LIF(tau=f(2), r=f(1), v_leak=f(0), v_threshold=f(1), v_reset=f(0))


def as_layers(chain):
    """A chain ``[(name, node)]`` as chip layers, each reading the one before."""
    names = ["input"] + [name for name, _ in chain]
    return [ChipLayer(name, node, (prev,)) for (name, node), prev in zip(chain, names)]


def tally(layers, spikes):
    t = SpikeTally(layers, spikes[0].shape[1])
    t.add([np.asarray(s) for s in spikes])
    return t


def test_sops_of_a_three_neuron_network():
    # 3 inputs -> Affine(2x3) -> 2 outputs; spikes at t0: [1,0,1], t1: [0,1,1] -> 4 spikes x fan-out 2
    chain = as_layers([("lif0", lif((3,))), ("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2))),
                       ("lif1", lif((2,)))])
    spikes = [np.array([[[1, 0, 1], [0, 1, 1]]]), np.zeros((1, 2, 2))]
    rep = energy_report(tally(chain, spikes), stem_macs=10, readout_macs=5, energy_model=EM)
    layer = rep["layers"][0]
    assert layer["sops"] == 8
    assert layer["firing_rate"] == 4 / 6 and layer["flops"] == 6
    assert np.isclose(layer["sops_analytic"], 4 / 6 * 2 * 6)
    # E_SNN = 0.9 * 8 + 4.6 * (10 + 5): the stem once (direct coding); E_ANN = 4.6 * (10 + 6 + 5)
    assert np.isclose(rep["energy_per_inference_mj"] * 1e9, 0.9 * 8 + 4.6 * 15)
    assert (rep["chip_energy_pj"], rep["host_energy_pj"]) == (0.9 * 8, 4.6 * 15)
    assert np.isclose(rep["host_energy_share"], 69 / 76.2) and np.isclose(
        rep["chip_energy_share"], 7.2 / 76.2)
    assert rep["first_layer_energy_pj"] == 4.6 * 10
    # the paper's convention, the stem at every step (T = 2), only as its own figure
    assert np.isclose(rep["energy_per_inference_mj_stem_every_step"] * 1e9,
                      0.9 * 8 + 4.6 * (2 * 10 + 5))
    assert np.isclose(rep["ann_energy_per_inference_mj"] * 1e9, 4.6 * 21)
    assert rep["note"] == EM.scope  # every report states what the model counts
    assert rep["chip_sop_share"] == 8 / (8 + 10 + 5)  # chip SOPs vs host MACs as executed


def test_conv_fan_out_by_hand():
    conv = nir.Conv2d(input_shape=(3, 3), weight=np.ones((1, 1, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(1))
    fo = fan_out(conv, (1, 3, 3))
    assert fo[0].tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    assert flops(conv, (1, 3, 3)) == 81


# the layouts the backends hand spikes over in: PyTorch's, channels-last views (the
# emulator's) and time-major views (the float model's)
LAYOUTS = {"contiguous": lambda s: s,
           "channels last": lambda s: np.ascontiguousarray(s.transpose(0, 1, 3, 4, 2))
           .transpose(0, 1, 4, 2, 3),
           "time major": lambda s: np.ascontiguousarray(s.transpose(1, 0, 2, 3, 4))
           .transpose(1, 0, 2, 3, 4)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_sops_equal_an_independent_recount(layout):
    """spikes x fan-out equals the number of synaptic events a conv with unit weights sums,
    per sample, whatever the spikes' strides."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    spikes = (rng.random((2, 4, 3, 8, 8)) < 0.2).astype(np.uint8)  # [N, T, C, H, W]
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    conv = nir.Conv2d(input_shape=(8, 8), weight=w, stride=2, padding=1, dilation=1, groups=1,
                      bias=np.zeros(5))
    chain = as_layers([("lif0", lif((3, 8, 8))), ("conv0", conv), ("lif1", lif((5, 4, 4)))])
    t = tally(chain, [LAYOUTS[layout](spikes), np.zeros((2, 4, 5, 4, 4))])
    rep = energy_report(t, 0, 0, EM)
    events = F.conv2d(torch.from_numpy(spikes.reshape(8, 3, 8, 8)).double(),
                      torch.ones(5, 3, 3, 3, dtype=torch.float64), stride=2, padding=1
                      ).reshape(2, -1).sum(1)
    assert rep["layers"][0]["sops"] == float(events.sum()) / 2
    assert t.state()["sample_sops"] == events.long().tolist()
    assert t.state()["spikes"]["lif0"] == int(spikes.sum())


def test_counts_over_the_steps_tally_as_the_spikes_do():
    """``add_counts`` of each LIF's float sums over the steps (the float model's ``[T, B, ...]``
    spikes summed over T) keeps the state ``add`` of the spikes keeps: spikes, synaptic ops per
    synapse and per sample, recounted here."""
    rng = np.random.default_rng(1)
    spikes = (rng.random((3, 4, 2, 6, 6)) < 0.3).astype(np.uint8)  # [N, T, C, H, W]
    conv = nir.Conv2d(input_shape=(6, 6), weight=np.ones((1, 2, 3, 3)), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(1))
    chain = as_layers([("lif0", lif((2, 6, 6))), ("conv0", conv), ("lif1", lif((1, 6, 6)))])
    out = (rng.random((3, 4, 1, 6, 6)) < 0.5).astype(np.uint8)
    counts = SpikeTally(chain, 4)
    counts.add_counts([s.astype(np.float32).sum(1).reshape(3, -1) for s in (spikes, out)])
    fo = fan_out(conv, (2, 6, 6)).reshape(-1)
    per_sample = (spikes.sum(1).reshape(3, -1) * fo).sum(1)
    assert counts.state()["sample_sops"] == per_sample.tolist()
    assert counts.state()["spikes"] == {"lif0": int(spikes.sum()), "lif1": int(out.sum())}
    assert counts.state() == tally(chain, [spikes, out]).state()


def test_copies_of_a_residual_term_count_once_in_the_model():
    """dense0 is read by lif1 and lif2 (split into two copies on chip): the model's SOPs and the
    ANN's FLOPs count it once; the chip's events count both copies."""
    def dense(copy_of=None):
        return nir.Affine(np.ones((2, 3)), np.zeros(2), metadata={"copy_of": copy_of} if copy_of else {})
    layers = [ChipLayer("lif0", lif((3,)), ("input",)),
              ChipLayer("dense0_lif1", dense("dense0"), ("lif0",)),
              ChipLayer("dense0_lif2", dense("dense0"), ("lif0",)),
              ChipLayer("lif1", lif((2,)), ("dense0_lif1",)),
              ChipLayer("lif2", lif((2,)), ("dense0_lif2",))]
    spikes = [np.array([[[1, 0, 1], [0, 1, 1]]]), np.zeros((1, 2, 2)), np.zeros((1, 2, 2))]
    rep = energy_report(tally(layers, spikes), 0, 0, EM)
    assert rep["total_sops"] == 8 and rep["chip_sops_all_copies"] == 16
    assert np.isclose(rep["ann_energy_per_inference_mj"] * 1e9, 4.6 * 6)


def test_a_host_op_counts_as_host_macs_every_step():
    """lif0 -> dense0 -> lif1 -> host op (7 MACs per step) -> lif2: the op runs T = 2 times."""
    op = HostOpNode(op="SpikeAttention", input_shapes=((2,),), output_shape=(2,),
                    metadata={"macs": 7})
    layers = [ChipLayer("lif0", lif((3,)), ("input",)),
              ChipLayer("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2)), ("lif0",)),
              ChipLayer("lif1", lif((2,)), ("dense0",)),
              ChipLayer("host0", op, ("lif1",)),
              ChipLayer("lif2", lif((2,)), ("host0",))]
    spikes = [np.array([[[1, 0, 1], [0, 1, 1]]]), np.zeros((1, 2, 2)), np.zeros((1, 2, 2))]
    rep = energy_report(tally(layers, spikes), stem_macs=10, readout_macs=5, energy_model=EM)
    assert [row["name"] for row in rep["layers"]] == ["dense0"] and rep["total_sops"] == 8
    assert rep["host_op_macs_per_step"] == 7 and rep["host_macs_executed"] == 10 + 2 * 7 + 5
    assert rep["chip_sop_share"] == 8 / (8 + 10 + 14 + 5)
    assert rep["chip_part_sop_share"] == 8 / (8 + 14)
    # E_SNN = 0.9 * 8 + 4.6 * (10 + 2 * 7 + 5); E_ANN = 4.6 * (10 + 6 + 7 + 5)
    assert np.isclose(rep["energy_per_inference_mj"] * 1e9, 0.9 * 8 + 4.6 * 29)
    assert np.isclose(rep["ann_energy_per_inference_mj"] * 1e9, 4.6 * 28)


def test_energy_interval_from_per_sample_sops_and_tallies_that_add_up():
    """Two samples with 8 and 2 SOPs (fan-out 2): energy per sample 0.9 * SOPs + 4.6 * 10 pJ
    (the stem once); the interval is their mean +- 1.96 s / sqrt(2). Tallies of each sample
    merged equal the tally of both."""
    chain = as_layers([("lif0", lif((3,))), ("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2))),
                       ("lif1", lif((2,)))])
    spikes = [np.array([[[1, 0, 1], [0, 1, 1]], [[0, 0, 1], [0, 0, 0]]]), np.zeros((2, 2, 2))]
    both = tally(chain, spikes)
    assert both.state()["sample_sops"] == [8, 2]
    e = np.array([0.9 * 8 + 46, 0.9 * 2 + 46]) / 1e9
    half = 1.959963984540054 * np.std(e, ddof=1) / np.sqrt(2)
    rep = energy_report(both, stem_macs=10, readout_macs=0, energy_model=EM)
    assert np.allclose(rep["energy_per_inference_mj_ci95"], [e.mean() - half, e.mean() + half],
                       rtol=1e-12, atol=0)
    first, second = tally(chain, [s[:1] for s in spikes]), tally(chain, [s[1:] for s in spikes])
    first.merge(second.state())
    assert first.state() == both.state()


def test_wilson_interval_published_values():
    """Wilson 95 % intervals as tabulated (Newcombe 1998, Table I): 0/10 -> [0, 0.2775],
    5/10 -> [0.2366, 0.7634], 10/10 -> [0.7225, 1], 81/263 -> [0.2553, 0.3662]."""
    assert np.allclose(wilson_ci95(0, 10), [0, 0.2775], atol=1e-4)
    assert np.allclose(wilson_ci95(5, 10), [0.2366, 0.7634], atol=1e-4)
    assert np.allclose(wilson_ci95(81, 263), [0.2553, 0.3662], atol=1e-4)
    assert np.allclose(wilson_ci95(10, 10), [0.7225, 1.0], atol=1e-4)


def test_mean_interval_by_hand():
    """[1, 2, 3]: mean 2, s = 1: 2 +- 1.96 / sqrt(3)."""
    assert np.allclose(mean_ci95(np.array([1.0, 2.0, 3.0])),
                       [2 - 1.959964 / 3**0.5, 2 + 1.959964 / 3**0.5], atol=1e-6)


CHIP = ChipEnergyModel("chip", "", e_synaptic_op_pj=20.0, e_neuron_update_active_pj=80.0,
                       e_neuron_update_inactive_pj=50.0, e_spike_message_pj=2.0,
                       e_graded_op_pj=10.0, e_relay_update_pj=30.0, e_relu_update_pj=40.0,
                       e_graded_message_pj=3.0,
                       e_product_update_active_pj=70.0, e_product_update_inactive_pj=40.0,
                       static_mw_per_chip=100.0, scope="test", left_out=("tile hops",),
                       sources={})


def two_lifs():
    """lif0 (3) -> dense0 (2x3) -> lif1 (2), T = 2: lif0 spikes [1,0,1], [0,1,1] (4 spikes,
    8 SOPs), lif1 [1,0], [0,0] (1 spike)."""
    chain = as_layers([("lif0", lif((3,))), ("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2))),
                       ("lif1", lif((2,)))])
    return tally(chain, [np.array([[[1, 0, 1], [0, 1, 1]]]), np.array([[[1, 0], [0, 0]]])])


#: lif0 on one core of chip 0; lif1 on one core of chip 0 and one of chip 1: a spike of lif0
#: goes to both (reach 2), half the messages cross chips
PLACED = {"system": "two", "chips": 2,
          "lifs": {"lif0": {"chips": [0], "chip_cores": [1]},
                   "lif1": {"chips": [0, 1], "chip_cores": [1, 1]}},
          "synapses": {"dense0": {"reader": "lif1", "reach": 2}}}


def test_chip_energy_of_two_lifs_by_hand():
    """lif0: 6 updates, 4 spiking: 4 * 80 + 2 * 50 = 420 pJ. dense0: 8 SOPs * 20 = 160 pJ;
    4 spikes x reach 2 = 8 messages * 2 = 16 pJ, 4 of them between chips. lif1: 4 updates, 1
    spiking: 80 + 3 * 50 = 230 pJ. Chip 826 pJ; host 4.6 * (10 + 5) = 69 pJ (stem once)."""
    rep = energy_report(two_lifs(), stem_macs=10, readout_macs=5, energy_model=EM,
                        chip_model=CHIP, placement=PLACED)
    chip = rep["loihi"]
    assert [(r["name"], r["energy_pj"]) for r in chip["layers"]] == [
        ("lif0", 420.0), ("dense0", 176.0), ("lif1", 230.0)]
    lif0, dense0, _ = chip["layers"]
    assert (lif0["neuron_updates"], lif0["active_updates"], lif0["neuron_pj"]) == (6, 4, 420)
    assert (dense0["sops"], dense0["sop_pj"], dense0["messages"], dense0["message_pj"],
            dense0["messages_between_chips"]) == (8, 160, 8, 16, 4)
    assert chip["terms_pj"] == {"synaptic_ops": 160, "neuron_updates": 650, "spike_messages": 16}
    assert (chip["chip_pj"], chip["host_pj"]) == (826, 4.6 * 15)
    assert np.isclose(chip["total_mj"] * 1e9, 826 + 69)
    assert np.isclose(chip["chip_share"], 826 / 895) and np.isclose(chip["host_share"], 69 / 895)
    assert (chip["messages"], chip["messages_between_chips"]) == (8, 4)
    assert chip["static_mw"] == 200  # 2 chips x 100 mW, not in the total
    assert chip["placement"] == {"system": "two", "chips": 2}
    assert len(chip["terms"]) == 4 and chip["left_out"] == ["tile hops"]
    # the 45 nm model's figures are unchanged by the chip model; the ANN comparison is its own
    assert rep["energy_reduction"] == energy_report(two_lifs(), 10, 5, EM)["energy_reduction"]


def test_an_unmapped_encoder_counts_no_messages_and_says_why():
    rep = energy_report(two_lifs(), 10, 5, EM, CHIP, {"system": "two", "error": "lif1 too big"})
    chip = rep["loihi"]
    assert chip["terms_pj"] == {"synaptic_ops": 160, "neuron_updates": 650}
    assert chip["chip_pj"] == 810 and chip["messages"] is None and chip["static_mw"] is None
    assert "lif1 too big" in chip["left_out"][0]
    assert "messages" not in chip["layers"][1]


def test_crossing_share_of_spread_layers():
    """Sender 1:3 on chips 0 and 1, reader 1:1 on chips 1 and 2: same chip 3/4 * 1/2."""
    assert crossing_share({"chips": [0, 1], "chip_cores": [1, 3]},
                          {"chips": [1, 2], "chip_cores": [2, 2]}) == 1 - 3 / 8


def test_placement_state_of_a_mapping():
    """The mapper's reach and per-chip cores, as the energy model reads them."""
    from spikeclip_deploy.exchange.chip import Cores, System
    from spikeclip_deploy.mapping import map_encoder

    cores = Cores(cores_per_chip=4, neurons_per_core=2, synaptic_memory_bits_per_core=8000,
                  dense_bits_per_synapse=8, sparse_bits_per_synapse=21, conv_bits_per_weight=8,
                  input_axons_per_core=1000, output_axons_per_core=1000,
                  systems=(System("one", 1),), sources={})
    layers = as_layers([("lif0", lif((3,))), ("dense0", nir.Affine(np.ones((3, 3)), np.zeros(3))),
                        ("lif1", lif((3,)))])
    state = placement_state(map_encoder("image", layers, (3,), cores, cores.systems[0]), "one")
    assert state == {"system": "one", "chips": 1,
                     "lifs": {"lif0": {"chips": [0], "chip_cores": [2]},
                              "lif1": {"chips": [0], "chip_cores": [2]}},
                     "synapses": {"dense0": {"reader": "lif1", "reach": 2}}}


def test_relays_by_hand():
    """lif0 (3) -> dense0 -> relay0 (2) -> lif1 (2), T = 2, the spikes of :func:`two_lifs`:
    relay0 updates 2 x 2 = 4 times and sends 4 graded ops to its one reader. 45 nm: 8 SOPs x 0.9
    + 4 x 0.5 + 4 x 0.25 = 10.2 pJ on chip; the model's SOPs are the chip's (no copy). Loihi:
    4 x 30 + 4 x 10 + 4 graded messages (reach 1) x 3 = 172 pJ for the relay."""
    layers = [ChipLayer("lif0", lif((3,)), ("input",)),
              ChipLayer("dense0", nir.Affine(np.ones((2, 3)), np.zeros(2)), ("lif0",)),
              ChipLayer("relay0", relay_node((2,), {}), ("dense0",)),
              ChipLayer("lif1", lif((2,)), ("relay0",))]
    t = tally(layers, [np.array([[[1, 0, 1], [0, 1, 1]]]), np.array([[[1, 0], [0, 0]]])])
    placed = {"system": "one", "chips": 1,
              "lifs": {n: {"chips": [0], "chip_cores": [1]} for n in ("lif0", "relay0", "lif1")},
              "synapses": {"dense0": {"reader": "relay0", "reach": 1},
                           "relay0>lif1": {"reader": "lif1", "reach": 1}}}
    rep = energy_report(t, 0, 0, EM, CHIP, placed)
    assert (rep["total_sops"], rep["chip_sops_all_copies"]) == (8, 8)
    assert (rep["relay_updates"], rep["graded_sops"]) == (4, 4)
    assert np.isclose(rep["chip_energy_pj"], 8 * 0.9 + 4 * 0.5 + 4 * 0.25)
    relay = next(r for r in rep["loihi"]["layers"] if r["name"] == "relay0")
    assert (relay["relay_pj"], relay["graded_sop_pj"], relay["graded_messages"],
            relay["energy_pj"]) == (120, 40, 4, 172)
    assert rep["loihi"]["graded_messages"] == 4
    assert rep["loihi"]["terms_pj"]["graded_messages"] == 12
    # the chip's share counts the 4 graded ops it executes: (8 + 4) / (8 + 4 + 12 stem MACs)
    assert energy_report(t, 12, 0, EM)["chip_sop_share"] == 0.5


def split_graph(kind):
    """lif0 (4 inputs) -> dense0 (3 outputs: an ``Affine``, or a pointwise ``Conv2d`` over 4 x 1
    x 2 inputs) split as the split_fan_in pass splits it: part0 reads columns (channels) 0-1
    into sum0, part1 columns 2-3 into sum1 = sum0 + part1 -> lif1."""
    def part(k):
        w = np.zeros((3, 4) if kind == "dense" else (3, 4, 1, 1), np.float32)
        w[:, 2 * k:2 * k + 2] = 1
        meta = {"part_of": "dense0", "columns": [2 * k, 2 * k + 2]}
        if kind == "dense":
            return nir.Affine(weight=w, bias=np.zeros(3, np.float32), metadata=meta)
        return nir.Conv2d(input_shape=(1, 2), weight=w, stride=1, padding=0, dilation=1,
                          groups=1, bias=np.zeros(3, np.float32), metadata=meta)
    shape = (4,) if kind == "dense" else (4, 1, 2)
    out = (3,) if kind == "dense" else (3, 1, 2)
    return [ChipLayer("lif0", lif(shape), ("input",)), ChipLayer("part0", part(0), ("lif0",)),
            ChipLayer("sum0", relay_node(out, {}), ("part0",)),
            ChipLayer("part1", part(1), ("lif0",)),
            ChipLayer("sum1", relay_node(out, {}), ("sum0", "part1")),
            ChipLayer("lif1", lif(out), ("sum1",))]


@pytest.mark.parametrize("kind", ["dense", "pointwise"])
def test_a_split_layers_parts_send_messages_for_their_own_inputs_by_hand(kind):
    """:func:`split_graph` on cores of 4 input axons: sum0 reads part0's 2 inputs (a position),
    one core; sum1 reads 2 identity inputs and part1's 2, so a core holds 2 of its neurons
    (channels): a spike of lif0's columns (channels) 2-3 reaches 2 cores, of 0-1 one. lif0, T =
    2: columns 0, 2, 3 at step 0, 1, 3 at step 1 (of the pointwise graph: at positions 0 and 1):
    part0 carries 2 spikes (6 SOPs, 2 messages), part1 3 (9 SOPs, 3 x 2 = 6 messages): 8
    messages, where charging each part every lif0 spike would give 5 + 10 = 15."""
    from spikeclip_deploy.exchange.chip import Cores, System
    from spikeclip_deploy.mapping import map_encoder

    cores = Cores(cores_per_chip=8, neurons_per_core=100, synaptic_memory_bits_per_core=10**5,
                  dense_bits_per_synapse=8, sparse_bits_per_synapse=21, conv_bits_per_weight=8,
                  input_axons_per_core=4, output_axons_per_core=1000,
                  systems=(System("one", 1),), sources={})
    layers = split_graph(kind)
    shape = np.asarray(layers[0].node.tau).shape
    placed = placement_state(map_encoder("image", layers, shape, cores, cores.systems[0]), "one")
    assert {s: placed["synapses"][s]["reach"] for s in ("part0", "part1")} == {"part0": 1,
                                                                                "part1": 2}
    steps = np.zeros((2, 4))
    steps[0, [0, 2, 3]], steps[1, [1, 3]] = 1, 1
    spikes = np.zeros((1, 2, *shape))
    if kind == "dense":
        spikes[0] = steps
    else:
        spikes[0, 0, :, 0, 0], spikes[0, 1, :, 0, 1] = steps
    t = tally(layers, [spikes, np.zeros((1, 2, *np.asarray(layers[-1].node.tau).shape))])
    chip = energy_report(t, 0, 0, EM, CHIP, placed)["loihi"]
    got = {r["name"]: (r["sops"], r["messages"]) for r in chip["layers"]
           if r["kind"] == "synapses"}
    assert got == {"part0": (6, 2), "part1": (9, 6)}
    assert chip["messages"] == 8 and chip["terms_pj"]["spike_messages"] == 8 * 2.0


def test_a_part_whose_inputs_send_unequal_synapses_is_refused():
    """A 3 x 3 padded convolution's part (not one the split_fan_in pass makes): its corner
    inputs send 4 synapses, its centre 9, so its SOPs do not give the spikes it carries."""
    from spikeclip_deploy.errors import LoweringError

    w = np.zeros((1, 2, 3, 3), np.float32)
    w[:, :1] = 1
    conv = nir.Conv2d(input_shape=(3, 3), weight=w, stride=1, padding=1, dilation=1, groups=1,
                      bias=np.zeros(1, np.float32), metadata={"part_of": "c", "columns": [0, 1]})
    layers = as_layers([("lif0", lif((2, 3, 3))), ("c_part0", conv), ("lif1", lif((1, 3, 3)))])
    with pytest.raises(LoweringError, match=r"'c_part0'.*\[4, 6, 9\]"):
        SpikeTally(layers, 2)


def test_current_pool_levels_by_hand():
    """lif0 (3) -> dense0 (4 x 3) -> relay0 (1 x 2 x 2) -> one 2x2 window's max as ReLU levels
    -> lif1 (1 x 1 x 1), T = 2, lif0's spikes of :func:`two_lifs` (4 spikes, 16 SOPs). Level 1
    pairs the 4 values: 6 neurons, 8 signed synapses (a - b reads 2); level 2: 3 neurons, 12
    synapses (relu(A - B) reads 6, relu(B) and relu(-B) 3 each); the readout 3. Upper bounds,
    every step: 18 ReLU updates, (8 + 12 + 3) x 2 = 46 graded ops; relay0 has no identity
    reader. 45 nm: 16 x 0.9 + 8 x 0.25 + 46 x 0.5 + 18 x 0.125 pJ. Loihi, every reach 1: level 1
    12 x 40 + 16 x 10 + 4 source neurons x 2 steps x 3 = 664 pJ; level 2 6 x 40 + 30 x 10 +
    (6 + 3) x 2 x 3 = 594 pJ."""
    from spikeclip_deploy.exchange.current_pool import PoolNode, level_specs

    specs = level_specs("p", 1, (2, 2), 2, 2, 0, "flat", "relay0")
    layers = [ChipLayer("lif0", lif((3,)), ("input",)),
              ChipLayer("dense0", nir.Affine(np.ones((4, 3)), np.zeros(4)), ("lif0",)),
              ChipLayer("relay0", relay_node((1, 2, 2), {}), ("dense0",)),
              *(ChipLayer(s.name, PoolNode(spec=s), s.inputs) for s in specs),
              ChipLayer("lif1", lif((1, 1, 1)), ("p_l2",))]
    t = tally(layers, [np.array([[[1, 0, 1], [0, 1, 1]]]), np.zeros((1, 2, 1, 1, 1))])
    placed = {"system": "one", "chips": 1,
              "lifs": {la.name: {"chips": [0], "chip_cores": [1]} for la in layers},
              "synapses": {name: {"reader": name.split("<")[0], "reach": 1} for name in
                           ("p_l1<relay0", "p_l2<p_l1", "lif1<p_l2")}
              | {"dense0": {"reader": "relay0", "reach": 1}}}
    rep = energy_report(t, 0, 0, EM, CHIP, placed)
    assert (rep["total_sops"], rep["relay_updates"], rep["graded_sops"]) == (16, 8, 0)
    assert (rep["relu_updates"], rep["pool_graded_sops"]) == (18, 46)
    assert np.isclose(rep["chip_energy_pj"], 16 * 0.9 + 8 * 0.25 + 46 * 0.5 + 18 * 0.125)
    got = {r["name"]: r for r in rep["loihi"]["layers"] if r.get("kind") == "relu"}
    assert {n: (r["relu_pj"], r["graded_sop_pj"], r["graded_messages"], r["energy_pj"])
            for n, r in got.items()} == {"p_l1": (480, 160, 8, 664), "p_l2": (240, 300, 18, 594)}
    assert rep["loihi"]["terms_pj"]["relu_updates"] == 720
    # the chip's share counts the 46 graded ops it executes: (16 + 46) / (16 + 46 + 62 MACs)
    assert energy_report(t, 62, 0, EM)["chip_sop_share"] == 0.5
    from spikeclip_deploy.report import energy_summary
    text = energy_summary({**rep, "spikes_from": "emu"})
    assert ("max pools of currents on chip (every ReLU neuron at every step, an upper bound): 18 "
            "ReLU updates, 46 graded synaptic ops: 0.000000 mJ at 45 nm") in text
    assert "(max pool ReLU level: updates and graded messages)" in text


def attention_graph():
    """q, k, v LIFs (C = 2, H = 1, W = 2: one head of d = 2 over N = 2 tokens) -> the head's
    k_first populations -> the attention LIF 'a'."""
    from spikeclip_deploy.exchange.attention import AttentionNode, head_specs
    layers = [ChipLayer(s, lif((2, 1, 2)), ("input",)) for s in "qkv"]
    for spec in head_specs("att", 0, 1, (1, 2), 2, "k_first", ("q", "k", "v")):
        layers.append(ChipLayer(spec.name, AttentionNode(spec=spec), spec.inputs))
    return layers + [ChipLayer("a", lif((2, 1, 2)), ("att_h0_y",))]


def attention_tally():
    """T = 1, Q = [[1, 0], [1, 1]], K = [[1, 1], [0, 1]], V = [[0, 1], [1, 1]] (token rows, as in
    test_attention_counts): graded spikes kv 4, m 3, qm 4, y 3; 'a' silent."""
    def grid(rows):
        return np.asarray(rows, np.uint8).T[None, None, :, None, :]
    return tally(attention_graph(), [grid([[1, 0], [1, 1]]), grid([[1, 1], [0, 1]]),
                                     grid([[0, 1], [1, 1]]), np.zeros((1, 1, 2, 1, 2))])


def test_attention_on_chip_by_hand():
    """Products: kv 4 + qm 4 = 8 nonzero of 2 x N d^2 = 16 updates; sums m 4 + y 4 = 8 updates.
    Graded synaptic ops: kv 4 x 1 (into m) + m 3 x N = 2 (into qm) + qm 4 x 1 + y 3 x 1 (into
    'a') = 17. Q, K and V spikes (3 each) reach d = 2 product neurons each: 18 synaptic ops.
    45 nm: 8 x 3.5 + 17 x 0.5 + 18 x 0.9 + 8 x 0.25 = 54.7 pJ, all on chip (no host ops): the
    chip part's share 1. The ANN counterpart evaluates Q K^T V densely: 2 N^2 d = 16 MACs.
    Loihi, unmapped: kv and qm 4 x 70 + 4 x 40 each, m and y 4 x 30 each, graded ops x 10,
    the three spike synapses 6 x 20 each; the LIFs q, k, v 3 x 80 + 50 each, 'a' 4 x 50."""
    rep = energy_report(attention_tally(), 10, 5, EM, CHIP, {"system": "one", "error": "no"})
    assert {k: rep[k] for k in ("products", "product_updates", "sum_updates",
                                "attention_graded_sops", "attention_spike_sops")} == {
        "products": 8, "product_updates": 16, "sum_updates": 8, "attention_graded_sops": 17,
        "attention_spike_sops": 18}
    assert np.isclose(rep["attention_energy_pj"], 54.7)
    assert np.isclose(rep["chip_energy_pj"], 54.7) and rep["chip_part_sop_share"] == 1.0
    assert np.isclose(rep["chip_sop_share"], 43 / (43 + 15))
    assert np.isclose(rep["ann_energy_per_inference_mj"] * 1e9, 4.6 * (10 + 16 + 5))
    chip = rep["loihi"]
    assert chip["terms_pj"] == {"synaptic_ops": 360, "neuron_updates": 1070,
                                "product_updates": 880, "attention_sum_updates": 240,
                                "graded_sops": 170}
    rows = {r["name"]: r for r in chip["layers"]}
    assert (rows["att_h0_kv"]["active_updates"], rows["att_h0_m"]["graded_sops"],
            rows["att_h0_qm<q"]["sops"]) == (4, 6, 6)


def test_attention_messages_follow_the_mapping():
    """Everything on one core of a chip: a graded spike reaches one core, kv 4 + m 3 + qm 4 +
    y 3 = 14 graded messages; a Q, K or V spike one core of its product population: 9 spike
    messages."""
    from spikeclip_deploy.exchange.chip import Cores, System
    from spikeclip_deploy.mapping import map_encoder

    cores = Cores(cores_per_chip=16, neurons_per_core=100, synaptic_memory_bits_per_core=8000,
                  dense_bits_per_synapse=8, sparse_bits_per_synapse=21, conv_bits_per_weight=8,
                  input_axons_per_core=1000, output_axons_per_core=1000,
                  systems=(System("one", 1),), sources={})
    placed = placement_state(map_encoder("image", attention_graph(), (2, 1, 2), cores,
                                         cores.systems[0]), "one")
    chip = energy_report(attention_tally(), 10, 5, EM, CHIP, placed)["loihi"]
    assert (chip["graded_messages"], chip["messages"]) == (14, 9)
    assert chip["terms_pj"]["graded_messages"] == 14 * 3.0


def test_attention_tallies_merge_exactly():
    """Two tallies of the same sample add up to twice its counts, the interval's samples too."""
    both = attention_tally()
    both.merge(attention_tally().state())
    rep = energy_report(both, 10, 5, EM)
    assert (rep["products"], rep["attention_graded_sops"]) == (8, 17)
    assert both.state()["sample_attention"] == [[8, 17, 18], [8, 17, 18]]


def test_the_energy_summary_states_the_attention_on_chip():
    from spikeclip_deploy.report import energy_summary

    rep = energy_report(attention_tally(), 10, 5, EM, CHIP, {"system": "one", "error": "no"})
    text = energy_summary({**rep, "spikes_from": "emu"})
    assert ("spiking attention on chip: 8 nonzero products (16 product neuron updates), 8 graded"
            " sum updates, 17 graded and 18 spike synaptic ops: 0.000000 mJ at 45 nm") in text
    assert "att_h0_kv" in text and "(attention product population" in text
