"""What the real (hub) models share: the dtype policy."""
from __future__ import annotations

import torch


def pick_dtype(name, device) -> torch.dtype:
    """`name` as a torch dtype ("bfloat16", "torch.float16", ...), or for "auto": bf16 on CUDA GPUs with native
    bf16 (compute capability >= 8, Ampere and later), fp16 on older ones (a T4 is 7.5), fp32 off CUDA."""
    if name != "auto":
        dt = getattr(torch, str(name).replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"dtype must be 'auto' or a torch dtype name (bfloat16, float16, float32), "
                             f"got {name!r}")
        return dt
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16
