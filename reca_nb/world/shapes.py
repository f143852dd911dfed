"""Shape world: a synthetic image-caption world in which a GenEval-like score is computable offline.

A scene is 1-4 coloured shapes placed in the four cells of a 2x2 grid. Each scene comes with
  * a GenEval-style *prompt* (a partial description, one of six categories, used for T2I), and
  * a canonical *description* that names every object and its cell (the I2T target).

Everything is a pure function of (seed, index), so datasets are deterministic and need no files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLORS = {  # name -> RGB; chosen to stay distinct after VQ/AE reconstruction
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
    "purple": (170, 60, 230),
}
COLOR_NAMES = tuple(COLORS)
SLOTS = ("top left", "top right", "bottom left", "bottom right")  # slot k = (row k // 2, col k % 2)
NUMBERS = {2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# the row layout of GenEval's results table
CATEGORY_TITLES = {
    "single_object": "Single obj.", "two_object": "Two obj.", "counting": "Counting",
    "colors": "Colors", "position": "Position", "color_attr": "Color attr.",
}


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    slot: int  # 0..3, see SLOTS

    @property
    def row(self) -> int:
        return self.slot // 2

    @property
    def col(self) -> int:
        return self.slot % 2


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for; `satisfied_by` is the GenEval-style check."""

    category: str
    shapes: tuple = ()  # one shape per named object (counting: one shape)
    colors: tuple = ()  # colours of named objects, or () when the prompt names none
    count: int = 0  # counting only
    relation: str = ""  # position only: obj0 <relation> obj1

    def satisfied_by(self, objs) -> bool:
        objs = list(objs)
        if self.category == "counting":
            # GenEval counting: exactly `count` of that class
            return sum(o.shape == self.shapes[0] for o in objs) == self.count
        if self.category in ("single_object", "colors"):
            want = (self.shapes[0], self.colors[0] if self.colors else None)
            return any(_matches(o, *want) for o in objs)
        # two named objects
        a = [o for o in objs if _matches(o, self.shapes[0], self.colors[0] if self.colors else None)]
        b = [o for o in objs if _matches(o, self.shapes[1], self.colors[1] if self.colors else None)]
        if not a or not b:
            return False
        if self.category != "position":
            return True
        return any(_relation_holds(x, y, self.relation) for x in a for y in b)


def _matches(o: Obj, shape: str, color: str | None) -> bool:
    return o.shape == shape and (color is None or o.color == color)


def _relation_holds(a: Obj, b: Obj, rel: str) -> bool:
    return {
        "left of": a.col < b.col, "right of": a.col > b.col,
        "above": a.row < b.row, "below": a.row > b.row,
    }[rel]


@dataclass(frozen=True)
class Scene:
    objects: tuple  # of Obj, sorted by slot
    spec: Spec = field(default=None)
    prompt: str = ""

    @property
    def description(self) -> str:
        """Canonical full description: the I2T target."""
        return describe(self.objects)


def describe(objs) -> str:
    return " and ".join(f"{o.color} {o.shape} {SLOTS[o.slot]}" for o in sorted(objs, key=lambda o: o.slot))


def parse_description(text: str) -> tuple:
    """Inverse of `describe`, tolerant of junk: returns the objects it can read (later ones win a slot)."""
    found = {}
    for part in text.replace(",", " and ").split(" and "):
        w = part.split()
        if len(w) >= 4 and w[0] in COLORS and w[1] in SHAPES and " ".join(w[2:4]) in SLOTS:
            slot = SLOTS.index(" ".join(w[2:4]))
            found[slot] = Obj(w[1], w[0], slot)
    return tuple(found[k] for k in sorted(found))


def prompt_for(spec: Spec) -> str:
    s, c = spec.shapes, spec.colors
    if spec.category == "single_object":
        return f"a {s[0]}"
    if spec.category == "colors":
        return f"a {c[0]} {s[0]}"
    if spec.category == "counting":
        return f"{NUMBERS[spec.count]} {PLURAL[s[0]]}"
    if spec.category == "two_object":
        return f"a {s[0]} and a {s[1]}"
    if spec.category == "position":
        return f"a {s[0]} {spec.relation} a {s[1]}"
    if spec.category == "color_attr":
        return f"a {c[0]} {s[0]} and a {c[1]} {s[1]}"
    raise ValueError(f"unknown category {spec.category!r}; expected one of {CATEGORIES}")


def sample_spec(rng: np.random.Generator, category: str | None = None) -> Spec:
    cat = category or CATEGORIES[rng.integers(len(CATEGORIES))]
    if cat not in CATEGORIES:
        raise ValueError(f"unknown category {cat!r}; expected one of {CATEGORIES}")
    pick_shapes = lambda k: tuple(SHAPES[i] for i in rng.choice(len(SHAPES), k, replace=False))  # noqa: E731
    pick_colors = lambda k: tuple(COLOR_NAMES[i] for i in rng.choice(len(COLORS), k, replace=False))  # noqa: E731
    if cat == "single_object":
        return Spec(cat, pick_shapes(1))
    if cat == "colors":
        return Spec(cat, pick_shapes(1), pick_colors(1))
    if cat == "counting":
        return Spec(cat, pick_shapes(1), count=int(rng.integers(2, 5)))
    if cat == "two_object":
        return Spec(cat, pick_shapes(2))
    if cat == "position":
        return Spec(cat, pick_shapes(2), relation=RELATIONS[rng.integers(len(RELATIONS))])
    return Spec(cat, pick_shapes(2), pick_colors(2))  # color_attr


def scene_for_spec(spec: Spec, rng: np.random.Generator) -> Scene:
    """A random scene that satisfies `spec` (rejection sampling over free choices)."""
    rand_color = lambda: COLOR_NAMES[rng.integers(len(COLORS))]  # noqa: E731
    for _ in range(1000):
        if spec.category == "counting":
            slots = rng.choice(4, spec.count, replace=False)
            objs = [Obj(spec.shapes[0], rand_color(), int(k)) for k in slots]
        else:
            n = len(spec.shapes)
            slots = rng.choice(4, n, replace=False)
            objs = [Obj(spec.shapes[i], spec.colors[i] if spec.colors else rand_color(), int(slots[i]))
                    for i in range(n)]
        if spec.satisfied_by(objs):
            objs = tuple(sorted(objs, key=lambda o: o.slot))
            return Scene(objs, spec, prompt_for(spec))
    raise RuntimeError(f"could not sample a scene for {spec}")  # unreachable for valid specs


def sample_scene(rng: np.random.Generator, category: str | None = None) -> Scene:
    return scene_for_spec(sample_spec(rng, category), rng)


def random_scene(rng: np.random.Generator) -> Scene:
    """Unlabelled-style scene: 1-4 arbitrary objects (what RecA sees; its prompt is unused)."""
    n = int(rng.integers(1, 5))
    slots = sorted(rng.choice(4, n, replace=False))
    objs = tuple(Obj(SHAPES[rng.integers(3)], COLOR_NAMES[rng.integers(len(COLORS))], int(k)) for k in slots)
    return Scene(objs, None, "")


# ----------------------------------------------------------------------------- world options
# Off by default (reca_nb.recipe: i2t_fact_p, t2i_sparse_p). They move the world's text towards how real UMM
# data looks: VLM captions state relations, counts and attribute bindings in plain words, while web alt-text
# (the bulk of T2I pretraining data) names the objects and leaves most of that out.


def fact_sentence(objs, rng: np.random.Generator) -> str:
    """One true sentence about the scene in the eval's own words: a relation ("the red circle is left of the
    blue square ."), a count ("there are two squares .") or a colour-shape binding ("there is a red circle .").

    The kind is drawn uniformly among the kinds the scene allows. Relations and bindings name only objects
    whose colour + shape is unique in the scene, so "the red circle" always refers to one object.
    """
    objs = tuple(objs)
    if not objs:
        raise ValueError("fact_sentence needs at least one object")
    unique = [o for o in objs if sum((p.color, p.shape) == (o.color, o.shape) for p in objs) == 1]
    pairs = [(a, b, rel) for a in unique for b in unique if a is not b
             for rel in RELATIONS if _relation_holds(a, b, rel)]
    counts = {s: n for s in SHAPES if (n := sum(o.shape == s for o in objs)) >= 2}
    kinds = ["binding"] + ["relation"] * bool(pairs) + ["count"] * bool(counts)
    kind = kinds[rng.integers(len(kinds))]
    if kind == "relation":
        a, b, rel = pairs[rng.integers(len(pairs))]
        return f"the {a.color} {a.shape} is {rel} the {b.color} {b.shape} ."
    if kind == "count":
        shape = sorted(counts)[rng.integers(len(counts))]
        return f"there are {NUMBERS[counts[shape]]} {PLURAL[shape]} ."
    o = objs[rng.integers(len(objs))]
    return f"there is a {o.color} {o.shape} ."


def sparse_prompt(spec: Spec, rng: np.random.Generator, p: float) -> str:
    """An alt-text-like version of `spec`'s GenEval prompt: with probability `p` its relation, count and
    colour-shape binding are dropped ("a circle left of a square" -> "a circle and a square", "three squares"
    -> "squares", "a red circle and a blue square" -> "a circle and a square", "a red circle" -> "a circle").
    Prompts that carry none of them (single object, two objects) are returned as they are."""
    if spec.category in ("single_object", "two_object") or not rng.random() < p:
        return prompt_for(spec)
    s = spec.shapes
    if spec.category == "counting":
        return PLURAL[s[0]]
    if spec.category == "colors":
        return f"a {s[0]}"
    return f"a {s[0]} and a {s[1]}"  # position, color_attr


# ----------------------------------------------------------------------------- rendering

def render(scene_or_objs, size: int = 32, jitter_seed=0, jitter_scale: float = 1.0,
           corner: float = 0.0) -> Image.Image:
    """Render at `size`x`size` (any size >= 16). Supersampled 4x, so edges are anti-aliased.

    Objects get a small deterministic position/size jitter derived from `jitter_seed`
    (None: no jitter, every object centred in its cell); `jitter_scale` multiplies its amplitude
    (1: +-6 % of a cell in position, +-3 % in radius). `corner` rounds the squares' corners, as a
    fraction of their half-side (0: sharp, the default; 1 would be a circle).
    """
    if not 0.0 <= corner <= 1.0:
        raise ValueError(f"corner must be in [0, 1], got {corner}")
    if size < 16:
        raise ValueError(f"render size must be >= 16, got {size}")
    objs = scene_or_objs.objects if isinstance(scene_or_objs, Scene) else tuple(scene_or_objs)
    ss = 4 * size
    img = Image.new("RGB", (ss, ss), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
    cell = ss / 2
    for o in objs:
        jx, jy, jr = (rng.uniform(-1, 1, 3) if rng is not None else (0.0, 0.0, 0.0))
        cx = (o.col + 0.5) * cell + jx * 0.06 * jitter_scale * cell
        cy = (o.row + 0.5) * cell + jy * 0.06 * jitter_scale * cell
        r = (0.36 + 0.03 * jr * jitter_scale) * cell
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            h = r * 0.88
            if corner > 0:
                draw.rounded_rectangle([cx - h, cy - h, cx + h, cy + h], radius=corner * h, fill=fill)
            else:
                draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        else:  # upward triangle, centroid at the cell centre
            R = 1.15 * r  # circumradius: a triangle inscribed in r would look small beside the others
            pts = [(cx + R * math.cos(a), cy + 0.1 * R - R * math.sin(a))
                   for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
            draw.polygon(pts, fill=fill)
    return img.resize((size, size), Image.Resampling.BOX)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- dataset

class ShapeWorld(torch.utils.data.Dataset):
    """Deterministic shape-world dataset: item i depends only on (seed, i).

    kind="prompted": scenes drawn for a GenEval category (prompt + spec + description);
    kind="random":   1-4 arbitrary objects (the unlabelled images RecA trains on; prompt is "").
    """

    def __init__(self, n: int, seed: int = 0, size: int = 32, kind: str = "prompted",
                 categories: tuple | None = None):
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        if kind not in ("prompted", "random"):
            raise ValueError(f"kind must be 'prompted' or 'random', got {kind!r}")
        for c in categories or ():
            if c not in CATEGORIES:
                raise ValueError(f"unknown category {c!r}; expected one of {CATEGORIES}")
        self.n, self.seed, self.size, self.kind = n, seed, size, kind
        self.categories = tuple(categories) if categories else CATEGORIES

    def __len__(self):
        return self.n

    def scene(self, i: int) -> Scene:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        if self.kind == "random":
            return random_scene(rng)
        return sample_scene(rng, self.categories[i % len(self.categories)])

    def __getitem__(self, i: int) -> dict:
        sc = self.scene(i)
        img = render(sc, self.size, jitter_seed=[self.seed, i, 1])
        return {"image": to_tensor(img), "prompt": sc.prompt, "description": sc.description, "index": i}

    def images(self, idx=None) -> torch.Tensor:
        """Stack of images (N, 3, S, S) for the given indices (default: all)."""
        idx = range(self.n) if idx is None else idx
        return torch.stack([self[i]["image"] for i in idx])
