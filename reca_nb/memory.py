"""Will it fit? A rough GPU-memory estimate of one training step, printed before training starts.

    est = estimate_memory(model, recipe)      # bytes per item, from the model as built and the recipe
    print(format_memory(est, gpu_gb=16))      # a table + "fits a 16 GB GPU?" (a free Colab T4)

What is counted (per process; multi-GPU data parallel replicates all of it):
  weights      every parameter and buffer at its own dtype (bf16/fp16 on GPU, fp32 on CPU)
  trainable    from the recipe's freeze policy, exactly as reca_nb.train.apply_freeze decides: LoRA adapters
               (r x (in + out) per targeted Linear, fp32) + `UMM.lora_full()` parameters, or whole groups
  grads        one per trainable parameter at its dtype
  adam         AdamW's two moments per trainable parameter (same dtype as the parameter)
  activations  `UMM.activation_bytes(recipe)` when the model provides it (transformers: see
               transformer_activations below), else unknown
  overhead     CUDA context + allocator fragmentation: a flat 1 GB + 10 % of the rest
It is an ESTIMATE (activations especially: +-50 %); a real run reports torch.cuda.max_memory_allocated().
"""
from __future__ import annotations

GB = 1024 ** 3


def transformer_activations(batch: int, seq: int, hidden: int, intermediate: int, layers: int, itemsize: int,
                            checkpointing: bool = False, logit_tokens: int = 0, vocab: int = 0) -> int:
    """Bytes kept for the backward pass of a llama-style decoder (SDPA / flash attention: no L x L scores).

    Per layer and token roughly 10 hidden-size tensors (norms, q/k/v, attention output, residuals) and 4
    intermediate-size ones (gate, up, activation, product) at `itemsize` bytes. With gradient checkpointing
    only each layer's input is kept, plus one layer recomputed at a time. Logits of `logit_tokens` positions
    over `vocab` classes are counted in fp32 twice (logits + softmax gradient)."""
    per_layer = (10 * hidden + 4 * intermediate) * itemsize
    if checkpointing:
        kept = batch * seq * (layers * hidden * itemsize + per_layer)
    else:
        kept = batch * seq * layers * per_layer
    return int(kept + batch * logit_tokens * vocab * 4 * 2)


def estimate_memory(model, recipe) -> dict:
    """Bytes of weights / grads / Adam states / activations / overhead for one step of `recipe` on `model`."""
    from torch import nn

    from reca_nb.freeze import lora_targets, trainable_names

    params = dict(model.named_parameters())
    weights = sum(p.numel() * p.element_size() for p in params.values())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    train_p = [params[n] for n in trainable_names(model, recipe) if n in params]
    trainable_n = sum(p.numel() for p in train_p)
    trainable_b = sum(p.numel() * p.element_size() for p in train_p)
    if recipe.freeze == "lora":  # plus the adapters themselves, fp32
        modules = dict(model.named_modules())
        adapters = sum(recipe.lora_r * (modules[t].in_features + modules[t].out_features)
                       for t in lora_targets(model) if isinstance(modules[t], nn.Linear))
        trainable_n += adapters
        trainable_b += adapters * 4
        weights += adapters * 4
    act = model.activation_bytes(recipe)
    est = {"params": sum(p.numel() for p in params.values()), "trainable_params": trainable_n,
           "weights": weights, "grads": trainable_b, "adam": 2 * trainable_b, "activations": act}
    known = weights + 3 * trainable_b + (act or 0)
    est["overhead"] = int(GB + 0.1 * known)
    est["total"] = int(known + est["overhead"])
    est["complete"] = act is not None
    return est


def format_memory(est: dict, gpu_gb: float | None = 16.0) -> str:
    """A small table of `estimate_memory` plus whether it fits a `gpu_gb` GPU (16 = Colab's free T4)."""
    def gb(x):
        return "unknown" if x is None else f"{x / GB:6.2f} GB"

    lines = [f"memory ESTIMATE per GPU ({est['params'] / 1e6:,.1f} M params, "
             f"{est['trainable_params'] / 1e6:,.2f} M trainable):"]
    for k in ("weights", "grads", "adam", "activations", "overhead", "total"):
        lines.append(f"  {k:<12}{gb(est[k])}")
    if gpu_gb:
        verdict = "fits" if est["total"] <= gpu_gb * GB else "does NOT fit"
        extra = "" if est["complete"] else " (activations unknown: a lower bound)"
        lines.append(f"  -> {verdict} a {gpu_gb:g} GB GPU{extra}")
    return "\n".join(lines)
