"""Regenerate the shipped image tokenizers in data/tokenizers/ (deterministic given the seed).

    python -m reca_nb.build.fit_tokenizers                 # both: vq.safetensors, ae.safetensors + ae.json
    python -m reca_nb.build.fit_tokenizers --only=vq       # k-means patch codebook (seconds)
    python -m reca_nb.build.fit_tokenizers --only=ae --steps=800
    python -m reca_nb.build.fit_tokenizers --help          # every key (the fields of Options)

Prints each file's sha256 and the reconstruction MSE on held-out shape-world images at 16/32/64.
Training runs on one thread by default: bit-for-bit reproducible, and on a shared 2-core machine one
thread is faster than two (OpenMP threads stall when the cores are oversubscribed).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from reca_nb.config import apply_overrides, check_choices, cli, describe, run_main
from reca_nb.paths import DATA_DIR

OUT_DIR = DATA_DIR / "tokenizers"
EVAL_SEED = 999_000  # held out: the fitting sets use other seeds


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def heldout_images(size: int, n: int = 200, seed: int = EVAL_SEED) -> torch.Tensor:
    """n held-out images at `size` (half random scenes, half GenEval-style prompted scenes)."""
    from reca_nb.world.shapes import ShapeWorld
    return torch.cat([ShapeWorld(n // 2, seed=seed + size, size=size, kind="random").images(),
                      ShapeWorld(n - n // 2, seed=seed + size + 1, size=size, kind="prompted").images()])


@torch.no_grad()
def recon_mse(tok, sizes=(16, 32, 64), n: int = 200) -> dict:
    """Pixel MSE of tok.decode(tok.encode(x)) on held-out images, per resolution."""
    out = {}
    for s in sizes:
        x = heldout_images(s, n)
        r = torch.cat([tok.decode(tok.encode(x[i:i + 100])) for i in range(0, len(x), 100)])
        out[s] = ((r - x) ** 2).mean().item()
    return out


def report(name: str, path: Path, mse: dict, seconds: float):
    kb = path.stat().st_size / 1024
    shown = path.relative_to(DATA_DIR.parent) if path.is_relative_to(DATA_DIR.parent) else path
    print(f"{name}: {shown}  {kb:.1f} KB  sha256={sha256(path)}  ({seconds:.0f} s)")
    print(f"{name}: reconstruction MSE " + "  ".join(f"{s}x{s}={v:.5f}" for s, v in mse.items()))


def compare_vqmodel(steps: int = 600, device: str = "cpu", batch: int = 32, lr: float = 2e-3, seed: int = 0):
    """The alternative we did not ship: a tiny diffusers `VQModel` (f=4, 256 codes, same blocks as the AE)
    trained like the AE (same views, MSE + commitment loss). Prints its held-out MSE and code usage."""
    from diffusers import VQModel

    from reca_nb.encoders.autoencoder import AEConfig, sample_batch, training_views
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    pools = training_views(AEConfig(seed=seed))
    vqm = VQModel(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  block_out_channels=(32, 32, 64), layers_per_block=1, latent_channels=8,
                  num_vq_embeddings=256, norm_num_groups=8, sample_size=32).to(device)
    opt = torch.optim.AdamW(vqm.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    for step in range(steps):
        x = sample_batch(pools, batch, g).to(device)
        out = vqm(x * 2 - 1)
        loss = torch.nn.functional.mse_loss((out.sample + 1) / 2, x) + out.commit_loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    vqm.eval()

    class Wrap:  # the encode/decode interface recon_mse expects
        def encode(self, x):
            return vqm.encode(x.to(device) * 2 - 1).latents

        def decode(self, h):
            return ((vqm.decode(h).sample + 1) / 2).clamp(0, 1).cpu()

    mse = recon_mse(Wrap())
    with torch.no_grad():
        h = vqm.encode(heldout_images(32).to(device) * 2 - 1).latents
        used = vqm.quantize(h)[2][2].unique().numel()
    print(f"VQModel ({steps} steps, batch {batch}, {device}, {time.time() - t0:.0f} s): reconstruction MSE "
          + "  ".join(f"{s}x{s}={v:.5f}" for s, v in mse.items()) + f"  codes used at 32x32: {used}/256")
    return mse


@dataclass(frozen=True)
class Options:
    """The command line: `--only=vq` sets `only`, and so on."""
    only: Literal["", "vq", "ae"] = ""  # fit one tokenizer ("" = both)
    steps: int | None = None  # AE training steps (None: AEConfig.steps); with compare_vqmodel: 600
    seed: int = 0  # fitting seed of both tokenizers
    threads: int = 1  # torch threads (1: bit-for-bit reproducible)
    out: str = str(OUT_DIR)  # folder for vq.safetensors, ae.safetensors and ae.json
    compare_vqmodel: bool = False  # only train the diffusers VQModel alternative (steps), print its MSE
    device: str = "cpu"  # device for compare_vqmodel

    def __post_init__(self):
        check_choices(self)


USAGE = """usage: python -m reca_nb.build.fit_tokenizers [--KEY=VALUE ...]
  fits the VQ and AE tokenizers into data/tokenizers/; the keys, with their defaults:"""


def main(argv=None):
    _, overrides = cli(argv, f"{USAGE}\n{describe(Options())}")
    opts = apply_overrides(Options(), overrides)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(opts.threads)
    if opts.compare_vqmodel:
        compare_vqmodel(opts.steps or 600, opts.device, seed=opts.seed)
        return
    out = Path(opts.out)

    if opts.only in ("", "vq"):
        from reca_nb.encoders.vq import fit_vq
        t0 = time.time()
        vq = fit_vq(seed=opts.seed)
        path = vq.save(out / "vq.safetensors")
        report("vq", path, recon_mse(vq), time.time() - t0)

    if opts.only in ("", "ae"):
        from reca_nb.encoders.autoencoder import AEConfig, LatentAE, train_ae
        cfg = AEConfig(seed=opts.seed)
        if opts.steps is not None:
            cfg.steps = opts.steps
        t0 = time.time()
        ae = train_ae(cfg)
        path = ae.save(out / "ae.safetensors")
        ae = LatentAE.load(path)  # evaluate exactly what ships (fp16 weights)
        with torch.no_grad():
            z = ae.encode(heldout_images(32))
        print(f"ae: scaling_factor={cfg.scaling_factor} shift_factor={cfg.shift_factor} "
              f"held-out latent mean={z.mean():.3f} std={z.std():.3f}")
        report("ae", path, recon_mse(ae), time.time() - t0)


if __name__ == "__main__":
    run_main(main)
