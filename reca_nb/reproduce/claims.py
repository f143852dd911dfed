"""The paper's claims, the arms that test them, and the verdict rule: what is claimed and how it is judged.

An *arm* is one way to train from the shipped base (the RecA recipe, its no-RecA control, an ablation). A
*claim* compares arms on a metric with the sign the paper reports. `verdict()` says "reproduced" when the
mean difference over seeds has the paper's sign and exceeds max(2 standard errors, a pre-registered minimum
effect), "not reproduced" when it has the opposite sign beyond the same bar, else "inconclusive".

Paper values are from /work/shared/research/reca_anchors.md (arXiv 2509.07295 and the official repository);
claim 1's per-family GenEval line is on each registry card (`ArchCard.paper_t2i`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reca_nb.models import registry
from reca_nb.recipe import DECOUPLED, SHARED
from reca_nb.world.shapes import CATEGORIES

ALL_ARCHS = SHARED + DECOUPLED  # the paper's families, in table order
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


# ----------------------------------------------------------------------------- arms

ARMS = {
    "base": "the shipped base checkpoint, no training (reference)",
    "control": "the RecA recipe without the RecA term (I2T only for shared models), same steps",
    "reca": "the RecA recipe (preset 'reca': bottlenecked und input, diverse templates, I2T mix / freeze)",
    "und_full": "RecA with the understanding input at the full target resolution (no bottleneck)",
    "blur": "RecA with a blurred full-resolution understanding input (the paper's blur fallback)",
    "no_i2t": "RecA without the I2T term (lambda_i2t = 0)",
    "freeze_none": "RecA with nothing frozen (freeze = 'none')",
    "single": "RecA with one template ('Describe the image.') instead of the diverse set",
    "sft": "T2I fine-tune only (small captioned pool, lambda_t2i = 1, no RecA) for SFT + RecA steps",
    "sft_reca": "the T2I fine-tune, then the RecA recipe",
}


# ----------------------------------------------------------------------------- claims

@dataclass(frozen=True)
class Comparison:
    metric: str  # job metric: "t2i.overall", "t2i.<category>", "i2t.exact", "reca_ratio", "frozen_identical"
    a: str  # arm A
    b: str  # arm B ("" for a check on A alone: kind="all_true")
    sign: int  # the paper's direction: +1 means A > B, -1 means A < B
    paper: str  # the paper's value / statement
    min_effect: float = 0.02  # pre-registered smallest |A - B| that counts
    archs: tuple = ()  # restrict to these archs; () = the claim's archs
    kind: Literal["diff", "all_true"] = "diff"
    secondary: bool = False  # listed in a detail table (per-category breakdowns)


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    archs: tuple  # archs the claim applies to
    arms: tuple  # arms to train on every arch of the claim (every comparison's arms, plus references)
    comparisons: tuple
    note: str = ""
    short: str = ""  # figure title
    extra_arms: dict = field(default_factory=dict)  # {arch: arms trained on that arch only}

    def arms_for(self, arch: str) -> tuple:
        return self.arms + self.extra_arms.get(arch, ())


PAPER_CATEGORY = {  # the per-category numbers the paper reports (anchors C.1)
    ("showo-clip", "two_object"): "80.3 → 90.6", ("showo-clip", "position"): "27.3 → 37.4",
    ("harmon", "position"): "44.9 → 75.7", ("harmon", "color_attr"): "51.1 → 76.6",
    ("bagel", "position"): "51.3 → 60.8", ("bagel", "color_attr"): "63.4 → 72.6",
    ("openuni", "two_object"): "71.8 → 92.7", ("openuni", "color_attr"): "41.6 → 70.3",
}
CATEGORY_NOTE = "largest gains on position / colour attribution, small on counting"

CATEGORY_NOTE = "largest gains on position / colour attribution, small on counting"


def _claim1_comparisons() -> tuple:
    """RecA vs control per arch, overall (the paper's GenEval line) and per category (a detail table)."""
    out = [Comparison("t2i.overall", "reca", "control", +1, registry.CARDS[a].paper_t2i, archs=(a,))
           for a in ALL_ARCHS]
    for a in ALL_ARCHS:
        for c in CATEGORIES:
            out.append(Comparison(f"t2i.{c}", "reca", "control", +1,
                                  PAPER_CATEGORY.get((a, c), CATEGORY_NOTE), archs=(a,), secondary=True))
    return tuple(out)


CLAIMS = {c.key: c for c in (
    Claim("claim1", "RecA improves T2I over a no-RecA control", ALL_ARCHS, ("base", "control", "reca"),
          _claim1_comparisons(),
          note="decoupled models (BAGEL, OpenUni) have no loss term without RecA: their control is the base",
          short="RecA vs a no-RecA control: T2I"),
    Claim("claim2", "Copy collapse: a same-space, same-resolution und input collapses and hurts T2I; "
          "a bottleneck (downscale, blur) prevents it", ("showo-vq", "bagel"),
          ("control", "reca", "und_full"), (
              Comparison("reca_ratio", "und_full", "reca", -1,
                         "Show-o VQ 512²: recon CE ~7.5 → ~1.5 by 4k steps, → 0 (copies tokens)",
                         min_effect=0.05, archs=("showo-vq",)),
              Comparison("t2i.overall", "und_full", "control", -1, "Show-o VQ: 512² 66.59 < base 68.70",
                         archs=("showo-vq",)),
              Comparison("t2i.overall", "reca", "und_full", +1, "Show-o VQ: 256² 70.61 > 512² 66.59",
                         archs=("showo-vq",)),
              Comparison("t2i.overall", "blur", "und_full", +1, "Show-o VQ: blur 72.20 > 512² 66.59",
                         archs=("showo-vq",)),
              Comparison("t2i.overall", "blur", "reca", +1, "Show-o VQ: blur 72.20 > 256² 70.61",
                         archs=("showo-vq",)),
              Comparison("t2i.overall", "reca", "und_full", +1, "BAGEL ViT: 224² 82.4 > 512² 79.2",
                         archs=("bagel",)),
          ), note="und 16 px = the 'reca' arm (the paper's 256/512 ratio); und_full = 32 px, the target's "
                  "resolution; blur = 32 px with Gaussian blur (sigma --blur_sigma); BAGEL: no blur arm",
          short="Copy collapse vs the information bottleneck",
          extra_arms={"showo-vq": ("blur",)}),  # the paper's blur fallback is a Show-o VQ experiment
    Claim("claim3", "Mixing I2T data preserves understanding in shared-parameter models", SHARED,
          ("base", "reca", "no_i2t"), (
              Comparison("i2t.exact", "reca", "no_i2t", +1,
                         "guide: without I2T the shared representation may collapse; Harmon MME 1195 → 1223 "
                         "with the mix (no ablation numbers)"),
          ), short="I2T mixing in shared-parameter models"),
    Claim("claim4", "Freezing understanding preserves it in decoupled models; frozen weights stay identical",
          DECOUPLED, ("base", "reca", "freeze_none"), (
              Comparison("i2t.exact", "reca", "freeze_none", +1,
                         "guide: freeze the understanding side (BAGEL freeze_und, OpenUni frozen MLLM); "
                         "no ablation numbers"),
              Comparison("frozen_identical", "reca", "", +1, "frozen parameters are not updated",
                         kind="all_true"),
          ), short="Freezing understanding in decoupled models"),
    Claim("claim5", "Diverse templates (>=360) vs one prompt", ("showo-vq", "showo-clip", "janus", "harmon"),
          ("reca", "single"), (
              Comparison("t2i.overall", "reca", "single", +1,
                         "Show-o: diverse prompts 'significantly improve reconstruction'; Harmon: 'little "
                         "difference' (model-dependent; no numbers)"),
          ), short="Diverse templates vs one prompt"),
    Claim("claim6", "RecA after a T2I fine-tune (SFT → RecA) is best", ALL_ARCHS,
          ("sft", "sft_reca", "reca"), (
        Comparison("t2i.overall", "sft_reca", "sft", +1, "Harmon-1.5B: SFT 74.76 < SFT → RecA 89.00"),
        Comparison("t2i.overall", "sft_reca", "reca", +1, "Harmon-1.5B: RecA 85.69 < SFT → RecA 89.00"),
    ), note="SFT = T2I on the small captioned pool (lambda_t2i = 1, the arm's I2T mix); 'sft' trains it for "
            "the SFT + RecA steps of 'sft_reca'", short="SFT then RecA vs SFT only / RecA only"),
)}


# ----------------------------------------------------------------------------- verdict (pure)

def verdict(a, b, sign: int, min_effect: float = 0.0, k: float = 2.0) -> dict:
    """Compare samples `a` and `b` (one value per seed) against the paper's direction `sign` (+1: A > B).

    diff = mean(a) - mean(b), se = Welch standard error sqrt(var_a/n_a + var_b/n_b) (ddof 1), bar =
    max(k * se, min_effect). "reproduced" if sign * diff > bar, "not reproduced" if sign * diff < -bar,
    else "inconclusive" (also whenever an arm has fewer than 2 values: no error estimate).
    """
    if sign not in (-1, 1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    a = np.asarray([x for x in a if x is not None and math.isfinite(x)], dtype=float)
    b = np.asarray([x for x in b if x is not None and math.isfinite(x)], dtype=float)
    out = {"n_a": len(a), "n_b": len(b), "diff": math.nan, "se": math.nan, "bar": math.nan,
           "verdict": "inconclusive", "why": ""}
    if not len(a) or not len(b):
        out["why"] = "no data"
        return out
    out["diff"] = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        out["why"] = "fewer than 2 seeds: no error estimate"
        return out
    out["se"] = float(math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    out["bar"] = max(k * out["se"], min_effect)
    signed = sign * out["diff"]
    if signed > out["bar"]:
        out["verdict"] = "reproduced"
    elif signed < -out["bar"]:
        out["verdict"] = "not reproduced"
    else:
        out["why"] = f"|diff| <= max({k:g} SE, {min_effect:g})"
    return out


def verdict_all_true(values) -> dict:
    """A property that must hold in every run (e.g. frozen weights identical): reproduced if it held in all
    of them, not reproduced if it failed in any, inconclusive with no runs."""
    vals = [bool(v) for v in values if v is not None]
    v = "inconclusive" if not vals else ("reproduced" if all(vals) else "not reproduced")
    return {"n_a": len(vals), "n_b": 0, "diff": math.nan, "se": math.nan, "bar": math.nan, "verdict": v,
            "why": "no data" if not vals else f"{sum(vals)}/{len(vals)} runs"}

