"""The RecA recipe: every knob of the post-training run in one dataclass, plus per-architecture presets.

RecA (arXiv 2509.07295, Sec. 3) trains  L = λ_RecA·L_RecA + λ_i2t·L_i2t + λ_t2i·L_t2i  where L_RecA asks the
generation path to reconstruct an unlabelled image from the model's own understanding embedding of it plus a
"describe the image" template. The four practices map onto fields:
  (1) information bottleneck  -> und_res, blur_sigma      (2) diverse templates -> prompts
  (3) freeze understanding    -> freeze                    (4) mix I2T data      -> i2t_ratio, lambda_i2t
Paper values (read from the official configs, /work/shared/research/reca_anchors.md) are quoted in comments;
the presets scale step counts and learning rates to 1-5 M-parameter miniatures on a laptop CPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from reca_nb.config import check_choices
from reca_nb.models import registry

# ----------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    # --- what is trained -----------------------------------------------------------------------------
    arch: str = "showo-clip"  # registry name (reca_nb.models.registry.CARDS)
    stage: Literal["reca", "pretrain", "control"] = "reca"  # label only: which kind of run this is
    # --- practice 1: information bottleneck on the understanding input -------------------------------
    und_res: int = 0  # understanding input resolution; 0 = the model's native und_size. Paper: BAGEL ViT
    #                   224 for 512 targets, Show-o VQ 256 for 512 (512 collapses); see ArchCard.paper_res
    blur_sigma: float = 0.0  # Gaussian blur (pixels at und_res) on the understanding input; 0 = none.
    #                          Paper: Show-o "blur8" = down 8x and back up, the fallback bottleneck
    i2t_und_res: tuple = ()  # I2T-only: cycle the und input through these resolutions (pretraining teaches
    #                          the understanding path every bottleneck size); () = use und_res
    # --- practice 2: prompt templates -----------------------------------------------------------------
    prompts: Literal["diverse", "single"] = "diverse"  # paper: one of ~360 templates per sample; "single" =
    #                                                     the ablation's "Describe the image."
    # --- practice 3: what stays frozen ----------------------------------------------------------------
    freeze: Literal["none", "understanding", "lora"] = "none"  # paper: BAGEL/OpenUni freeze understanding,
    #                                                            the rest full fine-tune; no LoRA anywhere
    lora_r: int = 8  # LoRA rank when freeze="lora" (OpenUni's unused option: r=8, alpha=8)
    # --- practice 4 and the loss ----------------------------------------------------------------------
    i2t_ratio: float = 1.0  # I2T samples per RecA sample. Paper: 1:1 for Show-o / Harmon (and Janus)
    lambda_reca: float = 1.0  # paper: 1
    lambda_i2t: float = 1.0  # paper: 1 for shared-parameter models, 0 for decoupled ones
    lambda_t2i: float = 0.0  # paper: 0 (no captioned data during RecA)
    # --- optimisation ---------------------------------------------------------------------------------
    lr: float = 5e-4  # paper: 5e-7 (Show-o) .. 1e-5 (Harmon, OpenUni) .. 4e-5 (BAGEL); minis need more
    betas: tuple[float, float] = (0.9, 0.95)  # paper: (0.9, 0.95); Show-o (0.9, 0.999)
    weight_decay: float = 0.01  # on >=2-D weights only. Paper: 0 BAGEL, .01 Show-o, .02 Harmon, .05 OpenUni
    grad_clip: float = 1.0  # global grad-norm clip; paper: 1.0 everywhere (0 = off)
    warmup: int = 10  # linear warm-up steps. Paper: 1% (Harmon, OpenUni), 1000 (Show-o, BAGEL)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up. Paper: cosine; BAGEL constant
    steps: int = 400  # optimizer steps. Paper: 5000 (Show-o, Harmon, OpenUni), 1000 (BAGEL)
    batch: int = 32  # RecA samples per step (I2T batch = round(i2t_ratio * batch))
    seed: int = 0  # model-side randomness (masking, noise, dropout) and the batch sampler
    # --- data (reca_nb.world.data) --------------------------------------------------------------------------
    n_images: int = 4000  # unlabelled pool for RecA, also the I2T pool. Paper: 10K (BAGEL) .. MidjourneyV6
    n_t2i_pairs: int = 300  # captioned pool for T2I; small, so the base has T2I headroom
    data_seed: int = 0  # which shape-world pool (rendered at the model's image_size)
    # --- world options (reca_nb.world.data; off by default, and then absent from fingerprints) ------------
    i2t_fact_p: float = 0.0  # share of I2T captions followed by one true relation / count / colour-shape
    #                          sentence in the eval's words (shapes.fact_sentence), as VLM captions state them
    t2i_sparse_p: float = 0.0  # T2I prompts lose their relation, count and binding with this probability
    #                            (shapes.sparse_prompt): web alt-text names objects and omits the rest
    t2i_view_p: float = 0.0  # share of T2I samples whose generator also reads the und tokens of a different,
    #                          jittered render of the scene at the RecA bottleneck (BAGEL's editing /
    #                          interleaved data, where the generation expert reads ViT tokens)
    view_jitter: float = 2.0  # jitter amplitude of that render (shapes.render jitter_scale; targets use 1)
    # --- bookkeeping ----------------------------------------------------------------------------------
    eval_every: int = 0  # evaluate T2I (GenEval-mini) + I2T every N steps and at the end; 0 = never
    eval_n: int = 60  # eval prompts / images per evaluation (T2I: eval_n // 6 per category)
    save_every: int = 100  # checkpoint every N steps (also at the end, on Ctrl-C, on a stop); 0 = end only
    keep_ckpts: int = 2  # how many step checkpoints to keep in out_dir
    log_every: int = 10  # one history row per N steps (losses averaged over the window)
    collapse_stop: bool = False  # stop early when the collapse monitor fires (reca_nb.collapse)
    collapse_threshold: float = 0.05  # collapse when RecA loss / reference falls below this
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" (accelerate picks), "cpu" or "cuda"

    def __post_init__(self):
        check_choices(self)
        for name in ("steps", "batch", "n_images", "n_t2i_pairs", "warmup", "und_res", "lora_r",
                     "eval_every", "eval_n", "save_every", "keep_ckpts", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"Recipe.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch == 0 or self.log_every == 0 or self.keep_ckpts == 0:
            raise ValueError("Recipe.batch, log_every and keep_ckpts must be positive")
        if min(self.lambda_reca, self.lambda_i2t, self.lambda_t2i, self.i2t_ratio, self.blur_sigma) < 0:
            raise ValueError("lambdas, i2t_ratio and blur_sigma must be >= 0")
        for name in ("i2t_fact_p", "t2i_sparse_p", "t2i_view_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Recipe.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.view_jitter < 0:
            raise ValueError(f"Recipe.view_jitter must be >= 0, got {self.view_jitter}")

    # --- derived ---------------------------------------------------------------------------------------
    def key(self) -> dict:
        """asdict(self) without the world options that are at their defaults: what fingerprints and resume
        checks compare, so every job and checkpoint made before those options existed keeps its identity."""
        d = asdict(self)
        for name, default in WORLD_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @property
    def i2t_batch(self) -> int:
        return round(self.i2t_ratio * self.batch) if self.lambda_i2t > 0 else 0

    @property
    def active_terms(self) -> tuple:
        """Loss terms with a non-zero weight, in loop order; terms with λ=0 are never computed."""
        lam = {"reca": self.lambda_reca, "i2t": self.lambda_i2t if self.i2t_batch else 0.0,
               "t2i": self.lambda_t2i}
        return tuple(k for k, v in lam.items() if v > 0)

    def und_transform(self, images: torch.Tensor, und_size: int | None = None, res: int | None = None):
        """The bottleneck: resize (antialiased bilinear) to the understanding resolution, then blur.

        images: (B, 3, S, S) in [0, 1]. The resolution is `res`, else und_res, else `und_size` (the model's
        native one), else S. Same size -> no resize; blur_sigma is in pixels of the output resolution.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"und_transform expects (B, 3, H, W) images, got {tuple(images.shape)}")
        res = res or self.und_res or und_size or images.shape[-1]
        if images.shape[-2:] != (res, res):
            images = F.interpolate(images, size=(res, res), mode="bilinear", antialias=True,
                                   align_corners=False)
        if self.blur_sigma > 0:
            images = gaussian_blur(images, self.blur_sigma)
        return images.clamp(0, 1)


# fields added with the world options, and their defaults (Recipe.key() leaves them out while unset)
WORLD_FIELDS = {"i2t_fact_p": 0.0, "t2i_sparse_p": 0.0, "t2i_view_p": 0.0, "view_jitter": 2.0}


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel radius ceil(3 sigma), reflect padding. (B, C, H, W) -> same."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, images.shape[-1] - 1)  # reflect padding needs pad < size
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    C = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)  # horizontal
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)  # vertical


# ----------------------------------------------------------------------------- per-architecture presets

# The paper's values per family (resolutions, optimisers, paradigm) live on the registry's cards
# (reca_nb.models.registry.CARDS); these names are views of them for existing callers.
SHARED = tuple(n for n in registry.MINIS if registry.CARDS[n].paradigm == "shared")  # one set of weights
DECOUPLED = tuple(n for n in registry.MINIS if registry.CARDS[n].paradigm == "decoupled")  # separate und path
REAL_UND_RES = {n: registry.CARDS[n].paper_res for n in registry.MINIS}  # (und, target) of the paper
PRESETS = ("reca", "pretrain", "control", "ci", "colab")


def mini_und_res(arch: str, image_size: int = 32) -> int:
    """The paper's input/target ratio applied to a miniature, rounded half-up to a multiple of 4 (patch size).

    32-px minis: bagel 16, showo-vq 16, showo-clip 20, janus 32, harmon 32, openuni 28."""
    if arch not in REAL_UND_RES:
        return image_size
    und, target = REAL_UND_RES[arch]
    return max(4, 4 * math.floor(image_size * und / target / 4 + 0.5))


def preset(arch: str, name: str = "reca", image_size: int = 32) -> Recipe:
    """Named recipe for an architecture: "reca" (the official recipe, scaled), "pretrain" (T2I + I2T base
    training, no RecA), "control" (the RecA run minus the RecA term), "ci" (seconds), "colab" (GPU,
    longer). Real models (registry cards with real=True) have only "reca". Architectures without a card
    (e.g. a registered test toy) get shared-model defaults."""
    card = registry.card(arch)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    if card.real:
        if name != "reca":
            raise ValueError(f"{arch} is a real model: its only preset is 'reca', got {name!r}")
        return Recipe(arch=arch, **card.reca)
    decoupled = card.paradigm == "decoupled"
    base = Recipe(arch=arch)
    if name == "pretrain":  # the base UMM: captioned T2I (small pool) + I2T at every bottleneck size
        small = mini_und_res(arch, image_size)
        return replace(base, stage="pretrain", lambda_reca=0.0, lambda_t2i=1.0, lambda_i2t=1.0, i2t_ratio=1.0,
                       freeze="none", lr=2e-3, betas=(0.9, 0.95), weight_decay=0.01, schedule="cosine",
                       warmup=50, i2t_und_res=tuple(sorted({image_size, small}, reverse=True)),
                       save_every=200,
                       # 2000 captioned pairs: with 300 the base stays near chance, with no T2I headroom
                       n_t2i_pairs=2000, steps=card.pretrain_steps)
    reca = replace(base, und_res=mini_und_res(arch, image_size), **card.scaled_optimiser,
                   freeze="understanding" if decoupled else "none",  # practice 3
                   lambda_i2t=0.0 if decoupled else 1.0, i2t_ratio=0.0 if decoupled else 1.0)  # practice 4
    if name == "reca":
        return reca
    if name == "control":  # identical run without the RecA term; decoupled models have no other term, so
        #                    their control is the base model itself (steps=0: train() returns at once)
        ctl = replace(reca, stage="control", lambda_reca=0.0)
        return ctl if ctl.active_terms else replace(ctl, steps=0)
    if name == "ci":  # a few seconds: the loop, not the science
        return replace(reca, steps=6, batch=4, warmup=2, n_images=64, n_t2i_pairs=16, eval_every=0,
                       save_every=3, log_every=1)
    # colab: a free GPU, so 2.5x the steps and 2x the batch
    return replace(reca, steps=int(2.5 * reca.steps), batch=2 * reca.batch, n_images=20000,
                   warmup=int(2.5 * reca.warmup), eval_every=250)
