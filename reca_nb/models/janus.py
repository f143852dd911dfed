"""Janus / Janus-Pro in miniature: two visual encoders, one shared LLM (built on transformers' Janus).

Janus (arXiv 2410.13848) and Janus-Pro (arXiv 2501.17811) *decouple* visual encoding:
  * understanding (I2T) reads SigLIP features:   pixels -> vision_model (ViT) -> aligner (MLP) -> LLM
  * generation (T2I) writes VQ tokens:           LLM -> generation_head -> VQ code -> generation_embeddings
                                                 -> generation_aligner -> next LLM input; VQ decoder -> pixels
and both paths run through one shared autoregressive LLM. This module is a thin wrapper around the real
`transformers.JanusForConditionalGeneration` at a tiny size, so every forward pass, the image-generation loop
(`generate(generation_mode="image")` with classifier-free guidance) and the module names are Janus's own.

RecA on Janus (paper Sec. 3; reca_anchors.md A.6): the condition h_v is the SigLIP path's output
`aligner(vision_model(x))`, placed where Janus puts understanding features (the image-placeholder tokens)
before a "describe the image" template; the target is the image's VQ tokens under Janus's own next-token CE.
Input (SigLIP features) and output (VQ codes) live in different spaces, so Janus has a *natural information
bottleneck*: no special treatment is needed (practice 1), but the LLM is shared, so mix I2T data (practice 4).

Sequences (token ids from the shared word tokenizer; IMG = `image_token_id`, one id past the word vocabulary):
  I2T:  <bos> <sou> IMG*N <eou> <i2t> description <eos>      CE on description + <eos> (lm_head)
  T2I:  <bos> <t2i> prompt <soi> v_1 ... v_M                    CE on v_1..v_M (generation_head)
  RecA: <bos> <sou> IMG*N <eou> <t2i> template <soi> v_1 ... v_M    (IMG slots filled with h_v)
Prompts are left-padded (masked) so <soi> sits at the same position in every row. With probability
`cfg_dropout` a training row loses its condition (every token but <bos>/<soi> becomes <pad>, no h_v), which is
exactly the unconditional branch `generate` builds for classifier-free guidance.

Image tokenizer (decision, measured): Janus's own `JanusVQVAE` (model.model.vqmodel, 398k params, frozen),
trained on shape world by `fit_vq` (`python -m reca_nb.models.janus fit-vq`; data/tokenizers/janus_vq.safetensors,
1.6 MB). 8x downsampling gives 4x4 = 16 tokens per 32 px image (K = 256 codes, 8-d, l2-normalised as in
LlamaGen/Janus). Held-out pixel MSE 0.0015 (random scenes) / 0.0008 (prompted scenes), all 256 codes used;
shapes and colours stay clean. Fit: 3000 steps x batch 16 (MSE 0.0013 at fit time; 2000 steps gave 0.0037,
1500 gave 0.0054); one step costs ~0.25 CPU-s, so the default fit needs ~12 CPU-min (estimated 6-7 min on
2 idle cores; `--steps 2000`: ~4-5 min, still under the 0.004 target). The alternative, the shared
4x4-patch k-means VQ (64 tokens per image), would make every image 4x more AR steps and leave Janus's VQ-VAE
as dead weight. (The shipped file was fitted with the same command plus `--device cuda`, in 103 s.)

Sizes (default config): 892k trainable parameters (ViT+aligner 105k, generation embedding/aligner/head 69k,
LLM incl. tied text embedding 718k) + 398k frozen VQ-VAE. CPU cost per batch-32 training step, one thread:
T2I 0.17 s, I2T 0.17 s, RecA (16 px input, diverse templates) 0.38 s.
Training note (measured, I2T alone, batch 32, AdamW 2e-3): captions first name every object with one colour
(CE plateau ~0.4-0.5) and only bind colours to slots after ~550 steps (held-out exact match 0.25 at 550,
0.98 at 800); at lr 5e-3 it stayed on the plateau for 400 steps.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.paths import DATA_DIR
from reca_nb.world.text import tokenizer
from reca_nb.models.common import cache_kwargs
from reca_nb.models.umm import UMM

VQ_FILE = DATA_DIR / "tokenizers" / "janus_vq.safetensors"
VQ_COMMAND = "python -m reca_nb.models.janus fit-vq"


@functools.cache
def hf_janus_generate_works() -> bool:
    """Some transformers releases (5.15, Colab's in late 2026) call `_prepare_static_cache` from Janus's
    `generate` without its required `prefill_chunk_size`: there `generate(generation_mode="image")` always raises,
    so sampling falls back to the loop below (same distribution; a different random stream)."""
    from transformers.generation.utils import GenerationMixin

    param = inspect.signature(GenerationMixin._prepare_static_cache).parameters.get("prefill_chunk_size")
    if param is None or param.default is not inspect.Parameter.empty:
        return True
    from transformers.models.janus import modeling_janus

    return "prefill_chunk_size" in inspect.getsource(modeling_janus.JanusForConditionalGeneration.generate)


@dataclass
class JanusMiniConfig:
    image_size: int = 32  # generation resolution (VQ-VAE input/output)
    und_size: int = 32  # SigLIP-style ViT input resolution (vision_config.image_size)
    vocab_size: int = 0  # 0 -> len(tokenizer()) + 1 (room for the image placeholder), fixed at build time
    # shared LLM (llama)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256  # SwiGLU hidden size
    max_positions: int = 128
    # understanding encoder (SigLIP-like ViT) + aligner
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    patch_size: int = 8  # 32 px / 8 = 4x4 = 16 understanding tokens
    # generation tokenizer (JanusVQVAE); downsampling 2**(len(vq_mult)-1) must equal patch_size
    codebook_size: int = 256
    code_dim: int = 8
    vq_channels: int = 32  # GroupNorm(32) inside JanusVQVAE: channels must be a multiple of 32
    vq_mult: tuple = (1, 1, 1, 1)
    vq_latent: int = 32
    load_vq: bool = True  # load the shipped trained VQ-VAE (else it stays random: tests / fit_vq only)
    # generation
    cfg_dropout: float = 0.1  # training-time condition dropout (enables classifier-free guidance)
    cfg_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    seed: int = 0  # parameter initialisation


def hf_config(c: JanusMiniConfig):
    """The transformers `JanusConfig` for a `JanusMiniConfig` (packages.md 2: projection dims = LLM width)."""
    from transformers import JanusConfig

    factor = 2 ** (len(c.vq_mult) - 1)
    if c.und_size % c.patch_size or c.image_size % factor:
        raise ValueError(f"und_size {c.und_size} must be a multiple of patch_size {c.patch_size} and "
                         f"image_size {c.image_size} a multiple of the VQ factor {factor}")
    if c.und_size // c.patch_size != c.image_size // factor:
        raise ValueError("Janus ties the VQ grid to the ViT grid (vq_config.num_patches = "
                         f"image_size // patch_size): und_size/patch_size = {c.und_size // c.patch_size} "
                         f"but image_size/{factor} = {c.image_size // factor}")
    n_tokens = (c.image_size // factor) ** 2
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=c.vocab_size, hidden_size=c.d_model,
                         intermediate_size=c.d_ff, num_hidden_layers=c.n_layers,
                         num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads,
                         max_position_embeddings=c.max_positions, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2),
        vision_config=dict(image_size=c.und_size, patch_size=c.patch_size, num_image_tokens=n_tokens,
                           hidden_size=c.vision_hidden, num_hidden_layers=c.vision_layers,
                           num_attention_heads=c.vision_heads, mlp_ratio=2, projection_dim=c.d_model,
                           depth=2),
        vq_config=dict(embed_dim=c.code_dim, num_embeddings=c.codebook_size, latent_channels=c.vq_latent,
                       base_channels=c.vq_channels, channel_multiplier=list(c.vq_mult), num_res_blocks=1,
                       projection_dim=c.d_model, image_token_embed_dim=c.d_model, num_hidden_layers=2),
        image_token_id=c.vocab_size - 1)


class JanusMini(UMM):
    arch = "janus"
    config_cls = None  # set below

    def __init__(self, config: JanusMiniConfig | None = None):
        from transformers import GenerationConfig, JanusForConditionalGeneration

        super().__init__()
        config = config or JanusMiniConfig()
        config.vq_mult = tuple(config.vq_mult)
        self.tok = tokenizer()
        if config.vocab_size == 0:
            config.vocab_size = len(self.tok) + 1
        if config.vocab_size <= len(self.tok):
            raise ValueError(f"vocab_size {config.vocab_size} leaves no room for the image placeholder after "
                             f"the {len(self.tok)} tokenizer words (a checkpoint from before the vocabulary "
                             "grew?): rebuild the model with vocab_size=0")
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.hf = JanusForConditionalGeneration(hf_config(config))
        self.img_id = self.hf.config.image_token_id
        s = self.tok.stoi
        self.soi, self.sou, self.eou = s["<soi>"], s["<sou>"], s["<eou>"]  # <soi> = Janus's BOI
        self.t2i_id, self.i2t_id = s["<t2i>"], s["<i2t>"]
        self.hf.generation_config = GenerationConfig(
            bos_token_id=self.tok.bos_id, pad_token_id=self.tok.pad_id, eos_token_id=self.tok.eos_id,
            generation_kwargs={"boi_token_id": self.soi})
        vq = self.hf.model.vqmodel
        if config.load_vq:
            load_vq_weights(vq, config)
        vq.requires_grad_(False).eval()  # Janus's VQ-VAE is a frozen tokenizer

    # --- helpers ------------------------------------------------------------------------------------
    @property
    def n_und(self) -> int:
        """Understanding tokens per image (ViT patches)."""
        return (self.config.und_size // self.config.patch_size) ** 2

    @property
    def n_gen(self) -> int:
        """VQ tokens per generated image."""
        return self.hf.config.vision_config.num_image_tokens

    def train(self, mode: bool = True):
        super().train(mode)
        self.hf.model.vqmodel.eval()  # stays frozen (no dropout/bn anyway, but keep Janus's convention)
        return self

    def _und_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> ViT input in [-1, 1] at und_size (Janus normalises with mean=std=0.5).
        A recipe's low-resolution bottleneck image is upsampled back: the information stays bottlenecked."""
        _check_images(images)
        if images.shape[-1] != self.config.und_size or images.shape[-2] != self.config.und_size:
            images = F.interpolate(images, size=(self.config.und_size,) * 2, mode="bilinear", antialias=True)
        return images * 2 - 1

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, M) VQ token ids (raster order)."""
        _check_images(images, self.config.image_size)
        return self.hf.model.vqmodel.encode(images * 2 - 1).image_tokens.view(len(images), -1)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M) VQ token ids -> (B, 3, S, S) in [0, 1]."""
        return ((self.hf.decode_image_tokens(tokens).permute(0, 3, 1, 2) + 1) / 2).clamp(0, 1)

    def _gen_prefix(self, prompts: list, n_cond: int):
        """Left-padded `<bos> [<sou> IMG*n <eou>] <t2i> prompt <soi>` -> ids (B, P), attention mask (B, P)."""
        cond = [self.sou] + [self.img_id] * n_cond + [self.eou] if n_cond else []
        seqs = [[self.tok.bos_id] + cond + [self.t2i_id] + self.tok.encode(p) + [self.soi] for p in prompts]
        P = max(len(s) for s in seqs)
        if P + self.n_gen > self.config.max_positions:
            raise ValueError(f"prompt of {P} tokens + {self.n_gen} image tokens exceeds max_positions "
                             f"{self.config.max_positions}")
        ids = torch.tensor([[self.tok.pad_id] * (P - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (P - len(s)) + [1] * len(s) for s in seqs])
        return ids.to(self.device), mask.to(self.device)

    def _uncond(self, ids: torch.Tensor) -> torch.Tensor:
        """Janus's unconditional prompt: every token but <bos> and <soi> replaced by <pad>."""
        keep = (ids == self.tok.bos_id) | (ids == self.soi)
        return torch.where(keep, ids, torch.full_like(ids, self.tok.pad_id))

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

    # --- the UMM interface --------------------------------------------------------------------------
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """SigLIP path: aligner(vision_model(x)) -> (B, N, D) with N = (und_size/patch)^2, D = LLM width."""
        return self.hf.model.get_image_features(self._und_pixels(images)).pooler_output

    def generation_loss(self, images, prompts, cond=None):
        """Janus's next-token CE over the image's VQ tokens through `generation_head` (no HF loss exists)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if cond is not None and tuple(cond.shape[:1]) != (len(images),):
            raise ValueError(f"cond has batch {cond.shape[0]}, expected {len(images)}")
        tok = self.encode_images(images)  # (B, M)
        ids, mask = self._gen_prefix(prompts, 0 if cond is None else cond.shape[1])  # (B, P)
        if self.training and self.config.cfg_dropout > 0:
            drop = torch.rand(len(ids), device=ids.device) < self.config.cfg_dropout
            ids = torch.where(drop[:, None], self._uncond(ids), ids)
        img = self.hf.prepare_embeddings_for_image_generation(tok)  # (B, M, D): gen embedding + aligner
        emb = torch.cat([self._embed_prefix(ids, cond), img], 1)
        mask = torch.cat([mask, torch.ones_like(tok)], 1)
        hs = self.hf.model.language_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        P = ids.shape[1]
        logits = self.hf.model.generation_head(hs[:, P - 1:-1])  # (B, M, K): position t predicts v_{t+1}
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))

    def _und_ids(self, batch: int) -> torch.Tensor:
        row = [self.tok.bos_id, self.sou] + [self.img_id] * self.n_und + [self.eou, self.i2t_id]
        return torch.tensor([row] * batch, device=self.device)

    def i2t_loss(self, images, captions):
        """Janus understanding forward (ViT features scattered into IMG slots) + HF text CE on the caption."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        prefix = self._und_ids(len(images))
        text = self.tok.batch(captions, eos=True).to(self.device)  # (B, L) right-padded
        ids = torch.cat([prefix, text], 1)
        mask = torch.cat([torch.ones_like(prefix), (text != self.tok.pad_id).long()], 1)
        text_labels = text.masked_fill(mask[:, prefix.shape[1]:] == 0, -100)  # CE on caption words + <eos>
        labels = torch.cat([torch.full_like(prefix, -100), text_labels], 1)
        pix = self._und_pixels(images)
        return self.hf(input_ids=ids, pixel_values=pix, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def sample_tokens(self, prompts, cond=None, generator=None, cfg_scale=None, temperature=None, top_k=None,
                      use_generate=None) -> torch.Tensor:
        """(B, M) VQ tokens. Without `cond` this is transformers' `generate(generation_mode="image")` (CFG,
        static cache); with `cond` (RecA reconstruction) `generate` cannot take the condition's embeddings,
        so the same loop runs here on `inputs_embeds` with a dynamic cache (also used for cfg_scale <= 1,
        which `generate` does not support). temperature 0 = greedy; both paths agree exactly when greedy."""
        c = self.config
        cfg_scale = c.cfg_scale if cfg_scale is None else cfg_scale
        temperature = c.temperature if temperature is None else temperature
        top_k = c.top_k if top_k is None else top_k
        guided = cfg_scale is not None and cfg_scale > 1
        if use_generate is None:
            use_generate = cond is None and guided and hf_janus_generate_works()
        if use_generate and (cond is not None or not guided):  # generate always doubles the batch for CFG
            raise ValueError("transformers' Janus generate needs cfg_scale > 1 and cannot take a condition "
                             "embedding; use use_generate=False")
        if use_generate and not hf_janus_generate_works():
            raise RuntimeError("this transformers version's Janus generate cannot build its cache; "
                               "use use_generate=False (the same sampler, written here)")
        ids, mask = self._gen_prefix(prompts, 0 if cond is None else cond.shape[1])
        if use_generate:
            kw = dict(do_sample=temperature > 0, guidance_scale=cfg_scale)
            if temperature > 0:
                kw.update(temperature=temperature, top_k=top_k or None)
            with torch.random.fork_rng(devices=[]):
                if generator is not None:
                    torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
                return self.hf.generate(ids, attention_mask=mask, generation_mode="image", **kw)
        return self._ar_loop(ids, mask, cond, generator, cfg_scale, temperature, top_k)

    def _ar_loop(self, ids, mask, cond, generator, cfg_scale, temperature, top_k):
        from transformers import DynamicCache

        B, lm = len(ids), self.hf.model.language_model
        guided = cfg_scale is not None and cfg_scale > 1
        if guided:  # conditional rows, then Janus's unconditional rows (pads + <bos> <soi>, no h_v)
            ids, mask = torch.cat([ids, self._uncond(ids)]), torch.cat([mask, mask])
            cond = None if cond is None else torch.cat([cond, cond])  # unconditional rows have no IMG slots
        emb = self._embed_prefix(ids, cond)
        cache = DynamicCache(config=lm.config)
        out = lm(inputs_embeds=emb, attention_mask=mask, use_cache=True, **cache_kwargs(lm, cache))
        tokens = torch.zeros(B, self.n_gen, dtype=torch.long, device=ids.device)
        for i in range(self.n_gen):
            logits = self.hf.model.generation_head(out.last_hidden_state[:, -1])  # (B or 2B, K)
            if guided:
                cond_l, uncond_l = logits.chunk(2)
                logits = uncond_l + cfg_scale * (cond_l - uncond_l)
            tokens[:, i] = _pick(logits, temperature, top_k, generator)
            if i + 1 == self.n_gen:
                break
            nxt = tokens[:, i:i + 1].repeat(2 if guided else 1, 1)  # (B or 2B, 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            out = lm(inputs_embeds=self.hf.prepare_embeddings_for_image_generation(nxt), attention_mask=mask,
                     use_cache=True, **cache_kwargs(lm, cache))
        return tokens

    @torch.no_grad()
    def sample(self, prompts, cond=None, generator=None, **kwargs):
        """One image per prompt -> (B, 3, S, S) in [0, 1]. kwargs: cfg_scale, temperature, top_k."""
        return self.decode_tokens(self.sample_tokens(list(prompts), cond, generator, **kwargs))

    @torch.no_grad()
    def caption(self, images, max_len: int | None = None):
        """Greedy captions via transformers' text `generate` (pixel_values fill the IMG slots)."""
        max_len = max_len or 24
        prefix = self._und_ids(len(images))
        with text_generate_quietly():
            out = self.hf.generate(prefix, pixel_values=self._und_pixels(images),
                                   attention_mask=torch.ones_like(prefix), max_length=prefix.shape[1] + max_len,
                                   do_sample=False, suppress_tokens=[self.img_id])
        return [self.tok.decode(row[prefix.shape[1]:]) for row in out.tolist()]

    def parameter_groups(self):
        return janus_parameter_groups(self)


JanusMini.config_cls = JanusMiniConfig


@contextmanager
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


def _pick(logits, temperature, top_k, generator):
    """Greedy (temperature 0) or top-k / temperature sampling with an optional torch.Generator."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _check_images(images, size=None):
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected an image tensor (B, 3, H, W) in [0, 1], got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"expected {size}x{size} images for the VQ-VAE, got {tuple(images.shape[-2:])}")


# ----------------------------------------------------------------------------- the VQ-VAE tokenizer

VQ_KEYS = ("codebook_size", "code_dim", "vq_channels", "vq_mult", "vq_latent", "image_size")


def load_vq_weights(vq: nn.Module, config: JanusMiniConfig, path=VQ_FILE):
    """Load the shipped shape-world JanusVQVAE weights into `vq` (checks that the architecture matches)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.exists():
        raise FileNotFoundError(f"no trained Janus VQ-VAE at {path}; build it with `{VQ_COMMAND}` "
                                "(or pass load_vq=False for a random tokenizer)")
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("vq", "{}"))
    want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items() if k in VQ_KEYS}
    if {k: meta.get(k) for k in VQ_KEYS} != want:
        raise ValueError(f"{path} was trained for {meta}, but this config needs {want}; "
                         f"refit with `{VQ_COMMAND}`")
    vq.load_state_dict(load_file(str(path)))


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
    p = argparse.ArgumentParser(description="Janus miniature utilities")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit-vq", help=f"train Janus's VQ-VAE on shape world -> {VQ_FILE}")
    f.add_argument("--steps", type=int, default=3000)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--warmup-ae", type=int, default=400)
    f.add_argument("--lr", type=float, default=3e-3)
    f.add_argument("--device", default="cpu")
    f.add_argument("--out", default=str(VQ_FILE))
    args = p.parse_args(argv)
    print(fit_vq(steps=args.steps, batch=args.batch, seed=args.seed, warmup_ae=args.warmup_ae, lr=args.lr,
                 device=args.device, out=Path(args.out)))


if __name__ == "__main__":
    main()


def janus_parameter_groups(model) -> dict:
    """UMM groups of a model holding transformers' Janus as `model.hf` (the mini and real Janus-Pro alike):
    SigLIP + aligner = understanding, generation_* = generation, the VQ model frozen, the LLM shared."""
    groups = {g: [] for g in ("understanding", "generation", "shared", "frozen")}
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
