"""Janus miniature: real transformers Janus inside, the shipped VQ, losses at init, condition dropout, generate()
vs the own sampling loop (the UMM contract itself is checked in test_umm_contract.py)."""
import math

import pytest
import torch

from reca_nb.models.janus import VQ_FILE, JanusMini
from reca_nb.world.shapes import ShapeWorld
from tests.standins import tiny_janus_config as tiny


@pytest.fixture(scope="module")
def model():
    return JanusMini(tiny())


@pytest.fixture(scope="module")
def batch():
    d = ShapeWorld(8, seed=3)
    return d.images(), [d[i]["prompt"] for i in range(8)], [d[i]["description"] for i in range(8)]


def test_it_is_transformers_janus(model):
    from transformers import JanusForConditionalGeneration
    from transformers.models.janus.modeling_janus import JanusVisionModel, JanusVQVAE

    assert isinstance(model.hf, JanusForConditionalGeneration)
    assert isinstance(model.hf.model.vision_model, JanusVisionModel)
    assert isinstance(model.hf.model.vqmodel, JanusVQVAE)
    assert model.arch == "janus" and model.image_size == 32 and model.und_size == 32
    assert model.n_gen == 16 and model.n_und == 16
    # placeholder / boi ids do not collide with words
    assert model.img_id >= len(model.tok)
    assert model.hf.config.text_config.vocab_size == model.config.vocab_size
    assert model.hf.generation_config.generation_kwargs["boi_token_id"] == model.tok.stoi["<soi>"]


def test_vq_is_frozen_at_build(model):
    frozen = set(model.parameter_groups()["frozen"])
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen


def test_shipped_vq_reconstructs_shapes(model):
    assert VQ_FILE.exists()
    x = ShapeWorld(64, seed=4242, kind="random").images()
    tok = model.encode_images(x)
    assert tok.shape == (64, 16) and int(tok.max()) < 256
    assert torch.mean((model.decode_tokens(tok) - x) ** 2).item() < 0.004


def test_understanding_embedding(model, batch):
    x = batch[0]
    h = model.understanding_embedding(x)
    assert h.shape == (8, 16, 32)
    # a bottlenecked (low-res) input is upsampled to the ViT size: same token count
    assert model.understanding_embedding(x[:, :, ::2, ::2]).shape == (8, 16, 32)


def test_losses_at_init(model, batch):
    x, prompts, descs = batch
    model.eval()
    with torch.no_grad():
        t2i = model.generation_loss(x, prompts).item()
        i2t = model.i2t_loss(x, descs).item()
        reca = model.reca_loss(x[:, :, ::2, ::2], ["Describe the image."] * 8, x).item()
    assert abs(t2i - math.log(256)) < 0.1, t2i  # image CE ~ ln K at init
    assert abs(reca - math.log(256)) < 0.1, reca
    assert abs(i2t - math.log(model.config.vocab_size)) < 0.3, i2t


def test_bad_inputs(model, batch):
    x, prompts, descs = batch
    with pytest.raises(ValueError):
        model.generation_loss(x, prompts[:3])
    with pytest.raises(ValueError):
        model.i2t_loss(x, descs[:3])
    with pytest.raises(ValueError):
        model.generation_loss(x[:, :, ::2, ::2], prompts)  # VQ needs 32 px targets
    with pytest.raises(ValueError):
        JanusMini(tiny(patch_size=4, load_vq=False))  # ViT grid 8x8 but VQ grid 4x4


def test_condition_dropout_makes_unconditional_rows(batch):
    x = batch[0][:2]
    m = JanusMini(tiny(cfg_dropout=1.0)).train()
    with torch.no_grad():  # every row dropped: the prompt (same length) no longer matters
        a = m.generation_loss(x, ["a red circle", "a blue square"])
        b = m.generation_loss(x, ["a green triangle", "a white circle"])
        m.eval()
        c = m.generation_loss(x, ["a green triangle", "a white circle"])
    assert torch.allclose(a, b) and not torch.allclose(b, c)


def test_generate_matches_own_loop(model, batch):
    """transformers' generate(generation_mode="image") and the inputs_embeds loop agree when greedy."""
    prompts = batch[1][:4]
    model.eval()
    a = model.sample_tokens(prompts, temperature=0, cfg_scale=3.0)
    b = model.sample_tokens(prompts, temperature=0, cfg_scale=3.0, use_generate=False)
    assert a.shape == (4, 16) and torch.equal(a, b)


def test_top_k_reconstruction_is_seeded(model, batch):
    x, _, _ = batch
    model.eval()
    low, templates = x[:2, :, ::2, ::2], ["Describe the image."] * 2  # 16 px: the bottleneck input
    r1 = model.reconstruct(low, templates, generator=torch.Generator().manual_seed(0), top_k=20)
    r2 = model.reconstruct(low, templates, generator=torch.Generator().manual_seed(0), top_k=20)
    assert r1.shape == (2, 3, 32, 32) and torch.equal(r1, r2)


def test_reload_keeps_tuple_config_and_tied_lm_head(model, tmp_path):
    path = tmp_path / "janus.safetensors"
    model.save(path)
    m2 = JanusMini.load(path)
    assert isinstance(m2.config.vq_mult, tuple)  # json gives lists back
    # tied text embedding / lm_head survive
    assert m2.hf.lm_head.weight.data_ptr() == m2.hf.get_input_embeddings().weight.data_ptr()
