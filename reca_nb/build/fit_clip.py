"""Train the shared semantic encoder (reca_nb.encoders.clip) contrastively on shape world, then measure it.

    python -m reca_nb.build.fit_clip                 # writes data/encoders/clip.safetensors + clip.json
    python -m reca_nb.build.fit_clip --steps=200 --out=/tmp/clip.safetensors --hidden=48  # a quick variant
    python -m reca_nb.build.fit_clip --help          # every key (the fields of Options and FitConfig)

CLIP's objective (Radford et al. 2021): a symmetric InfoNCE between image and text embeddings with a learnable
temperature. Shape-world captions are not unique, and a GenEval prompt ("a red circle") is true of many
images, so a plain diagonal target would call true pairs negatives. We know the ground truth, so the target
is *multi-positive*: image j and text t are a pair when the description is j's, or the prompt's Spec is
satisfied by j's objects; the loss is cross-entropy against the uniform distribution over the positives.
Each step uses one understanding resolution from RESOLUTIONS (anti-aliased downsamples of the 32 px render,
sometimes blurred by a down-up resize), so the features serve every bottleneck the RecA notebooks try.
(An auxiliary per-slot colour+shape head on the penultimate tokens was tried and dropped: it lowered prompt
retrieval and the global slot probe, and the per-cell probe is saturated even for raw pixels.)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reca_nb.config import apply_overrides, cli, describe, run_main
from reca_nb.encoders.clip import (CLIP_FILE, N_SLOT_CLASSES, ShapeCLIP, build_clip_model, linear_probe,
                                   resize, slot_grid, slot_labels)
from reca_nb.world import shapes
from reca_nb.world.text import tokenizer

RESOLUTIONS = (12, 16, 20, 24, 28, 32)
EVAL_SEED, PROMPT_EVAL_SEED = 90_001, 90_002  # held-out scenes (training uses seed, seed + 1)


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 64  # width of both towers (the MLPs are 4x)
    vision_layers: int = 4  # ViT blocks over 4x4-pixel patches
    text_layers: int = 2  # text transformer blocks
    heads: int = 4  # attention heads in both towers
    n_random: int = 16_000  # training images of the random kind (scene descriptions)
    n_prompted: int = 16_000  # training images of the prompted kind (GenEval-style prompts)
    batch: int = 256  # images per step; the texts are their descriptions and prompts, deduplicated
    steps: int = 800  # optimizer steps
    lr: float = 2e-3  # peak AdamW learning rate (linear warm-up, cosine decay)
    weight_decay: float = 0.05  # on >=2-D weights only
    warmup: int = 60  # linear warm-up steps
    blur_p: float = 0.15  # probability that a batch is blurred by a down-up resize
    seed: int = 0  # initialisation, training images (seed, seed + 1) and batch order


@dataclass(frozen=True)
class Options:
    """The command line's own keys; every other key is a FitConfig field."""
    out: str = str(CLIP_FILE)  # the weights; config, vocabulary and metrics go to the .json beside them
    threads: int = 0  # torch threads (0: torch's default)
    baseline: bool = False  # also score a random-init encoder and raw pixels (stored in the .json)
    device: str = "cpu"  # training device


# ----------------------------------------------------------------------------- data

def _slot_arrays(scenes):
    """(N, 4) shape index and colour index per slot, -1 where empty."""
    shape_of = np.full((len(scenes), 4), -1)
    color_of = np.full((len(scenes), 4), -1)
    for i, sc in enumerate(scenes):
        for o in sc.objects:
            shape_of[i, o.slot] = shapes.SHAPES.index(o.shape)
            color_of[i, o.slot] = shapes.COLOR_NAMES.index(o.color)
    return shape_of, color_of


def spec_mask(spec: shapes.Spec, shape_of: np.ndarray, color_of: np.ndarray) -> np.ndarray:
    """Vectorised `spec.satisfied_by` over many scenes given their slot arrays -> (N,) bool."""
    def named(i):  # (N, 4): slot holds the i-th named object
        ok = shape_of == shapes.SHAPES.index(spec.shapes[i])
        return ok & (color_of == shapes.COLOR_NAMES.index(spec.colors[i])) if spec.colors else ok

    if spec.category == "counting":
        return named(0).sum(1) == spec.count
    if spec.category in ("single_object", "colors"):
        return named(0).any(1)
    a, b = named(0), named(1)
    if spec.category != "position":
        return a.any(1) & b.any(1)
    rel = np.array([[shapes._relation_holds(shapes.Obj("", "", k), shapes.Obj("", "", m), spec.relation)
                     for m in range(4)] for k in range(4)])  # (4, 4): slot k <relation> slot m
    return (a[:, :, None] & b[:, None, :] & rel).any((1, 2))


class PairPool:
    """Rendered images (uint8), the text universe (unique descriptions, then prompts) and a match table."""

    def __init__(self, worlds, progress=True):
        scenes, images = [], []
        for w in worlds:
            for i in tqdm(range(len(w)), desc=f"render {w.kind} seed {w.seed}", disable=not progress):
                sc = w.scene(i)
                scenes.append(sc)
                images.append(np.asarray(shapes.render(sc, w.size, jitter_seed=[w.seed, i, 1])))
        self.scenes = scenes
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S) u8
        descs = [sc.description for sc in scenes]
        specs = {}
        for sc in scenes:
            if sc.prompt:
                specs.setdefault(sc.prompt, sc.spec)
        self.texts = sorted(set(descs)) + sorted(specs)
        index = {t: k for k, t in enumerate(self.texts)}
        self.n_desc = len(set(descs))
        self.desc_id = torch.tensor([index[d] for d in descs])  # (N,)
        self.prompt_id = torch.tensor([index[sc.prompt] if sc.prompt else -1 for sc in scenes])  # (N,)
        shape_of, color_of = _slot_arrays(scenes)
        self.prompt_match = torch.from_numpy(  # (n_prompts, N)
            np.stack([spec_mask(specs[p], shape_of, color_of) for p in self.texts[self.n_desc:]]))

    def __len__(self):
        return len(self.scenes)

    def match(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """(B,) image ids x (T,) text ids -> (B, T) bool: the text is true of the image."""
        is_desc = txt < self.n_desc
        m = self.desc_id[img][:, None] == txt[None, :]
        p = self.prompt_match[:, img][(txt - self.n_desc).clamp(min=0)].T  # (B, T)
        return torch.where(is_desc[None, :], m, p)


def multi_positive_clip_loss(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: logits, pos (B_img, T); every row and column has a positive."""
    pos = pos.float()
    i2t = F.cross_entropy(logits, pos / pos.sum(1, keepdim=True))
    t2i = F.cross_entropy(logits.T, (pos / pos.sum(0, keepdim=True)).T)
    return (i2t + t2i) / 2


# ----------------------------------------------------------------------------- evaluation

def held_out(n: int = 1024, seed: int = EVAL_SEED, kind: str = "random"):
    """Held-out scenes and their 32 px renders (seeds no training run uses)."""
    w = shapes.ShapeWorld(n, seed=seed, kind=kind)
    return [w.scene(i) for i in range(n)], w.images()


@torch.no_grad()
def prompt_retrieval_accuracy(clip: ShapeCLIP, images, scenes, candidates: int = 64) -> float:
    """Text -> image: each GenEval prompt picks one of `candidates` images; correct when the picked image's
    objects satisfy the prompt's Spec (a CLIP-score-style T2I judge)."""
    hits = 0
    for s in range(0, len(scenes), candidates):
        group = scenes[s:s + candidates]
        sim = clip.text_embeds([sc.prompt for sc in group]) @ clip.image_embeds(images[s:s + candidates]).T
        hits += sum(sc.spec.satisfied_by(group[j].objects) for sc, j in zip(group, sim.argmax(1).tolist()))
    return hits / len(scenes)


def pixel_tokens(images: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """The no-encoder control: raw 4x4-pixel patches as 'tokens', (B, 3, h, h) -> (B, N, 3 * patch**2)."""
    return F.unfold(images, patch, stride=patch).transpose(1, 2)


@torch.no_grad()
def slot_probe_accuracy(tokens_fn, size: int, train, test, pool: str = "cell") -> float:
    """Linear probe of per-slot colour+shape (19 classes incl. empty) from patch tokens; fit on `train` =
    (scenes, images32), scored on `test`; `tokens_fn(images at size) -> (B, N, D)`.

    pool="cell":   one probe reads the mean token of each 2x2-grid cell (easy: raw pixels pass it too);
    pool="global": one probe per slot reads the mean of *all* tokens, so it must find *what is where* in
                   a position-free summary; raw pixel patches cannot (their mean forgets positions)."""
    def feats(scenes, images):
        toks = torch.cat([tokens_fn(resize(x, size)).cpu() for x in images.split(256)])  # (B, N, D)
        y = slot_labels(scenes)  # (B, 4)
        if pool == "cell":
            return [(slot_grid(toks).flatten(0, 1), y.flatten())]  # (B*4, D), (B*4,)
        return [(toks.mean(1), y[:, k]) for k in range(4)]

    accs = [linear_probe(*a, *b, N_SLOT_CLASSES) for a, b in zip(feats(*train), feats(*test))]
    return sum(accs) / len(accs)


def evaluate(clip: ShapeCLIP, sizes=RESOLUTIONS, probe_sizes=(16, 32), n: int = 1024,
             n_probe_train: int = 3000, pixels: bool = False) -> dict:
    """Held-out metrics; `pixels=True` adds the raw-pixel-patch probes (the control for the slot probes)."""
    scenes, images = held_out(n)
    pscenes, pimages = held_out(n, PROMPT_EVAL_SEED, "prompted")
    probe_train = held_out(n_probe_train, seed=EVAL_SEED + 10)
    out = {}
    for s in sizes:
        out[f"retrieval@{s}"] = clip.retrieval_accuracy(resize(images, s), [sc.description for sc in scenes])
        out[f"prompt_retrieval@{s}"] = prompt_retrieval_accuracy(clip, resize(pimages, s), pscenes)
    for s in probe_sizes:
        for pool in ("cell", "global"):
            test = (scenes, images)
            out[f"{pool}_probe@{s}"] = slot_probe_accuracy(clip.image_tokens, s, probe_train, test, pool)
            if pixels:
                out[f"pixel_{pool}_probe@{s}"] = slot_probe_accuracy(pixel_tokens, s, probe_train, test, pool)
    return {k: round(v, 4) for k, v in out.items()}


# ----------------------------------------------------------------------------- training

def fit(cfg: FitConfig, progress: bool = True, device: str = "cpu") -> tuple:
    """-> (ShapeCLIP, history list of dicts, train seconds)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool = PairPool([shapes.ShapeWorld(cfg.n_random, seed=cfg.seed, kind="random"),
                     shapes.ShapeWorld(cfg.n_prompted, seed=cfg.seed + 1, kind="prompted")], progress)
    words = tokenizer().itos
    model = build_clip_model(words, cfg.hidden, cfg.vision_layers, cfg.text_layers, cfg.heads)
    clip = ShapeCLIP(model, words)  # for its tokenizer
    model.train().requires_grad_(True)
    text_ids, text_mask = clip.tokenize(pool.texts)  # (T_all, L): every text of the pool, tokenised once
    model.to(device)

    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    def lr_at(s):  # linear warm-up, cosine decay
        return cfg.lr * min(1, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))

    history, t0 = [], time.time()
    bar = tqdm(range(cfg.steps), desc="fit_clip", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img = torch.from_numpy(rng.choice(len(pool), cfg.batch, replace=False))  # (B,)
        res = int(rng.choice(RESOLUTIONS))
        x = pool.images[img].to(device).float() / 255  # (B, 3, 32, 32)
        if rng.random() < cfg.blur_p:
            x = resize(x, int(rng.choice([r for r in (8,) + RESOLUTIONS if r < res] or [8])))
        x = (resize(x, res) - 0.5) / 0.5
        # texts: every image's description, and the prompt of each prompted image, deduplicated
        txt = torch.unique(torch.cat([pool.desc_id[img], pool.prompt_id[img][pool.prompt_id[img] >= 0]]))
        ids, mask = text_ids[txt].to(device), text_mask[txt].to(device)
        L = int(mask.sum(1).max())
        out = model(input_ids=ids[:, :L], attention_mask=mask[:, :L], pixel_values=x,
                    interpolate_pos_encoding=True)
        loss = multi_positive_clip_loss(out.logits_per_image, pool.match(img, txt).to(device))  # (B, T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's temperature cap
        row = {"step": step, "lr": lr_at(step), "res": res, "loss": loss.item(),
               "temperature": 1 / model.logit_scale.exp().item()}
        history.append(row)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{row['loss']:.3f}", res=res, T=f"{row['temperature']:.3f}")
    seconds = time.time() - t0
    return ShapeCLIP(model, clip.words), history, seconds


USAGE = """usage: python -m reca_nb.build.fit_clip [--KEY=VALUE ...]
  trains the shared semantic encoder into data/encoders/clip.safetensors; the keys, with their defaults:"""


def main(argv=None):
    own, overrides = cli(argv, f"{USAGE}\n{describe(Options(), FitConfig())}",
                         cli_keys=[f.name for f in fields(Options)],
                         valid=[f.name for f in fields(FitConfig)])
    opts, cfg = apply_overrides(Options(), own), apply_overrides(FitConfig(), overrides)
    t0 = time.time()
    clip, history, seconds = fit(cfg, device=opts.device)
    metrics = evaluate(clip)
    print(f"trained {sum(p.numel() for p in clip.model.parameters())} params in {seconds:.0f} s "
          f"({time.time() - t0 - seconds:.0f} s data + eval); final loss {history[-1]['loss']:.3f}")
    print("held-out:", metrics)
    extra = {"fit_config": asdict(cfg), "metrics": metrics, "train_seconds": round(seconds, 1),
             "torch_threads": torch.get_num_threads()}
    if opts.baseline:
        torch.manual_seed(cfg.seed)
        rand = build_clip_model(clip.words, cfg.hidden, cfg.vision_layers, cfg.text_layers, cfg.heads)
        rand = ShapeCLIP(rand, clip.words)
        extra["random_init_metrics"] = evaluate(rand.to(opts.device), pixels=True)
        print("random init:", extra["random_init_metrics"])
    clip.to("cpu").save(opts.out, extra)
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    run_main(main)
