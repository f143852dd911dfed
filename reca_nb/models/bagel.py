"""BAGEL in miniature: one decoder, two experts per layer (mixture-of-transformers), flow matching on latents.

BAGEL (Deng et al. 2025; the "decoupled" UMM of RecA Sec. 4 / Table 1) is a Qwen2 decoder whose every layer
holds TWO sets of weights (`Qwen2MoTDecoderLayer` in BAGEL's modeling/bagel/qwen2_navit.py):

    understanding expert  (q/k/v/o projections, QK-norms, MLP, RMSNorms)  at text and ViT-token positions
    generation expert     (the same, "*_moe_gen")                          at VAE-latent positions
    ONE self-attention over the whole sequence: each token's q/k/v come from its own expert.

A packed training sequence is a list of spans, each with its own attention mode (BAGEL data/dataset_base.py):

    T2I    [<bos> prompt <eos>]                               [<soi> z_1 .. z_64]
    I2T    [<sou> ViT tokens <eou>] [<bos> caption <eos>]
    RecA   [<sou> ViT tokens <eou>] [<bos> template <eos>]    [<soi> z_1 .. z_64]   (ReconstructionDataset)

Text is causal; an image span (markers included) is bidirectional inside and sees every earlier span; the
noisy latent span is last, so nothing reads it. BAGEL's RoPE id counts text tokens one by one and gives a
whole image span ONE id, which yields the mask directly: token q may read token k iff id(k) <= id(q).
(RoPE is kept, as in BAGEL: it is what orders the caption tokens; 2-D order inside images comes from the
ViT's own position embedding and from `latent_pos_embed`.)

Understanding: frozen CLIP patch features (`reca_nb.encoders.clip`, standing in for SigLIP) -> `connector` MLP ->
ViT tokens; I2T = next-token CE through the understanding expert and `lm_head`.
Generation: rectified flow on frozen-autoencoder latents (`reca_nb.encoders.autoencoder`, standing in for the FLUX
VAE): 32 px -> (4, 8, 8) -> 64 tokens via `vae2llm` (+ `time_embedder`(t) + `latent_pos_embed`), velocity out
via `llm2vae`. t = sigmoid(N(0, 1)) (shifted, shift 1 in training), x_t = (1 - t) x0 + t eps, target
v = eps - x0, MSE on latent positions. Sampling integrates the ODE from t = 1 to 0 with diffusers'
`FlowMatchEulerDiscreteScheduler` (same x_t and shift conventions) and classifier-free guidance on the text
(BAGEL's cfg_text: the unconditional branch drops the text, keeps any ViT condition; trained by dropping the
text with p = 0.1, `text_cond_dropout_prob`).

RecA (paper Sec. 3, practice 3): BAGEL freezes the understanding expert, the connector and the ViT
(`freeze_und`) and, inside the MoT, *detaches* every understanding-position activation (hidden states,
q/k/v, attention and MLP outputs), so only the generation expert, `vae2llm`/`llm2vae`, `time_embedder` and
`latent_pos_embed` learn. Here: `detach_und=True` does the same whenever the understanding group is frozen.

Shared frozen parts (CLIP, autoencoder) are loaded, never owned: not in this module's parameters or
checkpoint. No library ships an MoT layer, so `MoTLayer` is written out below from transformers' Qwen2
pieces (RMSNorm, SwiGLU MLP, rotary embedding); attention is torch SDPA with a 4-D boolean mask.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.world import text
from reca_nb.models.common import FrozenParts, gen_device
from reca_nb.models.umm import UMM


@dataclass
class BagelMiniConfig:
    image_size: int = 32  # generation resolution (BAGEL: 512-1024)
    und_size: int = 16  # native ViT input (BAGEL: SigLIP at 224 for 512+ targets -> the same ratio)
    vocab_size: int = 0  # 0 -> len(text.tokenizer()) when built; stored so checkpoints stay consistent
    clip_width: int = 0  # 0 -> load_clip().width when built
    latent_channels: int = 4  # of the shared autoencoder (load_ae)
    ae_factor: int = 4  # its spatial down-sampling: 32 px -> 8x8 latents = 64 tokens (latent patch 1)
    # the MoT decoder (BAGEL: Qwen2.5-7B, 28 layers, d 3584, every layer doubled)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn: int = 384  # SwiGLU hidden size of each expert's MLP
    qk_norm: bool = True  # BAGEL adds RMSNorm on q and k (per expert)
    rope_theta: float = 10000.0
    max_positions: int = 256  # RoPE ids: one per text token, one per image span
    norm_eps: float = 1e-6
    detach_und: bool = True  # BAGEL freeze_und: stop-gradient at understanding positions while that group
    #                          is frozen (model.freeze({"understanding", ...}), as train() does for it)
    # flow matching
    timestep_shift: float = 1.0  # training t -> s t / (1 + (s - 1) t); BAGEL trains with 1.0
    cfg_drop_text: float = 0.1  # BAGEL text_cond_dropout_prob (RecA's ViT span: enable_cfg 0, never dropped)
    sample_steps: int = 16  # Euler steps (BAGEL: 50)
    sample_shift: float = 1.0  # timestep shift at sampling (BAGEL: 3.0 at 1024 px)
    guidance: float = 2.0  # text CFG scale (1 = off; BAGEL cfg_text_scale 4.0)
    max_caption_len: int = 24


class Expert(nn.Module):
    """One expert's half of a MoT layer: Qwen2's norms, q/k/v/o projections, QK-norms and SwiGLU MLP."""

    def __init__(self, qcfg, qk_norm: bool):
        super().__init__()
        from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2RMSNorm

        d, eps = qcfg.hidden_size, qcfg.rms_norm_eps
        self.n_heads, self.head_dim = qcfg.num_attention_heads, d // qcfg.num_attention_heads
        self.input_layernorm = Qwen2RMSNorm(d, eps)
        self.q_proj = nn.Linear(d, d, bias=True)  # Qwen2: biased q/k/v, unbiased o
        self.k_proj = nn.Linear(d, d, bias=True)
        self.v_proj = nn.Linear(d, d, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.q_norm = Qwen2RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = Qwen2RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.post_attention_layernorm = Qwen2RMSNorm(d, eps)
        self.mlp = Qwen2MLP(qcfg)

    def qkv(self, x: torch.Tensor) -> tuple:
        """(B, t, d) -> q, k, v, each (B, H, t, hd)."""
        B, t, _ = x.shape
        h = self.input_layernorm(x)
        split = lambda y: y.view(B, t, self.n_heads, self.head_dim)  # noqa: E731
        q, k = self.q_norm(split(self.q_proj(h))), self.k_norm(split(self.k_proj(h)))
        v = split(self.v_proj(h))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class MoTLayer(nn.Module):
    """Mixture-of-transformers decoder layer (BAGEL `Qwen2MoTDecoderLayer`), for sequences laid out as
    [understanding positions][n_gen generation positions]. BAGEL packs arbitrary interleavings and routes with
    index lists; every sequence of this miniature ends with its latent span, so a slice does the routing."""

    def __init__(self, qcfg, qk_norm: bool):
        super().__init__()
        self.und = Expert(qcfg, qk_norm)
        self.gen = Expert(qcfg, qk_norm)

    def forward(self, x, n_gen: int, rope: tuple, mask: torch.Tensor, detach_und: bool = False):
        """x (B, T, d); rope = (cos, sin) (B, T, hd); mask (B, 1, T, T) bool, True = may attend."""
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

        B, T, d = x.shape
        P = T - n_gen
        stop = (lambda y: y.detach()) if detach_und else (lambda y: y)  # BAGEL freeze_und
        qu, ku, vu = (stop(y) for y in self.und.qkv(x[:, :P]))  # each expert computes its tokens' q/k/v
        qg, kg, vg = self.gen.qkv(x[:, P:])
        q, k = apply_rotary_pos_emb(torch.cat([qu, qg], 2), torch.cat([ku, kg], 2), *rope, unsqueeze_dim=1)
        a = F.scaled_dot_product_attention(q, k, torch.cat([vu, vg], 2), attn_mask=mask)  # ONE attention
        a = a.transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        x = x + torch.cat([stop(self.und.o_proj(a[:, :P])), self.gen.o_proj(a[:, P:])], 1)
        mu = stop(self.und.mlp(self.und.post_attention_layernorm(x[:, :P])))
        mg = self.gen.mlp(self.gen.post_attention_layernorm(x[:, P:]))
        return x + torch.cat([mu, mg], 1)


class BagelMini(FrozenParts, UMM):
    arch = "bagel"
    config_cls = BagelMiniConfig

    def __init__(self, config: BagelMiniConfig | None = None, clip=None, ae=None):
        super().__init__()
        self.und_frozen = False  # set by freeze(); True turns on the freeze_und stop-gradient
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
        from transformers import Qwen2Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, Qwen2RotaryEmbedding

        cfg = copy.deepcopy(config) if config is not None else BagelMiniConfig()
        self.tok = text.tokenizer()
        self._init_frozen(clip=clip, ae=ae)
        if cfg.vocab_size == 0:
            cfg.vocab_size = len(self.tok)
        if cfg.clip_width == 0:
            cfg.clip_width = self.clip.width
        if cfg.image_size % cfg.ae_factor:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of the AE factor "
                             f"{cfg.ae_factor}")
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        self.config = cfg
        d, C = cfg.d_model, cfg.latent_channels
        self.grid = cfg.image_size // cfg.ae_factor  # latent side: 8
        qcfg = Qwen2Config(vocab_size=cfg.vocab_size, hidden_size=d, intermediate_size=cfg.ffn,
                           num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                           num_key_value_heads=cfg.n_heads, hidden_act="silu", rms_norm_eps=cfg.norm_eps,
                           max_position_embeddings=cfg.max_positions,
                           rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})

        # --- understanding: token embeddings, ViT connector (BAGEL MLPconnector), LM head
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d)
        self.connector = nn.Sequential(nn.Linear(cfg.clip_width, d), nn.GELU(approximate="tanh"),
                                       nn.Linear(d, d))
        self.norm = Qwen2RMSNorm(d, cfg.norm_eps)  # final norm, understanding expert
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        # --- the MoT decoder
        self.layers = nn.ModuleList(MoTLayer(qcfg, cfg.qk_norm) for _ in range(cfg.n_layers))
        self.rotary = Qwen2RotaryEmbedding(qcfg)  # buffers only
        # --- generation: latent patch embed / unembed, timestep embedder, 2-D latent positions
        self.norm_gen = Qwen2RMSNorm(d, cfg.norm_eps)  # final norm, generation expert (BAGEL norm_moe_gen)
        self.vae2llm = nn.Linear(C, d)
        self.llm2vae = nn.Linear(d, C)
        self.time_proj = Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0)  # no parameters
        self.time_embedder = TimestepEmbedding(d, d)
        pos = get_2d_sincos_pos_embed(d, self.grid, base_size=self.grid, output_type="pt")  # (64, d)
        self.latent_pos_embed = nn.Parameter(pos.float().clone())  # BAGEL: fixed sin-cos; here learnable
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):  # Qwen2 initializer_range
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ sequence building
    # A sequence is a list of spans; each span is (embeddings (B, L, d), valid (B, L), new_id (B, L)):
    # `valid` False = padding / a dropped condition (never attended to), `new_id` True where a RoPE id starts.

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.numel() and int(ids.max()) >= self.config.vocab_size:
            raise ValueError(f"token id {int(ids.max())} is outside this model's vocabulary of "
                             f"{self.config.vocab_size}: the shared tokenizer grew after the model was built")
        return self.embed_tokens(ids.to(self.device))

    def _special(self, name: str, B: int) -> torch.Tensor:
        return self._embed(torch.full((B, 1), self.tok.stoi[name], dtype=torch.long))  # (B, 1, d)

    def _text_span(self, ids: torch.Tensor, drop: torch.Tensor | None = None) -> tuple:
        """Right-padded ids (B, L) -> causal text span; rows where `drop` is True vanish (CFG)."""
        valid = (ids != self.tok.pad_id).to(self.device)
        if drop is not None:
            valid &= ~drop.to(self.device)[:, None]
        return self._embed(ids), valid, valid.clone()

    def _image_span(self, start: str, tokens: torch.Tensor, end: str | None = None) -> tuple:
        """[start] tokens [end] as one bidirectional span with a single RoPE id. tokens (B, N, d)."""
        B = tokens.shape[0]
        parts = [self._special(start, B), tokens.to(self.device)] + ([self._special(end, B)] if end else [])
        x = torch.cat(parts, 1)  # (B, L, d)
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=self.device)
        new = torch.zeros_like(valid)
        new[:, 0] = True
        return x, valid, new

    def freeze(self, groups: set) -> None:
        """As UMM.freeze; a frozen understanding group also turns on BAGEL's freeze_und stop-gradient."""
        super().freeze(groups)
        self.und_frozen = "understanding" in groups

    def forward_hidden(self, spans: list, n_gen: int = 0) -> torch.Tensor:
        """Run the MoT decoder over concatenated spans; the last n_gen positions go to the generation expert.
        Returns final-normed hidden states (B, T, d)."""
        x = torch.cat([s[0] for s in spans], 1)  # (B, T, d)
        valid = torch.cat([s[1] for s in spans], 1)  # (B, T)
        new = torch.cat([s[2] for s in spans], 1) & valid
        T = x.shape[1]
        P = T - n_gen
        ids = (new.long().cumsum(1) - 1).clamp(min=0)  # (B, T) BAGEL RoPE ids
        if int(ids.max()) >= self.config.max_positions:
            raise ValueError(f"sequence needs {int(ids.max()) + 1} RoPE ids > max_positions "
                             f"{self.config.max_positions}")
        eye = torch.eye(T, dtype=torch.bool, device=self.device)
        mask = ((ids[:, None, :] <= ids[:, :, None]) & valid[:, None, :]) | eye  # (B, T, T) query x key
        detach = self.config.detach_und and self.und_frozen
        if detach:  # BAGEL freeze_und: understanding positions carry no gradient at all
            x = torch.cat([x[:, :P].detach(), x[:, P:]], 1)
        rope = self.rotary(x, ids)  # (cos, sin), each (B, T, hd)
        for layer in self.layers:
            x = layer(x, n_gen, rope, mask[:, None], detach)
        return torch.cat([self.norm(x[:, :P]), self.norm_gen(x[:, P:])], 1)

    # ------------------------------------------------------------------ understanding
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """connector(frozen CLIP patch tokens): (B, 3, h, w) -> (B, (h/4)^2, d_model) ViT tokens."""
        return self.connector(self.clip_features(images))  # (B, N, d)

    def _vit_span(self, images: torch.Tensor) -> tuple:
        return self._image_span("<sou>", self.understanding_embedding(images), "<eou>")

    def _text_logits(self, prefix: tuple, ids: torch.Tensor) -> torch.Tensor:
        """Logits at every text position of [prefix][text ids]: (B, L, V)."""
        h = self.forward_hidden([prefix, self._text_span(ids)])
        return self.lm_head(h[:, -ids.shape[1]:])

    def i2t_loss(self, images: torch.Tensor, captions: list) -> torch.Tensor:
        """Next-token CE of `<bos> caption <eos>` after the ViT span (understanding expert + lm_head)."""
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        ids = self.tok.batch(captions, bos=True, eos=True).to(self.device)  # (B, L) right-padded
        logits = self._text_logits(self._vit_span(images), ids)[:, :-1]  # position i predicts ids[:, i+1]
        labels = ids[:, 1:].masked_fill(ids[:, 1:] == self.tok.pad_id, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_len: int | None = None) -> list:
        """Greedy decoding (no KV cache: sequences are < 100 tokens)."""
        prefix = self._vit_span(images)
        B = prefix[0].shape[0]
        ids = torch.full((B, 1), self.tok.bos_id, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        for _ in range(max_len or self.config.max_caption_len):
            nxt = self._text_logits(prefix, ids)[:, -1].argmax(-1)  # (B,)
            nxt = nxt.masked_fill(done, self.tok.eos_id)  # finished rows keep emitting <eos> (not <pad>)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == self.tok.eos_id
            if bool(done.all()):
                break
        return [self.tok.decode(row[1:]) for row in ids.tolist()]

    # ------------------------------------------------------------------ generation (rectified flow)
    def _latent_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> frozen AE latents as tokens (B, h*w, C), row-major."""
        S = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (S, S):
            raise ValueError(f"target images must be (B, 3, {S}, {S}), "
                             f"got {tuple(images.shape)}")
        with torch.no_grad():
            z = self.ae.encode(images.to(self.device)).float()  # (B, C, h, w)
        return z.flatten(2).transpose(1, 2)  # (B, h*w, C)

    def velocity(self, zt: torch.Tensor, t: torch.Tensor, prompts: list, cond: torch.Tensor | None = None,
                 drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted v = eps - x0 for noisy latent tokens zt (B, N, C) at times t (B,) in [0, 1], given
        ([<sou>] cond [<eou>]) [<bos> prompt <eos>]; rows with drop_text True see no text (the CFG branch)."""
        B, N, _ = zt.shape
        if len(prompts) != B:
            raise ValueError(f"{B} latents but {len(prompts)} prompts")
        spans = []
        if cond is not None:
            if cond.shape[0] != B:
                raise ValueError(f"{B} prompts but cond has batch {cond.shape[0]}")
            spans.append(self._image_span("<sou>", cond, "<eou>"))
        spans.append(self._text_span(self.tok.batch(prompts, bos=True, eos=True), drop_text))
        temb = self.time_embedder(self.time_proj(1000 * t.to(self.device, torch.float32)))  # (B, d)
        lat = self.vae2llm(zt) + temb[:, None] + self.latent_pos_embed  # (B, N, d)
        spans.append(self._image_span("<soi>", lat))  # <soi> -> understanding expert, latents -> generation
        h = self.forward_hidden(spans, n_gen=N)
        return self.llm2vae(h[:, -N:])  # (B, N, C)

    def generation_loss(self, images: torch.Tensor, prompts: list,
                        cond: torch.Tensor | None = None) -> torch.Tensor:
        """Rectified-flow MSE on latent positions; t = sigmoid(N(0, 1)) as BAGEL."""
        B = images.shape[0]
        if len(prompts) != B:
            raise ValueError(f"{B} images but {len(prompts)} prompts")
        x0 = self._latent_tokens(images)  # (B, N, C)
        s = self.config.timestep_shift
        t = torch.sigmoid(torch.randn(B))  # CPU RNG: the same draws on every device
        t = (s * t / (1 + (s - 1) * t)).to(self.device)
        eps = torch.randn(x0.shape).to(self.device)
        tt = t[:, None, None]
        zt = (1 - tt) * x0 + tt * eps
        drop = torch.rand(B) < self.config.cfg_drop_text if self.training else None
        v = self.velocity(zt, t, prompts, cond, drop)
        return F.mse_loss(v, eps - x0)

    @torch.no_grad()
    def sample(self, prompts: list, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               guidance: float | None = None, shift: float | None = None, return_latents: bool = False,
               **kwargs) -> torch.Tensor:
        """Euler ODE from noise (t = 1) to data (t = 0) with FlowMatchEulerDiscreteScheduler (sigma = t,
        timestep = 1000 t, x_prev = x + (sigma_next - sigma) v) and text CFG: v = v_u + g (v_c - v_u)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg, B = self.config, len(prompts)
        g = cfg.guidance if guidance is None else guidance
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000,
                                                shift=cfg.sample_shift if shift is None else shift)
        sched.set_timesteps(steps or cfg.sample_steps, device=self.device)
        N = self.grid * self.grid
        z = torch.randn((B, N, cfg.latent_channels), generator=generator,
                        device=gen_device(generator)).to(self.device)  # (B, N, C)
        two = g != 1.0
        P = prompts + prompts if two else prompts
        c = None if cond is None else (torch.cat([cond, cond]) if two else cond)
        drop = torch.arange(len(P)) >= B  # second half: no text
        for t in sched.timesteps:
            zz = torch.cat([z, z]) if two else z
            v = self.velocity(zz, (t / 1000).expand(len(P)), P, c, drop)
            if two:
                vc, vu = v.chunk(2)
                v = vu + g * (vc - vu)
            z = sched.step(v, t, z).prev_sample
        z = z.transpose(1, 2).reshape(B, cfg.latent_channels, self.grid, self.grid)  # (B, C, h, w)
        if return_latents:
            return z
        return self.ae.decode(z).float().clamp(0, 1)

    # ------------------------------------------------------------------ freeze policy
    def parameter_groups(self) -> dict:
        und, gen = [], []
        for n, _ in self.named_parameters():
            if n.startswith("layers."):
                (und if n.split(".")[2] == "und" else gen).append(n)
            elif n.startswith(("embed_tokens.", "connector.", "norm.", "lm_head.")):
                und.append(n)
            elif n.startswith(("norm_gen.", "vae2llm.", "llm2vae.", "time_embedder.", "latent_pos_embed")):
                gen.append(n)
        return {"understanding": und, "generation": gen, "shared": [], "frozen": []}
