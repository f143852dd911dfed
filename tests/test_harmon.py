"""HarmonMini: one shared MAR encoder, a tiny Qwen2 LLM, MAR masking + a per-token DDPM diffusion head.

Most tests use a tiny stand-in for the shared frozen autoencoder (average-pool "latents"), so they test this
module's logic without the shipped checkpoint; `test_real_autoencoder` uses `load_ae()` and is skipped when
data/tokenizers/ae.safetensors is not there yet.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.models.harmon import HarmonMini, HarmonMiniConfig
from reca_nb.world.shapes import ShapeWorld
from tests.standins import TINY_HARMON as TINY, tiny_harmon as tiny


@pytest.fixture(scope="module")
def batch():
    ds = ShapeWorld(8, seed=3)
    items = [ds[i] for i in range(8)]
    img = torch.stack([x["image"] for x in items])  # (8, 3, 32, 32)
    return img, [x["prompt"] for x in items], [x["description"] for x in items]


def test_is_made_of_library_classes():
    from diffusers import DDPMScheduler
    from transformers import Qwen2ForCausalLM

    m = tiny()
    assert isinstance(m.scheduler, DDPMScheduler)
    assert m.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert m.scheduler.config.num_train_timesteps == 1000
    assert m.scheduler.config.prediction_type == "epsilon" and not m.scheduler.config.clip_sample
    assert isinstance(m.llm, Qwen2ForCausalLM)
    assert isinstance(m.encoder, nn.TransformerEncoder) and isinstance(m.decoder, nn.TransformerEncoder)
    assert m.encoder is not m.decoder
    from reca_nb.world.text import tokenizer
    assert m.config.vocab_size == len(tokenizer()) == m.llm.config.vocab_size


def test_token_count_follows_und_resolution_and_first_loss_is_one(batch):
    img, prompts, _ = batch
    m = tiny()
    nb = m.config.buffer_size
    assert m.understanding_embedding(img).shape == (8, 64 + nb, 64)
    assert m.understanding_embedding(F.interpolate(img, size=16, mode="area")).shape == (8, 16 + nb, 64)
    assert m.understanding_embedding(F.interpolate(img, size=20, mode="area")).shape == (8, 25 + nb, 64)
    m.train()
    # a zero-initialised head predicts eps = 0, so the first diffusion loss is E[eps^2] ~ 1
    torch.manual_seed(0)
    assert 0.8 < m.generation_loss(img, prompts).item() < 1.2


def test_patchify_is_mar_geometry(batch):
    """The default patch size 2 (MAR with a KL-8 VAE): 2x2 latents -> one token of 16 dims, 16 per image."""
    img, prompts, caps = batch
    m = tiny(patch_size=2)
    assert (m.seq_len, m.token_dim, m.side) == (16, 16, 4)
    tok, grid = m.encode_latents(img)
    assert tok.shape == (8, 16, 16) and grid == (4, 4)
    lat = m.ae.encode(img)  # (8, 4, 8, 8): token (i, j) holds the 2x2 latent block at rows 2i.., cols 2j..
    torch.testing.assert_close(tok[:, 1 * 4 + 2].reshape(8, 4, 2, 2), lat[:, :, 2:4, 4:6])
    torch.testing.assert_close(m.decode_latents(tok), m.ae.decode(lat).clamp(0, 1))  # unpatchify inverts it
    nb = m.config.buffer_size
    assert m.understanding_embedding(F.interpolate(img, size=16, mode="area")).shape == (8, 4 + nb, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        m.understanding_embedding(F.interpolate(img, size=20, mode="area"))
    m.train()
    for loss in (m.generation_loss(img, prompts), m.i2t_loss(img, caps)):
        assert torch.isfinite(loss)
    assert m.sample(prompts[:2], generator=torch.Generator().manual_seed(0), return_latents=True).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny(patch_size=2, und_size=20)


def test_llm_word_embeddings_on_the_image_token_scale_and_head_untied(batch):
    img, _, _ = batch
    m = tiny()
    assert not m.llm.config.tie_word_embeddings
    emb = m.llm.get_input_embeddings().weight
    assert m.llm.lm_head.weight.data_ptr() != emb.data_ptr()
    assert 0.9 < emb.std().item() < 1.1 and emb[m.tok.pad_id].abs().sum() == 0

    def ratio(mod):  # rms of the prompt words / rms of the image tokens proj_in hands the LLM
        words = mod.llm.get_input_embeddings().weight[4:]
        return (words.pow(2).mean().sqrt() / mod.visual_features(img).pow(2).mean().sqrt()).item()

    assert 0.2 < ratio(m) < 5, ratio(m)
    qwen = tiny(llm_embed_std=0.02, llm_tie_embeddings=True)  # Qwen2's own init, tied as Qwen2.5-0.5B
    assert ratio(qwen) < 0.1  # the prompt ~20-50x smaller than the image tokens: what kept T2I at chance
    assert qwen.llm.lm_head.weight.data_ptr() == qwen.llm.get_input_embeddings().weight.data_ptr()


def test_pretrain_runs_t2i_then_joint(tmp_path):
    """`python -m reca_nb.build.pretrain --arch=harmon`: stage "t2i" learns generation alone, then stage "joint" adds
    I2T and trains on (the LLM's word table moves again)."""
    import json

    from safetensors.torch import load_file

    from reca_nb.build import pretrain

    flags = [f"--model.{k}={v}" for k, v in TINY.items()]
    entry = pretrain.main(["--arch=harmon", "--steps=2", "--batch=4", "--n_images=32", "--n_t2i_pairs=8",
                           "--save_every=0", f"--dest={tmp_path / 'ck'}", f"--out={tmp_path / 'run'}",
                           "--eval=False", "--progress=False"] + flags)
    hist = {n: json.loads((tmp_path / "run" / n / "history.json").read_text()) for n in ("t2i", "joint")}
    terms = {n: {k for r in h for k in r if k.startswith("loss_") and r[k]} for n, h in hist.items()}
    assert terms == {"t2i": {"loss_t2i"}, "joint": {"loss_t2i", "loss_i2t"}}, terms
    first = load_file(tmp_path / "run" / "t2i" / "model.safetensors")
    final = load_file(tmp_path / "ck" / "harmon.safetensors")
    assert not torch.equal(first["llm.model.embed_tokens.weight"], final["llm.model.embed_tokens.weight"])
    assert [s["name"] for s in entry["stages"]] == ["t2i", "joint"]
    assert entry["recipe"]["lambda_i2t"] == 1.0  # the stage override is not what is saved


def test_bad_inputs_raise(batch):
    img, prompts, caps = batch
    m = tiny()
    with pytest.raises(ValueError, match="32x32"):
        m.generation_loss(F.interpolate(img, size=16), prompts)
    with pytest.raises(ValueError, match="prompts"):
        m.generation_loss(img, prompts[:3])
    with pytest.raises(ValueError, match="captions"):
        m.i2t_loss(img, caps[:3])
    with pytest.raises(ValueError, match="multiple of 4"):
        m.understanding_embedding(F.interpolate(img, size=18))
    with pytest.raises(ValueError, match="image_attn"):
        tiny(image_attn="sideways")


def test_mask_ratio_is_mar_truncated_normal(batch):
    img, prompts, _ = batch
    m = tiny().train()
    ratios = torch.tensor([m.sample_mask(4).float().mean().item() for _ in range(1500)])
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0
    # the expected masked share E[ceil(64 r) / 64], r ~ N(1, 0.25) truncated to [0.7, 1], by quadrature
    # (0.8670 for r itself, +~0.5/64 from rounding the count up): 0.8747
    xs = torch.linspace(0.7, 1.0, 20_001, dtype=torch.float64)
    w = torch.exp(-0.5 * ((xs - 1.0) / 0.25) ** 2)
    expected = ((torch.ceil(64 * xs) / 64) * w).sum().item() / w.sum().item()
    assert abs(expected - 0.8747) < 5e-4
    # 1500 draws: standard error ~0.002, so 0.008 is ~4 SE
    assert abs(ratios.mean().item() - expected) < 0.008, ratios.mean()
    assert ratios.std() > 0.05  # a distribution, not a constant
    g = torch.Generator().manual_seed(1)
    seeded = [m.sample_mask(4, generator=g).float().mean().item() for _ in range(500)]
    assert min(seeded) >= 0.7 and abs(sum(seeded) / 500 - expected) < 0.02
    # every row of one batch masks the same number of tokens (MAR drops them and reshapes)
    mk = m.sample_mask(8)
    assert len(set(mk.sum(1).tolist())) == 1
    # the training loss really uses it: the encoder sees at most 30% of the 64 tokens (+ buffers)
    seen = []
    h = m.encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    for _ in range(20):
        m.generation_loss(img, prompts)
    h.remove()
    assert max(seen) <= m.config.buffer_size + int(64 * 0.3) and len(set(seen)) > 1


def test_one_encoder_serves_both_paths(batch):
    img, prompts, caps = batch
    m = tiny()
    calls = []
    hooks = [mod.register_forward_hook(lambda mod, i, o, name=name: calls.append((name, mod)))
             for name, mod in (("encoder", m.encoder), ("decoder", m.decoder))]
    m.i2t_loss(img, caps)
    und = list(calls)
    calls.clear()
    m.generation_loss(img, prompts)
    gen = list(calls)
    for h in hooks:
        h.remove()
    assert [n for n, _ in und] == ["encoder"]  # understanding: the encoder only, no decoder
    assert [n for n, _ in gen] == ["encoder", "decoder"]
    assert und[0][1] is gen[0][1] is m.encoder  # the very same module object
    # and the generation loss trains the encoder that understanding uses (once the zero-initialised adaLN and
    # output layers of the diffusion head let a gradient reach the condition z: after two updates)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(2):
        m.zero_grad()
        m.generation_loss(img, prompts).backward()
        opt.step()
    m.zero_grad()
    m.generation_loss(img, prompts).backward()
    assert m.encoder.layers[0].linear1.weight.grad.abs().sum() > 0
    m.zero_grad()
    m.i2t_loss(img, caps).backward()
    assert m.encoder.layers[0].linear1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.diffloss.parameters())  # I2T never touches the diffusion head


def test_reca_gradient_into_features_is_scaled(batch):
    img, _, _ = batch
    grads = {}
    for scale in (1.0, 0.1):
        m = tiny(grad_scale=scale)
        w = torch.randn(m.understanding_embedding(img).shape, generator=torch.Generator().manual_seed(0))
        (m.understanding_embedding(img) * w).sum().backward()
        grads[scale] = m.z_proj.weight.grad.clone()
        assert torch.equal(m.understanding_embedding(img), m.visual_features(img))  # identity forward
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0])


def test_image_attention_modes(batch):
    """Bidirectional: the first image token's LLM state depends on the last one; causal (Harmon): not."""
    img, prompts, _ = batch
    for mode, depends in (("bidirectional", True), ("causal", False)):
        m = tiny(image_attn=mode).eval()
        prefix, valid = m._gen_prefix(prompts[:2], None)
        x = torch.randn(2, 10, 64)
        y = x.clone()
        y[:, -1] += 1.0
        h1, h2 = m._llm_image(prefix, valid, x), m._llm_image(prefix, valid, y)
        assert (not torch.allclose(h1[:, 0], h2[:, 0], atol=1e-6)) == depends, mode
        assert torch.isfinite(h1).all()


def test_left_padding_does_not_change_a_row(batch):
    _, prompts, _ = batch
    m = tiny().eval()
    short, long = "a red circle", prompts[0] + " and a blue square on the left"
    img = torch.randn(1, 10, 64)
    p1, v1 = m._gen_prefix([short], None)
    p2, v2 = m._gen_prefix([short, long], None)
    a = m._llm_image(p1, v1, img)
    b = m._llm_image(p2[:1], v2[:1], img)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_sample_latents_and_constant_cfg_reconstruction(batch):
    img, prompts, _ = batch
    m = tiny().eval()
    lat = m.sample(prompts[:2], generator=torch.Generator().manual_seed(0), guidance=1.0, return_latents=True)
    assert lat.shape == (2, 64, 4) and torch.isfinite(lat).all()
    rec = m.reconstruct(img[:2], ["describe the image ."] * 2, generator=torch.Generator().manual_seed(0),
                        cfg_schedule="constant")
    assert rec.shape == (2, 3, 32, 32)


def test_sampling_unmasks_every_token_once(batch):
    """MAR's cosine schedule: each iteration predicts a disjoint set; together they cover all 64 tokens."""
    _, prompts, _ = batch
    m = tiny(sample_iters=6).eval()
    counts = []
    orig = m._sample_tokens

    def spy(z, *a, **k):
        counts.append(z.shape[0])
        return orig(z, *a, **k)

    m._sample_tokens = spy
    m.sample(prompts[:2], generator=torch.Generator().manual_seed(0), guidance=2.0)
    assert len(counts) == 6 and sum(counts) == 2 * 64 and min(counts) >= 2


def test_real_autoencoder(batch):
    from reca_nb.encoders.autoencoder import AE_FILE

    if not AE_FILE.exists():
        pytest.skip("data/tokenizers/ae.safetensors not built yet")
    img, prompts, caps = batch
    m = HarmonMini(HarmonMiniConfig(**TINY))  # load_ae() on first use
    assert torch.isfinite(m.generation_loss(img, prompts)) and torch.isfinite(m.i2t_loss(img, caps))
    assert not any("vae" in k for k in m.state_dict())
    assert m.sample(prompts[:2], generator=torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)


class OracleHead(nn.Module):
    """eps of a point-mass target x0 = z[:, :4], plus a small constant error, within the +-4 range of the
    N(0, 1) noise it was trained on (a well-trained head, which cannot extrapolate to x_t far off N(0, 1))."""

    def __init__(self, alphas_cumprod, err=0.01):
        super().__init__()
        self.a, self.err = alphas_cumprod, err

    def forward(self, x, t, z):
        a = self.a[t.long()].to(x.dtype)[:, None]
        return ((x - a.sqrt() * z[:, :4]) / (1 - a).sqrt() + self.err).clamp(-4, 4)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_diffusion_sampler_is_stable(eta):
    """Small eps errors must not blow up (they do when sampling starts at t = 999 of the cosine schedule)."""
    m = tiny()
    m.diffloss = OracleHead(m.scheduler.alphas_cumprod)
    target = torch.randn(256, 32).clamp(-2.5, 2.5)
    x = m._sample_tokens(target, None, 1.0, 25, 1.0, eta, torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    err = (x - target[:, :4]).abs().flatten()
    assert err.quantile(0.99) < 0.1 and err.max() < 5, (err.quantile(0.99), err.max())  # trailing: max ~1900


def test_v_prediction_option(batch):
    img, prompts, _ = batch
    m = tiny(prediction_type="v_prediction")
    assert m.scheduler.config.prediction_type == "v_prediction"
    assert torch.isfinite(m.generation_loss(img, prompts))
    assert m.sample(prompts[:2], generator=torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="prediction_type"):
        tiny(prediction_type="x0")
