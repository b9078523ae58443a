"""Registered configs build with the paper's parameter counts and output shapes."""
import pytest
import torch

from spikeclip_deploy.config import get_config
from spikeclip_deploy.errors import LoweringError
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


def test_export_refuses_spiking_self_attention(paper):
    from spikeclip_deploy.export import lower_encoder
    from spikeclip_deploy.targets import get_target

    with pytest.raises(LoweringError, match="self-attention"):
        lower_encoder(paper, "image", get_target("loihi"))
