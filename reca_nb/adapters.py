"""LoRA adapters as one small safetensors file: save them from a LoRA run, put them back on a base model.

`train(..., recipe with freeze="lora", out_dir=D)` writes D/adapters.safetensors just before it folds the
adapters into the weights: every trainable tensor of the run (the peft LoRA A/B matrices plus the parameters
a model trains in full next to them, `UMM.lora_full()`, e.g. the Janus-Pro generation head), with the LoRA
rank, alpha and target modules in the metadata. It is megabytes where the model is gigabytes:

    model = janus_pro.load()                                    # the same base model again
    load_adapters(model, "runs/x/adapters.safetensors")         # -> the post-trained model (merged)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from reca_nb.freeze import lora_full
from reca_nb.paths import atomic_write

FORMAT = "reca_nb.adapters/1"


def save_adapters(model, path, recipe) -> Path:
    """Write the trainable tensors of a LoRA-wrapped `model` (inside train(), before the merge) to `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
    if not any(".lora_" in n for n in tensors):
        raise ValueError("save_adapters: the model carries no trainable LoRA adapters (is freeze='lora' on?)")
    base = _unwrapped_names(tensors)
    meta = {"format": FORMAT, "arch": getattr(model, "arch", "?"), "r": recipe.lora_r,
            "alpha": recipe.lora_r, "targets": sorted({_module_of(n) for n in tensors if ".lora_" in n}),
            "full": sorted(n for n in base if n in lora_full(model)),
            "n_params": sum(t.numel() for t in tensors.values())}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={k: json.dumps(v)
                                                                              for k, v in meta.items()}))


def read_meta(path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no adapters file at {path}")
    with safe_open(str(path), "pt") as f:
        raw = f.metadata() or {}
    meta = {k: json.loads(v) for k, v in raw.items()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a reca_nb adapters file (format {meta.get('format')!r})")
    return meta


def load_adapters(model, path, merge: bool = True):
    """Wrap `model` (the base the adapters were trained on) with the saved LoRA adapters and load every saved
    tensor. merge=True folds them in and returns `model`; merge=False returns the peft LoraModel (call
    .merge_and_unload() later, or train on)."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel
    from peft.tuners.tuners_utils import cast_adapter_dtype
    from safetensors.torch import load_file

    meta = read_meta(path)
    arch = getattr(model, "arch", "?")
    if meta["arch"] != arch:
        raise ValueError(f"{path} holds adapters for a {meta['arch']!r} model, not {arch!r}")
    cfg = LoraConfig(r=meta["r"], lora_alpha=meta["alpha"], lora_dropout=0.0,
                     target_modules="|".join(re.escape(t) for t in meta["targets"]))
    lora = LoraModel(model, cfg, "default")
    cast_adapter_dtype(model, "default")
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = [k for k in tensors if k not in params]
    expected = [n for n in params if ".lora_" in n]
    missing = [n for n in expected if n not in tensors]
    if unknown or missing:
        lora.unload()  # leave the model as it was found
        raise ValueError(f"{path} does not fit this model: {len(unknown)} unknown tensors (e.g. {unknown[:2]}), "
                         f"{len(missing)} adapter tensors missing (e.g. {missing[:2]}); was it trained on a "
                         "model with another config?")
    with torch.no_grad():
        for k, v in tensors.items():
            if params[k].shape != v.shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the model {tuple(params[k].shape)}")
            params[k].copy_(v.to(params[k].dtype))
    if merge:
        lora.merge_and_unload()
        return model
    return lora


def _module_of(param_name: str) -> str:
    """'a.b.q_proj.lora_A.default.weight' -> 'a.b.q_proj'."""
    return param_name.split(".lora_")[0]


def _unwrapped_names(tensors: dict) -> list:
    return [n for n in tensors if ".lora_" not in n]
