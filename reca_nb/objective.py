"""What one training step computes: the batch of every active loss term, and the terms in one forward.

RecA's batch is (und images at the bottleneck, templates, target images): the image's caption is never read.
I2T's is (und images, captions); T2I's is (images, prompts[, und views of a second render]). `Shard` gives one
process its share of each global batch under `accelerate launch`.
"""
from __future__ import annotations

import torch
from torch import nn

from reca_nb.recipe import Recipe, mini_und_res
from reca_nb.world.data import Batches


class Objective(nn.Module):
    """Wraps the UMM so one forward computes every active loss term (DDP needs one forward per backward)."""

    def __init__(self, umm):
        super().__init__()
        self.umm = umm

    def forward(self, batch: dict) -> dict:
        out = {}
        if "reca" in batch:
            out["reca"] = self.umm.reca_loss(*batch["reca"])  # (und images, templates, target images)
        if "i2t" in batch:
            out["i2t"] = self.umm.i2t_loss(*batch["i2t"])  # (und images, captions)
        if "t2i" in batch:
            out["t2i"] = self.t2i_loss(*batch["t2i"])  # (images, prompts[, views, has_view])
        return out

    def t2i_loss(self, images, prompts, views=None, has_view=None):
        """Generation loss of (image, prompt) pairs; rows with `has_view` also read the und tokens of their
        second view (`views`, already at und resolution), through the same route RecA uses. The batch mean
        weights every sample equally, whichever group it is in."""
        if has_view is None:
            return self.umm.generation_loss(images, prompts)
        parts, m = [], has_view.bool()
        for rows, cond in ((~m, None), (m, views)):
            k = int(rows.sum())
            if k:
                sub = [t for t, r in zip(prompts, rows.tolist()) if r]
                loss = (self.umm.generation_loss(images[rows], sub) if cond is None
                        else self.umm.reca_loss(cond, sub, images[rows]))
                parts.append(loss * k)
        return sum(parts) / len(prompts)


def make_batch(data: Batches, recipe: Recipe, terms, umm, step: int) -> dict:
    batch = {}
    if "reca" in terms:  # the caption of the image is never read: the text is a random template
        target, templates = data.reca(recipe.batch)
        batch["reca"] = (recipe.und_transform(target, umm.und_size), templates, target)
    if "i2t" in terms:
        images, captions = data.i2t(recipe.i2t_batch)
        res = recipe.i2t_und_res[step % len(recipe.i2t_und_res)] if recipe.i2t_und_res else None
        batch["i2t"] = (recipe.und_transform(images, umm.und_size, res=res), captions)
    if "t2i" in terms:
        if recipe.t2i_view_p > 0:  # the view goes in at the RecA bottleneck, where RecA will read it
            images, prompts, views, has_view = data.t2i_views(recipe.batch, recipe.t2i_view_p, recipe.view_jitter)
            res = recipe.und_res or mini_und_res(recipe.arch, umm.image_size)
            views = recipe.und_transform(views, umm.und_size, res=res) if len(views) else views
            batch["t2i"] = (images, prompts, views, has_view)  # has_view last: one entry per sample
        else:
            batch["t2i"] = data.t2i(recipe.batch)
    return batch


class Shard:
    """One process's share of every batch under `accelerate launch`: all processes draw the same global batch
    (B x processes, same generator and seed) and each keeps its own contiguous slice of B samples, so N
    processes with batch B train on exactly the samples one process with batch N*B would."""

    def __init__(self, data, rank: int, world: int):
        self.data, self.rank, self.world = data, rank, world

    def _mine(self, out: tuple, B: int) -> tuple:
        lo = self.rank * B
        return tuple(x[lo:lo + B] for x in out)

    def reca(self, B: int):
        return self._mine(self.data.reca(B * self.world), B)

    def i2t(self, B: int):
        return self._mine(self.data.i2t(B * self.world), B)

    def t2i(self, B: int):
        return self._mine(self.data.t2i(B * self.world), B)

    def t2i_views(self, B: int, p: float, jitter: float = 2.0):
        images, prompts, views, has_view = self.data.t2i_views(B * self.world, p, jitter)
        lo = self.rank * B
        first = int(has_view[:lo].sum())  # views hold only the rows that have one, in row order
        k = int(has_view[lo:lo + B].sum())
        return images[lo:lo + B], prompts[lo:lo + B], views[first:first + k], has_view[lo:lo + B]

    def state(self) -> torch.Tensor:
        return self.data.state()

    def set_state(self, state: torch.Tensor):
        self.data.set_state(state)


def make_data(recipe: Recipe, umm, device, rank: int = 0, processes: int = 1, data=None):
    """The batch sampler: shape-world pools, or the caller's `data` hook; one share of it per process."""
    # every process draws the same global batch and keeps its own share (Shard): the run depends on the
    # global batch only, not on how many processes split it, and one checkpointed data state fits all
    seed = recipe.seed
    data = (Batches(umm.image_size, recipe.n_images, recipe.n_t2i_pairs, recipe.data_seed, seed=seed,
                    prompts=recipe.prompts, device=device, i2t_fact_p=recipe.i2t_fact_p,
                    t2i_sparse_p=recipe.t2i_sparse_p) if data is None else
            data(umm.image_size, seed=seed, prompts=recipe.prompts, device=device))
    if (recipe.i2t_fact_p or recipe.t2i_sparse_p or recipe.t2i_view_p) and not isinstance(data, Batches):
        raise ValueError("the world options (i2t_fact_p, t2i_sparse_p, t2i_view_p) need the shape-world "
                         "pools; leave them at 0 when training on your own data")
    if processes > 1:
        data = Shard(data, rank, processes)
    return data
