"""Train the GenEval-mini detector (reca_nb.evaluation.geneval.SlotScorer): data/scorer/scorer.safetensors.

    python -m reca_nb.build.fit_scorer           # minutes on a CPU; the same bytes on every re-run
    python -m reca_nb.build.fit_scorer --help    # every key (the fields of Options and FitConfig)

GenEval trusts its detector because the detector was trained on far more varied images than the
generators produce. We imitate that: the training set is shape-world renders (both dataset kinds, many
seeds, rendered at 32 and 64) plus, when the shipped tokenizers exist (data/tokenizers/*.safetensors),
their VQ and AE reconstructions, and every batch is corrupted with artefacts a miniature generator makes:
blur, down-up sampling, pixel noise, colour jitter, 4x4 block averaging / block colour noise (patch
quantisation), and shifts and rescales. A few pure-noise images labelled "all cells empty" teach
the detector that texture is not an object.

A miniature generator also gets shapes *almost* right, and GenEval's COCO detector is robust to the same
things, so the data covers them too (labels follow from how each image is made):
  * layout: objects a few pixels off their cell centre (scenes rendered with up to 3x the usual per-object
    jitter, and whole-image shifts of up to a quarter cell); an object belongs to the cell holding its centre;
  * soft corners: squares rendered with rounded corners (up to 0.6 of the half-side) are still squares;
  * debris: palette-coloured specks far smaller than any shape, dropped into empty cells, leave them empty;
  * collapse: a flat field of one colour (a palette colour or any other) holds no object.

Training seeds (TRAIN_SEED + k) never overlap the evaluation seeds (geneval_prompts: 10_000, evaluate_i2t:
20_000, tests: 9xx_xxx).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reca_nb.config import apply_overrides, cli, describe, run_main
from reca_nb.evaluation import geneval
from reca_nb.paths import DATA_DIR
from reca_nb.world import shapes

TRAIN_SEED = 7_000_000
RECON_MIX = (("prompted", 32, 0.4), ("random", 32, 0.4), ("random", 64, 0.2))  # (kind, render size, share)


@dataclass(frozen=True)
class FitConfig:
    n_prompted: int = 5_000  # prompted-kind scenes rendered at 32
    n_random: int = 5_000  # random-kind scenes rendered at 32
    n_large: int = 1_000  # scenes rendered at 64 (area-downsampled, like scoring a 64x64 generator)
    n_recon: int = 1_200  # scenes passed through each shipped tokenizer (VQ, AE), split as RECON_MIX
    n_variants: int = 3_000  # scenes rendered at 32 with wider per-object jitter and rounded squares
    max_jitter: float = 3.0  # variants' jitter_scale ~ U(1, max_jitter) (3: objects up to ~3 px off centre)
    max_corner: float = 0.6  # rounded-square corner ~ U(0, max_corner) of the half-side, in half the variants
    shift_px: float = 4.0  # whole-image shift in augment, up to +-shift_px pixels at 32 px per axis
    fragment_p: float = 0.3  # probability that an empty cell gets 1-2 specks (still labelled empty)
    steps: int = 300  # optimizer steps (one-cycle schedule)
    batch: int = 96  # images per step, noise images included
    lr: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    noise_frac: float = 0.08  # fraction of each batch replaced by noise / flat-colour "empty" images
    seed: int = 0  # initialisation, batch sampling and augmentation
    tokenizers: str = "auto"  # "auto": use data/tokenizers/{vq,ae}.safetensors if present; "none"


# ----------------------------------------------------------------------------- data

def render_set(n: int, kind: str, size: int, seed: int, to32: bool = True):
    """n renders of one ShapeWorld -> (images (n,3,S,S) float, labels (n,4) long); area-resized to 32."""
    ds = shapes.ShapeWorld(n, seed=seed, size=size, kind=kind)
    x = ds.images()
    if to32 and size != 32:
        x = F.interpolate(x, size=(32, 32), mode="area")
    y = torch.tensor([geneval.slot_labels(ds.scene(i).objects) for i in range(n)])
    return x, y


def variant_set(n: int, cfg: FitConfig, seed: int):
    """n renders at 32 with per-scene jitter_scale ~ U(1, max_jitter) and, in half of them, rounded
    squares."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        sc = shapes.random_scene(rng) if i % 2 else shapes.sample_scene(rng)
        corner = float(rng.uniform(0, cfg.max_corner)) if rng.random() < 0.5 else 0.0
        img = shapes.render(sc, 32, jitter_seed=[seed, i], jitter_scale=float(rng.uniform(1, cfg.max_jitter)),
                            corner=corner)
        xs.append(shapes.to_tensor(img))
        ys.append(geneval.slot_labels(sc.objects))
    return torch.stack(xs), torch.tensor(ys)


def shipped_tokenizers(cfg: FitConfig) -> dict:
    """{name: reconstruct function} for the tokenizers shipped in data/tokenizers/ (VQ, AE)."""
    todo = {}
    if cfg.tokenizers == "none":
        return todo
    if (DATA_DIR / "tokenizers" / "vq.safetensors").exists():
        from reca_nb.encoders.vq import load_vq
        todo["vq"] = load_vq().reconstruct
    if (DATA_DIR / "tokenizers" / "ae.safetensors").exists():
        from reca_nb.encoders.autoencoder import load_ae
        todo["ae"] = lambda x: load_ae().decode(load_ae().encode(x))
    return todo


def tokenizer_recons(cfg: FitConfig) -> dict:
    """{name: (images, labels)}: reconstructions through the shipped tokenizers (at 32 and at 64)."""
    todo = shipped_tokenizers(cfg)
    out = {}
    for k, (name, rec) in enumerate(todo.items()):
        xs, ys = [], []
        for j, (kind, size, frac) in enumerate(RECON_MIX):
            n = int(cfg.n_recon * frac)
            if n == 0:
                continue
            x, y = render_set(n, kind, size, TRAIN_SEED + 100 + 10 * k + j, to32=False)
            with torch.no_grad():
                r = torch.cat([rec(x[i:i + 250]) for i in range(0, len(x), 250)])
            xs.append(F.interpolate(r, size=(32, 32), mode="area") if size != 32 else r)
            ys.append(y)
        if xs:
            out[name] = (torch.cat(xs).clamp(0, 1), torch.cat(ys))
    return out


def noise_images(n: int, g: torch.Generator) -> torch.Tensor:
    """Images with no object (n, 3, 32, 32): uniform, Gaussian-blurred, blocky and smooth colour noise, and
    flat fields of one colour (a palette colour or a random one, with a faint gradient and pixel noise)."""
    u = torch.rand(n, 3, 32, 32, generator=g)
    kind = torch.randint(0, 5, (n, 1, 1, 1), generator=g)
    blurred = gaussian_blur(torch.randn(n, 3, 32, 32, generator=g) * 0.3 + 0.5, torch.full((n,), 1.5))
    blocky = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="nearest")
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear",
                           align_corners=False)
    palette = torch.tensor(list(shapes.COLORS.values()), dtype=torch.float32) / 255.0  # (6, 3)
    rgb = torch.where(torch.rand(n, 1, generator=g) < 0.7,
                      palette[torch.randint(0, len(palette), (n,), generator=g)],
                      torch.rand(n, 3, generator=g))
    ramp = torch.linspace(-1, 1, 32)
    tilt = (torch.rand(n, 2, 1, 1, generator=g) - 0.5) * 0.2  # up to +-0.1 brightness across the image
    flat = (rgb[:, :, None, None] * (1 + tilt[:, :1] * ramp[:, None] + tilt[:, 1:] * ramp[None, :])
            + torch.randn(n, 3, 32, 32, generator=g) * 0.02)
    scale = torch.rand(n, 1, 1, 1, generator=g) * 0.9 + 0.1  # dim to bright
    scale = torch.where(kind == 4, 0.5 + 0.55 * scale, scale)  # flat fields stay clearly coloured
    x = torch.where(kind == 0, u,
                    torch.where(kind == 1, blurred.clamp(0, 1),
                                torch.where(kind == 2, blocky, torch.where(kind == 3, smooth, flat))))
    return (x * scale).clamp(0, 1)


def add_fragments(x: torch.Tensor, y: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Drop 1-2 palette-coloured specks (1-3.6 px across at 32 px; the smallest shape is ~9 px) into each
    empty cell (label 0) with probability p; labels are unchanged. Specks are soft ellipses or small boxes."""
    B = x.shape[0]
    palette = torch.tensor(list(shapes.COLORS.values()), dtype=torch.float32) / 255.0
    yy, xx = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
    x = x.clone()
    for k in range(geneval.N_SLOTS):
        for j in range(2):
            on = (y[:, k] == 0) & (torch.rand(B, generator=g) < (p if j == 0 else p / 2))
            cy = (k // 2) * 16 + 2 + torch.rand(B, generator=g) * 12
            cx = (k % 2) * 16 + 2 + torch.rand(B, generator=g) * 12
            r = 0.5 + torch.rand(B, 2, generator=g) * 1.3  # half-axes in px
            dy = (yy - cy.view(B, 1, 1)).abs() / r[:, 0].view(B, 1, 1)
            dx = (xx - cx.view(B, 1, 1)).abs() / r[:, 1].view(B, 1, 1)
            box = torch.rand(B, 1, 1, generator=g) < 0.3
            d = torch.where(box, torch.maximum(dx, dy), (dx ** 2 + dy ** 2).sqrt())
            # a soft edge about 1 px wide
            alpha = ((1 - d) * r.min(1).values.view(B, 1, 1) + 0.5).clamp(0, 1) * on.view(B, 1, 1)
            colour = palette[torch.randint(0, len(palette), (B,), generator=g)].view(B, 3, 1, 1)
            x = x * (1 - alpha[:, None]) + colour * alpha[:, None]
    return x


# ----------------------------------------------------------------------------- artefacts

def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur, sigma (B,) in pixels; separable 7-tap kernel."""
    B, C, H, W = x.shape
    t = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, 7)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="reflect"), k[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="reflect"), k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def augment(x: torch.Tensor, g: torch.Generator, shift_px: float = 4.0) -> torch.Tensor:
    """Generator/tokenizer-like corruptions, each applied to a random subset of the batch (B, 3, 32, 32)."""
    B = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    pick = lambda p: (rand(B) < p).view(B, 1, 1, 1)  # noqa: E731

    # shift + rescale (object centres stay inside their cell; edges may cross it or leave the image)
    theta = torch.zeros(B, 2, 3)
    scale = 1 + (rand(B) - 0.5) * 0.2
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (rand(B, 2) - 0.5) * 2 * (shift_px / 16)  # +-shift_px px in normalised coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.where(pick(0.7), F.grid_sample(x, grid, padding_mode="zeros", align_corners=False), x)
    # colour jitter: per-channel gain, brightness offset, partial desaturation
    gain = 1 + (rand(B, 3, 1, 1) - 0.5) * 0.3
    grey = x.mean(1, keepdim=True)
    desat = rand(B, 1, 1, 1) * 0.25
    jit = ((x * gain) * (1 - desat) + grey * desat + (rand(B, 1, 1, 1) - 0.5) * 0.1).clamp(0, 1)
    x = torch.where(pick(0.5), jit, x)
    # down-up sampling (a low-resolution generator upscaled)
    r = int(torch.randint(10, 25, (1,), generator=g))
    du = F.interpolate(F.interpolate(x, size=(r, r), mode="area"), size=(32, 32), mode="bilinear",
                       align_corners=False)
    x = torch.where(pick(0.3), du, x)
    # blur
    x = torch.where(pick(0.3), gaussian_blur(x, 0.3 + rand(B) * 1.0), x)
    # patch quantisation: block averaging blended in, and per-block colour noise
    k = 4 if rand(1) < 0.6 else 2
    blocks = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")
    a = 0.3 + 0.7 * rand(B, 1, 1, 1)
    x = torch.where(pick(0.3), a * blocks + (1 - a) * x, x)
    bn = F.interpolate(torch.randn(B, 3, 8, 8, generator=g), scale_factor=4, mode="nearest")
    x = torch.where(pick(0.2), x + bn * rand(B, 1, 1, 1) * 0.08, x)
    # pixel noise
    x = torch.where(pick(0.4), x + torch.randn(x.shape, generator=g) * rand(B, 1, 1, 1) * 0.08, x)
    return x.clamp(0, 1)


# ----------------------------------------------------------------------------- training

def build_data(cfg: FitConfig):
    sets = {
        "prompted32": render_set(cfg.n_prompted, "prompted", 32, TRAIN_SEED + 1),
        "random32": render_set(cfg.n_random, "random", 32, TRAIN_SEED + 2),
        "random64": render_set(cfg.n_large // 2, "random", 64, TRAIN_SEED + 3),
        "prompted64": render_set(cfg.n_large // 2, "prompted", 64, TRAIN_SEED + 4),
        "variants32": variant_set(cfg.n_variants, cfg, TRAIN_SEED + 5),
        **tokenizer_recons(cfg),
    }
    x = torch.cat([v[0] for v in sets.values()])
    y = torch.cat([v[1] for v in sets.values()])
    return x, y, {k: len(v[1]) for k, v in sets.items()}


def fit(cfg: FitConfig, progress: bool = True):
    """Train a SlotScorer on one CPU thread (bitwise reproducible and, on a shared CPU, faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(cfg: FitConfig, progress: bool):
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    x, y, sizes = build_data(cfg)
    t_data = time.time() - t0
    model = geneval.SlotScorer()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    n_noise = int(round(cfg.noise_frac * cfg.batch))
    model.train()
    bar = tqdm(range(cfg.steps), desc="fit scorer", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(x), (cfg.batch - n_noise,), generator=g)
        xb = torch.cat([add_fragments(x[idx], y[idx], cfg.fragment_p, g), noise_images(n_noise, g)])
        xb = augment(xb, g, cfg.shift_px)  # (B, 3, 32, 32)
        yb = torch.cat([y[idx], torch.zeros(n_noise, 4, dtype=torch.long)])  # (B, 4)
        loss = F.cross_entropy(model(xb).reshape(-1, geneval.N_CLASSES), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    info = {"data": sizes, "data_seconds": round(t_data, 1),
            "train_seconds": round(time.time() - t0 - t_data, 1),
            "final_loss": round(loss.item(), 5)}
    return model, info


@dataclass(frozen=True)
class Options:
    """The command line's own key; every other key is a FitConfig field."""
    out: str = str(geneval.SCORER_FILE)  # the float16 weights, with the config and data sizes as metadata


USAGE = """usage: python -m reca_nb.build.fit_scorer [--KEY=VALUE ...]
  trains the GenEval-mini detector into data/scorer/scorer.safetensors; the keys, with their defaults:"""


def main(argv=None):
    own, overrides = cli(argv, f"{USAGE}\n{describe(Options(), FitConfig())}",
                         cli_keys=[f.name for f in fields(Options)],
                         valid=[f.name for f in fields(FitConfig)])
    opts, cfg = apply_overrides(Options(), own), apply_overrides(FitConfig(), overrides)
    print(cfg)
    model, info = fit(cfg)
    meta = {"fit_config": asdict(cfg), "data": info["data"],
            "tokenizer_sha256": {n: _sha256(DATA_DIR / "tokenizers" / f"{n}.safetensors")[:16]
                                 for n in shipped_tokenizers(cfg)}}
    geneval.save_scorer(model, opts.out, meta=meta)
    print(json.dumps(info))
    print(f"wrote {opts.out}: {os.path.getsize(opts.out)} bytes, sha256 {_sha256(opts.out)}")
    report(geneval.load_scorer(opts.out), cfg)


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@torch.no_grad()
def report(scorer, cfg: FitConfig):
    """Held-out GenEval-mini overall of the saved (float16) scorer: ground truth and tokenizer
    reconstructions at 32/64, uniform noise, and the chance level."""
    scenes = geneval.geneval_prompts(25, seed=910_000)
    for size in (32, 64):
        x = shapes.ShapeWorld(len(scenes), seed=910_000, size=size).images()
        for name, rec in {"render": lambda x: x, **shipped_tokenizers(cfg)}.items():
            r = geneval.score_t2i(rec(x), scenes, scorer)
            per_cat = " ".join(f"{c}={r[c]:.3f}" for c in shapes.CATEGORIES)
            print(f"{name} @{size}: overall {r['overall']:.4f} ({per_cat})")
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(len(scenes), 3, 32, 32, generator=g)
    print(f"uniform noise: overall {geneval.score_t2i(noise, scenes, scorer)['overall']:.4f}")
    print(f"chance: overall {geneval.chance_t2i(scenes)['overall']:.4f}")


if __name__ == "__main__":
    run_main(main)
