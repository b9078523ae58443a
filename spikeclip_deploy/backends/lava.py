r"""Lava backend: the fixed-point chip graph on Lava's bit-accurate Loihi 2 models
(``Loihi2SimCfg(select_tag="fixed_pt")``), or on Loihi 2 hardware (``Loihi2HwCfg``, where
lava-loihi and a board are there: :mod:`.lava_chip`).

Each NIR node becomes a Lava process through a handler map (LIF -> ``LIFReset``, Affine ->
``Dense`` or ``DelayDense``, Conv2d -> ``Conv`` or, delayed, ``DelayConv``, a graded stream
relay -> Lava's ``GradedVec`` with threshold 0, a host op between chip subgraphs ->
:class:`~.lava_procs.host_op.HostOp`, which runs its ONNX function inside the same
simulation, a spiking self-attention population -> ``ProdNeuron`` or ``GradedVec`` reached
through ``Sparse``/``DelaySparse`` synapses from its sources, :mod:`.lava_attention`, a
current max pool's level -> ``GradedReluVec`` reached through graded ``Sparse``/``DelaySparse``
synapses of weights +-1 from its relay or the level before, the pooled LIF reading the last
level through such synapses too, :mod:`.lava_pool`); several
synapses into one LIF (fan-in) sum at its input port. A relay reaches each
reader through an identity ``Sparse`` (``DelaySparse`` where its path needs aligning) that
reads graded spikes (``num_message_bits`` > 0): Lava's stock models throughout. Convolutions run
on this package's im2col models (``lava_procs.conv``, ``lava_procs.delay_conv``), bit-identical
to Lava's ``PyConvModelFixed`` and far faster, and ``DelaySparse`` on Lava's model with its
delay-split matrix built once (``lava_procs.delay_sparse``); ``_lava(reference=True)`` gives
Lava's stock models instead (scipy per channel pair; a delayed convolution, or one of 128 groups or more,
as ``DelaySparse``/``Sparse`` over its dense-equivalent matrix), the reference they are tested
and benchmarked against. A whole batch runs in one simulation (see :class:`_Network`): a
``RingBuffer`` source feeds each sample's quantized input current to the first LIF (direct
coding), ``LIFReset`` zeroes ``u`` and ``v`` at each layer's sample boundary (Lava never resets
state by itself), and spike recorders write every layer's spikes to memory-mapped files. Lava
delays every synapse layer's output by one step, so a LIF's spikes of a sample are read from its
window ``depth .. depth+T-1`` after the sample's first step; the samples follow each other
every ``T`` steps, each layer taking the next sample as soon as it is done with one.
"""
from __future__ import annotations

import gc
import logging
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import nir
import numpy as np
from scipy.sparse import SparseEfficiencyWarning, csr_matrix

from .. import lava_compat
from ..errors import BackendUnavailableError, ExportError, UnsupportedNodeError
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PoolNode
from ..exchange.nirgraph import (INPUT, ChipLayer, HostOpNode, conv_out_hw, depths, is_relay,
                                 pair, relay_delay, summed_synapses)
from ..fileutil import owned_tempdir
from . import lava_attention, lava_pool
from .base import Backend, ChipRun, input_mantissa
from .lava_chip import select_chip
from .lava_layout import from_lava_layout, synapse_bias_mant, to_lava_layout
from .lava_sparse import sparse_synapse

log = logging.getLogger(__name__)


def _lava(reference: bool = False, chip: str = "sim") -> dict[str, Any]:
    """Lava's classes, the process models to use instead of Lava's defaults (``models``), the
    lowering of a convolution (``conv``): this package's, or with ``reference`` Lava's stock
    ones, and the run configuration (``run_cfg()``): Lava's fixed-point simulation, or with
    ``chip`` ``hw`` Loihi 2 hardware, where Lava's stock processes run on neuro-cores and this
    package's (input source, recorders, host ops) on the host."""
    lava_compat.install()
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
        from lava.proc.conv.process import Conv
        from lava.proc.conv.utils import conv_to_sparse
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.graded.process import GradedReluVec, GradedVec
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIFReset
        from lava.proc.prodneuron.process import ProdNeuron
        from lava.proc.sparse.process import DelaySparse, Sparse

        from .lava_procs import conv as fast_conv
        from .lava_procs import delay_conv, delay_sparse, host_op
        from .lava_procs import recorder as lava_io
    except ImportError as exc:
        raise BackendUnavailableError(f"the loihi target needs lava-nc ({exc}); "
                                      f"run `make venv`") from None
    stock = reference or chip == "hw"
    models = {**lava_io.MODEL_MAP, **host_op.MODEL_MAP}
    if not stock:
        models.update({**fast_conv.MODEL_MAP, **delay_conv.MODEL_MAP,
                       **delay_sparse.MODEL_MAP})
    if chip == "hw":
        def run_cfg() -> Any:
            return Loihi2HwCfg(exception_proc_model_map=models)
    else:
        def run_cfg() -> Any:
            return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models)
    return dict(RunSteps=RunSteps, Loihi2SimCfg=Loihi2SimCfg, Conv=Conv, Dense=Dense,
                DelayDense=DelayDense, DelaySparse=DelaySparse, Sparse=Sparse,
                GradedVec=GradedVec, GradedReluVec=GradedReluVec, ProdNeuron=ProdNeuron,
                conv_to_sparse=conv_to_sparse, DelayConv=delay_conv.DelayConv,
                Source=Source, LIF=LIFReset, io=lava_io, HostOps=host_op.HOST_OPS,
                models=models, run_cfg=run_cfg,
                conv=_reference_conv if stock else _fast_conv)


def _lif(L: dict, node: nir.LIF, shape: tuple[int, ...], bias: np.ndarray, period: int,
         offset: int) -> Any:
    """``LIFReset``: u and v are zeroed when ``time_step % period == offset`` (sample start)."""
    q = node.metadata["loihi"]
    return L["LIF"](shape=shape, du=int(q["du"]), dv=int(q["dv"]), vth=int(q["vth"]),
                    bias_mant=bias, bias_exp=int(q["bias_exp"]), reset_interval=period,
                    reset_offset=offset)


def _dense(L: dict, node: nir.Affine, shape: tuple[int, ...]) -> Any:
    """``Dense``, or ``DelayDense`` holding the output ``delay`` more steps (path alignment)."""
    w = np.asarray(node.weight).astype(np.int32)
    exp = int(node.metadata["loihi"]["weight_exp"])
    delay = int(node.metadata.get("delay", 0))
    if delay:
        return L["DelayDense"](weights=w, delays=delay, weight_exp=exp, num_message_bits=0)
    return L["Dense"](weights=w, weight_exp=exp, num_message_bits=0)


def _lava_kernel(node: nir.Conv2d) -> np.ndarray:
    w = np.asarray(node.weight).astype(np.int32)  # [Cout, Cin, kH, kW] (correlation)
    return w.transpose(0, 3, 2, 1)[:, ::-1, ::-1].copy()  # Lava flips: true convolution


#: Lava 0.10's ``Conv`` holds ``groups`` in an int8 variable: 128 groups wrap to -128, and its
#: stock model's output is wrong (this package's model reads the groups from the kernel shape)
CONV_MAX_GROUPS = 127


def _conv_args(node: nir.Conv2d, shape: tuple[int, ...]) -> dict[str, Any]:
    """``Conv``'s arguments (Lava layout); refuses a ``weight_exp``, which Lava's ``Conv`` models
    ignore."""
    exp = int(node.metadata["loihi"]["weight_exp"])
    if exp:
        raise ExportError(f"a convolution has weight_exp {exp}; Lava's Conv ignores weight_exp, "
                          f"so it runs only with 0: re-export with a profile whose weight_exp "
                          f"is 0")
    return dict(weight=_lava_kernel(node), input_shape=shape, stride=pair(node.stride)[::-1],
                padding=pair(node.padding)[::-1], dilation=pair(node.dilation)[::-1],
                groups=int(np.asarray(node.groups)))


def _conv(L: dict, node: nir.Conv2d, shape: tuple[int, ...]) -> Any:
    """The convolution as the run config lowers it (``L["conv"]``)."""
    return L["conv"](L, node, shape, int(node.metadata.get("delay", 0)))


def _fast_conv(L: dict, node: nir.Conv2d, shape: tuple[int, ...], delay: int) -> Any:
    """``Conv``, or ``DelayConv`` (``Conv`` on the input of ``delay`` steps ago), on this
    package's im2col model."""
    if delay:
        return L["DelayConv"](delay=delay, **_conv_args(node, shape))
    return L["Conv"](**_conv_args(node, shape))


def _reference_conv(L: dict, node: nir.Conv2d, shape: tuple[int, ...], delay: int) -> Any:
    """Lava's stock lowering: ``Conv``; ``DelaySparse`` over the sparse matrix for a delayed one
    (``Conv`` has no delays), ``Sparse`` for one of more than :data:`CONV_MAX_GROUPS` groups."""
    if delay or int(np.asarray(node.groups)) > CONV_MAX_GROUPS:
        return conv_as_sparse(L, node, shape, delay)
    return L["Conv"](**_conv_args(node, shape))


def conv_as_sparse(L: dict, node: nir.Conv2d, shape: tuple[int, ...], delay: int) -> Any:
    """The convolution as a ``DelaySparse`` (``Sparse`` if ``delay`` is 0) on flattened
    (Lava-layout, C-order) neurons."""
    (sx, sy), (px, py), (dx, dy) = (pair(node.stride)[::-1], pair(node.padding)[::-1],
                                    pair(node.dilation)[::-1])
    kernel = _lava_kernel(node)  # [Cout, kX, kY, Cin/groups]
    h_out, w_out = conv_out_hw(node, (shape[1], shape[0]))
    out = (w_out, h_out, kernel.shape[0])
    dst, src, wgt = L["conv_to_sparse"](shape, out, kernel, (sx, sy), (px, py), (dx, dy),
                                        int(np.asarray(node.groups)))
    weights = csr_matrix((wgt, (dst, src)), shape=(int(np.prod(out)), int(np.prod(shape))))
    return sparse_synapse(L, weights, 0, delay, int(node.metadata["loihi"]["weight_exp"]))


def _relay(L: dict, node: nir.Scale, shape: tuple[int, ...], name: str) -> Any:
    """A graded stream relay ``name``: ``GradedVec`` (:math:`v = a_{in}`, :math:`s = v\,[|v| >
    0]`, memoryless) sending graded spikes."""
    if not is_relay(node):
        raise UnsupportedNodeError("loihi", name, "Scale that is no stream relay")
    return L["GradedVec"](shape=shape, vth=int(node.metadata["loihi"]["vth"]))


def identity_synapse(L: dict, n: int, bits: int, delay: int) -> Any:
    """Weight-1 ``Sparse`` between ``n`` neurons and their ``n`` readers, reading ``bits``-bit
    graded spikes; ``DelaySparse`` holding them ``delay`` steps more where that is nonzero."""
    eye = csr_matrix((np.ones(n, dtype=np.int32), (np.arange(n), np.arange(n))), shape=(n, n))
    return sparse_synapse(L, eye, bits, delay)


def _host_op(L: dict, node: HostOpNode, in_shapes: list[tuple[int, ...]], export_dir: str) -> Any:
    """The op's ONNX function as a Lava process (no delay: it answers within the step)."""
    if len(in_shapes) not in L["HostOps"]:
        raise UnsupportedNodeError("loihi", node.op, f"host op with {len(in_shapes)} inputs")
    return L["HostOps"][len(in_shapes)](
        in_shapes=in_shapes, out_shape=to_lava_layout(np.zeros(node.output_shape)).shape,
        export_dir=export_dir, metadata=dict(node.metadata))


@contextmanager
def no_inherited_garbage() -> Iterator[None]:
    """Lava forks an operating-system process per Lava process, and a child must never run the
    destructor of an object it inherited: an onnxruntime session left for the parent's cyclic
    garbage collector (an earlier backend's) waits forever, in the child, on a condition
    variable of its thread pool, whose threads exist only in the parent. So the parent collects
    its garbage first, and what is left is frozen out of the children's collector."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Network:
    r"""One encoder's chip graph as Lava processes, run once over a whole batch.

    The source drives the input LIFs with sample :math:`k`'s input mantissa at steps
    :math:`kT+1 .. kT+T` (``a_in << shift`` equals the bias ``mant << shift``), zeros after the
    last sample; a layer of depth :math:`d` (its chip-step offset,
    :func:`~spikeclip_deploy.exchange.nirgraph.depths`: each synapse delays by one step, plus its
    aligning delay) holds sample :math:`k` in its window, steps :math:`kT+1+d .. kT+d+T`, and a
    LIF is reset at the window's first step. Every path into a layer is aligned (``depths``
    refuses a graph where it is not) and every other process is memoryless or a fixed delay, so
    a window sees only its own sample: the samples are pipelined, one every :math:`T` steps,
    :math:`BT + D` steps for :math:`B` samples (:math:`D` the deepest layer's depth), where a
    period of :math:`T + D` per sample would take :math:`B(T + D)`. Several synapses into one
    LIF sum at its input port.
    :meth:`record` with ``state`` also reads every LIF's ``u`` and ``v`` after each step
    (``StateRecorder``) and cuts the same windows from them.
    """

    def __init__(self, L: dict, layers: list[ChipLayer], time_steps: int,
                 handlers: dict[type, Callable], shift: int, synapse_delay: int,
                 export_dir: str) -> None:
        self.L, self.layers, self.handlers, self.time_steps = L, layers, handlers, time_steps
        self.export_dir = export_dir
        self.shift = shift  # activation shift: inputs and biases enter the state << shift
        self.depth = depths(layers, synapse_delay)
        self.drain = max(self.depth.values())  # steps the last sample takes after its T

    def steps(self, samples: int) -> int:
        """The Lava steps a run of ``samples`` samples takes: :math:`BT + D`."""
        return samples * self.time_steps + self.drain  # a new sample every T steps

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Input mantissas ``[B, *in]`` (PyTorch layout) -> spikes ``[B, T, *shape]`` per LIF."""
        return list(self.record(inputs).spikes.values())

    def record(self, inputs: np.ndarray, state: bool = False) -> ChipRun:
        """Input mantissas ``[B, *in]`` (PyTorch layout) -> every LIF's spikes and, with
        ``state`` (about twice the run time), its ``u`` and ``v`` after every step of its windows
        and every relay's payloads."""
        b, p = len(inputs), self.time_steps  # a sample's period: T steps
        steps = self.steps(b)
        data = np.stack([to_lava_layout(x) for x in inputs], -1).astype(np.int32)
        data = np.repeat(data, p, axis=-1)  # each sample's input for its T steps, then zeros
        data = np.concatenate([data, np.zeros((*data.shape[:-1], self.drain), np.int32)], -1)
        source = self.L["Source"](data=data)
        by_name = {la.name: la for la in self.layers}
        summed = summed_synapses(self.layers)
        with owned_tempdir(None, "spikeclip-lava-") as tmp:
            procs: dict[str, Any] = {}
            recorded: list[tuple[str, str]] = []
            relays: list[tuple[str, str]] = []

            def connect_inputs(la: ChipLayer, proc: Any) -> None:
                """Sum ``la``'s inputs at ``proc``'s input port (a relay's through an identity
                synapse of its own)."""
                for i in la.inputs:
                    if i == INPUT:
                        port = source.s_out
                    elif isinstance(by_name[i].node, AttentionNode):  # a y population
                        syn = lava_attention.output_synapse(self.L, by_name[i].node)
                        procs[i].s_out.connect(syn.s_in)
                        port = syn.a_out
                    elif isinstance(by_name[i].node, PoolNode):  # a pool's last level
                        syn = lava_pool.readout_synapse(self.L, by_name[i].node)
                        procs[i].s_out.connect(syn.s_in)
                        port = syn.a_out
                    elif isinstance(by_name[i].node, nir.Scale):
                        relay = procs[i]
                        syn = identity_synapse(self.L, int(np.prod(relay.s_out.shape)),
                                               int(by_name[i].node.metadata["loihi"]
                                                   ["num_message_bits"]),
                                               relay_delay(by_name[i].node, la.name))
                        relay.s_out.flatten().connect(syn.s_in)
                        port = syn.a_out
                    else:
                        port = procs[i].a_out
                    if port.shape != proc.a_in.shape:  # a sparse synapse's flat output
                        port = port.reshape(proc.a_in.shape)
                    port.connect(proc.a_in)

            def record_payloads(name: str, proc: Any) -> None:
                """Record the graded payloads ``proc`` (layer ``name``) sends."""
                path = f"{tmp}/{name}.payload.npy"
                self.L["io"].new_recording(path, steps, proc.s_out.shape, np.int32)
                proc.s_out.connect(self.L["io"].SpikeRecorder(shape=proc.s_out.shape,
                                                              path=path).a_in)
                relays.append((name, path))
            for la in self.layers:
                if isinstance(la.node, nir.Scale):
                    shape = to_lava_layout(np.zeros(np.asarray(la.node.scale).shape)).shape
                    proc = self.handlers[nir.Scale](self.L, la.node, shape, la.name)
                    connect_inputs(la, proc)
                    if state:
                        record_payloads(la.name, proc)
                elif isinstance(la.node, nir.LIF):
                    shape = to_lava_layout(np.zeros(np.asarray(la.node.tau).shape)).shape
                    bias = sum((synapse_bias_mant(by_name[i].node, la.node, self.shift)
                                for i in summed[la.name]), np.zeros(shape, dtype=np.int32))
                    proc = self.handlers[nir.LIF](self.L, la.node, shape, bias, p,
                                                  (1 + self.depth[la.name]) % p)
                    connect_inputs(la, proc)
                    path = f"{tmp}/{la.name}.npy"
                    self.L["io"].new_recording(path, steps, shape)
                    recorder = self.L["io"].SpikeRecorder(shape=shape, path=path)
                    proc.s_out.connect(recorder.a_in)
                    recorded.append((la.name, path))
                    if state:
                        self.L["io"].new_recording(f"{path}.uv", steps, (2, *shape), np.int32)
                        self.L["io"].StateRecorder(shape=shape, path=f"{path}.uv").watch(proc)
                elif isinstance(la.node, AttentionNode):
                    proc = self.handlers[AttentionNode](self.L, la.node)
                    for k, (i, port) in enumerate(zip(la.inputs, lava_attention.in_ports(proc))):
                        syn = lava_attention.port_synapse(self.L, la.node, k)
                        src = procs[i].s_out
                        (src.flatten() if len(src.shape) > 1 else src).connect(syn.s_in)
                        syn.a_out.connect(port)
                    if state:
                        record_payloads(la.name, proc)
                elif isinstance(la.node, PoolNode):
                    proc = self.handlers[PoolNode](self.L, la.node)
                    syn = lava_pool.level_synapse(self.L, la.node)
                    src = procs[la.inputs[0]].s_out
                    (src.flatten() if len(src.shape) > 1 else src).connect(syn.s_in)
                    syn.a_out.connect(proc.a_in)
                    if state:
                        record_payloads(la.name, proc)
                elif isinstance(la.node, HostOpNode):
                    proc = self.handlers[HostOpNode](self.L, la.node,
                                                     [procs[i].s_out.shape for i in la.inputs],
                                                     self.export_dir)
                    for k, i in enumerate(la.inputs):
                        procs[i].s_out.connect(getattr(proc, f"in{k}"))
                else:
                    (src,) = la.inputs
                    proc = self.handlers[type(la.node)](self.L, la.node, procs[src].s_out.shape)
                    port = procs[src].s_out
                    if port.shape != proc.s_in.shape:  # only a sparse synapse reads flat input
                        if not isinstance(proc, self.L["Sparse"]):
                            raise ExportError(f"layer '{la.name}' reads {port.shape} spikes but "
                                              f"takes {proc.s_in.shape}")
                        port = port.flatten()
                    port.connect(proc.s_in)
                procs[la.name] = proc
            with warnings.catch_warnings(), no_inherited_garbage():
                # DelaySparse's model edits its csr matrices
                warnings.simplefilter("ignore", SparseEfficiencyWarning)
                source.run(condition=self.L["RunSteps"](num_steps=steps),
                           run_cfg=self.L["run_cfg"]())
            source.stop()  # only after a run that succeeded: Lava 0.10's stop() after an error
            # inside a process waits forever, so the error would hang instead of being raised
            out = ChipRun()
            for name, path in recorded:
                out.spikes[name] = self._windows(np.load(path), name, b)
                if state:
                    uv = np.load(f"{path}.uv").astype(np.int64)  # [steps, 2, *lava_shape]
                    out.u[name], out.v[name] = (self._windows(uv[:, i], name, b) for i in (0, 1))
            for name, path in relays:
                payloads = self._windows(np.load(path).astype(np.int64), name, b)
                if isinstance(by_name[name].node, (AttentionNode, PoolNode)):  # flat -> its shape
                    payloads = payloads.reshape(b, self.time_steps,
                                                *by_name[name].node.population.shape)
                out.payloads[name] = payloads
            return out

    def _windows(self, rec: np.ndarray, name: str, b: int) -> np.ndarray:
        """A LIF's recording ``[steps, *lava_shape]`` -> its ``b`` windows ``[B, T, *shape]``
        (PyTorch layout)."""
        rows = (np.arange(b)[:, None] * self.time_steps + self.depth[name]
                + np.arange(self.time_steps)[None, :])
        windows = rec[rows.reshape(-1)]  # [B*T, *lava_shape]
        return np.stack([from_lava_layout(np.moveaxis(w, 0, -1))
                         for w in windows.reshape(b, self.time_steps, *rec.shape[1:])])


class LavaBackend(Backend):
    """Exports made with ``--target loihi`` on Lava: simulated bit-accurately, or on Loihi 2
    hardware (``chip``: ``sim``, ``hw`` or ``auto``, :func:`~.lava_chip.select_chip`)."""

    name = "loihi"
    handlers: dict[type, Callable] = {nir.LIF: _lif, nir.Affine: _dense, nir.Conv2d: _conv,
                                      nir.Scale: _relay, HostOpNode: _host_op,
                                      AttentionNode: lava_attention.population,
                                      PoolNode: lava_pool.level}
    runs = {"loihi": "Lava fixed_pt models: bit-accurate Loihi 2 arithmetic"}
    chip_choice = True
    forks = True

    def __init__(self, export_dir, chip: str = "auto") -> None:
        super().__init__(export_dir)
        #: where the graphs run: ``hw`` (Loihi 2 hardware) or ``sim``
        self.chip = select_chip(chip)
        if self.chip == "hw":
            self.description = (f"{self.name} backend on a --target loihi export: Loihi 2 "
                                f"hardware through lava-loihi (Loihi2HwCfg)")
        self._L = _lava(chip=self.chip)

    def run_chip(self, side: str, current: np.ndarray) -> list[np.ndarray]:
        q = self.graphs[side].metadata["input_quantization"]
        mant = input_mantissa(current, self.graphs[side], side)
        net = _Network(self._L, self.layers[side], self.time_steps, self.handlers,
                       q["activation_shift"], self.graphs[side].metadata["synapse_delay_steps"],
                       str(self.export_dir))
        return net.run(mant)
