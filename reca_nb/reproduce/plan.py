"""What the sweep runs: its configuration, the recipes of each arm, and the jobs with their fingerprints.

A *job* is (arch, arm, seed): train() from the shipped base with the arm's recipe (one or two stages), then
evaluate. Arms are shared between claims (claim 1's RecA arm on showo-vq *is* claim 2's 16-px arm), so each
is planned once. A job's fingerprint covers everything its result depends on (recipes, eval settings, the
base and the scorer): a finished job file with the same fingerprint is reused, any change reruns the job.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from reca_nb.models import registry
from reca_nb.recipe import Recipe, preset
from reca_nb.reproduce.claims import ALL_ARCHS, ARMS, CLAIMS

EVAL_SEED = 10_000  # the held-out GenEval-mini prompt set (geneval.geneval_prompts)
CI_ARCHS = ("showo-vq", "bagel")  # together they touch every claim
# the ci preset's recipe: the loop, not the science
CI_RECIPE = dict(steps=3, batch=4, warmup=1, n_images=64, n_t2i_pairs=16, log_every=1, save_every=0)


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


# ----------------------------------------------------------------------------- fingerprints

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


# ----------------------------------------------------------------------------- arms

def reca_recipe(arch: str, cfg: ReproduceConfig) -> Recipe:
    """The arch's RecA preset on the sweep's device; ci and --steps shorten it (warm-up in proportion)."""
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
    size = registry.image_size(arch)
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


# ----------------------------------------------------------------------------- jobs

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
            if not registry.has_base(arch):
                skipped[arch] = (f"no base checkpoint data/checkpoints/{arch}.safetensors "
                                 f"(make it with `python -m reca_nb.build.pretrain --arch={arch}`)")
                continue
            for arm in claim.arms_for(arch):
                arm = canonical_arm(arch, arm, cfg)
                for seed in range(cfg.n_seeds):
                    job = Job(arch, arm, seed)
                    jobs.setdefault(job.job_id, job)
    return list(jobs.values()), skipped


def fingerprint(job: Job, cfg: ReproduceConfig) -> str:
    """What a job's result depends on (not the device, threads or paths): recipes, eval settings, base."""
    stages = [{k: v for k, v in s.key().items() if k != "device"}
              for s in arm_stages(job.arch, job.arm, cfg, job.seed)]
    blob = json.dumps({"stages": stages, "n_per_category": cfg.n_per_category, "i2t_n": cfg.n_i2t,
                       "eval_seed": EVAL_SEED, "base": registry.base_fingerprint(job.arch),
                       "scorer": scorer_fingerprint(), "v": 1},
                      sort_keys=True, default=str)  # changing any of this text changes every fingerprint
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished(job: Job, cfg: ReproduceConfig, runs_dir: Path) -> dict | None:
    """The job's result file if it exists and carries the job's current fingerprint, else None."""
    path = runs_dir / f"{job.job_id}.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return res if res.get("fingerprint") == fingerprint(job, cfg) else None

