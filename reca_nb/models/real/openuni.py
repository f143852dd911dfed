"""OpenUni from real parts: a frozen transformers VLM + meta-queries + connector + diffusers SANA and DC-AE.

The full-size counterpart of `reca_nb.models.openuni` (same structure, same flow-matching loss), assembled from
library classes and hub checkpoints, as OpenUni-B (RecA Table 1: OpenUni-1-0.6B) is:

    VLM        InternVLForConditionalGeneration  "OpenGVLab/InternVL3-1B-hf"  (native transformers port of the
               InternVL3-1B that OpenUni loads with remote code; InternViT-300M at 448 px + Qwen2.5-0.5B)
    generation 256 meta-queries -> connector (6-layer transformer encoder at the LLM width, then a Linear to
               SANA's caption width: OpenUni's "enc_proj") -> SanaTransformer2DModel
               "Efficient-Large-Model/Sana_600M_512px_diffusers" (subfolder "transformer")
    latents    AutoencoderDC "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers" (512 px -> 32 x 16 x 16)
    loss       flow matching, uniform timesteps, v = eps - x0 (FlowMatchEulerDiscreteScheduler to sample)

RecA sample (official `image2image_loss`): the image, bottlenecked by the recipe and resized to the VLM tile,
goes through the VLM's vision tower + projector (`get_image_features`, no gradient); the features fill
    <|im_start|>user\n<img> FEATURES </img>\n{template}<|im_end|>\n<|im_start|>assistant\n<img> q_1 ... q_Q
and the LLM's last hidden states at the queries condition the DiT. T2I uses "Generate an image: {prompt}"
and the CFG branch "Generate an image." (OpenUni's prompt template). The VLM is decoupled and frozen
(practice 3, lambda_i2t = 0): generation gradients pass through its activations to the queries, never into
its weights, whatever the freeze policy. `i2t_loss` and `caption` use the VLM's own LM head.

    model = load()                 # hub weights (~3.5 GB); Colab GPU
    model = load(tiny=True)        # the same classes at a tiny random size, offline (tests, CI notebooks)

Note: queries and connector start random (OpenUni's pretrained alignment, `wusize/openuni` .pth, uses its own
connector code and is not loaded here), so a real run first learns the VLM -> DiT bridge from reconstruction.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.models.common import enable_activation_checkpointing, gen_device
from reca_nb.models.real import tiny
from reca_nb.models.real.common import pick_dtype
from reca_nb.models.umm import UMM

USER, ASSISTANT = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
GENERATION, CFG_PROMPT = "Generate an image: {}", "Generate an image."
CHAT = (USER, ASSISTANT, GENERATION, CFG_PROMPT)  # the prompt format; the tiny twin's tokenizer must know it
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # InternViT normalisation


@dataclass
class OpenUniRealConfig:
    vlm_id: str = "OpenGVLab/InternVL3-1B-hf"
    dit_id: str = "Efficient-Large-Model/Sana_600M_512px_diffusers"
    vae_id: str = "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
    tiny: bool = False  # build tiny random configs of the same classes instead (offline)
    dtype: str = "auto"  # of the frozen VLM and VAE; "auto": bf16 (fp16 without bf16) on CUDA, fp32 on CPU
    image_size: int = 512  # generation resolution (tiny: 32)
    und_size: int = 448  # the VLM's vision tile; set from the VLM config when built
    num_queries: int = 256  # OpenUni: 256 (tiny: 8)
    connector_layers: int = 6  # OpenUni: 6 (tiny: 1)
    connector_heads: int = 0  # 0 -> LLM width // 64
    checkpointing: bool = True  # activation checkpointing in the LLM and the DiT while training (as OpenUni)
    cfg_drop: float = 0.1  # probability of training a sample unconditionally
    sample_steps: int = 20  # Euler steps
    guidance: float = 4.5  # CFG scale at sampling (OpenUni: 4.5)
    caption_prompt: str = "Describe the image in detail."
    max_caption_len: int = 32


class OpenUniReal(UMM):
    arch = "openuni-real"
    config_cls = OpenUniRealConfig

    def __init__(self, config: OpenUniRealConfig | None = None, device=None, parts: tuple | None = None):
        """parts: (tokenizer, vlm, dit, vae) built by the caller (e.g. real sizes with random weights, for the
        memory benchmark); None: from the hub ids, or tiny random ones when config.tiny."""
        super().__init__()
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg = copy.deepcopy(config) if config is not None else OpenUniRealConfig()
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = pick_dtype(cfg.dtype, dev)
        self.tok, self.vlm, self.dit, self.vae = parts or (tiny.tiny_openuni_parts(cfg, dtype, CHAT) if cfg.tiny
                                                          else _hub_parts(cfg, dtype))
        if parts is not None:
            self.vlm, self.vae = self.vlm.to(dtype), self.vae.to(dtype)
        self.vlm.requires_grad_(False).eval()
        self.vae.requires_grad_(False).eval()
        cfg.und_size = self.vlm.config.vision_config.image_size[0]
        self.factor = 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)
        if cfg.image_size % self.factor:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of the VAE factor {self.factor}")
        self.config = cfg
        d = self.vlm.config.text_config.hidden_size
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) / d ** 0.5)  # OpenUni's init
        layer = nn.TransformerEncoderLayer(d, cfg.connector_heads or max(1, d // 64), 4 * d, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.connector = nn.Sequential(  # "enc_proj": encoder at the LLM width, then to SANA's caption width
            nn.TransformerEncoder(layer, cfg.connector_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False),
            nn.Linear(d, self.dit.config.caption_channels))
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        if cfg.checkpointing:  # recompute activations in backward: memory for compute (needed on a 16 GB T4)
            enable_activation_checkpointing(self.llm)
            self.dit.enable_gradient_checkpointing()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.to(dev)

    @property
    def device(self) -> torch.device:
        # the head's device, not the first parameter's: with a device map the layers spread over GPUs
        return self.queries.device

    @property
    def llm(self):
        return self.vlm.model.language_model

    def train(self, mode: bool = True):
        super().train(mode)
        self.vlm.eval()  # frozen parts never switch to dropout etc.; the LLM checkpoints only in training
        self.llm.train(mode and self.config.checkpointing)
        self.vae.eval()
        return self

    # ------------------------------------------------------------------ understanding (the frozen VLM)
    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> resized to the VLM tile, normalised -> vision tower + projector."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, h, w), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[-1] != self.und_size or x.shape[-2] != self.und_size:
            x = F.interpolate(x, size=(self.und_size, self.und_size), mode="bilinear", align_corners=False)
        out = self.vlm.get_image_features(pixel_values=((x - self.mean) / self.std).to(self.vlm.dtype))
        return getattr(out, "pooler_output", out)  # (B, N, d)

    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The VLM's image embeds as they enter its LLM (InternViT + pixel shuffle + MLP): (B, N, d)."""
        with torch.no_grad():  # OpenUni get_semantic_features: frozen
            return self._image_features(images)

    def _sequences(self, rows: list, queries: bool) -> tuple:
        """rows: lists of str (tokenized) / LongTensor (ids) / float Tensor (embeds) -> left-padded
        (B, L, d) embeddings, mask (B, L), position ids. `queries`: the generation condition, i.e. append
        the meta-queries and read the VLM's text embeddings as constants."""
        w, vlm_dtype = self.vlm.get_input_embeddings().weight, self.vlm.dtype
        w = w.detach() if queries else w
        seqs = []
        for parts in rows:
            pieces = []
            for p in parts:
                if isinstance(p, str):
                    p = torch.tensor(self.tok(p, add_special_tokens=False).input_ids, dtype=torch.long)
                pieces.append(F.embedding(p.to(self.device), w) if p.dtype == torch.long
                              else p.to(self.device, vlm_dtype))
            if queries:
                pieces.append(self.queries.to(vlm_dtype))
            seqs.append(torch.cat(pieces))
        L = max(len(s) for s in seqs)
        x = torch.stack([F.pad(s, (0, 0, L - len(s), 0)) for s in seqs])  # zeros on the left
        mask = torch.stack([torch.arange(L, device=self.device) >= L - len(s) for s in seqs]).long()
        return x, mask, (mask.cumsum(1) - 1).clamp(min=0)

    def _llm_hidden(self, x, mask, pos) -> torch.Tensor:
        """LLM last hidden states; VLM weights act as constants (gradients reach only the inputs)."""
        kw = dict(inputs_embeds=x, attention_mask=mask, position_ids=pos)
        if any(p.requires_grad for p in self.llm.parameters()):  # e.g. freeze="none": still never updated
            consts = {n: p.detach() for n, p in self.llm.named_parameters()}
            return torch.func.functional_call(self.llm, consts, args=(), kwargs=kw).last_hidden_state
        return self.llm(**kw).last_hidden_state

    def _caption_parts(self, feats: torch.Tensor) -> list:
        return [USER + "<img>", feats, "</img>\n" + self.config.caption_prompt + ASSISTANT]

    def i2t_loss(self, images: torch.Tensor, captions: list) -> torch.Tensor:
        """Next-token CE of caption + <|im_end|> after the VLM's chat prompt (trains the VLM only when its
        group is unfrozen; RecA on this decoupled model uses lambda_i2t = 0)."""
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        feats = self._image_features(images)
        ids = [torch.tensor(self.tok(c + "<|im_end|>", add_special_tokens=False).input_ids) for c in captions]
        x, mask, pos = self._sequences([self._caption_parts(f) + [i] for f, i in zip(feats, ids)], False)
        labels = torch.full(mask.shape, -100, dtype=torch.long, device=self.device)
        for b, i in enumerate(ids):
            labels[b, labels.shape[1] - len(i):] = i.to(self.device)
        logits = self.vlm(inputs_embeds=x, attention_mask=mask, position_ids=pos).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_len: int | None = None) -> list:
        """Greedy captions with the VLM's `generate` from input embeddings."""
        from transformers import GenerationConfig

        x, mask, _ = self._sequences([self._caption_parts(f) for f in self.understanding_embedding(images)],
                                     False)
        stop = [self.tok.convert_tokens_to_ids("<|im_end|>"), self.tok.eos_token_id]
        gen = GenerationConfig(max_new_tokens=max_len or self.config.max_caption_len, do_sample=False,
                               eos_token_id=[s for s in stop if s is not None], pad_token_id=self.tok.pad_token_id)
        out = self.vlm.generate(inputs_embeds=x, attention_mask=mask, generation_config=gen)
        return [s.strip() for s in self.tok.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------ generation condition (meta-queries)
    def condition(self, prompts: list, cond: torch.Tensor | None = None,
                  drop: torch.Tensor | None = None) -> torch.Tensor:
        """OpenUni prompt (+ image embeds) + queries -> VLM -> connector: (B, Q, caption_channels).
        `drop` (B,) bool: those rows become the CFG prompt "Generate an image." without the image."""
        B = len(prompts)
        if cond is not None and cond.shape[0] != B:
            raise ValueError(f"{B} prompts but cond has batch {cond.shape[0]}")
        drop = torch.zeros(B, dtype=torch.bool) if drop is None else drop.bool().cpu()
        rows = []
        for b, p in enumerate(prompts):
            if drop[b]:
                rows.append([USER + CFG_PROMPT + ASSISTANT + "<img>"])
            elif cond is None:
                rows.append([USER + GENERATION.format(p.strip()) + ASSISTANT + "<img>"])
            else:  # RecA: the image's own understanding embedding, then the template
                rows.append([USER + "<img>", cond[b].detach(), "</img>\n" + p.strip() + ASSISTANT + "<img>"])
        h = self._llm_hidden(*self._sequences(rows, queries=True))
        return self.connector(h[:, -self.config.num_queries:].float())

    # ------------------------------------------------------------------ flow matching on DC-AE latents
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = self.vae.encode((images.to(self.device) * 2 - 1).to(self.vae.dtype))
        z = out.latent if hasattr(out, "latent") else out.latent_dist.mode()  # AutoencoderDC / AutoencoderKL
        return z.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode((z / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    def generation_loss(self, images: torch.Tensor, prompts: list, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Rectified-flow MSE of the SANA velocity, uniform timesteps (OpenUni `weighting_scheme="none"`)."""
        B = images.shape[0]
        if len(prompts) != B:
            raise ValueError(f"{B} images but {len(prompts)} prompts")
        if images.shape[-1] != self.image_size:
            raise ValueError(f"target images must be {self.image_size}px, got {tuple(images.shape)}")
        x0 = self.encode(images)  # (B, C, h, w)
        drop = torch.rand(B) < self.config.cfg_drop if self.training else None
        ctx = self.condition(prompts, cond, drop)
        idx = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,))
        sigma = self.scheduler.sigmas[idx].to(self.device)[:, None, None, None]
        noise = torch.randn_like(x0)
        xt = (1 - sigma) * x0 + sigma * noise
        v = self.dit(xt, encoder_hidden_states=ctx, timestep=self.scheduler.timesteps[idx].to(self.device)).sample
        return F.mse_loss(v.float(), noise - x0)

    @torch.no_grad()
    def sample(self, prompts: list, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               steps: int | None = None, guidance: float | None = None, **kwargs) -> torch.Tensor:
        """Euler sampling with FlowMatchEulerDiscreteScheduler and classifier-free guidance -> (B, 3, S, S)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg, B = self.config, len(prompts)
        g = cfg.guidance if guidance is None else guidance
        ctx = self.condition(prompts, cond)
        if g != 1.0:
            ctx = torch.cat([ctx, self.condition(prompts, cond, drop=torch.ones(B, dtype=torch.bool))])
        sched = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps or cfg.sample_steps, device=self.device)
        h = cfg.image_size // self.factor
        z = torch.randn(B, self.dit.config.in_channels, h, h, generator=generator,
                        device=gen_device(generator)).to(self.device)
        for t in sched.timesteps:
            zz = torch.cat([z, z]) if g != 1.0 else z
            v = self.dit(zz, encoder_hidden_states=ctx, timestep=t.expand(zz.shape[0])).sample.float()
            if g != 1.0:
                vc, vu = v.chunk(2)
                v = vu + g * (vc - vu)
            z = sched.step(v, t, z).prev_sample
        return self.decode(z)

    # ------------------------------------------------------------------ freeze policy, memory, persistence
    def parameter_groups(self) -> dict:
        names = [n for n, _ in self.named_parameters()]
        return {"understanding": [n for n in names if n.startswith("vlm.")],
                "generation": [n for n in names if n == "queries" or n.startswith(("connector.", "dit."))],
                "shared": [], "frozen": [n for n in names if n.startswith("vae.")]}

    def lora_full(self) -> list:
        """Trained in full next to LoRA adapters (freeze="lora"): the meta-queries are no Linear layer."""
        return ["queries"]

    def activation_bytes(self, recipe) -> int:
        """Rough activation memory of one RecA step (reca_nb.memory): the frozen LLM keeps its activations
        (gradients reach the queries through it), then the connector and the DiT (fp32)."""
        from reca_nb.memory import transformer_activations

        t, c, dit = self.vlm.config.text_config, self.config, self.dit.config
        n_img = self.vlm.config.image_seq_length
        llm = transformer_activations(recipe.batch, 40 + n_img + c.num_queries, t.hidden_size,
                                      t.intermediate_size, t.num_hidden_layers, self.vlm.dtype.itemsize,
                                      checkpointing=c.checkpointing)
        d = t.hidden_size
        conn = transformer_activations(recipe.batch, c.num_queries, d, 4 * d, c.connector_layers, 4)
        inner = dit.num_attention_heads * dit.attention_head_dim
        tokens = (c.image_size // self.factor // dit.patch_size) ** 2
        return llm + conn + transformer_activations(recipe.batch, tokens + c.num_queries, inner,
                                                    int(2 * dit.mlp_ratio * inner), dit.num_layers, 4,
                                                    checkpointing=c.checkpointing)

    def save(self, path, extra: dict | None = None):
        """safetensors. Real models keep only the trained part (queries, connector, DiT): the frozen VLM and
        VAE are re-read from the hub ids in the config. Tiny models keep everything (random frozen parts)."""
        from pathlib import Path

        from safetensors.torch import save_file

        keep = set(self.parameter_groups()["generation"])
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()
                 if self.config.tiny or k in keep}
        meta = {"arch": self.arch, "config": json.dumps(asdict(self.config)), **(extra or {})}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={k: str(v) for k, v in meta.items()})

    @classmethod
    def load(cls, path, device=None, **overrides):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("arch") != cls.arch:
            raise ValueError(f"{path} holds a {meta.get('arch')!r} model, not {cls.arch!r}")
        model = cls(OpenUniRealConfig(**{**json.loads(meta["config"]), **overrides}), device=device)
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        gen = set(model.parameter_groups()["generation"])
        if unexpected or any(k in gen for k in missing) or (model.config.tiny and missing):
            raise ValueError(f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model


def load(tiny: bool = False, vlm_id=None, dit_id=None, vae_id=None, dtype=None, device=None,
         **overrides) -> OpenUniReal:
    """An OpenUni-style UMM from real parts (hub ids default to OpenUni-B's); tiny=True: offline, random."""
    small = dict(image_size=32, num_queries=8, connector_layers=1, sample_steps=4, guidance=3.0,
                 checkpointing=False) if tiny else {}
    ids = {k: v for k, v in dict(vlm_id=vlm_id, dit_id=dit_id, vae_id=vae_id, dtype=dtype).items() if v}
    return OpenUniReal(OpenUniRealConfig(tiny=tiny, **{**small, **ids, **overrides}), device=device)


def _hub_parts(cfg: OpenUniRealConfig, dtype: torch.dtype):
    """Tokenizer, VLM and VAE in `dtype` (frozen), SANA DiT in fp32 (trained; AdamW keeps fp32 weights)."""
    from diffusers import AutoencoderDC, AutoencoderKL, SanaTransformer2DModel
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.vlm_id)
    vlm = AutoModelForImageTextToText.from_pretrained(cfg.vlm_id, dtype=dtype)
    dit = SanaTransformer2DModel.from_pretrained(cfg.dit_id, subfolder="transformer", torch_dtype=torch.float32)
    vae_cls = AutoencoderDC if "dc-ae" in cfg.vae_id.lower() else AutoencoderKL
    vae = vae_cls.from_pretrained(cfg.vae_id, torch_dtype=dtype)
    return tok, vlm, dit, vae



def tiny_tokenizer(cfg: OpenUniRealConfig):
    """The offline tiny twin's tokenizer for this model's prompt format."""
    return tiny.tiny_tokenizer(cfg, CHAT)
