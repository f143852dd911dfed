"""Train the GenEval-mini detector (reca_nb.geneval.SlotScorer) and write data/scorer/scorer.safetensors.

    python -m reca_nb.fit_scorer     # ~4 min on a busy shared 2-core CPU; same bytes on re-run (one thread)

GenEval trusts its detector because the detector was trained on far more varied images than the
generators produce. We imitate that: the training set is shape-world renders (both dataset kinds, many
seeds, rendered at 32 and 64) plus, when the shipped tokenizers exist (data/tokenizers/*.safetensors),
their VQ and AE reconstructions, and every batch is corrupted with artefacts a miniature generator makes:
blur, down-up sampling, pixel noise, colour jitter, 4x4 block averaging / block colour noise (patch
quantisation), and small shifts and rescales. A few pure-noise images labelled "all cells empty" teach
the detector that texture is not an object.

Training seeds (TRAIN_SEED + k) never overlap the evaluation seeds (geneval_prompts: 10_000, evaluate_i2t:
20_000, tests: 9xx_xxx).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import geneval, shapes
from .paths import DATA_DIR

TRAIN_SEED = 7_000_000
RECON_MIX = (("prompted", 32, 0.4), ("random", 32, 0.4), ("random", 64, 0.2))  # (kind, render size, share)


@dataclass
class FitConfig:
    n_prompted: int = 5_000  # prompted-kind scenes rendered at 32
    n_random: int = 5_000  # random-kind scenes rendered at 32
    n_large: int = 1_000  # scenes rendered at 64 (area-downsampled, like scoring a 64x64 generator)
    n_recon: int = 1_200  # scenes passed through each shipped tokenizer (VQ, AE), split as RECON_MIX
    steps: int = 300
    batch: int = 96
    lr: float = 3e-3
    weight_decay: float = 1e-4
    noise_frac: float = 0.04  # fraction of each batch replaced by pure-noise "empty" images
    seed: int = 0
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


def shipped_tokenizers(cfg: FitConfig) -> dict:
    """{name: reconstruct function} for the tokenizers shipped in data/tokenizers/ (VQ, AE)."""
    todo = {}
    if cfg.tokenizers == "none":
        return todo
    if (DATA_DIR / "tokenizers" / "vq.safetensors").exists():
        from .vq import load_vq
        todo["vq"] = load_vq().reconstruct
    if (DATA_DIR / "tokenizers" / "ae.safetensors").exists():
        from .autoencoder import load_ae
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
    """Texture with no object: uniform, Gaussian-blurred, blocky and smooth colour noise (n, 3, 32, 32)."""
    u = torch.rand(n, 3, 32, 32, generator=g)
    kind = torch.randint(0, 4, (n, 1, 1, 1), generator=g)
    blurred = gaussian_blur(torch.randn(n, 3, 32, 32, generator=g) * 0.3 + 0.5, torch.full((n,), 1.5))
    blocky = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="nearest")
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear",
                           align_corners=False)
    scale = torch.rand(n, 1, 1, 1, generator=g) * 0.9 + 0.1  # dim to bright
    x = torch.where(kind == 0, u, torch.where(kind == 1, blurred.clamp(0, 1),
                                              torch.where(kind == 2, blocky, smooth)))
    return (x * scale).clamp(0, 1)


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


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Generator/tokenizer-like corruptions, each applied to a random subset of the batch (B, 3, 32, 32)."""
    B = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    pick = lambda p: (rand(B) < p).view(B, 1, 1, 1)  # noqa: E731

    # small shift + rescale (objects stay inside their cell)
    theta = torch.zeros(B, 2, 3)
    scale = 1 + (rand(B) - 0.5) * 0.2
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (rand(B, 2) - 0.5) * 2 * (2.0 / 16)  # +-2 px in normalised coordinates
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
        xb = augment(torch.cat([x[idx], noise_images(n_noise, g)]), g)  # (B, 3, 32, 32)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(geneval.SCORER_FILE))
    for f, v in asdict(FitConfig()).items():
        p.add_argument(f"--{f}", type=type(v), default=v)
    args = p.parse_args(argv)
    cfg = FitConfig(**{k: getattr(args, k) for k in asdict(FitConfig())})
    print(cfg)
    model, info = fit(cfg)
    meta = {"fit_config": asdict(cfg), "data": info["data"],
            "tokenizer_sha256": {n: _sha256(DATA_DIR / "tokenizers" / f"{n}.safetensors")[:16]
                                 for n in shipped_tokenizers(cfg)}}
    geneval.save_scorer(model, args.out, meta=meta)
    print(json.dumps(info))
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, sha256 {_sha256(args.out)}")
    report(geneval.load_scorer(args.out), cfg)


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
    main()
