"""Spiking self-attention wired from Lava's stock processes (backends/lava_attention.py): on
random spike trains, Y of every step, read at the reading LIF's port, equals numpy's
Q K^T V per head, computed here from the spikes as Spikingformer defines it, and arrives
exactly HOPS steps after its spikes."""
import numpy as np
import pytest

from spikeclip_deploy.backends.lava_attention import HOPS, ORDERS


def reference_y(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    """``[C, H, W]`` spikes -> ``(Q_h K_h^T) V_h`` per head, ``[C, H, W]`` (token ``y W + x``,
    channel ``h d + i``), by explicit sums."""
    c, h, w = q.shape
    d = c // heads
    tokens = [(y, x) for y in range(h) for x in range(w)]
    out = np.zeros((c, h, w), dtype=np.int64)
    for hd in range(heads):
        ch = range(hd * d, (hd + 1) * d)
        for (y, x) in tokens:
            for j in ch:
                out[j, y, x] = sum(int(q[i, y, x]) * int(k[i, y2, x2]) * int(v[j, y2, x2])
                                   for (y2, x2) in tokens for i in ch)
    return out


def lava_attention(spikes: dict[str, np.ndarray], heads: int, order: str,
                   weight: int = 1, weight_exp: int = 0) -> np.ndarray:
    """Sources of ``spikes`` (``q``, ``k``, ``v``: ``[steps, C, H, W]``) into the wiring; the
    flat ``a_out`` at the reading LIF's port at every step, ``[steps + HOPS, C, H, W]``."""
    from lava.proc.io.sink import RingBuffer as Sink

    from spikeclip_deploy.backends.lava import _lava, no_inherited_garbage
    from spikeclip_deploy.backends.lava_attention import wire_attention
    from spikeclip_deploy.backends.lava_layout import to_lava_layout

    L = _lava()
    steps, c, h, w = spikes["q"].shape
    pad = np.zeros((HOPS, c, h, w), dtype=np.int32)
    src = {k: L["Source"](data=np.stack([to_lava_layout(x) for x in np.concatenate([s, pad])],
                                        -1).astype(np.int32))
           for k, s in spikes.items()}
    out = wire_attention(L, {k: s.s_out for k, s in src.items()}, (c, h, w), heads, order, 24,
                         weight, weight_exp)
    sink = Sink(shape=out.a_out.shape, buffer=steps + HOPS)
    out.a_out.connect(sink.a_in)
    with no_inherited_garbage():
        src["q"].run(condition=L["RunSteps"](num_steps=steps + HOPS), run_cfg=L["run_cfg"]())
    got = sink.data.get()  # [W H C flat, steps]
    src["q"].stop()
    return got.T.reshape(steps + HOPS, w, h, c).transpose(0, 3, 2, 1)


@pytest.mark.lava
@pytest.mark.parametrize("order", ORDERS)
def test_attention_on_lava_equals_numpy_every_step(order):
    """Two heads of 3 channels on a 2 x 3 grid (non-square, so a transposed token order shows),
    Q, K and V at densities that change every step (an operand taken from the wrong step
    shows); Y of the spikes of step t arrives at step t + HOPS, and nothing before."""
    rng = np.random.default_rng(1)
    steps, grid, heads = 6, (6, 2, 3), 2
    density = rng.uniform(0.2, 0.9, (3, steps, 1, 1, 1))
    spikes = {name: (rng.random((steps, *grid)) < p).astype(np.int32)
              for name, p in zip("qkv", density)}
    got = lava_attention(spikes, heads, order)
    assert not got[:HOPS].any()
    for t in range(steps):
        want = reference_y(*(spikes[n][t] for n in "qkv"), heads)
        assert want.max() > 1  # counts, not a single coincidence
        np.testing.assert_array_equal(got[t + HOPS], want, err_msg=f"{order}, step {t}")


@pytest.mark.lava
def test_the_output_synapse_applies_weight_and_exponent_by_hand():
    """One head, one channel, two tokens, all spiking: every Y is (1 1 + 1 1) 1 = 2, sent as
    2 w 2^e = 2 * 3 * 2 = 12 with w = 3, e = 1."""
    spikes = {n: np.ones((1, 1, 1, 2), dtype=np.int32) for n in "qkv"}
    got = lava_attention(spikes, 1, "k_first", weight=3, weight_exp=1)
    assert got[HOPS].ravel().tolist() == [12, 12]
