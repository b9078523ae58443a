r"""Loihi's bias register, one place for both directions (lowering writes it, backends and the
netx writer read it back).

A mantissa :math:`m` and exponent :math:`e` add :math:`m\,2^{e}` to the neuron's state each step.
A chip graph holds a bias :math:`b` in units of :math:`2^{a}` state (:math:`a` the activation
shift, the one its synaptic input is shifted by), so

.. math::

    b = m\,2^{e-a}, \qquad m = \mathrm{round}(b\,2^{a-e}).
"""
from __future__ import annotations

import numpy as np


def mantissa_unit(exp: int, shift: int) -> float:
    r"""The bias one mantissa step adds, in units of :math:`2^{a}` state: :math:`2^{e-a}`."""
    return 2.0 ** (exp - shift)


def bias_value(mant: np.ndarray, exp: int, shift: int) -> np.ndarray:
    r"""Mantissas -> the bias they add, in units of :math:`2^{a}` state: :math:`m\,2^{e-a}`
    (``mant``'s float type kept)."""
    return np.asarray(mant) * mantissa_unit(exp, shift)


def bias_mantissa(bias: np.ndarray, exp: int, shift: int) -> np.ndarray:
    r"""A bias in units of :math:`2^{a}` state -> the nearest mantissas at exponent :math:`e`,
    :math:`\mathrm{round}(b\,2^{a-e})` (float64, not clipped)."""
    return np.round(np.asarray(bias, dtype=np.float64) / mantissa_unit(exp, shift))
