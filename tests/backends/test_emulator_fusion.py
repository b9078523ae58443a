"""Fan-in chains fused on the emulator (``backends/emulator_fusion.py``): which chains fuse,
worked by hand, and a fused run's spikes against the chain's (which the Lava tests of
test_emulator.py cover, with state recorded)."""
import nir
import numpy as np

from spikeclip_deploy.backends.emulator import Emulation
from spikeclip_deploy.backends.emulator_fusion import fan_in_chains
from spikeclip_deploy.exchange.nirgraph import INPUT, ChipLayer, relay_node
from spikeclip_deploy.hardware import load_profile

FP = load_profile("loihi2").fixed_point


def lif(n, vth):
    """``n`` LIFs without memory (du = dv = 4095: u is the step's input, v keeps nothing of
    the step before) and threshold ``vth``: a spike where the step's input exceeds ``vth``."""
    ones = np.ones(n)
    return nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones,
                   metadata={"loihi": {"du": 4095, "dv": 4095, "vth": vth, "bias_exp": 0}})


def dense(w, exp=0, **meta):
    w = np.array(w)
    return nir.Affine(weight=w, bias=np.zeros(len(w)), metadata={"loihi": {"weight_exp": exp},
                                                                 **meta})


def split(w, exps=(0, 0), head=(3, 4), readers=()):
    """lif0 (4 neurons, spiking at every step) -> skip (``head`` on the diagonal) -> relay
    ``head``; ``w`` [2 x 4] cut into part0 (columns 0-1) and part1 (2-3), exponents ``exps``,
    summed as the ``split_fan_in`` pass chains them: sum0 = head + part0, out = sum0 + part1
    (``readers`` of sum0 besides out; part k held k + 1 steps, so that every path is aligned);
    lif1 (threshold 5) reads out."""
    w = np.array(w)
    parts = [np.where(np.arange(4) // 2 == k, w, 0) for k in (0, 1)]
    return [ChipLayer("lif0", lif(4, 1), (INPUT,)),
            ChipLayer("skip", dense(np.diag(head) @ np.eye(2, 4, dtype=int)), ("lif0",)),
            ChipLayer("head", relay_node((2,), {}), ("skip",)),
            *(ChipLayer(f"part{k}", dense(p, exps[k], part_of="w", delay=k + 1), ("lif0",))
              for k, p in enumerate(parts)),
            ChipLayer("sum0", relay_node((2,), {"fan_in_of": "w"}), ("head", "part0")),
            ChipLayer("out", relay_node((2,), {"fan_in_of": "w"}), ("sum0", "part1")),
            *(ChipLayer(r, lif(2, 5), ("sum0",)) for r in readers),
            ChipLayer("lif1", lif(2, 5), ("out",))]


def runs(layers):
    """(the emulation, its spikes fused, its spikes with state recorded: the chain's), lif0
    driven by 100 at every neuron (two samples)."""
    em = Emulation(layers, 3, FP, 1, ".")
    mant = np.full((2, 4), 100)
    return em, em.run(mant).spikes, em.run(mant, record_state=True).spikes


def test_a_chain_fuses_into_one_product_and_keeps_its_head_by_hand():
    """lif1's input is head + w 1 (even weights: Lava keeps them whole): neuron 0 3 + (2 + 2)
    = 7 > 5 spikes (5 without part1, 3 without the parts, 4 without the head), neuron 1
    4 + (-2 + 2) = 4 stays silent (8 with a sign lost)."""
    layers = split([[2, 0, 2, 0], [0, -2, 0, 2]])
    em, fused, chain = runs(layers)
    assert [la.name for la in em.fused] == ["lif0", "skip", "head", "w", "out", "lif1"]
    by_name = {la.name: la for la in em.fused}
    assert by_name["out"].inputs == ("head", "w")
    assert by_name["w"].inputs == ("lif0",)
    np.testing.assert_array_equal(by_name["w"].node.weight, [[2, 0, 2, 0], [0, -2, 0, 2]])
    assert "part_of" not in by_name["w"].node.metadata
    assert fused["lif0"].all()
    np.testing.assert_array_equal(fused["lif1"], np.broadcast_to([1, 0], (2, 3, 2)))
    np.testing.assert_array_equal(chain["lif1"], fused["lif1"])


def test_a_negative_exponent_keeps_the_chain():
    """Exponent -1 floors each part's sum: part0 gives floor(1/2) = 0, part1 floor(1/2) = 0,
    so neuron 0 gets 5 (silent), where the whole would give floor(2/2) = 1 and 6 (a spike)."""
    em, fused, chain = runs(split([[1, 0, 1, 0], [0, 0, 0, 0]], exps=(-1, -1), head=(5, 0)))
    assert [la.name for la in em.fused] == [la.name for la in em.layers]
    assert not fused["lif1"].any()
    np.testing.assert_array_equal(chain["lif1"], fused["lif1"])


def test_parts_of_one_sign_each_keep_the_chain():
    """Lava drops the lowest bit of a matrix of both signs only: part0 (3, one sign) keeps 3,
    part1 (-1) keeps -1, the whole ([3, -1]) would become 2 and -2."""
    em, fused, chain = runs(split([[3, 0, -1, 0], [0, 0, 0, 0]], head=(3, 0)))
    assert [la.name for la in em.fused] == [la.name for la in em.layers]
    np.testing.assert_array_equal(chain["lif1"], fused["lif1"])


def test_a_convolution_part_that_can_wrap_keeps_the_chain():
    """Pointwise convolution parts of weight 2^22 over two channels each reach 2^23 (Lava's
    24-bit sum wraps): not fused; of 2^21 each part stays below, but the whole's four channels
    would reach 2^23 (the relays sum without a wrap; the fused sum would wrap): not fused; of
    2^20 they fuse."""
    for weight, fuses in ((2**22, False), (2**21, False), (2**20, True)):
        def conv(cols, delay):
            w = np.zeros((1, 4, 1, 1), dtype=np.int64)
            w[0, cols] = weight
            return nir.Conv2d(input_shape=(1, 1), weight=w, stride=1, padding=0, dilation=1,
                              groups=1, bias=np.zeros(1),
                              metadata={"loihi": {"weight_exp": 0}, "part_of": "w",
                                        "delay": delay})
        layers = [ChipLayer("lif0", lif((4, 1, 1), 1), (INPUT,)),
                  ChipLayer("part0", conv([0, 1], 0), ("lif0",)),
                  ChipLayer("sum0", relay_node((1, 1, 1), {"fan_in_of": "w"}), ("part0",)),
                  ChipLayer("part1", conv([2, 3], 1), ("lif0",)),
                  ChipLayer("sum1", relay_node((1, 1, 1), {"fan_in_of": "w"}), ("sum0", "part1")),
                  ChipLayer("lif1", lif((1, 1, 1), 5), ("sum1",))]
        em = Emulation(layers, 2, FP, 1, ".")
        assert ("w" in [la.name for la in em.fused]) is fuses, weight


def test_a_sum_read_elsewhere_keeps_the_chain():
    """sum0 is also read by another LIF: its payloads are needed, so no chain is fused."""
    layers = split([[1, 0, 2, 0], [0, -1, 0, 1]], readers=("tap",))
    assert fan_in_chains(layers) == {}
    assert [la.name for la in Emulation(layers, 3, FP, 1, ".").fused] == \
        [la.name for la in layers]
    assert fan_in_chains(split([[1, 0, 2, 0], [0, -1, 0, 1]])).keys() == {"w"}
