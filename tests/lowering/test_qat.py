"""Quantization-aware training: the fake quantizer equals the export's, and snapping makes the
float model sit exactly on the Loihi grid."""
import numpy as np
import pytest
import torch
from torch import nn

from spikeclip_deploy.config import get_config
from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering import qat
from spikeclip_deploy.lowering.graph import run_passes, trace
from spikeclip_deploy.lowering.passes import PASSES
from spikeclip_deploy.lowering.quantize import quantize_layers
from spikeclip_deploy.nn.chip_graph import ChipGraph
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.nn.spikeclip import SpikeCLIP

FP = load_profile("loihi2").fixed_point

def quantize_chain(chain, profile):
    """``quantize_layers`` on a chain ``[(name, node)]``, each layer reading the one before."""
    names = ["input"] + [name for name, _ in chain]
    return quantize_layers([(n, node, (prev,)) for (n, node), prev in zip(chain, names)], profile)



def test_fake_quant_by_hand():
    # |W|max / tau = 0.25 -> vth = floor(254 / 0.25) = 1016 = S; W S / tau = [254, -50.8, 132.08]
    # -> even mantissas [254, -50, 132] -> back to volts: * 2 / 1016
    fq = qat.FoldedFakeQuant(None, tau=2.0, v_threshold=1.0, fp=FP)
    w = torch.tensor([[0.5, -0.1, 0.26]], requires_grad=True)
    out = fq(w)
    assert torch.allclose(out, torch.tensor([[254.0, -50.0, 132.0]]) * 2 / 1016)
    out.sum().backward()  # straight-through: d out / d w = 1
    assert torch.equal(w.grad, torch.ones_like(w))


def _random_model(seed: int = 0) -> SpikeCLIP:
    torch.manual_seed(seed)
    model = SpikeCLIP(get_config("spikeclip-micro"))
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _float_chain(encoder: SpikingEncoder, input_shape) -> list:
    """The traced chip chain with BatchNorm folded, as ``[(name, float NIR node)]``."""
    graph = run_passes(trace(encoder, "test", torch.zeros(1, *input_shape)), (PASSES["fold_bn"],),
                       None)
    return [(layer.name, layer.node) for layer in graph.layers]


def _integer_vs_float(encoder: SpikingEncoder, input_shape) -> float:
    """Largest |float folded weight - integer weight * tau / S| over the export's chain."""
    floats = _float_chain(encoder, input_shape)
    ints, _ = quantize_chain(floats, load_profile("loihi2"))
    worst = 0.0
    for (name, f), (_, q), (_, lif) in zip(floats[1::2], ints[1::2], ints[2::2]):
        s = lif.metadata["scale"]
        worst = max(worst, float(np.max(np.abs(f.weight - q.weight * 2.0 / s))),
                    float(np.max(np.abs(f.bias - q.bias * 2.0 / s))))
    return worst


def test_snapped_model_is_the_exported_integer_model():
    model = _random_model()
    shape = model.image.encode(model.normalize(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))).shape[1:]
    assert _integer_vs_float(model.image, shape) > 1e-4  # a random model is off the grid
    qat.enable(model.image, FP)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        fake = model.encode_image(images)
    qat.snap_to_grid(model.image, FP)
    qat.snap_to_grid(model.text, FP)
    assert not any("parametrizations" in k for k in model.state_dict())
    assert qat.grid_error(model.image, FP) < 1e-3 and qat.grid_error(model.text, FP) < 1e-3
    assert _integer_vs_float(model.image, shape) < 1e-6
    assert _integer_vs_float(model.text, (model.cfg.context_length * model.cfg.text_width,)) < 1e-6
    with torch.no_grad():  # the fake-quantized forward pass is the snapped model's
        assert torch.allclose(model.encode_image(images), fake, atol=1e-5)
    snapped = {k: v.clone() for k, v in model.state_dict().items()}
    qat.snap_to_grid(model.image, FP)  # idempotent
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snapped.items())


def test_plain_state_dict_loads_into_an_unparametrized_model():
    model = _random_model()
    qat.enable(model.image, FP)
    fresh = SpikeCLIP(get_config("spikeclip-micro"))
    fresh.load_state_dict(qat.plain_state_dict(model))  # strict: same keys


def test_unsupported_chip_layer_is_refused():
    enc = SpikingEncoder(nn.Identity(),
                         ChipGraph([MultiStepLIF(), nn.Conv2d(2, 2, 3), MultiStepLIF()]),
                         nn.Identity(), 4)
    with pytest.raises(ConfigError, match="Conv2d"):
        qat.enable(enc, FP)
    with pytest.raises(ConfigError, match="fixed_point"):
        qat.check_supported(_random_model(), load_profile("energy-45nm"))


def test_large_weights_settle_on_a_grid_the_export_reproduces():
    """Thresholds below ~254 (largest folded weight above tau V_th): the largest weight may round
    below the top mantissa, so the scale is re-derived until the export would derive it too."""
    model = _random_model()
    with torch.no_grad():  # |W|max 46.19, tau 2: vth = floor(254 / 23.095) = 10, and the largest
        for m in model.text.stack:  # mantissa round_even(230.95) = 230 would give vth 11 on export
            if isinstance(m, nn.Linear):
                m.weight.mul_(46.19 / m.weight.abs().max())
    qat.snap_to_grid(model.text, FP)
    ints, _ = quantize_chain(_float_chain(model.text, (model.cfg.context_length * model.cfg.text_width,)),
                             load_profile("loihi2"))
    assert ints[2][1].metadata["loihi"]["vth"] == 11
    assert qat.grid_error(model.text, FP) < 1e-3
    assert _integer_vs_float(model.text, (model.cfg.context_length * model.cfg.text_width,)) < 1e-5


def test_quantization_aware_checkpoint_exports_to_the_same_network(micro_ckpt, tmp_path):
    """Snapped weights + the input grid: the Loihi export (integer units, read in float by the
    CPU reference) spikes like the float export, layer by layer, on both encoders. Not always
    bit for bit: where the integer membrane lands exactly on the threshold (no spike, strict
    ``>``), float round-off of the same sum can go either way."""
    import shutil

    from spikeclip_deploy.backends.cpu import CPUBackend
    from spikeclip_deploy.checkpoint import load_model, save_model
    from spikeclip_deploy.export import ExportConfig, export_model

    model, card, _ = load_model(str(micro_ckpt))
    qat.snap_to_grid(model.image, FP)
    qat.snap_to_grid(model.text, FP)
    qat.quantize_inputs(model, FP)
    meta = {**card["metadata"], "metrics": {"quantization_aware": {"hardware": "loihi2",
                                                                   "input_grid": True}}}
    path = tmp_path / "qa.safetensors"
    save_model(path, model, meta)
    shutil.copytree(micro_ckpt.with_suffix(".tokenizer"), path.with_suffix(".tokenizer"))
    reloaded, _, _ = load_model(str(path))
    assert reloaded.image.input_grid.grid == (512.0, -4096.0, 4095.0)  # 64 * 1024 / 2 / 64
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(reloaded.encode_image(images), model.encode_image(images))
    cpu, loihi = (CPUBackend(export_model(ExportConfig(model=str(path), target=t,
                                                       out=tmp_path / t))[0])
                  for t in ("cpu", "loihi"))
    current = cpu.host.image_current(images.numpy())
    assert np.array_equal(np.round(current * 512), current * 512)  # on the grid already
    for a, b in zip(cpu.run_chip("image", current), loihi.run_chip("image", current)):
        assert a.any() and (a != b).mean() < 5e-4
    tokens = torch.randint(0, 1000, (5, model.cfg.context_length)).numpy()
    text_current = cpu.host.text_current(tokens)
    for a, b in zip(cpu.run_chip("text", text_current), loihi.run_chip("text", text_current)):
        assert (a != b).mean() < 5e-4
