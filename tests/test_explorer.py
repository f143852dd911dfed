"""The collapse explorer: shipped grid integrity, show() drawing, and a tiny precompute round trip."""
import pytest

from reca_nb import explorer


def test_shipped_grid_is_complete_and_consistent():
    runs = explorer.Runs()
    assert len(runs) == len(explorer.grid_points()) == 24
    for p in explorer.grid_points():
        rec = runs[p]
        assert rec["curves"] and 0 <= rec["t2i"]["overall"] <= 1 and 0 <= rec["i2t"]["exact"] <= 1
        assert runs.images(p, "recon").shape[0] == explorer.N_SHOW
    with pytest.raises(KeyError, match="grid"):
        runs[{"und_res": 12}]


def test_show_draws_curves_and_images():
    fig = explorer.show(und_res=16, blur=1.0, prompts="single", i2t_ratio=0.0)
    assert len(fig.axes) == 3 + 2 * explorer.N_SHOW


def test_precompute_round_trip(tmp_path):
    pts = [dict(und_res=32, blur=0.0, prompts="single", i2t_ratio=0.0),
           dict(und_res=16, blur=0.0, prompts="single", i2t_ratio=0.0)]
    explorer.precompute(tmp_path, points=pts, steps=3, batch=2, n_eval=1)
    runs = explorer.Runs(tmp_path)
    assert len(runs) == 2 and runs.meta["settings"]["steps"] == 3
    assert runs[pts[0]]["curves"][-1]["step"] == 3
    assert runs[pts[0]]["curves"][0].get("token_agreement") == 1.0  # VQ in = VQ out at 32 px
    explorer.show(**pts[1], runs=runs, compare=pts[0])


def test_cli_rejects_unknown_keys():
    with pytest.raises(SystemExit, match="unknown option"):
        explorer.main(["--stepz=3"])


def test_missing_grid_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m reca_nb.explorer"):
        explorer.Runs(tmp_path)
