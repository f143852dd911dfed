"""The frozen CLIP and autoencoder that Harmon, BAGEL and OpenUni share (`models.common.FrozenParts`), on the
shipped bases with the shipped encoders (data/): never part of a model's weights, read without gradient, and
the same read for every model that projects CLIP tokens."""
import pytest
import torch

from reca_nb.models import registry
from reca_nb.models.common import FrozenParts
from reca_nb.world.shapes import ShapeWorld

ARCHS = [a for a in registry.available() if issubclass(registry.get_class(a), FrozenParts)]


@pytest.fixture(scope="module")
def scenes():
    ds = ShapeWorld(4, seed=3)
    items = [ds[i] for i in range(4)]
    return torch.stack([x["image"] for x in items]), [x["prompt"] for x in items], [x["description"] for x in items]


def test_the_archs_that_share_frozen_parts():
    assert set(ARCHS) == {"harmon", "bagel", "openuni"}


@pytest.mark.parametrize("arch", ARCHS)
def test_shipped_base_with_shipped_encoders(arch, scenes):
    img, prompts, captions = scenes
    m = registry.load_base(arch).eval()
    assert not any(k.startswith(("clip", "ae", "_frozen")) for k in m.state_dict())  # loaded, never owned
    und = torch.nn.functional.interpolate(img, size=m.config.und_size, mode="bilinear", antialias=True)
    with torch.no_grad():
        for loss in (m.generation_loss(img, prompts), m.i2t_loss(und, captions),
                     m.reca_loss(und, ["describe the image"] * 4, img)):
            assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
        assert m.sample(prompts[:2], steps=2).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("arch", ["bagel", "openuni"])
def test_clip_features_are_what_the_understanding_side_projects(arch, scenes):
    img = scenes[0]
    m = registry.load_base(arch)
    und = torch.nn.functional.interpolate(img, size=m.config.und_size, mode="bilinear", antialias=True)
    feats = m.clip_features(und)
    assert feats.dtype == torch.float32 and not feats.requires_grad
    assert feats.shape[0] == 4 and feats.shape[-1] == m.clip.width
    project = m.connector if arch == "bagel" else m.projector
    assert torch.equal(m.understanding_embedding(und), project(feats))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, h, w\)"):
        m.clip_features(und[:, :1])
