"""Train Janus's own VQ-VAE (`JanusVQVAE`, model.model.vqmodel of the Janus miniature) on shape-world images.

    python -m reca_nb.build.fit_janus_vq                      # writes data/tokenizers/janus_vq.safetensors
    python -m reca_nb.build.fit_janus_vq --steps=2000 --device=cuda --out=/tmp/janus_vq.safetensors

Every `--key=value` is a field of `FitJanusVQConfig`. Fit quality and cost of the shipped file: data/README.md.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from reca_nb.models.janus import VQ_COMMAND, VQ_FILE, VQ_KEYS, JanusMini, JanusMiniConfig


@dataclass
class FitJanusVQConfig:
    steps: int = 3000  # 2000 still reaches held-out MSE < 0.004 (data/README.md)
    batch: int = 16
    lr: float = 3e-3
    warmup_ae: int = 400  # steps without quantisation before the k-means codebook initialisation
    n_images: int = 8000  # training images: half random scenes, half prompted scenes
    seed: int = 0
    device: str = "cpu"
    out: str = str(VQ_FILE)
    progress: bool = True


def fit_vq(steps: int = 3000, batch: int = 16, lr: float = 3e-3, warmup_ae: int = 400, n_images: int = 8000,
           seed: int = 0, config: JanusMiniConfig | None = None, out=VQ_FILE, progress: bool = True,
           device: str = "cpu") -> dict:
    """Train Janus's own VQ-VAE (model.model.vqmodel) on shape-world images and save it to `out`.

    LlamaGen/Janus-style quantiser: l2-normalised latents and codes, nearest code by cosine, straight-through
    gradients, codebook + 0.25 commitment loss, pixel MSE. `JanusVQVAE.forward` decodes from indices (no
    gradient to the encoder), so the training forward is written out here with Janus's own modules. Two
    standard tricks make it converge in minutes: `warmup_ae` steps without quantisation followed by a k-means
    codebook initialisation on encoder outputs, and re-seeding dead codes from the batch.
    Returns {"val_mse": ..., "codes_used": ..., "seconds": ...}.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from reca_nb.world.shapes import ShapeWorld

    config = config or JanusMiniConfig()
    config.load_vq = False
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    half = n_images // 2
    X = torch.cat([ShapeWorld(half, seed=seed + 101, kind="random").images(),
                   ShapeWorld(half, seed=seed + 102).images()]).to(device)  # (n, 3, S, S) in [0, 1]
    Xv = ShapeWorld(256, seed=seed + 199, kind="random").images().to(device)
    vq = JanusMini(config).hf.model.vqmodel.to(device).train().requires_grad_(True)
    K = config.codebook_size

    def encode(x):  # (B, 3, S, S) -> (B*h*w, C) unit latents
        z = F.normalize(vq.quant_conv(vq.encoder(x * 2 - 1)), dim=1)
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), z.shape

    def forward(x, quantise=True):
        z, (B, C, h, w) = encode(x)
        codes = F.normalize(vq.quantize.embedding.weight, dim=1)
        idx = (z @ codes.t()).argmax(1)  # nearest unit code
        q = codes[idx] if quantise else z
        vq_loss = F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach()) if quantise else 0.0
        q = (z + (q - z).detach()).view(B, h, w, C).permute(0, 3, 1, 2)  # straight-through
        return (vq.decoder(vq.post_quant_conv(q)) + 1) / 2, vq_loss, idx, z

    opt = torch.optim.AdamW(vq.parameters(), lr=lr, weight_decay=0.0)
    usage = torch.ones(K, device=device)
    t0 = time.time()
    for step in tqdm(range(steps), desc="fit Janus VQ-VAE", disable=not progress):
        if step == warmup_ae:  # k-means (cosine, 10 rounds) on encoder outputs -> initial codebook
            with torch.no_grad():
                Z = torch.cat([encode(X[i:i + 256])[0] for i in range(0, 2048, 256)])
                C = Z[torch.randperm(len(Z), generator=gen)[:K].to(device)]
                for _ in range(10):
                    a = (Z @ C.t()).argmax(1)
                    S = torch.zeros_like(C).index_add_(0, a, Z)
                    C = torch.where(torch.bincount(a, minlength=K)[:, None] > 0, F.normalize(S, dim=1), C)
                vq.quantize.embedding.weight.copy_(C)
        f = 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * f)
        x = X[torch.randint(len(X), (batch,), generator=gen).to(device)]
        y, vq_loss, idx, z = forward(x, quantise=step >= warmup_ae)
        loss = F.mse_loss(y, x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage.mul_(0.99).index_add_(0, idx, torch.ones_like(idx, dtype=usage.dtype))
        if step > warmup_ae and step % 50 == 0 and step < 0.8 * steps:  # re-seed dead codes from the batch
            with torch.no_grad():
                dead = (usage < 0.1).nonzero().squeeze(1)
                pick = torch.randint(len(z), (len(dead),), generator=gen).to(device)
                vq.quantize.embedding.weight[dead] = z[pick]
                usage[dead] = 1.0
    vq.eval().requires_grad_(False)
    with torch.no_grad():  # store unit codes: `encode`'s Euclidean argmin then equals the cosine argmax
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=1))
        tok = vq.encode(Xv * 2 - 1).image_tokens.view(len(Xv), -1)
        rec = ((vq.decode(tok) + 1) / 2).clamp(0, 1)
    stats = {"val_mse": F.mse_loss(rec, Xv).item(), "codes_used": int(tok.unique().numel()),
             "seconds": round(time.time() - t0, 1), "steps": steps, "batch": batch, "warmup_ae": warmup_ae,
             "lr": lr, "seed": seed, "device": str(device), "torch": torch.__version__}
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items() if k in VQ_KEYS}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in vq.state_dict().items()}, str(out),
              metadata={"vq": json.dumps(meta), "stats": json.dumps(stats), "command": VQ_COMMAND})
    return stats


def main(argv=None):
    from reca_nb.config import apply_overrides, parse_overrides

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    c = apply_overrides(FitJanusVQConfig(), parse_overrides(argv))
    stats = fit_vq(steps=c.steps, batch=c.batch, lr=c.lr, warmup_ae=c.warmup_ae, n_images=c.n_images,
                   seed=c.seed, out=Path(c.out), progress=c.progress, device=c.device)
    print(stats)
    return stats


if __name__ == "__main__":
    main()
