import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reca_nb import plotting  # noqa: E402
from reca_nb.world.shapes import CATEGORIES  # noqa: E402


def _history(n=10, reca=True, ratio=True):
    rows = []
    for s in range(n):
        r = {"step": s * 10, "lr": 1e-3, "loss": 2.0 / (s + 1), "loss_t2i": 1.0 / (s + 1),
             "samples_per_s": 50.0}
        if reca:
            r["loss_reca"] = 1.0 / (s + 1)
        if ratio:
            r["collapse_ratio"] = 1.0 - s / n
        rows.append(r)
        if s % 5 == 4:
            rows.append({"step": s * 10, "eval": {"t2i": {"overall": 0.1 * s}, "i2t": {"exact": 0.5}}})
    return rows


def _lines(ax):
    return len(ax.get_lines())


def test_image_grid_one_axis_per_image():
    fig = plotting.image_grid(torch.rand(10, 3, 16, 16), nrow=4, titles=[f"t{i}" for i in range(10)])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10
    assert fig.axes[3].get_title() == "t3"
    w, h = fig.get_size_inches()
    assert w == pytest.approx(4 * plotting.CELL)
    assert len(plotting.image_grid(torch.rand(3, 3, 8, 8)).axes) == 3  # fewer images than nrow
    with pytest.raises(ValueError, match="titles"):
        plotting.image_grid(torch.rand(2, 3, 8, 8), titles=["only one"])


def test_image_grid_as_a_table_with_row_and_column_titles():
    """Long prompts as column heads (wrapped, drawn once above the top row), model names as row labels, so
    no title runs into its neighbour (notebook 06's grid of 6 bases x 6 prompts)."""
    prompts = ["a red circle", "a green triangle left of a yellow circle", "two blue squares"]
    fig = plotting.image_grid(torch.rand(6, 3, 8, 8), nrow=3, col_titles=prompts, row_titles=["vq", "clip"])
    heads = [ax.get_title() for ax in fig.axes]
    assert heads[:3] == ["a red circle", "a green triangle\nleft of a yellow\ncircle", "two blue squares"]
    assert heads[3:] == ["", "", ""]
    assert [ax.get_ylabel() for ax in fig.axes] == ["vq", "", "", "clip", "", ""]
    fig.canvas.draw()  # the wrapped heads fit their column: no two title boxes overlap
    boxes = [ax.title.get_window_extent() for ax in fig.axes[:3]]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    fig = plotting.image_grid(torch.rand(3, 3, 8, 8), nrow=3, titles=prompts)  # one title per image: wrapped too
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    with pytest.raises(ValueError, match="got 1 row_titles for 2 rows"):
        plotting.image_grid(torch.rand(6, 3, 8, 8), nrow=3, row_titles=["vq"])
    with pytest.raises(ValueError, match="got 2 col_titles for 3 columns"):
        plotting.image_grid(torch.rand(6, 3, 8, 8), nrow=3, col_titles=prompts[:2])


def test_plot_geneval_grouped_bars():
    res = {"base": {"overall": 0.5, **{c: 0.5 for c in CATEGORIES}},
           "reca": {"t2i": {"overall": 0.7, **{c: 0.7 for c in CATEGORIES}}}}
    fig = plotting.plot_geneval(res)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * (len(CATEGORIES) + 1)  # one bar per run per column
    assert len(ax.get_xticklabels()) == len(CATEGORIES) + 1
    assert ax.patches[-1].get_height() == pytest.approx(0.7)


def test_plot_history_default_keys_ignore_eval_rows():
    h = _history()
    fig = plotting.plot_history(h)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "loss_reca", "loss_t2i"]
    xs, ys = fig.axes[0].get_lines()[0].get_data()
    assert list(xs) == [r["step"] for r in h if "eval" not in r]  # eval rows skipped
    fig = plotting.plot_history(h, keys=["loss", "eval.t2i.overall"], logy=True)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == 2  # the two eval rows
    with pytest.raises(ValueError, match="not found"):
        plotting.plot_history(h, keys=["nope"])


def test_plot_collapse_two_panels_one_line_per_run():
    fig = plotting.plot_collapse({"32px": _history(), "16px": _history(), "no-ratio": _history(ratio=False)})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert _lines(left) == 3 and left.get_yscale() == "log"
    assert _lines(right) == 3 + 1  # + the reference line at 1
    with pytest.raises(ValueError, match="loss_reca"):
        plotting.plot_collapse({"x": _history(reca=False)})


def test_figures_render_headless(tmp_path):
    fig = plotting.plot_collapse({"a": _history()})
    fig.savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_plot_bars_one_bar_per_arm_and_group_with_labels():
    fig = plotting.plot_bars({"showo": {"base": 0.9, "RecA": 0.5}, "janus": {"base": 1.0, "RecA": 0.7}})
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    assert heights == [0.5, 0.7, 0.9, 1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["showo", "janus"]
    with pytest.raises(ValueError):
        plotting.plot_bars({})


def test_figures_render_as_png_in_a_fresh_ipython_shell():
    """A Figure that never met pyplot is shown as a picture by IPython (not as `<Figure size ...>`)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        fig = plotting.plot_bars({"a": {"x": 0.5}})
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"][:4] == b"\x89PNG"
    finally:
        InteractiveShell.clear_instance()


def test_plot_paired_diffs_one_bar_per_pair_and_mean_line(tmp_path):
    fig = plotting.plot_paired_diffs({"T2I": [0.1, -0.05, 0.0], "loss": [0.01, 0.02, 0.03]}, ["a", "b", "c"],
                                     title="diverse - single")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax = fig.axes[0]
    assert [round(p.get_height(), 2) for p in ax.patches] == [0.1, -0.05, 0.0]
    assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(0.05 / 3)  # the mean line
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    fig.savefig(tmp_path / "d.png")
    with pytest.raises(ValueError, match="2 differences for 3 pairs"):
        plotting.plot_paired_diffs({"T2I": [0.1, 0.2]}, ["a", "b", "c"])
    with pytest.raises(ValueError):
        plotting.plot_paired_diffs({}, [])


def test_plot_curves_one_panel_per_key_one_line_per_arm(tmp_path):
    curves = {a: {"RecA only": ([0, 10, 20], [0.9, 0.5, 0.1]), "RecA + I2T": ([0, 10, 20], [0.9, 0.8, 0.8])}
              for a in ("showo-vq", "showo-clip", "janus", "harmon", "x")}
    fig = plotting.plot_curves(curves, title="I2T", ylabel="exact", ncols=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 5  # 2 rows of 4, three empty axes removed
    assert [ax.get_title() for ax in fig.axes] == list(curves)
    assert _lines(fig.axes[0]) == 2 and list(fig.axes[0].get_lines()[1].get_ydata()) == [0.9, 0.8, 0.8]
    fig.savefig(tmp_path / "c.png")
    with pytest.raises(ValueError, match="2 values"):
        plotting.plot_curves({"a": {"b": ([0, 1, 2], [0.1, 0.2])}})


def test_plot_premise_two_panels_with_chance_and_gate(tmp_path):
    def traj(specs, gaps):
        return [{"step": 50 * i, "recon": {"spec": s}, "prompt_gap": {"gap": g, "gap_std": 0.02}}
                for i, (s, g) in enumerate(zip(specs, gaps))]

    fig = plotting.plot_premise({"shipped": traj([0.2, 0.15, 0.1], [0.5, 0.3, 0.1]),
                                 "base (b)": traj([0.3, 0.7, 0.8], [0.4, 0.33, 0.28])})
    ax_r, ax_g = fig.axes
    # two runs + the chance and gate lines on the left; the recorded values are what is drawn
    assert len(ax_r.get_lines()) == 4 and list(ax_r.get_lines()[1].get_ydata()) == [0.3, 0.7, 0.8]
    assert {tuple(line.get_ydata()) for line in ax_r.get_lines()[2:]} == {(0.23, 0.23), (0.5, 0.5)}
    assert [t.get_text() for t in ax_g.get_legend().get_texts()] == ["shipped", "base (b)"]
    fig.savefig(tmp_path / "p.png")
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_premise({"x": []})


def test_plot_claim_one_panel_per_arch_and_metric():
    panels = {("showo-vq", "t2i.overall"): {"reca": [0.4, 0.41, 0.42], "control": [0.6, 0.61, 0.62]},
              ("bagel", "i2t.exact"): {"reca": [1.0], "freeze_none": []}}
    fig = plotting.plot_claim(panels, title="Claim 9")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_title() == "showo-vq: t2i.overall" and fig._suptitle.get_text() == "Claim 9"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["reca", "freeze_none"]
    assert fig.axes[0].patches[0].get_height() == pytest.approx(0.41)
    assert plotting.plot_claim({}) is None


def test_plot_category_diffs_one_group_per_category():
    rows = [{"claim": "claim1", "secondary": True, "verdict": "inconclusive", "arch": a, "metric": f"t2i.{c}",
             "diff": 0.1, "se": 0.02} for a in ("showo-vq", "bagel") for c in CATEGORIES]
    fig = plotting.plot_category_diffs(rows)
    assert isinstance(fig, Figure) and len(fig.axes[0].patches) == 2 * len(CATEGORIES)
    assert plotting.plot_category_diffs(rows[:0]) is None
