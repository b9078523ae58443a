"""Registered configs build with the paper's parameter counts and output shapes."""
import pytest
import torch

from spikeclip_deploy.config import get_config
from spikeclip_deploy.nn.spikeclip import SpikeCLIP, parameter_count


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return SpikeCLIP(get_config("spikeclip-vit4-384")).eval()


def test_paper_parameter_counts(paper):
    assert parameter_count(paper.image) == pytest.approx(9.5e6, rel=0.01)
    assert parameter_count(paper.text) == pytest.approx(47.4e6, rel=0.01)
    assert paper.text.encode.token.weight.numel() + paper.text.encode.position.numel() == \
        pytest.approx(25.3e6, rel=0.01)


def test_paper_output_shapes(paper):
    with torch.no_grad():
        img = paper.encode_image(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
        txt = paper.encode_text(torch.randint(0, 49408, (3, 20)))
    assert img.shape == (2, 512) and txt.shape == (3, 512)


def test_scratchclip_is_the_ann_counterpart():
    ann = SpikeCLIP(get_config("scratchclip-vit4-384"))
    assert parameter_count(ann.image) == pytest.approx(9.5e6, rel=0.01)
    assert not any("LIF" in type(m).__name__ for m in ann.modules())


def test_the_paper_encoder_lowers_with_attention_and_pools_on_the_host(paper):
    """Spikingformer-4-384 at 32x32, exported with --attention host --current-pool host: the two
    real-valued max pools (with the conv before each) and the four Q K^T V products run on the
    host; everything else on chip (by default the products and the pools go on chip too: every
    layer does, the pools as 4 levels of graded ReLU neurons of the separable tree)."""
    from spikeclip_deploy.export import lower_encoder
    from spikeclip_deploy.exchange.nirgraph import HostOpNode
    from spikeclip_deploy.targets import get_target

    chip = lower_encoder(paper, "image", get_target("loihi"))
    assert not [la for la in chip.layers if isinstance(la.node, HostOpNode)]
    assert all(la.placement == "chip" for la in chip.layers)
    pools = chip.meta["current_pool"]["layers"]
    assert [(p["channels"], p["grid"], p["tree"]) for p in pools.values()] == \
        [(192, [32, 32], "separable"), (384, [16, 16], "separable")]
    g = lower_encoder(paper, "image", get_target("loihi"), attention="host", current_pool="host")
    host = [la for la in g.layers if la.placement == "host"]
    ops = [la for la in host if isinstance(la.node, HostOpNode)]
    assert [la.node.op for la in ops] == ["HostMaxPool"] * 2 + ["SpikeAttention"] * 4
    assert [la.name for la in host if la not in ops] == ["conv1", "conv2"]  # 96->192, 192->384
    attn = ops[2].node
    # per step: Q K^T (64 x 64 x 48 per head, 8 heads) then (Q K^T) V, the same again
    assert attn.metadata["macs"] == 2 * 64 * 64 * 384
    # 0.125 * (48 channels per head) * 64 tokens; grid 0.125 with scale 2^k/tau: exact
    assert attn.metadata["bound"] == 0.125 * 48 * 64
    assert attn.metadata["output_quantization"] == {"scale": 64.0, "limit": 32767, "exact": True}
    # pool 1: conv 96->192 at 32x32 (3x3), then 3x3 max over 16x16 outputs
    assert ops[0].node.metadata["macs"] == 192 * 32 * 32 * 96 * 9 + 192 * 16 * 16 * 9
    assert all(la.placement == "chip" for la in g.layers if la not in host)
    assert "self-attention" in g.meta["partition"][ops[2].name]["reason"]
