"""Harmon in miniature: ONE shared MAR encoder feeds understanding and generation (RecA Sec. 4, App. Harmon).

Harmon (Wu et al. 2025; official repo wusize/Harmon) puts a Qwen2.5 LLM between the encoder and the
decoder of MAR (Li et al. 2024, "Autoregressive image generation without vector quantization"). Every image lives as
continuous VAE latents; the *same* MAR encoder reads them for understanding and for generation:

    understanding   latents (unmasked) -> MAR encoder -> proj_in -> [LLM: image embeds, then text] -> LM head
    generation      latents, a random fraction (truncated normal, >= 0.7) masked
                    -> MAR encoder on the visible tokens + buffer tokens -> proj_in
                    -> [LLM: prompt tokens, then image tokens] -> proj_out, added to the encoder output
                    -> MAR decoder (mask tokens at the masked positions) -> one condition z per token
                    -> per-token diffusion MLP head ("DiffLoss"): DDPM eps-prediction, cosine schedule,
                       1000 steps, each token repeated `diffusion_batch_mul` times (fresh noise / timesteps)
    sampling        MAR iterative unmasking: a random order, a cosine schedule of `sample_iters` rounds; each
                    round runs the whole stack and draws the tokens that leave the mask with the head
                    (`diffusion_steps` DDIM/DDPM steps, temperature, classifier-free guidance on the noise
                    prediction against the prompt "Generate an image.", as Harmon's `cfg_prompt`)

RecA (Harmon's `recon_loss`): the understanding embedding of an image is the MAR encoder on its *unmasked*
latents -> proj_in, i.e. exactly the understanding path, with the gradient into it scaled by 0.1
(`_ScaleGradient`). It is placed before the template, and the generation loss reconstructs the same latents.
Input = output resolution (Harmon: 512/512; here und_size = image_size = 32): the MAR encoder is trusted to
keep mostly semantic features -- whether that holds at this scale (or collapses to copying) is one of the
things the notebooks measure.

Sequences (`<...>` are special words of reca_nb.world.text, embedded by the LLM's table; prompts are left-padded):
    T2I   <t2i> prompt <soi> [visible image tokens + buffers]
    RecA  <t2i> <sou> [und embeds] <eou> template <soi> [visible image tokens + buffers]
    I2T   <i2t> <sou> [und embeds] <eou> <bos> caption <eos>                   (causal, next-token CE)
With probability `cfg_drop` the T2I/RecA text is replaced by "generate an image ." (the und embeds stay, as in
Harmon's reconstruction data), which trains the unconditional branch used by CFG.

Miniature choices (each a well-kept library class where one fits; the reasons and measurements behind them are
in data/README.md, "Harmon: the miniature's parts"):
  * latents: the frozen shared `reca_nb.encoders.autoencoder.load_ae()` (diffusers AutoencoderKL, f=4), 32 px ->
    (4, 8, 8), patchified 2x2 as MAR does for a KL-8 VAE -> 16 tokens of dim 16. Not a parameter of this module.
  * LLM: a tiny `transformers.Qwen2ForCausalLM` fed `inputs_embeds`, untied LM head, word embeddings at the
    scale of the image tokens; a 4D mask, causal over text, bidirectional (default) or causal over the image
    tokens, buffer tokens at the END of the image tokens as Harmon.
  * MAR encoder / decoder: `torch.nn.TransformerEncoder` pre-norm GELU layers (timm ViT `Block`), learned
    position embeddings resized for other grids (MAR's `get_encoder_pos_embed`).
  * diffusion head: MAR's `SimpleMLPAdaLN` (reca_nb.models.mar) with diffusers `Timesteps`/`TimestepEmbedding`,
    `DDPMScheduler` (cosine, eps) for noising and `DDIMScheduler` ("leading" respacing) for sampling; eps-MSE
    only (MAR also learns the variance); dropout 0, no EMA.

How the base is made (`pretrain_stages`, run by `python -m reca_nb.build.pretrain --arch=harmon`): the real Harmon
starts from a Qwen2.5 that already reads text and a pretrained MAR; the mini's LLM starts from nothing.
  stage "t2i"    T2I alone: the whole model learns to generate from the prompt through the LLM
  stage "joint"  T2I + I2T 1:1: the LLM also learns to caption; T2I keeps working
Why two stages, and the runs behind each choice: data/README.md, "Harmon: what made the base".
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.world import text
from reca_nb.world.images import check_image_batch
from reca_nb.config import check_choices
from reca_nb.models.common import FrozenParts, PrefixLMCaptioner, gen_device, tiny_qwen2
from reca_nb.models.mar import DiffusionHead, ScaleGradient, blocks, n_masked_after, random_mask, resize_pos
from reca_nb.models.umm import UMM

UNCOND_PROMPT = "generate an image ."  # Harmon's cfg_prompt / unconditional prompt "Generate an image."


@dataclass
class HarmonMiniConfig:
    image_size: int = 32  # generation resolution (Harmon: 512)
    und_size: int = 32  # native understanding resolution (Harmon: input = output = 512)
    vocab_size: int = 0  # 0 -> len(text.tokenizer()) when built; stored so checkpoints stay consistent
    latent_channels: int = 4  # of the shared autoencoder (load_ae)
    ae_factor: int = 4  # its spatial down-sampling: 32 px -> 8x8 latents
    patch_size: int = 2  # MAR's patchify: p x p latents -> one token of C*p*p dims (MAR KL-8: p=2; Harmon KL-16:
    #                      p=1). 2 -> 16 tokens of 16 dims per 32 px image
    # MAR encoder / decoder (Harmon-0.5B: MAR-B, 12 + 12 layers of width 768; 64 buffers for 1024 latents)
    buffer_size: int = 4
    enc_dim: int = 96
    enc_layers: int = 2
    enc_heads: int = 4
    dec_dim: int = 96
    dec_layers: int = 2
    dec_heads: int = 4
    mlp_ratio: float = 4.0
    # LLM (Harmon: Qwen2.5-0.5B / 1.5B)
    d_llm: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_ffn: int = 256
    max_positions: int = 256
    llm_embed_std: float = 1.0  # init std of the LLM's word embeddings (Qwen2: 0.02), see __init__
    llm_tie_embeddings: bool = False  # Qwen2.5-0.5B ties; a mini LLM never pretrained on text must not (see
    #                                   data/README.md, "OpenUni": the 14-word caption softmax merges every
    #                                   prompt-only word when the LM head is the input table)
    image_attn: Literal["bidirectional", "causal"] = "bidirectional"  # among image tokens in the LLM; Harmon: causal
    # diffusion head (Harmon-0.5B: 6 blocks of width 1024)
    diff_width: int = 128
    diff_depth: int = 3
    diffusion_batch_mul: int = 4  # Harmon / MAR: 4
    num_train_timesteps: int = 1000
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # Harmon / MAR: epsilon; v weighs high noise
    # MAR masking and RecA
    mask_ratio_min: float = 0.7  # truncated normal on [min, 1], mean 1, std 0.25 (MAR)
    grad_scale: float = 0.1  # gradient scale into the RecA understanding embedding (Harmon's _ScaleGradient)
    cfg_drop: float = 0.1  # probability of training with the unconditional prompt (Harmon: unconditional=0.1)
    # sampling (Harmon: 64 MAR iterations, 100 DDPM steps)
    sample_iters: int = 8
    diffusion_steps: int = 25
    guidance: float = 3.0  # classifier-free guidance scale on the head's eps (1 = off)
    cfg_schedule: Literal["constant", "linear"] = "constant"  # Harmon | MAR / Muse (ramps up from 1)
    temperature: float = 1.0  # scales the diffusion head's per-step noise (MAR)
    eta: float = 1.0  # 1 = ancestral DDPM on the respaced steps, 0 = deterministic DDIM
    max_caption_len: int = 24
    seed: int = 0  # weight-init seed

    def __post_init__(self):
        check_choices(self)


class HarmonMini(FrozenParts, PrefixLMCaptioner, UMM):
    arch = "harmon"
    config_cls = HarmonMiniConfig
    # how the base is made (module docstring): T2I alone first, so the prompt route through the LLM forms
    # before the LLM also learns to caption; then T2I + I2T together
    pretrain_stages = (("t2i", {}, {"lambda_i2t": 0.0}), ("joint", {}, {}))

    def __init__(self, config: HarmonMiniConfig | None = None, ae=None):
        super().__init__()
        from diffusers import DDPMScheduler

        c = copy.deepcopy(config) if config is not None else HarmonMiniConfig()
        self.tok = text.tokenizer()
        if c.vocab_size == 0:
            c.vocab_size = len(self.tok)
        elif c.vocab_size != len(self.tok):
            raise ValueError(f"this HarmonMini was built for a {c.vocab_size}-word vocabulary but the "
                             f"tokenizer now has {len(self.tok)} words (data/prompts/reca_templates.txt "
                             "changed?); rebuild it with `python -m reca_nb.build.pretrain --arch=harmon`")
        self.token_px = c.ae_factor * c.patch_size  # pixels per token side (8)
        if c.image_size % self.token_px or c.und_size % self.token_px:
            raise ValueError(f"image_size {c.image_size} and und_size {c.und_size} must be multiples of "
                             f"{self.token_px} (AE factor {c.ae_factor} x patch size {c.patch_size})")
        if not 0.0 < c.mask_ratio_min <= 1.0:
            raise ValueError(f"mask_ratio_min must be in (0, 1], got {c.mask_ratio_min}")
        self.config = c
        self._init_frozen(ae=ae)
        self.side = c.image_size // self.token_px  # token grid side of a generated image (4)
        self.seq_len = self.side ** 2  # 16 image tokens
        self.token_dim = c.latent_channels * c.patch_size ** 2  # 16
        C, E, D, nb = self.token_dim, c.enc_dim, c.dec_dim, c.buffer_size

        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            # --- MAR encoder: the ONE visual encoder of both paths
            self.z_proj = nn.Linear(C, E)  # token (C,) -> encoder width
            self.z_proj_ln = nn.LayerNorm(E, eps=1e-6)
            self.buffer_embed = nn.Parameter(torch.randn(1, 1, E) * 0.02)  # Harmon's mar.fake_latent
            self.enc_pos_buffer = nn.Parameter(torch.randn(1, nb, E) * 0.02)
            self.enc_pos = nn.Parameter(torch.randn(1, self.seq_len, E) * 0.02)
            self.encoder = blocks(E, c.enc_layers, c.enc_heads, c.mlp_ratio)
            # --- projections between MAR and the LLM (Harmon's build_mlp: Linear -> SiLU -> Linear)
            self.proj_in = nn.Sequential(nn.Linear(E, c.d_llm), nn.SiLU(), nn.Linear(c.d_llm, c.d_llm))
            self.proj_out = nn.Sequential(nn.Linear(c.d_llm, c.d_llm), nn.SiLU(), nn.Linear(c.d_llm, E))
            # --- MAR decoder + per-token diffusion head (generation only)
            self.decoder_embed = nn.Linear(E, D)
            self.mask_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
            self.dec_pos_buffer = nn.Parameter(torch.randn(1, nb, D) * 0.02)
            self.dec_pos = nn.Parameter(torch.randn(1, self.seq_len, D) * 0.02)
            self.decoder = blocks(D, c.dec_layers, c.dec_heads, c.mlp_ratio)
            self.diffusion_pos = nn.Parameter(torch.randn(1, self.seq_len, D) * 0.02)
            for m in (self.z_proj, self.proj_in, self.proj_out, self.decoder_embed, self.encoder,
                      self.decoder):
                for sub in m.modules():
                    if isinstance(sub, nn.Linear):  # MAR: xavier-uniform linears, zero biases
                        nn.init.xavier_uniform_(sub.weight)
                        nn.init.zeros_(sub.bias)
            self.diffloss = DiffusionHead(C, D, c.diff_width, c.diff_depth)
            # --- the LLM (shared), with its tied LM head for captions
            self.llm = tiny_qwen2(c.vocab_size, c.d_llm, c.llm_layers, c.llm_heads, c.llm_kv_heads, c.llm_ffn,
                                  c.max_positions, c.llm_tie_embeddings, self.tok)
            # Prompt words enter the LLM on the scale of the image tokens from proj_in (~1 per dimension): at
            # Qwen2's 0.02 the image tokens are ~50x larger and barely move with what they attend to, so the
            # prompt hardly reaches them. Trained jointly from the start, std 1 slows I2T instead: hence the T2I
            # stage first (pretrain_stages). The runs: data/README.md, "Harmon: what made the base".
            emb = self.llm.get_input_embeddings().weight
            nn.init.normal_(emb, std=c.llm_embed_std)
            emb.data[self.tok.pad_id] = 0  # the padding row stays zero (it gets no gradient)
        # the DDPM noise schedule of the head (a buffer-free config object, not state)
        self.scheduler = DDPMScheduler(num_train_timesteps=c.num_train_timesteps,
                                       beta_schedule="squaredcos_cap_v2", prediction_type=c.prediction_type,
                                       clip_sample=False)

    def _check_images(self, images, size: int | None, what: str) -> torch.Tensor:
        images = check_image_batch(images, what, size=size, multiple=self.token_px)
        return images.to(self.device)

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor) -> tuple:
        """(B, 3, H, W) -> tokens (B, h*w, C*p*p) row-major (MAR's `patchify`), and the token grid (h, w)."""
        z = self.ae.encode(images).float()  # (B, C, H/f, W/f)
        B, C, H, W = z.shape
        p = self.config.patch_size
        z = z.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        return z.reshape(B, (H // p) * (W // p), C * p * p), (H // p, W // p)

    @torch.no_grad()
    def decode_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, side*side, C*p*p) -> images (B, 3, S, S) in [0, 1] (MAR's `unpatchify`, then the AE)."""
        B, p, s = tokens.shape[0], self.config.patch_size, self.side
        z = tokens.reshape(B, s, s, -1, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, s, p, s, p)
        return self.ae.decode(z.reshape(B, -1, s * p, s * p)).float().clamp(0, 1)

    # ------------------------------------------------------------------ MAR encoder (shared)
    def mar_encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, grid: tuple | None = None):
        """MAR encoder over the visible latent tokens plus the buffer tokens (buffers first, as MAR).

        tokens (B, N, C); mask (B, N) bool, True = masked (dropped), the same count in every row; grid (h, w)
        of the tokens (default: the generation grid). -> (B, buffer_size + visible, enc_dim)."""
        B, N, _ = tokens.shape
        h, w = grid or (self.side, self.side)
        if h * w != N:
            raise ValueError(f"{N} tokens do not form a {h}x{w} grid")
        nb = self.config.buffer_size
        x = torch.cat([self.buffer_embed.expand(B, nb, -1), self.z_proj(tokens)], dim=1)  # (B, nb + N, E)
        x = x + torch.cat([self.enc_pos_buffer, resize_pos(self.enc_pos, self.side, h, w)], dim=1)
        x = self.z_proj_ln(x)
        if mask is not None:  # drop the masked tokens (MAR); rows keep equal lengths
            keep = torch.cat([torch.ones(B, nb, dtype=torch.bool, device=x.device), ~mask], dim=1)
            x = x[keep].reshape(B, -1, x.shape[-1])
        return self.encoder(x)  # (B, nb + V, E)

    def _to_llm(self, x_enc: torch.Tensor) -> torch.Tensor:
        """proj_in, then the buffers moved to the END of the image tokens (Harmon):
        (B, nb + V, E) -> (B, V + nb, d)."""
        nb = self.config.buffer_size
        z = self.proj_in(x_enc)
        return torch.cat([z[:, nb:], z[:, :nb]], dim=1)

    def visual_features(self, images: torch.Tensor) -> torch.Tensor:
        """The understanding path: MAR encoder on the unmasked latents -> proj_in -> (B, N + nb, d_llm)."""
        tokens, grid = self.encode_latents(images)
        return self._to_llm(self.mar_encode(tokens, None, grid))

    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """RecA's h_v: the understanding features of `images` (any size, multiple of 4), gradient scaled by
        `grad_scale` (Harmon's `_ScaleGradient(0.1)` in recon_loss). (B, 3, h, w) -> (B, hw/16 + nb, d)."""
        images = self._check_images(images, None, "understanding images")
        return ScaleGradient.apply(self.visual_features(images), self.config.grad_scale)

    # ------------------------------------------------------------------ LLM helpers
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.to(self.device))

    def _special(self, name: str, B: int) -> torch.Tensor:
        return self._embed(torch.full((B, 1), self.tok.stoi[name], dtype=torch.long))  # (B, 1, d)

    def _gen_prefix(self, prompts: list, cond: torch.Tensor | None, uncond: torch.Tensor | None = None):
        """<t2i> (<sou> cond <eou>) prompt <soi>, prompts left-padded -> embeds (B, P, d), valid (B, P) bool.
        Rows where `uncond` (B,) is True get the unconditional prompt instead (cond stays, as Harmon)."""
        B = len(prompts)
        if cond is not None and cond.shape[0] != B:
            raise ValueError(f"{B} prompts but cond has batch {cond.shape[0]}")
        drop = [False] * B if uncond is None else uncond.tolist()
        seqs = [self.tok.encode(UNCOND_PROMPT if d else p) for p, d in zip(prompts, drop)]
        L = max(1, max(len(s) for s in seqs))
        ids = torch.tensor([[self.tok.pad_id] * (L - len(s)) + s for s in seqs], dtype=torch.long)  # (B, L)
        parts = [self._special("<t2i>", B)]
        if cond is not None:
            parts += [self._special("<sou>", B), cond.to(self.device), self._special("<eou>", B)]
        n_lead = sum(p.shape[1] for p in parts)
        parts += [self._embed(ids), self._special("<soi>", B)]
        valid = torch.cat([torch.ones(B, n_lead, dtype=torch.bool), ids != self.tok.pad_id,
                           torch.ones(B, 1, dtype=torch.bool)], dim=1).to(self.device)
        return torch.cat(parts, dim=1), valid

    def _gen_mask(self, valid: torch.Tensor, n_img: int) -> torch.Tensor:
        """4D additive mask (B, 1, T, T) for [prefix | image tokens]: causal over the prefix; image tokens
        see the whole prefix and each other (bidirectional) or the earlier ones (causal); padding is never
        seen (transformers hands a 4D mask to sdpa / eager as it is)."""
        B, P = valid.shape
        T = P + n_img
        allowed = torch.ones(T, T, dtype=torch.bool, device=self.device).tril()
        if self.config.image_attn == "bidirectional":
            allowed[P:, P:] = True
        keys = torch.cat([valid, torch.ones(B, n_img, dtype=torch.bool, device=self.device)], dim=1)
        allowed = allowed[None] & keys[:, None, :]
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=self.device)  # pads see themselves (no NaN)
        mask = torch.zeros(allowed.shape, device=self.device)
        return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]

    def _llm_image(self, prefix: torch.Tensor, valid: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """LLM over [prefix | image tokens] -> hidden states at the image positions (B, M, d)."""
        x = torch.cat([prefix, img], dim=1)
        keys = torch.cat([valid, torch.ones(img.shape[:2], dtype=torch.bool, device=self.device)], dim=1)
        pos = (keys.long().cumsum(1) - 1).clamp(min=0)  # padding does not shift the rotary positions
        h = self.llm.model(inputs_embeds=x, attention_mask=self._gen_mask(valid, img.shape[1]),
                           position_ids=pos).last_hidden_state
        return h[:, prefix.shape[1]:]

    # ------------------------------------------------------------------ MAR generation stack
    def mar_forward(self, tokens: torch.Tensor, mask: torch.Tensor, prefix: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
        """Encoder (visible) -> LLM (after the prefix) -> proj_out residual -> decoder -> z (B, N, D)."""
        B, N, _ = tokens.shape
        nb = self.config.buffer_size
        x_enc = self.mar_encode(tokens, mask)  # (B, nb + V, E)
        h = self._llm_image(prefix, valid, self._to_llm(x_enc))  # (B, V + nb, d)
        h = torch.cat([h[:, -nb:], h[:, :-nb]], dim=1) if nb else h  # buffers back to the front
        x = self.decoder_embed(x_enc + self.proj_out(h))  # (B, nb + V, D) residual learning (Harmon)
        keep = torch.cat([torch.ones(B, nb, dtype=torch.bool, device=self.device), ~mask], dim=1)
        full = self.mask_token.expand(B, nb + N, -1).clone()  # mask tokens at the masked positions
        full[keep] = x.reshape(-1, x.shape[-1])
        full = full + torch.cat([self.dec_pos_buffer, self.dec_pos], dim=1)
        z = self.decoder(full)[:, nb:]  # (B, N, D)
        return z + self.diffusion_pos

    def sample_mask(self, B: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """MAR's training mask (B, N) bool, True = masked (`mar.random_mask` on [mask_ratio_min, 1])."""
        return random_mask(B, self.seq_len, self.config.mask_ratio_min, generator).to(self.device)

    def diffusion_loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MAR's DiffLoss on (n, D) conditions and (n, C) clean tokens: each row repeated diffusion_batch_mul
        times, t ~ U{0..999}, x_t = add_noise(x0, eps, t) (cosine DDPM), MSE of the head's eps (or v)."""
        k = self.config.diffusion_batch_mul
        z, x0 = z.repeat(k, 1), target.repeat(k, 1)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=self.device)
        noise = torch.randn_like(x0)
        xt = self.scheduler.add_noise(x0, noise, t)
        v_pred = self.config.prediction_type == "v_prediction"
        target = self.scheduler.get_velocity(x0, noise, t) if v_pred else noise
        return F.mse_loss(self.diffloss(xt, t, z), target)

    def generation_loss(self, images: torch.Tensor, prompts: list,
                        cond: torch.Tensor | None = None) -> torch.Tensor:
        """MAR diffusion loss on the masked latent tokens of `images`, given prompts (and RecA's `cond`)."""
        images = self._check_images(images, self.config.image_size, "target images")
        B = images.shape[0]
        if len(prompts) != B:
            raise ValueError(f"{B} images but {len(prompts)} prompts")
        tokens, _ = self.encode_latents(images)  # (B, N, C), no gradient (frozen AE)
        mask = self.sample_mask(B)  # (B, N)
        uncond = torch.rand(B) < self.config.cfg_drop if self.training else None
        prefix, valid = self._gen_prefix(prompts, cond, uncond)
        z = self.mar_forward(tokens, mask, prefix, valid)  # (B, N, D)
        return self.diffusion_loss(z[mask], tokens[mask])

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def _sample_tokens(self, z: torch.Tensor, z_uncond: torch.Tensor | None, guidance: float, steps: int,
                       temperature: float, eta: float, generator) -> torch.Tensor:
        """Draw (n, C) tokens with the diffusion head by DDIM/DDPM steps, CFG on eps (shared noise)."""
        from diffusers import DDIMScheduler

        # "leading" spacing (diffusers' default): 25 steps start at t = 960, not 999. The cosine schedule ends
        # at alpha_bar_999 ~ 2e-9, where x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) multiplies any
        # eps error by 2e4 (measured: sampled latents with std ~1000 from a trained head); at t = 960 by 16.
        # float64 alphas keep the scalar DDIM coefficients exact, e.g. sqrt(1 - alpha_bar_prev - sigma^2),
        # which rounds below 0 in float32 near t = 999 (NaN); tokens stay float32 (0-dim tensors don't
        # promote).
        sched = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="leading")
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.set_timesteps(steps, device=self.device)
        n, C = z.shape[0], self.token_dim
        x = torch.randn(n, C, generator=generator, device=gen_device(generator)).to(self.device)
        for t in sched.timesteps:
            tt = t.expand(n).to(self.device)
            if z_uncond is None:
                eps = self.diffloss(x, tt, z)
            else:
                e_c, e_u = self.diffloss(torch.cat([x, x]), torch.cat([tt, tt]),
                                         torch.cat([z, z_uncond])).chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            noise = torch.randn(n, C, generator=generator, device=gen_device(generator)).to(self.device) * temperature
            x = sched.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        return x

    @torch.no_grad()
    def sample(self, prompts: list, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None, iters: int | None = None, steps: int | None = None,
               guidance: float | None = None, temperature: float | None = None, eta: float | None = None,
               cfg_schedule: str | None = None, return_latents: bool = False, **kwargs) -> torch.Tensor:
        """MAR iterative unmasking (cosine schedule, random order) -> (B, 3, S, S) in [0, 1].

        Guidance > 1 runs a second, unconditional branch (prompt "generate an image .", cond kept) and mixes
        the diffusion head's eps per step; cfg_schedule "linear" ramps the scale up from 1 as tokens are
        revealed."""
        c = self.config
        iters, steps = iters or c.sample_iters, steps or c.diffusion_steps
        g = c.guidance if guidance is None else guidance
        temperature = c.temperature if temperature is None else temperature
        eta = c.eta if eta is None else eta
        cfg_schedule = cfg_schedule or c.cfg_schedule
        B, N = len(prompts), self.seq_len
        prefix, valid = self._gen_prefix(prompts, cond)
        if g != 1.0:  # batch the unconditional branch behind the conditional one
            pu, vu = self._gen_prefix(prompts, cond, torch.ones(B, dtype=torch.bool))
            P = max(prefix.shape[1], pu.shape[1])  # left-pad both to one length
            prefix = torch.cat([F.pad(prefix, (0, 0, P - prefix.shape[1], 0)),
                                F.pad(pu, (0, 0, P - pu.shape[1], 0))])
            valid = torch.cat([F.pad(valid, (P - valid.shape[1], 0)), F.pad(vu, (P - vu.shape[1], 0))])
        tokens = torch.zeros(B, N, self.token_dim, device=self.device)
        mask = torch.ones(B, N, dtype=torch.bool, device=self.device)
        order = torch.rand(B, N, generator=generator, device=gen_device(generator)).argsort(dim=1).to(self.device)
        for step in range(iters):
            both = 2 if g != 1.0 else 1
            z = self.mar_forward(tokens.repeat(both, 1, 1), mask.repeat(both, 1), prefix, valid)  # (2B, N, D)
            n_masked = int(mask[0].sum())
            n_next = n_masked_after(step, iters, N, n_masked)
            mask_next = torch.zeros_like(mask).scatter_(1, order[:, :n_next], True)
            to_pred = mask & ~mask_next  # (B, N) the same count per row
            gi = g if cfg_schedule == "constant" else 1 + (g - 1) * (N - n_next) / N
            zc = z[:B][to_pred]
            zu = z[B:][to_pred] if g != 1.0 else None
            tokens[to_pred] = self._sample_tokens(zc, zu, gi, steps, temperature, eta, generator)
            mask = mask_next
        if return_latents:
            return tokens
        return self.decode_latents(tokens)

    # ------------------------------------------------------------------ understanding (I2T)
    def _caption_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """<i2t> <sou> image embeds <eou> <bos> -> (B, N + nb + 4, d). No gradient scaling (plain I2T)."""
        images = self._check_images(images, None, "understanding images")
        img = self.visual_features(images)
        B = img.shape[0]
        return torch.cat([self._special("<i2t>", B), self._special("<sou>", B), img,
                          self._special("<eou>", B), self._special("<bos>", B)], dim=1)

    # ------------------------------------------------------------------ parameter groups
    GEN_ONLY = ("proj_out.", "decoder_embed.", "mask_token", "dec_pos", "decoder.", "diffusion_pos",
                "diffloss.")

    def parameter_groups(self) -> dict:
        """Harmon trains everything but the VAE. The MAR encoder, proj_in and the LLM (with its tied text
        embeddings / head) serve both paths -> "shared"; the MAR decoder, proj_out and the diffusion head
        serve only generation -> "generation". Nothing is understanding-only; the AE is not a parameter
        here."""
        names = [n for n, _ in self.named_parameters()]
        gen = [n for n in names if n.startswith(self.GEN_ONLY)]
        return {"understanding": [], "generation": gen, "shared": [n for n in names if n not in set(gen)],
                "frozen": []}
