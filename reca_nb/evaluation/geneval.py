"""GenEval-mini: an offline, object-focused T2I score for the shape world (RecA paper §4, GenEval benchmark).

GenEval (Ghosh et al., 2023) scores a text-to-image model without humans: it generates images for templated
prompts in six categories (single object, two objects, counting, colours, position, colour attribution),
runs an *object detector* on each image, and checks the detections against the prompt with one rule per
category. The overall score is the mean of the six per-category accuracies.

GenEval-mini keeps that logic and swaps the parts that need the internet:
  * prompts: `geneval_prompts` draws held-out shape-world prompts (`shapes.sample_scene`, one spec each)
  * detector: a small CNN that reads an image at 32x32 and classifies each of the 4 cells of the 2x2 grid
    as empty or one of 6 colours x 3 shapes (19 classes); the per-cell predictions form the scene
  * rules: `Spec.satisfied_by` (shapes.py), the same per-category checks GenEval applies to detections

The detector is trained by `python -m reca_nb.build.fit_scorer` on shape-world renders with generator-like
artefacts (blur, down-up sampling, noise, colour jitter, patch averaging, shifts) and tokenizer
reconstructions, and ships in data/scorer/scorer.safetensors.

I2T is scored against the canonical description (`score_i2t`): exact scene match, per-cell accuracy and
colour / shape accuracy over the ground-truth objects.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reca_nb.world import shapes
from reca_nb.world.images import as_image_batch
from reca_nb.paths import DATA_DIR
from reca_nb.world.shapes import CATEGORIES, CATEGORY_TITLES, COLOR_NAMES, SHAPES, Obj, Scene, Spec

SCORER_FILE = DATA_DIR / "scorer" / "scorer.safetensors"
N_SLOTS = 4
N_CLASSES = 1 + len(COLOR_NAMES) * len(SHAPES)  # 0 = empty, then colour-major (colour, shape) pairs


def class_of(obj: Obj | None) -> int:
    """Cell class id: 0 for an empty cell, else 1 + colour_index * 3 + shape_index."""
    if obj is None:
        return 0
    return 1 + COLOR_NAMES.index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)


def obj_of(cls: int, slot: int) -> Obj | None:
    if cls == 0:
        return None
    c, s = divmod(int(cls) - 1, len(SHAPES))
    return Obj(SHAPES[s], COLOR_NAMES[c], slot)


def slot_labels(objs) -> list:
    """Objects -> the 4 cell classes (the detector's targets)."""
    labels = [0] * N_SLOTS
    for o in objs:
        labels[o.slot] = class_of(o)
    return labels


# ----------------------------------------------------------------------------- the detector

@dataclass
class ScorerConfig:
    size: int = 32  # input resolution; other sizes are area-resized to this
    widths: tuple = (16, 32, 48)  # conv channels at 32x32, 16x16 and 8x8
    hidden: int = 64  # per-cell MLP width


class SlotScorer(nn.Module):
    """Fully convolutional trunk, then one shared classifier per 2x2-grid cell (a 4x4 patch of 8x8 features).

    Sharing the cell classifier makes the detector translation-equivariant across cells: a red circle is
    recognised the same way wherever it is.
    """

    def __init__(self, config: ScorerConfig | None = None):
        super().__init__()
        self.config = cfg = config or ScorerConfig()
        c1, c2, c3 = cfg.widths

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.trunk = nn.Sequential(
            *block(3, c1), nn.MaxPool2d(2),  # (B, c1, S/2, S/2)
            *block(c1, c2), *block(c2, c2), nn.MaxPool2d(2),  # (B, c2, S/4, S/4)
            *block(c2, c3),  # (B, c3, S/4, S/4)
        )
        cell = cfg.size // 8  # feature pixels per grid cell side
        self.head = nn.Sequential(nn.Linear(c3 * cell * cell, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, N_CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> logits (B, 4, N_CLASSES), cell k = (row k // 2, col k % 2)."""
        f = self.trunk(images * 2 - 1)  # (B, C, 8, 8)
        B, C, H, W = f.shape
        f = f.view(B, C, 2, H // 2, 2, W // 2).permute(0, 2, 4, 1, 3, 5)  # (B, row, col, C, h, w)
        return self.head(f.reshape(B, N_SLOTS, -1))  # (B, 4, N_CLASSES)


def save_scorer(model: SlotScorer, path=SCORER_FILE, meta: dict | None = None):
    """Weights as float16 safetensors (the scorer is evaluated with exactly these rounded weights)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    # one metadata key: safetensors writes several keys in hash order, which would make the file bytes vary
    info = {"config": asdict(model.config), **(meta or {})}
    save_file(state, str(path), metadata={"scorer": json.dumps(info, sort_keys=True)})


def _from_file(path) -> SlotScorer:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("scorer", "{}"))
    if "config" not in meta:
        raise ValueError(f"{path} is not a GenEval-mini scorer file (no 'scorer' metadata)")
    cfg = meta["config"]
    model = SlotScorer(ScorerConfig(**{**cfg, "widths": tuple(cfg["widths"])}))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    model.meta = meta
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _cached(path: str) -> SlotScorer:
    return _from_file(path)


def load_scorer(path=None) -> SlotScorer:
    """The shipped detector (cached, eval mode, frozen). Regenerate with `python -m reca_nb.build.fit_scorer`."""
    path = Path(path) if path is not None else SCORER_FILE
    if not path.exists():
        raise FileNotFoundError(f"scorer weights not found at {path}; create them with "
                                "`python -m reca_nb.build.fit_scorer`")
    return _cached(str(path.resolve()))


@torch.no_grad()
def slot_logits(images, scorer: SlotScorer | None = None, batch_size: int = 512) -> torch.Tensor:
    """Any image input (see images.as_image_batch) -> cell logits (B, 4, N_CLASSES)."""
    scorer = load_scorer() if scorer is None else scorer
    x = as_image_batch(images, size=scorer.config.size)  # area-downsamples larger images
    dev = next(scorer.parameters()).device
    return torch.cat([scorer(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)])


def detect(images, scorer: SlotScorer | None = None) -> list:
    """Images -> one scene per image: a tuple of `Obj` (sorted by cell) for the non-empty cells."""
    cls = slot_logits(images, scorer).argmax(-1).tolist()  # (B, 4)
    return [tuple(o for k, c in enumerate(row) if (o := obj_of(c, k)) is not None) for row in cls]


# ----------------------------------------------------------------------------- prompts and scores

def geneval_prompts(n_per_category: int = 20, seed: int = 10_000) -> list:
    """Held-out evaluation prompts: `n_per_category` scenes of each of the 6 categories, interleaved.

    Scene i is `ShapeWorld(6 * n_per_category, seed).scene(i)`, so the ground-truth render of prompt i is
    `ShapeWorld(6 * n_per_category, seed, size)[i]["image"]`.
    """
    if n_per_category <= 0:
        raise ValueError(f"n_per_category must be positive, got {n_per_category}")
    ds = shapes.ShapeWorld(len(CATEGORIES) * n_per_category, seed=seed, kind="prompted")
    return [ds.scene(i) for i in range(len(ds))]


def _spec(s) -> Spec:
    spec = s if isinstance(s, Spec) else getattr(s, "spec", None)
    if not isinstance(spec, Spec):
        raise ValueError(f"expected a prompted Scene (with a .spec) or a Spec, got {type(s).__name__} "
                         f"with spec={spec!r}; random scenes have no prompt to score against")
    return spec


def _category_scores(correct: list, specs: list) -> dict:
    """Per-category accuracy, overall = mean over the categories present (GenEval's 'Overall')."""
    out, counts = {}, {}
    for cat in CATEGORIES:
        hits = [c for c, sp in zip(correct, specs) if sp.category == cat]
        if hits:
            out[cat], counts[cat] = float(np.mean(hits)), len(hits)
    out = {"overall": float(np.mean(list(out.values()))), **out}
    out["counts"] = counts
    return out


def score_t2i(images, scenes, scorer: SlotScorer | None = None, details: bool = False) -> dict:
    """GenEval-style score of generated `images` (one per prompt) against the prompts' `scenes`.

    Returns {"overall", <category>: accuracy for each category present, "counts": {category: n}};
    with details=True also "correct" (list of bools) and "detected" (list of detected scenes).
    """
    specs = [_spec(s) for s in scenes]
    found = detect(images, scorer)
    if len(found) != len(specs):
        raise ValueError(f"got {len(found)} images for {len(specs)} prompts; need one image per prompt")
    correct = [sp.satisfied_by(objs) for sp, objs in zip(specs, found)]
    out = _category_scores(correct, specs)
    if details:
        out["correct"], out["detected"] = correct, found
    return out


def chance_t2i(scenes, n_random: int = 100, seed: int = 0) -> dict:
    """The score of a generator that ignores its prompt: `n_random` random shape-world scenes per prompt
    (`shapes.random_scene`: 1-4 arbitrary objects), checked against each prompt. The honest floor."""
    specs = [_spec(s) for s in scenes]
    rng = np.random.default_rng(seed)
    randoms = [shapes.random_scene(rng).objects for _ in range(n_random)]
    rates = [float(np.mean([sp.satisfied_by(objs) for objs in randoms])) for sp in specs]
    return _category_scores(rates, specs)


def score_i2t(captions: list, scenes) -> dict:
    """Captions vs ground truth (Scenes or tuples of Obj), parsed with `shapes.parse_description`.

    exact: whole scene right; slot_acc: the 4 cells (empty included); color_acc / shape_acc: over the
    ground-truth objects, the cell holds an object of the right colour / shape.
    """
    truths = [s.objects if isinstance(s, Scene) else tuple(s) for s in scenes]
    if len(captions) != len(truths):
        raise ValueError(f"got {len(captions)} captions for {len(truths)} scenes")
    if not truths:
        raise ValueError("score_i2t needs at least one caption")
    exact, slots, color, shape = [], [], [], []
    for text, truth in zip(captions, truths):
        pred = {o.slot: o for o in shapes.parse_description(text)}
        gt = {o.slot: o for o in truth}
        exact.append(pred == gt)
        slots.extend(pred.get(k) == gt.get(k) for k in range(N_SLOTS))
        for k, o in gt.items():
            p = pred.get(k)
            color.append(p is not None and p.color == o.color)
            shape.append(p is not None and p.shape == o.shape)
    return {"exact": float(np.mean(exact)), "slot_acc": float(np.mean(slots)),
            "color_acc": float(np.mean(color)) if color else float("nan"),
            "shape_acc": float(np.mean(shape)) if shape else float("nan"), "n": len(truths)}


# ----------------------------------------------------------------------------- evaluating a UMM

@torch.no_grad()
def evaluate_t2i(model, n_per_category: int = 20, seed: int = 10_000, generator=None, batch_size: int = 60,
                 progress: bool = True, return_images: bool = False):
    """Sample one image per held-out prompt with `model.sample(prompts, generator=...)` and score it.

    With return_images=True returns (scores, images (N, 3, S, S), scenes).
    """
    scenes = geneval_prompts(n_per_category, seed)
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        batches = range(0, len(scenes), batch_size)
        images = [model.sample([s.prompt for s in scenes[i:i + batch_size]], generator=generator)
                  for i in tqdm(batches, desc="GenEval-mini T2I", disable=not progress, leave=False)]
    finally:
        model.train(was_training)
    images = torch.cat([as_image_batch(x) for x in images])
    scores = score_t2i(images, scenes)
    return (scores, images, scenes) if return_images else scores


@torch.no_grad()
def evaluate_i2t(model, n: int = 120, seed: int = 20_000, und_size: int | None = None, batch_size: int = 60,
                 progress: bool = True) -> dict:
    """Caption `n` held-out random scenes (rendered at model.image_size, resized to `und_size`,
    default model.und_size) with `model.caption(images)` and score against their descriptions."""
    ds = shapes.ShapeWorld(n, seed=seed, size=model.image_size, kind="random")
    und_size = und_size or model.und_size
    dev = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    captions = []
    try:
        for i in tqdm(range(0, n, batch_size), desc="I2T", disable=not progress, leave=False):
            idx = range(i, min(i + batch_size, n))
            captions += list(model.caption(as_image_batch(ds.images(idx), size=und_size).to(dev)))
    finally:
        model.train(was_training)
    return score_i2t(captions, [ds.scene(i) for i in range(n)])


# ----------------------------------------------------------------------------- reporting

def format_table(results: dict, digits: int = 2) -> str:
    """Markdown table of T2I scores, one row per run, in GenEval's column layout (categories, then Overall).

    `results` maps a run name to a `score_t2i` dict (or to an eval row {"t2i": ...}).
    """
    cols = list(CATEGORIES) + ["overall"]
    head = "| Model | " + " | ".join([CATEGORY_TITLES[c] for c in CATEGORIES] + ["Overall"]) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for name, r in results.items():
        r = r.get("t2i", r)
        cells = [f"{r[c]:.{digits}f}" if c in r else "–" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- RecA diagnostics

@torch.no_grad()
def evaluate_recon(model, und_res: int, n_per_category: int = 30, seed: int = 10_000, generator=None,
                   prompts: str = "diverse", batch_size: int = 60, progress: bool = True) -> dict:
    """Reconstruct the rendered GenEval-mini eval scenes from the model's own understanding embedding at
    `und_res` (the RecA bottleneck) plus a random template (`model.reconstruct`), and score the detected
    scene: "spec" = the scene's GenEval rule (comparable to GenEval-mini overall; chance ~0.23),
    "cell" = accuracy over the 4 cells (empty cells included), "exact" = all 4 cells right.
    This is what RecA's condition gives the generator before (or after) RecA trains it to read it."""
    import random

    from reca_nb.world.prompts import sample_templates
    from reca_nb.recipe import Recipe

    scenes = geneval_prompts(n_per_category, seed)
    world = shapes.ShapeWorld(len(scenes), seed=seed, size=model.image_size, kind="prompted")
    images = world.images()  # (N, 3, S, S): the ground-truth render of each eval prompt
    und = Recipe(und_res=und_res).und_transform(images)
    templates = sample_templates(len(scenes), prompts, rng=random.Random(seed))
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model.reconstruct(und[i:i + batch_size].to(dev), templates[i:i + batch_size], generator=generator)
               for i in tqdm(range(0, len(scenes), batch_size), desc="recon", disable=not progress, leave=False)]
    finally:
        model.train(was_training)
    found = detect(torch.cat([as_image_batch(x) for x in out]))
    spec = [s.spec.satisfied_by(objs) for s, objs in zip(scenes, found)]
    truth = [slot_labels(s.objects) for s in scenes]
    pred = [slot_labels(objs) for objs in found]
    cells = [a == b for t, p in zip(truth, pred) for a, b in zip(t, p)]
    return {"spec": float(np.mean(spec)), "cell": float(np.mean(cells)),
            "exact": float(np.mean([t == p for t, p in zip(truth, pred)])), "n": len(scenes), "und_res": und_res}


@torch.no_grad()
def prompt_gap(model, n: int = 256, draws: int = 4, seed: int = 10_000, batch_size: int = 64) -> dict:
    """How much T2I uses its text: the generation loss on `n` held-out (image, GenEval prompt) pairs with the
    true prompts (L_true) and with the same prompts shuffled across images (L_shuffled), under the same noise.
    gap = (L_shuffled - L_true) / L_shuffled, from the means over `draws` noise draws (+ its std over draws).

    Pairs are `ShapeWorld(n, seed)` (seed 10_000: the first 180 are the GenEval-mini eval prompts and their
    renders). Each draw seeds torch's global RNG identically for the true and the shuffled pass, so both see
    the same timesteps and noise; the caller's RNG state is restored afterwards."""
    world = shapes.ShapeWorld(n, seed=seed, size=model.image_size, kind="prompted")
    images = world.images()
    prompts = [world.scene(i).prompt for i in range(n)]
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    true_l, shuf_l = [], []
    try:
        with torch.random.fork_rng(devices=[]):
            for d in range(draws):
                perm = np.random.default_rng([seed, d]).permutation(n)
                shuffled = [prompts[j] for j in perm]
                for texts, acc in ((prompts, true_l), (shuffled, shuf_l)):
                    torch.manual_seed(seed * 1000 + d)
                    total = 0.0
                    for i in range(0, n, batch_size):
                        x = images[i:i + batch_size].to(dev)
                        total += float(model.generation_loss(x, texts[i:i + batch_size])) * len(x)
                    acc.append(total / n)
    finally:
        model.train(was_training)
    lt, ls = float(np.mean(true_l)), float(np.mean(shuf_l))
    per_draw = [(s - t) / s for t, s in zip(true_l, shuf_l)]
    return {"gap": (ls - lt) / ls, "gap_std": float(np.std(per_draw)), "loss_true": lt, "loss_shuffled": ls,
            "n": n, "draws": draws}
