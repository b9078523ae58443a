"""The im2col convolution models (backends/lava_procs/conv.py, delay_conv.py) against Lava's
own: every output of every step identical to ``PyConvModelFixed`` (and, delayed, to the
``DelaySparse`` lowering); where Lava's model is wrong (128 groups), equal to torch's conv2d."""
import nir
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends.lava_procs.conv import exact_float
from spikeclip_deploy.errors import ExportError

STEPS = 6


def lava_a_out(data: np.ndarray, procs: list, models: dict) -> list[np.ndarray]:
    """Each process in ``procs`` fed by a source of ``data`` ``[X, Y, C, steps]`` (flattened
    for a sparse synapse); their ``a_out`` of every step, ``[steps, *shape]``."""
    from spikeclip_deploy.backends.lava import _lava, no_inherited_garbage
    from lava.proc.io.sink import RingBuffer as Sink

    L, steps = _lava(), data.shape[-1]
    source, sinks = L["Source"](data=data), []
    for proc in procs:
        port = source.s_out
        if port.shape != proc.s_in.shape:
            port = port.flatten()
        port.connect(proc.s_in)
        sinks.append(Sink(shape=proc.a_out.shape, buffer=steps))
        proc.a_out.connect(sinks[-1].a_in)
    cfg = L["Loihi2SimCfg"](select_tag="fixed_pt", exception_proc_model_map=models)
    with no_inherited_garbage():
        source.run(condition=L["RunSteps"](num_steps=steps), run_cfg=cfg)
    out = [np.moveaxis(sink.data.get(), -1, 0) for sink in sinks]
    source.stop()  # not after an error in a process: Lava 0.10's stop() then waits forever
    return out


def fast_and_stock(data: np.ndarray, convs: list[dict]) -> tuple[list, list]:
    """``a_out`` per step of Lava ``Conv`` processes with arguments ``convs``, on this package's
    models and on Lava's stock ``PyConvModelFixed``."""
    from lava.proc.conv.process import Conv
    from spikeclip_deploy.backends.lava import _lava

    shape = data.shape[:3]
    return tuple(lava_a_out(data, [Conv(input_shape=shape, **c) for c in convs], L["models"])
                 for L in (_lava(), _lava(reference=True)))


def weights(rng, c_out: int, k: tuple[int, int], c_in: int, lo: int = -256, hi: int = 255):
    """Random integer weights in Lava's ``(C_out, kX, kY, C_in)``, both extremes present."""
    w = rng.integers(lo, hi + 1, (c_out, *k, c_in)).astype(np.int32)
    w.flat[0], w.flat[-1] = lo, hi
    return w


def test_exact_float_bounds():
    """Integers up to 2^24 are exact in float32, up to 2^53 in float64; beyond, refused."""
    assert exact_float(2**24) is np.float32 and exact_float(2**24 + 1) is np.float64
    assert exact_float(2**53) is np.float64
    with pytest.raises(ExportError, match="2\\^53"):
        exact_float(2**53 + 1)


@pytest.mark.lava
def test_random_convolutions_equal_lavas_model_every_step():
    """Kernel sizes 1-5 (non-square), strides, padding, dilation, groups (depthwise, with a
    channel multiplier), weight_exp != 0 (which Lava's Conv ignores), 8-bit extreme weights,
    on a non-square input whose nonzero values (1, 2, -3) are all spikes."""
    rng = np.random.default_rng(0)
    c_in = 8
    convs = [dict(k=(3, 3), c_out=4, padding=1),
             dict(k=(3, 2), c_out=6, stride=(2, 1), padding=(1, 0), groups=2),
             dict(k=(2, 3), c_out=4, padding=(0, 2), dilation=(2, 1), groups=4),
             dict(k=(3, 3), c_out=8, padding=1, groups=8),
             dict(k=(3, 3), c_out=16, groups=8),
             dict(k=(1, 1), c_out=16, weight_exp=3),
             dict(k=(5, 5), c_out=3, stride=2, padding=2, weight_exp=-2)]
    args = []
    for c in convs:
        k, c_out, groups = c.pop("k"), c.pop("c_out"), c.get("groups", 1)
        args.append(dict(weight=weights(rng, c_out, k, c_in // groups), **c))
    data = rng.choice(np.int32([0, 0, 1, 1, 2, -3]), (7, 6, c_in, STEPS))  # nonzero: a spike
    fast, stock = fast_and_stock(data, args)
    for i, (f, s) in enumerate(zip(fast, stock)):
        assert np.array_equal(f, s), (convs[i], np.argwhere(f != s)[:5].tolist())
        assert np.count_nonzero(s[1:]) > 0.5 * s[1:].size, convs[i]
        assert not s[0].any()  # the first step sends the empty buffer


@pytest.mark.lava
def test_sums_beyond_24_bits_wrap_as_lavas():
    """72 000 weights of 240..255 on all-one spikes sum to ~17.8 M: beyond float32's exact range
    (2^24) and beyond the 24-bit accumulator (2^23), where Lava wraps them; graded inputs
    (num_message_bits = 24) of up to 2^16 reach ~4.5e8."""
    rng = np.random.default_rng(1)
    c_in = 8000
    w = np.concatenate([weights(rng, 1, (3, 3), c_in, 240, 255),
                        weights(rng, 1, (3, 3), c_in, -256, -240)])
    data = np.ones((3, 3, c_in, 3), dtype=np.int32)
    data[..., 1] = rng.random((3, 3, c_in)) < 0.9
    (fast,), (stock,) = fast_and_stock(data, [dict(weight=w, padding=1)])
    assert np.array_equal(fast, stock)
    assert np.abs(stock).max() < 2**23 < w[0].sum()  # wrapped
    graded = rng.integers(-2**16, 2**16 + 1, (5, 4, 3, STEPS)).astype(np.int32)
    (fast,), (stock,) = fast_and_stock(graded, [dict(weight=weights(rng, 2, (3, 3), 3),
                                                     num_message_bits=24, padding=1)])
    assert np.array_equal(fast, stock)
    assert np.abs(stock).max() > 2**20


@pytest.mark.lava
def test_128_groups_convolve_as_torch():
    """Lava's Conv keeps groups in an int8 Var: 128 groups become -128 and its model returns
    zeros. This model convolves with the process's 128 groups, as torch does (a one-step
    delay, Lava's flipped kernel in the (X, Y, C) layout)."""
    rng = np.random.default_rng(2)
    w = weights(rng, 128, (3, 2), 1)
    data = (rng.random((5, 4, 128, STEPS)) < 0.5).astype(np.int32)
    (fast,), (stock,) = fast_and_stock(data, [dict(weight=w, padding=1, groups=128)])
    assert not stock.any()
    x = torch.from_numpy(data.transpose(3, 2, 1, 0).astype(np.float64))  # [steps, C, Y, X]
    k = torch.from_numpy(w[:, ::-1, ::-1, :].transpose(0, 3, 2, 1).astype(np.float64))
    want = torch.nn.functional.conv2d(x, k, padding=(1, 1), groups=128).numpy()
    want = np.concatenate([np.zeros_like(want[:1]), want[:-1]]).transpose(0, 3, 2, 1)
    assert np.array_equal(fast, want)


def nir_conv(rng, c_in: int, c_out: int, k: int, delay: int, **kw) -> nir.Conv2d:
    """An exported convolution: even 8-bit weights, weight_exp 0, ``delay``."""
    groups = kw.get("groups", 1)
    w = 2 * rng.integers(-128, 128, (c_out, c_in // groups, k, k))
    w.flat[0] = -256
    return nir.Conv2d(input_shape=None, weight=w.astype(np.float32), stride=kw.get("stride", 1),
                      padding=kw.get("padding", 0), dilation=1, groups=groups,
                      bias=np.zeros(c_out, np.float32),
                      metadata={"loihi": {"weight_exp": 0}, "delay": delay})


@pytest.mark.lava
def test_delayed_convolutions_equal_the_delaysparse_lowering():
    """``DelayConv`` (input held ``delay`` steps, then the convolution) sends what the old
    lowering's ``DelaySparse`` over the convolution's sparse matrix sends, every step."""
    from spikeclip_deploy.backends.lava import _conv, _lava

    rng = np.random.default_rng(3)
    nodes = [nir_conv(rng, 4, 4, 3, 1, padding=1), nir_conv(rng, 4, 4, 3, 3, stride=2, groups=4),
             nir_conv(rng, 4, 6, 1, 2), nir_conv(rng, 4, 8, 3, 4, groups=2)]
    data = (rng.random((6, 5, 4, 10)) < 0.5).astype(np.int32)
    new, ref = (lava_a_out(data, [_conv(L, n, data.shape[:3]) for n in nodes], L["models"])
                for L in (_lava(), _lava(reference=True)))
    for node, a, b in zip(nodes, new, ref):
        d = node.metadata["delay"]
        assert np.array_equal(a.reshape(len(a), -1), b), d
        assert not b[:d + 1].any() and b[d + 1].any()


@pytest.mark.lava
def test_a_convolution_with_a_weight_exponent_is_refused():
    """Lava's Conv models ignore weight_exp (the chip would apply it): the backend refuses it."""
    from spikeclip_deploy.backends.lava import _conv, _lava

    node = nir_conv(np.random.default_rng(4), 4, 4, 3, 0)
    node.metadata["loihi"]["weight_exp"] = 1
    for delay in (0, 2):
        node.metadata["delay"] = delay
        with pytest.raises(ExportError, match="weight_exp 1"):
            _conv(_lava(), node, (6, 5, 4))


@pytest.mark.lava
def test_delaysparse_with_its_matrix_built_once_equals_lavas_model_every_step():
    """``DelaySparse`` on this package's model (lava_procs/delay_sparse.py) and on Lava's own:
    mixed-sign 8-bit weights (odd ones, which Lava truncates), delays 0-3 mixed in one matrix,
    weight_exp -1, 0 and 2, binary and graded inputs that change every step."""
    from lava.proc.sparse.process import DelaySparse
    from scipy.sparse import csr_matrix

    from spikeclip_deploy.backends.lava import _lava

    rng = np.random.default_rng(4)
    n_out, n_in = 12, 30
    mask = rng.random((n_out, n_in)) < 0.4
    rows, cols = np.nonzero(mask)
    w = csr_matrix((rng.integers(-256, 256, len(rows)).astype(np.int32), (rows, cols)),
                   shape=(n_out, n_in))
    delays = csr_matrix((rng.integers(0, 4, len(rows)), (rows, cols)), shape=(n_out, n_in))
    spikes = (rng.random((n_in, 1, 1, STEPS)) < 0.5).astype(np.int32)
    graded = rng.integers(-500, 500, (n_in, 1, 1, STEPS)).astype(np.int32)
    for data, bits in ((spikes, 0), (graded, 24)):
        data = data.reshape(n_in, STEPS)
        procs = lambda: [DelaySparse(weights=w, delays=delays, weight_exp=e,  # noqa: E731
                                     num_message_bits=bits) for e in (-1, 0, 2)]
        ours = lava_a_out(data, procs(), _lava()["models"])
        stock = lava_a_out(data, procs(), _lava(reference=True)["models"])
        for e, o, s in zip((-1, 0, 2), ours, stock):
            np.testing.assert_array_equal(o, s, err_msg=f"bits {bits}, weight_exp {e}")
            assert np.count_nonzero(s[2:]) > 0.5 * s[2:].size, (bits, e)
