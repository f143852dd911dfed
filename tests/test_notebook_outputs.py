"""Every notebook, run as in JupyterLab (no MPLBACKEND=Agg), shows its figures as pictures: each cell that ends
with a reca_nb figure has an image/png output, none prints a bare `<Figure size ...>`, the explorer appears
once, no cell shows a warning box. nbmake (also in `make test`) checks only that the cells run."""
import pytest

from tests.notebook_run import NOTEBOOKS, execute, images, problems


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_figures_render_as_pictures(path):
    nb = execute(path)
    assert not problems(nb), "\n".join(problems(nb))
    assert images(nb) >= 1, f"{path.name} shows no picture at all"


def test_checker_catches_a_bare_figure():
    """The checker itself: a drawing cell whose output is only the text repr is reported."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plotting.plot_history(h)")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "<Figure size 660x290 with 12 Axes>"})]
    nb.cells = [cell]
    assert len(problems(nb)) == 2  # printed as text, and no picture for a drawing cell
    cell.outputs[0]["data"]["image/png"] = "iVBORw0KGgo="
    assert problems(nb) == []
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="x.py:3: FutureWarning: old API\n"))
    assert len(problems(nb)) == 1 and "warning box" in problems(nb)[0]
