"""Quantization-aware training: the fake quantizer equals the export's, and snapping makes the
float model sit exactly on the Loihi grid."""
from dataclasses import replace

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikeclip_deploy.config import get_config
from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering import qat
from spikeclip_deploy.lowering.graph import run_passes, run_side_layers, trace
from spikeclip_deploy.lowering.passes import LoweringContext, passes_named
from spikeclip_deploy.lowering.quantize import quantize_layers, split_bias
from spikeclip_deploy.exchange.nirgraph import summed_synapses
from spikeclip_deploy.nn.chip_graph import ChipGraph
from spikeclip_deploy.nn.encoders import SpikingEncoder
from spikeclip_deploy.nn.init import random_init
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.nn.spikeclip import SpikeCLIP
from spikeclip_deploy.targets import get_target

FP = load_profile("loihi2").fixed_point

def quantize_chain(chain, profile):
    """``quantize_layers`` on a chain ``[(name, node)]``, each layer reading the one before."""
    names = ["input"] + [name for name, _ in chain]
    return quantize_layers([(n, node, (prev,)) for (n, node), prev in zip(chain, names)], profile)


def _linear(w):
    lin = nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
    return lin


def test_fake_quant_by_hand():
    # |W|max / tau = 0.25 -> vth = floor(254 / 0.25) = 1016 = S; W S / tau = [254, -50.8, 132.08]
    # -> even mantissas [254, -50, 132] -> back to volts: * 2 / 1016
    lin = _linear([[0.5, -0.1, 0.26]])
    group = qat.ScaleGroup({1: (0,)}, {0: qat.Synapse(lin, None)}, tau=2.0, v_threshold=1.0)
    fq = qat.FoldedFakeQuant(None, group, FP)
    w = lin.weight
    out = fq(w)
    assert torch.allclose(out, torch.tensor([[254.0, -50.0, 132.0]]) * 2 / 1016)
    out.sum().backward()  # straight-through: d out / d w = 1
    assert torch.equal(w.grad, torch.ones_like(w))


def test_fake_quant_takes_its_groups_scale():
    """The same weights in a group whose other synapse has |W|max 1.0: S = floor(254 * 2 / 1) =
    508; W S / tau = 254 W = [127, -25.4, 66.04] -> even mantissas [128, -26, 66] (63.5 rounds
    to 64), back to volts * 2 / 508."""
    lin, other = _linear([[0.5, -0.1, 0.26]]), _linear([[1.0, 0.0, 0.0]])
    group = qat.ScaleGroup({3: (0,), 4: (0, 1)}, {0: qat.Synapse(lin, None),
                                                   1: qat.Synapse(other, None)}, 2.0, 1.0)
    out = qat.FoldedFakeQuant(None, group, FP)(lin.weight)
    assert torch.allclose(out, torch.tensor([[128.0, -26.0, 66.0]]) * 2 / 508)


def test_bias_on_grid_by_hand():
    """Synapse 0 is read by LIF a alone, synapses 0 and 1 by LIF b (tau 2, so each bias is
    lowered by 1 / (2 * 2 * 2) = 1/8 unit: b sums two). 3000 and 2001 are integers, but b's sum
    5001 needs exponent 1 (5001 / 2 = 2500.5 <= 4095), so both are rounded to multiples of 2:
    3000 and 2000 (1000.5 rounds to even); their sum 5000 needs exponent 1 again: a fixed
    point. With min_exp 3 they round to multiples of 8: 3000 = 375 * 8 and 2000 = 250 * 8."""
    reads = {"a": (0,), "b": (0, 1)}
    raw = {0: np.array([3000.0]), 1: np.array([2001.0])}
    assert qat.bias_on_grid(raw, reads, 2.0, FP, 0) == {0: [2999.875], 1: [1999.875]}
    assert qat.bias_on_grid(raw, reads, 2.0, FP, 3) == {0: [2999.875], 1: [1999.875]}
    # 20003 alone needs exponent 3 (20003 / 8 <= 4095): rounded to 8 * 2500 = 20000, minus 1/4
    assert qat.bias_on_grid({0: np.array([20003.0])}, {"a": (0,)}, 2.0, FP, 0) == {0: [19999.75]}
    # each reader's sum is 1/8 or 2/8 unit below a multiple of its 2^exponent: the export
    # rounds it there (3000 = 3000 * 2^0, 5000 = 2500 * 2^1)
    snapped = qat.bias_on_grid(raw, reads, 2.0, FP, 0)
    assert split_bias(snapped[0], FP) == ([3000], 0)
    assert split_bias(snapped[0] + snapped[1], FP) == ([2500], 1)


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


def _lowered(encoder: SpikingEncoder, input_shape, residual: str = "copies"):
    """(the traced graph with BatchNorm folded and fan-out split: float, its Loihi export with
    residual streams as ``residual``)."""
    graph = trace(encoder, "test", torch.zeros(1, *input_shape))
    floats = run_passes(graph, passes_named(("fold_bn", "split_fanout")), None)
    ints = run_passes(graph, passes_named(get_target("loihi").passes),
                      LoweringContext("loihi", load_profile("loihi2"), None, residual))
    return floats, ints


def _grid_distance(encoder: SpikingEncoder, input_shape) -> tuple[float, dict, dict]:
    """Over the export's LIFs fed by synapses (tau 2): the largest |float folded weight -
    integer weight * tau / S| of any synapse (copy) into them, and per LIF, its summed float
    bias minus its integer bias, and the integer bias itself, in chip units (2^6 S b / tau)."""
    floats, ints = _lowered(encoder, input_shape)
    worst, offsets, raw = 0.0, {}, {}
    for la in ints.layers:
        if "scale_group" not in la.node.metadata:
            continue
        s = la.node.metadata["scale"]
        for i in la.inputs:
            worst = max(worst, float(np.max(np.abs(floats.layer(i).node.weight
                                                    - ints.layer(i).node.weight * 2.0 / s))))
        f, q = (sum(np.asarray(g.layer(i).node.bias, np.float64) for i in la.inputs)
                for g in (floats, ints))
        offsets[la.name], raw[la.name] = f * 64 * s / 2.0 - q * 64, q * 64
    return worst, offsets, raw


def _snapped_bias_offsets(ints) -> dict:
    """Per LIF fed by trained synapses: -(its synapses) / (2 tau m), m the most synapses one
    LIF of its scale group sums (:func:`qat.bias_on_grid`), tau 2."""
    lifs = [la for la in ints.layers if "scale_group" in la.node.metadata
            and not la.inputs[0].startswith("pool")]  # spike pooling: nothing trained
    most = {}
    for la in lifs:
        group = la.node.metadata["scale_group"]
        most[group] = max(most.get(group, 0), len(la.inputs))
    return {la.name: -len(la.inputs) / (4.0 * most[la.node.metadata["scale_group"]])
            for la in lifs}


def _assert_snapped(encoder: SpikingEncoder, input_shape) -> None:
    """Weights on the export's grid; every LIF's summed bias just below its integer one, by
    the margin of :func:`qat.bias_on_grid`; integer biases multiples of 2^(T-1) = 8."""
    worst, offsets, raw = _grid_distance(encoder, input_shape)
    assert worst < 1e-6
    want = _snapped_bias_offsets(_lowered(encoder, input_shape)[1])
    assert want and set(want) <= set(offsets)
    for name, off in offsets.items():
        assert np.allclose(off, want.get(name, 0.0), atol=1e-2), (name, off, want.get(name))
        assert np.array_equal(raw[name] % 8, np.zeros_like(raw[name])), name


def test_snapped_model_is_the_exported_integer_model():
    model = _random_model()
    shape = model.image.encode(model.normalize(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))).shape[1:]
    text_shape = (model.cfg.context_length * model.cfg.text_width,)
    assert _grid_distance(model.image, shape)[0] > 1e-4  # a random model is off the grid
    qat.enable(model.image, FP)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        fake = model.encode_image(images)
    qat.snap_to_grid(model.image, FP)
    qat.snap_to_grid(model.text, FP)
    assert not any("parametrizations" in k for k in model.state_dict())
    assert qat.grid_error(model.image, FP) < 1e-3 and qat.grid_error(model.text, FP) < 1e-3
    _assert_snapped(model.image, shape)
    _assert_snapped(model.text, text_shape)
    with torch.no_grad():  # the fake-quantized forward pass is the snapped model's
        assert torch.allclose(model.encode_image(images), fake, atol=1e-4)
    snapped = {k: v.clone() for k, v in model.state_dict().items()}
    qat.snap_to_grid(model.image, FP)  # idempotent
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snapped.items())


def _native(depth: int = 2) -> SpikeCLIP:
    cfg = replace(get_config("spikeclip-native-small"), image_channels=(4, 6, 8, 12),
                  image_depth=depth, image_mlp_hidden=16)
    return random_init(cfg, 0)


def test_snapped_native_graph_is_the_exported_integer_model():
    """A graph with fan-in: every copy of a residual stream's term gets the same integers, the
    float weights lie on the grid that every reader uses, and every LIF's summed bias is just
    below its integer one (the stream's last LIF sums 5 synapses: its margin is 5 / (4 * 5))."""
    model = _native()
    shape = model.image.current(model.example_input("image")).shape[1:]
    assert _grid_distance(model.image, shape)[0] > 1e-4
    qat.enable(model.image, FP)
    trained = lambda: [m[0].weight.detach().clone() for m in model.image.stack  # noqa: E731
                       if isinstance(m, nn.Sequential)]
    fake = trained()
    qat.snap_to_grid(model.image, FP)
    assert qat.grid_error(model.image, FP) < 1e-3
    _assert_snapped(model.image, shape)
    _, ints = _lowered(model.image, shape)
    copies = {}
    for la in ints.layers:
        if "copy_of" in la.node.metadata:
            copies.setdefault(la.node.metadata["copy_of"], []).append(la.node.weight)
    assert max(len(c) for c in copies.values()) == 5  # the stream's first term: 5 readers
    for weights in copies.values():
        assert all(np.array_equal(w, weights[0]) for w in weights)
    # the fake quantizer's weights are the snapped ones (one group scale in both)
    assert all(torch.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(fake, trained()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    qat.snap_to_grid(model.image, FP)  # idempotent
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def _lif_biases(graph) -> dict:
    """Per LIF: its integer summed bias (chip units) and the integer weights of the synapses it
    sums, directly or through graded relays."""
    layers = run_side_layers(graph)
    summed = summed_synapses(layers)
    nodes = {la.name: la.node for la in layers}
    return {la.name: (sum(np.asarray(nodes[t].bias, np.float64) for t in summed[la.name]) * 64,
                      sorted(nodes[t].weight.tobytes() for t in summed[la.name]))
            for la in layers if isinstance(la.node, nir.LIF) and summed[la.name]}


def test_snapped_native_graph_streams_carry_the_same_integers():
    """The snapped native graph exported with graded relays: every LIF sums the same integer
    weights and the same integer bias as in the copies export (each term now holds its own
    bias, at one exponent for the stream), and each term runs once."""
    model = _native()
    shape = model.image.current(model.example_input("image")).shape[1:]
    qat.enable(model.image, FP)
    qat.snap_to_grid(model.image, FP)
    copies, graded = (_lowered(model.image, shape, form)[1] for form in ("copies", "graded"))
    assert any(isinstance(la.node, nir.Scale) for la in graded.layers)
    assert not any("copy_of" in la.node.metadata for la in graded.layers)
    want, got = _lif_biases(copies), _lif_biases(graded)
    assert set(want) == set(got) and len(want) >= 8
    for name, (bias, weights) in want.items():
        assert np.array_equal(got[name][0], bias), name
        assert got[name][1] == weights, name


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
    shape = (model.cfg.context_length * model.cfg.text_width,)
    assert _lowered(model.text, shape)[1].layer("lif1").node.metadata["loihi"]["vth"] == 11
    assert qat.grid_error(model.text, FP) < 1e-3
    _assert_snapped(model.text, shape)


def test_quantization_aware_checkpoint_exports_to_the_same_network(micro_ckpt, tmp_path):
    """Snapped weights and biases + the input grid: the Loihi export (integer units, read in
    float by the CPU reference) spikes exactly like the float export, layer by layer, on both
    encoders, also where the integer membrane lands exactly on the threshold (the snapped
    biases keep the float membrane just below it)."""
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
        assert a.any() and np.array_equal(a, b)
    tokens = torch.randint(0, 1000, (5, model.cfg.context_length)).numpy()
    text_current = cpu.host.text_current(tokens)
    for a, b in zip(cpu.run_chip("text", text_current), loihi.run_chip("text", text_current)):
        assert np.array_equal(a, b)


def test_host_op_outputs_go_on_the_chip_grid_and_their_lifs_take_the_exports_threshold():
    """former-micro's attention: 2 heads of 8 channels over 64 tokens, output bound
    0.125 * 8 * 64 = 64; tau 2: S = 2^floor(log2(32767 * 2 / 64)) = 512, so its current goes on
    the grid 1/256, clipped at +-32767 steps; with threshold 0.3 the export's vth is
    round(512 * 0.3) = 154, and the reading LIF's threshold becomes 154 / 512 = 0.30078125.
    quantize_inputs traces a copy in eval mode: a training model's BatchNorm statistics and each
    module's mode stay as they were."""
    from spikeclip_deploy.export import lower_encoder
    from spikeclip_deploy.nn.chip_graph import SpikeAttention

    model = SpikeCLIP(replace(get_config("spikeclip-former-micro"), attn_threshold=0.3)).train()
    frozen = model.image.encode[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qat.quantize_inputs(model, FP)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.image.stack[1][1].training and not frozen.training
    stack = model.image.stack
    attn = next(i for i, m in enumerate(stack) if isinstance(m, SpikeAttention))
    (reader,) = stack.consumers(attn)
    assert stack[attn].output_grid.grid == (256.0, -32767.0, 32767.0)
    assert stack[reader].v_threshold == 154 / 512
    y = stack[attn].output_grid(torch.tensor([0.3, -1000.0]))
    assert y.tolist() == [77 / 256, -32767 / 256]  # round(76.8) = 77; clipped
    graph = lower_encoder(model.eval(), "image", get_target("loihi"), attention="host")
    op = next(la for la in graph.layers if getattr(la.node, "op", "") == "SpikeAttention")
    (lif,) = graph.consumers(op.name)
    assert lif.node.metadata["loihi"]["vth"] == 154 == stack[reader].v_threshold * 512
    # on chip, the LIF reading the heads' counts takes the same threshold; their weight into
    # it is S c / tau = 512 * 0.125 / 2 = 32
    chip = lower_encoder(model.eval(), "image", get_target("loihi"))
    (lif,) = chip.consumers(f"{op.name}_h0_y")
    assert lif.node.metadata["loihi"]["vth"] == 154
    assert {chip.layer(i).node.weight for i in lif.inputs} == {32.0}


def test_a_checkpoint_stores_its_grids_and_one_of_an_earlier_version_is_upgraded(tmp_path):
    """The card holds the host currents' grids and the LIF thresholds quantize_inputs set
    (former-micro's attention reader: 154 / 512, as computed above), so a load needs no
    lowering; a quantization-aware card of an earlier version (none stored) is refused naming
    upgrade-checkpoint, which stores what quantize_inputs recomputes."""
    import json

    from spikeclip_deploy.checkpoint import load_model, save_model, sidecar
    from spikeclip_deploy.errors import CheckpointError
    from spikeclip_deploy.nn.chip_graph import InputGrid, SpikeAttention

    model = SpikeCLIP(replace(get_config("spikeclip-former-micro"), attn_threshold=0.3)).eval()
    qat.quantize_inputs(model, FP)
    path = tmp_path / "qa.safetensors"
    save_model(path, model, {"metrics": {"quantization_aware": {"hardware": "loihi2",
                                                                "input_grid": True}}})
    stack = model.image.stack
    attn = next(i for i, m in enumerate(stack) if isinstance(m, SpikeAttention))
    (reader,) = stack.consumers(attn)

    def grids(m: SpikeCLIP) -> dict:
        return {name: (x.grid if isinstance(x, InputGrid) else x.v_threshold)
                for name, x in m.named_modules() if isinstance(x, (InputGrid, MultiStepLIF))}

    loaded = load_model(str(path))[0]
    assert loaded.image.stack[reader].v_threshold == 154 / 512
    assert loaded.image.stack[attn].output_grid.grid == (256.0, -32767.0, 32767.0)
    assert grids(loaded) == grids(model) and grids(loaded) != grids(SpikeCLIP(model.cfg))
    card = json.loads(sidecar(path).read_text())
    del card["input_grids"]  # as an earlier version wrote it
    sidecar(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=f"upgrade-checkpoint {path}"):
        load_model(str(path))
    assert qat.upgrade_checkpoint(str(path)) == sidecar(path)
    assert grids(load_model(str(path))[0]) == grids(model)
    assert qat.upgrade_checkpoint(str(path)) is None  # stored already
    card = json.loads(sidecar(path).read_text())
    card["input_grids"]["thresholds"]["image.nope"] = 1.0
    sidecar(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="threshold 'image.nope' is not a positive number"):
        load_model(str(path))
