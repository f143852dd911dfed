"""Plotting helpers for the notebooks: matplotlib only, every function returns a Figure with a fixed size.

  image_grid(images, nrow=8, titles=None)  samples / reconstructions side by side
  plot_geneval(results)                    GenEval-mini bars: one group per category, one bar per run
  plot_history(history, keys=None)         training curves from the history list train() returns
  plot_collapse(histories)                 the copy-collapse picture (RecA paper §3.2, practice 1): RecA loss
                                           per run on a log axis, and the collapse ratio beside it
  plot_bars(groups)                        grouped bars, e.g. {arch: {arm: I2T exact}}
  plot_paired_diffs(diffs, labels)         one bar per matched pair (A - B) and their mean, per metric
  plot_curves(curves)                      one panel per group, one line per arm, e.g. I2T over steps
  plot_premise(trajectories)               RecA's premise over training: reconstruction from the model's own
                                           und embedding (with chance and the gate) and the prompt gap
  plot_claim(panels)                       a claim of the reproduce table: arm means, std and seeds per panel
  plot_category_diffs(rows)                claim 1 per GenEval-mini category: RecA − control per arch

Figures are plain `matplotlib.figure.Figure` objects, not registered with pyplot: no global state, no
backend switch, nothing to close, headless-safe (Agg). In Jupyter, leave the figure as the cell's last
expression (or `display(fig)`) to show it once; elsewhere `fig.savefig(path)`.

Every figure of the package is made by `new_figure`. IPython only knows how to draw a Figure as a picture
once the inline backend has been activated (`%matplotlib inline`, or pyplot drawing once); a Figure that
never met pyplot would print as `<Figure size ...>`. So `new_figure` registers a PNG formatter for Figure
with the running IPython shell (JupyterLab, Notebook, VS Code, Colab), unless one is registered already
(the user's own `%matplotlib inline` / `%config InlineBackend` choice wins).
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure

from reca_nb.world.images import as_image_batch
from reca_nb.world.shapes import CATEGORIES, CATEGORY_TITLES

CELL = 1.1  # inches per image in a grid


def _figure_png(fig) -> bytes:
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def register_ipython_formatter() -> bool:
    """Teach the running IPython shell to show a Figure as a PNG; True when a formatter is in place."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    png = shell.display_formatter.formatters["image/png"]
    if png.for_type(Figure) is None:
        png.for_type(Figure, _figure_png)
    return True


def new_figure(**kwargs) -> Figure:
    """`Figure(**kwargs)` that renders as a picture when it is a notebook cell's result."""
    register_ipython_formatter()
    return Figure(**kwargs)


def _max_lines(texts) -> int:
    return max((s.count("\n") + 1 for s in texts), default=0) if texts else 0


def image_grid(images, nrow: int = 8, titles=None, title: str | None = None, row_titles=None, col_titles=None):
    """Images (anything `as_image_batch` reads) in a grid with `nrow` images per row; one axis per image.
    `titles`: one small title per image; for a table of pictures, `col_titles` (one per column, wrapped, above
    the top row) and `row_titles` (one per row, left of the first column) instead."""
    x = as_image_batch(images)  # (B, 3, H, W)
    B = len(x)
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    ncol, nrows = min(nrow, B), math.ceil(B / nrow)
    for name, given, want, unit in (("titles", titles, B, "images"), ("row_titles", row_titles, nrows, "rows"),
                                    ("col_titles", col_titles, ncol, "columns")):
        if given is not None and len(given) != want:
            raise ValueError(f"got {len(given)} {name} for {want} {unit}")
    # wrapped to the column's width by hand: matplotlib's wrap=True wraps at the figure's edge, so long
    # titles ran into their neighbours
    titles = [textwrap.fill(str(c), 22) for c in titles] if titles is not None else None
    col_titles = [textwrap.fill(str(c), 16) for c in col_titles] if col_titles is not None else None
    head = 0.16 * _max_lines(col_titles)
    pad = 0.05 + 0.12 * _max_lines(titles)
    left = 0.5 if row_titles is not None else 0
    height = (CELL + pad) * nrows + head + (0.4 if title else 0)
    fig = new_figure(figsize=(CELL * ncol + left, height), layout="constrained")
    axes = fig.subplots(nrows, ncol, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= B:
            fig.delaxes(ax)
            continue
        ax.imshow(x[k].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[k], fontsize=6)
        if col_titles is not None and k < ncol:
            ax.set_title(col_titles[k], fontsize=7)
        if row_titles is not None and k % ncol == 0:
            ax.set_ylabel(str(row_titles[k // ncol]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_geneval(results: dict, title: str = "GenEval-mini"):
    """Grouped bars: x = the six categories + Overall, one coloured bar per run. `results`: name -> score dict
    (a `score_t2i` dict or an eval row {"t2i": ...})."""
    if not results:
        raise ValueError("plot_geneval needs at least one run")
    cols = list(CATEGORIES) + ["overall"]
    fig = new_figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(results)
    xs = np.arange(len(cols))
    for i, (name, r) in enumerate(results.items()):
        r = r.get("t2i", r)
        vals = [r.get(c, np.nan) for c in cols]
        ax.bar(xs + (i - (len(results) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(xs, [CATEGORY_TITLES[c] for c in CATEGORIES] + ["Overall"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(results), 4))
    return fig


def _series(history, key):
    """(steps, values) of the training rows of `history` that have a finite `key`."""
    pts = [(r["step"], r[key]) for r in history
           if "eval" not in r and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _eval_series(history, key):
    """(steps, values) from eval rows; `key` like "t2i.overall" or "i2t.exact"."""
    part, name = key.split(".", 1)
    pts = [(r["step"], r["eval"][part][name]) for r in history
           if "eval" in r and name in r["eval"].get(part, {})]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_history(history: list, keys=None, logy: bool = False, title: str | None = None):
    """One panel per key, x = step. Default keys: the loss terms present. Eval metrics are plotted only when
    asked for by name: "eval.t2i.overall", "eval.i2t.exact", ..."""
    if not history:
        raise ValueError("empty history")
    if keys is None:
        present = {k for r in history if "eval" not in r for k in r}
        keys = [k for k in ("loss", "loss_reca", "loss_i2t", "loss_t2i") if k in present]
        if not keys:
            raise ValueError(f"no loss keys in history; available: {sorted(present)}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    fig = new_figure(figsize=(3.6 * len(keys), 3.0), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps, vals = _eval_series(history, key[5:]) if key.startswith("eval.") else _series(history, key)
        if not steps:
            raise ValueError(f"key {key!r} not found in history")
        ax.plot(steps, vals, marker="o" if key.startswith("eval.") else None, ms=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_collapse(histories: dict, title: str = "Copy collapse vs information bottleneck"):
    """Left: RecA loss per run (log y). Right: collapse_ratio per run (RecA loss / bottleneck reference;
    near 0 means the generator copies its input instead of using semantics). `histories`: name -> history."""
    if not histories:
        raise ValueError("plot_collapse needs at least one run")
    fig = new_figure(figsize=(9, 3.4), layout="constrained")
    ax_l, ax_r = fig.subplots(1, 2)
    for name, hist in histories.items():
        steps, vals = _series(hist, "loss_reca")
        if not steps:
            raise ValueError(f"run {name!r} has no 'loss_reca' entries")
        ax_l.plot(steps, vals, label=name)
        steps, vals = _series(hist, "collapse_ratio")
        ax_r.plot(steps, vals, label=name)  # an empty line when the run was not monitored, to keep colours
    ax_l.set_yscale("log")
    ax_l.set_title("RecA loss")
    ax_r.set_title("collapse ratio")
    ax_r.axhline(1.0, color="grey", lw=0.8, ls="--")
    for ax in (ax_l, ax_r):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_l.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_bars(groups: dict, title: str = "", ylabel: str = "", ylim=(0, 1.05)):
    """Grouped bars: `groups` = {group: {arm: value}} (e.g. {arch: {"base": .9, "RecA only": .4}})."""
    if not groups:
        raise ValueError("plot_bars needs at least one group")
    arms = list(dict.fromkeys(a for g in groups.values() for a in g))
    fig = new_figure(figsize=(max(4.0, 1.6 * len(groups) + 1), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(arms)
    xs = np.arange(len(groups))
    for i, a in enumerate(arms):
        vals = [g.get(a, np.nan) for g in groups.values()]
        bars = ax.bar(xs + (i - (len(arms) - 1) / 2) * width, vals, width, label=a)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(xs, list(groups))
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(arms), 4))
    return fig


def plot_paired_diffs(diffs: dict, labels, title: str = "", xlabel: str = "matched pair"):
    """Paired differences, one panel per metric: `diffs` = {metric: [arm A - arm B per matched pair]},
    `labels` names the pairs (x axis). Bars per pair, a zero line, and the mean difference dashed."""
    if not diffs:
        raise ValueError("plot_paired_diffs needs at least one metric")
    labels = [str(x) for x in labels]
    for name, vals in diffs.items():
        if len(vals) != len(labels):
            raise ValueError(f"metric {name!r} has {len(vals)} differences for {len(labels)} pairs")
    fig = new_figure(figsize=(max(3.2, 0.28 * len(labels) + 1.0) * len(diffs), 3.4), layout="constrained")
    axes = fig.subplots(1, len(diffs), squeeze=False)[0]
    xs = np.arange(len(labels))
    for ax, (name, vals) in zip(axes, diffs.items()):
        vals = np.asarray(vals, dtype=float)
        ax.bar(xs, vals, 0.7, color=["tab:blue" if v >= 0 else "tab:red" for v in vals])
        ax.axhline(0.0, color="black", lw=0.8)
        mean = float(np.mean(vals))
        ax.axhline(mean, color="grey", lw=1.0, ls="--", label=f"mean {mean:+.2g}")
        ax.set_xticks(xs, labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(curves: dict, title: str = "", ylabel: str = "", xlabel: str = "step", ylim=(-0.05, 1.05),
                ncols: int = 4):
    """Small multiples of metric-vs-step curves: `curves` = {panel: {line: (steps, values)}}, e.g.
    {arch: {"RecA only": ([0, 20, 40], [.9, .5, .2]), "RecA + I2T": (...)}}; one panel per key, shared y."""
    if not curves:
        raise ValueError("plot_curves needs at least one panel")
    n = len(curves)
    ncol = min(ncols, n)
    nrows = math.ceil(n / ncol)
    fig = new_figure(figsize=(3.2 * ncol, 2.8 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncol, squeeze=False, sharey=True)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            fig.delaxes(ax)
            continue
        panel, lines = list(curves.items())[k]
        for name, (steps, vals) in lines.items():
            if len(steps) != len(vals):
                raise ValueError(f"{panel}/{name}: {len(steps)} steps but {len(vals)} values")
            ax.plot(steps, vals, marker="o", ms=3, label=name)
        ax.set_title(str(panel), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        if k % ncol == 0:
            ax.set_ylabel(ylabel)
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


RECON_CHANCE = 0.23  # GenEval-mini spec of a prompt-ignoring generator (data/scorer/README.md)
RECON_GATE = 0.5  # a base "reads its understanding space" from here on (issue 19's gate)


def plot_premise(trajectories: dict, title: str = "RecA's premise over training"):
    """`trajectories` = {label: [{"step", "recon": {"spec"}, "prompt_gap": {"gap", "gap_std"}}, ...]}, the
    "trajectory" a `python -m reca_nb.reproduce.premise --track_every=N` run records. Left: reconstruction
    spec from the model's own understanding embedding, with chance and the gate; right: the prompt gap (how
    much T2I uses its text), with its spread over noise draws."""
    if not trajectories:
        raise ValueError("plot_premise needs at least one trajectory")
    fig = new_figure(figsize=(9.5, 3.4), layout="constrained")
    ax_r, ax_g = fig.subplots(1, 2)
    for label, rows in trajectories.items():
        if not rows:
            raise ValueError(f"trajectory {label!r} is empty")
        steps = [r["step"] for r in rows]
        line, = ax_r.plot(steps, [r["recon"]["spec"] for r in rows], marker="o", ms=4, label=label)
        gap = np.array([r["prompt_gap"]["gap"] for r in rows])
        std = np.array([r["prompt_gap"].get("gap_std", 0.0) for r in rows])
        ax_g.errorbar(steps, gap, yerr=std, marker="o", ms=4, capsize=2, color=line.get_color(), label=label)
    ax_r.axhline(RECON_CHANCE, color="grey", ls=":", lw=1, label=f"chance ({RECON_CHANCE})")
    ax_r.axhline(RECON_GATE, color="tab:red", ls="--", lw=1, label=f"gate ({RECON_GATE})")
    ax_r.set(title="reconstruction from its own und embedding", xlabel="RecA step", ylabel="GenEval spec",
             ylim=(0, 1))
    ax_g.set(title="prompt gap: T2I's use of its text", xlabel="RecA step",
             ylabel="(L shuffled − L true) / L shuffled", ylim=(0, None))
    for ax in (ax_r, ax_g):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_claim(panels: dict, title: str = ""):
    """One panel per (arch, metric) of a claim: bars = arm means over seeds, error bars = std over seeds,
    dots = the seeds. panels: {(arch, metric): {arm: [value per seed]}}; None with nothing to draw."""
    if not panels:
        return None
    fig = new_figure(figsize=(max(3.2 * len(panels), 4.0), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, ((arch, metric), arms) in zip(axes, panels.items()):
        for i, vals in enumerate(arms.values()):
            finite = [v for v in vals if math.isfinite(v)]
            mean = float(np.mean(finite)) if finite else 0
            std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
            ax.bar(i, mean, 0.6, yerr=std, capsize=3, color=f"C{i}", alpha=0.8)
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(arms)), list(arms), rotation=20, fontsize=8)
        ax.set_title(f"{arch}: {metric}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_category_diffs(rows: list):
    """Claim 1 per GenEval-mini category: RecA − control (mean over seeds, ± SE) per arch, from the claims
    table's rows (reca_nb.reproduce.report.claim_rows); None without detail rows."""
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
