import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from spikeclip_deploy.images import fit_image


def _ramp(width: int, height: int) -> Image.Image:
    """R = 3 x column, G = 3 x row, B = 5."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([3 * x, 3 * y, np.full_like(x, 5)], -1).astype(np.uint8))


@pytest.mark.parametrize("width, height, left, top", [
    (67, 32, 18, 0),  # the shorter side is already 32: no resampling; (67 - 32) / 2 = 17.5 -> 18
    (32, 35, 0, 2),  # (35 - 32) / 2 = 1.5 -> 2
    (64, 32, 16, 0),
])
def test_centre_crop_of_an_image_with_the_right_shorter_side(width, height, left, top):
    out = fit_image(_ramp(width, height), 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    j = torch.arange(32)
    assert torch.equal(out[0], (3 * (left + j)).to(torch.uint8).expand(32, 32))
    assert torch.equal(out[1], (3 * (top + j)).to(torch.uint8)[:, None].expand(32, 32))
    assert (out[2] == 5).all()


def test_upscaled_step_keeps_its_flat_halves_and_symmetry():
    """16x8: red columns 0-7, blue 8-15. Shorter side 8 -> 32 (x4): 64x32, boundary at column
    32, centre crop columns 16-47. Bicubic reaches 2 source pixels = 8 output pixels, so output
    columns <= 25 are pure red and >= 38 pure blue (crop columns <= 9, >= 22)."""
    src = np.zeros((8, 16, 3), np.uint8)
    src[:, :8, 0] = 200
    src[:, 8:, 2] = 200
    out = fit_image(Image.fromarray(src), 32)
    assert (out[:, :, :10] == torch.tensor([200, 0, 0], dtype=torch.uint8)[:, None, None]).all()
    assert (out[:, :, 22:] == torch.tensor([0, 0, 200], dtype=torch.uint8)[:, None, None]).all()
    assert torch.equal(out[0], out[2].flip(-1))  # mirror image about the crop's centre
    assert (out == out[:, :1]).all()  # every row alike
    assert 0 < out[0, 0, 15] < 200  # the step is blended, not copied


def test_matches_clip_preprocessing_and_keeps_model_size_images():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 40, 3), dtype=np.uint8))  # 40 wide, 64 high
    clip = transforms.Compose([transforms.Resize(32, transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(32), transforms.PILToTensor()])
    assert torch.equal(fit_image(img, 32), clip(img))
    same = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert torch.equal(fit_image(Image.fromarray(same), 32),
                       torch.from_numpy(same).permute(2, 0, 1))
    grey = Image.fromarray(np.full((10, 20), 77, np.uint8))  # mode L -> 3 equal channels
    assert (fit_image(grey, 8) == 77).all()
