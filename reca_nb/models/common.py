"""Parts several UMMs share: the prefix-LM captioner (Harmon, OpenUni), random draws on the generator's
device, and the transformers compatibility shims (KV-cache keyword, activation checkpointing)."""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn


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
