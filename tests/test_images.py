import numpy as np
import pytest
import torch
from PIL import Image

from reca_nb.world.images import as_image_batch
from reca_nb.world.shapes import ShapeWorld, render


def _check(x, B, H, W=None):
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (B, 3, H, W or H)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_pil_and_list_of_pil_match_the_tensor():
    ds = ShapeWorld(3, seed=1)
    ref = ds.images()  # (3, 3, 32, 32)
    pils = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in ref]
    one = as_image_batch(pils[0])
    _check(one, 1, 32)
    batch = as_image_batch(pils)
    _check(batch, 3, 32)
    assert torch.allclose(batch, ref, atol=1 / 255 + 1e-6)


def test_numpy_layouts_and_dtypes():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    _check(as_image_batch(u8), 2, 16)
    want = torch.tensor(u8[1, 3, 5] / 255.0, dtype=torch.float32)
    assert torch.allclose(as_image_batch(u8)[1, :, 3, 5], want)
    _check(as_image_batch(u8[0]), 1, 16)  # HWC
    _check(as_image_batch(u8[0] / 255.0), 1, 16)  # float64 HWC
    g = as_image_batch(u8[0, :, :, 0])  # HW grey -> RGB
    _check(g, 1, 16)
    assert torch.equal(g[0, 0], g[0, 2])


def test_torch_layouts():
    x = torch.rand(3, 12, 12)
    assert torch.equal(as_image_batch(x)[0], x)
    _check(as_image_batch(torch.rand(5, 3, 8, 8)), 5, 8)
    grey = as_image_batch(torch.rand(8, 8))
    _check(grey, 1, 8)
    assert torch.equal(grey[0, 0], grey[0, 1])
    _check(as_image_batch(torch.rand(1, 8, 8)), 1, 8)
    _check(as_image_batch((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8)), 2, 8)


def test_alpha_and_palette_composite_on_black():
    rgba = torch.zeros(4, 8, 8)
    rgba[0] = 1.0  # red
    rgba[3, :, :4] = 1.0  # left half opaque, right half transparent
    out = as_image_batch(rgba)[0]
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(out[:, 0, 7], torch.zeros(3))
    half = as_image_batch(Image.new("RGBA", (8, 8), (200, 100, 0, 128)))
    assert torch.allclose(half[0, :, 0, 0], torch.tensor([200, 100, 0]) / 255 * 128 / 255, atol=1e-3)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 200, 30] + [0] * 765)
    assert torch.allclose(as_image_batch(pal)[0, :, 0, 0], torch.tensor([10, 200, 30]) / 255.0)
    pal.info["transparency"] = 0  # palette entry 0 transparent -> black
    assert torch.equal(as_image_batch(pal)[0, :, 0, 0], torch.zeros(3))
    _check(as_image_batch(Image.new("LA", (8, 8), (255, 255))), 1, 8)
    _check(as_image_batch(Image.new("L", (8, 8), 77)), 1, 8)


def test_resize_down_is_area_average_and_up_is_bilinear():
    x64 = ShapeWorld(2, seed=3, size=64).images()
    x32 = as_image_batch(x64, size=32)
    _check(x32, 2, 32)
    assert torch.allclose(x32, x64.view(2, 3, 32, 2, 32, 2).mean((3, 5)), atol=1e-6)
    _check(as_image_batch(x32, size=48), 2, 48)
    _check(as_image_batch(torch.rand(3, 1, 1), size=8), 1, 8)  # tiny is fine when resized
    mixed = as_image_batch([render([], 32), render([], 64)], size=16)  # lists of different sizes
    _check(mixed, 2, 16)
    _check(as_image_batch(torch.rand(3, 8, 12)), 1, 8, 12)  # non-square kept when no size is asked


@pytest.mark.parametrize("bad, match", [
    ([], "empty"),
    (torch.zeros(0, 3, 8, 8), "empty"),
    (torch.zeros(1, 2, 3, 4, 5), "channels-first"),
    (np.zeros((2, 3, 4, 5, 6)), "channels-last"),
    (torch.zeros(2, 8, 8), "channels"),
    (np.zeros((8, 8, 5)), "channels"),
    (np.zeros((3, 8, 8)), "channels-last"),  # channels-first numpy: the hint names the convention
    (torch.full((3, 8, 8), float("nan")), "NaN"),
    (torch.full((3, 8, 8), float("inf")), "NaN or inf"),
    (torch.rand(3, 8, 8) * 255, "255"),
    (torch.rand(3, 8, 8) * 2 - 1, r"\[-1, 1\]"),
    (torch.zeros(3, 1, 1), "at least 4x4"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), "uint8"),
    ([torch.zeros(3, 8, 8), torch.zeros(3, 16, 16)], "different sizes"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        as_image_batch(bad)


def test_non_square_rejected_when_a_square_size_is_required():
    with pytest.raises(ValueError, match="non-square"):
        as_image_batch(torch.rand(3, 8, 12), size=8)


def test_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match="PIL image"):
        as_image_batch("image.png")


def test_does_not_modify_input():
    x = torch.rand(2, 3, 8, 8) * 1.05  # slightly above 1: clamped in the output only
    before = x.clone()
    out = as_image_batch(x)
    assert torch.equal(x, before) and out.max() <= 1.0
