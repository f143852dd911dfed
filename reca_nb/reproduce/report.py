"""The claims table: rows from the finished job files, claims.csv, claims.md, figures, and typed readers.

The table (OUT/claims.md, OUT/claims.csv) and figures (OUT/figures/*.png) are rebuilt from whatever job files
exist, so partial sweeps produce partial (honest) tables. Notebooks read the shipped results through
`load_results()` (the job files) and `load_claims()` (claims.csv), never by hand.

    runs = report.load_results()                    # {job_id: Run} from results/runs/*.json
    report.seed_values(runs, "showo-clip", "reca", "t2i.overall")   # one value per seed, seed order
    rows = report.load_claims()                     # [ClaimRow] from results/claims.csv, typed
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from reca_nb import plotting
from reca_nb.paths import REPO_ROOT
from reca_nb.reproduce.claims import ALL_ARCHS, ARMS, CLAIMS, VERDICTS, verdict, verdict_all_true
from reca_nb.reproduce.plan import ReproduceConfig, canonical_arm, finished, plan, scorer_fingerprint

RESULTS_DIR = REPO_ROOT / "results"  # the shipped sweep (python -m reca_nb.reproduce --preset=full)


# ----------------------------------------------------------------------------- rows

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
                    return [_metric(r, metric) for r in results.values()
                            if r["arch"] == arch and r["arm"] == arm]

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
               "b_mean", "b_std", "n_b", "diff", "se", "bar", "verdict", "why", "secondary", "command",
               "title")


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
    return (f"| {r['claim'][5:]} | {r['arch']} | {r['metric']} | {arms} | {r['paper']} | {a} | {b} | "
            f"{diff} | {verdict_txt} | `{r['command']}` |")


HEAD = ("| # | arch | metric | arms (paper's direction) | paper | A: mean ± std over seeds | B | "
        "A − B ± SE | verdict | command |\n|---|---|---|---|---|---|---|---|---|---|")


def provenance(results: dict, runs_dir: Path) -> str:
    """Where the table's numbers were computed, from the job files alone (a sweep may span several sittings,
    so no one invocation's wall time describes it). README and notebook 06 quote this paragraph."""
    runs_dir = Path(runs_dir)
    shown = runs_dir.relative_to(REPO_ROOT) if runs_dir.is_relative_to(REPO_ROOT) else runs_dir
    if not results:
        return f"**Provenance.** No job files in `{shown}/` yet."
    by_device = {}
    for r in results.values():
        by_device.setdefault(r["device"], []).append(r)
    parts, hours = [], []
    for device, rs in sorted(by_device.items(), key=lambda kv: -len(kv[1])):
        threads = sorted({r.get("threads", 1) for r in rs})
        plural = "s" if threads != [1] else ""
        parts.append(f"{len(rs)} on {device} ({'/'.join(map(str, threads))} torch thread{plural} each)")
        # a CPU job uses its threads' cores for its wall time; a GPU job's hours are its wall time
        seconds = sum(r["wall_s"] * (r.get("threads", 1) if device == "cpu" else 1) for r in rs)
        hours.append(f"{seconds / 3600:.1f} {'CPU-hours' if device == 'cpu' else f'{device} job-hours'}")
    days = sorted(r["finished"][:16].replace("T", " ") for r in results.values() if r.get("finished"))
    when = f", finished {days[0]} to {days[-1]} UTC" if days else ""
    return (f"**Provenance.** {len(results)} job files in `{shown}/`{when}: {', '.join(parts)}; "
            f"job time {', '.join(hours)}.")


def write_markdown(rows, results, cfg: ReproduceConfig, skipped, failures, wall: float, path: Path,
                   figures: list):
    main_rows = [r for r in rows if not r["secondary"]]
    counts = {v: sum(r["verdict"] == v for r in main_rows) for v in (*VERDICTS, "skipped")}
    lines = [
        "# RecA claims in miniature",
        "",
        f"Produced by `{cfg.command()}` on {platform.node()} ({platform.machine()}, {cfg.jobs} job process(es) × "
        f"{cfg.threads} torch thread(s)), {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"this invocation {wall:.0f} s wall.",
        "",
        provenance(results, Path(path).parent / "runs"),  # the job files: devices, dates, job time
        "",
    ]
    if cfg.ci:
        lines += ["> **CI preset**: 1 seed, a few training steps, a tiny eval. It checks that the table is "
                  "produced and the verdict logic runs; it says nothing about the paper's claims.", ""]
    lines += [
        f"**Summary** ({len(main_rows)} comparisons): "
        + ", ".join(f"{v}: {n}" for v, n in counts.items()) + ".",
        "",
        "**Method.** Every arm starts from the shipped base checkpoint "
        "(`data/checkpoints/<arch>.safetensors`) "
        f"and is trained with `reca_nb.train.train` for the steps of its recipe (preset `reca`; "
        f"{'ci: 3 steps, batch 4' if cfg.ci else 'showo/janus/harmon/openuni 400, BAGEL 200 RecA steps'}), "
        f"{cfg.n_seeds} seed(s) per arm (the seed sets the batch order, masking / noise and the eval "
        "sampling "
        f"noise). Eval: GenEval-mini on {6 * cfg.n_per_category} held-out prompts ({cfg.n_per_category} per "
        f"category, scored by the shipped detector, sha256 {scorer_fingerprint()[:12]}...), I2T exact match "
        f"on {cfg.n_i2t} held-out scenes. "
        "`reca_ratio` = RecA loss late / early in the run (mean of the last vs first 10 % of logged rows).",
        "",
        "**Verdict rule** (pre-registered, `reca_nb.reproduce.verdict`): diff = mean(A) − mean(B), "
        "SE = Welch "
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
        lines += ["## Claim 1 per GenEval category (RecA vs control)", "", HEAD,
                  *[_row_md(r) for r in detail], ""]
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
    keys = [("t2i.overall", "T2I overall"), ("i2t.exact", "I2T exact"),
            ("reca_loss_early", "RecA loss early"), ("reca_loss_late", "RecA loss late"),
            ("reca_ratio", "late/early")]
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

def _panels(rows: list, results: dict, cfg: ReproduceConfig) -> dict:
    """{(arch, metric): {arm: [value per seed]}} for a claim's comparisons (plotting.plot_claim's input)."""
    panels = {}
    for r in rows:
        if r["verdict"] == "skipped" or r["metric"] == "frozen_identical":
            continue
        arms = panels.setdefault((r["arch"], r["metric"]), {})
        for arm in (r["arm_a"], r["arm_b"]):
            if arm and arm not in arms:
                canon = canonical_arm(r["arch"], arm, cfg)
                arms[arm] = [v for v in (_metric(x, r["metric"]) for x in results.values()
                                         if x["arch"] == r["arch"] and x["arm"] == canon) if v is not None]
    return panels


def make_figures(rows, results, cfg: ReproduceConfig, fig_dir: Path) -> list:
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = {}
    for key in cfg.claim_keys():
        rs = [r for r in rows if r["claim"] == key and not r["secondary"]]
        figs[key] = plotting.plot_claim(_panels(rs, results, cfg), f"Claim {key[5:]}: {CLAIMS[key].short}")
    if "claim1" in cfg.claim_keys():
        figs["claim1_categories"] = plotting.plot_category_diffs(rows)
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


def write_report(cfg: ReproduceConfig, skipped: dict, failures: dict, wall: float) -> list:
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


# ----------------------------------------------------------------------------- typed readers

@dataclass(frozen=True)
class Run:
    """One finished job file, OUT/runs/<job_id>.json."""
    job_id: str
    arch: str
    arm: str
    seed: int
    steps: int  # training steps over all stages (0: the base, evaluated as is)
    metrics: dict  # {"t2i": {"overall": .., <category>: ..}, "i2t": {"exact": ..}, "reca_ratio": .., ...}
    history: list  # logged training rows (step, stage, losses)
    device: str
    wall_s: float

    def metric(self, name: str) -> float | None:
        """A metric by dotted name ("t2i.overall", "i2t.exact", "reca_ratio"); None when the job has none."""
        return _metric({"metrics": self.metrics}, name)


def load_results(out_dir=None) -> dict:
    """{job_id: Run} for every job file in OUT/runs (default: the shipped results/), by arch, arm, seed."""
    runs_dir = Path(out_dir or RESULTS_DIR) / "runs"
    runs = [json.loads(p.read_text()) for p in runs_dir.glob("*.json")]
    runs.sort(key=lambda r: (r["arch"], r["arm"], r["seed"]))
    return {r["job_id"]: Run(r["job_id"], r["arch"], r["arm"], int(r["seed"]), int(r["steps"]), r["metrics"],
                             r.get("history", []), r.get("device", ""), float(r.get("wall_s", math.nan)))
            for r in runs}


def shipped_runs(arch: str, arm: str, runs_dir: Path | None = None) -> list:
    """The job files of one arm as dicts, one per seed in seed order (`runs/<arch>-<arm>-s<seed>.json`)."""
    runs_dir = Path(runs_dir or RESULTS_DIR / "runs")
    paths = sorted(runs_dir.glob(f"{arch}-{arm}-s*.json"), key=lambda p: int(p.stem.rsplit("-s", 1)[1]))
    if not paths:
        raise FileNotFoundError(f"no job files {arch}-{arm}-s*.json in {runs_dir}; run "
                                f"`python -m reca_nb.reproduce --archs={arch}`")
    return [json.loads(p.read_text()) for p in paths]


def seed_values(runs: dict, arch: str, arm: str, metric: str) -> list:
    """One arm's metric, one value per seed in seed order (the samples `verdict` compares)."""
    return [r.metric(metric) for r in runs.values() if r.arch == arch and r.arm == arm]


@dataclass(frozen=True)
class ClaimRow:
    """One row of claims.csv (CSV_COLUMNS), with numbers as numbers: nan / 0 where the CSV cell is empty."""
    claim: str  # "claim1" .. "claim6"
    arch: str
    metric: str
    arm_a: str
    expected: str  # ">" or "<": the paper's direction of A vs B
    arm_b: str  # "" for a check on A alone
    paper: str
    a_mean: float
    a_std: float
    n_a: int
    b_mean: float
    b_std: float
    n_b: int
    diff: float  # mean(A) - mean(B)
    se: float  # Welch standard error over seeds
    bar: float  # max(2 SE, min effect)
    verdict: str  # one of VERDICTS, or "skipped"
    why: str
    secondary: bool  # a detail row (claim 1 per category)
    command: str
    title: str

    @property
    def number(self) -> int:
        return int(self.claim[5:])


def load_claims(path=None) -> list:
    """The rows of claims.csv (default: the shipped results/claims.csv) as ClaimRow."""
    parse = {"float": lambda v: float(v) if v else math.nan, "int": lambda v: int(v) if v else 0,
             "bool": lambda v: v == "True", "str": str}
    with open(path or RESULTS_DIR / "claims.csv", newline="") as f:
        return [ClaimRow(**{fl.name: parse[fl.type](r[fl.name]) for fl in fields(ClaimRow)})
                for r in csv.DictReader(f)]
