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
the understanding resolution chosen by the recipe (the information bottleneck, practice 1). The base class
reads `config.image_size` / `config.und_size` for the two resolutions; a model without them (a hub model)
overrides `image_size` / `und_size`.

Glossary: *und* = understanding (the image-reading path and its input resolution, `und_res`); *I2T* = image
to text (captioning, the understanding objective); *T2I* = text to image (generation); *h_v* = the
understanding embedding of an image, RecA's dense "prompt".

Two hooks have defaults that most models keep: `freeze(groups)` (stop training parameter groups; a model
whose forward must change with it overrides, e.g. BAGEL detaches its understanding positions) and
`lora_full()` / `activation_bytes(recipe)` for LoRA runs and memory estimates.
"""
from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from reca_nb.paths import atomic_write

GROUPS = ("understanding", "generation", "shared", "frozen")


class UMM(nn.Module):
    arch: str = "umm"  # registry name, e.g. "showo-clip" (may be set per instance from the config)
    archs: tuple = ()  # registry names a checkpoint of this class may carry; default (arch,)
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
    def caption(self, images: torch.Tensor, max_len: int | None = None) -> list:
        """Greedy caption per image; `images` at understanding resolution; `max_len` None = the model's own."""

    @abstractmethod
    def parameter_groups(self) -> dict:
        """{group: [parameter names]} over GROUPS; every trainable parameter appears in exactly one group.
        'frozen' holds parameters that are never trained (e.g. a fixed tokenizer)."""

    # --- hooks with defaults ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (CPU before it has any)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def freeze(self, groups: set) -> None:
        """Train every parameter except those in `groups` (names from GROUPS; "frozen" is always included by
        the loop). Models whose forward depends on what trains override this and call super()."""
        names = set().union(*(self.parameter_groups().get(g, []) for g in groups))
        for n, p in self.named_parameters():
            p.requires_grad_(n not in names)

    def lora_full(self) -> list:
        """Parameter names trained in full next to LoRA adapters (e.g. a generation head LoRA cannot wrap)."""
        return []

    def activation_bytes(self, recipe) -> int | None:
        """Activation memory of one training step under `recipe`, for memory estimates; None = unknown."""
        return None

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
        # atomic: a failed write (disk full) leaves the previous file intact
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={k: str(v) for k, v in meta.items()}))

    @classmethod
    def load(cls, path, **overrides):
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        accepted = cls.archs or (cls.arch,)
        if meta.get("arch") not in accepted:
            raise ValueError(f"{path} holds a {meta.get('arch')!r} model, not one of {accepted}")
        cfg = json.loads(meta["config"])
        names = {f.name for f in fields(cls.config_cls)}
        saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names}
        cfg = cls.config_cls(**{**saved, **overrides})
        model = cls(cfg)
        model.load_state_dict(load_file(str(path)))
        return model
