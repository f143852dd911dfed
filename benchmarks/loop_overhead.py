"""Loop overhead: steps/s of reca_nb.train.train() vs a bare PyTorch loop, same model, batches and optimizer.

    python benchmarks/loop_overhead.py [--arch=showo-vq] [--steps=30] [--batch=16] [--threads=1] [--repeats=3]

Both loops start from the same weights and draw the same batches (reca_nb.world.data.Batches with the recipe's
seed), compute RecA + I2T, clip gradients and step AdamW with the same schedule. The bare loop has no
accelerate, no logging, no collapse monitor, no progress bar and no checkpoints; train() runs with
progress off, no eval and no checkpoints (out_dir=None). Arms alternate `--repeats` times; the ratio of the
best times is printed (goal: <= 1.05). Models are built fresh (random init): speed does not depend on weights.
"""
import copy
import sys
import time
from dataclasses import replace

import torch

from reca_nb.models import registry
from reca_nb.config import parse_overrides
from reca_nb.world.data import Batches
from reca_nb.recipe import preset
from reca_nb.train import build_optimizer, lr_factor, train

DEFAULTS = {"arch": "showo-vq", "steps": 30, "batch": 16, "threads": 1, "repeats": 3}


def bare_loop(model, recipe):
    opt = build_optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, recipe))
    data = Batches(model.image_size, recipe.n_images, recipe.n_t2i_pairs, recipe.data_seed, seed=recipe.seed,
                   prompts=recipe.prompts)
    model.train()
    for step in range(recipe.steps):
        target, templates = data.reca(recipe.batch)
        loss = recipe.lambda_reca * model.reca_loss(recipe.und_transform(target, model.und_size), templates, target)
        images, captions = data.i2t(recipe.i2t_batch)
        loss = loss + recipe.lambda_i2t * model.i2t_loss(recipe.und_transform(images, model.und_size), captions)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


def main(argv):
    cfg = {**DEFAULTS, **parse_overrides(argv)}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    torch.set_num_threads(cfg["threads"])
    recipe = replace(preset(cfg["arch"], "reca"), steps=cfg["steps"], batch=cfg["batch"], warmup=2,
                     eval_every=0, save_every=0, log_every=10, device="cpu")
    torch.manual_seed(0)
    base = registry.build(cfg["arch"])
    # warm-up: pools, imports, first-optimizer cost (torch._dynamo import) paid before timing
    bare_loop(copy.deepcopy(base), replace(recipe, steps=2))
    train(copy.deepcopy(base), replace(recipe, steps=2), progress=False)
    times = {"bare": [], "train()": []}
    for _ in range(cfg["repeats"]):
        for name, fn in (("bare", lambda m: bare_loop(m, recipe)),
                         ("train()", lambda m: train(m, recipe, progress=False))):
            model = copy.deepcopy(base)
            t = time.perf_counter()
            fn(model)
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    print(f"arch={cfg['arch']} steps={cfg['steps']} batch={cfg['batch']}+{recipe.i2t_batch} "
          f"threads={cfg['threads']} repeats={cfg['repeats']}")
    for k, v in best.items():
        print(f"  {k:8s} best {v:7.2f} s  {cfg['steps'] / v:6.2f} steps/s   all: {[round(x, 2) for x in times[k]]}")
    ratio = best["train()"] / best["bare"]
    print(f"overhead ratio train()/bare = {ratio:.3f}  (goal <= 1.05)")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
