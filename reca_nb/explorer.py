"""The collapse explorer: a grid of precomputed RecA runs you can browse with sliders (notebook 02).

Each run starts from the Show-o VQ base (the collapse-prone miniature: the same VQ tokens in and out) and
changes one knob of the four practices:
  und_res    understanding input resolution: 32 = the target's own resolution (copy shortcut), 16, 8
  blur       Gaussian blur sigma on the understanding input (the paper's fallback bottleneck)
  prompts    "diverse" (>=360 templates) or "single" ("Describe the image.")
  i2t_ratio  I2T samples per RecA sample (0 = no understanding data mixed in)
For every run we keep the training curves (RecA loss, I2T loss, token agreement, collapse ratio), GenEval-mini
T2I and I2T scores after training, reconstructions of 8 held-out images and 8 T2I samples. They live in
data/explorer/ (a JSON of curves and scores + a safetensors of uint8 images), made by

    python -m reca_nb.explorer --jobs=2                 # how the shipped file was made (2 CPU cores, ≈ 40 min)
    python -m reca_nb.explorer --jobs=12 --device=cuda  # on a GPU: minutes

An interrupted run resumes: finished grid points are kept in data/explorer/.partial-showo-vq/ until the end.

`show(...)` draws one grid point (the non-interactive path, used under nbmake); `explore()` wraps it in
ipywidgets sliders.
"""
from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from reca_nb.paths import DATA_DIR
from reca_nb.plotting import new_figure

ARCH = "showo-vq"
GRID = {"und_res": (32, 16, 8), "blur": (0.0, 1.0), "prompts": ("diverse", "single"), "i2t_ratio": (0.0, 1.0)}
DEFAULTS = {"steps": 400, "batch": 32, "n_eval": 10, "seed": 0}  # 400: the claims table's RecA steps
EXPLORER_DIR = DATA_DIR / "explorer"
N_SHOW = 8  # images kept per run and kind


def run_id(und_res: int, blur: float, prompts: str, i2t_ratio: float) -> str:
    return f"und{und_res}-blur{blur:g}-{prompts}-i2t{i2t_ratio:g}"


def grid_points() -> list:
    return [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())]


# ----------------------------------------------------------------------------- precompute


def run_point(point: dict, steps: int, batch: int, n_eval: int, seed: int, device: str = "auto",
              threads: int = 1) -> tuple:
    """Train one grid point from the base and measure it -> (record dict, {name: uint8 images})."""
    from reca_nb.models import registry
    from reca_nb.evaluation import geneval
    from reca_nb.world import prompts
    from reca_nb.world import shapes
    from reca_nb.recipe import preset
    from reca_nb.train import train

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = registry.load_base(ARCH)
    recipe = replace(preset(ARCH, "reca"), und_res=point["und_res"], blur_sigma=point["blur"],
                     prompts=point["prompts"], i2t_ratio=point["i2t_ratio"],
                     lambda_i2t=1.0 if point["i2t_ratio"] > 0 else 0.0, steps=steps, batch=batch,
                     warmup=max(1, steps // 10), seed=seed, log_every=5, save_every=0, device=device)
    t0 = time.time()
    history = train(model, recipe, progress=False)
    trained_on = next(model.parameters()).device.type
    model.to("cpu").eval()
    t2i, t2i_imgs, _ = geneval.evaluate_t2i(model, n_eval, return_images=True, progress=False)
    i2t = geneval.evaluate_i2t(model, n=6 * n_eval, und_size=point["und_res"], progress=False)
    held = shapes.ShapeWorld(N_SHOW, seed=4242, kind="random", size=model.image_size).images()
    recon = model.reconstruct(recipe.und_transform(held, und_size=model.und_size),
                              [prompts.SINGLE_PROMPT] * N_SHOW, generator=torch.Generator().manual_seed(0))
    pick = list(range(0, len(t2i_imgs), max(1, len(t2i_imgs) // N_SHOW)))[:N_SHOW]
    keep = ("step", "loss_reca", "loss_i2t", "collapse_ratio", "token_agreement")
    record = {"point": point, "id": run_id(**point), "seconds": round(time.time() - t0, 1), "device": trained_on,
              "curves": [{k: r[k] for k in keep if k in r} for r in history if "eval" not in r],
              "t2i": {k: v for k, v in t2i.items() if k != "counts"}, "i2t": i2t}
    to8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()  # noqa: E731
    return record, {"recon": to8(recon), "t2i": to8(t2i_imgs[pick])}


def _worker(args):
    return run_point(*args)


def precompute(dest=EXPLORER_DIR, jobs: int = 1, device: str = "auto", threads: int = 1, points=None,
               **settings) -> Path:
    """Run every grid point (or `points`) and write dest/{ARCH}.json + dest/{ARCH}.safetensors.

    Each finished run is kept at once in dest/.partial-{ARCH}/, so an interrupted precompute resumes where it
    stopped (runs made with other settings or another GenEval-mini detector are run again)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from reca_nb.evaluation import geneval
    from reca_nb.models import registry
    from reca_nb.paths import atomic_write
    from reca_nb.recipe import preset
    from reca_nb.reproduce.plan import scorer_fingerprint
    from reca_nb.world import data

    cfg = {**DEFAULTS, **settings}
    points = points or grid_points()
    dest = Path(dest)
    partial = dest / f".partial-{ARCH}"
    partial.mkdir(parents=True, exist_ok=True)
    stamp = {"settings": cfg, "scorer": scorer_fingerprint()}

    def saved(point):
        path = partial / f"{run_id(**point)}.json"
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if record.pop("stamp", None) != stamp:
            return None
        return record, load_file(str(path.with_suffix(".safetensors")))

    def keep(record, imgs):
        rid = record["id"]
        atomic_write(partial / f"{rid}.safetensors", lambda t: save_file(imgs, str(t)))  # a json marks it done
        atomic_write(partial / f"{rid}.json", json.dumps({**record, "stamp": stamp}))

    results = {run_id(**p): r for p in points if (r := saved(p)) is not None}
    todo = [p for p in points if run_id(**p) not in results]
    base = registry.load_base(ARCH).eval()
    base_scores = {"t2i": {k: v for k, v in geneval.evaluate_t2i(base, cfg["n_eval"], progress=False).items()
                           if k != "counts"},
                   "i2t": geneval.evaluate_i2t(base, n=6 * cfg["n_eval"], progress=False)}
    # build the disk cache once, before the workers start
    data.image_pool(preset(ARCH).n_images, 0, base.image_size)
    args = [(p, cfg["steps"], cfg["batch"], cfg["n_eval"], cfg["seed"], device, threads) for p in todo]
    def finished_runs():  # (record, images) as each run finishes, on a pool or here
        if jobs > 1 and args:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                for done in as_completed([pool.submit(_worker, a) for a in args]):
                    yield done.result()
        else:
            yield from (run_point(*a) for a in args)

    for record, imgs in tqdm(finished_runs(), total=len(points), initial=len(results), desc="explorer runs"):
        keep(record, imgs)
        results[record["id"]] = (record, imgs)
    ordered = [results[run_id(**p)] for p in points]
    meta = {"arch": ARCH, "settings": cfg, "grid": {k: list(v) for k, v in GRID.items()}, "base": base_scores,
            "device": ", ".join(sorted({r["device"] for r, _ in ordered})), "torch": torch.__version__,
            "scorer": stamp["scorer"], "runs": {r["id"]: r for r, _ in ordered}}
    tensors = {f"{r['id']}/{k}": v for r, imgs in ordered for k, v in imgs.items()}
    atomic_write(dest / f"{ARCH}.safetensors", lambda t: save_file(tensors, str(t)))
    atomic_write(dest / f"{ARCH}.json", json.dumps(meta, indent=0) + "\n")
    for f in partial.iterdir():
        f.unlink()
    partial.rmdir()
    return dest / f"{ARCH}.json"


# ----------------------------------------------------------------------------- browse


class Runs:
    """The precomputed grid: `runs[point]` -> record (curves, scores) and `runs.images(point)`."""

    def __init__(self, dest=EXPLORER_DIR):
        from safetensors.torch import load_file

        dest = Path(dest)
        path = dest / f"{ARCH}.json"
        if not path.exists():
            raise FileNotFoundError(f"no precomputed explorer runs at {path}; make them with "
                                    f"`python -m reca_nb.explorer` (see its docstring)")
        self.meta = json.loads(path.read_text())
        self.tensors = load_file(str(dest / f"{ARCH}.safetensors"))

    def __len__(self):
        return len(self.meta["runs"])

    def __getitem__(self, point: dict) -> dict:
        key = run_id(**{**self.default, **point})
        if key not in self.meta["runs"]:
            raise KeyError(f"no run {key}; the grid is {self.meta['grid']}")
        return self.meta["runs"][key]

    @property
    def default(self) -> dict:
        return {"und_res": 16, "blur": 0.0, "prompts": "diverse", "i2t_ratio": 1.0}

    def images(self, point: dict, kind: str) -> torch.Tensor:
        return self.tensors[f"{self[point]['id']}/{kind}"].float() / 255

    def final(self, point: dict, key: str = "loss_reca", last: int = 5) -> float:
        vals = [c[key] for c in self[point]["curves"] if key in c]
        return float(np.mean(vals[-last:]))

    def table(self) -> list:
        """One row per run: the knobs, final RecA loss, T2I overall, I2T exact."""
        rows = []
        for r in self.meta["runs"].values():
            p = r["point"]
            rows.append({**p, "loss_reca": round(self.final(p), 4), "t2i": round(r["t2i"]["overall"], 3),
                         "i2t": round(r["i2t"]["exact"], 3)})
        return rows


# Fixed colours: the selected run is always blue and solid, the copy reference always red and dotted, in every
# panel, so a reference-only curve can never be read as the selected run's.
SELECTED = dict(color="C0", ls="-")
REFERENCE = dict(color="C3", ls=":")
PANELS = (("loss_reca", "RecA loss (log)", "no RecA loss logged"),
          ("loss_i2t", "I2T loss", "no I2T data mixed in (I2T ratio 0)"),
          ("token_agreement", "und/target token agreement",
           "defined only when und res = target res (32 px)"))


def _curve(record: dict, key: str):
    pts = [(c["step"], c[key]) for c in record["curves"] if c.get(key) is not None]
    return tuple(zip(*pts)) if pts else ((), ())


def _strip(imgs: torch.Tensor, gap: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> one (H, N*(W+gap)-gap, 3) image: one axis per row of samples draws fast."""
    n, _, h, w = imgs.shape
    out = np.ones((h, n * (w + gap) - gap, 3), dtype=np.float32)
    for k in range(n):
        out[:, k * (w + gap):k * (w + gap) + w] = imgs[k].permute(1, 2, 0).numpy()
    return out


def show(und_res: int = 16, blur: float = 0.0, prompts: str = "diverse", i2t_ratio: float = 1.0,
         runs: Runs | None = None, compare: dict | None = None) -> Figure:
    """One grid point against a reference run (default: the copy run, und 32 without blur): RecA loss, I2T
    loss and token agreement, then the selected run's reconstructions and T2I samples, scores in the title."""
    runs = runs or Runs()
    point = {"und_res": und_res, "blur": blur, "prompts": prompts, "i2t_ratio": i2t_ratio}
    rec = runs[point]
    ref = runs[compare or {**point, "und_res": 32, "blur": 0.0}]
    lines = [(rec, SELECTED, f"{rec['id']} (selected)")]
    if ref["id"] != rec["id"]:
        lines.append((ref, REFERENCE, f"{ref['id']} (copy reference)"))
    # a fixed grid instead of constrained layout: the explorer redraws on every slider move
    fig = new_figure(figsize=(11, 6.4))
    gs = fig.add_gridspec(3, 3, height_ratios=[1.3, 0.8, 0.8], left=0.05, right=0.99, bottom=0.01,
                          top=0.91, hspace=0.4, wspace=0.22)
    for col, (key, title, why) in enumerate(PANELS):
        ax = fig.add_subplot(gs[0, col])
        for record, style, name in lines:
            steps, vals = _curve(record, key)
            label = name if steps else f"{name}: n/a"
            ax.plot(steps, vals, **style, marker="." if key == "token_agreement" else None, ms=3, label=label)
        if not _curve(rec, key)[0]:  # say why the selected run has no curve here
            ax.text(0.5, 0.5, f"selected run: n/a\n{why}", ha="center", va="center", fontsize=8,
                    color="C0", transform=ax.transAxes, bbox=dict(fc="white", ec="C0", alpha=0.9))
        if not any(_curve(r, key)[0] for r, _, _ in lines):
            ax.set_xticks([]), ax.set_yticks([])
        if key == "loss_reca":
            ax.set_yscale("log")
        if key == "token_agreement":
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    base = runs.meta["base"]
    fig.suptitle(f"{rec['id']}: GenEval-mini {rec['t2i']['overall']:.2f} "
                 f"(base {base['t2i']['overall']:.2f}) · "
                 f"I2T exact {rec['i2t']['exact']:.2f} (base {base['i2t']['exact']:.2f})", fontsize=10)
    for row, (kind, label) in enumerate((("recon", "RecA reconstructions"), ("t2i", "T2I samples")), start=1):
        ax = fig.add_subplot(gs[row, :])
        ax.imshow(_strip(runs.images(point, kind)), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{label} of the selected run", fontsize=8)
    return fig


def explore(runs: Runs | None = None):
    """ipywidgets controls over the grid; each move redraws `show(...)` into one Image widget (everything is
    precomputed). Returns the widget: leave it as the cell's last expression to show it (once)."""
    import io

    import ipywidgets as w

    runs = runs or Runs()
    grid = runs.meta["grid"]
    controls = {"und_res": w.SelectionSlider(options=sorted(grid["und_res"]), value=16,
                                             description="und res"),
                "blur": w.SelectionSlider(options=grid["blur"], value=0.0, description="blur σ"),
                "prompts": w.ToggleButtons(options=grid["prompts"], value="diverse", description="prompts"),
                "i2t_ratio": w.SelectionSlider(options=grid["i2t_ratio"], value=1.0, description="I2T ratio")}
    # an Image widget (not an Output area) behaves the same in ipywidgets 7 (Colab) and 8 and never stacks
    image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1100px"))

    def redraw(_=None):
        buf = io.BytesIO()
        show(**{k: c.value for k, c in controls.items()}, runs=runs).savefig(buf, format="png", dpi=90)
        image.value = buf.getvalue()

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox(list(controls.values())[:2]), w.HBox(list(controls.values())[2:]), image])


def main(argv=None):
    from reca_nb.config import cli

    usage = (f"{__doc__}\nkeys, with their defaults:\n  --dest=data/explorer --jobs=1 --device=auto "
             "--threads=1 " + " ".join(f"--{k}={v}" for k, v in DEFAULTS.items()))
    # --threads goes to precompute (each run sets it), not to cli(): the base is scored on torch's default
    _, args = cli(argv, usage, valid=("dest", "jobs", "device", "threads", *DEFAULTS))
    path = precompute(**args)
    print(f"wrote {path} and {path.with_suffix('.safetensors')}")
    return path


if __name__ == "__main__":
    from reca_nb.config import run_main

    run_main(main)
