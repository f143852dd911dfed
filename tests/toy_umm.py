"""ToyUMM: the smallest honest unified multimodal model, for testing the RecA training loop (not the science).

One shared 2-layer transformer over 4x4-pixel patches:
  understanding  patch encoder (Linear + interpolated 2-D positions + LayerNorm) -> (B, N, D) embedding,
                 caption head; I2T = next-token CE on [und tokens, <bos> caption]
  generation     rectified flow on patch pixels (x_t = (1-t) x0 + t eps, predict eps - x0), conditioned
                 in-context on [cond tokens, prompt tokens, time token]; Euler sampling
  frozen         a fixed random patch codebook: soft-quantised features for the generator input and the hard
                 codes that `token_agreement` compares
Every UMM method is real; a training step at batch 8 takes a few milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.world.text import tokenizer
from reca_nb.models.umm import UMM

P = 4  # patch size (pixels)


@dataclass
class ToyConfig:
    image_size: int = 32  # generation resolution
    und_size: int = 32  # native understanding resolution
    d: int = 32
    n_layers: int = 2
    n_heads: int = 2
    vocab_size: int = 0  # 0: len(tokenizer()) at build time
    max_text: int = 96  # longest prompt / caption in tokens
    codebook: int = 16  # frozen patch codebook size
    sample_steps: int = 4  # Euler steps


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x, mask):  # x (B, L, D), mask bool (B, 1, L, L) True = attend
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


def patchify(images):  # (B, 3, H, W) -> (B, H/P * W/P, 3*P*P)
    B, C, H, W = images.shape
    x = images.unfold(2, P, P).unfold(3, P, P)  # (B, C, H/P, W/P, P, P)
    return x.permute(0, 2, 3, 1, 4, 5).reshape(B, (H // P) * (W // P), -1)


def unpatchify(x, size):  # (B, N, 3*P*P) -> (B, 3, S, S)
    B, g = x.shape[0], size // P
    return x.view(B, g, g, 3, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, 3, size, size)


class ToyUMM(UMM):
    arch = "toy"
    config_cls = ToyConfig

    def __init__(self, config: ToyConfig | None = None):
        super().__init__()
        cfg = config or ToyConfig()
        if cfg.vocab_size == 0:
            cfg.vocab_size = len(tokenizer())
        self.config = cfg
        d, g = cfg.d, cfg.image_size // P
        # understanding
        self.und_embed = nn.Linear(3 * P * P, d)
        self.und_pos = nn.Parameter(0.02 * torch.randn(1, d, cfg.und_size // P, cfg.und_size // P))
        self.und_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, cfg.vocab_size)
        # shared
        self.tok_embed = nn.Embedding(cfg.vocab_size, d)
        self.txt_pos = nn.Parameter(0.02 * torch.randn(cfg.max_text, d))
        self.type_embed = nn.Parameter(0.02 * torch.randn(4, d))  # und, text, cond, image
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        # generation
        self.cond_proj = nn.Linear(d, d)
        self.gen_in, self.gen_q = nn.Linear(3 * P * P, d), nn.Linear(3 * P * P, d)
        self.gen_pos = nn.Parameter(0.02 * torch.randn(g * g, d))
        self.time_embed = nn.Linear(1, d)
        self.gen_out = nn.Linear(d, 3 * P * P)
        # frozen
        self.codebook = nn.Parameter(torch.rand(cfg.codebook, 3 * P * P) * 2 - 1, requires_grad=False)

    def parameter_groups(self) -> dict:
        und = ("und_", "lm_head")
        gen = ("cond_proj", "gen_", "time_embed")
        groups = {"understanding": [], "generation": [], "shared": [], "frozen": []}
        for n, _ in self.named_parameters():
            g = ("frozen" if n == "codebook" else "understanding" if n.startswith(und)
                 else "generation" if n.startswith(gen) else "shared")
            groups[g].append(n)
        return groups

    # --- helpers ---------------------------------------------------------------------------------------
    def _run(self, x, mask):
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln_f(x)

    def _text(self, ids):  # (B, T) -> (B, T, D)
        if ids.shape[1] > self.config.max_text:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds max_text={self.config.max_text}")
        return self.tok_embed(ids) + self.txt_pos[: ids.shape[1]] + self.type_embed[1]

    def _soft_quantise(self, x):  # (B, N, 48) -> (B, N, 48): differentiable w.r.t. the codebook
        w = torch.softmax(-torch.cdist(x, self.codebook.expand(x.shape[0], -1, -1)) ** 2 / 0.5, dim=-1)
        return w @ self.codebook

    def _velocity(self, xt, t, ids, cond):
        """xt (B, N, 48) in [-1, 1]-space, t (B,), ids (B, T) -> predicted eps - x0 (B, N, 48)."""
        if xt.shape[1] != self.gen_pos.shape[0]:
            raise ValueError(f"generation images must be {self.config.image_size}px")
        parts, keep = [], []
        if cond is not None:
            parts.append(self.cond_proj(cond) + self.type_embed[2])
            keep.append(torch.ones(cond.shape[:2], dtype=torch.bool, device=xt.device))
        parts.append(self._text(ids))
        keep.append(ids != tokenizer().pad_id)
        parts.append(self.time_embed(t[:, None, None].to(xt.dtype)))
        image = self.gen_in(xt) + self.gen_q(self._soft_quantise(xt))
        parts.append(image + self.gen_pos + self.type_embed[3])
        keep += [torch.ones(xt.shape[0], 1 + xt.shape[1], dtype=torch.bool, device=xt.device)]
        mask = torch.cat(keep, 1)[:, None, None, :]  # (B, 1, 1, L): no attention to padding
        h = self._run(torch.cat(parts, 1), mask)
        return self.gen_out(h[:, -xt.shape[1]:])

    # --- the interface ---------------------------------------------------------------------------------
    def understanding_embedding(self, images):
        x = self.und_embed(patchify(images * 2 - 1))  # (B, N, D)
        g = images.shape[-1] // P
        pos = F.interpolate(self.und_pos, size=(g, g), mode="bilinear", align_corners=False)
        return self.und_norm(x + pos.flatten(2).transpose(1, 2))

    def generation_loss(self, images, prompts, cond=None):
        x0 = patchify(images * 2 - 1)  # (B, N, 48)
        t = torch.rand(x0.shape[0], device=x0.device)
        eps = torch.randn_like(x0)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        ids = tokenizer().batch(prompts).to(x0.device)
        return F.mse_loss(self._velocity(xt, t, ids, cond), eps - x0)

    def _caption_logits(self, images, ids):
        h = self.understanding_embedding(images) + self.type_embed[0]
        x = torch.cat([h, self._text(ids)], 1)
        L = x.shape[1]
        mask = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()[None, None]
        return self.lm_head(self._run(x, mask)[:, h.shape[1]:])  # (B, T, V)

    def i2t_loss(self, images, captions):
        tok = tokenizer()
        ids = tok.batch(captions, bos=True, eos=True).to(images.device)
        targets = ids[:, 1:].masked_fill(ids[:, 1:] == tok.pad_id, -100)
        logits = self._caption_logits(images, ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def caption(self, images, max_len: int | None = None):
        max_len = max_len or 24
        tok = tokenizer()
        ids = torch.full((images.shape[0], 1), tok.bos_id, dtype=torch.long, device=images.device)
        for _ in range(max_len):
            nxt = self._caption_logits(images, ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            if (ids == tok.eos_id).any(1).all():
                break
        return [tok.decode(row[1:].tolist()) for row in ids]

    @torch.no_grad()
    def sample(self, prompts, cond=None, generator=None, steps: int | None = None):
        S = self.config.image_size
        dev = self.gen_pos.device
        ids = tokenizer().batch(prompts).to(dev)
        x = torch.randn(len(prompts), (S // P) ** 2, 3 * P * P, generator=generator).to(dev)
        n = steps or self.config.sample_steps
        for i in range(n, 0, -1):  # Euler from t=1 (noise) to t=0 (data)
            t = torch.full((len(prompts),), i / n, device=dev)
            x = x - self._velocity(x, t, ids, cond) / n
        return unpatchify((x + 1) / 2, S).clamp(0, 1)

    @torch.no_grad()
    def token_agreement(self, und_images, target_images):
        """Fraction of (nearest-upsampled) understanding patch codes equal to the target's codes."""
        def codes(images):
            x = patchify(images * 2 - 1)
            c = torch.cdist(x, self.codebook.expand(x.shape[0], -1, -1)).argmin(-1)  # (B, N)
            g = images.shape[-1] // P
            return c.view(-1, 1, g, g).float()

        a, b = codes(und_images), codes(target_images)
        a = F.interpolate(a, size=b.shape[-2:], mode="nearest")
        return (a == b).float().mean().item()


TOY_ARCH = "toy=tests.toy_umm:ToyUMM"  # RECA_NB_EXTRA_ARCHS entry that registers the toy (fixture `toy_arch`)


def toy(cls=ToyUMM, seed=0, **cfg):
    """A fresh ToyUMM (or subclass `cls`) initialised from `seed`; `cfg` overrides ToyConfig fields."""
    torch.manual_seed(seed)
    return cls(ToyConfig(**cfg))
