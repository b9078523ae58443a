"""A current max pool's ReLU levels on Lava's stock processes (backends/lava_pool.py): random
signed currents through a graded relay, the levels and their readout into a graded sink,
against numpy's max pool (padding -inf) of the same step, the measured hops later."""
import nir
import numpy as np
import pytest

from spikeclip_deploy.backends.lava_layout import from_lava_layout, to_lava_layout
from spikeclip_deploy.exchange.attention import fire
from spikeclip_deploy.exchange.current_pool import FORMS, PoolNode, level_specs
from spikeclip_deploy.exchange.nirgraph import INPUT, ChipLayer, relay_node
from spikeclip_deploy.hardware import load_profile

FP = load_profile("loihi2").fixed_point

#: a level's registers as the quantizer sets them
REGISTERS = {"vth": 0, "num_message_bits": 24}


def pool_levels(c, h, w, k, s, p, form):
    return [PoolNode(spec=spec, metadata={"loihi": dict(REGISTERS)})
            for spec in level_specs("pool", c, (h, w), k, s, p, form, "relay")]


def numpy_max_pool(x, k, s, p):
    """``[..., C, H, W]`` integers -> their max pool, padding -inf (left out)."""
    *lead, c, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    pad = np.full((*lead, c, h + 2 * p, w + 2 * p), np.iinfo(np.int64).min)
    pad[..., p:p + h, p:p + w] = x
    out = np.full((*lead, c, ho, wo), np.iinfo(np.int64).min)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, pad[..., i:i + s * ho:s, j:j + s * wo:s])
    return out


def lava_pool_run(levels, currents):
    """``currents [steps, C, H, W]`` (PyTorch layout) into a graded relay, the ``levels``, their
    readout into a graded sink: the sink's payloads ``[steps, C, H', W']``."""
    from spikeclip_deploy.backends.lava import _lava
    from spikeclip_deploy.backends.lava_pool import relu_levels
    from spikeclip_deploy.fileutil import owned_tempdir

    L = _lava()
    steps = len(currents)
    data = np.stack([to_lava_layout(x) for x in currents], -1).astype(np.int32)
    source = L["Source"](data=data)
    relay = L["GradedVec"](shape=data.shape[:-1], vth=0)
    source.s_out.connect(relay.a_in)
    _, port = relu_levels(L, relay, levels)
    lava_out = to_lava_layout(np.zeros(levels[0].spec.out_shape)).shape
    sink = L["GradedVec"](shape=lava_out, vth=0)
    port.reshape(lava_out).connect(sink.a_in)
    with owned_tempdir(None, "spikeclip-test-") as tmp:
        path = f"{tmp}/sink.npy"
        L["io"].new_recording(path, steps, lava_out, np.int32)
        sink.s_out.connect(L["io"].SpikeRecorder(shape=lava_out, path=path).a_in)
        source.run(condition=L["RunSteps"](num_steps=steps), run_cfg=L["run_cfg"]())
        source.stop()
        rec = np.load(path).astype(np.int64)
    return from_lava_layout(np.moveaxis(rec, 0, -1))  # [steps, C, H, W]


@pytest.mark.lava
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("c, h, w, k, s, p", [(2, 5, 6, 3, 2, 1), (1, 4, 4, 2, 2, 0),
                                               (2, 3, 5, 3, 1, 1)])
def test_relu_levels_on_lava_give_the_max_pool_of_each_step(c, h, w, k, s, p, form):
    """Signed currents (negative and positive, ties, large magnitudes) on odd, even and square
    grids, borders with 4 and 6 values: the sink's payload of chip step t + levels + 1 (a synapse
    into each level and into the sink: one step each) is the max pool of the relay's step t."""
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    levels = pool_levels(c, h, w, k, s, p, form)
    steps = 6
    currents = rng.integers(-2 ** 20, 2 ** 20, (steps, c, h, w))
    currents[1] = rng.integers(-3, 3, (c, h, w))  # ties
    currents[2] = -rng.integers(1, 2 ** 21, (c, h, w))  # all negative: padding must not win
    hops = len(levels) + 1
    run = lava_pool_run(levels, np.concatenate([currents, np.zeros((hops, c, h, w), int)]))
    assert np.array_equal(run[hops:hops + steps], numpy_max_pool(currents, k, s, p))
    assert not run[:hops].any()


def lif(shape, du, dv, vth):
    ones = np.ones(shape)
    return nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones,
                   metadata={"loihi": {"du": du, "dv": dv, "vth": vth, "bias_exp": 0}})


def pooled_graph(c_in, c, grid, k, s, p, form, bias):
    """input -> LIF ``a`` -> 3x3 convolution of random signed integer weights (its ``bias``)
    -> graded relay ``r`` -> the pool's levels (the second's synapses hold their payloads a
    step more) -> LIF ``b``."""
    rng = np.random.default_rng(c * 10 + grid[0])
    w = rng.integers(-40, 41, (c, c_in, 3, 3)).astype(np.float32)
    conv = nir.Conv2d(input_shape=grid, weight=w, stride=1, padding=1, dilation=1, groups=1,
                      bias=np.asarray(bias, np.float32),
                      metadata={"loihi": {"weight_exp": 0}})
    relay = relay_node((c, *grid), {"loihi": {"vth": 0, "num_message_bits": 24}})
    levels = [PoolNode(spec=spec, delay=int(spec.level == 2),
                       metadata={"loihi": dict(REGISTERS)})
              for spec in level_specs("pool", c, grid, k, s, p, form, "r")]
    layers = [ChipLayer("a", lif((c_in, *grid), 3000, 2000, 150), (INPUT,)),
              ChipLayer("conv", conv, ("a",)), ChipLayer("r", relay, ("conv",)),
              *(ChipLayer(n.spec.name, n, n.spec.inputs) for n in levels),
              ChipLayer("b", lif(levels[0].spec.out_shape, 4095, 4095, 10 ** 6),
                        (levels[-1].spec.name,))]
    return layers, w


@pytest.mark.lava
@pytest.mark.parametrize("form", FORMS)
def test_a_pooled_lif_on_lava_takes_the_max_of_its_convolutions_current(form):
    """A chip graph run by the Lava backend over 2 samples: the relay's payloads are the
    convolution's current (its bias left out), every level's payloads are what the shared
    description's ``fire`` computes from the level before, and the pooled LIF's u of its first
    step is the max pool (padding -inf) of that current << activation shift, its v that plus
    the bias."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network

    c_in, c, grid, k, s, p, t = 2, 3, (5, 6), 3, 2, 1, 4
    bias = [5, -7, 0]
    layers, w = pooled_graph(c_in, c, grid, k, s, p, form, bias)
    mant = np.random.default_rng(1).integers(-50, 400, (2, c_in, *grid))
    run = _Network(_lava(), layers, t, LavaBackend.handlers, FP.activation_shift, 1,
                   ".").record(mant, state=True)
    a = run.spikes["a"].astype(np.int64)  # [B, T, C_in, H, W]
    assert 0 < a.mean() < 1
    padded = np.pad(a, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    current = np.einsum("btiyxkl,oikl->btoyx", np.lib.stride_tricks.sliding_window_view(
        padded, (3, 3), axis=(3, 4)), w.astype(np.int64))
    np.testing.assert_array_equal(run.payloads["r"], current)
    seen = current.reshape(2, t, -1)
    for la in layers:
        if isinstance(la.node, PoolNode):
            want = fire(la.node.population, [seen])
            np.testing.assert_array_equal(run.payloads[la.name].reshape(2, t, -1), want,
                                          err_msg=la.name)
            seen = want
    assert (current < 0).any() and (current > 0).any()
    np.testing.assert_array_equal(run.u["b"][:, 0],
                                  numpy_max_pool(current[:, 0], k, s, p) << FP.activation_shift)
    # v of the first step adds the bias once, after the maximum (not pooled with the current)
    np.testing.assert_array_equal(run.v["b"][:, 0] - run.u["b"][:, 0],
                                  np.broadcast_to(np.asarray(bias)[:, None, None] <<
                                                  FP.activation_shift, run.u["b"][:, 0].shape))
