"""The Loihi-native Spikingformer: sizes, chip-graph structure, forward semantics."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeclip_deploy.config import ModelConfig, get_config
from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.nn.chip_graph import HOST_INPUT, SpikeMaxPool
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.nn.spikeclip import SpikeCLIP
from spikeclip_deploy.nn.spikingformer import build_spikingformer

NATIVE = ("spikeclip-vit4-384-native", "spikeclip-native-small")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hand_count(cfg: ModelConfig) -> tuple[int, int]:
    """Image and text parameters from the config alone (BN: weight + bias; no conv biases)."""
    c, d, h, k, e, t = (cfg.image_channels, cfg.image_channels[-1], cfg.image_mlp_hidden,
                        cfg.token_mixer_kernel, cfg.embed_dim, cfg.time_steps)
    image = 3 * c[0] * 9 + 2 * c[0]  # host stem
    image += sum(a * b * 9 + 2 * b for a, b in zip(c[:-1], c[1:]))  # chip tokenizer
    image += cfg.image_depth * (d * k * k + 2 * d + d * h + 2 * h + h * d + 2 * d)  # blocks
    image += t + d * e + e  # TDW + projection
    lw = cfg.context_length * cfg.text_width
    text = (cfg.vocab_size * cfg.text_width + lw + lw * cfg.text_hidden + cfg.text_hidden
            + t + cfg.text_hidden * e + e)
    return image, text


@pytest.mark.parametrize("name", NATIVE)
def test_parameter_counts(name):
    cfg = get_config(name)
    with torch.device("meta"):
        model = SpikeCLIP(cfg)
    assert (n_params(model.image), n_params(model.text)) == hand_count(cfg)


def test_paper_sized_counts_pinned():
    image, text = hand_count(get_config("spikeclip-vit4-384-native"))
    # stem 1,392 + tokenizer 41,664 + 166,272 + 664,320 + 4 blocks x 1,187,712 + readout 197,124
    assert image == 1392 + 41664 + 166272 + 664320 + 4 * 1187712 + 197124 == 5_821_620
    # tokens 49408 x 512 + positions 20 x 512 + Linear 10240 -> 2048 + TDW + projection
    assert text == 49408 * 512 + 10240 + (10240 * 2048 + 2048) + 4 + (2048 * 512 + 512) \
        == 47_329_796


def test_native_small_text_is_spikeclip_tiny_text():
    small, tiny = get_config("spikeclip-native-small"), get_config("spikeclip-tiny")
    text = ("embed_dim", "time_steps", "tau", "v_threshold", "tdw", "vocab_size", "context_length",
            "text_width", "text_hidden", "text_arch")
    assert {f: getattr(small, f) for f in text} == {f: getattr(tiny, f) for f in text}
    a, b = SpikeCLIP(small).text.state_dict(), SpikeCLIP(tiny).text.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def _small(depth: int = 2, kernel: int = 3) -> ModelConfig:
    return replace(get_config("spikeclip-native-small"), image_channels=(4, 6, 8, 12),
                   image_depth=depth, image_mlp_hidden=16, token_mixer_kernel=kernel)


def test_graph_structure():
    cfg = _small(depth=3, kernel=5)
    stack = SpikeCLIP(cfg).image.stack
    kinds = [type(layer) for layer in stack]
    syn = [i for i, layer in enumerate(stack) if isinstance(layer, nn.Sequential)]
    assert kinds.count(SpikeMaxPool) == 2 and len(syn) == 3 + 3 * cfg.image_depth
    for i, layer in enumerate(stack):  # synapses read one LIF or pool output, pools one LIF's
        if not isinstance(layer, MultiStepLIF):
            allowed = (MultiStepLIF, SpikeMaxPool) if i in syn else (MultiStepLIF,)
            assert len(stack.inputs[i]) == 1 and isinstance(stack[stack.inputs[i][0]], allowed)
    assert stack.inputs[0] == (HOST_INPUT,)
    # the two pools stand after the LIFs before the last two tokenizer convs
    pools = [i for i, layer in enumerate(stack) if isinstance(layer, SpikeMaxPool)]
    assert [stack.inputs[syn[1]], stack.inputs[syn[2]]] == [(pools[0],), (pools[1],)]
    assert stack.inputs[syn[0]] == (0,) and isinstance(stack[0], MultiStepLIF)
    x = [syn[2]]  # the residual stream's terms
    for b in range(cfg.image_depth):
        dw, up, down = syn[3 + 3 * b:6 + 3 * b]
        conv = stack[dw][0]
        assert (conv.groups, conv.kernel_size, conv.padding) == (12, (5, 5), (2, 2))
        assert stack.inputs[stack.inputs[dw][0]] == tuple(x)
        x.append(dw)
        assert stack.inputs[stack.inputs[up][0]] == tuple(x)
        assert stack.inputs[stack.inputs[down][0]] == (up,)
        x.append(down)
    assert isinstance(stack[-1], MultiStepLIF) and stack.inputs[-1] == tuple(x)
    assert len(stack) == x[-1] + 2


def test_fan_in_is_the_materialised_residual_stream():
    """The chip graph equals the equations evaluated with x materialised on the host."""
    torch.manual_seed(0)
    enc = SpikeCLIP(_small(depth=2)).image.eval()
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial affine BN, so every term matters
            m.weight.data.uniform_(3.0, 6.0)
            m.bias.data.uniform_(-0.5, 0.5)
    s = enc.stack
    syn = [layer for layer in s if isinstance(layer, nn.Sequential)]
    lif, pool = MultiStepLIF(2.0, 1.0), SpikeMaxPool(3, 2, 1)
    td = lambda f, v: f(v.flatten(0, 1)).unflatten(0, v.shape[:2])  # noqa: E731
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        z = enc.current(images).unsqueeze(0).expand(4, -1, -1, -1, -1)
        z = td(syn[0], lif(z))
        z = td(syn[1], td(pool, lif(z)))
        x = td(syn[2], td(pool, lif(z)))
        for b in range(2):
            dw, up, down = syn[3 + 3 * b:6 + 3 * b]
            x = x + td(dw, lif(x))
            x = x + td(down, lif(td(up, lif(x))))
        want = lif(x)
        lifs = enc.run_stack(enc.current(images))
    assert all(0 < float(s.mean()) < 0.5 for s in lifs)  # every LIF layer is active
    assert want.shape == (4, 3, 12, 8, 8) and not torch.equal(want[:, 0], want[:, 1])
    assert torch.equal(lifs[-1], want)


def test_token_mixer_mixes_neighbouring_tokens_per_channel():
    enc = SpikeCLIP(_small(depth=1, kernel=3)).image
    dw = [m for m in enc.stack if isinstance(m, nn.Sequential)][3][0]
    spike = torch.zeros(1, 12, 8, 8)
    spike[0, 5, 3, 3] = 1.0
    with torch.no_grad():
        out = dw(spike)
    # a spike at token (3, 3) of channel 5 reaches its 3x3 neighbours of channel 5 only, with
    # the kernel mirrored (convolution layers cross-correlate)
    assert torch.equal(out[0, 5, 2:5, 2:5], dw.weight[5, 0].flip(0, 1))
    out[0, 5, 2:5, 2:5] = 0
    assert not out.any()


@pytest.mark.parametrize("name", NATIVE)
def test_forward_embeddings(name):
    torch.manual_seed(0)
    model = SpikeCLIP(get_config(name)).eval()
    cfg = model.cfg
    with torch.no_grad():
        img = model.encode_image(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
        txt = model.encode_text(torch.randint(0, cfg.vocab_size, (3, cfg.context_length)))
    assert img.shape == (2, cfg.embed_dim) and txt.shape == (3, cfg.embed_dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    spikes = model.image.run_stack(model.image.current(
        model.normalize(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))))[-1]
    assert spikes.shape == (cfg.time_steps, 2, cfg.image_channels[-1], 8, 8)


def test_token_mixer_kernel_must_be_odd():
    with pytest.raises(ConfigError, match="token_mixer_kernel"):
        ModelConfig.from_dict({"name": "x", "embed_dim": 8, "token_mixer_kernel": 4})


def test_spikingformer_spike_pool_keeps_names_and_pools_spikes():
    kw = dict(channels=(4, 8, 12, 16), depth=1, heads=2, mlp_hidden=16, embed_dim=8,
              time_steps=4, tau=2.0, v_threshold=1.0, attn_threshold=0.5, tdw=True)
    torch.manual_seed(0)
    orig, native = build_spikingformer(**kw), build_spikingformer(**kw, spike_pool=True)
    native.load_state_dict(orig.state_dict())  # strict: same names and shapes
    # the first pooled stage: orig conv, host max-pool, LIF; native conv, LIF, spike max-pool
    assert [type(m).__name__ for m in list(orig.stack)[3:6]] == ["Sequential", "HostMaxPool", "MultiStepLIF"]
    assert [type(m).__name__ for m in list(native.stack)[3:6]] == ["Sequential", "MultiStepLIF", "SpikeMaxPool"]
    current = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        o, n = orig.stack(current, 4), native.stack(current, 4)
        assert torch.equal(o[3], n[3])  # the same conv output
        lif = MultiStepLIF(2.0)
        want_native = F.max_pool2d(lif(n[3]).flatten(0, 1), 3, 2, 1).unflatten(0, (4, 2))
        want_orig = MultiStepLIF(2.0)(F.max_pool2d(o[3].flatten(0, 1), 3, 2, 1).unflatten(0, (4, 2)))
        assert torch.equal(n[5], want_native) and torch.equal(o[5], want_orig)
        assert not torch.equal(n[5], o[5])  # pooling spikes is not pooling currents
        assert torch.isfinite(native(torch.randn(2, 3, 32, 32))).all()


def test_the_native_graph_lowers_and_the_cpu_reference_equals_the_float_model(tmp_path,
                                                                            image_spikes):
    """The shipped native-small (fan-in residual stream, spike pooling, depthwise mixer):
    exported for the cpu target, written with stock nir, read back, its CPU reference spikes
    equal the float model's in every layer and step."""
    from spikeclip_deploy.checkpoint import load_model

    model, _, _ = load_model("spikeclip-native-small-cifar10")
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 3, 32, 32),
                                                                dtype=np.uint8))
    current, want = image_spikes.float_model(model, images)
    got = image_spikes.cpu_reference(model, "cpu", current, tmp_path)
    assert len(got) == len(want) == 12
    for k, (g, w) in enumerate(zip(got, want)):
        assert 0 < w.mean() < 1 and np.array_equal(g, w), k


def test_chip_spikes_are_the_lowered_graphs_lifs(image_spikes):
    """One spike tensor per LIF of the lowered graph (a spike pool's OR LIF included), in its
    order and shape; the features equal ``encode_image``'s."""
    import nir

    from spikeclip_deploy.export import lower_encoder
    from spikeclip_deploy.targets import get_target

    torch.manual_seed(0)
    model = SpikeCLIP(_small()).eval()
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32),
                                                                dtype=np.uint8))
    with torch.no_grad():
        feats, spikes = model.encode_image_spikes(images)
        assert torch.equal(feats, model.encode_image(images))
    graph = lower_encoder(model, "image", get_target("cpu"))
    shapes = [tuple(np.asarray(la.node.tau).shape) for la in graph.layers
              if isinstance(la.node, nir.LIF)]
    # stem, two tokenizer convs with their pools' ORs; 3 per block; the last
    assert [tuple(s.shape[2:]) for s in spikes] == shapes and len(shapes) == 5 + 2 * 3 + 1
    _, want = image_spikes.float_model(model, images)
    assert all(np.array_equal(s.transpose(0, 1).numpy(), w) for s, w in zip(spikes, want))
