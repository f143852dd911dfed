"""Run a notebook the way a JupyterLab kernel runs it, and read what the learner would see.

nbmake only checks that cells raise nothing; it never looks at outputs, and under `MPLBACKEND=Agg` a figure
that would print as `<Figure size ...>` in JupyterLab passes unnoticed. Here the kernel keeps ipykernel's own
matplotlib backend (the inline one, as in JupyterLab, Notebook, VS Code and Colab) and the outputs are checked.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
BARE_FIGURE = re.compile(r"<(matplotlib\.figure\.)?Figure size [^>]*>")


def execute(path: Path, parameters: dict | None = None, timeout: int = 900):
    """Execute a copy of the notebook in a fresh kernel without MPLBACKEND (the kernel inherits os.environ)
    and return it with its outputs; `parameters` replace assignments in the cell tagged "parameters"."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    return nb


def _last_call(source: str) -> str | None:
    """Name of the function called by the cell's last statement when that statement is a bare expression
    (`plotting.plot_history(h)` -> "plot_history"), else None."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics
        return None
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return None
    f = body[-1].value.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def draws(source: str) -> bool:
    """The cell ends by showing a figure made by a reca_nb helper (plot_*, image_grid, explorer.show)."""
    name = _last_call(source)
    return bool(name) and (name.startswith("plot_") or name in {"image_grid", "show"})


def problems(nb) -> list[str]:
    """What a learner would see wrong: bare figure reprs, drawing cells without a picture, a widget shown twice,
    warning boxes."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        bundles = [o.get("data", {}) for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
        streams = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        where = f"cell {i} ({cell.source.strip().splitlines()[-1][:60]!r})" if cell.source.strip() else f"cell {i}"
        for b in bundles:
            if BARE_FIGURE.search(b.get("text/plain", "")) and "image/png" not in b:
                found.append(f"{where}: a figure printed as text {b['text/plain']!r}")
        stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
        for m in re.finditer(r"\w*Warning: .*", stderr):
            found.append(f"{where}: a warning box: {m[0][:120]!r}")
        if BARE_FIGURE.search(streams):
            found.append(f"{where}: a figure printed as text in the cell's stream")
        if draws(cell.source) and not any("image/png" in b for b in bundles):
            found.append(f"{where}: draws a figure but has no image/png output")
        if _last_call(cell.source) == "explore" and sum(WIDGET in b for b in bundles) != 1:
            found.append(f"{where}: the explorer must be shown exactly once, "
                         f"got {sum(WIDGET in b for b in bundles)} widget outputs")
    return found


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
