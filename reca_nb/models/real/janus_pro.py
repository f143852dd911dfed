"""RecA on the real Janus-Pro (1B / 7B) through transformers: `JanusForConditionalGeneration` + `JanusProcessor`.

    model = real_janus.load()                         # deepseek-community/Janus-Pro-1B, bf16 on a GPU
    model = real_janus.load(tiny=True)                # tiny random model of the same classes, offline (CI)
    history = train(model, recipe(), data=ImageFolder("photos").batches, out_dir="runs/janus-pro")

Janus-Pro (arXiv 2501.17811) decouples visual encoding around one shared LLM: understanding reads SigLIP
features (384 px -> 576 tokens -> aligner), generation writes VQ tokens (384 px -> 24x24 = 576 codes of a
16384 codebook) through its own `generation_head`. The RecA repo lists Janus-Pro as TODO; this module follows
the authors' guide (RecA paper Sec. 3): the condition h_v is the SigLIP path's output placed where Janus puts
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
`python -m reca_nb.train --arch=janus-pro --image_folder=DIR`; the recipe is `preset("janus-pro")`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reca_nb.models.common import enable_activation_checkpointing
from reca_nb.models.janus_core import JanusCore, text_generate_quietly
from reca_nb.models.real.common import pick_dtype
from reca_nb.models.real.tiny import (  # noqa: F401  (BOS ... CHAT_TEMPLATE: importable from here, as before)
    ASSISTANT, BOI, BOS, CHAT_TEMPLATE, EOI, EOS, IMAGE, PAD, USER, tiny_hf_config, tiny_processor)
from reca_nb.world.images import check_image_batch

MODEL_IDS = {"1b": "deepseek-community/Janus-Pro-1B", "7b": "deepseek-community/Janus-Pro-7B"}
DEFAULT_ID = MODEL_IDS["1b"]
# a fixed before/after prompt set in the style of GenEval's six categories (single object, two objects,
# counting, colours, position, colour attribution); written for reca_nb, not GenEval's own prompts
EVAL_PROMPTS = ("a photo of a red apple", "a photo of a cat and a bicycle", "a photo of three cups",
                "a photo of a green umbrella", "a photo of a dog left of a bench",
                "a photo of a blue car and a yellow vase", "a photo of a clock above a couch",
                "a photo of two birds")
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


# ----------------------------------------------------------------------------- the UMM

class JanusPro(JanusCore):
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
        self.pad_id, self.bos_id = self.tok.pad_token_id, self.tok.bos_token_id
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
    def device(self):
        # the head's device, not the first parameter's: with a device map the layers spread over GPUs
        return self.hf.lm_head.weight.device

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

    def format_reca_sample(self, template: str) -> str:
        """The text of a RecA sample: one chat turn with the image expanded to its N condition slots, the
        template as the user's text, and the assistant's <begin_of_image> after which the VQ codes follow."""
        return self._chat(template, True) + self.processor.image_start_token

    def _gen_prefix(self, prompts: list, with_image: bool):
        """`<bos> <|User|>: [<boi> IMG*N <eoi>\\n] prompt\\n\\n<|Assistant|>:<boi>` -> ids, mask (B, P)."""
        return self._ids([self._chat(p, with_image) + self.processor.image_start_token for p in prompts])

    def _prefix(self, prompts: list, cond):
        return self._gen_prefix(prompts, cond is not None)

    # --- images --------------------------------------------------------------------------------------
    def _und_pixels(self, images):
        """[0, 1] images at any square size -> SigLIP input at und_size, normalised like the processor."""
        check_image_batch(images, "understanding images")
        if images.shape[-1] != self.und_size or images.shape[-2] != self.und_size:
            images = F.interpolate(images.float(), size=(self.und_size,) * 2, mode="bicubic",
                                   antialias=True, align_corners=False).clamp(0, 1)
        return ((images.to(self.device).float() - self.pix_mean) / self.pix_std).to(self.dtype)

    @torch.no_grad()
    def encode_images(self, images):
        """(B, 3, S, S) in [0, 1] -> (B, M) VQ codes."""
        check_image_batch(images, "target images", size=self.image_size)
        x = (images.to(self.device).float() * 2 - 1).to(self.dtype)
        return self.hf.model.vqmodel.encode(x).image_tokens.view(len(images), -1)

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
    def caption(self, images, max_len: int | None = None):
        """Greedy answers to `i2t_question` via transformers' text `generate`."""
        max_len = max_len or 48
        from transformers import GenerationConfig

        ids, mask = self._ids([self._i2t_prefix()] * len(images))
        gc = GenerationConfig(bos_token_id=self.tok.bos_token_id, eos_token_id=self.tok.eos_token_id,
                              pad_token_id=self.tok.pad_token_id, max_new_tokens=max_len, do_sample=False)
        with text_generate_quietly():
            out = self.hf.generate(input_ids=ids, attention_mask=mask, pixel_values=self._und_pixels(images),
                                   generation_config=gc, generation_mode="text")
        return [s.strip() for s in self.tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

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


__all__ = ["JanusPro", "JanusProConfig", "load", "MODEL_IDS"]
