import inspect
from dataclasses import fields, replace

import pytest
import torch

from reca_nb.models import registry
from reca_nb.recipe import (DECOUPLED, PRESETS, REAL_UND_RES, SHARED, Recipe, gaussian_blur, mini_und_res,
                            preset)
from reca_nb.world.shapes import ShapeWorld


def _images(n=4, size=32):
    return ShapeWorld(n, seed=3, size=size).images()


def test_registry_covers_every_arch():
    assert set(REAL_UND_RES) == set(SHARED) | set(DECOUPLED) == set(registry.ARCHS)


def test_cards_are_the_table_in_order_and_real_models_stay_out_of_the_sweep():
    assert SHARED + DECOUPLED == registry.MINIS == tuple(registry.ARCHS) == registry.available()
    assert SHARED == ("showo-vq", "showo-clip", "janus", "harmon") and DECOUPLED == ("bagel", "openuni")
    for name in registry.MINIS:
        card = registry.card(name)
        assert not card.real and card.paper_res and card.paper_t2i and set(card.scaled_optimiser) == {
            "lr", "betas", "weight_decay", "schedule", "warmup", "steps"}
        assert preset(name, "pretrain").steps == card.pretrain_steps
    assert registry.card("janus").pretrain_steps == 2400 and registry.card("bagel").pretrain_steps == 1200
    for name in ("janus-pro", "openuni-real"):
        assert registry.card(name).real and name not in registry.available()
        with pytest.raises(ValueError, match="unknown arch"):
            registry.check(name)
    assert registry.card("openuni-real").paradigm == "decoupled"


def test_real_model_presets_are_the_recipes_their_users_build():
    # Janus-Pro: LoRA r=16 + full generation head, RecA + I2T 1:1, no downscale (SigLIP in, VQ out)
    assert preset("janus-pro") == Recipe(
        arch="janus-pro", stage="reca", und_res=0, freeze="lora", lora_r=16, i2t_ratio=1.0, lambda_reca=1.0,
        lambda_i2t=1.0, lambda_t2i=0.0, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0, warmup=50,
        schedule="cosine", steps=1000, batch=4, eval_every=0, save_every=0, keep_ckpts=1, log_every=10)
    with pytest.raises(ValueError, match="only preset is 'reca'"):
        preset("janus-pro", "pretrain")
    # notebook 07 section 6, on a GPU (STEPS 300, BATCH 4) and offline (tiny: STEPS 40, lr 1e-3)
    for steps, batch, tiny in ((300, 4, False), (40, 4, True)):
        inline = Recipe(arch="openuni-real", freeze="understanding", lambda_i2t=0.0, i2t_ratio=0.0,
                        steps=max(4, steps // 4), batch=batch, lr=1e-3 if tiny else 1e-5, warmup=1,
                        log_every=1, save_every=0, eval_every=0)
        ours = preset("openuni-real", "reca")
        assert (ours if not tiny else replace(ours, steps=max(4, steps // 4), lr=1e-3)) == inline


def test_an_extra_registration_gets_shared_model_defaults(monkeypatch):
    monkeypatch.setenv(registry.EXTRA_ENV, "toy=tests.toy_umm:ToyUMM")
    card = registry.card("toy")
    assert card.paradigm == "shared" and card.paper_res is None and not card.real
    r = preset("toy", "reca")
    assert r.freeze == "none" and r.lambda_i2t == 1.0 and r.und_res == 32 and r.lr == Recipe().lr
    assert preset("toy", "pretrain").steps == 1200


@pytest.mark.parametrize("arch,expect", [("bagel", 16), ("showo-vq", 16), ("showo-clip", 20), ("janus", 32),
                                         ("harmon", 32), ("openuni", 28)])
def test_mini_und_res_scales_the_paper_ratio(arch, expect):
    assert mini_und_res(arch, 32) == expect
    assert mini_und_res(arch, 64) % 4 == 0 and mini_und_res(arch, 64) == pytest.approx(
        64 * REAL_UND_RES[arch][0] / REAL_UND_RES[arch][1], abs=2)


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_reca_preset_follows_the_four_practices(arch):
    r = preset(arch, "reca")
    assert r.lambda_reca == 1.0 and r.lambda_t2i == 0.0 and r.stage == "reca"
    assert r.und_res == mini_und_res(arch) and r.prompts == "diverse"
    if arch in DECOUPLED:
        assert r.freeze == "understanding" and r.lambda_i2t == 0 and r.i2t_batch == 0
        assert r.active_terms == ("reca",)
    else:
        assert r.freeze == "none" and r.lambda_i2t == 1.0 and r.i2t_batch == r.batch  # 1:1 mix
        assert r.active_terms == ("reca", "i2t")
    assert r.steps == (200 if arch == "bagel" else 400)
    assert r.schedule == ("constant" if arch == "bagel" else "cosine")


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_pretrain_and_control_presets(arch):
    p = preset(arch, "pretrain")
    assert (p.lambda_reca, p.lambda_t2i, p.lambda_i2t) == (0.0, 1.0, 1.0) and p.active_terms == ("i2t", "t2i")
    assert 32 in p.i2t_und_res and mini_und_res(arch) in p.i2t_und_res
    r, c = preset(arch, "reca"), preset(arch, "control")
    assert c.lambda_reca == 0
    assert (c.lambda_i2t, c.lambda_t2i, c.i2t_ratio) == (r.lambda_i2t, r.lambda_t2i, r.i2t_ratio)
    assert "reca" not in c.active_terms
    assert c.steps == (r.steps if c.active_terms else 0)  # decoupled: the control is the base itself
    assert (c.steps == 0) == (arch in DECOUPLED)


def test_ci_and_colab_presets():
    ci, reca, colab = preset("janus", "ci"), preset("janus", "reca"), preset("janus", "colab")
    assert ci.steps <= 10 and ci.batch <= 8 and ci.n_images <= 100
    assert colab.steps > reca.steps and colab.batch > reca.batch


def test_preset_errors_list_valid_names():
    with pytest.raises(ValueError, match="showo-clip"):
        preset("showo", "reca")
    with pytest.raises(ValueError, match=", ".join(PRESETS)):
        preset("janus", "finetune")


def test_every_field_is_commented():
    src = inspect.getsource(Recipe)
    for f in fields(Recipe):
        line = next(ln for ln in src.splitlines() if ln.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"Recipe.{f.name} has no comment"


@pytest.mark.parametrize("bad", [dict(stage="finetune"), dict(freeze="all"), dict(steps=-1), dict(batch=0),
                                 dict(lambda_i2t=-1.0), dict(device="tpu")])
def test_invalid_recipe_values(bad):
    with pytest.raises(ValueError):
        Recipe(**bad)


# ----------------------------------------------------------------------------- und_transform

def test_und_transform_sizes():
    x = _images()
    assert Recipe(und_res=16).und_transform(x).shape == (4, 3, 16, 16)
    assert Recipe(und_res=0).und_transform(x, und_size=24).shape == (4, 3, 24, 24)  # native und size
    assert Recipe(und_res=0).und_transform(x).shape == (4, 3, 32, 32)
    assert Recipe(und_res=16).und_transform(x, und_size=24, res=28).shape[-1] == 28  # explicit res wins
    up = Recipe(und_res=48).und_transform(x)
    assert up.shape[-1] == 48 and 0 <= up.min() and up.max() <= 1


def test_same_resolution_and_no_blur_is_identity():
    x = _images()
    assert torch.equal(Recipe(und_res=32).und_transform(x), x)


def test_downscale_is_antialiased():
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = Recipe(und_res=16).und_transform(noise)
    # an antialiasing filter averages neighbours, so white noise loses most of its variance; the naive
    # subsampling x[::2, ::2] (what a non-antialiased resize does at 2x) keeps all of it
    assert y.var() < 0.5 * noise[..., ::2, ::2].var()
    assert abs(y.mean() - noise.mean()) < 0.01


def test_blur_removes_detail_and_keeps_mass():
    x = _images()
    y = Recipe(und_res=32, blur_sigma=2.0).und_transform(x)
    assert y.shape == x.shape
    tv = lambda z: ((z[..., 1:, :] - z[..., :-1, :]) ** 2).mean()  # gradient energy  # noqa: E731
    assert tv(y) < 0.5 * tv(x)
    assert abs(y.mean() - x.mean()) < 0.01
    assert tv(Recipe(und_res=32, blur_sigma=4.0).und_transform(x)) < tv(y)  # more sigma, more blur
    k = gaussian_blur(torch.ones(1, 3, 16, 16), 1.5)
    assert torch.allclose(k, torch.ones_like(k))  # normalised kernel


def test_und_transform_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Recipe().und_transform(torch.zeros(3, 32, 32))
