"""Tests for reca_nb.models.showo: the Show-o miniature (omni-attention, MaskGIT generation, AR captioning)."""
import math

import pytest
import torch
import torch.nn.functional as F

from reca_nb.world.shapes import ShapeWorld
from reca_nb.models.showo import ShowO, ShowOConfig
from reca_nb.world.text import tokenizer
from tests.standins import TINY_SHOWO as TINY, tiny_showo as tiny


@pytest.fixture
def clip_encoder(monkeypatch):
    """The shipped ShapeCLIP if its weights exist, else a random-init stand-in of the same class (the ShowO
    code path is the same; only the features are meaningless)."""
    clip = pytest.importorskip("reca_nb.encoders.clip", reason="reca_nb.encoders.clip not written yet")
    try:
        return clip.load_clip()
    except FileNotFoundError:
        words = tokenizer().itos
        torch.manual_seed(0)
        fake = clip.ShapeCLIP(clip.build_clip_model(words, hidden=32, vision_layers=2, text_layers=1), words)
        monkeypatch.setattr(clip, "load_clip", lambda: fake)
        return fake


@pytest.fixture(scope="module")
def data():
    ws = ShapeWorld(8, seed=3)
    items = [ws[i] for i in range(8)]
    return (torch.stack([it["image"] for it in items]), [it["prompt"] for it in items],
            [it["description"] for it in items])


def test_build_config_and_state(data):
    m = tiny()
    assert m.arch == "showo-vq" and ShowO.archs == ("showo-vq", "showo-clip")
    assert m.config.text_vocab == len(tokenizer())
    assert m.config.und_size == 32 and m.image_size == 32
    # the frozen VQ lives outside the module
    assert not any("codebook" in k for k in m.state_dict())
    with pytest.raises(ValueError, match="variant"):
        ShowO(ShowOConfig(variant="magvit", **TINY))
    with pytest.raises(ValueError, match="vocabulary"):
        ShowO(ShowOConfig(variant="vq", text_vocab=len(tokenizer()) + 1, **TINY))


def test_losses_at_init(data):
    x, prompts, desc = data
    torch.manual_seed(0)
    m = tiny()
    gen = m.generation_loss(x, prompts)
    assert torch.isfinite(gen) and abs(gen.item() - math.log(256)) < 0.15
    i2t = m.i2t_loss(x, desc)
    assert torch.isfinite(i2t) and abs(i2t.item() - math.log(m.config.text_vocab)) < 0.3
    cond = m.understanding_embedding(F.avg_pool2d(x, 2))  # 16 px -> 16 tokens
    assert cond.shape == (8, 16, 32)
    reca = m.generation_loss(x, ["describe the image"] * 8, cond=cond)
    assert torch.isfinite(reca)
    reca.backward()
    assert m.transformer.embed_tokens.weight.grad is not None


def test_bad_inputs(data):
    x, prompts, desc = data
    m = tiny()
    with pytest.raises(ValueError, match="32x32"):
        m.generation_loss(F.avg_pool2d(x, 2), prompts)
    with pytest.raises(ValueError, match="8 strings"):
        m.generation_loss(x, prompts[:3])
    with pytest.raises(ValueError, match="8 strings"):
        m.i2t_loss(x, "a red circle")


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_omni_attention(data, impl):
    """Causal over text, bidirectional within an image block, padding invisible -- for both kernels."""
    x, prompts, _ = data
    torch.manual_seed(0)
    m = tiny().eval()
    m.transformer.config._attn_implementation = impl
    codes = m.encode_images(x[:2])  # (2, 64)
    other = codes.clone()
    other[:, 40] = (other[:, 40] + 7) % 256  # change one image token in the middle of the block
    segs_a = m._t2i_segments(codes, ["a red circle", "two squares"], None)
    segs_b = m._t2i_segments(other, ["a red circle", "two squares"], None)
    ha, _ = m.run(segs_a)
    hb, _ = m.run(segs_b)
    n_text = ha.shape[1] - 64 - 1  # everything before the block (and <eoi> after it)
    diff = (ha - hb).abs().amax(-1)  # (2, T)
    assert diff[:, :n_text].max() == 0, "a text position saw a later image token"
    block = diff[:, n_text:n_text + 64]
    assert (block[:, :40] > 1e-5).all(), "earlier image tokens must see a later one (bidirectional block)"
    assert (block > 1e-5).all() and (diff[:, -1] > 1e-5).all()

    # text is causal: changing a later caption word leaves earlier positions untouched
    tok = tokenizer()
    ids_a = tok.batch(["red circle top left", "blue square top right"], bos=True, eos=True)
    ids_b = ids_a.clone()
    ids_b[:, 3] = tok.stoi["triangle"]
    prefix = m._i2t_prefix(x[:2])
    h1, _ = m.run(prefix + [(m._tokens(ids_a), None, False)])
    h2, _ = m.run(prefix + [(m._tokens(ids_b), None, False)])
    d = (h1 - h2).abs().amax(-1)
    k = h1.shape[1] - ids_a.shape[1] + 3
    assert d[:, :k].max() == 0 and (d[:, k:] > 1e-5).all()

    # left padding is invisible: a padded prompt gives the same image logits as the unpadded one alone
    la = m._image_logits(m._t2i_segments(codes[:1], ["a circle"], None))
    lb = m._image_logits(m._t2i_segments(codes[:2], ["a circle", "a red circle and a blue square"], None))[:1]
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-4)


def test_sdpa_matches_eager(data):
    x, prompts, _ = data
    m = tiny().eval()
    codes = m.encode_images(x[:2])
    segs = m._t2i_segments(codes, prompts[:2], m.understanding_embedding(F.avg_pool2d(x[:2], 2)))
    h_sdpa, _ = m.run(segs)
    m.transformer.config._attn_implementation = "eager"
    h_eager, _ = m.run(segs)
    torch.testing.assert_close(h_sdpa, h_eager, atol=1e-4, rtol=1e-4)


def test_sample_decodes_every_token_and_takes_cfg(data):
    x, prompts, _ = data
    m = tiny(sample_steps=4).eval()
    g = torch.Generator().manual_seed(0)
    imgs, codes = m.sample(prompts[:3], generator=g, return_codes=True)
    assert imgs.shape == (3, 3, 32, 32)
    assert codes.shape == (3, 64) and codes.max() < 256  # every token decoded, no <mask> left
    cfg = m.sample(prompts[:2], generator=torch.Generator().manual_seed(0), cfg_scale=2.0)
    assert cfg.shape == (2, 3, 32, 32)
    rec = m.reconstruct(F.avg_pool2d(x[:2], 2), ["describe the image"] * 2)  # 16 px: the bottleneck input
    assert rec.shape == (2, 3, 32, 32)


def test_caption_cache_matches_full_recompute(data):
    """The KV-cached greedy decoder equals re-running the whole sequence at every step."""
    x, _, _ = data
    torch.manual_seed(1)
    m = tiny().eval()
    tok = tokenizer()
    with torch.no_grad():
        ids = torch.full((3, 1), tok.bos_id)
        for _ in range(5):
            h, _ = m.run(m._i2t_prefix(x[:3]) + [(m._tokens(ids), None, False)])
            nxt = m.head(h[:, -1])[:, :m.config.text_vocab].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
    ref = [tok.decode(r) for r in ids[:, 1:].tolist()]
    assert m.caption(x[:3], max_len=5) == ref


def test_token_agreement(data):
    x, _, _ = data
    m = tiny()
    assert m.token_agreement(x, x) == 1.0
    shuffled = m.token_agreement(x, x.flip(0))
    assert shuffled is not None and shuffled < 1.0
    assert m.token_agreement(F.avg_pool2d(x, 2), x) is None  # 4x4 vs 8x8 grid


def test_clip_variant(data, tmp_path, clip_encoder):
    x, prompts, desc = data
    torch.manual_seed(0)
    m = tiny("clip")
    assert m.arch == "showo-clip" and m.config.clip_width == clip_encoder.width
    assert not any(k.startswith(("clip", "vq")) for k in m.state_dict())
    cond = m.understanding_embedding(F.avg_pool2d(x, 2))  # 16 px
    assert cond.shape == (8, 16, 32)
    assert torch.isfinite(m.generation_loss(x, ["describe the image"] * 8, cond=cond))
    assert abs(m.generation_loss(x, prompts).item() - math.log(256)) < 0.15
    loss = m.i2t_loss(x, desc)
    loss.backward()
    assert m.mm_projector[0].weight.grad is not None
    m.check_groups()
    g = m.parameter_groups()
    assert g["understanding"] and all(n.startswith("mm_projector.") for n in g["understanding"])
    assert m.token_agreement(x, x) is None
    assert len(m.caption(x[:2], max_len=3)) == 2
    m.save(tmp_path / "c.safetensors")
    m2 = ShowO.load(tmp_path / "c.safetensors")
    assert m2.arch == "showo-clip"
    torch.testing.assert_close(m2.understanding_embedding(x[:2]), m.understanding_embedding(x[:2]))
