"""The shipped base checkpoints (data/checkpoints): manifest integrity, offline load, one RecA step, one I2T
step, T2I samples and captions for every architecture that has a base. The scores themselves are measured by
`python -m reca_nb.build.pretrain` and recorded in MANIFEST.json / data/README.md; here we re-check that a base
is far above the prompt-ignoring chance score on a small prompt set."""
import pytest
import torch

from reca_nb.models import registry
from reca_nb.evaluation import geneval
from reca_nb.build.pretrain import sha256
from reca_nb.recipe import preset

SHIPPED = sorted(a for a in registry.ARCHS if registry.has_base(a))


def test_every_shipped_base_is_in_the_manifest_with_its_hash():
    assert len(SHIPPED) == len(registry.ARCHS) == 6  # every architecture has a base
    for arch in SHIPPED:
        entry = registry.manifest(arch)
        path = registry.base_path(arch)
        assert entry["sha256"] == sha256(path), f"{arch}: file differs from MANIFEST.json"
        assert entry["bytes"] == path.stat().st_size <= 10_500_000  # each base stays small
        assert entry["scores"]["t2i"]["overall"] >= 0.33 and entry["scores"]["i2t"]["exact"] >= 0.9
        assert registry.base_fingerprint(arch) == entry["sha256"]
        assert registry.image_size(arch) == entry["model_config"]["image_size"] == 32
    assert registry.manifest("janus-pro") is None and registry.image_size("janus-pro") == 32  # not shipped


@pytest.mark.parametrize("arch", SHIPPED)
def test_base_loads_trains_one_step_samples_and_captions(arch):
    torch.manual_seed(0)
    model = registry.load_base(arch)
    recipe = preset(arch, "reca")
    from reca_nb.world.shapes import ShapeWorld

    world = ShapeWorld(4, seed=7, kind="random", size=model.image_size)
    images = world.images()
    und = recipe.und_transform(images, und_size=model.und_size)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    captions = [world[i]["description"] for i in range(4)]
    for step in (lambda: model.reca_loss(und, ["Describe the image."] * 4, images),
                 lambda: model.i2t_loss(und, captions)):
        loss = step()
        assert torch.isfinite(loss) and loss.item() > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model.sample(["a red circle", "two blue squares"], generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, model.image_size, model.image_size) and 0 <= out.min() and out.max() <= 1
    caps = model.caption(und[:2])
    assert len(caps) == 2 and all(isinstance(c, str) and c for c in caps)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SHIPPED)
def test_base_is_far_above_chance(arch):
    model = registry.load_base(arch).eval()
    t2i = geneval.evaluate_t2i(model, 10, progress=False)  # 60 held-out prompts
    i2t = geneval.evaluate_i2t(model, n=40, progress=False)
    chance = geneval.chance_t2i(geneval.geneval_prompts(10, 10_000))["overall"]
    assert t2i["overall"] >= chance + 0.08, (t2i, chance)
    assert i2t["exact"] >= 0.85, i2t
