"""GenEval-mini detector robustness: four ways a miniature generator's images differ from clean renders.

Each test builds images with reca_nb.world.shapes on held-out seeds (9xx_xxx; fit_scorer trains on >= 7_000_000 and
the eval prompts use 10_000 / 20_000), fixes the right label from how the image was made, and asserts the
fraction of images the shipped detector reads exactly right. The right labels, decided before any score:
  * a palette-coloured fragment much smaller than any rendered shape is not an object: its cell is empty;
  * a square with rounded corners is a square;
  * an object moved 4 px off its cell centre (32 px image, 16 px cells) is still in its cell, with its class;
  * an image filled with one palette colour holds no object: all cells empty.
GenEval's own detector (a COCO-trained Mask2Former with a confidence threshold) is robust to all four: it
ignores specks, names a rounded box by its shape, localises by the object not by a fixed grid position, and
reports nothing on a flat colour field. A faithful GenEval-mini detector must do the same.
"""
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from reca_nb.evaluation import geneval
from reca_nb.world import shapes

N = 120  # images per test: a pass rate of 0.9 is then measured to about +-0.03


def _truth(objs):
    return geneval.slot_labels(objs)


def _pass_rate(images, truths) -> float:
    found = geneval.detect(torch.stack(images))
    return float(np.mean([geneval.slot_labels(f) == t for f, t in zip(found, truths)]))


def _scenes(seed):
    rng = np.random.default_rng(seed)
    return [shapes.random_scene(rng) for _ in range(N)], rng


def _palette(rng):
    return shapes.COLORS[shapes.COLOR_NAMES[rng.integers(len(shapes.COLOR_NAMES))]]


def _down(img: Image.Image) -> torch.Tensor:
    """A 128 px canvas -> the 32 px image (box-filtered, as shapes.render anti-aliases)."""
    return shapes.to_tensor(img.resize((32, 32), Image.Resampling.BOX))


def test_small_fragments_are_not_objects():
    # Specks of 1.3-3.2 px (0.08-0.2 of a 16 px cell) in cells with no object; the smallest rendered shape is
    # ~9 px across, so a fragment is at most a third of any object's size and a tenth of its area.
    # A faithful detector reads such cells as empty in nearly every image: threshold 0.9.
    scenes, rng = _scenes(930_001)
    images, truths = [], []
    for i, sc in enumerate(scenes):
        img = shapes.render(sc, 128, jitter_seed=[930_001, i])
        draw = ImageDraw.Draw(img)
        used = {o.slot for o in sc.objects}
        for k in (k for k in range(4) if k not in used):
            for _ in range(int(rng.integers(1, 3))):
                d = rng.uniform(0.08, 0.2) * 64  # fragment size in 128 px canvas units (cell = 64)
                cx = (k % 2) * 64 + rng.uniform(12, 52)
                cy = (k // 2) * 64 + rng.uniform(12, 52)
                if rng.random() < 0.5:
                    draw.ellipse([cx - d / 2, cy - d / 2 * rng.uniform(0.5, 1), cx + d / 2, cy + d / 2],
                                 fill=_palette(rng))
                else:
                    a = rng.uniform(0, 2 * math.pi)
                    draw.polygon([(cx + d / 2 * math.cos(a + t), cy + d / 2 * math.sin(a + t))
                                  for t in (0, 2.2, 4.1)], fill=_palette(rng))
        images.append(_down(img))
        truths.append(_truth(sc.objects))
    assert sum(4 - len(sc.objects) for sc in scenes) > 100  # enough fragment cells to measure
    rate = _pass_rate(images, truths)
    assert rate >= 0.9, rate


def test_rounded_squares_are_squares():
    # Every square drawn with its corners rounded to 0.25-0.5 of its half-side (a corner radius of 1/8 to 1/4 of
    # its side, like an app icon): each edge stays straight over at least half its length, so it is a square,
    # not a circle (which would be a corner radius of the whole half-side). Other objects render as usual.
    # A faithful detector reads the whole scene right in nearly every image: threshold 0.9.
    rng = np.random.default_rng(930_002)
    images, truths = [], []
    while len(images) < N:
        sc = shapes.random_scene(rng)
        squares = [o for o in sc.objects if o.shape == "square"]
        if not squares:
            continue
        i = len(images)
        img = shapes.render([o for o in sc.objects if o.shape != "square"], 128, jitter_seed=[930_002, i])
        draw = ImageDraw.Draw(img)
        for o in squares:
            jx, jy, jr = rng.uniform(-1, 1, 3)
            cx, cy = (o.col + 0.5 + 0.06 * jx) * 64, (o.row + 0.5 + 0.06 * jy) * 64
            h = 0.88 * (0.36 + 0.03 * jr) * 64  # shapes.render's half-side
            draw.rounded_rectangle([cx - h, cy - h, cx + h, cy + h], radius=rng.uniform(0.25, 0.5) * h,
                                   fill=shapes.COLORS[o.color])
        images.append(_down(img))
        truths.append(_truth(sc.objects))
    rate = _pass_rate(images, truths)
    assert rate >= 0.9, rate


@pytest.mark.parametrize("diagonal", [False, True], ids=["axis", "diagonal"])
def test_objects_shifted_4px_stay_in_their_cell(diagonal):
    # The whole layout (objects centred in their cells, no jitter) moved 4 px, a quarter of a 16 px cell, along
    # an axis or along a diagonal (4 px on each axis), black fill. Every object's centre stays inside its own
    # cell, 4 px from the cell border, so every cell keeps its label; at most ~2 px of the ~11 px objects on the
    # leading side leave the image, which leaves their shape plain. A faithful detector (GenEval's localises
    # objects wherever they are) reads the whole scene right in nearly every image: threshold 0.9.
    scenes, rng = _scenes(930_003 + diagonal)
    images, truths = [], []
    for sc in scenes:
        x = shapes.to_tensor(shapes.render(sc, 128, jitter_seed=None))  # (3, 128, 128), 4 canvas px per px
        if diagonal:
            dy, dx = int(rng.choice([-16, 16])), int(rng.choice([-16, 16]))
        else:
            dy, dx = [(16, 0), (-16, 0), (0, 16), (0, -16)][rng.integers(4)]
        shifted = torch.zeros_like(x)
        ys, yd = (slice(0, 128 - dy), slice(dy, 128)) if dy >= 0 else (slice(-dy, 128), slice(0, 128 + dy))
        xs, xd = (slice(0, 128 - dx), slice(dx, 128)) if dx >= 0 else (slice(-dx, 128), slice(0, 128 + dx))
        shifted[:, yd, xd] = x[:, ys, xs]
        images.append(torch.nn.functional.avg_pool2d(shifted[None], 4)[0])
        truths.append(_truth(sc.objects))
    rate = _pass_rate(images, truths)
    assert rate >= 0.9, rate


def test_uniform_palette_colour_is_no_object():
    # Each palette colour as a flat field, at 0.6-1.0 brightness with a little pixel noise (a generator that
    # collapsed to one colour). Nothing in it has a shape, so every cell is empty; a faithful detector reads
    # all of them empty: threshold 0.95.
    rng = np.random.default_rng(930_005)
    g = torch.Generator().manual_seed(930_005)
    images = []
    for i in range(N):
        rgb = torch.tensor(shapes.COLORS[shapes.COLOR_NAMES[i % len(shapes.COLORS)]]) / 255.0
        x = rgb.view(3, 1, 1) * rng.uniform(0.6, 1.0) + torch.randn(3, 32, 32, generator=g) * 0.02
        images.append(x.clamp(0, 1).float())
    rate = _pass_rate(images, [[0, 0, 0, 0]] * N)
    assert rate >= 0.95, rate


# ----------------------------------------------------------------------------- the training data behind it

def test_training_specks_stay_small_and_in_empty_cells():
    from reca_nb.build.fit_scorer import add_fragments

    g = torch.Generator().manual_seed(930_010)
    y = torch.randint(0, geneval.N_CLASSES, (64, 4), generator=g) * (torch.rand(64, 4, generator=g) < 0.5)
    x = add_fragments(torch.zeros(64, 3, 32, 32), y, 1.0, g)
    cells = (x.amax(1) > 0.2).view(64, 2, 16, 2, 16).sum((2, 4)).view(64, 4)  # painted pixels per cell
    assert (cells[y != 0] == 0).all()  # occupied cells untouched (their label stays right)
    assert (cells[y == 0] > 0).float().mean() > 0.9  # p=1: nearly every empty cell gets a speck
    assert cells.max() <= 32  # two specks of <= ~16 px each (soft edge included); a shape covers 55-65 px
