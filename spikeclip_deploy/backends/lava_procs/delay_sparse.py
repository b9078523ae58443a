r"""Lava's stock ``DelaySparse`` model with its delay-split weight matrix built once.

``PyDelaySparseModelBitAcc`` (lava-nc 0.10.0) rebuilds, at every step, the matrix that stacks
its weights by delay (``get_delay_wgts_mat``: a masked copy per delay, a fancy-indexed zeroing
of the delayed synapses, a ``vstack``), although its weights and delays never change after the
first step: 0.75 s a step for the 262 144 synapses of one attention head's delayed port (the
small SSA model's, timed on the development machine under load), where the product with it
takes a millisecond.
:class:`PyDelaySparseModelCached` is that model with the matrix built once, at the first step,
from the weights as the model has clipped and truncated them; every step's ``a_out`` is the
stock model's, bit for bit (tests/backends/test_lava_conv.py). The backend lists it in the run
config's ``exception_proc_model_map`` (:data:`MODEL_MAP`); ``_lava(reference=True)`` keeps
Lava's own.
"""
from __future__ import annotations

import numpy as np

from spikeclip_deploy import lava_compat

lava_compat.install()

from lava.proc.sparse.models import PyDelaySparseModelBitAcc  # noqa: E402
from lava.proc.sparse.process import DelaySparse  # noqa: E402


class PyDelaySparseModelCached(PyDelaySparseModelBitAcc):
    """``PyDelaySparseModelBitAcc`` with ``get_delay_wgts_mat`` computed once."""

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._by_delay = None

    def calc_act(self, s_in) -> np.ndarray:
        if self._by_delay is None:  # after the first step's clipping and truncation
            self._by_delay = self.get_delay_wgts_mat(self.weights, self.delays,
                                                     self.a_buff.shape[-1] - 1)
        return np.reshape(self._by_delay.dot(s_in),
                          (self.a_buff.shape[-1], self.weights.shape[0])).T


MODEL_MAP = {DelaySparse: PyDelaySparseModelCached}
