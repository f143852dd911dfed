"""RecA's premise, measured on a base checkpoint: can its generator read its own understanding embedding, and
does its T2I use its text?

RecA (arXiv 2509.07295, Sec. 3) conditions the generator on the model's own understanding embedding of an
image at the information bottleneck plus a template. In the real UMMs the generator already reads that space
before RecA (BAGEL's generation expert reads ViT tokens in editing / interleaved pretraining data; Harmon's
one encoder serves both sides), so RecA refines a reading. A base is scored here on
  * GenEval-mini T2I and I2T, exactly as `reca_nb.reproduce` scores a job (180 prompts, sampling seed
    EVAL_SEED + 7919 * seed);
  * reconstruction from its own und embedding at the RecA bottleneck (`geneval.evaluate_recon`): spec / cell /
    exact; the gate for a premise-carrying base is spec >= 0.5 (chance ~0.23);
  * the prompt gap (`geneval.prompt_gap`): how much its T2I loss depends on the true prompt.

    python -m reca_nb.reproduce.premise --arch=bagel --ckpt=results/work/bases/b/bagel.safetensors \
        --out=gate.json

With --arm the base is first post-trained, then measured the same way: "reca" = the RecA recipe
`reca_nb.reproduce` runs for claim 1 (condition: the model's own und embedding + a template; no captions),
"t2i" = the same steps and trainable parameters with only the T2I term (a same-steps T2I-only control),
"reca_t2i" = RecA plus the T2I term at --lambda_t2i. The world options (i2t_fact_p, t2i_sparse_p) set the
fine-tune's I2T / T2I pools as the base was pretrained; the T2I term never gets und views. --track_every=N
also measures reconstruction and prompt gap before training and every N training steps (the "trajectory").

    python -m reca_nb.reproduce.premise --arch=bagel --ckpt=B.safetensors --arm=reca --seed=1 \
        --i2t_fact_p=0.5 --t2i_sparse_p=0.8 --out=reca-s1.json

--verdict=PREFIX reads finished runs PREFIX-{base,reca,t2i}-s<seed>.json and applies claim 1's rule
(`reproduce.verdict`, its pre-registered min effect) to RecA vs base and RecA vs the same-steps T2I-only
control, overall and per GenEval-mini category:

    python -m reca_nb.reproduce.premise --verdict=results/premise_runs/b
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from reca_nb.config import apply_overrides, cli, describe, run_main


@dataclass(frozen=True)
class PremiseConfig:
    arch: str = "bagel"  # registry name (reca_nb.models.registry)
    ckpt: str = ""  # base checkpoint; "" = the shipped data/checkpoints/<arch>.safetensors
    seed: int = 0  # training seed of the arm and sampling seed of the eval, as a reproduce job's seed
    arm: Literal["base", "reca", "t2i", "reca_t2i"] = "base"  # post-training before measuring (see above)
    steps: int = 0  # post-training steps; 0 = the reca preset's (BAGEL 200)
    lambda_t2i: float = 0.5  # the T2I weight of the "reca_t2i" arm
    i2t_fact_p: float = 0.0  # world options of the post-training pools: set them as the base's pretraining
    t2i_sparse_p: float = 0.0
    premise: bool = True  # also measure reconstruction and prompt gap (off: T2I + I2T only, as reproduce)
    track_every: int = 0  # measure reconstruction + prompt gap every N post-training steps; 0 = never
    eval_per_category: int = 30  # GenEval-mini prompts per category (reproduce's full preset: 30 -> 180)
    i2t_n: int = 120  # held-out I2T scenes (reproduce: 120)
    und_res: int = 0  # reconstruction bottleneck; 0 = the RecA preset's (mini_und_res: BAGEL 16 px)
    gap_n: int = 256  # held-out (image, prompt) pairs for the prompt gap
    gap_draws: int = 4  # noise draws for the prompt gap
    threads: int = 1  # torch threads
    out: str = ""  # write the result as JSON here ("" = print only)
    verdict: str = ""  # PREFIX of finished runs: print claim 1's verdict table for them instead of running


def measure(model, cfg: PremiseConfig) -> dict:
    from reca_nb.evaluation import geneval
    from reca_nb.recipe import mini_und_res
    from reca_nb.reproduce.plan import EVAL_SEED

    res = cfg.und_res or mini_und_res(cfg.arch, model.image_size)
    out, t0 = {}, time.time()
    gen = torch.Generator().manual_seed(EVAL_SEED + 7919 * cfg.seed)
    out["t2i"] = geneval.evaluate_t2i(model, cfg.eval_per_category, seed=EVAL_SEED, generator=gen,
                                      progress=False)
    out["i2t"] = geneval.evaluate_i2t(model, n=cfg.i2t_n, progress=False)
    if cfg.premise:
        out.update(premise_scores(model, cfg, res))
    out["eval_s"] = round(time.time() - t0, 1)
    return out


def premise_scores(model, cfg: PremiseConfig, res: int) -> dict:
    """Reconstruction from the model's own und embedding at `res` and the prompt gap."""
    from reca_nb.evaluation import geneval
    from reca_nb.reproduce.plan import EVAL_SEED

    gen = torch.Generator().manual_seed(EVAL_SEED + 7919 * cfg.seed)
    return {"recon": geneval.evaluate_recon(model, res, cfg.eval_per_category, seed=EVAL_SEED, generator=gen,
                                            progress=False),
            "prompt_gap": geneval.prompt_gap(model, n=cfg.gap_n, draws=cfg.gap_draws)}


def arm_recipe(cfg: PremiseConfig):
    """The post-training recipe of an arm: reproduce's RecA recipe, its T2I-only twin, or RecA + T2I."""
    from reca_nb.reproduce.plan import ReproduceConfig, reca_recipe

    reca = reca_recipe(cfg.arch, ReproduceConfig(steps=cfg.steps, device="cpu"))
    reca = replace(reca, seed=cfg.seed, i2t_fact_p=cfg.i2t_fact_p, t2i_sparse_p=cfg.t2i_sparse_p,
                   eval_every=cfg.track_every, save_every=0)
    if cfg.arm == "t2i":
        return replace(reca, stage="control", lambda_reca=0.0, lambda_t2i=1.0)
    if cfg.arm == "reca_t2i":
        return replace(reca, lambda_t2i=cfg.lambda_t2i)
    return reca


def post_train(model, cfg: PremiseConfig) -> dict:
    """Train the arm in place; its history rows (losses and, with track_every, the premise trajectory)."""
    from reca_nb.recipe import mini_und_res
    from reca_nb.train import train

    recipe = arm_recipe(cfg)
    res = cfg.und_res or mini_und_res(cfg.arch, model.image_size)
    evals = {"premise": lambda m: premise_scores(m, cfg, res)} if cfg.track_every else {}
    # the trajectory starts at the base (the measurements keep their own RNG: training is unchanged)
    start = [{"step": 0, **premise_scores(model, cfg, res)}] if cfg.track_every else []
    t0 = time.time()
    rows = train(model, recipe, progress=False, evals=evals)
    keep = ("step", "loss", "loss_reca", "loss_t2i", "loss_i2t")
    return {"recipe": {k: v for k, v in asdict(recipe).items() if k in ("steps", "lr", "batch", "lambda_reca",
                                                                      "lambda_t2i", "lambda_i2t", "freeze",
                                                                      "und_res", "prompts", "i2t_fact_p",
                                                                      "t2i_sparse_p", "t2i_view_p")},
            "history": [{k: r[k] for k in keep if k in r} for r in rows if "eval" not in r][::5],
            "trajectory": start + [{"step": r["step"], **r["eval"]["premise"]} for r in rows if "eval" in r],
            "train_s": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- verdict over finished runs

COMPARED = (("reca", "base"), ("reca", "t2i"))  # RecA vs the untouched base and vs the same-steps T2I-only


def load_runs(prefix) -> dict:
    """{arm: [run dict, ...] in seed order} for PREFIX-{base,reca,t2i}-s<seed>.json."""
    from reca_nb.reproduce.report import shipped_runs

    prefix = Path(prefix)
    runs, missing = {}, []
    for arm in ("base", "reca", "t2i"):
        try:
            runs[arm] = shipped_runs(prefix.name, arm, prefix.parent)
        except FileNotFoundError:
            missing.append(f"{prefix}-{arm}-s*.json")
    if missing:
        raise FileNotFoundError(f"no finished runs {', '.join(missing)}")
    return runs


def verdict_table(prefix) -> list:
    """Claim 1's rule on finished runs: one row per (metric, comparison), overall first, then by category."""
    from reca_nb.reproduce.claims import CLAIMS, verdict
    from reca_nb.world.shapes import CATEGORIES

    runs = load_runs(prefix)
    min_effect = CLAIMS["claim1"].comparisons[0].min_effect  # the pre-registered overall bar (0.02)
    rows = []
    for metric in ("overall", *CATEGORIES):
        for a, b in COMPARED:
            va, vb = ([r["t2i"][metric] for r in runs[arm]] for arm in (a, b))
            rows.append({"metric": metric, "a": a, "b": b, "mean_a": sum(va) / len(va),
                         "mean_b": sum(vb) / len(vb), **verdict(va, vb, +1, min_effect)})
    return rows


def verdict_markdown(rows: list) -> str:
    lines = ["| metric | comparison | A (mean) | B (mean) | A − B ± SE | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['a']} vs {r['b']} | {r['mean_a']:.3f} | {r['mean_b']:.3f} | "
                     f"{r['diff']:+.3f} ± {r['se']:.3f} | {r['n_a']}+{r['n_b']} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv=None):
    from reca_nb.models import registry
    from reca_nb.reproduce.plan import scorer_fingerprint

    argv = sys.argv[1:] if argv is None else list(argv)
    _, overrides = cli(argv, __doc__ + "\nkeys:\n" + describe(PremiseConfig()))
    cfg = apply_overrides(PremiseConfig(), overrides)
    if cfg.verdict:
        rows = verdict_table(cfg.verdict)
        print(verdict_markdown(rows))
        return rows
    torch.set_num_threads(cfg.threads)
    model = registry.load_base(cfg.arch, cfg.ckpt or None)
    result = {"config": asdict(cfg), "command": "python -m reca_nb.reproduce.premise " + " ".join(argv),
              "scorer": scorer_fingerprint()}
    if cfg.arm != "base":
        result.update(post_train(model, cfg))
    last = (result.get("trajectory") or [{}])[-1]
    if cfg.premise and last.get("step") == arm_recipe(cfg).steps:  # already measured on the final weights
        result.update(measure(model, replace(cfg, premise=False)), recon=last["recon"],
                      prompt_gap=last["prompt_gap"])
    else:
        result.update(measure(model, cfg))
    text = json.dumps(result, indent=1)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    run_main(main)
