"""RecA on the real Janus-Pro (1B / 7B) through transformers: `JanusForConditionalGeneration` + `JanusProcessor`.

    model = real_janus.load()                         # deepseek-community/Janus-Pro-1B, bf16 on a GPU
    model = real_janus.load(tiny=True)                # tiny random model of the same classes, offline (CI)
    history = train(model, recipe(), data=ImageFolder("photos").batches, out_dir="runs/janus-pro")

Janus-Pro (arXiv 2501.17811) decouples visual encoding around one shared LLM: understanding reads SigLIP
features (384 px -> 576 tokens -> aligner), generation writes VQ tokens (384 px -> 24x24 = 576 codes of a
16384 codebook) through its own `generation_head`. The RecA repo lists Janus-Pro as TODO; this module follows
the authors' guide (reca_anchors.md A.6): the condition h_v is the SigLIP path's output placed where Janus puts
understanding features, i.e. in the image-placeholder slots of a chat turn whose text is a RecA template, and
the target is the image's own VQ tokens under Janus's next-token CE:

  RecA: <|User|>: <boi> h_v * 576 <eoi>\\n{template}\\n\\n<|Assistant|>:<boi>  v_1 ... v_576    CE on v (gen head)
  T2I:  <|User|>: {prompt}\\n\\n<|Assistant|>:<boi>  v_1 ... v_576                              CE on v (gen head)
  I2T:  <|User|>: <boi> SigLIP * 576 <eoi>\\n{question}\\n\\n<|Assistant|>: {caption}<eos>      CE on caption (lm_head)

The text comes from the checkpoint's own chat template (`processor.apply_chat_template`), so the format is
Janus-Pro's. Input (SigLIP) and output (VQ) are different spaces at the same 384 px: the *natural* bottleneck
(practice 1, no downscaling needed); the LLM is shared, so the default recipe mixes I2T 1:1 (practice 4).

Training: full fine-tune or LoRA (peft, `Recipe.freeze="lora"`) on the LLM's Linear layers; the generation
embedding / aligner / head are then trained in full (`lora_full()`), kept in fp32 even when the model runs in
bf16/fp16. The VQ-VAE is frozen; SigLIP is frozen under LoRA. Sampling runs the Janus loop here (KV cache,
classifier-free guidance with Janus's unconditional prompt: every token but <bos> and the final <boi> padded)
because transformers' `generate(generation_mode="image")` cannot take the RecA condition embeddings.

`tiny=True` builds a tiny random JanusConfig of the same classes plus a byte-level tokenizer with Janus's
special tokens and chat format; nothing is downloaded (HF_HUB_OFFLINE=1). It exercises every code path; it
learns nothing useful. Not in `reca_nb.models.registry.ARCHS` (no shape-world base, hub weights): use `load()`, or
`python -m reca_nb.train --arch=janus-pro --image_folder=DIR` (see `main`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from reca_nb.models.common import cache_kwargs, enable_activation_checkpointing
from reca_nb.models.umm import UMM

MODEL_IDS = {"1b": "deepseek-community/Janus-Pro-1B", "7b": "deepseek-community/Janus-Pro-7B"}
DEFAULT_ID = MODEL_IDS["1b"]
# a fixed before/after prompt set in the style of GenEval's six categories (single object, two objects,
# counting, colours, position, colour attribution); written for reca_nb, not GenEval's own prompts
EVAL_PROMPTS = ("a photo of a red apple", "a photo of a cat and a bicycle", "a photo of three cups",
                "a photo of a green umbrella", "a photo of a dog left of a bench",
                "a photo of a blue car and a yellow vase", "a photo of a clock above a couch",
                "a photo of two birds")
# special tokens of the Janus-Pro tokenizer (the tiny tokenizer uses the same strings)
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
USER, ASSISTANT = "<|User|>", "<|Assistant|>"
# Janus-Pro's chat format ("<|User|>: text\n<image_placeholder>\n\n<|Assistant|>:"), written for the tiny model
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '<|User|>: ' }}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}<image_placeholder>{%- else -%}{{ c['text'] }}{%- endif -%}"
    "{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
    "{%- endfor -%}{{ '\\n\\n' }}"
    "{%- else -%}{{ '<|Assistant|>: ' + message['content'][0]['text'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|Assistant|>:{%- endif -%}")


@dataclass
class JanusProConfig:
    model_id: str = DEFAULT_ID  # hub id or a local folder written by save_pretrained (model + processor)
    tiny: bool = False  # tiny random config of the same classes, built offline (tests, CI, notebook offline)
    dtype: str = "auto"  # auto: bf16 on Ampere+ GPUs, fp16 on older ones (T4), fp32 on CPU; or a torch name
    cfg_dropout: float = 0.1  # training rows that lose their condition (keeps classifier-free guidance alive)
    cfg_scale: float = 5.0  # Janus-Pro's default CFG weight at sampling
    temperature: float = 1.0  # Janus-Pro samples at temperature 1
    top_k: int = 0  # 0: no top-k filter
    i2t_question: str = "Describe this image."  # the user turn of I2T samples (the caption is the answer)
    max_caption_tokens: int = 128  # longer captions are cut (I2T)
    gradient_checkpointing: bool | None = None  # None: on for real checkpoints, off for tiny
    seed: int = 0  # tiny: parameter initialisation
    # tiny sizes (ignored for real checkpoints)
    tiny_image_size: int = 32  # generation = understanding resolution
    tiny_patch: int = 8  # ViT patch = VQ downsampling: (32/8)^2 = 16 tokens per image
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_codebook: int = 64


# ----------------------------------------------------------------------------- building blocks

def tiny_hf_config(c: JanusProConfig, vocab_size: int, image_token_id: int):
    """A tiny `JanusConfig` (llama text model, SigLIP-style ViT, JanusVQVAE) with a consistent image grid:
    ViT patches = VQ codes = (tiny_image_size / tiny_patch)^2."""
    from transformers import JanusConfig

    n_down = c.tiny_patch.bit_length() - 1
    if 2 ** n_down != c.tiny_patch or c.tiny_image_size % c.tiny_patch:
        raise ValueError(f"tiny_patch must be a power of 2 dividing tiny_image_size, got {c.tiny_patch} and "
                         f"{c.tiny_image_size}")
    h, n = c.tiny_hidden, (c.tiny_image_size // c.tiny_patch) ** 2
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=h, intermediate_size=2 * h,
                         num_hidden_layers=c.tiny_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=None, bos_token_id=None,
                         eos_token_id=None),
        vision_config=dict(image_size=c.tiny_image_size, patch_size=c.tiny_patch, num_image_tokens=n,
                           hidden_size=h // 2, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                           projection_dim=h, depth=2),
        vq_config=dict(embed_dim=8, num_embeddings=c.tiny_codebook, latent_channels=32, base_channels=32,
                       channel_multiplier=[1] * (n_down + 1), num_res_blocks=1, projection_dim=h,
                       image_token_embed_dim=h, num_hidden_layers=2),
        image_token_id=image_token_id)


def tiny_processor(c: JanusProConfig):
    """A `JanusProcessor` with a byte-level BPE tokenizer (no merges: any text, one token per byte), Janus's
    special tokens and chat format, and a PIL image processor at tiny_image_size (mean = std = 0.5 as in
    Janus-Pro)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import JanusProcessor, PreTrainedTokenizerFast
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS, PAD, IMAGE, BOI, EOI, USER, ASSISTANT])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE, "boi_token": BOI,
                                                         "eoi_token": EOI})
    size = c.tiny_image_size
    images = JanusImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, min_size=1)
    return JanusProcessor(image_processor=images, tokenizer=fast, chat_template=CHAT_TEMPLATE,
                          num_image_tokens=(size // c.tiny_patch) ** 2)


def pick_dtype(name: str, device) -> torch.dtype:
    if name != "auto":
        dt = getattr(torch, str(name).replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"dtype must be 'auto' or a torch dtype name (bfloat16, float16, float32), got {name!r}")
        return dt
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16  # T4 (7.5) has no fast bf16


# ----------------------------------------------------------------------------- the UMM

class JanusPro(UMM):
    arch = "janus-pro"
    config_cls = JanusProConfig

    def __init__(self, config: JanusProConfig | None = None, hf=None, processor=None, device=None):
        from transformers import GenerationConfig, JanusForConditionalGeneration, JanusProcessor

        super().__init__()
        config = config or JanusProConfig()
        self.config = config
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = pick_dtype(config.dtype, device)
        if hf is None and config.tiny:
            processor = tiny_processor(config)
            tok = processor.tokenizer
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                hf = JanusForConditionalGeneration(tiny_hf_config(config, len(tok), tok.convert_tokens_to_ids(IMAGE)))
            hf.generation_config = GenerationConfig(
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                generation_kwargs={"boi_token_id": tok.convert_tokens_to_ids(BOI)})
        elif hf is None:  # a hub id or a local save_pretrained folder
            processor = JanusProcessor.from_pretrained(config.model_id)
            hf = JanusForConditionalGeneration.from_pretrained(config.model_id, dtype=dtype)
        self.hf, self.processor = hf.to(device=device, dtype=dtype), processor
        self.tok = processor.tokenizer
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(self.tok, name) is None:
                raise ValueError(f"the tokenizer of {config.model_id} has no {name[:-3]}")
        self.img_id = self.hf.config.image_token_id
        if self.tok.convert_tokens_to_ids(processor.image_token) != self.img_id:
            raise ValueError(f"tokenizer id of {processor.image_token} differs from the model's image_token_id "
                             f"{self.img_id}: processor and model come from different checkpoints?")
        self.boi_id = self.tok.convert_tokens_to_ids(processor.image_start_token)
        if processor.num_image_tokens != self.n_und:
            raise ValueError(f"processor expands an image to {processor.num_image_tokens} tokens, the vision model "
                             f"makes {self.n_und}")
        # the generation path (embedding, aligner, head) trains in full next to LoRA: keep it fp32
        for m in (self.hf.model.generation_embeddings, self.hf.model.generation_aligner,
                  self.hf.model.generation_head):
            m.float()
        self.hf.model.vqmodel.requires_grad_(False).eval()
        self.checkpointing = (config.gradient_checkpointing if config.gradient_checkpointing is not None
                              else not config.tiny)
        if self.checkpointing:  # recompute each LLM layer in the backward pass: far less activation memory
            enable_activation_checkpointing(self.hf)
        mean = torch.tensor(processor.image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pix_mean", mean.to(device), persistent=False)
        self.register_buffer("pix_std", std.to(device), persistent=False)

    # --- sizes, dtype, device --------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Generation resolution: VQ grid x VQ downsampling (384 for Janus-Pro)."""
        vq = self.hf.config.vq_config
        return vq.num_patches * 2 ** (len(vq.channel_multiplier) - 1)

    @property
    def und_size(self) -> int:
        """SigLIP input resolution (384 for Janus-Pro)."""
        return self.hf.config.vision_config.image_size

    @property
    def n_und(self) -> int:
        return (self.und_size // self.hf.config.vision_config.patch_size) ** 2

    @property
    def n_gen(self) -> int:
        return self.hf.config.vq_config.num_patches ** 2

    @property
    def device(self):
        # the head's device, not the first parameter's: with a device map the layers spread over GPUs
        return self.hf.lm_head.weight.device

    @property
    def dtype(self):
        return self.hf.lm_head.weight.dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.hf.model.vqmodel.eval()
        return self

    # --- text ----------------------------------------------------------------------------------------
    def _chat(self, text: str, image: bool) -> str:
        """One user turn in the checkpoint's chat format, the image (if any) expanded to its N slots."""
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        s = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        s = s[0] if isinstance(s, list) else s
        if image:
            p = self.processor
            s = s.replace(p.image_token, p.image_start_token + p.image_token * self.n_und + p.image_end_token)
        return s

    def _ids(self, texts: list):
        """Left-padded token ids (B, P) + attention mask, with <bos>."""
        enc = self.tok(texts, padding=True, padding_side="left", return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _gen_prefix(self, prompts: list, with_image: bool):
        """`<bos> <|User|>: [<boi> IMG*N <eoi>\\n] prompt\\n\\n<|Assistant|>:<boi>` -> ids, mask (B, P)."""
        return self._ids([self._chat(p, with_image) + self.processor.image_start_token for p in prompts])

    def _uncond(self, ids):
        """Janus's unconditional prompt: every token but <bos> and the final <boi> becomes <pad>."""
        keep = ids == self.tok.bos_token_id
        keep[:, -1] = True
        return torch.where(keep, ids, torch.full_like(ids, self.tok.pad_token_id))

    def _embed_prefix(self, ids, cond):
        """Token embeddings; IMG slots take `cond` (B, N, D) in rows that still have them."""
        emb = self.hf.get_input_embeddings()(ids)
        if cond is None:
            return emb
        slots = ids == self.img_id
        rows = slots.any(1)
        if rows.any():
            emb = emb.masked_scatter(slots[..., None], cond[rows].to(emb.dtype))
        return emb

    def _gen_embed(self, tokens):
        """VQ codes -> LLM input embeddings (generation embedding + aligner, fp32) in the LLM's dtype."""
        return self.hf.prepare_embeddings_for_image_generation(tokens).to(self.dtype)

    def _gen_logits(self, hidden):
        return self.hf.model.generation_head(hidden.float())

    # --- images --------------------------------------------------------------------------------------
    def _und_pixels(self, images):
        """[0, 1] images at any square size -> SigLIP input at und_size, normalised like the processor."""
        _check(images)
        if images.shape[-1] != self.und_size or images.shape[-2] != self.und_size:
            images = F.interpolate(images.float(), size=(self.und_size,) * 2, mode="bicubic",
                                   antialias=True, align_corners=False).clamp(0, 1)
        return ((images.to(self.device).float() - self.pix_mean) / self.pix_std).to(self.dtype)

    @torch.no_grad()
    def encode_images(self, images):
        """(B, 3, S, S) in [0, 1] -> (B, M) VQ codes."""
        _check(images, self.image_size)
        x = (images.to(self.device).float() * 2 - 1).to(self.dtype)
        return self.hf.model.vqmodel.encode(x).image_tokens.view(len(images), -1)

    @torch.no_grad()
    def decode_tokens(self, tokens):
        """(B, M) VQ codes -> (B, 3, S, S) float in [0, 1]."""
        return ((self.hf.decode_image_tokens(tokens).float().permute(0, 3, 1, 2) + 1) / 2).clamp(0, 1)

    # --- the UMM interface ---------------------------------------------------------------------------
    def understanding_embedding(self, images):
        """SigLIP path: aligner(vision_model(x)) -> (B, 576, D_llm)."""
        return self.hf.model.get_image_features(self._und_pixels(images)).pooler_output

    def generation_loss(self, images, prompts, cond=None):
        """Janus's next-token CE over the image's VQ codes through the generation head."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if cond is not None and (cond.shape[0] != len(images) or cond.shape[1] != self.n_und):
            raise ValueError(f"cond must be (B={len(images)}, {self.n_und}, D), got {tuple(cond.shape)}")
        tok = self.encode_images(images)  # (B, M)
        ids, mask = self._gen_prefix(list(prompts), cond is not None)
        if self.training and self.config.cfg_dropout > 0:
            drop = torch.rand(len(ids), device=ids.device) < self.config.cfg_dropout
            ids = torch.where(drop[:, None], self._uncond(ids), ids)
        emb = torch.cat([self._embed_prefix(ids, cond), self._gen_embed(tok)], 1)
        mask = torch.cat([mask, torch.ones_like(tok)], 1)
        hs = self.hf.model.language_model(inputs_embeds=emb, attention_mask=mask,
                                          position_ids=_positions(mask)).last_hidden_state
        P = ids.shape[1]
        logits = self._gen_logits(hs[:, P - 1:-1])  # position t predicts code t+1
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))

    def _i2t_prefix(self) -> str:
        return self._chat(self.config.i2t_question, image=True)

    def i2t_loss(self, images, captions):
        """Captioning CE through lm_head on the answer tokens only (no logits over the 576 image slots)."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        prefix = self.tok(self._i2t_prefix())["input_ids"]
        rows, labels = [], []
        for cap in captions:
            ans = self.tok(" " + str(cap).strip(), add_special_tokens=False)["input_ids"]
            ans = ans[:self.config.max_caption_tokens] + [self.tok.eos_token_id]
            rows.append(prefix + ans)
            labels.append([-100] * len(prefix) + ans)
        L = max(map(len, rows))
        pad = self.tok.pad_token_id
        ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows], device=self.device)
        lab = torch.tensor([r + [-100] * (L - len(r)) for r in labels], device=self.device)
        mask = (lab != -100) | (torch.arange(L, device=self.device) < len(prefix))
        hs = self.hf.model(input_ids=ids, pixel_values=self._und_pixels(images), attention_mask=mask.long()
                           ).last_hidden_state
        target = lab[:, 1:]
        sel = target != -100
        logits = self.hf.lm_head(hs[:, :-1][sel]).float()
        return F.cross_entropy(logits, target[sel])

    @torch.no_grad()
    def sample_tokens(self, prompts, cond=None, generator=None, cfg_scale=None, temperature=None, top_k=None):
        """(B, M) VQ codes by Janus's AR loop with CFG (conditional rows, then unconditional rows)."""
        from transformers import DynamicCache

        from reca_nb.models.janus import _pick

        c = self.config
        cfg_scale = c.cfg_scale if cfg_scale is None else cfg_scale
        temperature = c.temperature if temperature is None else temperature
        top_k = c.top_k if top_k is None else top_k
        ids, mask = self._gen_prefix(list(prompts), cond is not None)
        B, guided = len(ids), cfg_scale is not None and cfg_scale > 1
        if guided:
            ids, mask = torch.cat([ids, self._uncond(ids)]), torch.cat([mask, mask])
            cond = None if cond is None else torch.cat([cond, cond])
        lm = self.hf.model.language_model
        cache = DynamicCache(config=lm.config)
        pos = _positions(mask)
        out = lm(inputs_embeds=self._embed_prefix(ids, cond), attention_mask=mask, position_ids=pos,
                 use_cache=True, **cache_kwargs(lm, cache))
        pos = pos[:, -1:]
        tokens = torch.zeros(B, self.n_gen, dtype=torch.long, device=ids.device)
        for i in range(self.n_gen):
            logits = self._gen_logits(out.last_hidden_state[:, -1])
            if guided:
                cond_l, uncond_l = logits.chunk(2)
                logits = uncond_l + cfg_scale * (cond_l - uncond_l)
            tokens[:, i] = _pick(logits, temperature, top_k, generator).to(tokens.device)
            if i + 1 == self.n_gen:
                break
            nxt = tokens[:, i:i + 1].repeat(2 if guided else 1, 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            pos = pos + 1
            out = lm(inputs_embeds=self._gen_embed(nxt), attention_mask=mask, position_ids=pos,
                     use_cache=True, **cache_kwargs(lm, cache))
        return tokens

    @torch.no_grad()
    def sample(self, prompts, cond=None, generator=None, **kwargs):
        """One image per prompt -> (B, 3, S, S) in [0, 1]. kwargs: cfg_scale, temperature, top_k. A
        torch.Generator must live on the model's device (CPU generator for a CPU model)."""
        return self.decode_tokens(self.sample_tokens(list(prompts), cond, generator, **kwargs))

    @torch.no_grad()
    def caption(self, images, max_len: int | None = None):
        """Greedy answers to `i2t_question` via transformers' text `generate`."""
        max_len = max_len or 48
        from transformers import GenerationConfig

        from reca_nb.models.janus import text_generate_quietly

        ids, mask = self._ids([self._i2t_prefix()] * len(images))
        gc = GenerationConfig(bos_token_id=self.tok.bos_token_id, eos_token_id=self.tok.eos_token_id,
                              pad_token_id=self.tok.pad_token_id, max_new_tokens=max_len, do_sample=False)
        with text_generate_quietly():
            out = self.hf.generate(input_ids=ids, attention_mask=mask, pixel_values=self._und_pixels(images),
                                   generation_config=gc, generation_mode="text")
        return [s.strip() for s in self.tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def parameter_groups(self):
        from reca_nb.models.janus import janus_parameter_groups

        return janus_parameter_groups(self)

    def lora_full(self) -> list:
        """Trained in full next to LoRA adapters: the whole generation path (embedding, aligner, head)."""
        return self.parameter_groups()["generation"]

    # --- memory (reca_nb.memory) ---------------------------------------------------------------------
    def activation_bytes(self, recipe) -> int:
        """Rough activation memory of one training step (see reca_nb.memory.transformer_activations)."""
        from reca_nb.memory import transformer_activations

        t = self.hf.config.text_config
        text = 48  # chat scaffolding + a template / question, in tokens (rough)
        seqs = []
        if recipe.lambda_reca > 0:
            seqs += [(recipe.batch, self.n_und + text + self.n_gen, self.n_gen,
                      self.hf.config.vq_config.num_embeddings)]
        if recipe.i2t_batch > 0:
            seqs += [(recipe.i2t_batch, self.n_und + text + self.config.max_caption_tokens // 2,
                      self.config.max_caption_tokens // 2, t.vocab_size)]
        if recipe.lambda_t2i > 0:
            seqs += [(recipe.batch, text + self.n_gen, self.n_gen, self.hf.config.vq_config.num_embeddings)]
        return sum(transformer_activations(b, s, t.hidden_size, t.intermediate_size, t.num_hidden_layers,
                                           self.dtype.itemsize,
                                           checkpointing=self.checkpointing, logit_tokens=n, vocab=v)
                   for b, s, n, v in seqs)


def _positions(mask):
    """Position ids that skip left padding (what `generate` computes from the attention mask)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _check(images, size=None):
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError("expected an image tensor (B, 3, H, W) in [0, 1], got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"expected {size}x{size} target images for the VQ-VAE, got {tuple(images.shape[-2:])}")


# ----------------------------------------------------------------------------- entry points

def load(model_id=None, tiny: bool = False, dtype=None, device=None, **overrides) -> JanusPro:
    """Janus-Pro as a reca_nb UMM. model_id: a hub id ("deepseek-community/Janus-Pro-1B" default, or
    MODEL_IDS["7b"]) or a local save_pretrained folder; tiny=True: the offline tiny random model.
    dtype: None/"auto" (bf16 on Ampere+, fp16 on T4, fp32 on CPU) or a torch dtype / name.
    overrides: JanusProConfig fields (cfg_scale, cfg_dropout, gradient_checkpointing, tiny_* sizes, ...)."""
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype).replace("torch.", "")
    cfg = JanusProConfig(model_id=MODEL_IDS.get(str(model_id).lower(), model_id) if model_id else DEFAULT_ID,
                         tiny=tiny, dtype=dtype or "auto", **overrides)
    return JanusPro(cfg, device=device)


def recipe(**overrides):
    """The RecA recipe for Janus-Pro: RecA + I2T 1:1 (shared LLM, practice 4), no bottleneck downscale (SigLIP
    in, VQ out: the natural bottleneck), diverse templates, LoRA r=16 on the LLM + full generation head.
    lr 1e-4 is a LoRA learning rate (full fine-tunes in the paper use 5e-7 .. 4e-5); batch 4 fits a 16 GB
    T4 with gradient checkpointing by the memory estimate (reca_nb.memory), not measured."""
    from reca_nb.recipe import Recipe

    base = Recipe(arch="janus-pro", stage="reca", und_res=0, freeze="lora", lora_r=16, i2t_ratio=1.0,
                  lambda_reca=1.0, lambda_i2t=1.0, lambda_t2i=0.0, lr=1e-4, betas=(0.9, 0.95),
                  weight_decay=0.0, warmup=50, schedule="cosine", steps=1000, batch=4, eval_every=0,
                  save_every=0, keep_ckpts=1, log_every=10)
    return replace(base, **overrides)


CLI_KEYS = ("arch", "image_folder", "captions", "model_id", "tiny", "dtype", "max_images", "out", "resume",
            "progress", "threads")
USAGE = """usage: python -m reca_nb.train --arch=janus-pro --image_folder=DIR [--captions=FILE.csv|.jsonl]
       [--model_id=deepseek-community/Janus-Pro-1B|7b|PATH] [--tiny] [--dtype=auto|bfloat16|float16|float32]
       [--max_images=N] [--out=DIR] [--resume] [--threads=N] [--RECIPE_FIELD=V ...]
  RecA (+ I2T when captions exist) on your own images; LoRA by default (--freeze=none: full fine-tune).
  Multi-GPU: accelerate launch -m reca_nb.train --arch=janus-pro ... (each process draws its own batches)."""


def main(argv=None):
    """`python -m reca_nb.train --arch=janus-pro ...` (dispatched from reca_nb.train.main)."""
    import sys
    from pathlib import Path

    from reca_nb.config import apply_overrides, parse_overrides
    from reca_nb.world.folder import ImageFolder
    from reca_nb.memory import estimate_memory, format_memory
    from reca_nb.paths import cache_dir
    from reca_nb.train import launch_print, train

    print = launch_print()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return None
    args = parse_overrides(argv)
    cli = {k: args.pop(k) for k in CLI_KEYS if k in args}
    if "image_folder" not in cli:
        raise SystemExit(f"--image_folder is required\n{USAGE}")
    if "threads" in cli:
        torch.set_num_threads(int(cli["threads"]))
    folder = ImageFolder(cli["image_folder"], captions=cli.get("captions"), max_images=cli.get("max_images"))
    rec = recipe() if folder.captions else recipe(lambda_i2t=0.0, i2t_ratio=0.0)
    rec = apply_overrides(rec, args)
    model = load(cli.get("model_id"), tiny=bool(cli.get("tiny", False)), dtype=cli.get("dtype"))
    out = Path(cli["out"]) if "out" in cli else cache_dir() / "runs" / f"janus-pro-{rec.seed}"
    progress = cli.get("progress", True) is not False
    folder.pool(model.image_size, progress=progress, warn=False)  # read once here; train() reuses the pool
    print(folder.report() + ("" if folder.captions else " (no captions: I2T mixing off)"))
    print(f"model: {model.config.model_id if not model.config.tiny else 'tiny random Janus-Pro'} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, {model.dtype}, {model.device})")
    print(format_memory(estimate_memory(model, rec)))
    print(f"recipe: {rec}\nout_dir: {out}")
    history = train(model, rec, out_dir=out, resume="latest" if cli.get("resume") is True else cli.get("resume"),
                    progress=progress, data=folder.batches)
    last = [r for r in history if "loss" in r][-1:] or [{}]
    print(f"done: {rec.steps} steps; last row {last[0]}; adapters: {out / 'adapters.safetensors'}")
    return history


__all__ = ["JanusPro", "JanusProConfig", "load", "recipe", "main", "MODEL_IDS"]
