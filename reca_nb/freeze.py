"""What a run trains (practice 3): the freeze policy and LoRA, declared once for every UMM.

`recipe.freeze` names the policy: "none" trains everything but the model's "frozen" group, "understanding" also
freezes that group (decoupled models, practice 3), "lora" trains peft LoRA adapters on the Linear layers of the
shared and generation groups plus the model's `lora_full()` parameters. The model itself reacts to the freeze
through `UMM.freeze(groups)`, so no caller special-cases an architecture.
"""
from __future__ import annotations

from torch import nn

from reca_nb.recipe import Recipe


def frozen_groups(recipe: Recipe) -> set:
    """The parameter groups a recipe never trains in full ("lora": everything outside the adapters is frozen,
    and the understanding group is not wrapped)."""
    return {"frozen"} | ({"understanding"} if recipe.freeze in ("understanding", "lora") else set())


def trainable_names(model, recipe: Recipe) -> set:
    """Names of the parameters `recipe` trains in full (under "lora": only the `lora_full()` ones; the
    adapters are new tensors, counted by `lora_targets`)."""
    if recipe.freeze == "lora":
        return lora_full(model)
    groups = model.parameter_groups()
    frozen = set().union(*(groups.get(g, []) for g in frozen_groups(recipe)))
    return {n for n, _ in model.named_parameters() if n not in frozen}


def lora_targets(model) -> list:
    """Names of the nn.Linear modules whose weight is in the shared or generation group."""
    groups = model.parameter_groups()
    trainable = (set(groups.get("shared", [])) | set(groups.get("generation", []))) - lora_full(model)
    inside_mha = {f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and f"{n}.weight" in trainable and n not in inside_mha]


def lora_full(model) -> set:
    """Parameters trained in full next to the LoRA adapters (the UMM's `lora_full()`, e.g. a generation head)."""
    return set(model.lora_full())


def apply_freeze(model, recipe: Recipe):
    """Set requires_grad from `recipe.freeze` and model.parameter_groups(); returns the peft LoraModel
    (call .merge_and_unload() to fold the adapters back) when freeze='lora', else None.
    'frozen' is never trained; 'understanding' also freezes that group; 'lora' trains only LoRA adapters
    (peft) on the Linear layers of the shared and generation groups, plus the model's `lora_full()` parameters
    in full."""
    model.check_groups()
    if recipe.freeze == "lora":
        import re

        from peft import LoraConfig
        from peft.tuners.lora import LoraModel
        from peft.tuners.tuners_utils import cast_adapter_dtype

        targets = lora_targets(model)
        model.freeze(frozen_groups(recipe))  # LoRA wraps shared/generation layers only
        if not targets:
            raise ValueError(f"freeze='lora': {type(model).__name__} has no nn.Linear in the shared or "
                             "generation groups")
        cfg = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_r, lora_dropout=0.0,
                         target_modules="|".join(re.escape(t) for t in targets))  # str: full-name match
        lora = LoraModel(model, cfg, "default")  # in place; peft freezes everything but the adapters
        cast_adapter_dtype(model, "default")  # bf16 / fp16 base weights: adapters still train in fp32
        full = lora_full(model)
        for n, p in model.named_parameters():
            p.requires_grad_(p.requires_grad or n in full)
        return lora
    model.freeze(frozen_groups(recipe))
    return None
