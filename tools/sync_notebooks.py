"""Regenerate notebooks/*.ipynb from their jupytext py:percent sources, without outputs, byte-stably.

The hand-edited source of every notebook is `notebooks/NN_topic.py` (jupytext "py:percent": cells start with
`# %%`, markdown cells with `# %% [markdown]`). The `.ipynb` next to it is generated (for Colab badges and for
`pytest --nbmake`) and committed without outputs:

    python tools/sync_notebooks.py           # write every .ipynb      (make notebooks)
    python tools/sync_notebooks.py --check   # exit 1 if any is stale  (make check-notebooks, CI)

Generation = jupytext read -> notebook metadata fixed up (kernel "python3", paired formats so edits saved
from JupyterLab flow back into the .py, no jupytext version stamp) -> nbstripout's `strip_output` (no outputs,
no execution counts, cell ids renumbered 0, 1, 2, ...) -> nbformat JSON. jupytext alone gives random cell ids
on every run; after the strip the bytes depend only on the .py, so regenerating twice gives identical files.

--check regenerates in memory and compares bytes; it fails on a stale or missing .ipynb, on an .ipynb that
carries outputs, and on an .ipynb without a .py source (author notebooks as .py; see README).
Files whose name starts with "_" are helpers, not notebooks, and are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
from nbstripout import strip_output

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# nbstripout's default metadata keys (the same list its CLI uses), fixed here so the result never depends on
# a user's git config (`filter.nbstripout.extrakeys`)
STRIP_KEYS = [
    "metadata.signature", "metadata.widgets", "cell.metadata.collapsed", "cell.metadata.ExecuteTime",
    "cell.metadata.execution", "cell.metadata.heading_collapsed", "cell.metadata.hidden",
    "cell.metadata.scrolled",
]


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def render(py_path: Path) -> str:
    """The exact text of the .ipynb generated from one py:percent file."""
    nb = jupytext.read(py_path, fmt="py:percent")
    # keep the header's notebook metadata (e.g. nbmake's `execution: {timeout: ...}`) and jupytext's filters
    # (they stop JupyterLab from adding a header to a header-less .py on save); drop the version stamp
    jt = {k: v for k, v in nb.metadata.get("jupytext", {}).items() if k != "text_representation"}
    nb.metadata["jupytext"] = {**jt, "formats": "ipynb,py:percent"}
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb = strip_output(nb, keep_output=False, keep_count=False, keep_id=False, extra_keys=STRIP_KEYS)
    text = nbformat.writes(nb)  # validates, indent=1, sorted keys (as Jupyter writes)
    return text if text.endswith("\n") else text + "\n"


def has_outputs(ipynb: Path) -> bool:
    nb = nbformat.read(ipynb, as_version=4)
    return any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def check(folder: Path) -> list[str]:
    """Problems found (empty list = in sync)."""
    problems = []
    pys = sources(folder)
    for py in pys:
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            problems.append(f"{ipynb.name}: missing (generate it from {py.name})")
        elif ipynb.read_text(encoding="utf-8") != render(py):
            why = "has outputs" if has_outputs(ipynb) else f"out of sync with {py.name}"
            problems.append(f"{ipynb.name}: {why}")
    stems = {p.stem for p in pys}
    for ipynb in sorted(folder.glob("*.ipynb")):
        if ipynb.stem not in stems:
            why = "; it also has outputs" if has_outputs(ipynb) else ""
            problems.append(f"{ipynb.name}: no {ipynb.stem}.py source (author notebooks as py:percent){why}")
    return problems


def write(folder: Path) -> list[Path]:
    """(Re)write every .ipynb whose bytes would change; returns the files written."""
    written = []
    for py in sources(folder):
        ipynb, text = py.with_suffix(".ipynb"), render(py)
        if not ipynb.exists() or ipynb.read_text(encoding="utf-8") != text:
            ipynb.write_text(text, encoding="utf-8")
            written.append(ipynb)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only verify; exit 1 when anything is stale")
    ap.add_argument("--dir", type=Path, default=NOTEBOOK_DIR, help="notebook folder (default: notebooks/)")
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        print(f"{args.dir}: no notebook folder, nothing to do")
        return 0
    if args.check:
        problems = check(args.dir)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} notebook problem(s); run `make notebooks` to regenerate", file=sys.stderr)
            return 1
        print(f"{len(sources(args.dir))} notebook(s) in sync, without outputs")
        return 0
    written = write(args.dir)
    for p in written:
        print(f"wrote {p.relative_to(args.dir.parent) if args.dir.parent in p.parents else p}")
    print(f"{len(sources(args.dir))} notebook(s), {len(written)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
