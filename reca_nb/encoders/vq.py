"""PatchVQ: the discrete image tokenizer of the Show-o-style models (RecA paper §3, Show-o's MAGVIT role).

Show-o, Janus and Harmon generate images as a sequence of codebook indices produced by a *frozen* VQ
tokenizer (MAGVIT-v2 / LlamaGen VQ), and RecA never trains it. Here the tokenizer is a k-means codebook
of K=256 centroids over non-overlapping 4x4-pixel RGB patches (48-d vectors):

    encode: (B,3,H,W) -> patches (B,H/4,W/4,48) -> nearest centroid -> codes (B,H/4,W/4)
    decode: codes -> centroids -> fold back into (B,3,H,W)

so 16x16 -> 16 tokens, 32x32 -> 64 tokens, 64x64 -> 256 tokens, all in *one* token space.

Why k-means and not a trained diffusers `VQModel`?
  * Resolution-agnostic token space. A patch codebook has no receptive field beyond its 4x4 patch, so the
    same codes mean the same pixels at every resolution. That is exactly the geometry of the copy-collapse
    experiment (bottleneck practice 1): a 32x32 understanding input tokenized like the 32x32 target gives the
    model a copy path, a 16x16 one gives it only a semantic summary. A conv VQ-VAE trained at 32x32 would
    give 16x16 inputs codes it has rarely seen.
  * Deterministic and cheap: ~10 s of CPU time (torch Lloyd iterations, k-means++ init, fixed seed), 48 KB.
  * The tokenizer is frozen in Show-o/Janus RecA anyway, so its learning rule is not part of the method.
  * Cost: a trained VQModel reconstructs 32/64 better. Held-out pixel MSE (fit_tokenizers, 200 images each):
        k-means PatchVQ (shipped)              16: 0.0030   32: 0.0026   64: 0.0015
        diffusers VQModel f=4, 256 codes,
          1000 steps x 32 images               16: 0.0082   32: 0.0013   64: 0.0015   (83/256 codes used)
          2000 steps x 32 images               16: 0.0045   32: 0.0005   64: 0.0005   (86/256 codes used)
    (`python -m reca_nb.build.fit_tokenizers --compare_vqmodel --steps=N --device=cuda`, measured on an H100; on
    2 idle CPU cores 2000 steps would take ~9 min, estimated.) PatchVQ's error is small enough for the
    GenEval-mini detector at 32/64 (see data/tokenizers/README.md).
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from reca_nb.paths import DATA_DIR, cache_dir
from reca_nb.world.images import check_image_batch

VQ_FILE = DATA_DIR / "tokenizers" / "vq.safetensors"
PATCH = 4
FIT_SIZES = (16, 32, 64)


# ----------------------------------------------------------------------------- patch <-> image

def check_images(images, multiple: int = PATCH) -> torch.Tensor:
    """Validate a (B,3,H,W) float batch in [0,1] with H, W multiples of `multiple`; clear errors otherwise."""
    return check_image_batch(images, multiple=multiple, strict=True)


def to_patches(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,H/4,W/4,48); each patch vector is channel-major (c, dy, dx)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // PATCH, PATCH, W // PATCH, PATCH)  # (B,C,h,p,w,p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, H // PATCH, W // PATCH, C * PATCH * PATCH)


def from_patches(patches: torch.Tensor) -> torch.Tensor:
    """(B,h,w,48) -> (B,3,4h,4w); inverse of `to_patches`."""
    B, h, w, _ = patches.shape
    x = patches.reshape(B, h, w, 3, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)  # (B,C,h,p,w,p)
    return x.reshape(B, 3, h * PATCH, w * PATCH)


def _nearest(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536):
    """Index of (and squared distance to) the nearest codebook row for each row of x (N,D)."""
    c2 = (codebook * codebook).sum(1)  # (K,)
    idx, dist = [], []
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        d = (xs * xs).sum(1, keepdim=True) - 2 * xs @ codebook.T + c2  # (n, K)
        m, i = d.min(1)
        idx.append(i)
        dist.append(m.clamp_min(0))
    if not idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(idx), torch.cat(dist)


# ----------------------------------------------------------------------------- the tokenizer

class PatchVQ(torch.nn.Module):
    """Frozen k-means patch tokenizer. `codebook`: (K, 48) float32 buffer, rows are 4x4x3 patches."""

    patch = PATCH

    def __init__(self, codebook: torch.Tensor, meta: dict | None = None):
        super().__init__()
        if codebook.dim() != 2 or codebook.shape[1] != 3 * PATCH * PATCH:
            raise ValueError(f"codebook must be (K, {3 * PATCH * PATCH}), got {tuple(codebook.shape)}")
        self.register_buffer("codebook", codebook.detach().float().contiguous())
        self.meta = dict(meta or {})
        self.eval()

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float in [0,1], H and W multiples of 4 -> LongTensor codes (B,H/4,W/4)."""
        images = check_images(images)
        p = to_patches(images.to(self.codebook))  # (B,h,w,48)
        idx, _ = _nearest(p.reshape(-1, p.shape[-1]), self.codebook)
        return idx.reshape(p.shape[:3])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor codes (B,h,w) in [0,K) -> images (B,3,4h,4w) in [0,1]."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a tensor of shape (B,h,w), got {got}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), "
                             f"got range [{int(codes.min())}, {int(codes.max())}]")
        patches = self.codebook[codes.long()]  # (B,h,w,48)
        return from_patches(patches).clamp(0, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a single metadata key: safetensors writes several keys in an arbitrary order (unstable sha256)
        meta = {"patch": PATCH, "codebook_size": self.codebook_size, "fit": self.meta}
        save_file({"codebook": self.codebook.cpu().contiguous()}, str(path),
                  metadata={"reca_nb.encoders.vq": json.dumps(meta, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path) -> "PatchVQ":
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("reca_nb.encoders.vq", "{}"))
        if meta.get("patch", PATCH) != PATCH:
            raise ValueError(f"{path}: patch size {meta['patch']} != {PATCH}")
        return cls(load_file(str(path))["codebook"], meta.get("fit", {}))

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, patch={PATCH}"


# ----------------------------------------------------------------------------- fitting

def fit_images(n_images: int = 1200, seed: int = 0) -> dict:
    """The fitting set: shape-world renders at 16/32/64 (both kinds), plus the 2x-downsampled and
    blurred versions of 32/64 renders that low-resolution understanding inputs produce."""
    from reca_nb.world.shapes import ShapeWorld
    sets = {}
    for s in FIT_SIZES:
        half = n_images // 2
        sets[f"{s}"] = torch.cat([ShapeWorld(half, seed=seed * 1000 + s, size=s, kind="random").images(),
                                  ShapeWorld(n_images - half, seed=seed * 1000 + s + 1, size=s,
                                             kind="prompted").images()])
    sets["32to16"] = F.avg_pool2d(sets["32"][: n_images // 2], 2)
    sets["64to32"] = F.avg_pool2d(sets["64"][: n_images // 4], 2)
    sets["32blur"] = gaussian_blur(sets["32"][n_images // 2:][: n_images // 4], sigma=1.0)
    return sets


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding), the blurred-understanding-input variant."""
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(images)
    C = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def kmeans(x: torch.Tensor, K: int, w: torch.Tensor | None = None, iters: int = 20, seed: int = 0,
           progress: bool = True, init: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted k-means (k-means++ init unless `init` (K,D) is given, then Lloyd iterations) on rows of
    x (N,D); deterministic given seed. An empty cluster is re-seeded at the point with the largest
    weighted error."""
    N, D = x.shape
    if N < K:
        raise ValueError(f"need at least K={K} distinct points, got {N}")
    w = torch.ones(N) if w is None else w.float()
    if init is not None:
        return _lloyd(x, w, init.clone().float(), iters, progress)
    g = torch.Generator().manual_seed(seed)
    # k-means++: each new centre is drawn with probability ~ w * D^2
    u = torch.rand(K, generator=g, dtype=torch.float64)  # one uniform draw per centre

    def draw(k, p):  # inverse-CDF sample from weights p
        cdf = p.double().cumsum(0)
        return min(int(torch.searchsorted(cdf, u[k] * cdf[-1])), N - 1)

    x2 = (x * x).sum(1)  # (N,)
    sqdist = lambda c: (x2 - 2 * (x @ c) + c @ c).clamp_min(0)  # noqa: E731
    C = torch.empty(K, D)
    C[0] = x[draw(0, w)]
    d2 = sqdist(C[0])
    for k in range(1, K):
        C[k] = x[draw(k, w * d2)]
        d2 = torch.minimum(d2, sqdist(C[k]))
    return _lloyd(x, w, C, iters, progress)


def _lloyd(x, w, C, iters, progress):
    K, D = C.shape
    for _ in tqdm(range(iters), desc="k-means", disable=not progress):
        idx, dist = _nearest(x, C)
        mass = torch.zeros(K).index_add_(0, idx, w)  # (K,)
        sums = torch.zeros(K, D).index_add_(0, idx, x * w[:, None])
        empty = mass == 0
        C = torch.where(empty[:, None], C, sums / mass.clamp_min(1e-12)[:, None])
        if empty.any():
            far = torch.argsort(w * dist, descending=True)[: int(empty.sum())]
            C[empty] = x[far]
    return C


# which output resolution each fitting set stands for (see fit_images)
FAMILY = {"16": 16, "32to16": 16, "32": 32, "64to32": 32, "32blur": 32, "64": 64}


def fit_vq(n_images: int = 1200, seed: int = 0, K: int = 256, iters: int = 20,
           progress: bool = True) -> PatchVQ:
    """Fit the codebook on shape-world patches from every resolution.

    Each resolution (16, 32, 64) gets the same total weight, although a 64x64 image has 16x the patches of a
    16x16 one: unweighted, the codebook spends its codes on 64x64 edges and 16x16 squares decode as circles
    (held-out GenEval-mini on 16x16 reconstructions 0.46 unweighted vs 0.73 balanced; 32x32 stays at 1.00).
    Exact duplicate patches (8-bit renders: mostly background) are merged into weights."""
    t0 = time.time()
    sets = fit_images(n_images, seed)
    patches = {k: to_patches(v).reshape(-1, 3 * PATCH * PATCH) for k, v in sets.items()}  # (N_k, 48)
    per_res = {r: sum(len(p) for k, p in patches.items() if FAMILY[k] == r) for r in FIT_SIZES}
    w = torch.cat([torch.full((len(p),), 1.0 / per_res[FAMILY[k]]) for k, p in patches.items()])
    q = torch.round(torch.cat(list(patches.values())) * 255).to(torch.int16)
    uniq, inverse = torch.unique(q, dim=0, return_inverse=True)
    x = uniq.float() / 255
    weights = torch.zeros(len(x), dtype=torch.float64).index_add_(0, inverse, w.double()).float()
    C = kmeans(x, K, weights * len(q), iters=iters, seed=seed, progress=progress)
    # order codes by brightness so that code 0 is the background (cosmetic; deterministic)
    C = C[torch.argsort(C.sum(1), stable=True)]
    meta = {"n_images": n_images, "seed": seed, "K": K, "iters": iters, "sizes": list(sets),
            "weighting": "equal total weight per resolution 16/32/64",
            "n_patches": len(q), "n_unique": len(x)}  # saved: no timings in it
    vq = PatchVQ(C, meta)
    vq.fit_seconds = round(time.time() - t0, 1)
    return vq


@functools.lru_cache(maxsize=None)
def load_vq(path: str | None = None) -> PatchVQ:
    """The shipped tokenizer (data/tokenizers/vq.safetensors), loaded once per process.

    If it is missing (e.g. a partial checkout), it is fitted (~seconds) and cached in cache_dir()."""
    path = Path(path) if path is not None else VQ_FILE
    if path.exists():
        return PatchVQ.load(path)
    fallback = cache_dir() / "vq.safetensors"
    if fallback.exists():
        return PatchVQ.load(fallback)
    print(f"reca_nb.encoders.vq: {path} not found; fitting a fresh codebook into {fallback} "
          "(regenerate the shipped one with `python -m reca_nb.build.fit_tokenizers --only=vq`)")
    vq = fit_vq()
    vq.save(fallback)
    return vq
