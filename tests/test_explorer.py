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
    assert len(fig.axes) == 3 + 2  # three curve panels, one strip of reconstructions, one of T2I samples
    assert fig.axes[3].images[0].get_array().shape[:2] == (32, explorer.N_SHOW * 34 - 2)


def test_colours_are_fixed_and_every_panel_has_a_legend():
    """At und 16 only the copy reference has token agreement: its dots must keep the reference colour, and the
    panel must say that the selected run has none (not let the reference read as the selected run)."""
    from matplotlib.colors import to_hex

    fig = explorer.show(und_res=16, blur=0.0, prompts="diverse", i2t_ratio=0.0)
    loss, i2t, agree = fig.axes[:3]
    for ax in (loss, i2t, agree):
        assert ax.get_legend() is not None
    sel, ref = agree.get_lines()
    assert len(sel.get_xdata()) == 0 and len(ref.get_xdata()) > 0
    assert to_hex(ref.get_color()) == to_hex("C3") and to_hex(sel.get_color()) == to_hex("C0")
    assert any("n/a" in t.get_text() for t in agree.texts)
    assert any("n/a" in t.get_text() for t in i2t.texts)  # I2T ratio 0: no I2T curve for either run
    assert not any("n/a" in t.get_text() for t in loss.texts)


def test_explore_returns_one_widget_and_redraws_on_change(monkeypatch):
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: pytest.fail("explore() must not display"))
    box = explorer.explore()
    images = [c for c in box.children if type(c).__name__ == "Image"]
    assert len(images) == 1 and images[0].value[:4] == b"\x89PNG"
    before = images[0].value
    controls = [c for row in box.children[:2] for c in row.children]
    und = next(c for c in controls if c.description == "und res")
    und.value = 32
    assert images[0].value != before


def test_precompute_round_trip(tmp_path):
    pts = [dict(und_res=32, blur=0.0, prompts="single", i2t_ratio=0.0),
           dict(und_res=16, blur=0.0, prompts="single", i2t_ratio=0.0)]
    explorer.precompute(tmp_path, points=pts, steps=3, batch=2, n_eval=1)
    runs = explorer.Runs(tmp_path)
    assert len(runs) == 2 and runs.meta["settings"]["steps"] == 3
    assert runs[pts[0]]["curves"][-1]["step"] == 3
    assert runs[pts[0]]["curves"][0].get("token_agreement") == 1.0  # VQ in = VQ out at 32 px
    explorer.show(**pts[1], runs=runs, compare=pts[0])


def test_cli_rejects_unknown_keys_and_lists_them_in_help(capsys):
    with pytest.raises(ValueError, match="Unknown config key 'stepz'.*Did you mean 'steps'"):
        explorer.main(["--stepz=3"])
    with pytest.raises(SystemExit) as e:
        explorer.main(["--help"])
    assert e.value.code == 0 and "--jobs=1 --device=auto --threads=1 --steps=400" in capsys.readouterr().out
    # the defaults are the shipped grid's settings: the documented command remakes it
    assert explorer.Runs().meta["settings"] == explorer.DEFAULTS


def test_missing_grid_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m reca_nb.explorer"):
        explorer.Runs(tmp_path)


def test_an_interrupted_precompute_resumes_and_redoes_only_what_is_missing(tmp_path, monkeypatch):
    from reca_nb.reproduce.plan import scorer_fingerprint

    pts = [dict(und_res=16, blur=0.0, prompts="single", i2t_ratio=0.0),
           dict(und_res=8, blur=0.0, prompts="single", i2t_ratio=0.0)]
    real, calls = explorer.run_point, []

    def interrupted(point, *args):
        calls.append(point["und_res"])
        if point["und_res"] == 8:
            raise KeyboardInterrupt
        return real(point, *args)

    monkeypatch.setattr(explorer, "run_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        explorer.precompute(tmp_path, points=pts, steps=2, batch=2, n_eval=1)
    assert not (tmp_path / "showo-vq.json").exists()  # nothing half-written where Runs() looks
    assert [f.name for f in sorted((tmp_path / ".partial-showo-vq").glob("*.json"))] == \
        ["und16-blur0-single-i2t0.json"]

    calls.clear()
    monkeypatch.setattr(explorer, "run_point", lambda point, *a: (calls.append(point["und_res"]), real(point, *a))[1])
    explorer.precompute(tmp_path, points=pts, steps=2, batch=2, n_eval=1)
    assert calls == [8]  # the finished run was kept
    runs = explorer.Runs(tmp_path)
    assert len(runs) == 2 and runs.meta["scorer"] == scorer_fingerprint() and runs.meta["device"] == "cpu"
    assert not (tmp_path / ".partial-showo-vq").exists()

    calls.clear()  # other settings: nothing kept from the first grid applies
    explorer.precompute(tmp_path, points=pts[:1], steps=3, batch=2, n_eval=1)
    assert calls == [16]
