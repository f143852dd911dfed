"""The Janus logic that the miniature (`reca_nb.models.janus.JanusMini`) and the real Janus-Pro
(`reca_nb.models.real.janus_pro.JanusPro`) share over transformers' `JanusForConditionalGeneration`
(`self.hf`).

Both build a left-padded generation prefix that ends in the begin-of-image token, fill its image-placeholder
slots with RecA's condition h_v, and train / sample the VQ codes after it through Janus's generation head:

    generation_loss   next-token CE over the image's VQ codes (no transformers loss exists for it)
    _ar_loop          Janus's image-generation loop with a KV cache and classifier-free guidance, written out
                      because transformers' `generate(generation_mode="image")` cannot take h_v
    _uncond           Janus's unconditional prompt: every token but <bos> and the final <boi> padded

They differ only in their text front end, which a subclass provides:
    _prefix(prompts, cond) -> ids, mask (B, P)   the generation prefix, with IMG slots when `cond` is given
    _und_pixels(images), encode_images(images)   pixels for SigLIP and the VQ-VAE
    pad_id, bos_id                               token ids of its tokenizer
and `pad_positions`: whether position ids skip the left padding (as `generate` computes them; the real
model) or count it (the miniature, trained that way).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from reca_nb.models.common import cache_kwargs
from reca_nb.models.umm import GROUPS, UMM


class JanusCore(UMM):
    pad_positions: bool = True  # position ids skip left padding (False: 0..T-1 over the padded row)

    # --- sizes, dtype ---------------------------------------------------------------------------------
    @property
    def n_und(self) -> int:
        """Understanding tokens per image (ViT patches)."""
        return (self.und_size // self.hf.config.vision_config.patch_size) ** 2

    @property
    def n_gen(self) -> int:
        """VQ codes per generated image."""
        return self.hf.config.vq_config.num_patches ** 2

    @property
    def dtype(self):
        return self.hf.lm_head.weight.dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.hf.model.vqmodel.eval()  # Janus's VQ-VAE is a frozen tokenizer
        return self

    # --- the generation prefix ---------------------------------------------------------------------------
    def _uncond(self, ids: torch.Tensor) -> torch.Tensor:
        """Janus's unconditional prompt: every token but <bos> and the final <boi> becomes <pad>."""
        keep = ids == self.bos_id
        keep[:, -1] = True
        return torch.where(keep, ids, torch.full_like(ids, self.pad_id))

    def _embed_prefix(self, ids: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the IMG slots filled by `cond` (B, N, D), one row per row of `ids`; rows
        whose slots were replaced by pads (condition dropout, CFG's unconditional rows) take no features."""
        emb = self.hf.get_input_embeddings()(ids)  # (B, P, D)
        if cond is None:
            return emb
        slots = ids == self.img_id  # (B, P)
        rows = slots.any(1)
        if rows.any():
            emb = emb.masked_scatter(slots[..., None], cond[rows].to(emb.dtype))
        return emb

    def _gen_embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """VQ codes -> LLM input embeddings (generation embedding + aligner) in the LLM's dtype."""
        return self.hf.prepare_embeddings_for_image_generation(tokens).to(self.dtype)

    def _gen_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.hf.model.generation_head(hidden.float())

    def _positions(self, mask: torch.Tensor) -> torch.Tensor | None:
        return positions(mask) if self.pad_positions else None

    # --- images ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M) VQ codes -> (B, 3, S, S) float in [0, 1]."""
        return ((self.hf.decode_image_tokens(tokens).float().permute(0, 3, 1, 2) + 1) / 2).clamp(0, 1)

    # --- the UMM interface -----------------------------------------------------------------------------
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """SigLIP path: aligner(vision_model(x)) -> (B, N, D) with N = n_und, D = LLM width."""
        return self.hf.model.get_image_features(self._und_pixels(images)).pooler_output

    def generation_loss(self, images, prompts, cond=None):
        """Janus's next-token CE over the image's VQ codes through `generation_head`."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if cond is not None and (cond.shape[0] != len(images) or cond.shape[1] != self.n_und):
            raise ValueError(f"cond must be (B={len(images)}, {self.n_und}, D), got {tuple(cond.shape)}")
        tok = self.encode_images(images)  # (B, M)
        ids, mask = self._prefix(list(prompts), cond)  # (B, P)
        if self.training and self.config.cfg_dropout > 0:
            drop = torch.rand(len(ids), device=ids.device) < self.config.cfg_dropout
            ids = torch.where(drop[:, None], self._uncond(ids), ids)
        emb = torch.cat([self._embed_prefix(ids, cond), self._gen_embed(tok)], 1)
        mask = torch.cat([mask, torch.ones_like(tok)], 1)
        hs = self.hf.model.language_model(inputs_embeds=emb, attention_mask=mask,
                                          position_ids=self._positions(mask)).last_hidden_state
        P = ids.shape[1]
        logits = self._gen_logits(hs[:, P - 1:-1])  # (B, M, K): position t predicts code t+1
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))

    @torch.no_grad()
    def sample_tokens(self, prompts, cond=None, generator=None, cfg_scale=None, temperature=None, top_k=None):
        """(B, M) VQ codes by Janus's AR loop with CFG (conditional rows, then unconditional rows)."""
        cfg_scale, temperature, top_k = self._sampling(cfg_scale, temperature, top_k)
        ids, mask = self._prefix(list(prompts), cond)
        return self._ar_loop(ids, mask, cond, generator, cfg_scale, temperature, top_k)

    def _sampling(self, cfg_scale, temperature, top_k) -> tuple:
        c = self.config
        return (c.cfg_scale if cfg_scale is None else cfg_scale,
                c.temperature if temperature is None else temperature, c.top_k if top_k is None else top_k)

    def _ar_loop(self, ids, mask, cond, generator, cfg_scale, temperature, top_k):
        from transformers import DynamicCache

        B, lm = len(ids), self.hf.model.language_model
        guided = cfg_scale is not None and cfg_scale > 1
        if guided:  # conditional rows, then Janus's unconditional rows (pads + <bos> <boi>, no h_v)
            ids, mask = torch.cat([ids, self._uncond(ids)]), torch.cat([mask, mask])
            cond = None if cond is None else torch.cat([cond, cond])  # unconditional rows have no IMG slots
        cache = DynamicCache(config=lm.config)
        pos = self._positions(mask)
        out = lm(inputs_embeds=self._embed_prefix(ids, cond), attention_mask=mask, position_ids=pos,
                 use_cache=True, **cache_kwargs(lm, cache))
        pos = None if pos is None else pos[:, -1:]
        tokens = torch.zeros(B, self.n_gen, dtype=torch.long, device=ids.device)
        for i in range(self.n_gen):
            logits = self._gen_logits(out.last_hidden_state[:, -1])  # (B or 2B, K)
            if guided:
                cond_l, uncond_l = logits.chunk(2)
                logits = uncond_l + cfg_scale * (cond_l - uncond_l)
            tokens[:, i] = pick(logits, temperature, top_k, generator).to(tokens.device)
            if i + 1 == self.n_gen:
                break
            nxt = tokens[:, i:i + 1].repeat(2 if guided else 1, 1)  # (B or 2B, 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            pos = None if pos is None else pos + 1
            out = lm(inputs_embeds=self._gen_embed(nxt), attention_mask=mask, position_ids=pos,
                     use_cache=True, **cache_kwargs(lm, cache))
        return tokens

    @torch.no_grad()
    def sample(self, prompts, cond=None, generator=None, **kwargs):
        """One image per prompt -> (B, 3, S, S) in [0, 1]. kwargs: cfg_scale, temperature, top_k. A
        torch.Generator must live on the model's device (CPU generator for a CPU model)."""
        return self.decode_tokens(self.sample_tokens(list(prompts), cond, generator, **kwargs))

    def parameter_groups(self):
        return janus_parameter_groups(self)


def janus_parameter_groups(model) -> dict:
    """UMM groups of a model holding transformers' Janus as `model.hf` (the mini and real Janus-Pro alike):
    SigLIP + aligner = understanding, generation_* = generation, the VQ model frozen, the LLM shared."""
    groups = {g: [] for g in GROUPS}
    for name, _ in model.named_parameters():
        part = name.split(".")[2] if name.startswith("hf.model.") else name
        if part in ("vision_model", "aligner"):
            groups["understanding"].append(name)
        elif part.startswith("generation_"):
            groups["generation"].append(name)
        elif part == "vqmodel":
            groups["frozen"].append(name)
        else:  # language_model (incl. text embeddings, tied to lm_head) and lm_head
            groups["shared"].append(name)
    return groups


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (what `generate` computes from the attention mask)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def pick(logits, temperature, top_k, generator):
    """Greedy (temperature 0) or top-k / temperature sampling with an optional torch.Generator."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@contextlib.contextmanager
def text_generate_quietly():
    """transformers' logging at error level for the duration: Janus's text-mode `generate` always adds
    guidance_scale=None next to the generation config it builds, and transformers then logs a warning
    ("Passing `generation_config` together with ...") that no caller argument can avoid."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
