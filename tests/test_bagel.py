"""BagelMini: a mixture-of-transformers decoder (understanding + generation expert per layer, one attention)
with rectified flow on autoencoder latents and BAGEL's stop-gradient freeze of the understanding path.

Most tests use tiny stand-ins for the shared frozen CLIP and autoencoder (fixed random patch features,
average-pool "latents"), so they test this module's logic and run without the shipped checkpoints;
the shipped CLIP and autoencoder are checked in tests/test_frozen_parts.py.
"""
import pytest
import torch
import torch.nn.functional as F

from reca_nb.models.bagel import BagelMini, BagelMiniConfig, MoTLayer
from reca_nb.world.shapes import ShapeWorld
from tests.standins import TINY_BAGEL as TINY, StandInAE, StandInCLIP, tiny_bagel as tiny

TEMPLATE = ["describe the image"]


@pytest.fixture(scope="module")
def batch():
    ds = ShapeWorld(8, seed=3)
    items = [ds[i] for i in range(8)]
    img = torch.stack([x["image"] for x in items])  # (8, 3, 32, 32)
    und = F.interpolate(img, size=16, mode="area")  # the default und_size: 4x4 = 16 ViT tokens
    return img, und, [x["prompt"] for x in items], [x["description"] for x in items]


def freeze_understanding(m):
    m.freeze({"frozen", "understanding"})


def reca_spans(m, und, n):
    """The RecA sequence [<sou> ViT <eou>] [<bos> template <eos>] [<soi> latents] with random latents."""
    zt = torch.randn(len(und), 64, 4)
    temb = m.time_embedder(m.time_proj(torch.full((len(und),), 500.0)))
    lat = m.vae2llm(zt) + temb[:, None] + m.latent_pos_embed
    return [m._vit_span(und), m._text_span(m.tok.batch(TEMPLATE * n, bos=True, eos=True)),
            m._image_span("<soi>", lat)]


# ----------------------------------------------------------------------------- structure

def test_config_and_shapes(batch):
    img, und, prompts, caps = batch
    m = tiny()
    assert m.arch == "bagel" and m.config.image_size == 32 and m.config.und_size == 16
    assert BagelMiniConfig().und_size == 16 and BagelMiniConfig().image_size == 32
    assert m.config.vocab_size == len(m.tok)
    auto = BagelMini(BagelMiniConfig(**{**TINY, "clip_width": 0}), clip=StandInCLIP(24), ae=StandInAE())
    assert auto.config.clip_width == 24  # read from the attached encoder at build time
    assert all(isinstance(layer, MoTLayer) for layer in m.layers) and len(m.layers) == 2
    assert m.understanding_embedding(und).shape == (8, 16, 64)  # 16 px / 4 -> 4x4 tokens, d_model
    assert m.understanding_embedding(img).shape == (8, 64, 64)  # native 32 px also works (pretraining)
    assert m._latent_tokens(img).shape == (8, 64, 4)  # (4, 8, 8) latents -> 64 tokens
    v = m.velocity(m._latent_tokens(img), torch.rand(8), prompts)
    assert v.shape == (8, 64, 4)
    with pytest.raises(ValueError):
        m.generation_loss(img, prompts[:3])
    with pytest.raises(ValueError):
        m.generation_loss(und, prompts)  # targets must be at image_size


def test_each_layer_has_an_understanding_and_a_generation_expert():
    """The MoT doubles the decoder: per layer, `.und.` weights are understanding and `.gen.` weights generation,
    the same shapes."""
    g = tiny().parameter_groups()
    und, gen = set(g["understanding"]), set(g["generation"])
    assert {"layers.0.und.q_proj.weight", "layers.1.und.mlp.up_proj.weight", "embed_tokens.weight",
            "lm_head.weight", "connector.0.weight", "norm.weight"} <= und
    assert {"layers.0.gen.q_proj.weight", "layers.1.gen.mlp.up_proj.weight", "vae2llm.weight",
            "llm2vae.weight",
            "time_embedder.linear_1.weight", "latent_pos_embed", "norm_gen.weight"} <= gen
    m = tiny()
    n_und = sum(p.numel() for n, p in m.named_parameters() if ".und." in n)
    n_gen = sum(p.numel() for n, p in m.named_parameters() if ".gen." in n)
    assert n_und == n_gen > 0


def test_mask_follows_bagel_spans(batch):
    """RoPE ids: +1 per text token, one per image span; mask = id(key) <= id(query), padding never read."""
    img, und, _, _ = batch
    m = tiny()
    ids = m.tok.batch(["a red circle", "a blue square left of a green triangle"], bos=True, eos=True)
    spans = reca_spans(m, und[:2], 2)
    spans[1] = m._text_span(ids)
    captured = {}
    orig = MoTLayer.forward

    def spy(self, x, n_gen, rope, mask, detach_und=False):
        captured["mask"] = mask
        return orig(self, x, n_gen, rope, mask, detach_und)

    MoTLayer.forward = spy
    try:
        m.forward_hidden(spans, n_gen=64)
    finally:
        MoTLayer.forward = orig
    mask = captured["mask"][:, 0]  # (B, T, T)
    N, L = 16 + 2, ids.shape[1]
    assert mask[:, :N, :N].all()  # ViT span (with markers): bidirectional
    assert not mask[:, :N, N:].any()  # ... and blind to what follows
    text = mask[1, N:N + L, N:N + L]
    assert torch.equal(text, torch.ones(L, L, dtype=torch.bool).tril())  # text: causal
    assert mask[:, N + L:, :N].all() and mask[:, N + L:, N + L:].all()  # latent span: sees all, bidirectional
    short = (ids[0] != 0).sum()
    assert not mask[0, N + L:, N + short:N + L].any()  # padding of the short prompt is never read


def test_padding_is_invisible():
    """A prompt's velocity must not depend on the longer prompts it is batched with."""
    m = tiny().eval()
    zt, t = torch.randn(2, 64, 4), torch.tensor([0.3, 0.7])
    short, long = "a red circle", "a blue square left of a green triangle"
    alone = m.velocity(zt[:1], t[:1], [short])
    together = m.velocity(zt, t, [short, long])
    torch.testing.assert_close(alone[0], together[0], atol=1e-5, rtol=1e-4)
    # the CFG branch: a dropped text is invisible, whatever it said
    d = torch.tensor([True, True])
    torch.testing.assert_close(m.velocity(zt, t, [short, long], drop_text=d),
                               m.velocity(zt, t, [long, short], drop_text=d), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(m.velocity(zt, t, [short, long]), m.velocity(zt, t, [long, short]), atol=1e-4)


def _perturb(m, expert: str):
    with torch.no_grad():
        for n, p in m.named_parameters():
            if f".{expert}." in n:
                p.add_(0.05 * torch.randn_like(p))


def test_mot_routing(batch):
    """Generation-expert weights never touch text positions; understanding-expert weights change all."""
    img, und, prompts, caps = batch
    m = tiny().eval()
    with torch.no_grad():
        spans = reca_spans(m, und, 8)
        torch.manual_seed(1)
        zt = torch.randn(8, 64, 4)
        ref_h = m.forward_hidden(spans, n_gen=64)
        ref_logits = m.lm_head(ref_h[:, :-65])  # ViT + template positions of the RecA sequence
        ref_i2t = m.i2t_loss(und, caps)
        ref_v = m.velocity(zt, torch.full((8,), 0.5), prompts)
        _perturb(m, "gen")
        h = m.forward_hidden(spans, n_gen=64)
        torch.testing.assert_close(m.lm_head(h[:, :-65]), ref_logits)  # text logits: untouched
        torch.testing.assert_close(m.i2t_loss(und, caps), ref_i2t)
        assert (h[:, -64:] - ref_h[:, -64:]).abs().max() > 1e-3  # latent positions: changed
        v_gen = m.velocity(zt, torch.full((8,), 0.5), prompts)
        assert (v_gen - ref_v).abs().max() > 1e-3
        _perturb(m, "und")
        assert (m.lm_head(m.forward_hidden(spans, n_gen=64)[:, :-65]) - ref_logits).abs().max() > 1e-3
        assert abs(m.i2t_loss(und, caps) - ref_i2t) > 1e-4
        # one shared attention: the und expert's keys/values at text positions steer the latents too
        assert (m.velocity(zt, torch.full((8,), 0.5), prompts) - v_gen).abs().max() > 1e-3


# ----------------------------------------------------------------------------- freeze (BAGEL freeze_und)

def _und_position_grads(m, und):
    """Gradient of the understanding-position outputs of a RecA sequence w.r.t. the noisy latent inputs and
    the generation weights: zero iff no understanding-position activation depends on anything trainable."""
    spans = reca_spans(m, und, 8)
    lat = spans[2][0].detach().requires_grad_(True)
    spans[2] = (lat, *spans[2][1:])
    h = m.forward_hidden(spans, n_gen=64)
    gen = [p for p in m.named_group("generation") if p.requires_grad]
    grads = torch.autograd.grad(h[:, :-64].square().sum(), [lat, *gen], allow_unused=True)
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


@pytest.mark.parametrize("detach_und", [True, False])
def test_frozen_understanding_is_detached(batch, detach_und):
    img, und, _, _ = batch
    m = tiny(detach_und=detach_und)
    freeze_understanding(m)
    # the <soi> marker (an understanding position) shares the latent span, so it reads latent keys/values:
    # only the stop-gradient freeze (BAGEL freeze_und) makes every understanding activation a constant
    g = _und_position_grads(m, und)
    assert (g == 0.0) == detach_und, g
    # and it is a freeze-time behaviour: a trainable understanding path is never detached
    m.freeze({"frozen"})
    assert _und_position_grads(m, und) > 0


def test_reca_grads_reach_generation_only(batch):
    img, und, _, _ = batch
    m = tiny()
    m.reca_loss(und, TEMPLATE * 8, img).backward()
    # shared attention: without the freeze, RecA gradients reach understanding weights (text/ViT keys, values)
    for n in ("layers.0.und.v_proj.weight", "connector.0.weight", "embed_tokens.weight"):
        assert m.get_parameter(n).grad.abs().sum() > 0, n
    m.zero_grad(set_to_none=True)
    freeze_understanding(m)
    m.reca_loss(und, TEMPLATE * 8, img).backward()
    assert all(p.grad is None for p in m.named_group("understanding"))
    for n, p in m.named_parameters():
        if n in m.parameter_groups()["generation"]:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


# ----------------------------------------------------------------------------- sampling / captioning

def test_sampler_convention_is_exact():
    """With the oracle velocity v = (z_t - x0) / t of x_t = (1 - t) x0 + t eps, the Euler scheduler must land
    on x0 exactly: checks the sign, the sigma = t mapping and the shift handling of the diffusers
    scheduler."""
    m = tiny().eval()
    x0 = torch.randn(3, 64, 4)

    def oracle(zt, t, prompts, cond=None, drop_text=None):
        x = torch.cat([x0] * (len(zt) // 3))
        return (zt - x) / t[:, None, None]

    m.velocity = oracle
    for guidance, shift in ((1.0, 1.0), (3.0, 3.0)):
        z = m.sample(["a red circle"] * 3, steps=5, guidance=guidance, shift=shift, return_latents=True)
        torch.testing.assert_close(z, x0.transpose(1, 2).reshape(3, 4, 8, 8), atol=1e-4, rtol=1e-4)


def test_shared_loop_reca_freezes_understanding():
    """The shared train() loop with the BAGEL RecA preset (freeze='understanding'): only generation moves."""
    from reca_nb.recipe import preset
    from reca_nb.train import train

    m = tiny()
    recipe = preset("bagel", "ci")
    assert recipe.freeze == "understanding" and recipe.active_terms == ("reca",) and recipe.und_res == 16
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    history = train(m, recipe, progress=False)
    assert history and all(r["loss"] == r["loss"] for r in history if "loss" in r)  # finite, no NaN
    g = m.parameter_groups()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved.isdisjoint(g["understanding"])
    assert set(g["generation"]) <= moved
    assert all(p.requires_grad for p in m.parameters())  # train() restores the flags
