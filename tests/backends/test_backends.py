import nir
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.errors import ConfigError, UnsupportedNodeError


def images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)


def test_every_export_file_loads_with_nir_read(micro_exports):
    for export in micro_exports.values():
        for path in (export / "chip").glob("*.nir"):
            g = nir.read(path)
            assert g.metadata["dt"] == 1.0 and "discretisation" in g.metadata


def test_cpu_reference_equals_pytorch(micro_ckpt, micro_exports):
    model, _, _ = load_model(str(micro_ckpt))
    x = images()
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(x)).numpy()
        ref_spikes = model.image.run_stack(model.image.encode(model.normalize(torch.from_numpy(x))))
    with get_backend("cpu")(micro_exports["cpu"]) as cpu:
        feats, spikes = cpu.encode_images(x)
    for got, want in zip(spikes, ref_spikes):
        assert np.array_equal(got, want.transpose(0, 1).numpy().astype(np.uint8))
    assert all(s.mean() > 0 for s in spikes), "every layer should spike in this fixture"
    np.testing.assert_allclose(feats, ref, atol=1e-5)  # tolerance: float32 ONNX vs torch


def test_unknown_target():
    with pytest.raises(ConfigError, match="unknown target 'gpu'"):
        get_backend("gpu")


def test_unknown_node_type_is_named(micro_exports, monkeypatch):
    from spikeclip_deploy.backends.cpu import CPUBackend

    monkeypatch.setattr(CPUBackend, "handlers", {nir.LIF: object})
    with pytest.raises(UnsupportedNodeError, match="image/conv0.*Conv2d"):
        CPUBackend(micro_exports["cpu"])


@pytest.mark.lava
def test_lava_equals_cpu_on_the_fixed_point_graph(micro_exports):
    x = images(4)
    with get_backend("cpu")(micro_exports["loihi"]) as cpu:
        _, ref = cpu.encode_images(x)
    with get_backend("loihi")(micro_exports["loihi"]) as lava:
        _, got = lava.encode_images(x)
        text = lava.encode_texts(["a photo of a cat.", "a photo of a dog."])
    assert all(s.mean() > 0 for s in got)
    # The float interpretation differs from the chip only in the truncating decay.
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert (g != r).mean() < 0.01
    assert text.shape == (2, 384) and np.allclose(np.linalg.norm(text, axis=-1), 1, atol=1e-5)


@pytest.mark.lava
def test_lava_tiny_network_matches_hand_trace(tmp_path):
    """LIF0 (bias-driven) -> Dense -> LIF1, written to NIR, read back and run on Lava fixed
    point, against the trace computed by hand."""
    from spikeclip_deploy.backends.lava import LavaBackend, _lava, _Network
    from spikeclip_deploy.lowering.fold import chain_to_graph, graph_to_chain

    def lif(n, vth, bias_exp):
        f = lambda v: np.full((n,), v, dtype=np.float32)  # noqa: E731
        return nir.LIF(tau=f(2), r=f(128), v_leak=f(0), v_threshold=f(vth * 64), v_reset=f(0),
                       metadata={"loihi": {"du": 4095, "dv": 2048, "vth": vth, "bias_exp": bias_exp}})
    w = np.array([[100.0, 0.0], [0.0, -50.0]])
    chain = [("lif0", lif(2, 10, 6)),
             ("dense0", nir.Affine(weight=w, bias=np.zeros(2), metadata={"loihi": {"weight_exp": 0}})),
             ("lif1", lif(2, 60, 0))]
    nir.write(tmp_path / "tiny.nir", chain_to_graph(chain, (2,), (2,), {"dt": 1.0}))
    chain = graph_to_chain(nir.read(tmp_path / "tiny.nir"))
    net = _Network(_lava(), chain, time_steps=4, handlers=LavaBackend.handlers, shift=6)
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
