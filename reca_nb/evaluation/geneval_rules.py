"""GenEval's scoring rules (Ghosh et al., 2023, github.com/djghosh13/geneval, MIT) as plain functions.

GenEval checks each generated image against the prompt's metadata record, e.g.

    {"tag": "position", "prompt": "a photo of a tie above a sink",
     "include": [{"class": "sink", "count": 1}, {"class": "tie", "count": 1, "position": ["above", 0]}]}

with detections of the 80 COCO classes. These functions hold the rules only; `reca_nb.evaluation.geneval_real` supplies
the detections (Mask2Former) and the colour of an object (CLIP). The rules, as GenEval applies them:

  * a detection counts when its score is above 0.3 (0.9 for the counting task), at most 16 per class, the
    most confident first (colour and position look only at the first `count` objects of a clause);
  * `include` clauses are ANDed: at least `count` objects of the class, of which `count` have the asked colour
    and each stands in the asked relation to every object matched by the clause it points to;
  * `exclude` clauses fail the image when `count` or more objects of the class are seen (counting: "no more
    than n");
  * position: the centre offset of A from B, each axis shrunk by 0.1 x (width or height of A + of B), divided
    by the length of the raw offset; "left of" / "right of" / "above" / "below" hold past 0.5 (image y grows
    downwards);
  * the score is the mean over the six tasks of the share of correct images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
THRESHOLD, COUNTING_THRESHOLD, MAX_OBJECTS, POSITION_MARGIN = 0.3, 0.9, 16, 0.1
RELATIONS = ("left of", "right of", "above", "below")
# COCO's 80 "thing" classes in COCO order (the order of the detector's labels); GenEval renames three
RENAMES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
CLASSNAMES = tuple(RENAMES.get(n, n) for n in COCO_NAMES)  # GenEval's object_names.txt


@dataclass
class Detection:
    """One detected object: box (x1, y1, x2, y2) in pixels (x2, y2 exclusive), score, optional (H, W) mask."""
    box: tuple
    score: float
    mask: np.ndarray | None = None


def box_of_mask(mask: np.ndarray) -> tuple | None:
    """Tight box (x1, y1, x2 + 1, y2 + 1) of a binary mask, as a Mask2Former head derives boxes; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def keep(detections: dict, tag: str) -> dict:
    """{class: [Detection]} -> the detections GenEval keeps: above the task's threshold (strictly), most
    confident first, at most MAX_OBJECTS per class; classes with none are dropped."""
    limit = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    out = {}
    for name, dets in detections.items():
        kept = sorted((d for d in dets if d.score > limit), key=lambda d: -d.score)[:MAX_OBJECTS]
        if kept:
            out[name] = kept
    return out


def relative_position(box_a, box_b, margin: float = POSITION_MARGIN) -> set:
    """Relations of A to B ({"left of", "above", ...}; empty when the centres are too close)."""
    a, b = np.asarray(box_a[:4], float).reshape(2, 2), np.asarray(box_b[:4], float).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)
    dims = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])
    revised = np.maximum(np.abs(offset) - margin * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    return {rel for rel, holds in zip(RELATIONS, (dx < -0.5, dx > 0.5, dy < -0.5, dy > 0.5)) if holds}


def evaluate(objects: dict, metadata: dict, colors_of=None) -> tuple:
    """(correct, reason) of one image. objects: `keep(...)` output; colors_of(detections, classname) -> one
    colour name per detection (called only for clauses with a colour)."""
    correct, reasons, groups = True, [], []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        found = objects.get(name, [])[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        if matched and "color" in req:
            if colors_of is None:
                raise ValueError(f"the prompt {metadata.get('prompt')!r} asks for a colour: pass colors_of")
            colors = list(colors_of(found, name))
            if colors.count(req["color"]) < count:
                matched = False
                seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                reasons.append(f"expected {req['color']} {name}>={count}, found {seen}")
        if matched and "position" in req:
            relation, target = req["position"]
            if groups[target] is None:
                matched = False
                reasons.append(f"no target for {name} to be {relation}")
            else:
                bad = [relative_position(o.box, t.box) for o in found for t in groups[target]]
                bad = [rels for rels in bad if relation not in rels]
                if bad:
                    matched = False
                    reasons.append(f"expected {name} {relation} target, found {' and '.join(sorted(bad[0]))} "
                                   "target")
        correct &= matched
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        n = len(objects.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, "\n".join(reasons)


def check_record(rec: dict, where: str = "metadata") -> None:
    """Raise a one-line ValueError if `rec` is not a GenEval metadata record this scorer understands."""
    if not isinstance(rec, dict) or rec.get("tag") not in TASKS or not isinstance(rec.get("prompt"), str):
        raise ValueError(f"{where}: expected a GenEval record with a tag in {TASKS} and a prompt, got {rec!r:.120}")
    for kind in ("include", "exclude"):
        for i, req in enumerate(rec.get(kind, [])):
            if req.get("class") not in CLASSNAMES or not isinstance(req.get("count"), int):
                raise ValueError(f"{where}: {kind} clause {req!r} needs a GenEval class name and an integer count")
            if "color" in req and req["color"] not in COLORS:
                raise ValueError(f"{where}: unknown colour {req['color']!r} (GenEval's: {', '.join(COLORS)})")
            if "position" in req and (req["position"][0] not in RELATIONS or not 0 <= req["position"][1] < i):
                raise ValueError(f"{where}: position {req['position']!r} needs a relation in {RELATIONS} and an "
                                 "earlier include clause")
    if not rec.get("include"):
        raise ValueError(f"{where}: the record {rec['prompt']!r} has no include clause")


def task_scores(results: list) -> dict:
    """{task: share of correct images} over the tasks present, plus "overall" = their mean (GenEval's score)."""
    scores = {}
    for task in TASKS:
        rows = [r["correct"] for r in results if r["tag"] == task]
        if rows:
            scores[task] = float(np.mean(rows))
    if not scores:
        raise ValueError("no results to score")
    scores["overall"] = float(np.mean(list(scores.values())))
    return scores
