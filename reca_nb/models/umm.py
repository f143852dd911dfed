"""The one interface every unified multimodal model (UMM) in reca_nb implements.

A UMM understands images (I2T) and generates them (T2I). RecA (arXiv 2509.07295, Sec. 3) needs exactly four
things from it, so one training loop serves every architecture, miniature or real:

  understanding_embedding(images)          -> (B, N, D) semantic condition h_v (SigLIP / CLIP / MAR-encoder /
                                              VLM features in the paper; a *trained* understanding path here)
  generation_loss(images, prompts, cond)   -> the model's own generation loss (masked-token CE, MAR diffusion,
                                              flow matching, next-token CE), conditioned on text prompts and,
                                              for RecA, on `cond` placed before the prompt template
  i2t_loss(images, captions)               -> captioning CE (the understanding objective, practice 4)
  sample(prompts) / caption(images)        -> T2I images in [0, 1] and I2T strings, for evaluation

plus `parameter_groups()`, which says which parameters are understanding / generation / shared, so freeze
policies (practice 3) are declared once per architecture, not special-cased in the loop.

Images are float tensors (B, 3, H, W) in [0, 1]. `images` passed to understanding methods are already at
the understanding resolution chosen by the recipe (the information bottleneck, practice 1).
"""
from __future__ import annotations

import functools
import inspect
import json
from abc import abstractmethod
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

GROUPS = ("understanding", "generation", "shared", "frozen")


class UMM(nn.Module):
    arch: str = "umm"  # registry name, e.g. "showo-clip" (may be set per instance from the config)
    arches: tuple = ()  # registry names a checkpoint of this class may carry; default (arch,)
    config_cls = None  # dataclass of the model's hyper-parameters; instances live in self.config
    # `python -m reca_nb.build.pretrain` runs these stages in order: (name, config fields set for the stage only,
    # recipe overrides). One stage by default; OpenUni has two (a pretrained DiT first, then the bridge).
    pretrain_stages: tuple = (("pretrain", {}, {}),)

    # --- the interface -----------------------------------------------------------------------------
    @abstractmethod
    def understanding_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) at understanding resolution -> (B, N, D) semantic condition."""

    @abstractmethod
    def generation_loss(self, images: torch.Tensor, prompts: list, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar generation loss for target `images` given `prompts` (captions for T2I, templates for RecA)
        and optionally the understanding embedding `cond` (RecA)."""

    @abstractmethod
    def i2t_loss(self, images: torch.Tensor, captions: list) -> torch.Tensor:
        """Scalar captioning loss; `images` at understanding resolution."""

    @abstractmethod
    def sample(self, prompts: list, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **kwargs) -> torch.Tensor:
        """Generate one image per prompt -> (B, 3, S, S) in [0, 1]."""

    @abstractmethod
    def caption(self, images: torch.Tensor, max_len: int = 24) -> list:
        """Greedy caption per image; `images` at understanding resolution."""

    @abstractmethod
    def parameter_groups(self) -> dict:
        """{group: [parameter names]} over GROUPS; every trainable parameter appears in exactly one group.
        'frozen' holds parameters that are never trained (e.g. a fixed tokenizer)."""

    # --- derived -----------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Generation (target) resolution."""
        return self.config.image_size

    @property
    def und_size(self) -> int:
        """Native understanding resolution (the encoder's input size when no bottleneck is applied)."""
        return self.config.und_size

    def reca_loss(self, und_images: torch.Tensor, templates: list, target_images: torch.Tensor) -> torch.Tensor:
        """L_RecA = L_gen(f(concat(h_v, template)), I): reconstruct the image from its own understanding."""
        return self.generation_loss(target_images, templates, cond=self.understanding_embedding(und_images))

    @torch.no_grad()
    def reconstruct(self, und_images: torch.Tensor, templates: list, generator=None, **kw) -> torch.Tensor:
        return self.sample(templates, cond=self.understanding_embedding(und_images), generator=generator, **kw)

    def token_agreement(self, und_images: torch.Tensor, target_images: torch.Tensor) -> float | None:
        """Fraction of understanding-input tokens identical to target tokens, where both live in one discrete
        space (VQ-in/VQ-out variants); None elsewhere. A value near 1 is the copy shortcut (collapse monitor)."""
        return None

    def named_group(self, group: str) -> list:
        names = set(self.parameter_groups()[group])
        return [p for n, p in self.named_parameters() if n in names]

    def check_groups(self):
        """Every parameter in exactly one group, no unknown names."""
        groups = self.parameter_groups()
        bad = set(groups) - set(GROUPS)
        if bad:
            raise ValueError(f"unknown parameter groups {bad}; use {GROUPS}")
        seen = {}
        for g, names in groups.items():
            for n in names:
                if n in seen:
                    raise ValueError(f"parameter {n} is in both {seen[n]!r} and {g!r}")
                seen[n] = g
        missing = [n for n, _ in self.named_parameters() if n not in seen]
        if missing:
            raise ValueError(f"{len(missing)} parameters in no group, e.g. {missing[:3]}")

    # --- persistence (safetensors + json; no pickle) ------------------------------------------------
    def save(self, path, extra: dict | None = None):
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"arch": self.arch, "config": json.dumps(asdict(self.config)), **(extra or {})}
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        try:
            save_file(state, str(tmp), metadata={k: str(v) for k, v in meta.items()})
            tmp.replace(path)  # atomic: a failed write (disk full) leaves the previous file intact
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path, **overrides):
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        accepted = cls.arches or (cls.arch,)
        if meta.get("arch") not in accepted:
            raise ValueError(f"{path} holds a {meta.get('arch')!r} model, not one of {accepted}")
        cfg = json.loads(meta["config"])
        names = {f.name for f in fields(cls.config_cls)}
        saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names}
        cfg = cls.config_cls(**{**saved, **overrides})
        model = cls(cfg)
        model.load_state_dict(load_file(str(path)))
        return model


class PrefixLMCaptioner:
    """I2T for UMMs whose understanding is a causal LM read after an image prefix (Harmon, OpenUni minis).
    The host provides `_caption_prefix(images) -> (B, P, d)`, `_embed(ids)`, `tok` (reca_nb.world.text), `llm` (a
    transformers *ForCausalLM), `device` and `config.max_caption_len`."""

    def i2t_loss(self, images: torch.Tensor, captions: list) -> torch.Tensor:
        """Next-token CE of the caption (and <eos>) after the image prefix (Harmon's image2text_loss)."""
        import torch.nn.functional as F

        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        prefix = self._caption_prefix(images)  # (B, P, d)
        ids = self.tok.batch(captions, eos=True).to(self.device)  # (B, T) right-padded
        x = torch.cat([prefix, self._embed(ids)], dim=1)  # (B, P + T, d)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
                          (ids != self.tok.pad_id).long()], dim=1)
        h = self.llm.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        P = prefix.shape[1]
        logits = self.llm.lm_head(h[:, P - 1:-1])  # (B, T, V): position P-1 (<bos>) predicts ids[:, 0]
        labels = ids.masked_fill(ids == self.tok.pad_id, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_len: int | None = None) -> list:
        """Greedy captions with the LM's own head (transformers `generate` from input embeddings)."""
        from transformers import GenerationConfig

        prefix = self._caption_prefix(images)
        gen = GenerationConfig(max_new_tokens=max_len or self.config.max_caption_len, do_sample=False,
                               eos_token_id=self.tok.eos_id, pad_token_id=self.tok.pad_id,
                               bos_token_id=self.tok.bos_id, use_cache=True)
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device)
        out = self.llm.generate(inputs_embeds=prefix, attention_mask=mask, generation_config=gen)
        return [self.tok.decode(row) for row in out.tolist()]


def gen_device(generator) -> torch.device:
    """Where random draws for `generator` must happen: its own device (CPU when there is none), so that
    sampling with a CPU generator is bit-identical on every device and a CUDA generator works too."""
    return generator.device if generator is not None else torch.device("cpu")


def cache_kwargs(lm: nn.Module, cache) -> dict:
    """The keyword argument that hands a KV cache to the forward of transformers model `lm`: `cache=` from
    transformers 5.24 on (where `past_key_values=` warns as deprecated), `past_key_values=` before (where an
    unknown `cache=` would vanish silently into **kwargs)."""
    return {_cache_arg(type(lm)): cache}


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each layer of transformers model `model` in the backward pass (non-reentrant). The method is
    `activation_checkpointing_enable` from transformers 5.23 on (where the old name warns as deprecated) and
    `gradient_checkpointing_enable` before it (Colab's preinstalled transformers is older)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@functools.lru_cache(maxsize=None)
def _cache_arg(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
