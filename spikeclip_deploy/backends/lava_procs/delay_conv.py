r"""A convolution whose output arrives ``delay`` steps later than Lava's ``Conv``: the
path-aligning delay of a convolution synapse (``metadata["delay"]``).

:class:`DelayConv` is Lava's ``Conv`` process with a ``delay`` Var; its model holds each step's
input spikes ``delay`` steps in a ring buffer and convolves them with
:class:`~.conv.PyConvModelFast`, so the ``a_out`` sent at step :math:`t` is the convolution of the
input of step :math:`t - 1 - d`, as ``DelaySparse`` with every synapse delayed by :math:`d`.

Why this and not the alternatives:

* ``DelaySparse`` over the convolution's dense-equivalent matrix (the backend's former lowering)
  holds every synapse explicitly, as csr weights and delays, and splits them by delay again every
  step: 71 M synapses for one 3x3 384->384 convolution on 8x8 tokens, gigabytes per delayed copy,
  and a residual stream read by 9 LIFs has 8 such copies. The ring buffer holds :math:`d` input
  frames (kilobytes), and the convolution runs as fast as an undelayed one.
* A chain of relay LIF populations joined by identity ``Sparse`` synapses needs two Lava
  processes per step of delay; Lava runs every process as an operating-system process that
  exchanges messages every step, so the chains would multiply the per-step overhead. Here a
  delayed convolution is one process, as an undelayed one.
* Exactness: the buffer copies its input, and the convolution is the undelayed one's. The result
  is ``DelaySparse``'s wherever ``DelaySparse`` equals ``Conv``: even 8-bit weights, ``weight_exp``
  0 and sums within 24 bits, as exports have them (``DelaySparse`` truncates odd mixed-sign
  weights, applies ``weight_exp`` and never wraps; ``Conv`` does none of these).

The backend lists the model in the run config's ``exception_proc_model_map`` (:data:`MODEL_MAP`)
with :class:`~.conv.PyConvModelFast`.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from spikeclip_deploy import lava_compat
from spikeclip_deploy.backends.lava_procs.conv import PyConvModelFast

lava_compat.install()

from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402


class DelayConv(Conv):
    """Lava's ``Conv`` (same arguments) with its output held ``delay`` more steps."""

    def __init__(self, *, delay: int, **conv) -> None:
        super().__init__(**conv)
        self.delay = Var(shape=(1,), init=delay)


class PyDelayConvModelFast(PyConvModelFast):
    """:class:`~.conv.PyConvModelFast` on the input of ``delay`` steps ago (zeros before)."""

    # set here, not by ``@implements``, which refuses to re-declare a model of ``Conv``'s
    # subclass; Lava finds models by this attribute
    implements_process = DelayConv
    delay: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._held: deque[np.ndarray] | None = None

    def spikes(self) -> np.ndarray:
        s = super().spikes()
        if self._held is None:  # Vars are set after __init__
            self._held = deque(np.zeros_like(s) for _ in range(int(self.delay.item())))
        self._held.append(s)
        return self._held.popleft()


MODEL_MAP = {DelayConv: PyDelayConvModelFast}
