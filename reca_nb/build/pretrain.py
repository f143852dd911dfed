"""Pretrain the base UMM of one architecture: the starting point that RecA post-trains.

The paper starts from released checkpoints (Show-o, Harmon, ...). Ours are made here: T2I on a SMALL
captioned pool (n_t2i_pairs, so T2I keeps headroom) + I2T on the large pool at every bottleneck resolution,
no RecA term (preset "pretrain"), through the very same `train()` loop. Then GenEval-mini T2I + I2T scores,
data/checkpoints/<arch>.safetensors and a data/checkpoints/MANIFEST.json entry (sha256, size, params, scores,
recipe, command, wall time).

A model class may split pretraining into stages (`UMM.pretrain_stages`): OpenUni first pretrains its DiT
through SANA's own text encoder while the VLM learns I2T ("sana"), then trains only the meta-queries and the
connector onto the frozen DiT and VLM ("bridge", OpenUni's stage 1). Each stage has its own run dir
(<out>/<stage>) and resumes on its own; recipe flags given here apply to every stage, under the stage's own
overrides.

    python -m reca_nb.build.pretrain --arch=showo-clip                    # what `make data` runs per arch
    python -m reca_nb.build.pretrain --arch=janus --steps=600 --model.d_model=96 --eval=False --dest=/tmp/x
"""
from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import time
from dataclasses import asdict, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from reca_nb import config
from reca_nb.models import registry
from reca_nb.paths import cache_dir
from reca_nb.recipe import Recipe, mini_und_res, preset
from reca_nb.train import train

CLI_KEYS = ("arch", "dest", "eval", "resume", "progress", "threads", "out")
USAGE = """usage: python -m reca_nb.build.pretrain --arch=ARCH [--dest=DIR] [--eval=False] [--resume]
       [--out=RUN_DIR] [--threads=N] [--model.FIELD=V ...] [--RECIPE_FIELD=V ...]
  recipe defaults: preset(ARCH, "pretrain"); --dest defaults to data/checkpoints
  recipe fields:
""" + textwrap.fill(", ".join(f.name for f in fields(Recipe)), 106, initial_indent="    ",
                    subsequent_indent="    ")


def evaluate(model, arch: str, progress: bool = True) -> dict:
    """GenEval-mini T2I (120 held-out prompts) and I2T (120 held-out scenes) at the native und size and,
    when it differs, at the RecA bottleneck size."""
    from reca_nb.evaluation import geneval

    scores = {"t2i": geneval.evaluate_t2i(model, progress=progress),
              "i2t": geneval.evaluate_i2t(model, progress=progress)}
    small = mini_und_res(arch, model.image_size)
    if small != model.und_size:
        scores[f"i2t@{small}"] = geneval.evaluate_i2t(model, und_size=small, progress=progress)
    return scores


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cli, args = config.cli(argv, USAGE, CLI_KEYS, empty_is_help=True)
    model_kw = {k[6:]: args.pop(k) for k in list(args) if k.startswith("model.")}
    if "arch" not in cli:
        raise SystemExit(f"--arch is required; valid: {', '.join(registry.available())}\n{USAGE}")
    arch = cli["arch"]
    recipe = config.apply_overrides(preset(arch, "pretrain"), args)
    torch.manual_seed(recipe.seed)
    model = registry.build(arch, **model_kw)
    n_params = sum(p.numel() for p in model.parameters())
    out = Path(cli["out"]) if "out" in cli else cache_dir() / "runs" / f"pretrain-{arch}-{recipe.seed}"
    print(f"pretraining {arch}: {type(model).__name__}, {n_params / 1e6:.2f} M params, {recipe.steps} steps, "
          f"run dir {out}")

    t0 = time.time()
    progress = cli.get("progress", True) is not False
    stages = type(model).pretrain_stages  # (name, config fields for the stage, recipe overrides)
    history = []
    for name, stage_fields, overrides in stages:
        if len(stages) > 1:
            print(f"stage {name}: model {stage_fields or 'as built'}, recipe {overrides or 'as given'}")
        saved = {k: getattr(model.config, k) for k in stage_fields}
        model.config.__dict__.update(stage_fields)  # for this stage only
        try:
            history += train(model, replace(recipe, **overrides),
                             out_dir=out / name if len(stages) > 1 else out,
                             resume="latest" if cli.get("resume") else None, progress=progress)
        finally:
            model.config.__dict__.update(saved)
    wall = time.time() - t0
    t0 = time.time()
    scores = evaluate(model, arch, progress) if cli.get("eval", True) is not False else {}
    eval_s = time.time() - t0
    print(f"trained in {wall:.0f} s; scores: {json.dumps(scores)}")

    dest = Path(cli["dest"]) if "dest" in cli else registry.CHECKPOINT_DIR
    path = dest / f"{arch}.safetensors"
    command = "python -m reca_nb.build.pretrain " + " ".join(argv)
    model.save(path, extra={"recipe": json.dumps(asdict(recipe)), "scores": json.dumps(scores),
                            "command": command})
    last = [r for r in history if "loss" in r][-1:] or [{}]
    entry = {
        "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "params": n_params,
        "model_class": type(model).__name__, "model_config": asdict(model.config), "scores": scores,
        "final_losses": {k: v for k, v in last[0].items() if k.startswith("loss")}, "recipe": asdict(recipe),
        "stages": [{"name": n, "model": f, "recipe": o} for n, f, o in stages],
        "command": command, "wall_s": round(wall, 1), "eval_s": round(eval_s, 1), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = dest / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[arch] = entry
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    tmp.replace(manifest_path)
    print(f"saved {path} ({entry['bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:12]}...), {manifest_path}")
    return entry


if __name__ == "__main__":
    config.run_main(main)
