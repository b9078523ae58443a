"""``export --format netx``: stock lava-dl netx loads every ``.net`` and, run on Lava with the
same input, spikes exactly as this project's emulator (bit-exact with the Lava backend)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikeclip_deploy.backends.base import input_mantissa
from spikeclip_deploy.backends.emulator import EmulatorBackend
from spikeclip_deploy.backends.lava_layout import from_lava_layout, to_lava_layout
from spikeclip_deploy.exchange.nirgraph import INPUT


@pytest.fixture(scope="module")
def netx_export(micro_ckpt, tmp_path_factory) -> Path:
    from spikeclip_deploy.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("netx") / "loihi"
    return export_model(ExportConfig(model=str(micro_ckpt), target="loihi", out=out,
                                     format="netx"))[0]


def run_netx(path: Path, seg: dict, inputs: np.ndarray, time_steps: int,
             models: dict | None = None) -> np.ndarray:
    """Stock ``netx.hdf5.Network`` on Lava's fixed_pt models, one sample per period
    (``reset_interval``): ``inputs`` ``[B, *in]`` are input mantissas (set as the input neuron's
    ``bias_mant``) or ``[B, T, *in]`` spikes; returns the last layer's spikes ``[B, T, *out]``."""
    from spikeclip_deploy import lava_compat

    lava_compat.install()
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    blocks = len(seg["layers"]) // 2  # synapse + LIF pairs after the input
    period = time_steps + blocks
    net = hdf5.Network(net_config=str(path), reset_interval=period,
                       reset_offset=seg["reset_offset"])
    b = len(inputs)
    sink = Sink(shape=net.out.shape, buffer=b * period)
    net.out.connect(sink.a_in)
    bias = None
    if seg["input"] == INPUT:
        bias = net.layers[0].neuron.bias_mant
        bias.init = to_lava_layout(inputs[0]).astype(np.int32)
    else:
        data = np.zeros((*net.inp.shape, b * period))
        for k, x in enumerate(inputs):
            data[..., k * period:k * period + time_steps] = np.stack(
                [to_lava_layout(s) for s in x], -1)
        Source(data=data).s_out.connect(net.inp)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models or {})
    try:
        for k in range(b):
            if k and bias is not None:
                bias.set(to_lava_layout(inputs[k]).astype(np.int32))
            net.run(condition=RunSteps(num_steps=period), run_cfg=cfg)
        rec = sink.data.get()  # [*out, steps]
    finally:
        net.stop()
    rows = np.arange(b)[:, None] * period + blocks + np.arange(time_steps)[None, :]
    return np.stack([from_lava_layout(rec[..., r]) for r in rows])


def check_segments(export: Path, side: str, current: np.ndarray, models: dict | None = None
                   ) -> int:
    """Every chain of ``side`` on netx against the emulator's spikes; returns the chains run."""
    manifest = json.loads((export / "manifest.json").read_text())
    emu = EmulatorBackend(export)
    spikes = dict(zip(emu.lif_names(side), emu.run_chip(side, current)))
    mant = input_mantissa(current, emu.graphs[side], side)
    for seg in manifest["netx"][side]["segments"]:
        inputs = mant if seg["input"] == INPUT else spikes[seg["input"]]
        got = run_netx(export / seg["file"], seg, inputs, emu.time_steps, models)
        want = spikes[seg["output"]]
        assert want.any() and not want.all(), f"{seg['output']}: no information in the spikes"
        np.testing.assert_array_equal(got, want, err_msg=f"{side} {seg['file']}")
    return len(manifest["netx"][side]["segments"])


@pytest.mark.lava
def test_micro_netx_spikes_equal_emulator(netx_export):
    emu = EmulatorBackend(netx_export)
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    assert check_segments(netx_export, "image", emu.host.image_current(images)) == 1
    tokens = np.random.default_rng(1).integers(1, 300, (2, emu.manifest["host"]["context_length"]))
    assert check_segments(netx_export, "text", emu.host.text_current(tokens)) == 1


@pytest.mark.lava
@pytest.mark.slow
def test_native_small_netx_chains_equal_emulator(tmp_path):
    """The default model (a residual stream on graded relays, 128-group depthwise convolutions):
    its three image chains on netx (the relays, their synapses and readers left out, with
    netx's missing summing block named); Lava's stock Conv model wraps 128 groups (int8), so the
    convolutions run on this project's model of it (bit-identical, tested)."""
    from spikeclip_deploy.export.netx import NO_RELAY
    from spikeclip_deploy.backends.lava import _lava
    from spikeclip_deploy.export import ExportConfig, export_model

    export, manifest = export_model(ExportConfig(model="spikeclip-native-small-cifar10",
                                                 target="loihi", out=tmp_path / "n", format="netx"))
    left_out = manifest["netx"]["image"]["not_in_netx"]
    assert sorted(left_out) == sorted([f"relay{k}" for k in range(5)] + ["conv2", "conv3", "conv5",
                                      "conv6", "conv8", "lif5", "lif6", "lif8", "lif9", "lif11"])
    assert left_out["relay1"] == NO_RELAY and left_out["conv3"] == "synapse into relay 'relay1', left out"
    assert left_out["lif6"] == f"reads a residual stream's relay ['relay1']; {NO_RELAY}"
    images = np.random.default_rng(0).integers(0, 255, (1, 3, 32, 32), dtype=np.uint8)
    current = EmulatorBackend(export).host.image_current(images)
    assert check_segments(export, "image", current, _lava()["models"]) == 3


def test_nir_format_biases_are_refused(micro_exports, tmp_path):
    """A plain loihi export's biases (exponent below 6) are off netx's grid: refused, named."""
    import nir

    from spikeclip_deploy.errors import ExportError
    from spikeclip_deploy.export.netx import write_netx
    from spikeclip_deploy.exchange.nirgraph import graph_layers

    layers = graph_layers(nir.read(micro_exports["loihi"] / "chip" / "text_encoder.nir"))
    with pytest.raises(ExportError, match="bias exponent 3; netx fixes it at 6"):
        write_netx(layers, 6, tmp_path, "text")


def test_netx_registers(netx_export):
    """The file's neuron and synapse values, against the NIR graph's registers by hand."""
    import nir

    graph = nir.read(netx_export / "chip" / "text_encoder.nir")
    lif1, dense0 = graph.nodes["lif1"], graph.nodes["dense0"]
    with h5py.File(netx_export / "netx" / "text_seg0.net") as f:
        layers = f["layer"]
        assert [layers[k]["type"][0] for k in ("0", "1")] == [b"input", b"dense"]
        neuron = layers["1"]["neuron"]
        assert neuron["vThMant"][()] == lif1.metadata["loihi"]["vth"]
        assert neuron["iDecay"][()] == 4096 and neuron["vDecay"][()] == 2048
        np.testing.assert_array_equal(layers["1"]["weight"][()], dense0.weight)
        # bias exponent 6 = activation shift: the netx bias is the NIR bias itself
        np.testing.assert_array_equal(layers["1"]["bias"][()], dense0.bias)
        assert lif1.metadata["loihi"]["bias_exp"] == 6


def test_netx_export_is_deterministic(micro_ckpt, netx_export, tmp_path):
    from spikeclip_deploy.export import ExportConfig, export_model

    again, _ = export_model(ExportConfig(model=str(micro_ckpt), target="loihi",
                                         out=tmp_path / "again", format="netx"))
    for name in ("image_seg0.net", "text_seg0.net"):
        assert (again / "netx" / name).read_bytes() == (netx_export / "netx" / name).read_bytes()


def test_attention_on_chip_is_named_as_left_out():
    """A Spikingformer with attention and max pools on chip: netx holds none of its populations
    (no block multiplies two inputs) nor its pools' levels (no graded ReLU block) nor the LIFs
    reading them, and says so for each."""
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.export import lower_encoder
    from spikeclip_deploy.export.netx import NO_ATTENTION, NO_POOL, segments
    from spikeclip_deploy.lowering.graph import run_side_layers
    from spikeclip_deploy.nn.init import random_init
    from spikeclip_deploy.targets import get_target

    model = random_init(get_config("spikeclip-former-micro"), seed=0)
    graph = lower_encoder(model, "image", get_target("loihi"))
    chains, left_out = segments(run_side_layers(graph))
    pops = [f"host2_h{h}_{s}" for h in (0, 1) for s in ("kv", "m", "qm", "y")]
    assert {name: left_out[name] for name in pops} == dict.fromkeys(pops, NO_ATTENTION)
    (lif,) = graph.consumers("host2_h0_y")
    assert left_out[lif.name].startswith("reads spiking attention's populations")
    assert not {*pops, lif.name} & {la.name for seg in chains for la in seg.layers}
    levels = [f"host{p}_l{k}" for p in (0, 1) for k in range(1, 5)]
    assert {name: left_out[name] for name in levels} == dict.fromkeys(levels, NO_POOL)
    pooled = [r.name for p in (0, 1) for r in graph.consumers(f"host{p}_l4")]
    assert all(left_out[n].startswith("reads a max pool's last level") for n in pooled)
    assert not {*levels, *pooled} & {la.name for seg in chains for la in seg.layers}
