"""Architecture registry: one card per architecture, fresh builds and the shipped base checkpoints.

    model = registry.load_base("showo-clip")     # data/checkpoints/showo-clip.safetensors
    model = registry.build("janus", d_model=64)  # random init, config overrides
    registry.card("bagel").paradigm              # "decoupled": everything the name implies, in one place

An `ArchCard` holds what the RecA paper says about a family (its paradigm, the (und, target) resolution of
the official config, its optimiser, its GenEval line) next to what the miniature does with it (the class, the
optimiser scaled to a 1-5 M-parameter model, the pretraining steps). `recipe.preset` and `reproduce` read
these cards; `manifest()` / `image_size()` / `has_base()` / `base_fingerprint()` say what is shipped.

Two cards describe real checkpoints (`real=True`: Janus-Pro, OpenUni from hub parts). They are not in
`available()`, the list the sweep and the base pretraining loop over: load them with `load_real(name)`.

Extra architectures (your own UMM, or the test toy) register through the environment, comma-separated:
    RECA_NB_EXTRA_ARCHS="toy=tests.toy_umm:ToyUMM"      (name= optional; default: the class's `arch`)
They get a plain card: shared-model defaults, no paper values.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Literal

from reca_nb.paths import DATA_DIR

CHECKPOINT_DIR = DATA_DIR / "checkpoints"
EXTRA_ENV = "RECA_NB_EXTRA_ARCHS"


@dataclass(frozen=True)
class ArchCard:
    name: str  # registry name, e.g. "showo-vq"
    target: str  # "package.module:Class" (a mini's UMM class) or "package.module:load" (a real model)
    paradigm: Literal["shared", "decoupled"] = "shared"  # shared: one set of weights understands and
    #                                                      generates; decoupled: a separate understanding path
    defaults: dict = field(default_factory=dict)  # config fields the name implies (two Show-o variants)
    paper_res: tuple | None = None  # (minimum understanding input, generation target) of the official config
    scaled_optimiser: dict = field(default_factory=dict)  # the paper's optimiser scaled to the mini:
    #                                                       Recipe fields lr, betas, weight_decay, schedule,
    #                                                       warmup, steps
    pretrain_steps: int = 1200  # base pretraining steps (recipe.preset(arch, "pretrain"))
    paper_t2i: str = ""  # the paper's GenEval before -> after RecA (claim 1's paper column)
    real: bool = False  # a real checkpoint (hub weights), not a miniature
    reca: dict = field(default_factory=dict)  # real models: the whole RecA recipe (Recipe fields)


# The step counts and learning rates of the scaled optimisers: the paper runs 5000 steps (BAGEL 1000) at
# 5e-7..4e-5 on 1-14 B models that are already converged; a 1-5 M mini needs a larger step, so every mini
# trains 400 steps (BAGEL 200) at 5e-4. Warm-up keeps the paper's fraction of the run.
CARDS = {c.name: c for c in (
    # --- shared: one set of weights understands and generates (practice 4: mix I2T 1:1) ---------------------
    ArchCard(
        "showo-vq", "reca_nb.models.showo:ShowO", "shared", defaults={"variant": "vq"},
        paper_res=(256, 512),  # same MAGVIT tokenizer in and out: 256 in (down_scale 2); 512 in copies
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01, schedule="cosine", warmup=80,
                              steps=400),  # paper: lr 5e-7, betas (0.9, 0.999), wd 0.01, cosine, 1000 of 5000
        paper_t2i="Show-o VQ: 68.70 → 70.61 (+1.9; 256² input)",  # anchors C.3 (256 input)
    ),
    ArchCard(
        "showo-clip", "reca_nb.models.showo:ShowO", "shared", defaults={"variant": "clip"},
        paper_res=(336, 512),  # frozen CLIP ViT-L/14-336 features for 512 MAGVIT targets
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01, schedule="cosine", warmup=80,
                              steps=400),  # paper: lr 5e-7, betas (0.9, 0.999), wd 0.01, cosine, 1000 of 5000
        paper_t2i="Show-o-512 CLIP: 66.2 → 72.3 (+6.1)",  # anchors C.1
    ),
    ArchCard(
        "janus", "reca_nb.models.janus:JanusMini", "shared",
        paper_res=(384, 384),  # SigLIP in, VQ out at the same 384: a natural bottleneck (different spaces)
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.01, schedule="cosine", warmup=4,
                              steps=400),  # paper: no official RecA recipe for Janus; a Harmon-like guess
        pretrain_steps=2400,  # Janus's T2I learns slowest: 1200 steps leave its base near chance
        paper_t2i="no Janus run in the paper (repo TODO); family range +3.6…+14.4",
    ),
    ArchCard(
        "harmon", "reca_nb.models.harmon:HarmonMini", "shared",
        paper_res=(512, 512),  # MAR encoder on unmasked KL-16 latents vs masked target: semantic, no collapse
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.02, schedule="cosine", warmup=4,
                              steps=400),  # paper: lr 1e-5, betas (0.9, 0.95), wd 0.02, cosine, 1% of 5000
        paper_t2i="Harmon-1.5B: 72.9 → 85.7 (+12.8)",  # anchors C.1
    ),
    # --- decoupled: a separate understanding path (practice 3: freeze it; no I2T term) ---------------------
    ArchCard(
        "bagel", "reca_nb.models.bagel:BagelMini", "decoupled",
        paper_res=(224, 512),  # SigLIP2 NaViT at 224 (16x16 tokens) for 512-1024 FLUX-AE targets; 512: worse
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.0, schedule="constant", warmup=20,
                              steps=200),  # paper: lr 4e-5, wd 0, constant after 1000 warm-up of 1000 steps;
        #                                    the mini warms up for 10% instead
        paper_t2i="BAGEL: 78.8 → 82.4 (+3.6)",  # anchors C.1
    ),
    ArchCard(
        "openuni", "reca_nb.models.openuni:OpenUniMini", "decoupled",
        paper_res=(448, 512),  # InternViT at 448 (256 tokens) for 512 DC-AE targets
        scaled_optimiser=dict(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.05, schedule="cosine", warmup=4,
                              steps=400),  # paper: lr 1e-5, betas (0.9, 0.95), wd 0.05, cosine, 1% of 5000
        paper_t2i="OpenUni-2-1.6B: 61.9 → 74.1 (+12.2)",  # anchors C.1
    ),
    # --- real checkpoints: hub weights, trained on your own images (notebook 07) ---------------------------
    ArchCard(
        "janus-pro", "reca_nb.models.real.janus_pro:load", "shared", real=True,
        paper_res=(384, 384),  # SigLIP 384 in, VQ 384 out: the natural bottleneck, no downscale
        # RecA + I2T 1:1 (shared LLM), LoRA r=16 on the LLM + full generation head; lr 1e-4 is a LoRA rate
        # (the paper's full fine-tunes use 5e-7..4e-5); batch 4 fits a 16 GB GPU by reca_nb.memory's estimate
        reca=dict(stage="reca", und_res=0, freeze="lora", lora_r=16, i2t_ratio=1.0, lambda_reca=1.0,
                  lambda_i2t=1.0, lambda_t2i=0.0, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0, warmup=50,
                  schedule="cosine", steps=1000, batch=4, eval_every=0, save_every=0, keep_ckpts=1,
                  log_every=10),
    ),
    ArchCard(
        "openuni-real", "reca_nb.models.real.openuni:load", "decoupled", real=True,
        paper_res=(448, 512),  # InternViT at 448 for 512 DC-AE targets, as OpenUni
        # frozen VLM, no I2T (practice 3); lr 1e-5 as the paper's OpenUni run
        reca=dict(freeze="understanding", lambda_i2t=0.0, i2t_ratio=0.0, steps=75, batch=4, lr=1e-5, warmup=1,
                  log_every=1, save_every=0, eval_every=0),
    ),
)}
MINIS = tuple(name for name, c in CARDS.items() if not c.real)  # table order: shared, then decoupled
ARCHS = {name: CARDS[name].target for name in MINIS}  # name -> "package.module:Class"


def _extra() -> dict:
    out = {}
    for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
        name, _, target = spec.rpartition("=")
        out[name or _load(target).arch] = target
    return out


def available() -> tuple:
    """The miniatures, then the extra registrations: what pretraining and the sweep can run."""
    return MINIS + tuple(k for k in _extra() if k not in ARCHS)


def _load(target: str):
    module, _, cls = target.partition(":")
    if not cls:
        raise ValueError(f"architecture target must look like 'package.module:Class', got {target!r}")
    return getattr(importlib.import_module(module), cls)


def check(arch: str) -> str:
    """`arch` if it is registered, else a ValueError listing the valid names."""
    if arch not in available():
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(available())} "
                         f"(register your own with {EXTRA_ENV}='name=module:Class')")
    return arch


def card(arch: str) -> ArchCard:
    """The card of a mini or a real model; an extra registration gets a plain one (shared, no paper data)."""
    if arch in CARDS:
        return CARDS[arch]
    return ArchCard(check(arch), _extra()[arch])


def get_class(arch: str):
    """The UMM subclass for `arch` (imports its module on first use)."""
    return _load({**_extra(), **ARCHS}[check(arch)])


def build(arch: str, **overrides):
    """A freshly initialised model; `overrides` replace fields of the class's config dataclass."""
    cls = get_class(arch)
    cfg = cls.config_cls(**{**card(arch).defaults, **overrides})
    return cls(cfg)


def load_real(arch: str, **kwargs):
    """A real model through its card's loader, e.g. load_real("janus-pro", tiny=True)."""
    c = CARDS.get(arch)
    if c is None or not c.real:
        real = ", ".join(n for n, c in CARDS.items() if c.real)
        raise ValueError(f"{arch!r} is not a real model; valid: {real}")
    return _load(c.target)(**kwargs)


# ----------------------------------------------------------------------------- what is shipped

def base_path(arch: str):
    return CHECKPOINT_DIR / f"{arch}.safetensors"


def has_base(arch: str) -> bool:
    return base_path(arch).exists()


def manifest(arch: str) -> dict | None:
    """The MANIFEST.json entry of a shipped base (sha256, params, model_config, scores, ...), else None."""
    try:
        return json.loads((CHECKPOINT_DIR / "MANIFEST.json").read_text()).get(arch)
    except (OSError, ValueError):
        return None


def image_size(arch: str) -> int:
    """Generation resolution of the shipped base, 32 when unknown."""
    try:
        return int(manifest(arch)["model_config"]["image_size"])
    except (TypeError, KeyError, ValueError):
        return 32


def base_fingerprint(arch: str) -> str:
    """sha256 of the base from MANIFEST.json (regenerating a base invalidates its jobs), else size+mtime."""
    try:
        return manifest(arch)["sha256"]
    except (TypeError, KeyError):
        p = base_path(arch)
        return f"{p.stat().st_size}-{int(p.stat().st_mtime)}" if p.exists() else "missing"


def load_base(arch: str, path=None):
    """The pretrained base UMM that RecA starts from (the output of `python -m reca_nb.build.pretrain`)."""
    cls = get_class(arch)
    path = path or base_path(arch)
    if not os.path.exists(path):
        have = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors")) if CHECKPOINT_DIR.exists() else []
        raise FileNotFoundError(
            f"no base checkpoint for {arch!r} at {path}. Available: {', '.join(have) or 'none'}. "
            f"Make it with:  python -m reca_nb.build.pretrain --arch={arch}")
    model = cls.load(path)
    if cls.archs and model.arch != arch:  # one class, several names (Show-o): the file must be this one
        raise ValueError(f"{path} holds a {model.arch!r} checkpoint, not {arch!r}")
    return model


def real() -> tuple:
    """The hub models (cards with real=True); the miniatures are available()."""
    return tuple(name for name, c in CARDS.items() if c.real)


def load(arch: str, base: str = "default", seed: int = 0, **kw) -> tuple:
    """(model, where it came from) for any name: a hub model (kw: its loader's options, e.g. tiny=True), the
    shipped base (base="default"), a checkpoint file (base=PATH) or a fresh model (base="none", seeded by
    `seed`; kw: config overrides)."""
    if arch in real():
        if "tiny" in kw:
            kw["tiny"] = bool(kw["tiny"])
        label = kw.get("model_id") or ("tiny random twin" if kw.get("tiny") else "hub default")
        return load_real(arch, **kw), label
    if base == "none":
        import torch

        torch.manual_seed(seed)  # a fresh model is a function of the seed too
        return build(arch, **kw), base
    if kw:
        raise ValueError("config overrides (--model.*) need --base=none: a loaded checkpoint fixes the config")
    return load_base(arch, None if base == "default" else base), base
