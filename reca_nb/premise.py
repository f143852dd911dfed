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

    python -m reca_nb.premise --arch=bagel --ckpt=results/work/bases/b/bagel.safetensors --out=gate.json
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import apply_overrides, parse_overrides


@dataclass(frozen=True)
class PremiseConfig:
    arch: str = "bagel"  # registry name (reca_nb.archs)
    ckpt: str = ""  # base checkpoint; "" = the shipped data/checkpoints/<arch>.safetensors
    seed: int = 0  # sampling seed, as a reproduce job's training seed
    eval_per_category: int = 30  # GenEval-mini prompts per category (reproduce's full preset: 30 -> 180)
    i2t_n: int = 120  # held-out I2T scenes (reproduce: 120)
    und_res: int = 0  # reconstruction bottleneck; 0 = the RecA preset's (mini_und_res: BAGEL 16 px)
    gap_n: int = 256  # held-out (image, prompt) pairs for the prompt gap
    gap_draws: int = 4  # noise draws for the prompt gap
    threads: int = 1  # torch threads
    out: str = ""  # write the result as JSON here ("" = print only)


def measure(model, cfg: PremiseConfig) -> dict:
    from . import geneval
    from .recipe import mini_und_res
    from .reproduce import EVAL_SEED

    res = cfg.und_res or mini_und_res(cfg.arch, model.image_size)
    out, t0 = {}, time.time()
    gen = torch.Generator().manual_seed(EVAL_SEED + 7919 * cfg.seed)
    out["t2i"] = geneval.evaluate_t2i(model, cfg.eval_per_category, seed=EVAL_SEED, generator=gen, progress=False)
    out["i2t"] = geneval.evaluate_i2t(model, n=cfg.i2t_n, progress=False)
    out["recon"] = geneval.evaluate_recon(model, res, cfg.eval_per_category, seed=EVAL_SEED,
                                          generator=torch.Generator().manual_seed(EVAL_SEED + 7919 * cfg.seed),
                                          progress=False)
    out["prompt_gap"] = geneval.prompt_gap(model, n=cfg.gap_n, draws=cfg.gap_draws)
    out["eval_s"] = round(time.time() - t0, 1)
    return out


def main(argv=None):
    from . import archs

    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = apply_overrides(PremiseConfig(), parse_overrides(argv))
    torch.set_num_threads(cfg.threads)
    model = archs.load_base(cfg.arch, cfg.ckpt or None)
    result = {"config": asdict(cfg), "command": "python -m reca_nb.premise " + " ".join(argv),
              **measure(model, cfg)}
    text = json.dumps(result, indent=1)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
