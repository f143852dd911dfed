"""Image input conversion: anything image-like -> a float batch (B, 3, H, W) in [0, 1].

Every model, tokenizer and the GenEval-mini scorer in reca_nb speak one image format: float32 tensors
(B, 3, H, W) with values in [0, 1]. `as_image_batch` is the one front door that turns user input into it:

  * PIL images (any mode; alpha and palette transparency are composited on black, the shape-world background)
  * lists of PIL images / arrays / tensors (stacked; sizes must agree unless `size` is given)
  * numpy arrays, channels-last: (H, W), (H, W, C), (N, H, W, C)
  * torch tensors, channels-first: (H, W), (C, H, W), (B, C, H, W)

with C in {1 (grey), 3 (RGB), 4 (RGBA)}, dtype uint8 (0..255), bool, or float in [0, 1].
With `size`, images are resized to size x size (area/box averaging when shrinking, bilinear when enlarging).
Anything ambiguous or broken raises a ValueError that says what was received and what to do.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MIN_SIDE = 4  # smaller images carry no shape information (allowed only when resized)
FLOAT_TOL = 0.1  # floats in [-0.1, 1.1] are clamped to [0, 1]; anything further out is an error


def as_image_batch(x, size: int | None = None) -> torch.Tensor:
    """Convert `x` to a float32 tensor (B, 3, H, W) in [0, 1]; with `size`, resize to (size, size)."""
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError("empty image batch: got an empty list")
        parts = [_to_batch(item, where=f"item {i}: ") for i, item in enumerate(x)]
        if size is None:
            for i, p in enumerate(parts):
                _check_side(p, f"item {i}: ")
            shapes = {tuple(p.shape[-2:]) for p in parts}
            if len(shapes) > 1:
                raise ValueError(f"images in the list have different sizes {sorted(shapes)}; "
                                 "pass size=... to resize them to one square size")
        else:
            parts = [_resize(p, size) for p in parts]
        return torch.cat(parts).contiguous()
    batch = _to_batch(x)
    if size is None:
        _check_side(batch)
    return (batch if size is None else _resize(batch, size)).contiguous()


def check_image_batch(images, what: str = "images", size: int | None = None, multiple: int = 1,
                      square: bool = False, strict: bool = False) -> torch.Tensor:
    """Validate a batch that a model or tokenizer reads and return it unchanged: a tensor (B, 3, H, W), with
    `size` exactly size x size, `square` H == W, and H, W multiples of `multiple`; `strict` also requires a
    float dtype and values in [0, 1] (the tokenizers, which see user input first). Errors say what came in;
    a non-tensor is a TypeError that points to `as_image_batch`."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor (B,3,H,W) in [0,1], got {type(images).__name__}; "
                        "use reca_nb.world.images.as_image_batch to convert PIL/numpy inputs")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B,3,H,W) in [0,1], got {tuple(images.shape)}; "
                         "use reca_nb.world.images.as_image_batch to convert")
    if strict and not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0,1], got dtype {images.dtype}")
    H, W = images.shape[-2:]
    if size is not None and (H, W) != (size, size):
        raise ValueError(f"expected {size}x{size} {what}, got {H}x{W}")
    if square and H != W:
        raise ValueError(f"{what} must be square, got {H}x{W}")
    if H % multiple or W % multiple:
        bad = H if H % multiple else W
        raise ValueError(f"{what}: height and width must be multiples of {multiple}, got {H}x{W} ({bad} is not "
                         f"a multiple of {multiple})")
    if strict and images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        lo, hi = images.min().item(), images.max().item()
        raise ValueError(f"{what}: values must lie in [0,1], got range [{lo:.3f}, {hi:.3f}]")
    return images


# ----------------------------------------------------------------------------- one input -> (B, 3, H, W)

def _to_batch(x, where: str = "") -> torch.Tensor:
    if isinstance(x, Image.Image):
        return _from_channels_last(_pil_to_array(x), where)
    if isinstance(x, np.ndarray):
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"{where}numpy image must be (H,W), (H,W,C) or (N,H,W,C) channels-last, "
                             f"got shape {x.shape}")
        if x.ndim >= 3 and x.shape[-1] not in (1, 3, 4):
            hint = (" (numpy arrays are read channels-last; for channels-first pass a torch tensor)"
                    if x.shape[-3] in (1, 3, 4) else "")
            raise ValueError(f"{where}numpy image has {x.shape[-1]} channels in shape {x.shape}; "
                             f"expected 1, 3 or 4{hint}")
        return _from_channels_last(x, where)
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dim() == 2:
            t = t[None, None]  # (H, W) grey
        elif t.dim() == 3:
            t = t[None]  # (C, H, W)
        elif t.dim() != 4:
            raise ValueError(f"{where}tensor image must be (H,W), (C,H,W) or (B,C,H,W) channels-first, "
                             f"got shape {tuple(x.shape)}")
        if t.shape[1] not in (1, 3, 4):
            hint = " (tensors are read channels-first)" if t.shape[-1] in (1, 3, 4) else ""
            raise ValueError(f"{where}tensor image has {t.shape[1]} channels in shape {tuple(x.shape)}; "
                             f"expected 1, 3 or 4{hint}")
        return _finish(_to_unit_float(t, where), where)
    raise TypeError(f"{where}cannot read an image from {type(x).__name__}; pass a PIL image, a numpy array "
                    "(H,W[,C]) / (N,H,W,C), a torch tensor (C,H,W) / (B,C,H,W), or a list of those")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image of any mode -> numpy (H, W, C) with C in {1, 3, 4} (alpha kept for compositing)."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        return np.asarray(img.convert("RGBA"))
    if img.mode in ("L", "1"):
        return np.asarray(img.convert("L"))[..., None]
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None]
    if img.mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    if img.mode == "I":
        a = np.asarray(img)
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"32-bit integer PIL image with values in [{a.min()}, {a.max()}]; "
                             "convert it to 8-bit ('L' or 'RGB') first")
        return a.astype(np.uint8)[..., None]
    return np.asarray(img.convert("RGB"))  # RGB, CMYK, YCbCr, HSV, ...


def _from_channels_last(a: np.ndarray, where: str) -> torch.Tensor:
    if a.ndim == 2:
        a = a[None, ..., None]  # (H, W) grey
    elif a.ndim == 3:
        a = a[None]  # (H, W, C)
    if a.dtype.kind not in "buif":
        raise ValueError(f"{where}unsupported numpy dtype {a.dtype}; use uint8 (0..255) or float (0..1)")
    t = torch.from_numpy(np.array(a)).permute(0, 3, 1, 2)  # (B, C, H, W); np.array copies (PIL is read-only)
    return _finish(_to_unit_float(t, where), where)


def _to_unit_float(t: torch.Tensor, where: str) -> torch.Tensor:
    """uint8 / bool / float tensor -> float32 in [0, 1], with range checks."""
    if t.numel() == 0:
        raise ValueError(f"{where}empty image batch: got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point():
        raise ValueError(f"{where}integer images must be uint8 (0..255), got {t.dtype}; convert with "
                         ".to(torch.uint8) (0..255 values) or .float() / 255")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{where}image contains NaN or inf values")
    lo, hi = t.min().item(), t.max().item()
    if lo < -FLOAT_TOL or hi > 1 + FLOAT_TOL:
        if hi > 2 and lo >= -FLOAT_TOL:
            hint = "; it looks like 0..255 values: divide by 255 (or pass uint8)"
        elif lo < -0.5 and hi <= 1 + FLOAT_TOL:
            hint = "; it looks like [-1, 1] values: map them with (x + 1) / 2"
        else:
            hint = ""
        raise ValueError(f"{where}float image values must lie in [0, 1], "
                         f"got range [{lo:.3g}, {hi:.3g}]{hint}")
    return t.clamp(0.0, 1.0)


def _finish(t: torch.Tensor, where: str) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1], C in {1, 3, 4} -> (B, 3, H, W): grey repeated, alpha over black."""
    if t.shape[0] == 0:
        raise ValueError(f"{where}empty image batch: got shape {tuple(t.shape)}")
    if t.shape[1] == 4:
        t = t[:, :3] * t[:, 3:4]  # composite on black
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t.float()


def _check_side(t: torch.Tensor, where: str = ""):
    H, W = t.shape[-2:]
    if H < MIN_SIDE or W < MIN_SIDE:
        raise ValueError(f"{where}image is {H}x{W}; need at least {MIN_SIDE}x{MIN_SIDE} "
                         "(or pass size=... to resize it)")


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    H, W = t.shape[-2:]
    if H != W:
        raise ValueError(f"image is {H}x{W} (non-square) but a square {size}x{size} image is required; "
                         "crop it to a square first")
    if H == size:
        return t
    if H > size:  # area averaging (= box filter for integer factors)
        return F.interpolate(t, size=(size, size), mode="area").clamp(0, 1)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
