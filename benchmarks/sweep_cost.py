"""What `make reproduce` (the full claims table) costs on this machine, projected from short timed runs.

    python benchmarks/sweep_cost.py [--cores=2] [--steps=4] [--archs=all] [--out=results/bench.md]

The sweep is `reca_nb.reproduce.plan(full preset)`: every job trains one or two stage recipes from the shipped
base, then runs GenEval-mini (180 prompts) and I2T (120 scenes). Here, per architecture in its own subprocess
(one torch thread, as `make reproduce` runs each job), every distinct stage recipe of the plan is timed:
train() for 1 + `steps` steps on a copy of the base, seconds per step = the time between the first and the
last optimizer step / `steps` (the first step pays lazy set-up). The evaluation is timed on a sixth of the
prompts and scenes and scaled up. A job's projected cost = sum over its stages of steps x s/step + evaluation;
the sweep's wall time = those job costs scheduled longest-first on `cores` one-thread workers
(`--jobs=cores`).

Recorded job files (`--runs`, default results/runs/*.json) that ran on a CPU are shown next to the projection
as a check of the method: their wall_s was measured on the same kind of machine by `make reproduce` itself.
When every job has one, they are also replayed in plan order on `cores` workers, as `make reproduce` hands
them out: the wall time of the sweep measured job by job, even when it ran in several sittings.
"""
import copy
import heapq
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

DEFAULTS = {"archs": "all", "steps": 4, "cores": 2, "target_h": 2.0, "out": "", "runs": "results/runs"}
EVAL_FRACTION = 6  # time the evaluation on 1/6 of the prompts and scenes


def _kind(recipe) -> str:
    """Stage recipes that cost the same per step share one timing (seed and step counts do not matter)."""
    d = {k: v for k, v in asdict(recipe).items() if k not in ("seed", "steps", "warmup", "stage")}
    return json.dumps(d, sort_keys=True, default=str)


def plan_stages(archs: list) -> dict:
    """{arch: [(job_id, [(kind, steps), ...]), ...]} for the full preset's plan."""
    from reca_nb import reproduce as rp

    cfg = rp.ReproduceConfig(archs=",".join(archs), progress=False)
    jobs, _ = rp.plan(cfg)
    out = {a: [] for a in archs}
    for job in jobs:
        stages = rp.arm_stages(job.arch, job.arm, cfg, job.seed)
        out[job.arch].append((job.job_id, [(_kind(s), s.steps) for s in stages]))
    return out


def worker(arch: str, cfg: dict) -> dict:
    import torch

    from reca_nb.models import registry
    from reca_nb.evaluation import geneval
    from reca_nb import reproduce as rp
    from reca_nb.train import train

    torch.set_num_threads(1)
    rcfg = rp.ReproduceConfig(archs=arch, progress=False)
    kinds = {}
    for job in rp.plan(rcfg)[0]:
        for s in rp.arm_stages(job.arch, job.arm, rcfg, job.seed):
            kinds.setdefault(_kind(s), s)
    base = registry.load_base(arch)
    stamps = []  # the clock after every optimizer step: a step's cost is the gap between two of them
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    per_step = {}
    for key, recipe in kinds.items():
        stamps.clear()
        train(copy.deepcopy(base), replace(recipe, steps=1 + cfg["steps"], warmup=1, save_every=0, eval_every=0,
                                           device="cpu"), progress=False)
        per_step[key] = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(rp.EVAL_SEED)
    geneval.evaluate_t2i(base, 30 // EVAL_FRACTION, seed=rp.EVAL_SEED, generator=gen, progress=False)
    geneval.evaluate_i2t(base, n=120 // EVAL_FRACTION, progress=False)
    eval_s = (time.perf_counter() - t) * EVAL_FRACTION
    return {"arch": arch, "per_step": per_step, "eval_s": eval_s}


def _cpu_wall_s(path: Path):
    r = json.loads(path.read_text()) if path.exists() else {}
    return r["wall_s"] if str(r.get("device", "")).startswith("cpu") and "wall_s" in r else None


def recorded(arch: str, runs_dir: Path) -> list:
    """wall_s of the job files of `arch` in `runs_dir` that ran on a CPU."""
    return [w for p in sorted(runs_dir.glob(f"{arch}-*.json")) if (w := _cpu_wall_s(p)) is not None]


def replayed(names: list, cores: int, runs_dir: Path):
    """The recorded CPU jobs' wall_s handed to `cores` workers in plan order, as `make reproduce --jobs=cores`
    hands them out: the wall time of one uninterrupted sweep (process start-up and the report aside). None
    unless every job of the plan has a CPU job file."""
    from reca_nb import reproduce as rp

    jobs, _ = rp.plan(rp.ReproduceConfig(archs=",".join(names), progress=False))
    walls = [_cpu_wall_s(runs_dir / f"{j.job_id}.json") for j in jobs]
    return None if None in walls else schedule(walls, cores, longest_first=False)


def schedule(costs: list, cores: int, longest_first: bool = True) -> float:
    """Wall time of `costs` on `cores` workers, each taking the next job when it is free (longest first, or
    in the given order)."""
    free = [0.0] * cores
    for c in (sorted(costs, reverse=True) if longest_first else costs):
        heapq.heapreplace(free, free[0] + c)
    return max(free)


def main(argv):
    from reca_nb.models.registry import ARCHS, check
    from bench_report import options

    cfg, one = options(argv, DEFAULTS)
    if int(cfg["steps"]) < 1 or int(cfg["cores"]) < 1:
        raise SystemExit("--steps and --cores must be >= 1")
    if one:
        print("RESULT " + json.dumps(worker(one, cfg)), flush=True)
        return None
    from bench_report import machine_line, publish, run_worker

    names = list(ARCHS) if cfg["archs"] == "all" else [check(a.strip()) for a in str(cfg["archs"]).split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    from reca_nb.paths import REPO_ROOT

    runs_dir = REPO_ROOT / str(cfg["runs"])
    stages = plan_stages(names)
    print(f"sweep cost: {sum(len(v) for v in stages.values())} jobs; timing {cfg['steps']} steps per distinct "
          "stage recipe, one thread", flush=True)
    rows, costs, failed = [], [], []
    for arch in names:
        t = time.perf_counter()
        r = run_worker(__file__, [f"--_worker={arch}", f"--steps={cfg['steps']}"], env, arch)
        if r is None:
            failed.append(arch)
            continue
        job_costs = [sum(n * r["per_step"][k] for k, n in st) + r["eval_s"] for _, st in stages[arch]]
        costs += job_costs
        rec = recorded(arch, runs_dir)
        steps = sum(n for _, st in stages[arch] for _, n in st)
        per_step = f"{min(r['per_step'].values()):.2f}–{max(r['per_step'].values()):.2f}"
        rows.append([arch, len(job_costs), steps, per_step,
                     f"{r['eval_s']:.0f}", f"{sum(job_costs) / 60:.0f}",
                     f"{sum(rec) / 60:.0f} ({len(rec)} jobs, projected {sum(job_costs) / 60:.0f})"
                     if len(rec) == len(job_costs) else ("n/a" if not rec else f"{len(rec)} of {len(job_costs)} jobs")])
        print(f"  {arch:<11} {len(job_costs):3d} jobs {sum(job_costs) / 60:6.1f} CPU-min  "
              f"[{time.perf_counter() - t:.0f} s]", flush=True)
    cores, target = int(cfg["cores"]), float(cfg["target_h"]) * 3600
    wall = schedule(costs, cores)
    header = ["arch", "jobs", "training steps", "s/step (1 thread)", "eval s/job", "projected CPU-min",
              "recorded CPU-min (CPU job files)"]
    summary = (f"all: {sum(costs) / 3600:.2f} CPU-hours; projected `make reproduce REPRODUCE_ARGS=--jobs={cores}` "
               f"wall time on {cores} cores: **{wall / 3600:.2f} h** (target {target / 3600:g} h: ratio "
               f"{wall / target:.2f})")
    replay = replayed(names, cores, runs_dir)
    if replay is not None:
        summary += (f"; the recorded job files replayed in plan order on {cores} workers (one uninterrupted "
                    f"`make reproduce --jobs={cores}`, start-up aside): **{replay / 3600:.2f} h** (ratio "
                    f"{replay / target:.2f})")
    intro = (f"## What the full claims table costs on a CPU\n\n`python benchmarks/sweep_cost.py` "
             f"({machine_line(1)}): each distinct stage recipe of `reproduce.plan` timed for "
             f"{cfg['steps']} steps after a first one, evaluation timed on 1/{EVAL_FRACTION} and scaled; "
             "jobs scheduled longest-first on one-thread workers. The recorded column sums `wall_s` of "
             "job files that `make reproduce` itself ran on a 2-core CPU (a check of the projection).")
    publish(cfg["out"], "sweep_cost", intro, header, rows, failed=len(failed), after=summary)
    return {"cpu_s": sum(costs), "wall_s": wall}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
