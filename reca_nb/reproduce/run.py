"""Running the sweep: one job (train, evaluate, write its file), then every job, here or in worker processes.

Each job is written atomically to OUT/runs/<job_id>.json the moment it finishes; a rerun skips jobs whose file
carries the same fingerprint, so an interrupted sweep loses at most the jobs in flight.
"""
from __future__ import annotations

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
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from reca_nb.models import registry
from reca_nb.reproduce.claims import VERDICTS
from reca_nb.reproduce.plan import EVAL_SEED, Job, ReproduceConfig, arm_stages, fingerprint, finished, plan
from reca_nb.reproduce.report import write_report


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
    return {"reca_loss_early": early, "reca_loss_late": late,
            "reca_ratio": late / early if early else math.nan}


def run_job(job: Job, cfg: ReproduceConfig, runs_dir: Path) -> dict:
    """Train and evaluate one job; writes runs_dir/<job_id>.json atomically and returns the result."""
    import torch

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
        "train_s": round(t_train, 1), "eval_s": round(time.time() - t1, 1),
        "wall_s": round(time.time() - t0, 1),
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


# ----------------------------------------------------------------------------- the sweep

def warm_pools(jobs, cfg: ReproduceConfig):
    """Build the shape-world pools once, before job processes start (they then only read the disk cache)."""
    from reca_nb.world.data import image_pool, t2i_pool

    seen = set()
    for job in jobs:
        for s in arm_stages(job.arch, job.arm, cfg, job.seed):
            key = (s.n_images, s.n_t2i_pairs, s.data_seed, registry.image_size(job.arch))
            if key not in seen:
                seen.add(key)
                image_pool(s.n_images, s.data_seed, key[3])
                t2i_pool(s.n_t2i_pairs, s.data_seed, key[3])


def _cli_args(cfg: ReproduceConfig) -> list:
    return [f"--{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)]


def run_all(jobs, cfg: ReproduceConfig, runs_dir: Path) -> dict:
    """Run `jobs`; returns {job_id: error text} for the failures (no result file: a rerun retries them)."""
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



# ----------------------------------------------------------------------------- CLI

USAGE = """usage: python -m reca_nb.reproduce [--preset=full|ci] [--only=claim1,claim2,...] [--archs=a,b]
       [--seeds=N] [--steps=N] [--sft_steps=N] [--eval_per_category=N] [--i2t_n=N] [--blur_sigma=S]
       [--jobs=N] [--threads=N] [--device=auto|cpu|cuda] [--out=DIR] [--progress=False]
  writes OUT/runs/<job>.json (one per finished job; reruns skip them), OUT/claims.md, OUT/claims.csv and
  OUT/figures/*.png. OUT defaults to results/ (ci: $RECA_NB_HOME/reproduce-ci)."""


def main(argv=None):
    from reca_nb.config import apply_overrides, cli

    own, args = cli(argv, USAGE, cli_keys=("worker",))
    worker = own.get("worker")
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
          f"steps); {cfg.jobs} process(es) x {cfg.threads} thread(s), device {cfg.device}; "
          f"out: {cfg.out_dir}")
    for arch, why in skipped.items():
        print(f"  skipping {arch}: {why}")
    failures = {}
    if todo:
        warm_pools(todo, cfg)
        failures = run_all(todo, cfg, runs_dir)
        try:
            (cfg.out_dir / "work").rmdir()  # empty once every job has finished (failed jobs keep theirs)
        except OSError:
            pass
    rows = write_report(cfg, skipped, failures, time.time() - t0)
    main_rows = [r for r in rows if not r["secondary"]]
    print(f"wrote {cfg.out_dir / 'claims.md'} and claims.csv ({len(main_rows)} comparisons: "
          + ", ".join(f"{v} {sum(r['verdict'] == v for r in main_rows)}" for v in (*VERDICTS, "skipped"))
          + f"); {len(failures)} failed job(s); {time.time() - t0:.0f} s")
    if failures:
        raise SystemExit(1)
    return rows
