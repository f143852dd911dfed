"""The UMM interface contract (reca_nb/models/umm.py), checked once for every model: ToyUMM, the six miniatures
at tiny size (stand-ins for the frozen CLIP / autoencoder where their own tests use them) and the tiny twins of
the two hub models. Architecture-specific behaviour (the MoT mask, MAR geometry, SDPA vs eager, ...) stays in
the per-model test files.

Every case runs on one batch of 8 ShapeWorld images: targets at 32 px, understanding inputs at the model's
und_size.
"""
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from reca_nb.models.bagel import BagelMini
from reca_nb.models.harmon import HarmonMini
from reca_nb.models.janus import JanusMini
from reca_nb.models.openuni import OpenUniMini
from reca_nb.models.real import janus_pro
from reca_nb.models.real import openuni as openuni_real
from reca_nb.models.showo import ShowO
from reca_nb.world.shapes import ShapeWorld
from tests import standins
from tests.standins import StandInAE, StandInCLIP
from tests.toy_umm import ToyUMM, toy

TEMPLATES = ["describe the image"] * 8


@dataclass
class Overfit:
    """AdamW on generation_loss + i2t_loss over the 8 images; afterwards the fixed-draw generation loss must be
    below `gen` x its start and the captioning CE below `i2t` x its start (None: not trained here)."""
    steps: int
    lr: float
    gen: float
    i2t: float | None
    build: dict = field(default_factory=dict)  # config overrides for this test (no condition dropout, ...)
    slow: bool = True
    captions_right: int = 0  # ... and at least this many of the 8 greedy captions exact


@dataclass
class Case:
    build: Callable  # (**config overrides) -> a fresh model
    reload: Callable  # path -> the model saved there (frozen parts attached again)
    und_embedding: tuple  # understanding_embedding(8 images at und_size).shape
    roots: dict  # {group: the set of first names of its parameters ("hf.model." dropped)}
    outside: set  # frozen parts the model uses but does not own: never in its state dict
    reca_grads: set  # groups that get gradients from reca_loss under freeze({"frozen", "understanding"})
    overfit: Overfit


def _seeded(build):
    def make(**kw):
        torch.manual_seed(0)
        return build(**kw)
    return make


CASES = {
    "toy": Case(
        build=lambda **kw: toy(**kw), reload=ToyUMM.load, und_embedding=(8, 64, 32),
        roots={"understanding": {"und_embed", "und_pos", "und_norm", "lm_head"},
               "generation": {"cond_proj", "gen_in", "gen_q", "gen_pos", "time_embed", "gen_out"},
               "shared": {"tok_embed", "txt_pos", "type_embed", "blocks", "ln_f"}, "frozen": {"codebook"}},
        outside=set(), reca_grads={"generation", "shared"},
        overfit=Overfit(steps=60, lr=3e-3, gen=0.5, i2t=0.1, slow=False)),
    "showo-vq": Case(
        build=_seeded(lambda **kw: standins.tiny_showo("vq", **kw)), reload=ShowO.load, und_embedding=(8, 64, 32),
        roots={"understanding": set(), "generation": set(), "frozen": set(),
               "shared": {"transformer", "type_emb", "row_emb", "col_emb", "head"}},
        outside={"vq"}, reca_grads={"shared"},
        # measured 5.5 -> 0.52 and 6.3 -> 0.025; 7-8 of 8 captions exact
        overfit=Overfit(steps=100, lr=3e-3, gen=0.3, i2t=0.1, captions_right=6,
                        build=dict(d_model=64, n_heads=4, d_ff=256, cond_dropout=0.0))),
    "showo-clip": Case(
        build=_seeded(lambda **kw: standins.tiny_showo("clip", **kw)), reload=ShowO.load,
        und_embedding=(8, 64, 32),
        roots={"understanding": {"mm_projector"}, "generation": set(), "frozen": set(),
               "shared": {"transformer", "type_emb", "row_emb", "col_emb", "head"}},
        outside={"vq", "clip"}, reca_grads={"shared"},
        overfit=Overfit(steps=100, lr=3e-3, gen=0.3, i2t=0.1,
                        build=dict(d_model=64, n_heads=4, d_ff=256, cond_dropout=0.0))),
    "janus": Case(
        build=_seeded(standins.tiny_janus), reload=JanusMini.load, und_embedding=(8, 16, 32),
        roots={"understanding": {"aligner", "vision_model"},
               "generation": {"generation_aligner", "generation_embeddings", "generation_head"},
               "shared": {"language_model"}, "frozen": {"vqmodel"}},
        outside=set(), reca_grads={"generation", "shared"},
        # measured on the training losses: image CE 5.54 -> 2.15, caption CE 6.15 -> 0.68
        overfit=Overfit(steps=100, lr=3e-3, gen=0.5, i2t=0.2, build=dict(cfg_dropout=0.0))),
    "harmon": Case(
        build=_seeded(standins.tiny_harmon), reload=lambda p: HarmonMini.load(p).attach(ae=StandInAE()),
        und_embedding=(8, 64 + 2, 64),  # 64 latent tokens + 2 buffer tokens
        roots={"understanding": set(), "frozen": set(),
               "generation": {"decoder", "decoder_embed", "dec_pos", "dec_pos_buffer", "diffloss", "diffusion_pos",
                              "mask_token", "proj_out"},
               "shared": {"encoder", "enc_pos", "enc_pos_buffer", "buffer_embed", "llm", "proj_in", "z_proj",
                          "z_proj_ln"}},
        outside={"ae"}, reca_grads={"generation", "shared"},
        # measured: diffusion 1.004 -> 0.094, I2T CE 6.18 -> 0.047
        overfit=Overfit(steps=100, lr=2e-3, gen=0.25, i2t=0.05)),
    "bagel": Case(
        build=standins.tiny_bagel,
        reload=lambda p: BagelMini.load(p).attach(clip=StandInCLIP(), ae=StandInAE()),
        und_embedding=(8, 16, 64),  # 16 px / 4 -> 4x4 ViT tokens
        roots={"understanding": {"connector", "embed_tokens", "layers", "lm_head", "norm"},  # layers.*.und
               "generation": {"latent_pos_embed", "layers", "llm2vae", "norm_gen", "time_embedder", "vae2llm"},
               "shared": set(), "frozen": set()},
        outside={"clip", "ae"}, reca_grads={"generation"},
        # measured: flow x0.14, CE x0.008
        overfit=Overfit(steps=100, lr=2e-3, gen=0.3, i2t=0.05)),
    "openuni": Case(
        build=standins.tiny_openuni,
        reload=lambda p: OpenUniMini.load(p).attach(clip=StandInCLIP(), ae=StandInAE()),
        und_embedding=(8, 49, 64),  # 28 px / 4 -> 7x7 CLIP tokens
        roots={"understanding": {"llm", "projector"}, "generation": {"connector", "dit", "queries"},
               "shared": set(), "frozen": {"text_encoder"}},
        outside={"clip", "ae"}, reca_grads={"generation"},
        # measured: flow x0.17, CE x0.10
        overfit=Overfit(steps=60, lr=2e-3, gen=0.35, i2t=0.3)),
    "janus-pro": Case(
        build=lambda **kw: janus_pro.load(tiny=True, **kw), reload=janus_pro.JanusPro.load,
        und_embedding=(8, 16, 64),
        roots={"understanding": {"aligner", "vision_model"},
               "generation": {"generation_aligner", "generation_embeddings", "generation_head"},
               "shared": {"language_model"}, "frozen": {"vqmodel"}},
        outside=set(), reca_grads={"generation", "shared"},
        # the Janus miniature's thresholds; measured here: image CE 4.16 -> 0.82, caption CE 5.59 -> 0.12
        overfit=Overfit(steps=100, lr=3e-3, gen=0.5, i2t=0.2, build=dict(cfg_dropout=0.0))),
    "openuni-real": Case(
        build=_seeded(lambda **kw: openuni_real.load(tiny=True, device="cpu", **kw)),
        reload=lambda p: openuni_real.OpenUniReal.load(p, device="cpu"), und_embedding=(8, 16, 64),
        roots={"understanding": {"vlm"}, "generation": {"connector", "dit", "queries"}, "shared": set(),
               "frozen": {"vae"}},
        outside=set(), reca_grads={"generation"},
        # the VLM is OpenUni's frozen one (no I2T here); the threshold of its former 4-image RecA overfit test
        overfit=Overfit(steps=40, lr=3e-3, gen=0.5, i2t=None)),
}
ARCHS = list(CASES)


@pytest.fixture(scope="module")
def batch():
    items = [ShapeWorld(8, seed=3)[i] for i in range(8)]
    img = torch.stack([x["image"] for x in items])  # (8, 3, 32, 32)
    return img, [x["prompt"] for x in items], [x["description"] for x in items]


def und_images(model, img):
    return F.interpolate(img, size=model.und_size, mode="area")


def roots(names):
    """The first name of each parameter path, below a transformers wrapper ("hf.model.vqmodel.x" -> "vqmodel")."""
    return {n.removeprefix("hf.model.").split(".")[0] for n in names}


def test_every_registered_arch_has_a_case():
    from reca_nb.models import registry

    assert set(registry.ARCHS) | {"toy", "janus-pro", "openuni-real"} == set(CASES)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_of_embedding_sample_and_caption(arch, batch):
    img, prompts, _ = batch
    case, m = CASES[arch], CASES[arch].build().eval()
    und = und_images(m, img)
    assert (m.image_size, tuple(m.understanding_embedding(und).shape)) == (32, case.und_embedding)
    x = m.sample(prompts[:2], generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, m.sample(prompts[:2], generator=torch.Generator().manual_seed(0)))  # seeded
    assert m.reconstruct(und[:2], TEMPLATES[:2], generator=torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
    short = m.caption(und[:2], max_len=3)
    assert len(short) == 2 and all(isinstance(c, str) and len(c.split()) <= 3 for c in short)
    own = m.caption(und[:2], max_len=None)  # the model's own length limit
    assert len(own) == 2 and all(isinstance(c, str) for c in own)


@pytest.mark.parametrize("arch", ARCHS)
def test_losses_are_finite_positive_scalars(arch, batch):
    img, prompts, caps = batch
    m = CASES[arch].build()
    und = und_images(m, img)
    cond = m.understanding_embedding(und)
    losses = {"t2i": m.generation_loss(img, prompts), "t2i_cond": m.generation_loss(img, TEMPLATES, cond=cond),
              "i2t": m.i2t_loss(und, caps), "reca": m.reca_loss(und, TEMPLATES, img)}
    bad = {k: v for k, v in losses.items() if not (v.ndim == 0 and torch.isfinite(v) and v.item() > 0)}
    assert bad == {}


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_groups_cover_every_parameter_once(arch):
    case, m = CASES[arch], CASES[arch].build()
    m.check_groups()
    groups = m.parameter_groups()
    assert {g: roots(names) for g, names in groups.items()} == case.roots
    assert sorted(n for names in groups.values() for n in names) == sorted(n for n, _ in m.named_parameters())
    # frozen parts the model does not own are reachable, and never saved with it
    assert all(getattr(m, part) is not None for part in case.outside)
    assert {k for k in m.state_dict() if k.split(".")[0] in case.outside | {"_frozen"}} == set()


@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_sets_requires_grad_by_group(arch, batch):
    img, _, _ = batch
    case, m = CASES[arch], CASES[arch].build()
    groups = m.parameter_groups()
    for frozen in ({"frozen"}, {"frozen", "generation"}, {"frozen", "understanding"}):
        m.freeze(frozen)
        expected = {n for g in frozen for n in groups[g]}
        assert {n for n, p in m.named_parameters() if not p.requires_grad} == expected, frozen
    # RecA's practice 3: with the understanding group frozen, reca_loss trains nothing of it
    und = und_images(m, img)
    m.reca_loss(und, TEMPLATES, img).backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None}
    assert {g for g, names in groups.items() if with_grad & set(names)} == case.reca_grads


@pytest.mark.parametrize("arch", ARCHS)
def test_device_is_where_the_parameters_are(arch):
    m = CASES[arch].build()
    assert {p.device for p in m.parameters()} == {m.device} == {torch.device("cpu")}


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, batch, tmp_path):
    img, prompts, caps = batch
    case, m = CASES[arch], CASES[arch].build().eval()
    m.save(tmp_path / "model.safetensors")
    m2 = case.reload(tmp_path / "model.safetensors").eval()
    assert (type(m2), m2.arch, m2.config) == (type(m), m.arch, m.config)
    before, after = m.state_dict(), m2.state_dict()
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    und = und_images(m, img)

    def outputs(model):
        torch.manual_seed(0)
        with torch.no_grad():
            return dict(embedding=model.understanding_embedding(und), t2i=model.generation_loss(img, prompts),
                        i2t=model.i2t_loss(und, caps),
                        sample=model.sample(prompts[:2], generator=torch.Generator().manual_seed(3)),
                        caption=model.caption(und[:2], max_len=4))

    a, b = outputs(m), outputs(m2)
    assert {k: (a[k] == b[k]) if k == "caption" else torch.equal(a[k], b[k]) for k in a} == dict.fromkeys(a, True)


def _overfit_params():
    return [pytest.param(arch, marks=[pytest.mark.slow] if case.overfit.slow else [], id=arch)
            for arch, case in CASES.items()]


@pytest.mark.parametrize("arch", _overfit_params())
def test_overfits_eight_images(arch, batch):
    img, prompts, caps = batch
    spec = CASES[arch].overfit
    m = CASES[arch].build(**spec.build)
    und = und_images(m, img)

    def fixed_losses():
        """Mean generation loss over 4 fixed draws of masks / timesteps / noise (eval: no condition dropout),
        and the captioning CE."""
        m.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            gen = sum(m.generation_loss(img, prompts).item() for _ in range(4)) / 4
            i2t = m.i2t_loss(und, caps).item()
        m.train()
        return gen, i2t

    gen0, i2t0 = fixed_losses()
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=spec.lr)
    for _ in range(spec.steps):
        loss = m.generation_loss(img, prompts) + (m.i2t_loss(und, caps) if spec.i2t else 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen1, i2t1 = fixed_losses()
    assert gen1 < spec.gen * gen0, (gen0, gen1)
    if spec.i2t:
        assert i2t1 < spec.i2t * i2t0, (i2t0, i2t1)
    if spec.captions_right:
        right = sum(c == d for c, d in zip(m.eval().caption(und), caps))
        assert right >= spec.captions_right, list(zip(m.caption(und), caps))
