"""Command-line overrides for dataclass configs: `--key=value` -> a checked `dataclasses.replace`.

    overrides = parse_overrides(["--steps=200", "--lr=3e-4", "--prompts=single"])
    recipe = apply_overrides(preset("showo-clip", "reca"), overrides)

Values are read with `ast.literal_eval` (so 3e-4, True, (0.9, 0.95) are numbers / bools / tuples) and fall
back to the raw string ("single"). Nothing is ever exec'd. Unknown keys and wrongly typed values raise a
ValueError that names the field, its type and the valid keys, so a typo fails before any training starts.

Every `python -m reca_nb...` command starts with `cli` (help, parsing, the command's own keys, --threads),
lists its keys with `describe` and ends in `run_main` (bad input: one line, exit status 1).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
import sys
import types
import typing


def cli(argv, usage: str, cli_keys=(), *, valid=None, empty_is_help: bool = False,
        log=print) -> tuple[dict, dict]:
    """The prologue of a command line: `argv` (None: sys.argv[1:]) -> (the command's own keys, overrides).

        USAGE = "usage: python -m reca_nb.build.pretrain --arch=ARCH [--threads=N] [--RECIPE_FIELD=V ...]"
        own, overrides = config.cli(argv, USAGE, cli_keys=("arch", "out", "threads"), empty_is_help=True)
        recipe = config.apply_overrides(preset(own["arch"], "pretrain"), overrides)

    `-h` or `--help` (or no argument at all, with empty_is_help) prints `usage` with `log` and exits with
    status 0, as argparse does. Every other argument is read by `parse_overrides`. The keys in `cli_keys` are
    the command's own (not fields of the config it overrides): they come back in the first dict, the rest in
    the second. With `valid` (the override keys, e.g. the fields of the config) a key in neither list is
    rejected here, so the message can name every key the command takes. A given `--threads=N` takes effect
    at once (torch.set_num_threads; 0 keeps torch's default), so all that follows runs on N threads. Bad
    input raises a one-line ValueError.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv or (empty_is_help and not argv):
        log(usage)
        raise SystemExit(0)
    overrides = parse_overrides(argv)
    if valid is not None:
        check_keys(overrides, [*cli_keys, *valid], "this command")
    own = {k: overrides.pop(k) for k in cli_keys if k in overrides}
    if "threads" in own and own["threads"] != 0:
        import torch  # here, not at the top: config.py is read by code that never needs torch

        torch.set_num_threads(_coerce(own["threads"], int, "--threads"))
    return own, overrides


def run_main(main, argv=None):
    """`if __name__ == "__main__": run_main(main)`: bad input (a ValueError or FileNotFoundError out of
    `main`) ends in one line `error: ...` on stderr and exit status 1, not in a traceback."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


def describe(*configs) -> str:
    """`--key=default  comment` lines for the fields of dataclass instances, for a command's --help. The
    comment is the one after the field in the source, so the help cannot drift from the code."""
    rows = []
    for dc in configs:
        try:  # the field comments, read from the class source
            source = inspect.getsource(type(dc))
            comments = dict(re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.*)$", source, flags=re.M))
        except (OSError, TypeError):  # no source (a frozen app): keys and defaults only
            comments = {}
        for f in dataclasses.fields(dc):
            if f.init:
                value = getattr(dc, f.name)
                rows.append((f"--{f.name}={value if isinstance(value, str) and value else repr(value)}",
                             comments.get(f.name, "")))
    width = min(max((len(k) for k, _ in rows), default=0), 32)
    return "\n".join(f"  {k:<{width}}  {c}".rstrip() for k, c in rows)


def parse_overrides(argv) -> dict:
    """["--a=1", "--b=x", "--flag"] -> {"a": 1, "b": "x", "flag": True}. Dashes in keys become underscores."""
    out = {}
    for arg in argv:
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"expected --key=value, got {arg!r}")
        key, sep, raw = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not key.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"bad key {key!r} in {arg!r}")
        out[key] = _literal(raw) if sep else True  # bare --flag means True
    return out


def _literal(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw  # a plain word such as single / cosine / cuda


def apply_overrides(dc, overrides: dict):
    """dataclasses.replace(dc, **overrides) with every key and value checked against the field types."""
    if not dataclasses.is_dataclass(dc) or isinstance(dc, type):
        raise TypeError(f"apply_overrides needs a dataclass instance, got {type(dc).__name__}")
    cls = type(dc)
    hints = typing.get_type_hints(cls)
    check_keys(overrides, [f.name for f in dataclasses.fields(dc) if f.init], cls.__name__)
    clean = {key: _coerce(value, hints.get(key, typing.Any), f"{cls.__name__}.{key}")
             for key, value in overrides.items()}
    return dataclasses.replace(dc, **clean)


def check_keys(keys, valid, owner: str) -> None:
    """Raise a ValueError for the first of `keys` not in `valid`, naming the closest valid keys and all."""
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown config key {key!r} for {owner};{hint} valid keys: {', '.join(valid)}")


def _coerce(value, tp, where: str):
    """`value` converted to annotation `tp` (int -> float, list -> tuple), or a clear ValueError."""
    if tp is typing.Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. int | None: first type that accepts the value wins
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ValueError:
                pass
        raise ValueError(f"{where} expects {_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where} must be one of {args}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e3 -> 1000
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            if not args or args == ((),):
                return tuple(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], where) for v in value)
            if len(args) != len(value):
                raise ValueError(f"{where} expects {len(args)} values {_name(tp)}, got {value!r}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    else:
        return value  # an annotation we do not check (dict, callables, ...)
    raise ValueError(f"{where} expects {_name(tp)}, got {value!r} ({type(value).__name__})"
                     + (" -- write True or False" if tp is bool else ""))


def check_choices(dc) -> None:
    """Raise a ValueError for any field of dataclass instance `dc` annotated `Literal[...]` whose value is not
    one of its choices (call it from `__post_init__`)."""
    hints = typing.get_type_hints(type(dc))
    for f in dataclasses.fields(dc):
        tp = hints[f.name]
        if typing.get_origin(tp) is typing.Literal and getattr(dc, f.name) not in typing.get_args(tp):
            raise ValueError(f"{type(dc).__name__}.{f.name} must be one of {typing.get_args(tp)}, "
                             f"got {getattr(dc, f.name)!r}")


def _name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
