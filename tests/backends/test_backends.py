import copy

import nir
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.checkpoint import load_model, load_tokenizer
from spikeclip_deploy.errors import ConfigError, UnsupportedNodeError
from spikeclip_deploy.zeroshot import tokenize

TEXTS = ["a photo of a cat.", "a blurry photo of a dog.", "a photo of the big ship.", "truck"]


def images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)


def test_tokens_by_hand(micro_ckpt):
    """BERT uncased ids: [CLS] a photo of a cat . [SEP], then padding, in reading order."""
    ids = tokenize(load_tokenizer(micro_ckpt), ["a photo of a cat."], 20)
    assert ids.tolist() == [[101, 1037, 6302, 1997, 1037, 4937, 1012, 102] + [0] * 12]


def _torch_spikes(model, side, inputs):
    enc = getattr(model, side)
    x = model.normalize(inputs) if side == "image" else inputs
    with torch.no_grad():
        return [s.transpose(0, 1).numpy().astype(np.uint8) for s in enc.run_stack(enc.current(x))]


def test_micro_fixture_spikes_everywhere_and_its_biases_matter(micro_ckpt):
    """Every layer of both encoders spikes (neither never nor always), and zeroing the chip
    biases changes at least 3 % of every hidden layer's spikes: a backend that drops them fails."""
    model, _, _ = load_model(str(micro_ckpt))
    unbiased = copy.deepcopy(model)
    with torch.no_grad():
        for side in ("image", "text"):
            for layer in getattr(unbiased, side).stack:
                if isinstance(layer, torch.nn.Linear):
                    layer.bias.zero_()
                elif isinstance(layer, torch.nn.Sequential):  # conv + BN: folded bias 0
                    layer[1].bias.zero_()
                    layer[1].running_mean.zero_()
    tokens = torch.from_numpy(tokenize(load_tokenizer(micro_ckpt), TEXTS, model.cfg.context_length))
    for side, inputs in (("image", torch.from_numpy(images())), ("text", tokens)):
        spikes = _torch_spikes(model, side, inputs)
        assert all(0.02 < s.mean() < 0.9 for s in spikes), (side, [s.mean() for s in spikes])
        for s, u in list(zip(spikes, _torch_spikes(unbiased, side, inputs)))[1:]:
            assert (s != u).mean() > 0.03, side


def test_every_export_file_loads_with_nir_read(micro_exports):
    """NIR time is seconds: dt = 0.1 ms per chip step, the model's tau of 2 steps is 0.2 ms."""
    for export in micro_exports.values():
        for path in (export / "chip").glob("*.nir"):
            g = nir.read(path)
            assert g.metadata["dt"] == 1e-4 and "discretisation" in g.metadata
            taus = [node.tau for node in g.nodes.values() if isinstance(node, nir.LIF)]
            assert taus and all(np.all(tau == np.float32(2e-4)) for tau in taus)


def test_cpu_reference_equals_pytorch(micro_ckpt, micro_exports):
    """Float export on the CPU reference = the PyTorch model: every layer's spikes exactly, on
    both encoders, and the embeddings up to float32 ONNX round-off."""
    model, _, _ = load_model(str(micro_ckpt))
    x = images()
    tokens = tokenize(load_tokenizer(micro_ckpt), TEXTS, model.cfg.context_length)
    with torch.no_grad():
        ref_image = model.encode_image(torch.from_numpy(x)).numpy()
        ref_text = model.encode_text(torch.from_numpy(tokens)).numpy()
    with get_backend("cpu")(micro_exports["cpu"]) as cpu:
        feats, spikes = cpu.encode_images(x)
        text_spikes = cpu.run_chip("text", cpu.host.text_current(tokens))
        text = cpu.encode_texts(TEXTS)
    for side, got, inputs in (("image", spikes, x), ("text", text_spikes, tokens)):
        want = _torch_spikes(model, side, torch.from_numpy(inputs))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.array_equal(g, w), side
    np.testing.assert_allclose(feats, ref_image, atol=1e-5)  # tolerance: float32 ONNX vs torch
    np.testing.assert_allclose(text, ref_text, atol=1e-5)


@pytest.mark.lava
def test_lava_equals_the_fixed_point_model_exactly(micro_exports, zero_shot):
    """Lava on the loihi export = an independent numpy model of Lava's fixed-point LIF
    (truncating decay), every layer's spikes exactly, on both encoders; the CPU reference on
    the same export = that model with exact decay. Nothing is approximate here."""
    x = images(4)
    with get_backend("loihi")(micro_exports["loihi"]) as lava:
        tokens = tokenize(lava.host.tokenizer, TEXTS, 20)
        feats, got = lava.encode_images(x)
        text_current = lava.host.text_current(tokens)
        got_text = lava.run_chip("text", text_current)
        text = lava.encode_texts(TEXTS)
        image_current = lava.host.image_current(x)
        graphs = lava.graphs
    with get_backend("cpu")(micro_exports["loihi"]) as cpu:
        cpu_image, cpu_text = cpu.run_chip("image", image_current), cpu.run_chip("text", text_current)
        host = cpu.host
    for side, current, lava_spikes, cpu_spikes in (("image", image_current, got, cpu_image),
                                                    ("text", text_current, got_text, cpu_text)):
        chip = zero_shot.fixed_point(graphs[side], current, 4)
        exact = zero_shot.fixed_point(graphs[side], current, 4, truncate=False)
        assert len(lava_spikes) == len(chip) == len(cpu_spikes)
        for j, (g, want, c, e) in enumerate(zip(lava_spikes, chip, cpu_spikes, exact)):
            assert 0 < want.mean() < 1, (side, j)
            assert np.array_equal(g, want), (side, j, int((g != want).sum()))
            assert np.array_equal(c, e), (side, j, int((c != e).sum()))
        embeddings = feats if side == "image" else text
        assert np.array_equal(embeddings, host.readout(side, chip[-1])), side


def test_unknown_target():
    with pytest.raises(ConfigError, match="unknown target 'gpu'"):
        get_backend("gpu")


def test_unknown_node_type_is_named(micro_exports, monkeypatch):
    from spikeclip_deploy.backends.cpu import CPUBackend

    monkeypatch.setattr(CPUBackend, "handlers", {nir.LIF: object})
    with pytest.raises(UnsupportedNodeError, match="image/conv0.*Conv2d"):
        CPUBackend(micro_exports["cpu"])


def test_a_relay_is_a_marked_scale_of_one():
    from spikeclip_deploy.exchange.nirgraph import is_relay, relay_node

    relay = relay_node((2,), {})
    assert is_relay(relay)
    assert not is_relay(nir.Scale(scale=np.ones(2, dtype=np.float32)))  # unmarked
    assert not is_relay(nir.Scale(scale=np.array([1.0, 2.0], dtype=np.float32),
                                  metadata=relay.metadata))  # marked, but scaling


@pytest.mark.parametrize("target", ["cpu", "loihi-emu", "loihi"])
def test_every_backend_refuses_a_scaling_relay_by_name(target, micro_exports, monkeypatch):
    """A relay-marked Scale whose scale is not 1 (the CPU reference would multiply by it, Lava
    and the emulator would not): each backend refuses it, naming the layer."""
    from spikeclip_deploy.backends import base
    from spikeclip_deploy.exchange.nirgraph import ChipLayer, graph_layers, relay_node

    def with_scaling_relay(graph):
        layers = graph_layers(graph)
        relay = relay_node((2,), {})
        scaled = nir.Scale(scale=np.full(2, 2.0, dtype=np.float32), metadata=relay.metadata)
        return layers + [ChipLayer("relay9", scaled, (layers[-1].name,))]
    monkeypatch.setattr(base, "graph_layers", with_scaling_relay)
    export = micro_exports["cpu" if target == "cpu" else "loihi"]
    with pytest.raises(UnsupportedNodeError, match="'image/relay9' of type Scale that is no "
                                                   "stream relay"):
        get_backend(target)(export)


def test_lavas_relay_handler_names_the_layer():
    from spikeclip_deploy.backends.lava import _relay

    scaled = nir.Scale(scale=np.full(2, 2.0, dtype=np.float32), metadata={"relay": "graded"})
    with pytest.raises(UnsupportedNodeError, match="node 'relay3' of type Scale that is no "
                                                   "stream relay"):
        _relay({}, scaled, (2,), "relay3")


@pytest.mark.lava
def test_lava_tiny_network_matches_hand_trace(tmp_path):
    """LIF0 (bias-driven) -> Dense -> LIF1, written to NIR, read back and run on Lava fixed
    point, against the trace computed by hand."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network
    from spikeclip_deploy.lowering.graph import Graph, Layer, to_nir
    from spikeclip_deploy.exchange.nirgraph import graph_layers

    def lif(n, vth, bias_exp):
        f = lambda v: np.full((n,), v, dtype=np.float32)  # noqa: E731
        return nir.LIF(tau=f(2), r=f(128), v_leak=f(0), v_threshold=f(vth * 64), v_reset=f(0),
                       metadata={"loihi": {"du": 4095, "dv": 2048, "vth": vth, "bias_exp": bias_exp}})
    w = np.array([[100.0, 0.0], [0.0, -50.0]])
    chain = [("lif0", lif(2, 10, 6)),
             ("dense0", nir.Affine(weight=w, bias=np.zeros(2), metadata={"loihi": {"weight_exp": 0}})),
             ("lif1", lif(2, 60, 0))]
    graph = Graph("text", tuple(Layer(name, node, (prev,), "") for (name, node), prev in
                                zip(chain, ["input", "lif0", "dense0"])), (2,), (2,))
    nir.write(tmp_path / "tiny.nir", to_nir(graph))
    layers = graph_layers(nir.read(tmp_path / "tiny.nir"))
    net = _Network(_lava(), layers, time_steps=4, handlers=LavaBackend.handlers, shift=6,
                   synapse_delay=1, export_dir=str(tmp_path))
    # two samples in one run: the second starts from the reset state, so both match the trace
    (s0, s1) = net.run(np.array([[6, 20], [6, 20]]))
    # lif0: v = trunc(v/2) + input * 2^6, spike when v > 10 * 2^6, reset to 0.
    # neuron 0: 384, 576, 672 (spike), 384 -> 0 0 1 0; neuron 1: 1280 every step -> 1 1 1 1
    v, trace0 = np.zeros(2, dtype=np.int64), []
    for _ in range(4):
        v = np.trunc(v / 2).astype(np.int64) + np.array([6, 20]) * 64
        s = v > 640
        v[s] = 0
        trace0.append(s.astype(np.uint8))
    # lif1 sees lif0's spikes of the same window step (delay compensated): 64 * (W s)
    v, trace1 = np.zeros(2, dtype=np.int64), []
    for s in trace0:
        v = np.trunc(v / 2).astype(np.int64) + 64 * (w.astype(np.int64) @ s)
        out = v > 60 * 64
        v[out] = 0
        trace1.append(out.astype(np.uint8))
    for k in range(2):
        assert s0[k].tolist() == np.array(trace0).tolist()
        assert s1[k].tolist() == np.array(trace1).tolist()
    assert np.array(trace0).sum() > 0 and np.array(trace1).sum() > 0
