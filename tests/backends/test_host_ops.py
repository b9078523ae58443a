"""Host ops between chip subgraphs: spiking attention's Q K^T V and real-valued max-pooling run on
the host, the rest of the Spikingformer on chip. Worked by hand, then a random-init
Spikingformer snapped to the Loihi grid (weights, biases, input current, host ops' outputs and
the thresholds of the LIFs reading them) exported for both targets gives identical spikes,
every layer and step, in the float model, the CPU reference (float export), Lava and the
emulator (fixed-point export)."""
import numpy as np
import pytest
import torch

from spikeclip_deploy.backends import get_backend
from spikeclip_deploy.backends.host_runtime import quantize_host_output
from spikeclip_deploy.config import get_config
from spikeclip_deploy.export import ExportConfig, export_model
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering.quantize import host_input_quantization
from spikeclip_deploy.exchange.nirgraph import HostOpNode
from spikeclip_deploy.nn.chip_graph import HostMaxPool, SpikeAttention
from spikeclip_deploy.nn.init import random_init

CONFIG = "spikeclip-former-micro"


def test_spike_attention_by_hand():
    """One head, 2 channels, 2 tokens (a 1x2 grid): Y = 0.5 (Q K^T) V."""
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # [tokens, d]
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # Q K^T = [[1, 0], [2, 1]]; (Q K^T) V = [[1, 0], [3, 1]]; times 0.5
    want = torch.tensor([[0.5, 0.0], [1.5, 0.5]])
    grid = lambda z: z.T.reshape(1, 2, 1, 2)  # noqa: E731  [tokens, C] -> [N, C, H, W]
    y = SpikeAttention(heads=1, scale=0.5)(grid(q), grid(k), grid(v))
    assert torch.equal(y, grid(want))
    op = SpikeAttention(heads=2, scale=0.125)
    assert op.bound([(16, 8, 8)], [1, 1, 1]) == 0.125 * 8 * 64  # d = 8 channels, 64 tokens
    assert op.macs([(16, 8, 8)]) == 2 * 64 * 64 * 16
    assert HostMaxPool(3, 2, 1).macs([(4, 8, 8)]) == 4 * 4 * 4 * 9


def test_host_input_quantization_by_hand():
    """Bound 384 (0.125 * 48 * 64), tau 2, threshold 0.5, a 16-bit port: S = 2^floor(log2(
    32767 * 2 / 384)) = 128, so a = round(y * 64) and vth = 64; the 0.125 grid maps to 8: exact."""
    fp = load_profile("loihi2").fixed_point
    op = HostOpNode(op="SpikeAttention", input_shapes=((384, 8, 8),) * 3, output_shape=(384, 8, 8),
                    metadata={"bound": 384.0, "grid": 0.125})
    vth, q = host_input_quantization(op, 2.0, 0.5, fp)
    assert (vth, q) == (64, {"scale": 64.0, "limit": 32767, "exact": True})
    y = np.array([0.125, 383.875, -1000.0, 0.4])
    assert quantize_host_output(y, q).tolist() == [8, 24568, -32767, 26]
    assert quantize_host_output(y, None) is y  # a float export passes the current on
    # an off-grid op (a max-pooled current) is rounded: not exact
    pooled = HostOpNode(op="HostMaxPool", input_shapes=((4, 8, 8),), output_shape=(4, 4, 4),
                        metadata={"bound": 10.0})
    vth, q = host_input_quantization(pooled, 2.0, 1.0, fp)
    assert (vth, q["scale"], q["exact"]) == (4096, 2048.0, False)  # 32767 * 2 / 10 -> 4096


@pytest.fixture(scope="module")
def former(tmp_path_factory):
    """A random-init Spikingformer (host pools and attention) snapped to the Loihi grid, its
    float spikes on 2 images, and its exports for both targets. Not snapped, the CPU reference
    and Lava differ where Lava's decay truncates an odd membrane."""
    from spikeclip_deploy.checkpoint import save_model
    from spikeclip_deploy.lowering import qat
    from spikeclip_deploy.tokenizers import tokenizer_for_vocab

    model = random_init(get_config(CONFIG), seed=0)
    fp = load_profile("loihi2").fixed_point
    for enc in (model.image, model.text):
        qat.snap_to_grid(enc, fp)
    qat.quantize_inputs(model, fp)
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    enc = model.image
    with torch.no_grad():
        current = enc.current(model.normalize(torch.from_numpy(images)))
        outs = enc.stack(current, enc.time_steps)
    want = [outs[i].transpose(0, 1).numpy() for i in enc.stack.lif_indices()]
    assert all(0 < s.mean() < 1 for s in want), [s.mean() for s in want]
    root = tmp_path_factory.mktemp("former")
    ckpt = root / "former.safetensors"
    save_model(ckpt, model, {"metrics": {"quantization_aware": {"hardware": "loihi2",
                                                                "input_grid": True}}})
    tokenizer_for_vocab(model.cfg.vocab_size).save_pretrained(str(ckpt.with_suffix(".tokenizer")))
    exports = {t: export_model(ExportConfig(model=str(ckpt), target=t, out=root / t,
                                            attention="host", current_pool="host"))[0]
               for t in ("cpu", "loihi")}
    exports.update({f"{t}-chip": export_model(ExportConfig(model=str(ckpt), target=t,
                                                           out=root / f"{t}-chip"))[0]
                    for t in ("cpu", "loihi")})
    return current.numpy(), want, exports


def test_the_export_lists_the_host_ops(former):
    _, _, exports = former
    backend = get_backend("cpu")(exports["loihi"])
    ops = [la for la in backend.layers["image"] if isinstance(la.node, HostOpNode)]
    assert [la.node.op for la in ops] == ["HostMaxPool", "HostMaxPool", "SpikeAttention"]
    attn = ops[2]
    assert attn.node.metadata["onnx"] == f"host/image_{attn.name}.onnx"
    assert attn.node.metadata["output_quantization"]["exact"] is True
    assert len(attn.inputs) == 3  # Q, K, V spikes
    # the conv before each real-valued pool runs on the host, inside the pool's ONNX function
    part = backend.manifest["partition"]["image"]
    host = sorted(n for n, p in part.items() if p["placement"] == "host")
    assert host == sorted(["conv1", "conv2", *(la.name for la in ops), "encode", "readout"])
    assert "conv1" not in {la.name for la in backend.layers["image"]}


def test_cpu_reference_equals_the_float_model(former):
    current, want, exports = former
    cpu = get_backend("cpu")(exports["cpu"])
    got = cpu.run_chip("image", current)
    assert len(got) == len(want) == 12
    for layer, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"LIF {layer}: {np.argwhere(g != w)[:5].tolist()}"


@pytest.mark.parametrize("target", ["cpu", "loihi"])
def test_attention_on_chip_equals_the_float_model(former, target):
    """With attention and the max pools on chip (its heads' product neurons and graded sums, the
    pools' ReLU levels), the CPU reference
    (float export, and the fixed-point export whose decays are exact on the snapped model) and
    the emulator spike as the float model does, every LIF, step and neuron: the chip's counts
    are the float model's Q K^T V, and the scale folds into the attention LIF exactly."""
    current, want, exports = former
    export = exports[f"{target}-chip"]
    runs = {"cpu": get_backend("cpu")(export).run_chip("image", current)}
    if target == "loihi":
        runs["loihi-emu"] = get_backend("loihi-emu")(export).run_chip("image", current)
    manifest = get_backend("cpu")(export).manifest
    attn = manifest["attention"]["layers"]["image"]
    assert list(attn) == ["host2"] and attn["host2"]["order"] == "k_first"
    pools = manifest["current_pool"]["layers"]["image"]  # the max pools on chip too
    assert list(pools) == ["host0", "host1"] and manifest["current_pool"]["form"] == "chip"
    for name, got in runs.items():
        assert len(got) == len(want) == 12
        for layer, (g, w) in enumerate(zip(got, want)):
            assert np.array_equal(g, w), f"{name} LIF {layer}: {np.argwhere(g != w)[:5].tolist()}"
    assert 0 < want[8].mean() < 1  # the attention LIF spikes, and not always


@pytest.mark.lava
def test_lava_and_the_emulator_equal_the_cpu_reference_and_the_float_model(former):
    """On the fixed-point export with the host ops: Lava and the emulator spike as the CPU
    reference does, and as the float model does up to the first max pool (the model is snapped
    for its pools on chip, the default, where the float model's maximum reaches the LIF exactly:
    test_attention_on_chip_equals_the_float_model; on the host, the pooled current is rounded at
    the LIF's input port)."""
    current, want, exports = former
    cpu = get_backend("cpu")(exports["loihi"])
    ref = cpu.run_chip("image", current)
    with get_backend("loihi")(exports["loihi"]) as lava:
        got = lava.run_chip("image", current)
    emulated = get_backend("loihi-emu")(exports["loihi"]).run_chip("image", current)
    for layer, (g, e, r, w) in enumerate(zip(got, emulated, ref, want, strict=True)):
        assert 0 < r.mean() < 1 and np.array_equal(g, r), \
            f"LIF {layer}: {np.argwhere(g != r)[:5].tolist()}"
        if layer < 2:  # lif0, lif1: before the first pool
            assert np.array_equal(g, w), f"LIF {layer}: {np.argwhere(g != w)[:5].tolist()}"
        assert np.array_equal(e, g), f"emulator LIF {layer}: {np.argwhere(e != g)[:5].tolist()}"
