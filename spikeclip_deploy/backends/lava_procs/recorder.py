"""Lava processes that move data in and out of a simulation in bulk.

Lava 0.10's ``Var.get``/``Var.set`` send arrays one element per message through the runtime
service (``model.py``: "FIXME: send a whole vector"), which makes per-sample state resets and
spike read-outs of 32 k-neuron layers take minutes. Instead, input comes from a ``RingBuffer``
source built with all samples' data, state is reset by ``LIFReset`` on the sample period, and
:class:`SpikeRecorder` writes every step's spikes straight into a memory-mapped ``.npy`` file
that the host reads after the run; :class:`StateRecorder` does the same for a LIF's ``u`` and
``v`` (tests compare them; a production run records spikes only).
"""
from __future__ import annotations

import numpy as np

from spikeclip_deploy import lava_compat

lava_compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyRefPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, RefPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class SpikeRecorder(AbstractProcess):
    """Records its input at every time step into ``path`` (a ``.npy`` of ``[steps, *shape]``)."""

    def __init__(self, *, shape: tuple[int, ...], path: str) -> None:
        super().__init__(shape=shape, path=path)
        self.a_in = InPort(shape=shape)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._out = np.load(proc_params["path"], mmap_mode="r+")

    def run_spk(self) -> None:
        self._out[self.time_step - 1] = self.a_in.recv()


class StateRecorder(AbstractProcess):
    """Records a LIF's ``u`` and ``v`` after every time step into ``path`` (a ``.npy`` of
    ``[steps, 2, *shape]``): :meth:`watch` connects its reference ports to the LIF's Vars, read
    in the post-management phase, after every process's spiking phase of the step (as Lava's
    ``Monitor`` reads a probed Var, lava/proc/monitor/models.py:31-47)."""

    def __init__(self, *, shape: tuple[int, ...], path: str) -> None:
        super().__init__(shape=shape, path=path)
        self.u = RefPort(shape=shape)
        self.v = RefPort(shape=shape)

    def watch(self, lif: AbstractProcess) -> None:
        self.u.connect_var(lif.u)
        self.v.connect_var(lif.v)


@implements(proc=StateRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStateRecorderModel(PyLoihiProcessModel):
    u: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32)
    v: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._out = np.load(proc_params["path"], mmap_mode="r+")

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        self._out[self.time_step - 1] = (self.u.read(), self.v.read())


def new_recording(path: str, steps: int, shape: tuple[int, ...], dtype: type = np.uint8) -> None:
    """Create the zero-filled ``.npy`` file a recorder writes into."""
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(steps, *shape)).flush()


MODEL_MAP = {SpikeRecorder: PySpikeRecorderModel, StateRecorder: PyStateRecorderModel}
