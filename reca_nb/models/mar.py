"""MAR's building blocks (Li et al. 2024, "Autoregressive image generation without vector quantization";
official repo LTH14/mar, models/mar.py and models/diffloss.py), as the Harmon miniature uses them:

  * `blocks`       the MAR encoder / decoder: pre-norm ViT blocks (timm `Block`) plus a final LayerNorm
  * `resize_pos`   learned grid position embeddings, bilinearly resized (`get_encoder_pos_embed`)
  * `DiffusionHead` the per-token diffusion MLP (`SimpleMLPAdaLN`) that turns a condition z into a token
  * `random_mask`  the training mask: one ratio per batch from a truncated normal on [min, 1], random order
  * `n_masked_after` the cosine unmasking schedule of sampling (`MAR.sample_tokens`)
  * `ScaleGradient` Harmon's identity-with-scaled-gradient on the RecA features (Harmon's `_ScaleGradient`)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.models.common import gen_device


class ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward (Harmon's `_ScaleGradient` on the RecA features)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def blocks(dim: int, layers: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    """A stack of pre-norm ViT blocks + final LayerNorm (timm `Block` x depth + `norm`, as in MAR)."""
    layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True, layer_norm_eps=1e-6)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim, eps=1e-6), enable_nested_tensor=False)


def resize_pos(pe: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """Learned (1, side*side, C) grid embedding -> (1, h*w, C), bilinear (MAR's get_*_pos_embed)."""
    if (h, w) == (side, side):
        return pe
    grid = pe.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, side, side)
    grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)


class AdaLNBlock(nn.Module):
    """MAR's ResBlock: x + gate * MLP(LN(x) * (1 + scale) + shift), modulation from the condition y."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x, y):
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """MAR's SimpleMLPAdaLN: predicts the noise eps (or v) of one noisy token x_t (N, C) given timestep t (N,)
    and the decoder's condition z (N, Z). Modulations and the output layer start at zero (prediction = 0), so
    the condition z gets a gradient only after the first two updates."""

    def __init__(self, channels: int, z_dim: int, width: int, depth: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)  # [cos | sin], as MAR
        self.time_embed = TimestepEmbedding(256, width)  # Linear -> SiLU -> Linear
        self.cond_embed = nn.Linear(z_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, channels)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.time_embed.linear_1, self.time_embed.linear_2):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in [b.ada[-1] for b in self.blocks] + [self.final_ada[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, z):
        y = self.time_embed(self.time_proj(t).to(x.dtype)) + self.cond_embed(z)  # (N, W)
        h = self.input_proj(x)  # (N, W)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)  # (N, C)


def random_mask(B: int, N: int, ratio_min: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """MAR's training mask (B, N) bool on the CPU, True = masked: one ratio per batch from a truncated normal
    on [ratio_min, 1] (mean 1, std 0.25), ceil(N * ratio) tokens of a random order per row."""
    r = torch.empty(1)
    if generator is None:
        nn.init.trunc_normal_(r, mean=1.0, std=0.25, a=ratio_min, b=1.0)
    else:  # inverse-CDF draw with the caller's generator (trunc_normal_ takes no generator)
        u = torch.rand(1, generator=generator, device=gen_device(generator))
        nd = torch.distributions.Normal(1.0, 0.25)
        a, b = nd.cdf(torch.tensor(ratio_min)), nd.cdf(torch.tensor(1.0))
        r = nd.icdf(a + u * (b - a)).clamp(ratio_min, 1.0)
    n_masked = min(N, math.ceil(N * r.item()))
    order = torch.rand(B, N, generator=generator, device=gen_device(generator)).argsort(dim=1)
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def n_masked_after(step: int, iters: int, N: int, n_masked: int) -> int:
    """Tokens still masked after sampling round `step` of `iters` (cosine schedule, MAR): at least one token is
    revealed per round and none stays masked after the last."""
    if step == iters - 1:
        return 0
    n_next = math.floor(N * math.cos(math.pi / 2 * (step + 1) / iters))
    return max(1, min(n_masked - 1, n_next))
