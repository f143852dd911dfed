"""Regenerate the shipped image tokenizers in data/tokenizers/ (deterministic given the seed).

    python -m reca_nb.build.fit_tokenizers                 # both: vq.safetensors, ae.safetensors + ae.json
    python -m reca_nb.build.fit_tokenizers --only=vq       # k-means patch codebook (seconds)
    python -m reca_nb.build.fit_tokenizers --only=ae --steps=800

Prints each file's sha256 and the reconstruction MSE on held-out shape-world images at 16/32/64.
Training runs on one thread by default: bit-for-bit reproducible, and on a shared 2-core machine one
thread is faster than two (OpenMP threads stall when the cores are oversubscribed).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import torch

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("vq", "ae"), default=None)
    ap.add_argument("--steps", type=int, default=None, help="AE training steps (default: AEConfig.steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--compare-vqmodel", action="store_true",
                    help="only train the diffusers VQModel alternative (--steps), print its MSE")
    ap.add_argument("--device", default="cpu", help="device for --compare-vqmodel")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.compare_vqmodel:
        compare_vqmodel(args.steps or 600, args.device, seed=args.seed)
        return

    if args.only in (None, "vq"):
        from reca_nb.encoders.vq import fit_vq
        t0 = time.time()
        vq = fit_vq(seed=args.seed)
        path = vq.save(args.out / "vq.safetensors")
        report("vq", path, recon_mse(vq), time.time() - t0)

    if args.only in (None, "ae"):
        from reca_nb.encoders.autoencoder import AEConfig, LatentAE, train_ae
        cfg = AEConfig(seed=args.seed)
        if args.steps is not None:
            cfg.steps = args.steps
        t0 = time.time()
        ae = train_ae(cfg)
        path = ae.save(args.out / "ae.safetensors")
        ae = LatentAE.load(path)  # evaluate exactly what ships (fp16 weights)
        with torch.no_grad():
            z = ae.encode(heldout_images(32))
        print(f"ae: scaling_factor={cfg.scaling_factor} shift_factor={cfg.shift_factor} "
              f"held-out latent mean={z.mean():.3f} std={z.std():.3f}")
        report("ae", path, recon_mse(ae), time.time() - t0)


if __name__ == "__main__":
    main()
