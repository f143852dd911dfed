"""OpenUni / MetaQuery in miniature: a frozen VLM + learnable meta-queries + connector + a diffusers DiT.

OpenUni (Wu et al. 2025, the "decoupled" UMM of RecA Sec. 4 / Table 1) bridges a frozen understanding VLM
(InternVL3) and a diffusion transformer (SANA) with learnable *meta-queries* (MetaQuery, Pan et al. 2025):

    VLM input   [<t2i>] ([<sou>] image embeds [<eou>]) prompt [<soi>] q_1 ... q_Q     (causal LLM)
    last hidden states at the Q query positions -> connector (Linear + transformer encoder)
                -> encoder_hidden_states of a SanaTransformer2DModel over autoencoder latents
    loss        flow matching: x_t = (1 - s) x0 + s eps, target v = eps - x0, timestep = 1000 s, s ~ U(0, 1)

T2I feeds the prompt only; RecA (paper Sec. 3, official `image2image_loss`) feeds the understanding embedding
of the image (projected CLIP tokens, as InternVL's pixel-shuffled ViT features) followed by a prompt template.
Understanding is decoupled: the VLM (CLIP -> projector -> tiny Qwen2 LLM) captions images (I2T) and is frozen
during RecA (practice 3, lambda_i2t = 0). Gradients of the generation loss pass *through* the VLM to reach the
queries, but never update VLM weights (as OpenUni's `freeze_lmm=True`) unless the understanding group trains.

How the base is made (`pretrain_stages`, run by `python -m reca_nb.build.pretrain --arch=openuni`), as the real
model is: OpenUni starts from a SANA that was pretrained with its OWN text encoder and from a pretrained VLM.
  stage "sana"    the DiT learns T2I reading the prompt through `text_encoder` (one learned vector per word, the
                  stand-in for SANA's Gemma), while the VLM learns I2T; the meta-queries are not used
  stage "bridge"  OpenUni's stage 1: VLM and DiT frozen, the meta-queries + connector learn the flow loss
RecA then trains meta-queries + connector + DiT (the VLM stays frozen, practice 3). Training the DiT from
scratch through the frozen VLM's queries (one stage) stayed near chance: the prompt moved the flow loss by 39 %,
yet the samples followed the number of objects, not their shape or colour (GenEval-mini 0.15). The measurements
are in data/README.md.

Two miniature aids, both measured (data/README.md):
  * The VLM's LM head is NOT tied to its input embeddings (`llm_tie_embeddings=False`, as in Qwen2.5-7B and
    larger). Tied, the captioning softmax pushed every word that captions never use ("a", "two",
    "three", "above", "below", plurals) to one shared direction (cosine 0.99 between them in a 1200-step
    base), so the frozen VLM could not tell "two squares" from "three squares"; a bridge then plateaued at
    GenEval-mini 0.33 (distillation loss floor 0.015-0.02; untied 0.001-0.003).
  * The DiT's cross-attention output layers start at zero (a random condition only adds variance to a fresh
    DiT: the meta-query outputs became the same for every prompt within 25 steps), and `connector_norm="batch"`
    standardises each feature of the VLM's hidden states (no affine; running statistics at sampling), which
    share a large common component.

Parts that are frozen and shared with the other miniatures are loaded, not owned: the CLIP vision tower
(`reca_nb.encoders.clip.load_clip`) and the latent autoencoder (`reca_nb.encoders.autoencoder.load_ae`). They are never
nn.Parameters of this module, so they are not in its state_dict or checkpoint.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.world import text
from reca_nb.config import check_choices
from reca_nb.models.common import FrozenParts, PrefixLMCaptioner, gen_device, tiny_qwen2
from reca_nb.models.umm import UMM


@dataclass
class OpenUniMiniConfig:
    image_size: int = 32  # generation resolution (OpenUni: 512)
    und_size: int = 28  # native understanding resolution (OpenUni: InternViT at 448 = 448/512 of the output)
    vocab_size: int = 0  # 0 -> len(text.tokenizer()) when built; stored so checkpoints stay consistent
    clip_width: int = 0  # 0 -> load_clip().width when built
    latent_channels: int = 4  # of the shared autoencoder (load_ae)
    ae_factor: int = 4  # its spatial down-sampling: 32 px -> 8x8 latents
    # understanding VLM: CLIP tokens -> MLP projector -> tiny Qwen2 LLM with a captioning head
    d_llm: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_ffn: int = 256
    max_positions: int = 256
    llm_tie_embeddings: bool = False  # tied, the captioning head merges the prompt-only words (docstring)
    # generation: meta-queries -> connector -> Sana DiT
    num_queries: int = 16  # OpenUni: 256 queries for a 16x16 latent; here 16 for 8x8
    connector_layers: int = 2  # OpenUni: 6-layer ConnectorEncoder
    connector_input: Literal["queries", "all"] = "queries"  # MetaQuery / OpenUni | hidden states at every position
    connector_heads: int = 4
    connector_norm: Literal["batch", "none"] = "batch"  # standardise VLM hidden states per feature | OpenUni
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 32
    dit_mlp_ratio: float = 2.5
    dit_self_attn: Literal["linear", "softmax"] = "linear"  # Sana's linear attention | SanaAttnProcessor2_0
    # pretraining stages (class docstring): SANA's own text encoder first, then the meta-query bridge
    text_route: Literal["meta_queries", "text_encoder"] = "meta_queries"  # OpenUni | SANA pretraining
    freeze_dit: bool = False  # OpenUni stage 1: the pretrained DiT is frozen, meta-queries + connector learn
    # flow matching
    cfg_drop: float = 0.1  # probability of training a sample unconditionally (for classifier-free guidance)
    sample_steps: int = 16  # Euler steps of FlowMatchEulerDiscreteScheduler
    guidance: float = 3.0  # classifier-free guidance scale at sampling (1 = off)
    max_caption_len: int = 24

    def __post_init__(self):
        check_choices(self)


class OpenUniMini(FrozenParts, PrefixLMCaptioner, UMM):
    arch = "openuni"
    config_cls = OpenUniMiniConfig
    # how the base is made (class docstring): SANA pretraining with its own text encoder while the VLM learns
    # I2T, then OpenUni's stage 1 (frozen VLM, frozen DiT; meta-queries + connector learn the flow loss)
    pretrain_stages = (("sana", {"text_route": "text_encoder"}, {}),
                       ("bridge", {"freeze_dit": True}, {"lambda_i2t": 0.0, "freeze": "understanding"}))

    def __init__(self, config: OpenUniMiniConfig | None = None, clip=None, ae=None):
        super().__init__()
        # OpenUni's freeze_lmm: the generation loss leaves VLM weights alone unless freeze() unfreezes them
        self.vlm_gen_grad = False
        from diffusers import FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel

        cfg = copy.deepcopy(config) if config is not None else OpenUniMiniConfig()
        self.tok = text.tokenizer()
        self._init_frozen(clip=clip, ae=ae)
        if cfg.vocab_size == 0:
            cfg.vocab_size = len(self.tok)
        if cfg.clip_width == 0:
            cfg.clip_width = self._load("clip").width
        if cfg.image_size % cfg.ae_factor:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of the AE factor "
                             f"{cfg.ae_factor}")
        self.config = cfg
        d = cfg.d_llm

        # --- understanding: projector (LLaVA-style 2-layer MLP) + LLM with a captioning head
        self.projector = nn.Sequential(nn.Linear(cfg.clip_width, d), nn.GELU(), nn.Linear(d, d))
        self.llm = tiny_qwen2(cfg.vocab_size, d, cfg.llm_layers, cfg.llm_heads, cfg.llm_kv_heads, cfg.llm_ffn,
                              cfg.max_positions, cfg.llm_tie_embeddings, self.tok)

        # --- generation: meta-queries, connector (OpenUni's llm2dit: projector + encoder), Sana DiT
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) * 0.02)  # (Q, d)
        # per-feature standardisation of the VLM hidden states (class docstring): running statistics, no affine
        self.hidden_norm = (nn.BatchNorm1d(d, affine=False) if cfg.connector_norm == "batch"
                            else nn.Identity())
        layer = nn.TransformerEncoderLayer(d, cfg.connector_heads, 2 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.connector = nn.Sequential(
            nn.Linear(d, d),
            nn.TransformerEncoder(layer, cfg.connector_layers, norm=nn.LayerNorm(d),
                                  enable_nested_tensor=False))
        # SANA's own text encoder in miniature (Gemma-2B in SANA): one learned vector per word, read only
        # with text_route="text_encoder" (pretraining stage "sana"); OpenUni replaces it by the VLM route
        self.text_encoder = nn.Embedding(cfg.vocab_size, d)
        inner = cfg.dit_heads * cfg.dit_head_dim
        self.dit = SanaTransformer2DModel(
            in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
            num_attention_heads=cfg.dit_heads, attention_head_dim=cfg.dit_head_dim, num_layers=cfg.dit_layers,
            num_cross_attention_heads=cfg.dit_heads, cross_attention_head_dim=cfg.dit_head_dim,
            cross_attention_dim=inner, caption_channels=d, mlp_ratio=cfg.dit_mlp_ratio,
            sample_size=cfg.image_size // cfg.ae_factor, patch_size=1,
            interpolation_scale=1)  # 1 -> fixed 2-D sin-cos positions (slots matter in shape world)
        from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0

        for block in self.dit.transformer_blocks:
            nn.init.zeros_(block.attn2.to_out[0].weight)  # zero-init cross-attention output (class docstring)
            nn.init.zeros_(block.attn2.to_out[0].bias)
            if cfg.dit_self_attn == "softmax":
                block.attn1.set_processor(SanaAttnProcessor2_0())
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)

    # ------------------------------------------------------------------ understanding (VLM)
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Projected CLIP patch tokens, the image embeds that enter the LLM: (B, 3, h, w) -> (B, N, d_llm)."""
        return self.projector(self.clip_features(images))  # (B, N, d)

    def _embed(self, ids: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w = self.llm.get_input_embeddings().weight
        if ids.numel() and int(ids.max()) >= w.shape[0]:
            raise ValueError(f"token id {int(ids.max())} is outside this model's vocabulary of {w.shape[0]}: "
                             "the shared tokenizer grew after the model was built; rebuild or retrain it")
        return F.embedding(ids.to(self.device), w.detach() if detach else w)

    def _special(self, name: str, B: int, detach: bool = False) -> torch.Tensor:
        ids = torch.full((B, 1), self.tok.stoi[name], dtype=torch.long)
        return self._embed(ids, detach)  # (B, 1, d)

    def _caption_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """[<i2t>] [<sou>] image embeds [<eou>] [<bos>]: the VLM's captioning prompt, (B, N + 4, d)."""
        img = self.understanding_embedding(images)
        B = img.shape[0]
        return torch.cat([self._special("<i2t>", B), self._special("<sou>", B), img,
                          self._special("<eou>", B), self._special("<bos>", B)], dim=1)

    # ------------------------------------------------------------------ generation condition (meta-queries)
    def freeze(self, groups: set) -> None:
        """As UMM.freeze; a trainable understanding group also lets the generation loss reach the VLM's
        weights (OpenUni proper keeps the VLM frozen, freeze_lmm=True, which RecA's practice 3 follows)."""
        super().freeze(groups)
        self.vlm_gen_grad = "understanding" not in groups

    def condition(self, prompts: list, cond: torch.Tensor | None = None,
                  drop: torch.Tensor | None = None, return_mask: bool = False):
        """VLM over [<t2i>] ([<sou>] cond [<eou>]) prompt [<soi>] queries -> connector -> (B, Q, d).

        connector_input "all": the connector reads the VLM's last hidden states at every position (image embeds,
        prompt, queries), padding masked out -> (B, T, d); `return_mask` also gives the (B, T) keep-mask that
        the DiT's cross-attention must use (all ones for "queries").

        `drop` (B,) bool marks samples made unconditional (empty prompt, cond masked out): the CFG branch.
        Prompts are left-padded so the queries sit at the end of every row; padding (and dropped cond) is
        removed by the attention mask and skipped by the position ids, so a row equals its unpadded sequence.
        """
        B = len(prompts)
        if cond is not None and cond.shape[0] != B:
            raise ValueError(f"{B} prompts but cond has batch {cond.shape[0]}")
        drop = torch.zeros(B, dtype=torch.bool) if drop is None else drop.bool().cpu()
        frozen = not self.vlm_gen_grad  # VLM weights act as constants for the generation loss
        seqs = [[] if dk else self.tok.encode(p) for p, dk in zip(prompts, drop.tolist())]
        L = max(1, max(len(s) for s in seqs))
        ids = torch.tensor([[self.tok.pad_id] * (L - len(s)) + s for s in seqs], dtype=torch.long)  # (B, L)
        if self.config.text_route == "text_encoder":
            return self._text_encoder_condition(ids, cond, return_mask)
        keep = (~drop).long().to(self.device)[:, None]
        parts = [self._special("<t2i>", B, frozen)]
        masks = [torch.ones(B, 1, dtype=torch.long, device=self.device)]
        if cond is not None:
            c = cond.to(self.device)
            parts += [self._special("<sou>", B, frozen), c.detach() if frozen else c,
                      self._special("<eou>", B, frozen)]
            masks.append(keep.expand(B, c.shape[1] + 2))
        parts += [self._embed(ids, frozen), self._special("<soi>", B, frozen),
                  self.queries[None].expand(B, -1, -1)]
        masks += [(ids != self.tok.pad_id).long().to(self.device),
                  torch.ones(B, 1 + self.config.num_queries, dtype=torch.long, device=self.device)]
        x, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)  # (B, T, d), (B, T)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        kwargs = dict(inputs_embeds=x, attention_mask=mask, position_ids=pos)
        if frozen:  # gradients flow through the VLM's activations to the queries, never into its weights
            consts = {n: p.detach() for n, p in self.llm.model.named_parameters()}
            h = torch.func.functional_call(self.llm.model, consts, args=(), kwargs=kwargs).last_hidden_state
        else:
            h = self.llm.model(**kwargs).last_hidden_state
        if self.config.connector_input == "queries":
            h, mask = h[:, -self.config.num_queries:], mask[:, -self.config.num_queries:]  # all kept
        valid = mask.bool()  # standardise the kept positions only (statistics over them, padding untouched)
        h = h.masked_scatter(valid[..., None], self.hidden_norm(h[valid]))
        linear, encoder = self.connector
        ctx = encoder(linear(h), src_key_padding_mask=~valid) * mask[..., None]  # padding: exact zeros
        return (ctx, mask) if return_mask else ctx

    def _text_encoder_condition(self, ids: torch.Tensor, cond, return_mask: bool):
        """SANA's own route: [<t2i>] prompt through the word table -> (B, 1 + L, d); padding is masked out."""
        if cond is not None:
            raise ValueError("text_route='text_encoder' reads prompts only (SANA pretraining); RecA's image "
                             "condition needs text_route='meta_queries'")
        ids = torch.cat([torch.full((ids.shape[0], 1), self.tok.stoi["<t2i>"]), ids], dim=1).to(self.device)
        mask = (ids != self.tok.pad_id).long()
        ctx = self.text_encoder(ids) * mask[..., None]
        return (ctx, mask) if return_mask else ctx

    # ------------------------------------------------------------------ flow matching on AE latents
    def generation_loss(self, images: torch.Tensor, prompts: list,
                        cond: torch.Tensor | None = None) -> torch.Tensor:
        """Rectified-flow MSE of the Sana velocity, uniform timesteps (OpenUni `weighting_scheme="none"`)."""
        B = images.shape[0]
        if len(prompts) != B:
            raise ValueError(f"{B} images but {len(prompts)} prompts")
        if images.shape[-1] != self.config.image_size:
            raise ValueError(f"target images must be {self.config.image_size}px, got {tuple(images.shape)}")
        with torch.no_grad():
            x0 = self.ae.encode(images.to(self.device)).float()  # (B, C, h, w)
        drop = torch.rand(B) < self.config.cfg_drop if self.training else None
        ctx, cmask = self.condition(prompts, cond, drop, return_mask=True)  # (B, Q, d), (B, Q)
        # timesteps drawn uniformly from the scheduler's training grid; sigma = t / 1000 (shift 1)
        idx = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,))
        sigma = self.scheduler.sigmas[idx].to(self.device, x0.dtype)  # (B,)
        t = self.scheduler.timesteps[idx].to(self.device, x0.dtype)  # (B,) = 1000 sigma
        noise = torch.randn_like(x0)
        s = sigma[:, None, None, None]
        xt = (1 - s) * x0 + s * noise
        v = self.dit(xt, encoder_hidden_states=ctx, timestep=t, encoder_attention_mask=cmask).sample
        return F.mse_loss(v, noise - x0)

    @torch.no_grad()
    def sample(self, prompts: list, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               steps: int | None = None, guidance: float | None = None, return_latents: bool = False,
               **kwargs) -> torch.Tensor:
        """Euler sampling of the flow with FlowMatchEulerDiscreteScheduler and classifier-free guidance."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg, B = self.config, len(prompts)
        g = cfg.guidance if guidance is None else guidance
        two = g != 1.0  # unconditional branch = empty prompt, no image; one call, so both share a length
        P = list(prompts) + [""] * B if two else list(prompts)
        c = None if cond is None else (torch.cat([cond, cond]) if two else cond)
        ctx, cmask = self.condition(P, c, drop=torch.arange(len(P)) >= B, return_mask=True)  # (2B or B, Q, d)
        sched = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)  # fresh step counter
        sched.set_timesteps(steps or cfg.sample_steps, device=self.device)
        h = cfg.image_size // cfg.ae_factor
        z = torch.randn(B, cfg.latent_channels, h, h, generator=generator, device=gen_device(generator)).to(self.device)
        for t in sched.timesteps:
            zz = torch.cat([z, z]) if two else z
            v = self.dit(zz, encoder_hidden_states=ctx, timestep=t.expand(zz.shape[0]),
                         encoder_attention_mask=cmask).sample
            if two:
                vc, vu = v.chunk(2)
                v = vu + g * (vc - vu)
            z = sched.step(v, t, z).prev_sample
        if return_latents:
            return z
        return self.ae.decode(z).float().clamp(0, 1)

    # ------------------------------------------------------------------ freeze policy
    def parameter_groups(self) -> dict:
        names = [n for n, _ in self.named_parameters()]
        und = [n for n in names if n.startswith(("projector.", "llm."))]
        gen = [n for n in names if n == "queries" or n.startswith(("connector.", "dit.", "text_encoder."))]
        # the text encoder learns only while it is the route; the DiT is frozen in OpenUni's stage 1
        off = [n for n in gen if (n.startswith("text_encoder.") and self.config.text_route != "text_encoder")
               or (n.startswith("dit.") and self.config.freeze_dit)]
        gen = [n for n in gen if n not in off]
        return {"understanding": und, "generation": gen, "shared": [], "frozen": off}
