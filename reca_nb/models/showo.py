"""Show-o in miniature: ONE shared transformer that reads and writes text and discrete image tokens.

Show-o (Xie et al. 2024; RecA paper Sec. 4 and its Show-o appendix; official repo showlab/Show-o) is a
Phi-1.5 language model whose vocabulary is extended by the codes of a frozen MAGVIT tokenizer.
One transformer does everything:

  * omni-attention: causal over text, bidirectional inside each image block;
  * T2I: MaskGIT-style discrete diffusion -- mask a cosine-scheduled fraction of the image tokens, predict
    them (CE on masked tokens only); sample by confidence-based iterative decoding, with optional
    classifier-free guidance (the prompt is dropped with probability `cond_dropout` in T2I training);
  * I2T: autoregressive next-token CE on the caption.

Miniature: a tiny `transformers.PhiModel` (Show-o's backbone family) built from a config, fed `inputs_embeds`
and a 4D additive mask that implements omni-attention (transformers hands a 4D mask as-is to the sdpa/eager
kernels, which add it to the attention scores; tests/test_showo.py checks the property for both). The frozen
`reca_nb.encoders.vq` PatchVQ (4x4-pixel k-means, K=256) plays MAGVIT: 32x32 image -> 64 tokens. The vocabulary is
joint, as in Show-o: [text words | 256 image codes | image <mask>], one embedding table and one output head;
image CE is taken over the 256 code logits only (so it starts at ln 256). Learned type embeddings (text /
understanding / generation) and a 2-D grid embedding for image tokens sit on top of Phi's rotary positions.

Sequences (Show-o's `prompting_utils` layouts):
    T2I   <t2i> [left-padded prompt] <soi> [64 image tokens, some masked] <eoi>
    I2T   <i2t> <sou> [und] <eou> <bos> description <eos>                            (CE on the caption)
    RecA  <t2i> <sou> [und] <eou> [template] <soi> [64 image tokens, some masked] <eoi>  (CE on masked only)

Two variants (`config.variant`), as in the paper:
  * "clip" (the main Show-o RecA setting): [und] = frozen semantic patch features of
    `reca_nb.encoders.clip.load_clip()` -> trainable 2-layer `mm_projector` (LLaVA-style) -> the shared transformer.
  * "vq" (the appendix variant): [und] = VQ codes of the understanding image embedded with the *same* table
    as the generation tokens. At und_size == image_size that is the target itself, token for token -- the
    copy shortcut behind copy collapse (practice 1); `token_agreement` measures it.
The frozen VQ and CLIP are never part of this module's state_dict: they come from their cached loaders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PhiConfig, PhiModel

from reca_nb.config import check_choices
from reca_nb.world.images import check_image_batch
from reca_nb.world.text import tokenizer
from reca_nb.models.common import cache_kwargs
from reca_nb.models.umm import UMM
from reca_nb.encoders.vq import load_vq

TYPE_TEXT, TYPE_UND, TYPE_GEN = 0, 1, 2


@dataclass
class ShowOConfig:
    variant: Literal["vq", "clip"] = "clip"  # frozen semantic encoder + mm_projector | und = VQ tokens
    image_size: int = 32  # generation resolution; image_size/4 squared tokens
    und_size: int = 32  # native understanding resolution (before any RecA bottleneck)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.0
    max_positions: int = 512
    text_vocab: int = 0  # len(tokenizer()), filled in at build time
    codebook_size: int = 256  # must match the VQ
    clip_width: int = 0  # width of the CLIP features, filled in at build time (clip variant)
    cond_dropout: float = 0.1  # prob. of dropping the T2I prompt in training (enables CFG)
    sample_steps: int = 10  # MaskGIT decoding steps
    cfg_scale: float = 0.0  # Show-o guidance: (1 + w) * cond - w * uncond; 0 = off
    sample_temperature: float = 1.0  # softmax temperature of the token draws
    mask_temperature: float = 4.5  # randomness of the re-masking choice, annealed to 0 (MaskGIT)
    seed: int = 0  # weight init seed

    def __post_init__(self):
        check_choices(self)


def _check_images(images, size: int | None, what: str) -> torch.Tensor:
    return check_image_batch(images, what, size=size, square=True)


def _check_texts(texts, B: int, what: str) -> list:
    if isinstance(texts, str) or len(texts) != B:
        got = repr(texts) if isinstance(texts, str) else f"{len(texts)} items"
        raise ValueError(f"{what} must be a list of {B} strings (one per image), got {got}")
    return list(texts)


class ShowO(UMM):
    arch = "showo-clip"
    archs = ("showo-vq", "showo-clip")
    config_cls = ShowOConfig

    def __init__(self, config: ShowOConfig | None = None):
        super().__init__()
        c = config or ShowOConfig()
        if c.image_size % 4 or c.und_size % 4:
            raise ValueError(f"image_size and und_size must be multiples of 4 (VQ patch), got "
                             f"{c.image_size}, {c.und_size}")
        n_words = len(tokenizer())
        if c.text_vocab == 0:
            c.text_vocab = n_words
        elif c.text_vocab != n_words:
            raise ValueError(f"this ShowO was built for a {c.text_vocab}-word vocabulary but the tokenizer "
                             f"now has {n_words} words (data/prompts/reca_templates.txt changed?); rebuild "
                             "the checkpoint with `python -m reca_nb.build.pretrain`")
        if c.codebook_size != load_vq().codebook_size:
            raise ValueError(f"codebook_size {c.codebook_size} != VQ codebook {load_vq().codebook_size}")
        if c.variant == "clip" and c.clip_width == 0:
            from reca_nb.encoders.clip import load_clip
            c.clip_width = load_clip().width
        self.config = c
        self.arch = f"showo-{c.variant}"
        self.grid = c.image_size // 4  # generation token grid side
        self.img_offset = c.text_vocab  # joint vocab: [text | codes | <mask>]
        self.mask_id = c.text_vocab + c.codebook_size
        tok = tokenizer()
        self.sp = {name: tok.stoi[f"<{name}>"] for name in ("pad", "bos", "eos", "t2i", "i2t", "soi", "eoi",
                                                             "sou", "eou")}

        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            phi = PhiConfig(vocab_size=self.mask_id + 1, hidden_size=c.d_model, intermediate_size=c.d_ff,
                            num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                            num_key_value_heads=c.n_heads, max_position_embeddings=c.max_positions,
                            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attention_dropout=c.dropout,
                            hidden_act="gelu_pytorch_tanh",  # Phi's tanh-GELU, as one fused kernel
                            pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
            phi._attn_implementation = "sdpa"
            self.transformer = PhiModel(phi)  # .embed_tokens is the joint text+image vocabulary
            self.type_emb = nn.Embedding(3, c.d_model)  # text / und / gen
            self.row_emb = nn.Embedding(self.grid, c.d_model)  # 2-D grid of image tokens
            self.col_emb = nn.Embedding(self.grid, c.d_model)
            self.head = nn.Linear(c.d_model, self.mask_id + 1)  # Show-o's LM head over the joint vocab
            if c.variant == "clip":  # LLaVA-style 2-layer MLP projector (Show-o's `mm_projector`)
                self.mm_projector = nn.Sequential(nn.Linear(c.clip_width, c.d_model), nn.GELU(),
                                                  nn.Linear(c.d_model, c.d_model))
            for m in (self.type_emb, self.row_emb, self.col_emb, self.head,
                      *([self.mm_projector] if c.variant == "clip" else [])):
                for p in m.parameters():
                    nn.init.normal_(p, std=0.02) if p.dim() > 1 else nn.init.zeros_(p)

    # --- frozen tokenizer / encoder (outside the state_dict) --------------------------------------
    @property
    def vq(self):
        return load_vq()

    @property
    def clip(self):
        from reca_nb.encoders.clip import load_clip
        return load_clip()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> VQ codes (B, H/4 * W/4), row-major."""
        return self.vq.encode(images.detach().cpu()).flatten(1).to(self.device)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, g*g) codes -> (B,3,4g,4g) images in [0,1]."""
        g = math.isqrt(codes.shape[1])
        return self.vq.decode(codes.view(-1, g, g).cpu()).to(self.device)

    # --- embeddings -------------------------------------------------------------------------------
    def _grid_emb(self, g: int) -> torch.Tensor:
        """(g*g, D) 2-D position embedding; a coarser grid maps to the centres of the full one."""
        idx = ((2 * torch.arange(g, device=self.device) + 1) * self.grid) // (2 * g)
        return (self.row_emb(idx)[:, None] + self.col_emb(idx)[None, :]).reshape(g * g, -1)

    def _tokens(self, ids: torch.Tensor, kind: int = TYPE_TEXT) -> torch.Tensor:
        return self.transformer.embed_tokens(ids) + self.type_emb.weight[kind]  # (B, L, D)

    def _special(self, name: str, B: int) -> torch.Tensor:
        return self._tokens(torch.full((B, 1), self.sp[name], device=self.device))  # (B, 1, D)

    def _gen_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes in [0, K] (K = <mask>) -> (B, N, D) generation-block embeddings."""
        return self._tokens(codes + self.img_offset, TYPE_GEN) + self._grid_emb(self.grid)

    def _und_block(self, cond: torch.Tensor) -> torch.Tensor:
        """Understanding embedding (B, N, D) -> the und-position inputs (+ type, and grid for VQ)."""
        if cond.dim() != 3 or cond.shape[-1] != self.config.d_model:
            raise ValueError(f"cond must be (B, N, {self.config.d_model}), got {tuple(cond.shape)}")
        x = cond + self.type_emb.weight[TYPE_UND]
        g = math.isqrt(cond.shape[1])
        if self.config.variant == "vq" and g * g == cond.shape[1] and g <= self.grid:
            x = x + self._grid_emb(g)
        return x

    def _text_ids(self, texts: list, left_pad: bool) -> torch.Tensor:
        tok = tokenizer()
        seqs = [tok.encode(t) for t in texts]
        L = max(1, max(len(s) for s in seqs))
        pad = [[tok.pad_id] * (L - len(s)) for s in seqs]
        rows = [p + s if left_pad else s + p for s, p in zip(seqs, pad)]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    # --- the shared transformer with omni-attention ----------------------------------------------
    def omni_mask(self, block: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """4D additive mask (B, 1, T, T). `block` (T,): 0 = causal token, k > 0 = member of bidirectional
        image block k. `valid` (B, T): False for padding, which no query may attend to."""
        T = block.shape[0]
        causal = torch.ones(T, T, dtype=torch.bool, device=block.device).tril()
        same = (block[:, None] == block[None, :]) & (block[:, None] > 0)
        allowed = (causal | same)[None] & valid[:, None, :]  # (B, T, T)
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=block.device)  # pads see themselves
        dtype = self.head.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    def run(self, segments: list, cache=None):
        """segments: [(embeds (B,L,D), valid (B,L) bool or None, bidirectional)] -> hidden (B, T, D).

        Positions count valid tokens only, so left padding does not shift the rotary phases."""
        embs, valids, blocks = [], [], []
        for k, (e, v, bidir) in enumerate(segments):
            B, L, _ = e.shape
            embs.append(e)
            valids.append(torch.ones(B, L, dtype=torch.bool, device=self.device) if v is None else v)
            blocks.append(torch.full((L,), k + 1 if bidir else 0, device=self.device))
        x, valid, block = torch.cat(embs, 1), torch.cat(valids, 1), torch.cat(blocks)
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        out = self.transformer(inputs_embeds=x, attention_mask=self.omni_mask(block, valid), position_ids=pos,
                               use_cache=cache is not None, **cache_kwargs(self.transformer, cache))
        return out.last_hidden_state, pos

    def _t2i_segments(self, codes_in: torch.Tensor, prompts: list, cond: torch.Tensor | None,
                      drop: torch.Tensor | None = None) -> list:
        """The T2I / RecA sequence; the generation block is the second-to-last segment."""
        B = codes_in.shape[0]
        ids = self._text_ids(prompts, left_pad=True)  # (B, Lt)
        valid = ids != self.sp["pad"]
        if drop is not None:  # classifier-free-guidance dropout: the prompt becomes all padding
            valid = valid & ~drop[:, None]
        segs = [(self._special("t2i", B), None, False)]
        if cond is not None:
            segs += [(self._special("sou", B), None, False), (self._und_block(cond), None, True),
                     (self._special("eou", B), None, False)]
        segs += [(self._tokens(ids), valid, False), (self._special("soi", B), None, False),
                 (self._gen_tokens(codes_in), None, True), (self._special("eoi", B), None, False)]
        return segs

    def _image_logits(self, segments: list) -> torch.Tensor:
        """Logits over the K codes at the generation block (B, N, K)."""
        h, _ = self.run(segments)
        N = segments[-2][0].shape[1]
        K = self.config.codebook_size
        return self.head(h[:, -N - 1:-1])[..., self.img_offset:self.img_offset + K]

    # --- UMM interface ----------------------------------------------------------------------------
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) at understanding resolution -> (B, N, D): VQ-token embeddings ("vq", N = (h/4)^2, the
        same table as generation tokens) or projected frozen CLIP patch features ("clip")."""
        images = _check_images(images, None, "understanding images")
        if self.config.variant == "vq":
            codes = self.encode_images(images)  # (B, N)
            return self.transformer.embed_tokens(codes + self.img_offset)
        with torch.no_grad():
            feats = self.clip.image_tokens(images.to(self.device))  # (B, N, clip_width), frozen
        return self.mm_projector(feats.to(self.device).float())

    def generation_loss(self, images: torch.Tensor, prompts: list, cond: torch.Tensor | None = None):
        """MaskGIT masked-token CE: mask ceil-ish cos(pi/2 u) of the N tokens (u ~ U(0,1), >= 1 token) and
        predict them; CE averaged over masked tokens only (Show-o's t2i/recon loss)."""
        images = _check_images(images, self.config.image_size, "target images")
        B = images.shape[0]
        prompts = _check_texts(prompts, B, "prompts")
        if cond is not None and cond.shape[0] != B:
            raise ValueError(f"cond has batch {cond.shape[0]} but there are {B} target images")
        codes = self.encode_images(images)  # (B, N)
        N = codes.shape[1]
        ratio = torch.cos(0.5 * math.pi * torch.rand(B, device=self.device))
        n_mask = (ratio * N).round().clamp(1, N)  # (B,)
        ranks = torch.rand(B, N, device=self.device).argsort(1).argsort(1)
        masked = ranks < n_mask[:, None]  # (B, N) True = masked
        codes_in = codes.masked_fill(masked, self.config.codebook_size)
        drop = None
        if self.training and cond is None and self.config.cond_dropout > 0:
            drop = torch.rand(B, device=self.device) < self.config.cond_dropout
        logits = self._image_logits(self._t2i_segments(codes_in, prompts, cond, drop))  # (B, N, K)
        return F.cross_entropy(logits[masked], codes[masked])

    def _i2t_prefix(self, images: torch.Tensor) -> list:
        B = images.shape[0]
        return [(self._special("i2t", B), None, False), (self._special("sou", B), None, False),
                (self._und_block(self.understanding_embedding(images)), None, True),
                (self._special("eou", B), None, False)]

    def i2t_loss(self, images: torch.Tensor, captions: list) -> torch.Tensor:
        """Next-token CE on `<bos> caption <eos>` after the understanding block (padding ignored)."""
        images = _check_images(images, None, "understanding images")
        captions = _check_texts(captions, images.shape[0], "captions")
        tok = tokenizer()
        ids = tok.batch(captions, bos=True, eos=True).to(self.device)  # (B, Lc), right-padded
        segs = self._i2t_prefix(images) + [(self._tokens(ids), ids != tok.pad_id, False)]
        h, _ = self.run(segs)
        Lc = ids.shape[1]
        logits = self.head(h[:, -Lc:-1])[..., :self.config.text_vocab]  # predicts ids[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                               ignore_index=tok.pad_id)

    @torch.no_grad()
    def sample(self, prompts: list, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               cfg_scale: float | None = None, temperature: float | None = None, return_codes: bool = False):
        """Confidence-based iterative decoding (MaskGIT / Show-o): start fully masked; at step t draw every
        masked token, keep the most confident ones and re-mask the rest so that a cos(pi/2 (t+1)/S) fraction
        stays masked. CFG (cfg_scale > 0) contrasts with an empty prompt (the und block, if any, is kept).
        -> (B, 3, S, S) in [0, 1] (and the (B, N) codes if `return_codes`)."""
        c = self.config
        prompts = list(prompts)
        B, N, K = len(prompts), self.grid ** 2, c.codebook_size
        steps = steps or c.sample_steps
        w = c.cfg_scale if cfg_scale is None else cfg_scale
        temp = c.sample_temperature if temperature is None else temperature
        if cond is not None and cond.shape[0] != B:
            raise ValueError(f"cond has batch {cond.shape[0]} but there are {B} prompts")
        codes = torch.full((B, N), K, dtype=torch.long, device=self.device)
        gdev = generator.device if generator is not None else self.device  # draws happen where the RNG is
        for t in range(steps):
            if w > 0:
                both = torch.cat([codes, codes])
                cond2 = None if cond is None else torch.cat([cond, cond])
                drop = torch.arange(2 * B, device=self.device) >= B
                lg = self._image_logits(self._t2i_segments(both, prompts + prompts, cond2, drop))
                logits = (1 + w) * lg[:B] - w * lg[B:]
            else:
                logits = self._image_logits(self._t2i_segments(codes, prompts, cond))  # (B, N, K)
            probs = F.softmax(logits / max(temp, 1e-6), -1)
            draw = torch.multinomial(probs.view(-1, K).to(gdev), 1, generator=generator).view(B, N).to(self.device)
            unknown = codes == K
            draw = torch.where(unknown, draw, codes)
            conf = torch.gather(probs, -1, draw[..., None]).squeeze(-1).clamp_min(1e-20).log()
            ratio = (t + 1) / steps
            n_mask = math.floor(N * math.cos(0.5 * math.pi * ratio))
            n_left = int(unknown.sum(1).min())
            n_mask = max(1, min(n_left - 1, n_mask)) if t < steps - 1 else 0
            u = torch.rand(B, N, generator=generator, device=gdev).to(self.device)
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
            conf = conf + c.mask_temperature * (1 - ratio) * gumbel
            conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))  # fixed tokens stay
            codes = draw
            if n_mask > 0:
                codes = codes.scatter(1, conf.argsort(1)[:, :n_mask], K)
        images = self.decode_codes(codes)
        return (images, codes) if return_codes else images

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_len: int | None = None) -> list:
        """Greedy decoding over the text vocabulary, with a KV cache; stops at <eos>."""
        max_len = max_len or 24
        from transformers import DynamicCache

        images = _check_images(images, None, "understanding images")
        tok = tokenizer()
        B = images.shape[0]
        cache = DynamicCache(config=self.transformer.config)
        segs = self._i2t_prefix(images) + [(self._special("bos", B), None, False)]
        h, pos = self.run(segs, cache=cache)
        next_pos = pos[:, -1:] + 1  # (B, 1)
        out = torch.full((B, max_len), tok.pad_id, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        for i in range(max_len):
            nxt = self.head(h[:, -1])[:, :self.config.text_vocab].argmax(-1)  # (B,)
            nxt = nxt.masked_fill(done, tok.pad_id)
            out[:, i] = nxt
            done |= nxt == tok.eos_id
            if bool(done.all()):
                break
            kv_len = cache.get_seq_length() + 1
            mask = torch.zeros(B, 1, 1, kv_len, device=self.device)  # new token sees the whole past
            step = self.transformer(inputs_embeds=self._tokens(nxt[:, None]), attention_mask=mask,
                                  position_ids=next_pos, use_cache=True,
                                  **cache_kwargs(self.transformer, cache))
            h = step.last_hidden_state
            next_pos = next_pos + 1
        return [tok.decode(row) for row in out.tolist()]

    def parameter_groups(self) -> dict:
        """Shared transformer, embeddings and head: "shared"; mm_projector: "understanding". VQ and CLIP are
        frozen but are not parameters of this module at all (cached loaders), so "frozen" is empty."""
        names = [n for n, _ in self.named_parameters()]
        und = [n for n in names if n.startswith("mm_projector.")]
        return {"understanding": und, "generation": [], "shared": [n for n in names if n not in und],
                "frozen": []}

    def token_agreement(self, und_images: torch.Tensor, target_images: torch.Tensor) -> float | None:
        """vq variant: fraction of und tokens equal to the target token at the same grid position (1.0 is a
        perfect copy path); None for clip or when the two grids differ."""
        if self.config.variant != "vq" or und_images.shape[-2:] != target_images.shape[-2:]:
            return None
        a, b = self.encode_images(und_images), self.encode_images(target_images)
        return float((a == b).float().mean())
