"""Reproduce the RecA paper's claims in miniature, over seeds, and publish a claims table (issue 6).

    python -m reca_nb.reproduce --preset=full                       # the sweep: every claim, arch, arm, >=3 seeds
    python -m reca_nb.reproduce --preset=full --jobs=12 --device=cuda   # the same on a GPU box, 12 processes
    python -m reca_nb.reproduce --preset=ci --out=/tmp/x            # seconds: checks the table and verdicts
    python -m reca_nb.reproduce --only=claim2,claim3 --archs=showo-vq   # a subset (same files, same table)

A *job* is (arch, arm, seed): train() from the shipped base with the arm's recipe (one or two stages), then
GenEval-mini T2I (`eval_per_category` prompts per category, a sampling seed per training seed) and I2T exact
match, the RecA loss early vs late in the run (copy collapse), and for freezing arms whether the frozen weights
stayed bit-identical. Each job is written atomically to OUT/runs/<job_id>.json the moment it finishes; a rerun
skips jobs whose file carries the same fingerprint (recipes + eval settings + base checkpoint), so an
interrupted sweep loses at most the jobs in flight. Arms are shared between claims (claim 1's RecA arm on
showo-vq *is* claim 2's 16-px arm), so each is trained once.

A *claim* compares arms on a metric with the sign the paper reports. `verdict()` (pure, unit-tested) says
"reproduced" when the mean difference has the paper's sign and exceeds max(2 standard errors, a
pre-registered minimum effect), "not reproduced" when it has the opposite sign beyond the same bar, else
"inconclusive". The table (OUT/claims.md, OUT/claims.csv) and figures (OUT/figures/*.png) are rebuilt from
whatever job files exist, so partial sweeps produce partial (honest) tables.

Paper values are from /work/shared/research/reca_anchors.md (arXiv 2509.07295 and the official repository).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from reca_nb.recipe import DECOUPLED, SHARED, Recipe, preset
from reca_nb.world.shapes import CATEGORIES, CATEGORY_TITLES

ALL_ARCHS = SHARED + DECOUPLED  # the paper's families, in table order
EVAL_SEED = 10_000  # the held-out GenEval-mini prompt set (geneval.geneval_prompts)
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class ReproduceConfig:
    preset: Literal["full", "ci"] = "full"  # full: >=3 seeds at the recipe step counts; ci: seconds
    only: str = ""  # comma-separated claims (claim1,claim2 or 1,2); "" = all
    archs: str = ""  # comma-separated archs; "" = every arch (ci: showo-vq,bagel)
    seeds: int = 0  # seeds per arm; 0 = the preset's (full 3, ci 1)
    steps: int = 0  # RecA steps per arm; 0 = the recipe preset's (400; BAGEL 200) (ci: 3)
    sft_steps: int = 0  # claim 6: T2I fine-tune steps before RecA; 0 = as many as the RecA steps
    eval_per_category: int = 0  # GenEval-mini prompts per category; 0 = preset (full 30 -> 180, ci 1)
    i2t_n: int = 0  # I2T held-out scenes; 0 = preset (full 120, ci 6)
    blur_sigma: float = 2.5  # claim 2 "blur" arm: Gaussian sigma (px) on the full-resolution und input
    jobs: int = 1  # parallel job processes (1 = in this process)
    threads: int = 1  # torch threads per job process
    device: Literal["auto", "cpu", "cuda"] = "auto"  # passed to Recipe.device
    out: str = ""  # output folder; "" = results/ in the repo (ci: $RECA_NB_HOME/reproduce-ci)
    progress: bool = True

    def __post_init__(self):
        for name in ("seeds", "steps", "sft_steps", "eval_per_category", "i2t_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.jobs < 1 or self.threads < 1:
            raise ValueError("--jobs and --threads must be >= 1")
        if self.blur_sigma <= 0:
            raise ValueError(f"--blur_sigma must be > 0, got {self.blur_sigma}")

    # --- resolved values -----------------------------------------------------------------------------
    @property
    def ci(self) -> bool:
        return self.preset == "ci"

    @property
    def n_seeds(self) -> int:
        return self.seeds or (1 if self.ci else 3)

    @property
    def n_per_category(self) -> int:
        return self.eval_per_category or (1 if self.ci else 30)

    @property
    def n_i2t(self) -> int:
        return self.i2t_n or (6 if self.ci else 120)

    @property
    def out_dir(self) -> Path:
        from reca_nb.paths import REPO_ROOT, cache_dir

        if self.out:
            return Path(self.out).expanduser()
        return cache_dir() / "reproduce-ci" if self.ci else REPO_ROOT / "results"

    def claim_keys(self) -> list:
        if not self.only:
            return list(CLAIMS)
        keys = []
        for k in (s.strip() for s in self.only.split(",") if s.strip()):
            key = f"claim{k}" if k.isdigit() else k
            if key not in CLAIMS:
                raise ValueError(f"unknown claim {k!r} in --only; valid: {', '.join(CLAIMS)}")
            keys.append(key)
        return keys

    def arch_list(self) -> list:
        if not self.archs:
            return list(CI_ARCHS if self.ci else ALL_ARCHS)
        out = [a.strip() for a in self.archs.split(",") if a.strip()]
        bad = [a for a in out if a not in ALL_ARCHS]
        if bad:
            raise ValueError(f"unknown arch(s) {bad} in --archs; valid: {', '.join(ALL_ARCHS)}")
        return out

    def command(self) -> str:
        """The command line that reproduces this configuration (defaults left out)."""
        defaults = ReproduceConfig()
        parts = [f"--{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if f.name not in ("progress",) and getattr(self, f.name) != getattr(defaults, f.name)]
        if "--preset=" not in " ".join(parts):
            parts.insert(0, f"--preset={self.preset}")
        return "python -m reca_nb.reproduce " + " ".join(parts)


CI_ARCHS = ("showo-vq", "bagel")  # together they touch every claim
# the ci preset's recipe: the loop, not the science
CI_RECIPE = dict(steps=3, batch=4, warmup=1, n_images=64, n_t2i_pairs=16, log_every=1, save_every=0)


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


def image_size(arch: str) -> int:
    """Generation resolution of the shipped base (MANIFEST.json), 32 when unknown."""
    from reca_nb.models.registry import CHECKPOINT_DIR

    try:
        manifest = json.loads((CHECKPOINT_DIR / "MANIFEST.json").read_text())
        return int(manifest[arch]["model_config"]["image_size"])
    except (OSError, KeyError, ValueError):
        return 32


def has_base(arch: str) -> bool:
    from reca_nb.models.registry import base_path

    return base_path(arch).exists()


def base_fingerprint(arch: str) -> str:
    """sha256 of the base from MANIFEST.json (regenerating a base invalidates its jobs), else size+mtime."""
    from reca_nb.models.registry import CHECKPOINT_DIR, base_path

    try:
        return json.loads((CHECKPOINT_DIR / "MANIFEST.json").read_text())[arch]["sha256"]
    except (OSError, KeyError, ValueError):
        p = base_path(arch)
        return f"{p.stat().st_size}-{int(p.stat().st_mtime)}" if p.exists() else "missing"


def scorer_fingerprint() -> str:
    """sha256 of the GenEval-mini detector file: a retrained scorer invalidates every job's scores."""
    from reca_nb.evaluation.geneval import SCORER_FILE

    return _file_sha256(str(SCORER_FILE))


@functools.lru_cache(maxsize=None)
def _file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def reca_recipe(arch: str, cfg: ReproduceConfig) -> Recipe:
    r = replace(preset(arch, "reca"), device=cfg.device)
    if cfg.ci:
        r = replace(r, **CI_RECIPE)
    if cfg.steps:
        r = replace(r, steps=cfg.steps, warmup=min(r.warmup, max(1, round(r.warmup * cfg.steps / r.steps))))
    return r


def canonical_arm(arch: str, arm: str, cfg: ReproduceConfig) -> str:
    """The arm whose job answers for `arm`: a decoupled model's control has no loss term left, so it is the
    base itself (0 steps)."""
    if arm == "control" and not replace(reca_recipe(arch, cfg), lambda_reca=0.0).active_terms:
        return "base"
    return arm


def arm_stages(arch: str, arm: str, cfg: ReproduceConfig, seed: int) -> tuple:
    """The recipes a job trains in order (empty: evaluate the base as is)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    reca = replace(reca_recipe(arch, cfg), seed=seed)
    size = image_size(arch)
    sft = replace(reca, stage="control", lambda_reca=0.0, lambda_t2i=1.0)  # T2I (+ the arm's I2T mix)
    n_sft = cfg.sft_steps or reca.steps
    stages = {  # built eagerly: a handful of dataclass replaces
        "base": (),
        "control": (replace(reca, stage="control", lambda_reca=0.0),),
        "reca": (reca,),
        "und_full": (replace(reca, und_res=size),),
        "blur": (replace(reca, und_res=size, blur_sigma=cfg.blur_sigma),),
        "no_i2t": (replace(reca, lambda_i2t=0.0, i2t_ratio=0.0),),
        "freeze_none": (replace(reca, freeze="none"),),
        "single": (replace(reca, prompts="single"),),
        "sft": (replace(sft, steps=n_sft + reca.steps),),
        "sft_reca": (replace(sft, steps=n_sft), reca),
    }
    return stages[canonical_arm(arch, arm, cfg)]


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
    arms: tuple  # arms to train (every comparison's arms, plus references)
    comparisons: tuple
    note: str = ""
    short: str = ""  # figure title


# paper: GenEval before -> after RecA per family (anchors C.1; Show-o VQ: C.3, 256 input)
PAPER_T2I = {
    "showo-vq": "Show-o VQ: 68.70 → 70.61 (+1.9; 256² input)",
    "showo-clip": "Show-o-512 CLIP: 66.2 → 72.3 (+6.1)",
    "janus": "no Janus run in the paper (repo TODO); family range +3.6…+14.4",
    "harmon": "Harmon-1.5B: 72.9 → 85.7 (+12.8)",
    "bagel": "BAGEL: 78.8 → 82.4 (+3.6)",
    "openuni": "OpenUni-2-1.6B: 61.9 → 74.1 (+12.2)",
}
PAPER_CATEGORY = {  # the per-category numbers the paper reports (anchors C.1)
    ("showo-clip", "two_object"): "80.3 → 90.6", ("showo-clip", "position"): "27.3 → 37.4",
    ("harmon", "position"): "44.9 → 75.7", ("harmon", "color_attr"): "51.1 → 76.6",
    ("bagel", "position"): "51.3 → 60.8", ("bagel", "color_attr"): "63.4 → 72.6",
    ("openuni", "two_object"): "71.8 → 92.7", ("openuni", "color_attr"): "41.6 → 70.3",
}
CATEGORY_NOTE = "largest gains on position / colour attribution, small on counting"


def _claim1_comparisons() -> tuple:
    out = [Comparison("t2i.overall", "reca", "control", +1, PAPER_T2I[a], archs=(a,)) for a in ALL_ARCHS]
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
          ("control", "reca", "und_full", "blur"), (
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
          short="Copy collapse vs the information bottleneck"),
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
    Claim("claim6", "RecA after a T2I fine-tune (SFT → RecA) is best", ALL_ARCHS, ("sft", "sft_reca", "reca"), (
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


# ----------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Job:
    arch: str
    arm: str
    seed: int

    @property
    def job_id(self) -> str:
        return f"{self.arch}-{self.arm}-s{self.seed}"


def plan(cfg: ReproduceConfig) -> tuple:
    """(jobs, skipped) for the selected claims and archs: jobs deduplicated across claims, archs without a
    base checkpoint listed in `skipped` {arch: reason}."""
    jobs, skipped = {}, {}
    archs = cfg.arch_list()
    for key in cfg.claim_keys():
        claim = CLAIMS[key]
        for arch in (a for a in archs if a in claim.archs):
            if not has_base(arch):
                skipped[arch] = (f"no base checkpoint data/checkpoints/{arch}.safetensors "
                                 f"(make it with `python -m reca_nb.build.pretrain --arch={arch}`)")
                continue
            for arm in claim.arms:
                if arm == "blur" and arch != "showo-vq":
                    continue
                arm = canonical_arm(arch, arm, cfg)
                for seed in range(cfg.n_seeds):
                    job = Job(arch, arm, seed)
                    jobs.setdefault(job.job_id, job)
    return list(jobs.values()), skipped


def fingerprint(job: Job, cfg: ReproduceConfig) -> str:
    """What a job's result depends on (not the device, threads or paths): recipes, eval settings, base."""
    stages = [{k: v for k, v in s.key().items() if k != "device"} for s in arm_stages(job.arch, job.arm, cfg,
                                                                                        job.seed)]
    blob = json.dumps({"stages": stages, "n_per_category": cfg.n_per_category, "i2t_n": cfg.n_i2t,
                       "eval_seed": EVAL_SEED, "base": base_fingerprint(job.arch), "scorer": scorer_fingerprint(),
                       "v": 1},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished(job: Job, cfg: ReproduceConfig, runs_dir: Path) -> dict | None:
    path = runs_dir / f"{job.job_id}.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return res if res.get("fingerprint") == fingerprint(job, cfg) else None


# ----------------------------------------------------------------------------- one job

def _snapshot(model, names) -> dict:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names if n in params}


def reca_losses(history: list) -> dict:
    """RecA loss early (mean of the first 10 % of logged rows) and late (last 10 %), and late / early."""
    vals = [r["loss_reca"] for r in history if "loss_reca" in r and math.isfinite(r["loss_reca"])]
    if not vals:
        return {}
    k = max(1, len(vals) // 10)
    early, late = float(np.mean(vals[:k])), float(np.mean(vals[-k:]))
    return {"reca_loss_early": early, "reca_loss_late": late, "reca_ratio": late / early if early else math.nan}


def run_job(job: Job, cfg: ReproduceConfig, runs_dir: Path) -> dict:
    """Train and evaluate one job; writes runs_dir/<job_id>.json atomically and returns the result."""
    import torch

    from reca_nb.models import registry
    from reca_nb.evaluation import geneval
    from reca_nb.train import train

    t0 = time.time()
    stages = arm_stages(job.arch, job.arm, cfg, job.seed)
    model = registry.load_base(job.arch)
    groups = model.parameter_groups()
    frozen_names = set(groups.get("frozen", []))
    if any(s.freeze == "understanding" for s in stages):
        frozen_names |= set(groups.get("understanding", []))
    before = _snapshot(model, frozen_names) if any(s.freeze != "none" for s in stages) else {}
    work = runs_dir.parent / "work" / job.job_id
    history = []
    for i, recipe in enumerate(stages):  # each stage resumes from its own checkpoints after an interruption
        stage_dir = work / f"stage{i}"
        resume = "latest" if any(stage_dir.glob("ckpt-*.safetensors")) else None
        rows = train(model, recipe, out_dir=stage_dir, resume=resume, progress=False)
        history += [{**r, "stage": i} for r in rows if "eval" not in r]
    t_train = time.time() - t0
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        model.to("cuda")  # the base arm never passes through train(): evaluate every arm on one device
    t1 = time.time()
    gen = torch.Generator().manual_seed(EVAL_SEED + 7919 * job.seed)  # sampling noise differs per seed
    metrics = {"t2i": geneval.evaluate_t2i(model, cfg.n_per_category, seed=EVAL_SEED, generator=gen,
                                           progress=False),
               "i2t": geneval.evaluate_i2t(model, n=cfg.n_i2t, progress=False)}
    reca_rows = [r for r in history if r["stage"] == len(stages) - 1]
    metrics.update(reca_losses(reca_rows))
    if before:
        params = dict(model.named_parameters())
        metrics["frozen_identical"] = all(torch.equal(v, params[n].detach().cpu()) for n, v in before.items())
        metrics["n_frozen_tensors"] = len(before)
    result = {
        "job_id": job.job_id, "arch": job.arch, "arm": job.arm, "seed": job.seed,
        "fingerprint": fingerprint(job, cfg), "preset": cfg.preset, "metrics": metrics,
        "stages": [asdict(s) for s in stages], "steps": sum(s.steps for s in stages),
        "history": [{k: v for k, v in r.items() if k in ("step", "stage", "loss", "loss_reca", "loss_i2t",
                                                          "loss_t2i", "collapse_ratio")} for r in history],
        "train_s": round(t_train, 1), "eval_s": round(time.time() - t1, 1), "wall_s": round(time.time() - t0, 1),
        "device": str(next(model.parameters()).device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "host": platform.node(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(runs_dir / f"{job.job_id}.json", result)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one


# ----------------------------------------------------------------------------- running the sweep

def warm_pools(jobs, cfg: ReproduceConfig):
    """Build the shape-world pools once, before job processes start (they then only read the disk cache)."""
    from reca_nb.world.data import image_pool, t2i_pool

    seen = set()
    for job in jobs:
        for s in arm_stages(job.arch, job.arm, cfg, job.seed):
            key = (s.n_images, s.n_t2i_pairs, s.data_seed, image_size(job.arch))
            if key not in seen:
                seen.add(key)
                image_pool(s.n_images, s.data_seed, key[3])
                t2i_pool(s.n_t2i_pairs, s.data_seed, key[3])


def _cli_args(cfg: ReproduceConfig) -> list:
    return [f"--{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)]


def run_all(jobs, cfg: ReproduceConfig, runs_dir: Path) -> dict:
    """Run `jobs`; returns {job_id: error text} for the failures (they leave no result file: a rerun retries)."""
    from tqdm.auto import tqdm

    failures = {}
    bar = tqdm(total=len(jobs), desc="reproduce jobs", disable=not cfg.progress, dynamic_ncols=True)
    if cfg.jobs == 1:
        for job in jobs:
            bar.set_postfix_str(job.job_id)
            try:
                run_job(job, cfg, runs_dir)
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - one failed job must not end the sweep
                failures[job.job_id] = traceback.format_exc()
                tqdm.write(f"job {job.job_id} failed:\n{failures[job.job_id]}")
            bar.update(1)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads),
               "RECA_NB_THREADS": str(cfg.threads)}
        log_dir = runs_dir.parent / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)

        def one(job):
            cmd = [sys.executable, "-m", "reca_nb.reproduce", *_cli_args(cfg), f"--worker={job.job_id}"]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            (log_dir / f"{job.job_id}.log").write_text(p.stdout + p.stderr)
            return job, p.returncode, (p.stdout + p.stderr)[-3000:]

        with ThreadPoolExecutor(cfg.jobs) as pool:
            for fut in as_completed([pool.submit(one, j) for j in jobs]):
                job, rc, tail = fut.result()
                if rc != 0:
                    failures[job.job_id] = f"exit {rc}\n{tail}"
                    tqdm.write(f"job {job.job_id} failed (exit {rc}); log: {log_dir / job.job_id}.log")
                bar.update(1)
    bar.close()
    return failures


# ----------------------------------------------------------------------------- the table

def shipped_runs(arch: str, arm: str, runs_dir: Path | None = None) -> list:
    """The finished job files of one arm, one per seed (`results/runs/<arch>-<arm>-s<seed>.json`), seed order."""
    from reca_nb.paths import REPO_ROOT

    runs_dir = Path(runs_dir or REPO_ROOT / "results" / "runs")
    paths = sorted(runs_dir.glob(f"{arch}-{arm}-s*.json"), key=lambda p: int(p.stem.rsplit("-s", 1)[1]))
    if not paths:
        raise FileNotFoundError(f"no job files {arch}-{arm}-s*.json in {runs_dir}; run "
                                f"`python -m reca_nb.reproduce --archs={arch}`")
    return [json.loads(p.read_text()) for p in paths]


def _metric(result: dict, name: str):
    m = result["metrics"]
    for part in name.split("."):
        if not isinstance(m, dict) or part not in m:
            return None
        m = m[part]
    return float(m) if isinstance(m, (int, float)) else None


def _stats(vals) -> tuple:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan, len(vals)


def claim_rows(results: dict, cfg: ReproduceConfig, skipped: dict) -> list:
    """One row per (claim, arch, comparison) from the finished job results {job_id: result}."""
    rows = []
    archs = cfg.arch_list()
    for key in cfg.claim_keys():
        claim = CLAIMS[key]
        for arch in (a for a in archs if a in claim.archs):
            for comp in claim.comparisons:
                if comp.archs and arch not in comp.archs:
                    continue
                row = {"claim": key, "title": claim.title, "arch": arch, "metric": comp.metric,
                       "arm_a": comp.a, "arm_b": comp.b or "", "expected": ">" if comp.sign > 0 else "<",
                       "paper": comp.paper, "secondary": comp.secondary, "min_effect": comp.min_effect,
                       "command": f"python -m reca_nb.reproduce --preset={cfg.preset} --only={key} "
                                  f"--archs={arch}"}
                if arch in skipped:
                    row.update(verdict="skipped", why=skipped[arch], n_a=0, n_b=0)
                    rows.append(row)
                    continue

                def values(arm, metric=comp.metric):
                    arm = canonical_arm(arch, arm, cfg)
                    return [_metric(r, metric) for r in results.values() if r["arch"] == arch and r["arm"] == arm]

                va = values(comp.a)
                row["a_mean"], row["a_std"], _ = _stats(va)
                if comp.kind == "all_true":
                    row.update(verdict_all_true(va))
                else:
                    vb = values(comp.b)
                    row["b_mean"], row["b_std"], _ = _stats(vb)
                    row.update(verdict(va, vb, comp.sign, comp.min_effect))
                rows.append(row)
    return rows


def _fmt(m, s=math.nan, n=None) -> str:
    if m is None or not math.isfinite(m):
        return "–"
    txt = f"{m:.3f}" + (f" ± {s:.3f}" if s is not None and math.isfinite(s) else "")
    return txt + (f" (n={n})" if n is not None else "")


CSV_COLUMNS = ("claim", "arch", "metric", "arm_a", "expected", "arm_b", "paper", "a_mean", "a_std", "n_a",
               "b_mean", "b_std", "n_b", "diff", "se", "bar", "verdict", "why", "secondary", "command", "title")


def write_csv(rows: list, path: Path):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)


def _row_md(r: dict) -> str:
    arms = f"{r['arm_a']} {r['expected']} {r['arm_b']}" if r["arm_b"] else f"{r['arm_a']}: all runs"
    if r["verdict"] == "skipped":
        return f"| {r['claim'][5:]} | {r['arch']} | {r['metric']} | {arms} | {r['paper']} | – | – | – | " \
               f"skipped: {r['why']} | |"
    diff = "–" if not math.isfinite(r.get("diff", math.nan)) else (
        f"{r['diff']:+.3f}" + (f" ± {r['se']:.3f}" if math.isfinite(r.get("se", math.nan)) else ""))
    verdict_txt = f"**{r['verdict']}**" + (f" ({r['why']})" if r.get("why") else "")
    a = _fmt(r.get("a_mean", math.nan), r.get("a_std", math.nan), r["n_a"])
    b = _fmt(r.get("b_mean", math.nan), r.get("b_std", math.nan), r["n_b"]) if r["arm_b"] else "–"
    return (f"| {r['claim'][5:]} | {r['arch']} | {r['metric']} | {arms} | {r['paper']} | {a} | {b} | {diff} | "
            f"{verdict_txt} | `{r['command']}` |")


HEAD = ("| # | arch | metric | arms (paper's direction) | paper | A: mean ± std over seeds | B | A − B ± SE | "
        "verdict | command |\n|---|---|---|---|---|---|---|---|---|---|")


def write_markdown(rows, results, cfg: ReproduceConfig, skipped, failures, wall: float, path: Path,
                   figures: list):
    main_rows = [r for r in rows if not r["secondary"]]
    counts = {v: sum(r["verdict"] == v for r in main_rows) for v in (*VERDICTS, "skipped")}
    devices = sorted({r["device"] for r in results.values()})
    job_s = [r["wall_s"] for r in results.values()]
    lines = [
        "# RecA claims in miniature",
        "",
        f"Produced by `{cfg.command()}` on {platform.node()} ({platform.machine()}, devices: "
        f"{', '.join(devices) or '–'}, {cfg.jobs} job process(es) × {cfg.threads} torch thread(s)), "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. {len(results)} job results in "
        f"`runs/` (this invocation: {wall:.0f} s wall; per job {np.mean(job_s) if job_s else 0:.0f} s mean, "
        f"{sum(job_s):.0f} s in all).",
        "",
    ]
    if cfg.ci:
        lines += ["> **CI preset**: 1 seed, a few training steps, a tiny eval. It checks that the table is "
                  "produced and the verdict logic runs; it says nothing about the paper's claims.", ""]
    lines += [
        f"**Summary** ({len(main_rows)} comparisons): " + ", ".join(f"{v}: {n}" for v, n in counts.items()) + ".",
        "",
        f"**Method.** Every arm starts from the shipped base checkpoint (`data/checkpoints/<arch>.safetensors`) "
        f"and is trained with `reca_nb.train.train` for the steps of its recipe (preset `reca`; "
        f"{'ci: 3 steps, batch 4' if cfg.ci else 'showo/janus/harmon/openuni 400, BAGEL 200 RecA steps'}), "
        f"{cfg.n_seeds} seed(s) per arm (the seed sets the batch order, masking / noise and the eval sampling "
        f"noise). Eval: GenEval-mini on {6 * cfg.n_per_category} held-out prompts ({cfg.n_per_category} per "
        f"category, scored by the shipped detector, sha256 {scorer_fingerprint()[:12]}...), I2T exact match on {cfg.n_i2t} held-out scenes. "
        "`reca_ratio` = RecA loss late / early in the run (mean of the last vs first 10 % of logged rows).",
        "",
        "**Verdict rule** (pre-registered, `reca_nb.reproduce.verdict`): diff = mean(A) − mean(B), SE = Welch "
        "standard error over seeds; *reproduced* if the diff has the paper's sign and |diff| > max(2 SE, "
        "min effect) (min effect 0.02 for accuracies, 0.05 for `reca_ratio`), *not reproduced* if it has the "
        "opposite sign beyond the same bar, else *inconclusive* (always with < 2 seeds per arm). "
        "`frozen_identical`: reproduced if the frozen tensors were bit-identical to the base in every run.",
        "",
        "Paper values: arXiv 2509.07295 and the official repository (`reca_anchors.md`); GenEval in points, "
        "ours as fractions (0–1).",
        "",
        "## Claims",
        "",
    ]
    for key in cfg.claim_keys():
        claim = CLAIMS[key]
        rs = [r for r in main_rows if r["claim"] == key]
        if not rs:
            continue
        lines += [f"### {key[5:]}. {claim.title}", ""]
        if claim.note:
            lines += [f"_{claim.note}._", ""]
        lines += [HEAD, *[_row_md(r) for r in rs], ""]
    detail = [r for r in rows if r["secondary"]]
    if detail:
        lines += ["## Claim 1 per GenEval category (RecA vs control)", "", HEAD, *[_row_md(r) for r in detail],
                  ""]
    arms_tab = _arms_table(results, cfg)
    if arms_tab:
        lines += ["## Every arm (mean ± std over seeds)", "", *arms_tab, ""]
    if skipped:
        lines += ["## Skipped", "", *[f"- {a}: {why}" for a, why in skipped.items()], ""]
    if failures:
        lines += ["## Failed jobs (no result file; a rerun retries them)", ""]
        lines += [f"- `{j}`: {err.strip().splitlines()[-1] if err.strip() else 'unknown error'}"
                  for j, err in failures.items()]
        lines += [""]
    if figures:
        lines += ["## Figures", "", *[f"![{Path(f).stem}](figures/{Path(f).name})" for f in figures], ""]
    lines += ["## Arms", "", *[f"- `{k}`: {v}" for k, v in ARMS.items()], ""]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


def _arms_table(results: dict, cfg: ReproduceConfig) -> list:
    keys = [("t2i.overall", "T2I overall"), ("i2t.exact", "I2T exact"), ("reca_loss_early", "RecA loss early"),
            ("reca_loss_late", "RecA loss late"), ("reca_ratio", "late/early")]
    groups = {}
    for r in results.values():
        groups.setdefault((r["arch"], r["arm"]), []).append(r)
    if not groups:
        return []
    out = ["| arch | arm | seeds | steps | " + " | ".join(t for _, t in keys) + " | s/job |",
           "|---|---|---|---|" + "---|" * (len(keys) + 1)]
    order = {a: i for i, a in enumerate(ALL_ARCHS)}
    arm_order = {a: i for i, a in enumerate(ARMS)}
    for (arch, arm), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99),
                                                                  arm_order.get(kv[0][1], 99))):
        cells = [_fmt(*_stats([_metric(r, k) for r in rs])[:2]) for k, _ in keys]
        out.append(f"| {arch} | {arm} | {len(rs)} | {rs[0]['steps']} | " + " | ".join(cells)
                   + f" | {np.mean([r['wall_s'] for r in rs]):.0f} |")
    return out


# ----------------------------------------------------------------------------- figures

def plot_claim(rows: list, results: dict, cfg: ReproduceConfig, title: str):
    """One panel per (arch, metric) of a claim's comparisons: bars = arm means, error bars = std over seeds,
    dots = the seeds. Returns a matplotlib Figure (reca_nb.plotting conventions: no pyplot state)."""
    from reca_nb.plotting import new_figure

    panels = {}
    for r in rows:
        if r["verdict"] == "skipped" or r["metric"] == "frozen_identical":
            continue
        p = panels.setdefault((r["arch"], r["metric"]), [])
        for arm in (r["arm_a"], r["arm_b"]):
            if arm and arm not in p:
                p.append(arm)
    if not panels:
        return None
    fig = new_figure(figsize=(max(3.2 * len(panels), 4.0), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, ((arch, metric), arms) in zip(axes, panels.items()):
        for i, arm in enumerate(arms):
            canon = canonical_arm(arch, arm, cfg)
            vals = [v for v in (_metric(r, metric) for r in results.values()
                                if r["arch"] == arch and r["arm"] == canon) if v is not None]
            m, s, n = _stats(vals)
            ax.bar(i, m if n else 0, 0.6, yerr=s if n > 1 else None, capsize=3, color=f"C{i}", alpha=0.8)
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
        ax.set_title(f"{arch}: {metric}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_category_diffs(rows: list):
    """Claim 1 per category: RecA − control (mean over seeds, ± SE) per arch."""
    from reca_nb.plotting import new_figure

    detail = [r for r in rows if r["claim"] == "claim1" and r["secondary"] and r["verdict"] != "skipped"]
    archs = list(dict.fromkeys(r["arch"] for r in detail))
    if not archs:
        return None
    fig = new_figure(figsize=(9, 3.4), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(CATEGORIES))
    width = 0.8 / len(archs)
    for i, arch in enumerate(archs):
        by = {r["metric"][4:]: r for r in detail if r["arch"] == arch}
        d = [by[c]["diff"] if c in by else np.nan for c in CATEGORIES]
        se = [by[c]["se"] if c in by else np.nan for c in CATEGORIES]
        se = None if all(not math.isfinite(x) for x in se) else np.nan_to_num(se)
        ax.bar(xs + (i - (len(archs) - 1) / 2) * width, d, width, yerr=se, capsize=2, label=arch)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(xs, [CATEGORY_TITLES[c] for c in CATEGORIES])
    ax.set_ylabel("RecA − control (accuracy)")
    ax.set_title("Claim 1 per GenEval-mini category (± SE over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(archs), 4))
    return fig


def make_figures(rows, results, cfg: ReproduceConfig, fig_dir: Path) -> list:
    from reca_nb import plotting

    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = {}
    for key in cfg.claim_keys():
        rs = [r for r in rows if r["claim"] == key and not r["secondary"]]
        figs[key] = plot_claim(rs, results, cfg, f"Claim {key[5:]}: {CLAIMS[key].short}")
    if "claim1" in cfg.claim_keys():
        figs["claim1_categories"] = plot_category_diffs(rows)
    if "claim2" in cfg.claim_keys():  # the collapse curves of seed 0
        hist = {arm: results[f"showo-vq-{arm}-s0"]["history"] for arm in ("und_full", "reca", "blur")
                if f"showo-vq-{arm}-s0" in results}
        hist = {f"und {'32 (full)' if a == 'und_full' else '16' if a == 'reca' else '32 + blur'}": h
                for a, h in hist.items() if any("loss_reca" in r for r in h)}
        if hist:
            figs["claim2_collapse"] = plotting.plot_collapse(hist, title="showo-vq: copy collapse (seed 0)")
    written = []
    for name, fig in figs.items():
        if fig is not None:
            fig.savefig(fig_dir / f"{name}.png", dpi=110)
            written.append(str(fig_dir / f"{name}.png"))
    return written


def report(cfg: ReproduceConfig, skipped: dict, failures: dict, wall: float) -> list:
    """Rebuild claims.md / claims.csv / figures from the job files in OUT/runs; returns the rows."""
    out = cfg.out_dir
    jobs, _ = plan(cfg)
    results = {}
    for job in jobs:
        res = finished(job, cfg, out / "runs")
        if res is not None:
            results[job.job_id] = res
    rows = claim_rows(results, cfg, skipped)
    figures = make_figures(rows, results, cfg, out / "figures")
    write_csv(rows, out / "claims.csv")
    write_markdown(rows, results, cfg, skipped, failures, wall, out / "claims.md", figures)
    return rows


# ----------------------------------------------------------------------------- CLI

USAGE = """usage: python -m reca_nb.reproduce [--preset=full|ci] [--only=claim1,claim2,...] [--archs=a,b]
       [--seeds=N] [--steps=N] [--sft_steps=N] [--eval_per_category=N] [--i2t_n=N] [--blur_sigma=S]
       [--jobs=N] [--threads=N] [--device=auto|cpu|cuda] [--out=DIR] [--progress=False]
  writes OUT/runs/<job>.json (one per finished job; reruns skip them), OUT/claims.md, OUT/claims.csv and
  OUT/figures/*.png. OUT defaults to results/ (ci: $RECA_NB_HOME/reproduce-ci)."""


def main(argv=None):
    from reca_nb.config import apply_overrides, parse_overrides

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return None
    args = parse_overrides(argv)
    worker = args.pop("worker", None)
    cfg = apply_overrides(ReproduceConfig(), args)
    cfg.claim_keys(), cfg.arch_list()  # validate before anything runs

    import torch

    torch.set_num_threads(cfg.threads)
    runs_dir = cfg.out_dir / "runs"
    jobs, skipped = plan(cfg)
    if worker is not None:  # one job in this process (started by run_all with --jobs > 1)
        job = {j.job_id: j for j in jobs}.get(str(worker))
        if job is None:
            raise SystemExit(f"--worker={worker}: not a job of this configuration")
        return run_job(job, cfg, runs_dir)

    t0 = time.time()
    todo = [j for j in jobs if finished(j, cfg, runs_dir) is None]
    n_arms = len({(j.arch, j.arm) for j in jobs})
    steps = sum(s.steps for j in todo for s in arm_stages(j.arch, j.arm, cfg, j.seed))
    print(f"reproduce ({cfg.preset}): claims {', '.join(cfg.claim_keys())}; {len(jobs)} jobs = {n_arms} arms "
          f"x {cfg.n_seeds} seed(s); {len(jobs) - len(todo)} finished, {len(todo)} to run ({steps} training "
          f"steps); {cfg.jobs} process(es) x {cfg.threads} thread(s), device {cfg.device}; out: {cfg.out_dir}")
    for arch, why in skipped.items():
        print(f"  skipping {arch}: {why}")
    failures = {}
    if todo:
        warm_pools(todo, cfg)
        failures = run_all(todo, cfg, runs_dir)
        try:
            (cfg.out_dir / "work").rmdir()  # empty once every job has finished (checkpoints of failed ones stay)
        except OSError:
            pass
    rows = report(cfg, skipped, failures, time.time() - t0)
    main_rows = [r for r in rows if not r["secondary"]]
    print(f"wrote {cfg.out_dir / 'claims.md'} and claims.csv ({len(main_rows)} comparisons: "
          + ", ".join(f"{v} {sum(r['verdict'] == v for r in main_rows)}" for v in (*VERDICTS, "skipped"))
          + f"); {len(failures)} failed job(s); {time.time() - t0:.0f} s")
    if failures:
        raise SystemExit(1)
    return rows


