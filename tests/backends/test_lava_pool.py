"""A max pool of integer currents as graded ReLU levels on Lava's stock processes
(backends/lava_pool.py): random signed currents through a graded relay, the levels and their
readout into a graded sink, against numpy's max pool (padding -inf) of the same step, the
measured hops later."""
import numpy as np
import pytest
from scipy.sparse import csr_matrix

from spikeclip_deploy.backends.lava_layout import from_lava_layout, to_lava_layout


def _add(a, b, sign=1):
    out = dict(a)
    for q, wt in b.items():
        out[q] = out.get(q, 0) + sign * wt
    return out


def window_tree(c, h, w, k, s, p):
    """A 2-D tree over each window's values (row-major, padding left out): the levels' signed
    weights and the readout (a value is a signed sum of a level's neurons; ``max(a, b) =
    relu(a - b) + relu(b) - relu(-b)``, an unpaired ``x = relu(x) - relu(-x)``)."""
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    values = [[{(ch * h + i) * w + j: 1}
               for i in range(y * s - p, y * s - p + k) if 0 <= i < h
               for j in range(x * s - p, x * s - p + k) if 0 <= j < w]
              for ch in range(c) for y in range(ho) for x in range(wo)]
    n_src, levels = c * h * w, []
    while max(len(v) for v in values) > 1:
        neurons, nxt = [], []
        for vals in values:
            out = []
            for i in range(0, len(vals), 2):
                if i + 1 < len(vals):
                    a, b = vals[i], vals[i + 1]
                    combos, signs = (_add(a, b, -1), b, _add({}, b, -1)), (1, 1, -1)
                else:
                    combos, signs = (vals[i], _add({}, vals[i], -1)), (1, -1)
                out.append({len(neurons) + m: sg for m, sg in enumerate(signs)})
                neurons.extend(combos)
            nxt.append(out)
        levels.append(_matrix(neurons, n_src))
        values, n_src = nxt, len(neurons)
    return levels, _matrix([v[0] for v in values], n_src), (c, ho, wo)


def _matrix(rows, n_src):
    r = [i for i, row in enumerate(rows) for _ in row]
    q = [j for row in rows for j in row]
    d = [wt for row in rows for wt in row.values()]
    return csr_matrix((np.array(d, dtype=np.int32), (r, q)), shape=(len(rows), n_src))


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


def lava_pool_run(levels, readout, in_shape, out_shape, currents, bits=24):
    """``currents [steps, *in_shape]`` (PyTorch layout) into a graded relay, the levels, their
    readout into a graded sink: the sink's payloads ``[steps, *out_shape]``."""
    from spikeclip_deploy.backends.lava import _lava
    from spikeclip_deploy.backends.lava_pool import relu_levels
    from spikeclip_deploy.fileutil import owned_tempdir

    L = _lava()
    steps = len(currents)
    data = np.stack([to_lava_layout(x) for x in currents], -1).astype(np.int32)
    source = L["Source"](data=data)
    relay = L["GradedVec"](shape=data.shape[:-1], vth=0)
    source.s_out.connect(relay.a_in)
    _, port = relu_levels(L, relay, in_shape, levels, readout, out_shape, bits)
    lava_out = to_lava_layout(np.zeros(out_shape)).shape
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
@pytest.mark.parametrize("c, h, w, k, s, p", [(2, 5, 6, 3, 2, 1), (1, 4, 4, 2, 2, 0),
                                               (2, 3, 5, 3, 1, 1)])
def test_relu_levels_on_lava_give_the_max_pool_of_each_step(c, h, w, k, s, p):
    """Signed currents (negative and positive, ties, large magnitudes) on odd, even and square
    grids, borders with 4 and 6 values: the sink's payload of chip step t + levels + 1 (a synapse
    into each level and into the sink: one step each) is the max pool of the relay's step t."""
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    levels, readout, out_shape = window_tree(c, h, w, k, s, p)
    steps = 6
    currents = rng.integers(-2 ** 20, 2 ** 20, (steps, c, h, w))
    currents[1] = rng.integers(-3, 3, (c, h, w))  # ties
    currents[2] = -rng.integers(1, 2 ** 21, (c, h, w))  # all negative: padding must not win
    hops = len(levels) + 1
    run = lava_pool_run(levels, readout, (c, h, w), out_shape,
                        np.concatenate([currents, np.zeros((hops, c, h, w), int)]))
    assert np.array_equal(run[hops:hops + steps], numpy_max_pool(currents, k, s, p))
    assert not run[:hops].any()
