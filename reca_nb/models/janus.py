"""Janus / Janus-Pro in miniature: two visual encoders, one shared LLM (built on transformers' Janus).

Janus (arXiv 2410.13848) and Janus-Pro (arXiv 2501.17811) *decouple* visual encoding:
  * understanding (I2T) reads SigLIP features:   pixels -> vision_model (ViT) -> aligner (MLP) -> LLM
  * generation (T2I) writes VQ tokens:           LLM -> generation_head -> VQ code -> generation_embeddings
                                                 -> generation_aligner -> next LLM input; VQ decoder -> pixels
and both paths run through one shared autoregressive LLM. This module is a thin wrapper around the real
`transformers.JanusForConditionalGeneration` at a tiny size, so every forward pass, the image-generation loop
(`generate(generation_mode="image")` with classifier-free guidance) and the module names are Janus's own.

RecA on Janus (paper Sec. 3 and its Janus appendix): the condition h_v is the SigLIP path's output
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

Image tokenizer: Janus's own `JanusVQVAE` (model.model.vqmodel, frozen), trained on shape world by
`python -m reca_nb.build.fit_janus_vq` (data/tokenizers/janus_vq.safetensors). 8x downsampling gives 4x4 = 16
tokens per 32 px image (K = 256 codes, 8-d, l2-normalised as in LlamaGen/Janus). The alternative, the shared
4x4-patch k-means VQ (64 tokens per image), would make every image 4x more AR steps and leave Janus's VQ-VAE
as dead weight. Fit quality, sizes, step costs and a training note: data/README.md, "Janus".
"""
from __future__ import annotations

import functools
import inspect
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.paths import DATA_DIR
from reca_nb.models.janus_core import JanusCore, janus_parameter_groups, text_generate_quietly
from reca_nb.world.images import check_image_batch
from reca_nb.world.text import tokenizer

__all__ = ["JanusMini", "JanusMiniConfig", "janus_parameter_groups", "hf_config", "load_vq_weights", "VQ_FILE"]

VQ_FILE = DATA_DIR / "tokenizers" / "janus_vq.safetensors"
VQ_COMMAND = "python -m reca_nb.build.fit_janus_vq"


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
    """The transformers `JanusConfig` for a `JanusMiniConfig` (the aligners' projection dims = LLM width)."""
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


class JanusMini(JanusCore):
    arch = "janus"
    config_cls = JanusMiniConfig
    pad_positions = False  # trained with positions 0..T-1 over the left-padded row

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
        self.pad_id, self.bos_id = self.tok.pad_id, self.tok.bos_id
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

    def _und_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> ViT input in [-1, 1] at und_size (Janus normalises with mean=std=0.5).
        A recipe's low-resolution bottleneck image is upsampled back: the information stays bottlenecked."""
        check_image_batch(images, "understanding images")
        if images.shape[-1] != self.config.und_size or images.shape[-2] != self.config.und_size:
            images = F.interpolate(images, size=(self.config.und_size,) * 2, mode="bilinear", antialias=True)
        return images * 2 - 1

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, M) VQ token ids (raster order)."""
        check_image_batch(images, "target images", size=self.config.image_size)
        return self.hf.model.vqmodel.encode(images * 2 - 1).image_tokens.view(len(images), -1)

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

    def _prefix(self, prompts: list, cond):
        return self._gen_prefix(prompts, 0 if cond is None else cond.shape[1])

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
        cfg_scale, temperature, top_k = self._sampling(cfg_scale, temperature, top_k)
        guided = cfg_scale is not None and cfg_scale > 1
        if use_generate is None:
            use_generate = cond is None and guided and hf_janus_generate_works()
        if use_generate and (cond is not None or not guided):  # generate always doubles the batch for CFG
            raise ValueError("transformers' Janus generate needs cfg_scale > 1 and cannot take a condition "
                             "embedding; use use_generate=False")
        if use_generate and not hf_janus_generate_works():
            raise RuntimeError("this transformers version's Janus generate cannot build its cache; "
                               "use use_generate=False (the same sampler, written here)")
        ids, mask = self._prefix(list(prompts), cond)
        if use_generate:
            kw = dict(do_sample=temperature > 0, guidance_scale=cfg_scale)
            if temperature > 0:
                kw.update(temperature=temperature, top_k=top_k or None)
            with torch.random.fork_rng(devices=[]):
                if generator is not None:
                    torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
                return self.hf.generate(ids, attention_mask=mask, generation_mode="image", **kw)
        return self._ar_loop(ids, mask, cond, generator, cfg_scale, temperature, top_k)

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
