import itertools

import numpy as np
import pytest

from spikeclip_deploy.exchange.attention import QKV, expand, fire, head_specs
from spikeclip_deploy.verify.attention_counts import population_events


def grid(tokens_by_channel):
    """``[tokens][d]`` spikes of one head -> ``[B=1, T=1, C=d, H=1, W=tokens]``."""
    return np.asarray(tokens_by_channel, dtype=np.uint8).T[None, None, :, None, :]


def test_events_by_hand():
    """N = d = 2, Q = [[1, 0], [1, 1]], K = [[1, 1], [0, 1]], V = [[0, 1], [1, 1]] (token
    rows). k_first: |K_n||V_n| = 2 + 2; M = K^T V = [[0, 1], [1, 2]], 3 nonzero; |Q_:,i| = [2,
    1] times M's nonzero per row [1, 2]: 4; Q M = [[0, 1], [1, 3]]: 3 nonzero. q_first:
    |Q_:,i||K_:,i| = 2 + 2; S = Q K^T = [[1, 0], [2, 1]], 3 nonzero; times |V_m| = [1, 2]: 1 + 1 +
    2; S V = [[0, 1], [1, 3]]: 3."""
    q, k, v = grid([[1, 0], [1, 1]]), grid([[1, 1], [0, 1]]), grid([[0, 1], [1, 1]])
    assert {s: e.tolist() for s, e in population_events(q, k, v, 1, "k_first").items()} == {
        "kv": [[4]], "m": [[3]], "qm": [[4]], "y": [[3]]}
    assert {s: e.tolist() for s, e in population_events(q, k, v, 1, "q_first").items()} == {
        "qk": [[4]], "s": [[3]], "sv": [[4]], "y": [[3]]}


@pytest.mark.parametrize("order", ["k_first", "q_first"])
def test_events_equal_the_populations_fired(order):
    """Random spikes of 2 samples, 3 steps, 2 heads of d = 3 over 2 x 2 tokens (N != d, so a
    mixed-up order or head layout counts differently): every population's count equals the
    nonzero outputs of its neurons fired one by one over their sources
    (:func:`~spikeclip_deploy.exchange.attention.fire`)."""
    rng = np.random.default_rng(7)
    q, k, v = ((rng.random((2, 3, 6, 2, 2)) < p).astype(np.int64) for p in (0.5, 0.3, 0.6))
    got = population_events(q, k, v, 2, order)
    for b, h in itertools.product(range(2), range(2)):
        want = dict.fromkeys(got, 0)
        for t in range(3):
            outs = dict(zip(QKV, (s[b, t].reshape(-1) for s in (q, k, v))))
            for spec in head_specs("a", h, 2, (2, 2), 3, order, QKV):
                outs[spec.stage] = fire(expand(spec), [outs[p] for p in spec.ports])
                want[spec.stage] += int(np.count_nonzero(outs[spec.stage]))
        assert {s: int(e[b, h]) for s, e in got.items()} == want
