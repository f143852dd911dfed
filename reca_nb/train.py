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

import hashlib
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reca_nb.collapse import CollapseMonitor
from reca_nb.world.data import Batches
from reca_nb.recipe import WORLD_FIELDS, Recipe, mini_und_res

CKPT_FORMAT = "reca_nb.train/1"
# recipe fields a resumed run may change: they do not alter the trajectory of the steps already taken
RESUMABLE = ("steps", "eval_every", "eval_n", "save_every", "keep_ckpts", "log_every", "collapse_stop",
             "device")


class CheckpointError(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended `train()` after `step` completed steps; `checkpoint` is the newest restart point in
    `out_dir` (None when there is none)."""

    def __init__(self, step: int, out_dir):
        ckpts = _checkpoints(out_dir)
        self.step, self.out_dir, self.checkpoint = step, out_dir, ckpts[-1] if ckpts else None
        if self.checkpoint is None:
            where = "no checkpoint written (train(..., out_dir=DIR) keeps them)"
        else:
            where = f"newest checkpoint: {self.checkpoint}; continue with train(..., resume='latest')"
        super().__init__(f"interrupted at step {step}; {where}")


# ----------------------------------------------------------------------------- model: one forward, all terms

class Objective(nn.Module):
    """Wraps the UMM so one forward computes every active loss term (DDP needs one forward per backward)."""

    def __init__(self, umm):
        super().__init__()
        self.umm = umm

    def forward(self, batch: dict) -> dict:
        out = {}
        if "reca" in batch:
            out["reca"] = self.umm.reca_loss(*batch["reca"])  # (und images, templates, target images)
        if "i2t" in batch:
            out["i2t"] = self.umm.i2t_loss(*batch["i2t"])  # (und images, captions)
        if "t2i" in batch:
            out["t2i"] = self.t2i_loss(*batch["t2i"])  # (images, prompts[, views, has_view])
        return out

    def t2i_loss(self, images, prompts, views=None, has_view=None):
        """Generation loss of (image, prompt) pairs; rows with `has_view` also read the und tokens of their
        second view (`views`, already at und resolution), through the same route RecA uses. The batch mean
        weights every sample equally, whichever group it is in."""
        if has_view is None:
            return self.umm.generation_loss(images, prompts)
        parts, m = [], has_view.bool()
        for rows, cond in ((~m, None), (m, views)):
            k = int(rows.sum())
            if k:
                sub = [t for t, r in zip(prompts, rows.tolist()) if r]
                loss = (self.umm.generation_loss(images[rows], sub) if cond is None
                        else self.umm.reca_loss(cond, sub, images[rows]))
                parts.append(loss * k)
        return sum(parts) / len(prompts)


# ----------------------------------------------------------------------------- freeze (practice 3)

def lora_targets(model) -> list:
    """Names of the nn.Linear modules whose weight is in the shared or generation group."""
    groups = model.parameter_groups()
    trainable = (set(groups.get("shared", [])) | set(groups.get("generation", []))) - lora_full(model)
    inside_mha = {f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and f"{n}.weight" in trainable and n not in inside_mha]


def lora_full(model) -> set:
    """Parameters trained in full next to the LoRA adapters (the UMM's `lora_full()`, e.g. a generation head)."""
    return set(model.lora_full())


def apply_freeze(model, recipe: Recipe):
    """Set requires_grad from `recipe.freeze` and model.parameter_groups(); returns the peft LoraModel
    (call .merge_and_unload() to fold the adapters back) when freeze='lora', else None.
    'frozen' is never trained; 'understanding' also freezes that group; 'lora' trains only LoRA adapters
    (peft) on the Linear layers of the shared and generation groups, plus the model's `lora_full()` parameters
    in full."""
    model.check_groups()
    if recipe.freeze == "lora":
        import re

        from peft import LoraConfig
        from peft.tuners.lora import LoraModel
        from peft.tuners.tuners_utils import cast_adapter_dtype

        targets = lora_targets(model)
        model.freeze({"frozen", "understanding"})  # LoRA wraps shared/generation layers only
        if not targets:
            raise ValueError(f"freeze='lora': {type(model).__name__} has no nn.Linear in the shared or "
                             "generation groups")
        cfg = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_r, lora_dropout=0.0,
                         target_modules="|".join(re.escape(t) for t in targets))  # str: full-name match
        lora = LoraModel(model, cfg, "default")  # in place; peft freezes everything but the adapters
        cast_adapter_dtype(model, "default")  # bf16 / fp16 base weights: adapters still train in fp32
        full = lora_full(model)
        for n, p in model.named_parameters():
            p.requires_grad_(p.requires_grad or n in full)
        return lora
    model.freeze({"frozen", "understanding"} if recipe.freeze == "understanding" else {"frozen"})
    return None


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
    evals:     {name: fn(model) -> dict}; default GenEval-mini T2I + I2T (reca_nb.evaluation.geneval) when eval_every > 0
    monitor:   a CollapseMonitor; by default one with the recipe's threshold whenever RecA is on
    data:      None: the recipe's shape-world pools (reca_nb.world.data.Batches); else a function
               (size, seed=, prompts=, device=) -> a sampler with Batches' methods, e.g. the bound method
               `reca_nb.world.folder.ImageFolder(root).batches` (your own images)
    LoRA runs (freeze="lora") with out_dir also write out_dir/adapters.safetensors (reca_nb.adapters).
    """
    # --- config ---------------------------------------------------------------------------------------
    terms = recipe.active_terms
    if recipe.steps == 0:
        return []
    if not terms:
        raise ValueError("every loss weight is 0 (lambda_reca, lambda_i2t, lambda_t2i): nothing to train")
    if recipe.warmup >= recipe.steps:
        warnings.warn(_warmup_msg(recipe), stacklevel=2)
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume is not None and out_dir is None and resume in ("latest", True):
        raise ValueError("resume='latest' needs out_dir")
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
    main = accelerator.is_main_process
    _seed_everything(recipe.seed + accelerator.process_index)
    # --- model and freeze -----------------------------------------------------------------------------
    was_training = model.training
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    lora = apply_freeze(model, recipe)
    try:
        # --- optimizer and schedule -------------------------------------------------------------------
        optimizer = build_optimizer(model, recipe)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, recipe=recipe))
        objective, optimizer, scheduler = accelerator.prepare(Objective(model), optimizer, scheduler)
        umm = accelerator.unwrap_model(objective).umm
        # --- data -------------------------------------------------------------------------------------
        # every process draws the same global batch and keeps its own share (_Shard): the run depends on the
        # global batch only, not on how many processes split it, and one checkpointed data state fits all
        seed = recipe.seed
        data = (Batches(umm.image_size, recipe.n_images, recipe.n_t2i_pairs, recipe.data_seed, seed=seed,
                        prompts=recipe.prompts, device=accelerator.device, i2t_fact_p=recipe.i2t_fact_p,
                        t2i_sparse_p=recipe.t2i_sparse_p) if data is None else
                data(umm.image_size, seed=seed, prompts=recipe.prompts, device=accelerator.device))
        if (recipe.i2t_fact_p or recipe.t2i_sparse_p or recipe.t2i_view_p) and not isinstance(data, Batches):
            raise ValueError("the world options (i2t_fact_p, t2i_sparse_p, t2i_view_p) need the shape-world "
                             "pools; leave them at 0 when training on your own data")
        if accelerator.num_processes > 1:
            data = _Shard(data, accelerator.process_index, accelerator.num_processes)
        lam = {"reca": recipe.lambda_reca, "i2t": recipe.lambda_i2t, "t2i": recipe.lambda_t2i}
        if monitor is None and "reca" in terms:
            monitor = CollapseMonitor(threshold=recipe.collapse_threshold, stop=recipe.collapse_stop)
        if evals is None and recipe.eval_every:
            evals = default_evals(recipe)
        # --- resume -----------------------------------------------------------------------------------
        step, history, window = 0, [], _new_window()
        state = _find_checkpoint(out_dir, resume)
        if state is None and main and _checkpoints(out_dir):  # a fresh run owns its out_dir
            tqdm.write(f"starting fresh: removing the old checkpoints in {out_dir}")
            for old in _checkpoints(out_dir):
                old.unlink()
        if state is not None:
            _check_recipe(state["recipe"], recipe)
            _check_model(state, umm)
            umm.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optim"])
            scheduler.load_state_dict(state["scheduler"])
            data.set_state(state["rng"]["data"])
            _set_rng_state(state["rng"])
            step, history, window = state["step"], state["history"], state["window"]
            if monitor is not None and state.get("monitor"):
                monitor.load_state_dict(state["monitor"])
            if main:
                tqdm.write(f"resumed from {state['path']} at step {step}")

        def save():
            if out_dir is not None and main:
                save_checkpoint(out_dir, umm, optimizer, scheduler, recipe, step, history, window, data,
                                monitor)

        # --- loop ---------------------------------------------------------------------------------------
        umm.train()
        bar = tqdm(total=recipe.steps, initial=step, disable=not (progress and main), dynamic_ncols=True,
                   desc=f"{recipe.arch} {recipe.stage}")
        stop, clean, t_window = False, True, time.perf_counter()
        with _DeferInterrupt() as interrupt:
            try:
                while step < recipe.steps and not stop:
                    clean = False  # from here until the step is logged, a checkpoint would be inconsistent
                    batch = _make_batch(data, recipe, terms, umm, step)
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
                    step += 1
                    bar.update(1)
                    # bookkeeping for this step (all consistent: a checkpoint now is a clean restart point)
                    for k, v in values.items():
                        window[k] = window.get(k, 0.0) + v
                    window["loss"] += loss_value
                    window["n"] += 1
                    window["samples"] += sum(len(b[-1]) for b in batch.values()) * accelerator.num_processes
                    agree = None
                    if monitor is not None and "reca" in values:
                        if step % recipe.log_every == 0 or step == recipe.steps:
                            und, _, target = batch["reca"]
                            agree = umm.token_agreement(und, target)
                        if monitor.update(values["reca"], step, agree) and monitor.collapse_step == step:
                            tqdm.write(f"step {step}: collapse monitor fired: {monitor.reason}")
                        stop = monitor.collapsed and (monitor.stop or recipe.collapse_stop)
                    if step % recipe.log_every == 0 or step == recipe.steps or stop:
                        row = _log_row(step, lr, window, time.perf_counter() - t_window, monitor, agree)
                        window, t_window = _new_window(), time.perf_counter()
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.startswith("loss")})
                        stop |= _emit(row, history, callbacks, umm)
                    clean = True
                    # --- eval / save ----------------------------------------------------------------------
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
            _write_json(out_dir / "history.json", history)
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


def _make_batch(data: Batches, recipe: Recipe, terms, umm, step: int) -> dict:
    batch = {}
    if "reca" in terms:  # the caption of the image is never read: the text is a random template
        target, templates = data.reca(recipe.batch)
        batch["reca"] = (recipe.und_transform(target, umm.und_size), templates, target)
    if "i2t" in terms:
        images, captions = data.i2t(recipe.i2t_batch)
        res = recipe.i2t_und_res[step % len(recipe.i2t_und_res)] if recipe.i2t_und_res else None
        batch["i2t"] = (recipe.und_transform(images, umm.und_size, res=res), captions)
    if "t2i" in terms:
        if recipe.t2i_view_p > 0:  # the view goes in at the RecA bottleneck, where RecA will read it
            images, prompts, views, has_view = data.t2i_views(recipe.batch, recipe.t2i_view_p, recipe.view_jitter)
            res = recipe.und_res or mini_und_res(recipe.arch, umm.image_size)
            views = recipe.und_transform(views, umm.und_size, res=res) if len(views) else views
            batch["t2i"] = (images, prompts, views, has_view)  # has_view last: one entry per sample
        else:
            batch["t2i"] = data.t2i(recipe.batch)
    return batch


class _Shard:
    """One process's share of every batch under `accelerate launch`: all processes draw the same global batch
    (B x processes, same generator and seed) and each keeps its own contiguous slice of B samples, so N
    processes with batch B train on exactly the samples one process with batch N*B would."""

    def __init__(self, data, rank: int, world: int):
        self.data, self.rank, self.world = data, rank, world

    def _mine(self, out: tuple, B: int) -> tuple:
        lo = self.rank * B
        return tuple(x[lo:lo + B] for x in out)

    def reca(self, B: int):
        return self._mine(self.data.reca(B * self.world), B)

    def i2t(self, B: int):
        return self._mine(self.data.i2t(B * self.world), B)

    def t2i(self, B: int):
        return self._mine(self.data.t2i(B * self.world), B)

    def t2i_views(self, B: int, p: float, jitter: float = 2.0):
        images, prompts, views, has_view = self.data.t2i_views(B * self.world, p, jitter)
        lo = self.rank * B
        first = int(has_view[:lo].sum())  # views hold only the rows that have one, in row order
        k = int(has_view[lo:lo + B].sum())
        return images[lo:lo + B], prompts[lo:lo + B], views[first:first + k], has_view[lo:lo + B]

    def state(self) -> torch.Tensor:
        return self.data.state()

    def set_state(self, state: torch.Tensor):
        self.data.set_state(state)


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
    ckpts = _checkpoints(out_dir) if out_dir is not None else []
    keep = f"last good checkpoint: {ckpts[-1]}" if ckpts else "no checkpoint (pass out_dir to keep them)"
    return (f"non-finite {what} at step {step + 1} (losses {values}); the weights were not updated; {keep}. "
            "Lower lr, check the inputs, or resume from the checkpoint.")


class _DeferInterrupt:
    """Ctrl-C during a step sets a flag; the loop finishes the step, saves and raises. A second Ctrl-C
    raises at once. Outside the main thread (no signal handlers) it does nothing."""

    def __enter__(self):
        self.hit, self.old = False, None
        try:
            self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:
            pass
        return self

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


# ----------------------------------------------------------------------------- eval

def default_evals(recipe: Recipe) -> dict:
    from reca_nb.evaluation import geneval  # lazy: the scorer is only needed when evaluating

    return {"t2i": lambda m: geneval.evaluate_t2i(m, n_per_category=max(1, recipe.eval_n // 6), progress=False),
            "i2t": lambda m: geneval.evaluate_i2t(m, n=recipe.eval_n, progress=False)}


def _evaluate(umm, evals: dict) -> dict:
    """Run the eval functions in eval mode with every RNG forked, so evaluating never changes training."""
    state = _rng_state()
    try:
        umm.eval()
        with torch.no_grad():
            return {name: fn(umm) for name, fn in evals.items()}
    finally:
        umm.train()
        _set_rng_state(state)


# ----------------------------------------------------------------------------- RNG streams

def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict):
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------- checkpoints

def _checkpoints(out_dir) -> list:
    """Step checkpoints in out_dir, oldest first."""
    return sorted(Path(out_dir).glob("ckpt-*.safetensors")) if out_dir is not None else []


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain(x):
    """json.dumps fallback: tensors / numpy values (e.g. from custom eval functions) -> python."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_plain))
    tmp.replace(path)


def save_checkpoint(out_dir, umm, optimizer, scheduler, recipe, step, history, window, data, monitor) -> Path:
    """Atomically write out_dir/ckpt-{step}.safetensors (tensors + JSON metadata) and prune old ones."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in umm.state_dict().items()}
    osd = optimizer.state_dict()
    scalars = {}
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{pid}/{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}/{k}"] = v
    rng = _rng_state()
    tensors["rng/torch"], tensors["rng/data"] = rng["torch"], data.state()
    for i, s in enumerate(rng.get("cuda", [])):
        tensors[f"rng/cuda/{i}"] = s
    np_state = rng["numpy"]
    meta = {
        "format": CKPT_FORMAT, "arch": umm.arch, "step": step, "recipe": asdict(recipe),
        "model_config": asdict(umm.config), "optim_groups": osd["param_groups"], "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(), "rng_python": rng["python"],
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "history": history, "window": window,
        "monitor": monitor.state_dict() if monitor is not None else None,
    }
    metadata = {k: json.dumps(v, default=_plain) for k, v in meta.items()}
    metadata["sha256"] = _digest(tensors)
    path = out_dir / f"ckpt-{step:06d}.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except OSError as e:  # e.g. disk full: drop the partial file, keep every earlier checkpoint
        tmp.unlink(missing_ok=True)
        kept = ", ".join(p.name for p in _checkpoints(out_dir)) or "none"
        raise OSError(e.errno, f"could not write checkpoint {path} ({e.strerror or e}); the earlier "
                      f"checkpoints are intact: {kept}") from e
    tmp.replace(path)  # atomic: a crash leaves either the old file set or the new one, never half a file
    for old in _checkpoints(out_dir)[:-recipe.keep_ckpts]:
        old.unlink()
    _write_json(out_dir / "history.json", history)
    return path


def load_checkpoint(path) -> dict:
    """Read and verify one checkpoint; raises CheckpointError on anything unreadable or inconsistent."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if raw.get("format") != json.dumps(CKPT_FORMAT):
            raise CheckpointError(f"{path} is not a reca_nb training checkpoint (format {raw.get('format')})")
        if raw.get("sha256") != _digest(tensors):
            raise CheckpointError(f"{path} is corrupt (tensor checksum mismatch)")
        meta = {k: json.loads(v) for k, v in raw.items() if k != "sha256"}
    except CheckpointError:
        raise
    except Exception as e:  # truncated / garbled file: safetensors or json raised
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    state = {"path": path, "step": meta["step"], "recipe": meta["recipe"], "history": meta["history"],
             "arch": meta.get("arch"), "model_config": meta.get("model_config"),
             "window": meta["window"], "monitor": meta["monitor"], "scheduler": meta["scheduler"]}
    state["model"] = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    optim_state = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            pid, name = k.split("/")[1:]
            optim_state.setdefault(int(pid), {})[name] = v
    for k, v in meta["optim_scalars"].items():
        pid, name = k.split("/")
        optim_state.setdefault(int(pid), {})[name] = v
    state["optim"] = {"state": optim_state, "param_groups": meta["optim_groups"]}
    py, npy = meta["rng_python"], meta["rng_numpy"]
    state["rng"] = {"python": (py[0], tuple(py[1]), py[2]),
                    "numpy": (npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]),
                    "torch": tensors["rng/torch"], "data": tensors["rng/data"]}
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.split("/")[-1]))
    if cuda:
        state["rng"]["cuda"] = [tensors[k] for k in cuda]
    return state


def _find_checkpoint(out_dir, resume):
    """None (fresh start) or the state of the newest readable checkpoint, falling back past corrupt ones."""
    if resume in (None, False):
        return None
    if resume not in ("latest", True):
        return load_checkpoint(resume)  # an explicit file must be good
    candidates = _checkpoints(out_dir)[::-1]
    if not candidates:
        tqdm.write(f"resume='latest': no checkpoint in {out_dir} yet, starting from step 0")
        return None
    for path in candidates:
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=3)
    raise CheckpointError(f"no readable checkpoint in {out_dir} (tried {[p.name for p in candidates]})")


def _check_recipe(saved: dict, recipe: Recipe):
    saved = {**WORLD_FIELDS, **saved}  # checkpoints written before the world options existed ran without them
    now = json.loads(json.dumps(asdict(recipe)))
    diff = {k: (saved.get(k), v) for k, v in now.items() if k not in RESUMABLE and saved.get(k) != v}
    if diff:
        raise ValueError("the checkpoint was trained with a different recipe; differing fields "
                         f"(checkpoint, now): {diff}. Use a new out_dir or the same recipe.")


def _check_model(state: dict, umm):
    """The checkpoint must hold this architecture with this config (else: load_state_dict's mismatch wall)."""
    saved = state.get("model_config") or {}
    now = json.loads(json.dumps(asdict(umm.config), default=_plain))
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if state.get("arch") != umm.arch or diff:
        raise CheckpointError(f"{state['path']} holds a {state.get('arch')!r} model with a different config "
                              f"than this {umm.arch!r} one; differing model config fields (checkpoint, now): "
                              f"{diff}. Use a new out_dir or the model it was trained from.")


# ----------------------------------------------------------------------------- CLI

CLI_KEYS = ("arch", "preset", "base", "out", "resume", "progress", "threads")
# real checkpoints (hub weights, your own images): not in reca_nb.models.registry; their module's main() takes over
REAL_ARCHS = {"janus-pro": "reca_nb.models.real.janus_pro"}
USAGE = """usage: python -m reca_nb.train --arch=ARCH [--preset=reca|pretrain|control|ci|colab]
       [--base=default|none|PATH] [--out=DIR] [--resume[=PATH]] [--threads=N] [--progress=False]
       [--model.FIELD=V ...] [--RECIPE_FIELD=V ...]
  --base=default loads data/checkpoints/ARCH.safetensors; --base=none builds a fresh model (seeded by
  --seed; --model.* overrides its config). --out defaults to $RECA_NB_HOME/runs/ARCH-PRESET-SEED.
  Real checkpoints on your own images: --arch=janus-pro --image_folder=DIR (see reca_nb.models.real.janus_pro)."""


def main(argv=None):
    from reca_nb.models import registry
    from reca_nb.config import apply_overrides, parse_overrides
    from reca_nb.paths import cache_dir
    from reca_nb.recipe import preset

    print = launch_print()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return None
    args = parse_overrides(argv)
    if args.get("arch") in REAL_ARCHS:
        import importlib

        return importlib.import_module(REAL_ARCHS[args["arch"]]).main(argv)
    cli = {k: args.pop(k) for k in CLI_KEYS if k in args}
    model_kw = {k[6:]: args.pop(k) for k in list(args) if k.startswith("model.")}
    if "arch" not in cli:
        raise SystemExit(f"--arch is required; valid: {', '.join(registry.available())}\n{USAGE}")
    arch, name = cli["arch"], cli.get("preset", "reca")
    recipe = apply_overrides(preset(arch, name), args)
    if "threads" in cli:
        torch.set_num_threads(int(cli["threads"]))
    base = str(cli.get("base", "default"))
    if base == "none":
        torch.manual_seed(recipe.seed)  # a fresh model is a function of the seed too
        model = registry.build(arch, **model_kw)
    else:
        if model_kw:
            raise SystemExit("--model.* overrides need --base=none (a loaded checkpoint fixes the config)")
        model = registry.load_base(arch, None if base == "default" else base)
    out = Path(cli["out"]) if "out" in cli else cache_dir() / "runs" / f"{arch}-{name}-{recipe.seed}"
    print(f"recipe ({name} preset for {arch}; overrides: {sorted(args) or 'none'}):")
    for k, v in asdict(recipe).items():
        print(f"  {k:<20} = {v!r}")
    print(f"model: {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
          f"base={base}); out_dir: {out}")
    resume = cli.get("resume")
    history = train(model, recipe, out_dir=out, resume="latest" if resume is True else resume,
                    progress=cli.get("progress", True) is not False)
    last = [r for r in history if "loss" in r][-1:] or [{}]
    print(f"done: {recipe.steps} steps; last row {last[0]}; model at {out / 'model.safetensors'}")
    return history


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
