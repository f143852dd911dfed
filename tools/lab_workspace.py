"""The folder `make lab` opens: working copies of the notebooks, outside the repository.

    python tools/lab_workspace.py            # create / update the copies, print the folder
    python tools/lab_workspace.py --reset    # replace every copy with the repository's notebook

JupyterLab autosaves outputs into whatever notebook is open. Opened in the repository, that dirties
`git status`, breaks `make check-notebooks` and turns the next `git pull` into a conflict; and because the
notebooks are paired with their jupytext `.py`, every notebook shows up twice in the file browser. So the
learner works on copies in `$RECA_NB_HOME/lab` (default `~/.cache/reca_nb/lab`):

- one `.ipynb` per notebook, with the jupytext pairing removed (saving writes no `.py`);
- a copy the learner never saved is refreshed when the repository's notebook changes (after a `git pull`);
- a copy the learner did save is kept, and the tool says that a newer version exists (`--reset` takes it).

The notebooks find the library and its data through the installed package (`reca_nb.paths`), never through
the current folder, so they run the same from the copies.

It also answers JupyterLab's "get notified about official Jupyter news?" prompt with "no" for this environment
(`overrides.json` in its lab settings): the toast otherwise sits over the first figures, and a tutorial has no
business fetching a news feed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE = ".reca_nb-sources.json"  # per copy: digest of the repository notebook it came from, and of the copy


def default_dir() -> Path:
    home = Path(os.environ.get("RECA_NB_HOME", Path.home() / ".cache" / "reca_nb")).expanduser()
    return home / "lab"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _working_copy(source: Path) -> bytes:
    nb = nbformat.read(source, as_version=4)
    nb.metadata.pop("jupytext", None)
    return nbformat.writes(nb).encode() + b"\n"


def sync(dest: Path | None = None, reset: bool = False, sources=None) -> list[str]:
    """Bring the working copies in `dest` up to date; returns one line per notebook that needs a word."""
    dest = Path(dest or default_dir())
    if dest.resolve().is_relative_to(REPO_ROOT):
        raise SystemExit(f"the lab folder {dest} must lie outside the repository {REPO_ROOT}")
    dest.mkdir(parents=True, exist_ok=True)
    state_path = dest / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    notes = []
    for src in sources or sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        copy, data = dest / src.name, _working_copy(src)
        known = state.get(src.name, {})
        untouched = copy.exists() and _digest(copy.read_bytes()) == known.get("copy")
        if not copy.exists() or reset or (untouched and known.get("source") != _digest(data)):
            copy.write_bytes(data)
            state[src.name] = {"source": _digest(data), "copy": _digest(data)}
        elif known.get("source") != _digest(data):
            notes.append(f"{src.name}: the repository has a newer version; your copy is kept "
                         f"(`make lab-reset` replaces every copy)")
    state_path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    return notes


def quiet_news(prefix: Path | None = None) -> Path:
    """Set JupyterLab's news and update checks off in `prefix`'s app settings, keeping any other override."""
    path = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides = json.loads(path.read_text()) if path.exists() else {}
    overrides.setdefault("@jupyterlab/apputils-extension:notification", {}).update(
        fetchNews="false", checkForUpdates=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(overrides, indent=1) + "\n")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help="folder of the copies (default $RECA_NB_HOME/lab)")
    ap.add_argument("--reset", action="store_true", help="replace every copy with the repository's notebook")
    args = ap.parse_args(argv)
    for line in sync(args.dest, args.reset):
        print(line)
    try:
        quiet_news()
    except OSError as e:  # a read-only environment: JupyterLab simply asks its question
        print(f"JupyterLab's news prompt left as is: {e}")
    print(Path(args.dest or default_dir()))


if __name__ == "__main__":
    main()
