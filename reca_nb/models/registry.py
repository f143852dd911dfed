"""Architecture registry: name -> UMM class (imported lazily), fresh builds and the shipped base checkpoints.

    model = registry.load_base("showo-clip")     # data/checkpoints/showo-clip.safetensors
    model = registry.build("janus", d_model=64)  # random init, config overrides

Extra architectures (your own UMM, or the test toy) register through the environment, comma-separated:
    RECA_NB_EXTRA_ARCHS="toy=tests.toy_umm:ToyUMM"      (name= optional; default: the class's `arch`)
"""
from __future__ import annotations

import importlib
import os

from reca_nb.paths import DATA_DIR

ARCHS = {
    "showo-vq": "reca_nb.models.showo:ShowO",
    "showo-clip": "reca_nb.models.showo:ShowO",
    "janus": "reca_nb.models.janus:JanusMini",
    "harmon": "reca_nb.models.harmon:HarmonMini",
    "bagel": "reca_nb.models.bagel:BagelMini",
    "openuni": "reca_nb.models.openuni:OpenUniMini",
}
# config fields an arch name implies (two Show-o variants share one class)
ARCH_DEFAULTS = {"showo-vq": {"variant": "vq"}, "showo-clip": {"variant": "clip"}}
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
EXTRA_ENV = "RECA_NB_EXTRA_ARCHS"


def _extra() -> dict:
    out = {}
    for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
        name, _, target = spec.rpartition("=")
        out[name or _load(target).arch] = target
    return out


def available() -> tuple:
    return tuple(ARCHS) + tuple(k for k in _extra() if k not in ARCHS)


def _load(target: str):
    module, _, cls = target.partition(":")
    if not cls:
        raise ValueError(f"architecture target must look like 'package.module:Class', got {target!r}")
    return getattr(importlib.import_module(module), cls)


def check(arch: str) -> str:
    """`arch` if it is registered, else a ValueError listing the valid names."""
    if arch not in available():
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(available())} "
                         f"(register your own with {EXTRA_ENV}='name=module:Class')")
    return arch


def get_class(arch: str):
    """The UMM subclass for `arch` (imports its module on first use)."""
    return _load({**_extra(), **ARCHS}[check(arch)])


def build(arch: str, **overrides):
    """A freshly initialised model; `overrides` replace fields of the class's config dataclass."""
    cls = get_class(arch)
    cfg = cls.config_cls(**{**ARCH_DEFAULTS.get(arch, {}), **overrides})
    return cls(cfg)


def base_path(arch: str):
    return CHECKPOINT_DIR / f"{arch}.safetensors"


def load_base(arch: str, path=None):
    """The pretrained base UMM that RecA starts from (the output of `python -m reca_nb.build.pretrain`)."""
    cls = get_class(arch)
    path = path or base_path(arch)
    if not os.path.exists(path):
        have = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors")) if CHECKPOINT_DIR.exists() else []
        raise FileNotFoundError(
            f"no base checkpoint for {arch!r} at {path}. Available: {', '.join(have) or 'none'}. "
            f"Make it with:  python -m reca_nb.build.pretrain --arch={arch}")
    model = cls.load(path)
    if cls.archs and model.arch != arch:  # one class, several names (Show-o): the file must be this one
        raise ValueError(f"{path} holds a {model.arch!r} checkpoint, not {arch!r}")
    return model
