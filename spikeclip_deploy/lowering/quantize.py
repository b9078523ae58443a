r"""Quantize float NIR layers to Loihi fixed point, as Lava's bit-accurate models compute it
(:math:`a` is the profile's activation shift, 6 on Loihi 2).

Float neuron (tau in chip steps): :math:`v \leftarrow v + (I - v)/\tau`, :math:`I = W s + b`.
Loihi (``PyLifModelBitAcc``, ``du = 4095`` so :math:`u_t` = this step's input):

.. math::

    v \leftarrow \mathrm{trunc}\!\left(v\,\frac{4096 - d_v}{4096}\right)
        + 2^a \textstyle\sum w s + b_m 2^{b_e}, \qquad s = [v > 2^a v_{th}]

With an integer scale :math:`S` per LIF, shared by all the synapses that feed it (integer volts
per float volt / :math:`2^a`): :math:`w = S W/\tau` rounded to an even 8-bit mantissa,
:math:`v_{th} = S\,V_{th}`, :math:`b_m 2^{b_e} = 2^a S b/\tau` (:math:`b` the sum of their
biases), :math:`d_v = 4096/\tau`. :math:`S` is chosen so the largest of those weights fills the
8-bit range. LIFs that read one synapse (copies of a residual stream's term), transitively,
share one :math:`S`, the smallest of theirs, so that the synapse has one set of integers. The
LIF that reads the host's input current :math:`x` takes it as a per-neuron bias:
:math:`b_m = \mathrm{round}(x \cdot 2^a S_0 / \tau / 2^{b_e})`. A LIF that reads a host op's current
:math:`y` (between chip subgraphs) takes it at its input port, as synapses deliver theirs:
:math:`a = \mathrm{clip}(\mathrm{round}(y S/\tau), \pm(2^{15}-1))`, with :math:`S` the largest
power of two that keeps the op's bound within the port (exact when the op's outputs lie on a
grid :math:`g` with :math:`g S/\tau` an integer, as spiking attention's do). Spiking attention
on chip takes the same :math:`S`: its heads' ``y`` populations send integer counts :math:`Y`
through synapses of weight :math:`w = S c/\tau` (an integer, else the export is refused), so
the scale :math:`c` is folded into the LIF, whose threshold is :math:`S V_{th}`. A max pool of a
current on chip (a relay, then levels of graded ReLU neurons) passes its relay's terms on: the
pooled LIF sums them (their scale, their bias), and the levels send payloads in the LIF's units,
at most twice the relay's bound, refused beyond the graded spike.

The quantized layers are written as NIR with integer-valued parameters whose float semantics
are the chip's up to the truncating decay: synapse weights :math:`w`, biases
:math:`b_m 2^{b_e}/2^a`, LIF :math:`r = 2^a\tau`, :math:`V_{th} = 2^a v_{th}`. Register values
go in ``metadata['loihi']``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from typing import Any, Hashable, Iterable, Mapping, TypeVar

import nir
import numpy as np

from ..errors import LoweringError
from ..exchange.fixed_point import bias_mantissa, bias_value, mantissa_unit
from ..exchange.chip import FixedPoint
from ..hardware import ChipProfile
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PAYLOAD_FACTOR, PoolNode
from ..exchange.nirgraph import HostOpNode, is_relay

log = logging.getLogger(__name__)
SYNAPSES = (nir.Conv2d, nir.Affine)


def round_even(x: np.ndarray) -> np.ndarray:
    """Nearest even integer (8-bit mixed-sign weights lose their lowest bit in Lava)."""
    return 2.0 * np.round(x / 2.0)


def split_bias(bias_raw: np.ndarray, fp: FixedPoint) -> tuple[np.ndarray, int]:
    """Integer bias -> (mantissa, shared exponent): smallest exponent whose mantissa fits."""
    lo, hi = fp.bias_mant_range
    e_lo, e_hi = fp.bias_exp_range
    peak = float(np.max(np.abs(bias_raw))) if bias_raw.size else 0.0
    for exp in range(e_lo, e_hi + 1):
        if peak / mantissa_unit(exp, 0) <= hi:
            break
    mant = np.clip(bias_mantissa(bias_raw, exp, 0), lo, hi)
    return mant, exp


def layer_threshold(weight_absmax: float, tau: float, v_threshold: float, fp: FixedPoint) -> int:
    r"""Integer threshold :math:`v_{th} = \lfloor w_{max} \tau V_{th} / |W|_{max} \rfloor`: the
    largest whose scale :math:`S = v_{th}/V_{th}` keeps every weight in the mantissa range.

    The relative guard of 1e-6 makes quantization idempotent: weights already on the grid
    of :math:`S` (quantization-aware training) give back the same :math:`S` despite float32
    round-off."""
    peak = weight_absmax / tau
    w_hi = fp.weight_mant_range[1]
    raw = w_hi / peak * v_threshold * (1 + 1e-6) if peak > 0 else fp.vth_range[1]
    return int(np.clip(np.floor(raw), *fp.vth_range))


def quantize_weight(w: np.ndarray, scale: float, tau: float, fp: FixedPoint) -> np.ndarray:
    r"""Float weights -> integer mantissas :math:`\mathrm{round\_even}(S W/\tau)`, clipped."""
    return np.clip(round_even(w * scale / tau), *fp.weight_mant_range)


def bias_state(b: np.ndarray, scale: float, tau: float, fp: FixedPoint) -> np.ndarray:
    r"""Float bias -> chip state units, :math:`2^a S b/\tau` (not rounded)."""
    return 2 ** fp.activation_shift * scale * b / tau


def quantize_bias(b: np.ndarray, scale: float, tau: float, fp: FixedPoint) -> tuple[np.ndarray, int]:
    r"""Float bias -> (mantissa, exponent) of :math:`2^a S b/\tau`."""
    return split_bias(np.round(bias_state(b, scale, tau, fp)), fp)


def input_quantization(tau: float, v_threshold: float, fp: FixedPoint) -> dict[str, Any]:
    r"""How the host's input current :math:`x` drives the first LIF as a bias:
    :math:`b_m = \mathrm{clip}(\mathrm{round}(x \cdot \mathrm{input\_scale}))` with
    :math:`\mathrm{input\_scale} = 2^a S_0/\tau/2^{b_e}`, :math:`S_0 = v_{th,0}/V_{th}`."""
    vth0, exp = int(fp.input_vth), int(fp.input_bias_exp)
    scale = vth0 / v_threshold / tau / mantissa_unit(exp, fp.activation_shift)
    return {"input_scale": scale, "bias_exp": exp, "bias_mant_range": list(fp.bias_mant_range),
            "activation_shift": fp.activation_shift}


def host_input_quantization(op: HostOpNode, tau: float, v_threshold: float, fp: FixedPoint
                            ) -> tuple[int, dict[str, Any]]:
    r"""(integer threshold, output quantization) of a LIF fed by host op ``op``
    (:func:`port_quantization` of its bound and grid)."""
    return port_quantization(float(op.metadata["bound"]), op.metadata.get("grid"), tau,
                             v_threshold, fp)


def port_quantization(bound: float, grid: float | None, tau: float, v_threshold: float,
                      fp: FixedPoint) -> tuple[int, dict[str, Any]]:
    r"""(integer threshold, input quantization) of a LIF fed at its input port a current of
    largest magnitude ``bound`` whose values are multiples of ``grid`` (a host op's, or
    spiking attention's :math:`c\,Y` on chip): the largest power-of-two scale :math:`S` with
    :math:`\mathrm{bound}\,S/\tau` within the input port and :math:`S V_{th}` within the
    threshold range; ``scale`` :math:`S/\tau` (what the current is multiplied by),
    ``exact`` where :math:`g S/\tau` and :math:`S V_{th}` are integers."""
    limit = 2 ** (fp.input_port_bits - 1) - 1
    cap = min(limit * tau / bound if bound > 0 else np.inf, fp.vth_range[1] / v_threshold)
    if cap < 1:
        raise LoweringError(f"an input current bound of {bound:g} does not fit the "
                            f"{fp.input_port_bits}-bit input port even at scale 1")
    scale = 2.0 ** np.floor(np.log2(cap))
    vth = int(np.clip(round(scale * v_threshold), *fp.vth_range))
    step = grid * scale / tau if grid else None
    q = {"scale": scale / tau, "limit": limit,
         "exact": bool(step is not None and abs(step - round(step)) < 1e-9
                       and abs(vth - scale * v_threshold) < 1e-9)}
    return vth, q


def activation_worst_case(w_int: np.ndarray) -> int:
    """Largest |sum of weights| one output neuron can receive in a step (all inputs spiking
    with the same sign of weight)."""
    w = w_int.reshape(w_int.shape[0], -1)
    return int(max(np.clip(w, 0, None).sum(1).max(), -np.clip(w, None, 0).sum(1).min()))


def _decay(tau: float, fp: FixedPoint) -> int:
    dv = 2 ** fp.decay_bits / tau
    if abs(dv - round(dv)) > 1e-9:
        raise LoweringError(f"tau={tau} needs dv={dv}, not a {fp.decay_bits}-bit integer")
    return int(round(dv))


def exact_decay_exp(tau: float, time_steps: int, fp: FixedPoint) -> int:
    r"""Smallest :math:`e` such that a membrane made of multiples of :math:`2^e` decays
    exactly (no truncation) through the ``time_steps - 1`` decays of a sample:
    :math:`(T-1)\log_2 d`, :math:`d` the denominator of :math:`(4096 - d_v)/4096` in lowest
    terms (:math:`e = T - 1` for :math:`\tau = 2`)."""
    unity = 2**fp.decay_bits
    d = unity // math.gcd(unity - _decay(tau, fp), unity)
    return (time_steps - 1) * (d.bit_length() - 1)


def _lif_tau(node: nir.LIF) -> float:
    taus = np.unique(np.asarray(node.tau))
    if taus.size != 1 or np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.r) != 1):
        raise LoweringError("only uniform-tau LIF layers with r=1 and v_leak=0 are quantized")
    return float(taus[0])


def _int_lif(node: nir.LIF, tau: float, vth: int, bias_exp: int, fp: FixedPoint, extra: dict) -> nir.LIF:
    shape = np.asarray(node.tau).shape
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    act = 2 ** fp.activation_shift
    meta = {"loihi": {"du": fp.du_instant_current, "dv": _decay(tau, fp), "vth": vth, "bias_exp": bias_exp},
            "scale": vth / float(np.unique(node.v_threshold)[0]), **extra}
    return nir.LIF(tau=full(tau), r=full(act * tau), v_leak=full(0.0),
                   v_threshold=full(vth * 2 ** fp.threshold_shift), v_reset=full(0.0),
                   metadata=meta)


def _int_synapse(syn: nir.NIRNode, w_int: np.ndarray, bias_q: np.ndarray, meta: dict) -> nir.NIRNode:
    meta = {**meta, **{k: syn.metadata[k] for k in ("delay", "copy_of", "part_of", "columns")
                       if k in syn.metadata}}
    if isinstance(syn, nir.Conv2d):
        return nir.Conv2d(input_shape=syn.input_shape, weight=w_int.astype(np.float32),
                          stride=syn.stride, padding=syn.padding, dilation=syn.dilation,
                          groups=syn.groups, bias=bias_q.astype(np.float32), metadata=meta)
    return nir.Affine(weight=w_int.astype(np.float32), bias=bias_q.astype(np.float32), metadata=meta)


K = TypeVar("K", bound=Hashable)


def shared_groups(reads: Mapping[K, Iterable[Hashable]]) -> dict[K, K]:
    """Readers grouped by the sources they read, transitively (two readers of one source are in
    one group, and so are readers linked through a chain of such shared sources): reader -> its
    group's first reader in ``reads``' order."""
    root: dict[K, K] = {}
    order = {r: k for k, r in enumerate(reads)}

    def find(r: K) -> K:
        while root[r] != r:
            r = root[r]
        return r
    owner: dict[Hashable, K] = {}
    for reader, sources in reads.items():
        root[reader] = reader
        for src in sources:
            a, b = find(owner.setdefault(src, reader)), find(reader)
            root[max(a, b, key=order.get)] = min(a, b, key=order.get)
    return {r: find(r) for r in reads}


def _stream_biases(fed: Mapping[str, tuple], members: Iterable[str],
                   nodes: Mapping[str, nir.NIRNode], vth: int, fp: FixedPoint
                   ) -> tuple[dict[str, np.ndarray], int]:
    r"""One scale group whose LIFs read a graded stream: its synapses are shared by readers
    (through relays), so each holds its own bias, :math:`m_t = \mathrm{round}(2^a S b_t/\tau
    / 2^{e})` at one exponent :math:`e` for the group, the smallest at which every reader's
    sum :math:`\sum_t m_t` fits the mantissa range. -> (synapse -> mantissas, e)."""
    members = list(members)
    lo, hi = fp.bias_mant_range
    state = {}
    for name in members:
        syns, tau, v_th, _ = fed[name]
        for t in syns:
            state[t] = bias_state(np.asarray(nodes[t].bias, np.float64), vth / v_th, tau, fp)
    exp = max(split_bias(np.round(sum(state[t] for t in fed[n][0])), fp)[1] for n in members)
    for exp in range(exp, fp.bias_exp_range[1] + 1):
        mant = {t: np.round(v / mantissa_unit(exp, 0)) for t, v in state.items()}
        if all(lo <= sum(mant[t] for t in fed[n][0]).min(initial=0)
               and sum(mant[t] for t in fed[n][0]).max(initial=0) <= hi for n in members):
            return mant, exp
    raise LoweringError(f"the summed biases of LIFs {members} do not fit the bias mantissa "
                        f"range {fp.bias_mant_range} at any exponent")


def payload_bound(terms: Iterable[nir.NIRNode]) -> int:
    r"""Largest |payload| a relay summing ``terms`` (integer synapses reading spikes) can send:
    the sum of their worst cases (:func:`activation_worst_case`), each shifted by its weight
    exponent as the chip delivers it, :math:`\sum_t W_t\, 2^{e_{w,t}}`."""
    return sum(activation_worst_case(np.asarray(t.weight))
               << int(t.metadata["loihi"]["weight_exp"]) for t in terms)


def _check_port(name: str, what: str, worst: int, fp: FixedPoint) -> None:
    """A warning where ``worst`` (the largest |input| layer ``name`` delivers to its readers'
    LIF input port in a step) exceeds that port's ``input_port_bits``."""
    limit = 2 ** (fp.input_port_bits - 1) - 1
    if worst > limit:
        log.warning("%s: worst-case %s %d exceeds the %d-bit input port (%d); Lava's simulation "
                    "does not clip it, hardware may", name, what, worst, fp.input_port_bits,
                    limit)


def _relay(node: nir.Scale, name: str, terms: list[nir.NIRNode], scale: float,
           fp: FixedPoint) -> nir.Scale:
    """A relay with its registers (``GradedVec``: threshold 0, so every nonzero sum is sent) and
    its payload's scale and bound; a bound beyond the graded payload is refused: Lava's
    simulation would pass it on unchecked, hardware would wrap it. Its identity synapse delivers
    the payload whole into each reader's input port: a bound beyond that port is warned of, as
    a synapse's worst case is."""
    bound, top = payload_bound(terms), 2 ** (fp.graded_payload_bits - 1) - 1
    if bound > top:
        raise LoweringError(f"stream relay '{name}' can reach a payload of {bound:,}, beyond the "
                            f"{fp.graded_payload_bits}-bit graded spike ({top:,}); lower the "
                            f"stream's weights or export with --residual copies")
    _check_port(name, "graded payload", bound, fp)
    meta = {**node.metadata, "loihi": {"vth": 0, "num_message_bits": fp.graded_payload_bits},
            "scale": scale, "payload_bound": bound}
    return dataclasses.replace(node, metadata=meta)


def _pool_level(node: PoolNode, name: str, terms: list[nir.NIRNode], scale: float,
                fp: FixedPoint) -> PoolNode:
    """A max pool's level with its registers (``GradedReluVec``: threshold 0, every positive
    payload sent whole), its scale and payload bound (``PAYLOAD_FACTOR`` times its relay's),
    refused beyond the graded spike: Lava's simulation would pass it on unchecked, hardware
    would wrap it."""
    relay_bound = payload_bound(terms)
    bound, top = PAYLOAD_FACTOR * relay_bound, 2 ** (fp.graded_payload_bits - 1) - 1
    if bound > top:
        raise LoweringError(f"max pool level '{name}' can reach a payload of {bound:,} (twice "
                            f"its relay's {relay_bound:,}), beyond the {fp.graded_payload_bits}-"
                            f"bit graded spike ({top:,}); export with --current-pool host")
    meta = {**node.metadata, "loihi": {"vth": 0, "num_message_bits": fp.graded_payload_bits},
            "scale": scale, "payload_bound": bound}
    return dataclasses.replace(node, metadata=meta)


def _population(name: str, node: AttentionNode, fp: FixedPoint) -> AttentionNode:
    """An attention population with its registers (``ProdNeuron`` with ``vth`` 0 and ``exp``
    0, ``GradedVec`` with ``vth`` 0: every nonzero payload is sent whole) and its payload
    bound, refused beyond the graded spike."""
    pop, top = node.population, 2 ** (fp.graded_payload_bits - 1) - 1
    if pop.bound > top:
        raise LoweringError(f"attention population '{name}' can reach a payload of "
                            f"{pop.bound:,}, beyond the {fp.graded_payload_bits}-bit graded spike "
                            f"({top:,}); export with --attention host")
    regs = {"vth": 0, "num_message_bits": fp.graded_payload_bits,
            **({"exp": 0} if pop.kind == "product" else {})}
    return dataclasses.replace(node, metadata={**node.metadata, "loihi": regs,
                                               "payload_bound": pop.bound})


def _attention_input(name: str, ys: list[nir.NIRNode], tau: float, v_th: float,
                     fp: FixedPoint) -> tuple[int, int]:
    r"""(integer threshold :math:`S V_{th}`, weight :math:`w = S c/\tau` of the ``y``
    populations' synapses into LIF ``name``), by :func:`port_quantization` of the current
    :math:`c\,Y` (bound :math:`c` times the largest count, grid :math:`c`); refused where
    :math:`w` or the threshold would not be integers (the chip would then not compute the
    float model's attention exactly)."""
    if not all(isinstance(y, AttentionNode) and y.spec.stage == "y" for y in ys):
        raise LoweringError(f"LIF '{name}' reads attention populations and other layers: the "
                            f"attention LIF reads its heads' y populations alone")
    (c,) = {y.weight for y in ys}
    vth, q = port_quantization(c * max(y.population.bound for y in ys), c, tau, v_th, fp)
    if not q["exact"]:
        raise LoweringError(f"attention LIF '{name}': its scale {q['scale'] * tau:g} makes the "
                            f"weight {c * q['scale']:g} or the threshold non-integer, so the chip "
                            f"would not reproduce the attention exactly; export with "
                            f"--attention host")
    return vth, int(round(c * q["scale"]))


def quantize_layers(layers: list[tuple[str, nir.NIRNode, tuple[str, ...]]], profile: ChipProfile
                    ) -> tuple[list[tuple[str, nir.NIRNode]], dict[str, Any]]:
    """Layers ``(name, node, inputs)`` in topological order (``"input"``: the host current) ->
    (integer layers, input quantization ``{input_scale, bias_exp, bias_mant_range, ...}``).

    A LIF fed by several synapses (fan-in) takes one scale for all of them and one bias, the
    sum of theirs, held by the first. LIFs that read copies of one synapse (``copy_of``, a
    residual stream's term read by several LIFs), transitively, form a group
    (``metadata['scale_group']``: its first LIF) with one scale, the smallest of its members'
    own (each member's threshold fits the largest weight among its synapses), so every copy of a
    synapse has the same integer weights. A LIF reading a graded stream relay sums the relay's
    terms: it joins their group, the payload is in the group's units (the stream's scale), and
    where a term is summed by several LIFs each term holds its own bias
    (:func:`_stream_biases`); a LIF alone in summing its terms (the parts of a split fan-in)
    holds their bias as one layer's."""
    fp = profile.fixed_point
    nodes = {name: node for name, node, _ in layers}
    out: dict[str, nir.NIRNode] = {}
    input_q = None
    fed: dict[str, tuple[tuple[str, ...], float, float, int]] = {}  # -> (synapses, tau, V_th, vth)
    terms: dict[str, tuple[str, ...]] = {}  # relay -> the synapses it sums
    for name, node, inputs in layers:
        if is_relay(node) or isinstance(node, PoolNode):
            terms[name] = tuple(dict.fromkeys(t for i in inputs for t in terms.get(i, (i,))))
            continue
        if isinstance(node, AttentionNode):
            out[name] = _population(name, node, fp)
            continue
        if not isinstance(node, nir.LIF):
            if not isinstance(node, (*SYNAPSES, HostOpNode)):
                raise LoweringError(f"cannot quantize layer '{name}' ({type(node).__name__})")
            continue
        tau, v_th = _lif_tau(node), float(np.unique(node.v_threshold)[0])
        if any(isinstance(nodes.get(i), HostOpNode) for i in inputs):
            if len(inputs) != 1:
                raise LoweringError(f"LIF '{name}' reads a host op and other layers {list(inputs)}: "
                                    f"a LIF fed by a host op reads it alone")
            op = nodes[inputs[0]]
            vth, q = host_input_quantization(op, tau, v_th, fp)
            out[inputs[0]] = dataclasses.replace(op, metadata={**op.metadata,
                                                               "output_quantization": q})
            out[name] = _int_lif(node, tau, vth, 0, fp, {})
            continue
        if any(isinstance(nodes.get(i), AttentionNode) for i in inputs):
            vth, weight = _attention_input(name, [nodes[i] for i in inputs], tau, v_th, fp)
            for i in inputs:
                out[i] = dataclasses.replace(out[i], weight=float(weight))
            out[name] = _int_lif(node, tau, vth, 0, fp, {})
            continue
        if inputs == ("input",):
            if input_q is not None:
                raise LoweringError(f"'{name}' is a second LIF driven by the host input")
            input_q = input_quantization(tau, v_th, fp)
            out[name] = _int_lif(node, tau, int(fp.input_vth), input_q["bias_exp"], fp,
                                 {"input_driven": True})
            continue
        syns = tuple(dict.fromkeys(t for i in inputs for t in terms.get(i, (i,))))
        if any(not isinstance(nodes.get(i), SYNAPSES) for i in syns):
            raise LoweringError(f"LIF '{name}' reads {list(inputs)}: a chip LIF is fed by synapse "
                                f"layers and stream relays only (or by the host input alone)")
        w_max = max(float(np.max(np.abs(nodes[i].weight))) for i in syns)
        fed[name] = (syns, tau, v_th, layer_threshold(w_max, tau, v_th, fp))
    groups = shared_groups({name: [nodes[i].metadata.get("copy_of", i) for i in syns]
                            for name, (syns, *_) in fed.items()})
    group_vth: dict[str, int] = {}
    for name, (_, tau, v_th, vth) in fed.items():
        first = groups[name]
        if fed[first][1:3] != (tau, v_th):
            raise LoweringError(f"LIFs '{first}' and '{name}' read copies of one synapse but have "
                                f"(tau, V_th) {fed[first][1:3]} and {(tau, v_th)}: a synapse's "
                                f"weights sit on one grid only if its readers share tau and V_th")
        group_vth[first] = min(group_vth.get(first, vth), vth)
    summers = Counter(t for syns, *_ in fed.values() for t in syns)
    streamed = {n for n, (syns, *_) in fed.items() if any(summers[t] > 1 for t in syns)}
    stream_bias = {}  # group -> (synapse -> mantissas, exponent), for groups sharing terms
    for first in {groups[n] for n in streamed}:
        stream_bias[first] = _stream_biases(fed, [n for n in fed if groups[n] == first], nodes,
                                            group_vth[first], fp)
    for name, (syns, tau, v_th, _) in fed.items():
        vth = group_vth[groups[name]]
        s = vth / v_th
        if groups[name] in stream_bias:
            own, bexp = stream_bias[groups[name]]
        else:
            mant, bexp = quantize_bias(sum(np.asarray(nodes[i].bias, dtype=np.float64)
                                           for i in syns), s, tau, fp)
        for k, syn_name in enumerate(syns):
            if syn_name in out:  # a stream's term, read by several LIFs through relays
                continue
            syn = nodes[syn_name]
            w = np.asarray(syn.weight, dtype=np.float64)
            w_int = quantize_weight(w, s, tau, fp)
            worst = activation_worst_case(w_int)
            _check_port(syn_name, "synaptic input", worst, fp)
            if groups[name] in stream_bias:
                bias_q = bias_value(own[syn_name], bexp, fp.activation_shift)
            else:
                bias_q = (bias_value(mant, bexp, fp.activation_shift) if k == 0
                          else np.zeros_like(mant))
            meta = {"loihi": {"weight_exp": int(fp.weight_exp), "num_weight_bits": fp.weight_bits},
                    "scale": s, "weight_absmax_float": float(np.max(np.abs(w))),
                    "activation_worst_case": worst}
            out[syn_name] = _int_synapse(syn, w_int, bias_q, meta)
        out[name] = _int_lif(nodes[name], tau, vth, bexp, fp, {"scale_group": groups[name]})
    for relay, summed in terms.items():
        reader = relay
        while reader not in fed:  # the first LIF it reaches, directly or through later relays
            reader = next((n for n, _, inputs in layers if reader in inputs
                           and (n in fed or n in terms)), None)
            if reader is None:
                raise LoweringError(f"stream relay '{relay}' is read by no chip LIF, directly "
                                    f"or through later relays: its payload takes the scale of "
                                    f"a LIF that sums it; feed the relay to the LIF that sums "
                                    f"its terms, or drop it")
        quantized = _pool_level if isinstance(nodes[relay], PoolNode) else _relay
        out[relay] = quantized(nodes[relay], relay, [out[t] for t in summed],
                               out[reader].metadata["scale"], fp)
    if input_q is None:
        raise LoweringError("no chip LIF is driven by the host input")
    unread = [name for name, _, _ in layers if name not in out]
    if unread:
        raise LoweringError(f"synapse layer(s) {unread} drive no LIF")
    return [(name, out[name]) for name, _, _ in layers], input_q
