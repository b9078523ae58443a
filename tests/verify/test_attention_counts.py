import itertools

import numpy as np
import pytest

from spikeclip_deploy.verify.attention_counts import attention_counts, attention_sizes


def grid(tokens_by_channel):
    """``[tokens][d]`` spikes of one head -> ``[B=1, T=1, C=d, H=1, W=tokens]``."""
    return np.asarray(tokens_by_channel, dtype=np.uint8).T[None, None, :, None, :]


def brute(q, k, v, order):
    """The counts by enumerating every product neuron of one head and step (``[N, d]``)."""
    n, d = q.shape
    if order == "k_first":
        inner = k.T @ v
        p1 = sum(k[t, i] * v[t, j] != 0 for t in range(n) for i in range(d) for j in range(d))
        p2 = sum(q[t, i] * inner[i, j] != 0 for t in range(n) for i in range(d)
                 for j in range(d))
        fan_in, fan_out = d, n
    else:
        inner = q @ k.T
        p1 = sum(q[a, i] * k[b, i] != 0 for a in range(n) for b in range(n) for i in range(d))
        p2 = sum(inner[a, b] * v[b, j] != 0 for a in range(n) for b in range(n)
                 for j in range(d))
        fan_in, fan_out = n, d
    sums = int((inner != 0).sum())
    return {"products": p1 + p2, "sum_spikes": sums, "graded_sops": p1 + p2 + fan_out * sums,
            "spike_sops": fan_in * int(q.sum() + k.sum() + v.sum())}


def test_counts_by_hand():
    """N = d = 2: K first, |K_n||V_n| = 2 + 2 nonzero first products; M = K^T V = [[0, 1],
    [1, 2]] (3 nonzero); |Q_:,i| = [2, 1] times M's nonzero per row [1, 2]: 4 second products.
    Q first: |Q_:,i||K_:,i| = 2 + 2; S = Q K^T = [[1, 0], [2, 1]] (3 nonzero), times |V_m| =
    [1, 2]: 1 + 1 + 2."""
    q, k, v = grid([[1, 0], [1, 1]]), grid([[1, 1], [0, 1]]), grid([[0, 1], [1, 1]])
    for order in ("k_first", "q_first"):
        got = attention_counts(q, k, v, 1, order)
        assert {key: int(x[0]) for key, x in got.items()} == {
            "products": 8, "sum_spikes": 3, "graded_sops": 14, "spike_sops": 18}


@pytest.mark.parametrize("order", ["k_first", "q_first"])
def test_counts_equal_enumeration(order):
    """Random spikes of 2 samples, 3 steps, 2 heads of d = 3 over 4 tokens (N != d, so a mixed-up
    order counts differently): every count equals the enumeration over product neurons."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.random((2, 3, 6, 2, 2)) < p for p in (0.5, 0.3, 0.6))
    got = attention_counts(q, k, v, 2, order)
    for b in range(2):
        want = dict.fromkeys(got, 0)
        for t, h in itertools.product(range(3), range(2)):
            heads = [s[b, t, 3 * h:3 * h + 3].reshape(3, 4).T.astype(np.int64)
                     for s in (q, k, v)]
            for key, x in brute(*heads, order).items():
                want[key] += x
        assert {key: int(x[b]) for key, x in got.items()} == want


def test_sizes_of_the_paper_model():
    """64 tokens, 8 heads of 48: K first 2 x 8 x 64 x 48^2 products, 8 x 48^2 sums; Q first
    2 x 8 x 64^2 x 48 products, 8 x 64^2 sums."""
    assert attention_sizes(64, 8, 48, "k_first") == {
        "products": 2_359_296, "sums": 18_432, "fan_in": 48, "sum_fan_out": 64}
    assert attention_sizes(64, 8, 48, "q_first") == {
        "products": 3_145_728, "sums": 32_768, "fan_in": 64, "sum_fan_out": 48}
    with pytest.raises(ValueError, match="order"):
        attention_sizes(64, 8, 48, "v_first")
