"""A host op between chip subgraphs as a Lava process, so one Lava run covers a whole encoder.

A host op process (:data:`HOST_OPS`, by number of inputs) receives the spikes of the LIF layers
it reads in the step they are sent, runs the op's ONNX function
(onnxruntime, one thread, session opened inside the process), puts the current on the chip's
input grid and sends it, in the same step, to the input port of the LIFs that read it, as
synapses deliver theirs (those shift it by the activation shift). A host op therefore adds no
delay: its output belongs to the step its inputs left the chip.
"""
from __future__ import annotations

import numpy as np

from spikeclip_deploy import lava_compat

lava_compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from spikeclip_deploy.backends.host_runtime import HostOpRunner  # noqa: E402


MAX_INPUTS = 4  # Lava 0.10 cannot compile a ConcatPort: one process class per arity


class HostOpBase(AbstractProcess):
    """``in0 .. in{k-1}``: the spikes of its inputs (Lava layouts ``in_shapes``); ``a_out``:
    the op's integer current (Lava layout ``out_shape``)."""

    arity = 0

    def __init__(self, *, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...],
                 export_dir: str, metadata: dict) -> None:
        super().__init__(in_shapes=in_shapes, out_shape=out_shape, export_dir=export_dir,
                         metadata=metadata)
        for k, shape in enumerate(in_shapes):
            setattr(self, f"in{k}", InPort(shape=tuple(shape)))
        self.a_out = OutPort(shape=out_shape)


def _to_torch(a: np.ndarray) -> np.ndarray:
    """Lava ``(X, Y, C)`` -> PyTorch ``[C, H, W]``; 1-D unchanged."""
    return a.transpose(2, 1, 0) if a.ndim == 3 else a


class PyHostOpModelBase(PyLoihiProcessModel):
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    arity = 0

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._params = proc_params
        self._run: HostOpRunner | None = None

    def run_spk(self) -> None:
        if self._run is None:  # opened here, in the process that runs it
            self._run = HostOpRunner(self._params["export_dir"], self._params["metadata"],
                                     threads=1)
        args = [_to_torch(getattr(self, f"in{k}").recv())[None] for k in range(self.arity)]
        y = self._run(*args)[0]
        self.a_out.send((y.transpose(2, 1, 0) if y.ndim == 3 else y).astype(np.int32))


def _arity(k: int) -> tuple[type, type]:
    proc = type(f"HostOp{k}", (HostOpBase,), {"arity": k, "__module__": __name__})
    ports = {f"in{j}": LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24) for j in range(k)}
    model = type(f"PyHostOp{k}Model", (PyHostOpModelBase,),
                 {"arity": k, **ports, "__annotations__": {n: PyInPort for n in ports},
                  "__module__": __name__})
    model = implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag("fixed_pt")(model)))
    return proc, model


_CLASSES = [_arity(k) for k in range(1, MAX_INPUTS + 1)]
# module attributes too: Lava's compiler finds process models among a module's members
globals().update({cls.__name__: cls for pair in _CLASSES for cls in pair})
#: arity -> process class
HOST_OPS = {k: proc for k, (proc, _) in enumerate(_CLASSES, start=1)}
MODEL_MAP = dict(_CLASSES)
