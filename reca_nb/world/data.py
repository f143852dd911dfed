"""In-memory shape-world pools and the deterministic batch sampler of the training loop.

Three sources, as in the paper's RecA runs:
  * unlabelled images (RecA): half `ShapeWorld(kind="random")` scenes, half GenEval-style prompted scenes;
    RecA never reads their text (the paper's captions are ignored too, Sec. 3);
  * I2T pairs (practice 4): the same large pool with its canonical descriptions (LLaVA data in the paper);
  * T2I pairs: a separate SMALL captioned pool (`n_t2i_pairs`), so the base model keeps T2I headroom.
Pools are uint8 tensors built once per (kind, seed, n, size): cached in the process and, for big pools, as
safetensors under cache_dir()/pools. Pool seeds live far away from the held-out eval seeds (10_000, 20_000).

World options (Recipe.i2t_fact_p, t2i_sparse_p, t2i_view_p; all off by default) change only the texts a
batch carries and add a second view to T2I samples; the pools' images are the same.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from reca_nb.paths import cache_dir
from reca_nb.world.prompts import load_templates
from reca_nb.world.shapes import ShapeWorld, fact_sentence, parse_description, render, sparse_prompt, to_tensor

SEED_BASE = 1_000_000  # pool seeds = SEED_BASE + 10 * data_seed + k; eval uses 10_000 / 20_000
DISK_MIN = 1000  # pools at least this big are also cached on disk
_POOLS: dict = {}


@dataclass
class Pool:
    images: torch.Tensor  # (N, 3, S, S) uint8
    texts: list  # one string per image: description (image pool) or prompt (t2i pool)

    def __len__(self):
        return len(self.texts)


def _render(worlds, field: str) -> Pool:
    imgs, texts = [], []
    for w in worlds:
        for i in range(len(w)):
            item = w[i]
            imgs.append((item["image"] * 255).round().to(torch.uint8))
            texts.append(item[field])
    return Pool(torch.stack(imgs), texts)


def _cached(kind: str, n: int, seed: int, size: int, make, disk: bool | None) -> Pool:
    key = (kind, n, seed, size)
    if key in _POOLS:
        return _POOLS[key]
    disk = n >= DISK_MIN if disk is None else disk
    path = cache_dir() / "pools" / f"{kind}-s{seed}-n{n}-{size}px.safetensors"
    pool = None
    if disk and path.exists():
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                pool = Pool(f.get_tensor("images"), json.loads(f.metadata()["texts"]))
        except Exception:  # a truncated cache file is rebuilt, never trusted
            pool = None
    if pool is None:
        pool = make()
        if disk:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel jobs never share a temp file
            save_file({"images": pool.images.contiguous()}, str(tmp),
                      metadata={"texts": json.dumps(pool.texts)})
            tmp.replace(path)
    _POOLS[key] = pool
    return pool


def image_pool(n: int, data_seed: int = 0, size: int = 32, disk: bool | None = None) -> Pool:
    """n unlabelled images (half random scenes, half prompted) with their I2T descriptions."""
    seed = SEED_BASE + 10 * data_seed
    make = lambda: _render([ShapeWorld(n - n // 2, seed + 1, size, kind="random"),  # noqa: E731
                            ShapeWorld(n // 2, seed + 2, size, kind="prompted")] if n > 1 else
                           [ShapeWorld(n, seed + 1, size, kind="random")], "description")
    return _cached("images", n, seed, size, make, disk)


def t2i_pool(n: int, data_seed: int = 0, size: int = 32, disk: bool | None = None) -> Pool:
    """n captioned (GenEval-style prompt, image) pairs."""
    seed = SEED_BASE + 10 * data_seed + 3
    make = lambda: _render([ShapeWorld(n, seed, size, kind="prompted")], "prompt")  # noqa: E731
    return _cached("t2i", n, seed, size, make, disk)


def t2i_world(n: int, data_seed: int = 0) -> ShapeWorld:
    """The scenes behind `t2i_pool(n, data_seed)` (same seed and order), for its world options."""
    return ShapeWorld(n, SEED_BASE + 10 * data_seed + 3, kind="prompted")


def fact_captions(descriptions: list, p: float, data_seed: int = 0) -> list:
    """I2T captions with a true fact sentence (shapes.fact_sentence) after the description in a share `p`
    of them. Fixed per image, as a dataset's captions are: caption i depends only on (data_seed, i)."""
    out = []
    for i, desc in enumerate(descriptions):
        rng = np.random.default_rng([SEED_BASE + 10 * data_seed + 4, i])
        objs = parse_description(desc)
        out.append(f"{desc} . {fact_sentence(objs, rng)}" if objs and rng.random() < p else desc)
    return out


def sparse_prompts(n: int, p: float, data_seed: int = 0) -> list:
    """The prompts of `t2i_pool(n, data_seed)`, each made alt-text-like with probability `p`
    (shapes.sparse_prompt); fixed per image, like the pool's own prompts."""
    world = t2i_world(n, data_seed)
    return [sparse_prompt(world.scene(i).spec, np.random.default_rng([SEED_BASE + 10 * data_seed + 5, i]), p)
            for i in range(n)]


class Batches:
    """Draws every training batch from one torch.Generator, so a run is a pure function of its seed and
    `state()` / `set_state()` make resumed runs bit-identical. Pools are built on first use only."""

    def __init__(self, size: int, n_images: int, n_t2i_pairs: int, data_seed: int = 0, seed: int = 0,
                 prompts: str = "diverse", device="cpu", i2t_fact_p: float = 0.0, t2i_sparse_p: float = 0.0):
        self.size, self.n_images, self.n_t2i, self.data_seed = size, n_images, n_t2i_pairs, data_seed
        self.templates = load_templates(prompts)
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        self.i2t_fact_p, self.t2i_sparse_p = i2t_fact_p, t2i_sparse_p
        self._texts = {}  # world-option texts, built on first use

    def _draw(self, pool: Pool, B: int, texts: list | None = None, with_idx: bool = False):
        idx = torch.randint(len(pool), (B,), generator=self.gen)
        images = pool.images[idx].to(self.device, non_blocking=True).float() / 255  # (B, 3, S, S)
        texts = pool.texts if texts is None else texts
        out = images, [texts[i] for i in idx.tolist()]
        return (*out, idx) if with_idx else out

    def _i2t_texts(self, pool: Pool) -> list | None:
        if not self.i2t_fact_p:
            return None
        if "i2t" not in self._texts:
            self._texts["i2t"] = fact_captions(pool.texts, self.i2t_fact_p, self.data_seed)
        return self._texts["i2t"]

    def _t2i_texts(self) -> list | None:
        if not self.t2i_sparse_p:
            return None
        if "t2i" not in self._texts:
            self._texts["t2i"] = sparse_prompts(self.n_t2i, self.t2i_sparse_p, self.data_seed)
        return self._texts["t2i"]

    def reca(self, B: int):
        """(target images, templates): the text is a random template, never the image's caption."""
        images, _ = self._draw(image_pool(self.n_images, self.data_seed, self.size), B)
        t = torch.randint(len(self.templates), (B,), generator=self.gen).tolist()
        return images, [self.templates[i] for i in t]

    def i2t(self, B: int):
        """(images, descriptions) from the large pool (+ a fact sentence in some, when i2t_fact_p > 0)."""
        pool = image_pool(self.n_images, self.data_seed, self.size)
        return self._draw(pool, B, self._i2t_texts(pool))

    def t2i(self, B: int):
        """(images, prompts) from the small captioned pool (alt-text-like prompts when t2i_sparse_p > 0)."""
        return self._draw(t2i_pool(self.n_t2i, self.data_seed, self.size), B, self._t2i_texts())

    def t2i_views(self, B: int, p: float, jitter: float = 2.0):
        """A T2I batch in which a share `p` of the samples also get a second view: the same scene rendered
        again with another jitter draw at `jitter` times the usual amplitude, so the view shows the same
        objects in the same cells but never the target's pixels (an edit pair / interleaved image of the
        scene, not a copy). Returns (images, prompts, views (k, 3, S, S) for the rows with one, has_view (B,))."""
        images, prompts, idx = self._draw(t2i_pool(self.n_t2i, self.data_seed, self.size), B,
                                          self._t2i_texts(), with_idx=True)
        has_view = torch.rand(B, generator=self.gen) < p
        seeds = torch.randint(2**31 - 1, (B,), generator=self.gen)
        world = t2i_world(self.n_t2i, self.data_seed)
        views = [to_tensor(render(world.scene(i), self.size, jitter_seed=[int(s), 2], jitter_scale=jitter))
                 for i, s, v in zip(idx.tolist(), seeds.tolist(), has_view.tolist()) if v]
        views = (torch.stack(views) if views else images.new_zeros((0, *images.shape[1:]))).to(self.device)
        return images, prompts, views, has_view.to(self.device)

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor):
        self.gen.set_state(state)
