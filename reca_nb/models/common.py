"""Parts several UMMs share: the frozen CLIP / autoencoder they load but never own (Harmon, BAGEL, OpenUni),
the tiny Qwen2 LLM (Harmon, OpenUni), the prefix-LM captioner (Harmon, OpenUni), random draws on the
generator's device, and the transformers compatibility shims (KV-cache keyword, activation checkpointing)."""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn


class FrozenParts:
    """The frozen, shared CLIP and autoencoder of a miniature (`reca_nb.encoders.clip.load_clip`,
    `reca_nb.encoders.autoencoder.load_ae`): loaded on first use (or attached), moved to the model's device the
    first time they are used there, and never registered as submodules, so they are not in the state_dict or
    checkpoint. The host calls `self._init_frozen(clip=..., ae=...)` in `__init__` (None = the shared loader)
    and has `config.latent_channels` / `config.ae_factor` if it uses the autoencoder."""

    def _init_frozen(self, **parts) -> None:
        self._frozen = dict(parts)  # a dict, so nn.Module does not register them as submodules

    def _load(self, name: str):
        """The frozen part `name` ("clip" / "ae"): as attached, else from the shared cached loader."""
        if self._frozen[name] is None:
            if name == "clip":
                from reca_nb.encoders.clip import load_clip

                self._frozen["clip"] = load_clip()
            else:
                from reca_nb.encoders.autoencoder import load_ae

                self._frozen["ae"] = load_ae()
        obj = self._frozen[name]
        if name == "ae":
            want = (self.config.latent_channels, self.config.ae_factor)
            if (obj.latent_channels, obj.factor) != want:
                raise ValueError(f"the autoencoder gives {obj.latent_channels} channels at factor "
                                 f"{obj.factor}; this model was built for {want[0]} at {want[1]}")
        return obj

    @property
    def clip(self):
        return self._on_device("clip")

    @property
    def ae(self):
        return self._on_device("ae")

    def clip_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen CLIP's patch tokens of `images` (B, 3, h, w) -> (B, N, clip width), float32 on this
        model's device, without gradient: what every CLIP-reading understanding side projects."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, h, w), got {tuple(images.shape)}")
        with torch.no_grad():
            feats = self.clip.image_tokens(images.to(self.device))
        return feats.to(self.device, torch.float32)

    def _on_device(self, name: str):
        """Move a shared frozen part to this model's device the first time it is used there."""
        obj, dev = self._load(name), self.device
        if self._frozen.get(name + "_device") != dev:
            if hasattr(obj, "to"):
                obj.to(dev)
            self._frozen[name + "_device"] = dev
        return obj

    def attach(self, clip=None, ae=None):
        """Use these frozen CLIP / autoencoder objects instead of the shared loaders (tests, ablations)."""
        for name, obj in (("clip", clip), ("ae", ae)):
            if obj is not None:
                if name not in self._frozen:
                    raise TypeError(f"{type(self).__name__} has no frozen {name}")
                self._frozen.update({name: obj, name + "_device": None})
        return self


def tiny_qwen2(vocab_size: int, d: int, layers: int, heads: int, kv_heads: int, ffn: int, max_positions: int,
               tied: bool, tok) -> nn.Module:
    """A randomly initialised `transformers.Qwen2ForCausalLM` of the given size, with the special ids of the
    shared word tokenizer `tok` (reca_nb.world.text) and no KV cache in training forwards."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    llm = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab_size, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=tied, pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id))
    llm.config.use_cache = False
    return llm


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
