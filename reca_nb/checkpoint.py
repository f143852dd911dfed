"""Training checkpoints: one safetensors file per saved step that restarts a run bit-identically on CPU,
and the Ctrl-C handling that makes every interruption end on one.

A checkpoint holds the model, optimizer and scheduler state, every RNG stream (python, numpy, torch, CUDA and the
data sampler's), the history and the recipe, with a sha256 over the tensors. `find_checkpoint` falls back past
corrupt files; `check_recipe` / `check_model` refuse to resume a different run in the same folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from reca_nb.paths import atomic_write
from reca_nb.recipe import WORLD_FIELDS, Recipe

CKPT_FORMAT = "reca_nb.train/1"
# recipe fields a resumed run may change: they do not alter the trajectory of the steps already taken
RESUMABLE = ("steps", "eval_every", "eval_n", "save_every", "keep_ckpts", "log_every", "collapse_stop",
             "device")


class CheckpointError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- RNG streams

def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict):
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------- files

def checkpoints(out_dir) -> list:
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


def write_json(path: Path, obj):
    atomic_write(path, json.dumps(obj, indent=1, default=_plain))


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
    rng = rng_state()
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

    def write(tmp):
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the restart point

    try:
        atomic_write(path, write)  # a crash leaves either the old file set or the new one, never half a file
    except OSError as e:  # e.g. disk full: every earlier checkpoint is intact
        kept = ", ".join(p.name for p in checkpoints(out_dir)) or "none"
        raise OSError(e.errno, f"could not write checkpoint {path} ({e.strerror or e}); the earlier "
                      f"checkpoints are intact: {kept}") from e
    for old in checkpoints(out_dir)[:-recipe.keep_ckpts]:
        old.unlink()
    write_json(out_dir / "history.json", history)
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


def find_checkpoint(out_dir, resume):
    """None (fresh start) or the state of the newest readable checkpoint, falling back past corrupt ones."""
    if resume in (None, False):
        return None
    if resume not in ("latest", True):
        return load_checkpoint(resume)  # an explicit file must be good
    candidates = checkpoints(out_dir)[::-1]
    if not candidates:
        tqdm.write(f"resume='latest': no checkpoint in {out_dir} yet, starting from step 0")
        return None
    for path in candidates:
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=3)
    raise CheckpointError(f"no readable checkpoint in {out_dir} (tried {[p.name for p in candidates]})")


def check_recipe(saved: dict, recipe: Recipe):
    saved = {**WORLD_FIELDS, **saved}  # checkpoints written before the world options existed ran without them
    now = json.loads(json.dumps(asdict(recipe)))
    diff = {k: (saved.get(k), v) for k, v in now.items() if k not in RESUMABLE and saved.get(k) != v}
    if diff:
        raise ValueError("the checkpoint was trained with a different recipe; differing fields "
                         f"(checkpoint, now): {diff}. Use a new out_dir or the same recipe.")


def check_model(state: dict, umm):
    """The checkpoint must hold this architecture with this config (else: load_state_dict's mismatch wall)."""
    saved = state.get("model_config") or {}
    now = json.loads(json.dumps(asdict(umm.config), default=_plain))
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if state.get("arch") != umm.arch or diff:
        raise CheckpointError(f"{state['path']} holds a {state.get('arch')!r} model with a different config "
                              f"than this {umm.arch!r} one; differing model config fields (checkpoint, now): "
                              f"{diff}. Use a new out_dir or the model it was trained from.")


# ----------------------------------------------------------------------------- Ctrl-C

class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended `train()` after `step` completed steps; `checkpoint` is the newest restart point in
    `out_dir` (None when there is none)."""

    def __init__(self, step: int, out_dir):
        ckpts = checkpoints(out_dir)
        self.step, self.out_dir, self.checkpoint = step, out_dir, ckpts[-1] if ckpts else None
        if self.checkpoint is None:
            where = "no checkpoint written (train(..., out_dir=DIR) keeps them)"
        else:
            where = f"newest checkpoint: {self.checkpoint}; continue with train(..., resume='latest')"
        super().__init__(f"interrupted at step {step}; {where}")


class DeferInterrupt:
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
