"""LatentAE: the continuous image latent space of the diffusion/flow-style models (RecA paper §3).

Harmon (MAR), BAGEL and OpenUni generate continuous VAE latents (SD/FLUX VAE, SANA's DC-AE), and RecA keeps
the VAE frozen: the reconstruction target of the RecA loss is the latent of the original image. Here the VAE
is a tiny diffusers `AutoencoderKL` (3 blocks, channels (32,32,64) -> downsampling factor 4, 4 latent
channels, ~0.73M parameters) trained for 1000 steps on shape-world images:

    encode: (B,3,H,W) in [0,1] -> posterior mean (B,4,H/4,W/4) -> (z - shift_factor) * scaling_factor
    decode: latents -> z / scaling_factor + shift_factor -> (B,3,H,W), clamped to [0,1]

`scaling_factor` / `shift_factor` (stored in the diffusers config, as in SD / SD3 / FLUX) make the encoded
latents ~zero-mean, unit-std over shape-world images, which is what a flow-matching head expects.

Training views are all 32x32 (same cost per step): native 32x32 renders, random 32x32 crops of 64x64
renders and 2x2 mosaics of 16x16 renders, so the fully convolutional AE sees the edge statistics of all
three resolutions it is used at. Held-out pixel MSE 0.0054 / 0.0007 / 0.0005 at 16 / 32 / 64: at 16x16
squares come back rounded (GenEval-mini 0.58 on 16x16 reconstructions, 1.00 at 32 and 64).
Regenerate with `python -m reca_nb.build.fit_tokenizers --only=ae` (see data/tokenizers/README.md).
"""
from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from reca_nb.paths import DATA_DIR
from reca_nb.encoders.vq import check_images

AE_FILE = DATA_DIR / "tokenizers" / "ae.safetensors"


@dataclass
class AEConfig:
    # architecture (diffusers AutoencoderKL kwargs)
    block_out_channels: tuple = (32, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    scaling_factor: float = 1.0  # set after training: 1 / std of (mean latents - shift)
    shift_factor: float = 0.0  # set after training: mean of the mean latents
    # training
    steps: int = 1000
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    kl_weight: float = 1e-4  # per latent element, on top of the per-pixel MSE (keeps latents ~N(0,1)-ish)
    n_train: int = 3000  # 32x32 renders; plus n_train // 3 renders at 64 and at 16
    mix: tuple = (0.5, 0.25, 0.25)  # batch fractions: native 32x32, crops of 64x64, 2x2 mosaics of 16x16
    seed: int = 0

    def diffusers_kwargs(self) -> dict:
        n = len(self.block_out_channels)
        return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                    up_block_types=("UpDecoderBlock2D",) * n,
                    block_out_channels=tuple(self.block_out_channels),
                    layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
                    norm_num_groups=self.norm_num_groups, sample_size=32,
                    scaling_factor=self.scaling_factor, shift_factor=self.shift_factor)


class LatentAE(torch.nn.Module):
    """Frozen wrapper around a diffusers AutoencoderKL; pixels in [0,1], latents scaled to ~unit std."""

    def __init__(self, config: AEConfig | None = None):
        super().__init__()
        from diffusers import AutoencoderKL
        self.config = config or AEConfig()
        self.vae = AutoencoderKL(**self.config.diffusers_kwargs())

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> scaled posterior mean (B,4,H/4,W/4) (deterministic)."""
        images = check_images(images, self.factor)
        z = self.vae.encode(images.to(self._dtype()) * 2 - 1).latent_dist.mean  # (B,4,h,w)
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B,4,h,w) -> images (B,3,4h,4w) in [0,1]."""
        C = self.latent_channels
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[1] != C:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape (B,{C},h,w), got {shape}")
        z = latents.to(self._dtype()) / self.config.scaling_factor + self.config.shift_factor
        return ((self.vae.decode(z).sample + 1) / 2).clamp(0, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def _dtype(self):
        return next(self.vae.parameters()).dtype

    def freeze(self) -> "LatentAE":
        self.requires_grad_(False)
        return self.eval()

    # ------------------------------------------------------------------ io
    def save(self, path, half: bool = True) -> Path:
        """Weights as safetensors (fp16 by default) + the config as `<path>.json` and in the metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
              for k, v in self.vae.state_dict().items()}
        cfg = json.dumps(asdict(self.config), indent=1, sort_keys=True)
        save_file(sd, str(path), metadata={"reca_nb.LatentAE": cfg})  # one key: a stable sha256
        path.with_suffix(".json").write_text(cfg + "\n")
        return path

    @classmethod
    def load(cls, path) -> "LatentAE":
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "reca_nb.LatentAE" not in meta:
            raise ValueError(f"{path} has no LatentAE config in its metadata")
        cfg = json.loads(meta["reca_nb.LatentAE"])
        cfg["block_out_channels"] = tuple(cfg["block_out_channels"])
        cfg["mix"] = tuple(cfg.get("mix", AEConfig.mix))
        ae = cls(AEConfig(**cfg))
        sd = {k: v.float() for k, v in load_file(str(path)).items()}
        ae.vae.load_state_dict(sd)
        return ae.freeze()


# ----------------------------------------------------------------------------- training

def training_views(cfg: AEConfig) -> dict:
    """Pre-rendered pools: 32x32 images, 64x64 images (cropped) and 16x16 images (tiled 2x2)."""
    from reca_nb.world.shapes import ShapeWorld
    pools = {}
    for size, n in ((32, cfg.n_train), (64, cfg.n_train // 3), (16, cfg.n_train // 3)):
        s = 50_000 + 100 * cfg.seed + size
        pools[size] = torch.cat([ShapeWorld(n // 2, seed=s, size=size, kind="random").images(),
                                 ShapeWorld(n - n // 2, seed=s + 1, size=size, kind="prompted").images()])
    return pools


def sample_batch(pools: dict, batch: int, g: torch.Generator, mix=(0.5, 0.25, 0.25)) -> torch.Tensor:
    """Native 32x32 images, random 32x32 crops of 64x64 and 2x2 mosaics of 16x16 images, in the
    proportions `mix` -> (B,3,32,32)."""
    n32, n64 = round(batch * mix[0]), round(batch * mix[1])
    n16 = batch - n32 - n64
    x32 = pools[32][torch.randint(len(pools[32]), (n32,), generator=g)]
    big = pools[64][torch.randint(len(pools[64]), (n64,), generator=g)]
    oy, ox = torch.randint(33, (2, n64), generator=g).tolist()
    x64 = torch.stack([b[:, y:y + 32, x:x + 32] for b, y, x in zip(big, oy, ox)])
    t = pools[16][torch.randint(len(pools[16]), (n16, 4), generator=g)]  # (n16,4,3,16,16)
    x16 = torch.cat([torch.cat([t[:, 0], t[:, 1]], -1), torch.cat([t[:, 2], t[:, 3]], -1)], -2)
    return torch.cat([x32, x64, x16])


def train_ae(cfg: AEConfig | None = None, progress: bool = True, device: str = "cpu") -> LatentAE:
    """Train the AE (MSE + small KL, AdamW, warmup + cosine), then set the latent shift/scale.

    Random numbers come from a CPU generator, so a run is reproducible bit for bit on a given device
    and thread count (fit_tokenizers uses one thread)."""
    cfg = cfg or AEConfig()
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    pools = training_views(cfg)
    ae = LatentAE(cfg).to(device)
    vae = ae.vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    bar = tqdm(range(cfg.steps), desc="AE", disable=not progress)
    ema = None
    for step in bar:
        x = sample_batch(pools, cfg.batch, g, cfg.mix).to(device)  # (B,3,32,32)
        post = vae.encode(x * 2 - 1).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)  # reparameterised
        rec = (vae.decode(z).sample + 1) / 2
        mse = F.mse_loss(rec, x)
        kl = 0.5 * (post.mean ** 2 + post.var - 1 - post.logvar).mean()
        loss = mse + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = mse.item() if ema is None else 0.95 * ema + 0.05 * mse.item()
        if step % 10 == 0:
            bar.set_postfix(mse=f"{ema:.5f}", kl=f"{kl.item():.2f}")
    ae.freeze()
    with torch.no_grad():  # latent statistics of clean 32x32 images
        z = torch.cat([vae.encode(pools[32][i:i + 256].to(device) * 2 - 1).latent_dist.mean
                       for i in range(0, len(pools[32]), 256)])
    cfg.shift_factor = round(z.mean().item(), 6)
    cfg.scaling_factor = round(1.0 / (z - cfg.shift_factor).std().item(), 6)
    vae.register_to_config(scaling_factor=cfg.scaling_factor, shift_factor=cfg.shift_factor)
    ae.train_seconds = round(time.time() - t0, 1)
    return ae.cpu()


@functools.lru_cache(maxsize=None)
def load_ae(path: str | None = None) -> LatentAE:
    """The shipped autoencoder (data/tokenizers/ae.safetensors), loaded once per process; frozen, eval."""
    path = Path(path) if path is not None else AE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; regenerate it with "
                                "`python -m reca_nb.build.fit_tokenizers --only=ae` (a few minutes on a CPU)")
    return LatentAE.load(path)
