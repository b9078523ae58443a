r"""95 % confidence intervals for what verification measures."""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_ci95(correct: int, n: int) -> list[float]:
    r"""Wilson score interval of a proportion :math:`\hat p = k/n`:

    .. math:: \frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n}
              + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}

    (it stays inside [0, 1] and is sensible at 0 % and 100 %, unlike :math:`\hat p \pm z
    \sqrt{\hat p(1-\hat p)/n}`)."""
    p, z2 = correct / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mean_ci95(values: np.ndarray) -> list[float]:
    r"""Normal-approximation interval of a mean: :math:`\bar x \pm z\, s/\sqrt{n}` (:math:`s`
    the sample standard deviation; unbounded for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    half = Z95 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return [float(values.mean() - half), float(values.mean() + half)]
