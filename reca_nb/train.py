"""The RecA training loop (arXiv 2509.07295, Sec. 3): one loop for every UMM, miniature or real.

Per step:  L = λ_RecA · L_gen(f(h_v(und_transform(I)), template), I)      (RecA: reconstruct I from its own
             + λ_i2t · L_i2t(und_transform(I'), caption(I'))               understanding, practice 1 + 2)
             + λ_t2i · L_gen(f(prompt), I'')                                (terms with λ = 0 are skipped)
on top of a freeze policy (practice 3) and an I2T mix (practice 4), all read from a `Recipe`.

    history = train(model, preset("showo-clip", "reca"), out_dir="runs/x")      # notebook
    python -m reca_nb.train --arch=showo-clip --preset=reca --steps=200         # CLI (see main())

Built on accelerate: the same code runs on CPU, one GPU and `accelerate launch` multi-GPU (each process draws
its share of one global batch of batch x processes samples, so N processes with batch B follow the run of one
process with batch N*B). Checkpoints are safetensors (weights,
optimizer, scheduler, RNG streams, history); `resume="latest"` continues bit-identically on CPU. Ctrl-C
finishes the current step, saves, then raises TrainingInterrupted (a KeyboardInterrupt; the CLI turns it into
one line with the `--resume` command). A NaN/inf loss stops the run before the weights are touched.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reca_nb.checkpoint import (CheckpointError, DeferInterrupt, TrainingInterrupted, check_model, check_recipe,
                                checkpoints, find_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                                seed_everything, set_rng_state, write_json)
from reca_nb.collapse import CollapseMonitor
from reca_nb.freeze import apply_freeze, lora_targets
from reca_nb.objective import Objective, make_batch, make_data
from reca_nb.recipe import Recipe

__all__ = ["train", "Objective", "build_optimizer", "lr_factor", "TrainingInterrupted", "main", "cli",
           "apply_freeze", "lora_targets", "CheckpointError", "load_checkpoint"]


# ----------------------------------------------------------------------------- optimizer and schedule

def build_optimizer(model, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW over trainable parameters only; weight decay on >=2-D tensors (nanoGPT convention)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=recipe.lr, betas=tuple(recipe.betas))


def lr_factor(step: int, recipe: Recipe) -> float:
    """Multiplier of recipe.lr at optimizer step `step` (0-based): linear warm-up, then cosine to 0 (or
    constant)."""
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    if recipe.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- the loop

def train(model, recipe: Recipe, out_dir=None, resume=None, callbacks=(), progress: bool = True,
          evals: dict | None = None, monitor: CollapseMonitor | None = None, data=None) -> list:
    """Post-train `model` in place with `recipe`; returns the history (list of row dicts).

    out_dir:   checkpoints (ckpt-NNNNNN.safetensors), history.json and the final model.safetensors
    resume:    None | "latest" (newest readable checkpoint in out_dir; none: fresh start) | a checkpoint
    callbacks: functions cb(row, model) called on every history row; returning True stops the run
    evals:     {name: fn(model) -> dict}; default GenEval-mini T2I + I2T (reca_nb.evaluation.geneval) when
               eval_every > 0
    monitor:   a CollapseMonitor; by default one with the recipe's threshold whenever RecA is on
    data:      None: the recipe's shape-world pools (reca_nb.world.data.Batches); else a function
               (size, seed=, prompts=, device=) -> a sampler with Batches' methods, e.g. the bound method
               `reca_nb.world.folder.ImageFolder(root).batches` (your own images)
    LoRA runs (freeze="lora") with out_dir also write out_dir/adapters.safetensors (reca_nb.adapters).
    """
    if recipe.steps == 0:
        return []
    _check_run(model, recipe, out_dir, resume)
    out_dir = Path(out_dir) if out_dir is not None else None
    accelerator = _accelerator(recipe)
    main = accelerator.is_main_process
    seed_everything(recipe.seed + accelerator.process_index)
    # --- model and freeze -----------------------------------------------------------------------------
    was_training = model.training
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    lora = apply_freeze(model, recipe)
    try:
        # --- optimizer, schedule, data, monitor -------------------------------------------------------
        optimizer = build_optimizer(model, recipe)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, recipe=recipe))
        objective, optimizer, scheduler = accelerator.prepare(Objective(model), optimizer, scheduler)
        umm = accelerator.unwrap_model(objective).umm
        data = make_data(recipe, umm, accelerator.device, accelerator.process_index, accelerator.num_processes,
                         data)
        terms = recipe.active_terms
        lam = {"reca": recipe.lambda_reca, "i2t": recipe.lambda_i2t, "t2i": recipe.lambda_t2i}
        if monitor is None and "reca" in terms:
            monitor = CollapseMonitor(threshold=recipe.collapse_threshold, stop=recipe.collapse_stop)
        if evals is None and recipe.eval_every:
            evals = default_evals(recipe)
        # --- resume -----------------------------------------------------------------------------------
        step, history, window = _resume(out_dir, resume, recipe, umm, optimizer, scheduler, data, monitor, main)

        def save():
            if out_dir is not None and main:
                save_checkpoint(out_dir, umm, optimizer, scheduler, recipe, step, history, window, data,
                                monitor)

        # --- loop ---------------------------------------------------------------------------------------
        umm.train()
        bar = tqdm(total=recipe.steps, initial=step, disable=not (progress and main), dynamic_ncols=True,
                   desc=f"{recipe.arch} {recipe.stage}")
        stop, clean, t_window = False, True, time.perf_counter()
        with DeferInterrupt() as interrupt:
            try:
                while step < recipe.steps and not stop:
                    clean = False  # from here until the step is logged, a checkpoint would be inconsistent
                    batch = make_batch(data, recipe, terms, umm, step)
                    loss, values, lr = _step(objective, optimizer, scheduler, accelerator, batch, lam, recipe,
                                             step, out_dir)
                    step += 1
                    bar.update(1)
                    _accumulate(window, values, loss, batch, accelerator.num_processes)
                    agree, collapsed = _watch(monitor, values, batch, umm, step, recipe)
                    stop |= collapsed
                    if step % recipe.log_every == 0 or step == recipe.steps or stop:
                        row = _log_row(step, lr, window, time.perf_counter() - t_window, monitor, agree)
                        window, t_window = _new_window(), time.perf_counter()
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.startswith("loss")})
                        stop |= _emit(row, history, callbacks, umm)
                    clean = True  # every record of this step is written: a checkpoint now is a restart point
                    if evals and (step % recipe.eval_every == 0 or step == recipe.steps):
                        stop |= _emit({"step": step, "eval": _evaluate(umm, evals)}, history, callbacks, umm)
                    if (recipe.save_every and step % recipe.save_every == 0) or step == recipe.steps or stop:
                        save()
                    if interrupt.hit:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if clean:  # `step` names the last completed step: a clean restart point
                    save()
                raise TrainingInterrupted(step, out_dir) from None
            finally:
                bar.close()
        if out_dir is not None and main:
            write_json(out_dir / "history.json", history)
    finally:
        if lora is not None:
            if out_dir is not None and main:
                from reca_nb.adapters import save_adapters

                save_adapters(model, out_dir / "adapters.safetensors", recipe)
            lora.merge_and_unload()  # the model gets its original structure back, adapters folded in
        for n, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(n, p.requires_grad))
        model.train(was_training)
    if out_dir is not None and main:
        model.save(out_dir / "model.safetensors", extra={"recipe": json.dumps(asdict(recipe)), "step": step})
    return history


# ----------------------------------------------------------------------------- the steps of train()

def _check_run(model, recipe: Recipe, out_dir, resume):
    """Refuse what cannot train before any work is done."""
    if recipe.arch != model.arch:
        raise ValueError(f"the recipe is for {recipe.arch!r} but the model is {model.arch!r}; "
                         f"use preset({model.arch!r}, ...) or set Recipe.arch")
    if not recipe.active_terms:
        raise ValueError("every loss weight is 0 (lambda_reca, lambda_i2t, lambda_t2i): nothing to train")
    if recipe.warmup >= recipe.steps:
        warnings.warn(_warmup_msg(recipe), stacklevel=3)
    if resume is not None and out_dir is None and resume in ("latest", True):
        raise ValueError("resume='latest' needs out_dir")


def _accelerator(recipe: Recipe):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # a multi-process launch without CUDA must ask for CPU (gloo) explicitly: otherwise accelerate sees no
    # distributed backend and every process trains alone on its own copy
    cpu = recipe.device == "cpu" or (recipe.device == "auto" and not torch.cuda.is_available()
                                     and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    accelerator = Accelerator(cpu=cpu, step_scheduler_with_optimizer=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if recipe.device == "cuda" and accelerator.device.type != "cuda":
        raise RuntimeError("Recipe.device='cuda' but no CUDA device is visible")
    return accelerator


def _resume(out_dir, resume, recipe, umm, optimizer, scheduler, data, monitor, main) -> tuple:
    """(step, history, log window) to start from: a checkpoint's, or a fresh run's (which owns out_dir)."""
    state = find_checkpoint(out_dir, resume)
    if state is None:
        if main and checkpoints(out_dir):
            tqdm.write(f"starting fresh: removing the old checkpoints in {out_dir}")
            for old in checkpoints(out_dir):
                old.unlink()
        return 0, [], _new_window()
    check_recipe(state["recipe"], recipe)
    check_model(state, umm)
    umm.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    scheduler.load_state_dict(state["scheduler"])
    data.set_state(state["rng"]["data"])
    set_rng_state(state["rng"])
    if monitor is not None and state.get("monitor"):
        monitor.load_state_dict(state["monitor"])
    if main:
        tqdm.write(f"resumed from {state['path']} at step {state['step']}")
    return state["step"], state["history"], state["window"]


def _step(objective, optimizer, scheduler, accelerator, batch, lam, recipe, step, out_dir) -> tuple:
    """One optimizer step on `batch` -> (weighted loss, {term: loss}, lr used). A non-finite loss or
    gradient raises before the weights change."""
    losses = objective(batch)
    loss = sum(lam[k] * v for k, v in losses.items())
    values = {k: v.item() for k, v in losses.items()}
    loss_value = loss.item()
    if accelerator.num_processes > 1:  # log the global batch: the mean of the equal shares
        both = torch.tensor([loss_value, *values.values()], device=accelerator.device)
        loss_value, *rest = accelerator.reduce(both, reduction="mean").tolist()
        values = dict(zip(values, rest))
    if not math.isfinite(loss_value):
        raise FloatingPointError(_bad_step_msg("loss", values, step, out_dir))
    accelerator.backward(loss)
    if recipe.grad_clip > 0:
        gnorm = accelerator.clip_grad_norm_(objective.parameters(), recipe.grad_clip)
        if not math.isfinite(float(gnorm)):
            raise FloatingPointError(_bad_step_msg("gradient", values, step, out_dir))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, values, lr


def _accumulate(window: dict, values: dict, loss: float, batch: dict, processes: int):
    """Add one step to the running log window (means are taken when a row is written)."""
    for k, v in values.items():
        window[k] = window.get(k, 0.0) + v
    window["loss"] += loss
    window["n"] += 1
    window["samples"] += sum(len(b[-1]) for b in batch.values()) * processes


def _watch(monitor, values: dict, batch: dict, umm, step: int, recipe: Recipe) -> tuple:
    """Feed the collapse monitor -> (token agreement or None, whether the run should stop)."""
    if monitor is None or "reca" not in values:
        return None, False
    agree = None
    if step % recipe.log_every == 0 or step == recipe.steps:
        und, _, target = batch["reca"]
        agree = umm.token_agreement(und, target)
    if monitor.update(values["reca"], step, agree) and monitor.collapse_step == step:
        tqdm.write(f"step {step}: collapse monitor fired: {monitor.reason}")
    return agree, monitor.collapsed and (monitor.stop or recipe.collapse_stop)


def _new_window() -> dict:
    return {"loss": 0.0, "n": 0, "samples": 0}


def _log_row(step, lr, window, seconds, monitor, agree) -> dict:
    n = max(1, window["n"])
    row = {"step": step, "lr": lr, "loss": window["loss"] / n}
    row.update({f"loss_{k}": v / n for k, v in window.items() if k not in ("loss", "n", "samples")})
    row["samples_per_s"] = window["samples"] / max(seconds, 1e-9)
    if monitor is not None and monitor.collapse_ratio is not None:
        row["collapse_ratio"] = monitor.collapse_ratio
    if agree is not None:
        row["token_agreement"] = agree
    return row


def _emit(row, history, callbacks, umm) -> bool:
    history.append(row)
    return any([cb(row, umm) is True for cb in callbacks])


def _warmup_msg(recipe: Recipe) -> str:
    peak = recipe.lr * lr_factor(recipe.steps - 1, recipe)
    return (f"warmup={recipe.warmup} >= steps={recipe.steps}: the whole run is linear warm-up (the learning "
            f"rate peaks at {peak:.3g} in the last step, the {recipe.schedule} schedule never runs); "
            "set warmup < steps")


def _bad_step_msg(what, values, step, out_dir) -> str:
    ckpts = checkpoints(out_dir) if out_dir is not None else []
    keep = f"last good checkpoint: {ckpts[-1]}" if ckpts else "no checkpoint (pass out_dir to keep them)"
    return (f"non-finite {what} at step {step + 1} (losses {values}); the weights were not updated; {keep}. "
            "Lower lr, check the inputs, or resume from the checkpoint.")


# ----------------------------------------------------------------------------- eval

def default_evals(recipe: Recipe) -> dict:
    from reca_nb.evaluation import geneval  # lazy: the scorer is only needed when evaluating

    return {"t2i": lambda m: geneval.evaluate_t2i(m, n_per_category=max(1, recipe.eval_n // 6), progress=False),
            "i2t": lambda m: geneval.evaluate_i2t(m, n=recipe.eval_n, progress=False)}


def _evaluate(umm, evals: dict) -> dict:
    """Run the eval functions in eval mode with every RNG forked, so evaluating never changes training."""
    state = rng_state()
    try:
        umm.eval()
        with torch.no_grad():
            return {name: fn(umm) for name, fn in evals.items()}
    finally:
        umm.train()
        set_rng_state(state)


# ----------------------------------------------------------------------------- CLI

CLI_KEYS = ("arch", "preset", "base", "out", "resume", "progress", "threads", "image_folder", "captions",
            "max_images")
LOADER_KEYS = ("model_id", "tiny", "dtype")  # hub models only: what to download, or the offline tiny twin
USAGE = """usage: python -m reca_nb.train --arch=ARCH [--preset=reca|pretrain|control|ci|colab]
       [--base=default|none|PATH] [--image_folder=DIR [--captions=FILE.csv|.jsonl] [--max_images=N]]
       [--out=DIR] [--resume[=PATH]] [--threads=N] [--progress=False] [--model.FIELD=V ...] [--RECIPE_FIELD=V ...]
  Miniatures: --base=default loads data/checkpoints/ARCH.safetensors; --base=none builds a fresh model (seeded
  by --seed; --model.* overrides its config). Hub models (--arch=janus-pro | openuni-real) also take
  [--model_id=ID|PATH] [--tiny] [--dtype=auto|bfloat16|float16|float32] and train LoRA adapters by default.
  --image_folder trains on your own images (RecA, plus I2T when captions exist) instead of shape world.
  --out defaults to $RECA_NB_HOME/runs/ARCH-PRESET-SEED. Multi-GPU: accelerate launch -m reca_nb.train ..."""


def main(argv=None):
    from reca_nb.config import apply_overrides, cli
    from reca_nb.memory import estimate_memory, format_memory
    from reca_nb.models import registry
    from reca_nb.paths import cache_dir

    print = launch_print()
    own, args = cli(argv, USAGE, CLI_KEYS, empty_is_help=True, log=print)
    real = own.get("arch") in registry.real()
    loader_kw = {k: args.pop(k) for k in LOADER_KEYS if k in args} if real else {}
    model_kw = {k[6:]: args.pop(k) for k in list(args) if k.startswith("model.")}
    if "arch" not in own:
        raise SystemExit(f"--arch is required; valid: {', '.join(registry.available() + registry.real())}\n{USAGE}")
    arch, name = own["arch"], own.get("preset", "reca")
    folder = _folder(own)
    recipe = _recipe(arch, name, folder)
    recipe = apply_overrides(recipe, args)
    model, base = registry.load(arch, str(own.get("base", "default")), recipe.seed, **model_kw, **loader_kw)
    out = Path(own["out"]) if "out" in own else cache_dir() / "runs" / f"{arch}-{name}-{recipe.seed}"
    progress = own.get("progress", True) is not False
    if folder is not None:
        folder.pool(model.image_size, progress=progress, warn=False)  # read once here; train() reuses it
        print(folder.report() + ("" if folder.captions else " (no captions: I2T mixing off)"))
    print(f"recipe ({name} preset for {arch}; overrides: {sorted(args) or 'none'}):")
    for k, v in asdict(recipe).items():
        print(f"  {k:<20} = {v!r}")
    print(f"model: {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
          f"base={base}); out_dir: {out}")
    if real:
        print(format_memory(estimate_memory(model, recipe)))
    resume = own.get("resume")
    history = train(model, recipe, out_dir=out, resume="latest" if resume is True else resume,
                    progress=progress, data=folder.batches if folder is not None else None)
    last = [r for r in history if "loss" in r][-1:] or [{}]
    kept = "adapters.safetensors" if recipe.freeze == "lora" else "model.safetensors"
    print(f"done: {recipe.steps} steps; last row {last[0]}; {kept} in {out}")
    return history


def _folder(own: dict):
    """Your own images (--image_folder), or None for shape world."""
    from reca_nb.models import registry

    if "image_folder" not in own:
        if "captions" in own or "max_images" in own:
            raise ValueError("--captions and --max_images need --image_folder")
        if own.get("arch") in registry.real():
            raise SystemExit(f"--image_folder is required: --arch={own['arch']} trains on your own images\n{USAGE}")
        return None
    from reca_nb.world.folder import ImageFolder

    return ImageFolder(own["image_folder"], captions=own.get("captions"), max_images=own.get("max_images"))


def _recipe(arch: str, name: str, folder) -> Recipe:
    """The named preset; on a folder without captions there is no I2T data, so the I2T mix is off."""
    from dataclasses import replace

    from reca_nb.recipe import preset

    recipe = preset(arch, name)
    if folder is not None and not folder.captions:
        recipe = replace(recipe, lambda_i2t=0.0, i2t_ratio=0.0)
    return recipe


def launch_print():
    """`print` in the main process of an `accelerate launch` (RANK 0, or no launcher); a no-op elsewhere, so a
    multi-process run reports once."""
    return print if int(os.environ.get("RANK", "0")) == 0 else (lambda *args, **kwargs: None)


def cli(argv=None):
    """`python -m reca_nb.train`: warnings, bad input and Ctrl-C each end in one line on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        main(argv)
    except (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError) as e:  # bad input: exit 1
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt as e:  # the checkpoint is already on disk (train saves before it raises)
        print(_interrupted_line(e, argv), file=sys.stderr)
        raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports a Ctrl-C
    finally:
        warnings.formatwarning = formatwarning  # in-process callers (tests, runpy) keep their own format


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _interrupted_line(e: KeyboardInterrupt, argv: list) -> str:
    """What was kept and the command that continues the run (same arguments, `--resume` for any old one)."""
    import shlex

    args = [a for a in argv if a != "--resume" and not a.startswith("--resume=")] + ["--resume"]
    again = f"continue with: python -m reca_nb.train {shlex.join(args)}"
    if not isinstance(e, TrainingInterrupted):
        return f"interrupted outside the training steps; {again}"
    if e.checkpoint is None:
        return f"interrupted at step {e.step}; no checkpoint yet; {again}"
    return f"interrupted at step {e.step}; checkpoint saved: {e.checkpoint}; {again}"


if __name__ == "__main__":
    cli()
