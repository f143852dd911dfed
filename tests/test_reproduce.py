"""`python -m reca_nb.reproduce`: the verdict rule, the job plan, the claims table from synthetic results, and
one real `--preset=ci` sweep in a subprocess (table + CSV + figures produced, reruns skip finished jobs)."""
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import fields

import pytest

from reca_nb import reproduce as rp
from reca_nb.models import registry
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import preset
from reca_nb.world.shapes import CATEGORIES

# ----------------------------------------------------------------------------- verdict


def test_verdict_clear_effect_in_the_papers_direction_is_reproduced():
    v = rp.verdict([0.60, 0.62, 0.61], [0.50, 0.51, 0.49], sign=+1)
    assert v["verdict"] == "reproduced"
    assert v["diff"] == pytest.approx(0.11)
    # Welch SE: sqrt(var_a / 3 + var_b / 3), ddof 1; both variances are 1e-4 here
    assert v["se"] == pytest.approx(math.sqrt(2 * 1e-4 / 3))
    assert rp.verdict([0.50, 0.51, 0.49], [0.60, 0.62, 0.61], sign=-1)["verdict"] == "reproduced"


def test_verdict_clear_effect_against_the_paper_is_not_reproduced():
    v = rp.verdict([0.40, 0.41, 0.42], [0.60, 0.61, 0.59], sign=+1)
    assert v["verdict"] == "not reproduced" and v["diff"] < 0


def test_verdict_overlapping_seeds_are_inconclusive():
    v = rp.verdict([0.5, 0.6, 0.4], [0.45, 0.55, 0.50], sign=+1)
    assert v["diff"] == pytest.approx(0.0)
    assert v["verdict"] == "inconclusive"
    # a real but noisy difference: diff 0.05, SE ~0.05 -> below 2 SE
    v = rp.verdict([0.55, 0.65, 0.45, 0.60], [0.50, 0.55, 0.45, 0.55], sign=+1)
    assert 0 < v["diff"] < 2 * v["se"] and v["verdict"] == "inconclusive"


def test_verdict_needs_two_seeds_per_arm():
    v = rp.verdict([0.9], [0.1, 0.1, 0.1], sign=+1)
    assert v["verdict"] == "inconclusive" and "fewer than 2" in v["why"]
    assert v["diff"] == pytest.approx(0.8) and math.isnan(v["se"])
    assert rp.verdict([], [0.1, 0.2], sign=+1)["why"] == "no data"


def test_verdict_min_effect_guards_zero_variance():
    # identical seeds (e.g. a deterministic eval): SE = 0, the pre-registered minimum effect decides
    assert rp.verdict([0.51, 0.51], [0.50, 0.50], +1, min_effect=0.02)["verdict"] == "inconclusive"
    assert rp.verdict([0.53, 0.53], [0.50, 0.50], +1, min_effect=0.02)["verdict"] == "reproduced"
    assert rp.verdict([0.47, 0.47], [0.50, 0.50], +1, min_effect=0.02)["verdict"] == "not reproduced"
    assert rp.verdict([0.5, 0.5], [0.5, 0.5], +1)["verdict"] == "inconclusive"


def test_verdict_drops_missing_values_and_checks_sign():
    v = rp.verdict([0.6, None, float("nan"), 0.62], [0.5, 0.52], +1)
    assert v["n_a"] == 2 and v["n_b"] == 2
    with pytest.raises(ValueError, match="sign"):
        rp.verdict([1, 2], [1, 2], 0)


def test_verdict_all_true():
    assert rp.verdict_all_true([True, True, True])["verdict"] == "reproduced"
    assert rp.verdict_all_true([True, False, True])["verdict"] == "not reproduced"
    assert rp.verdict_all_true([])["verdict"] == "inconclusive"


# ----------------------------------------------------------------------------- plan and arms


@pytest.fixture
def all_bases(monkeypatch):
    monkeypatch.setattr(registry, "has_base", lambda arch: True)


def test_plan_full_dedupes_arms_across_claims(all_bases):
    cfg = rp.ReproduceConfig(preset="full")
    jobs, skipped = rp.plan(cfg)
    ids = [j.job_id for j in jobs]
    assert len(ids) == len(set(ids)) and not skipped
    arms = {}
    for j in jobs:
        arms.setdefault(j.arch, set()).add(j.arm)
    # claim 1's RecA arm on showo-vq is claim 2's 16-px arm: one job, not two
    assert arms["showo-vq"] == {"base", "control", "reca", "und_full", "blur", "no_i2t", "single", "sft",
                                "sft_reca"}
    # decoupled models: no loss term without RecA -> the control is the base itself
    assert "control" not in arms["bagel"] and "control" not in arms["openuni"]
    assert arms["bagel"] == {"base", "reca", "und_full", "freeze_none", "sft", "sft_reca"}
    assert {"no_i2t", "single"} <= arms["janus"] and "freeze_none" not in arms["janus"]
    n_arms = sum(len(a) for a in arms.values())
    assert n_arms == 41 and len(jobs) == 3 * n_arms  # >= 3 seeds per arm


def test_plan_filters_and_rejects_unknown_names(all_bases):
    jobs, _ = rp.plan(rp.ReproduceConfig(only="claim2,4", archs="showo-vq"))
    assert {j.arm for j in jobs} == {"control", "reca", "und_full", "blur"}  # claim 4 has no showo-vq
    with pytest.raises(ValueError, match="unknown claim 'claim9'"):
        rp.ReproduceConfig(only="claim9").claim_keys()
    with pytest.raises(ValueError, match="unknown arch"):
        rp.ReproduceConfig(archs="showo-xl").arch_list()


def test_blur_arm_is_a_show_o_vq_arm_of_claim_2():
    claim2 = rp.CLAIMS["claim2"]
    assert claim2.arms_for("showo-vq") == ("control", "reca", "und_full", "blur")
    assert "blur" not in claim2.arms_for("bagel")
    assert all("blur" not in c.arms_for(a) for c in rp.CLAIMS.values() for a in c.archs if a != "showo-vq")


def test_plan_skips_archs_without_a_base(monkeypatch):
    monkeypatch.setattr(registry, "has_base", lambda arch: arch != "harmon")
    cfg = rp.ReproduceConfig(only="claim3", archs="showo-vq,harmon", seeds=2)
    jobs, skipped = rp.plan(cfg)
    assert {j.arch for j in jobs} == {"showo-vq"} and len(jobs) == 3 * 2
    assert "python -m reca_nb.build.pretrain --arch=harmon" in skipped["harmon"]
    rows = rp.claim_rows({}, cfg, skipped)
    assert [(r["arch"], r["verdict"]) for r in rows] == [("showo-vq", "inconclusive"), ("harmon", "skipped")]


def test_arm_stages_are_the_recipe_variants():
    cfg = rp.ReproduceConfig(preset="full")
    reca = preset("showo-vq", "reca")
    (r,) = rp.arm_stages("showo-vq", "reca", cfg, seed=2)
    assert r.und_res == reca.und_res == 16 and r.seed == 2 and r.steps == reca.steps
    assert rp.arm_stages("showo-vq", "und_full", cfg, 0)[0].und_res == 32
    blur = rp.arm_stages("showo-vq", "blur", cfg, 0)[0]
    assert blur.und_res == 32 and blur.blur_sigma == cfg.blur_sigma
    (ctl,) = rp.arm_stages("showo-vq", "control", cfg, 0)
    assert ctl.active_terms == ("i2t",) and ctl.steps == reca.steps
    assert rp.arm_stages("showo-vq", "no_i2t", cfg, 0)[0].active_terms == ("reca",)
    assert rp.arm_stages("showo-vq", "single", cfg, 0)[0].prompts == "single"
    assert rp.arm_stages("bagel", "freeze_none", cfg, 0)[0].freeze == "none"
    assert rp.arm_stages("bagel", "control", cfg, 0) == ()  # = base
    sft, then = rp.arm_stages("showo-clip", "sft_reca", cfg, 0)
    assert sft.active_terms == ("i2t", "t2i") and then.active_terms == ("reca", "i2t")
    (sft_only,) = rp.arm_stages("showo-clip", "sft", cfg, 0)
    assert sft_only.steps == sft.steps + then.steps  # same total steps as SFT -> RecA
    assert rp.arm_stages("showo-vq", "reca", rp.ReproduceConfig(preset="ci"), 0)[0].steps == 3
    assert rp.arm_stages("showo-vq", "reca", rp.ReproduceConfig(steps=40), 0)[0].steps == 40


def test_fingerprint_tracks_recipe_and_eval_not_device(all_bases):
    job = rp.Job("showo-vq", "reca", 0)
    base = rp.fingerprint(job, rp.ReproduceConfig())
    assert rp.fingerprint(job, rp.ReproduceConfig(device="cuda", jobs=8, threads=2)) == base
    assert rp.fingerprint(job, rp.ReproduceConfig(steps=100)) != base
    assert rp.fingerprint(job, rp.ReproduceConfig(eval_per_category=10)) != base
    assert rp.fingerprint(rp.Job("showo-vq", "reca", 1), rp.ReproduceConfig()) != base


def test_fingerprint_tracks_the_scorer(all_bases, monkeypatch, tmp_path):
    """Scores are part of a job's result: a retrained detector must not reuse the old job files."""
    job = rp.Job("showo-vq", "reca", 0)
    base = rp.fingerprint(job, rp.ReproduceConfig())
    other = tmp_path / "scorer.safetensors"
    other.write_bytes(b"another detector")
    monkeypatch.setattr("reca_nb.evaluation.geneval.SCORER_FILE", other)
    assert rp.fingerprint(job, rp.ReproduceConfig()) != base


def test_cli_rejects_unknown_keys_and_values():
    with pytest.raises(ValueError, match="Unknown config key 'stepz'"):
        rp.main(["--stepz=3"])
    with pytest.raises(ValueError, match="preset must be one of"):
        rp.main(["--preset=huge"])
    with pytest.raises(ValueError, match="unknown claim"):
        rp.main(["--only=claim7"])
    with pytest.raises(ValueError, match="--jobs"):
        rp.main(["--jobs=0"])


# ----------------------------------------------------------------------------- table from synthetic results


def _result(arch, arm, seed, t2i, i2t=0.9, ratio=None, frozen=None):
    m = {"t2i": {"overall": t2i, **{c: t2i for c in CATEGORIES}}, "i2t": {"exact": i2t}}
    if ratio is not None:
        m.update(reca_ratio=ratio, reca_loss_early=1.0, reca_loss_late=ratio)
    if frozen is not None:
        m["frozen_identical"] = frozen
    return {"job_id": f"{arch}-{arm}-s{seed}", "arch": arch, "arm": arm, "seed": seed, "metrics": m,
            "device": "cpu", "wall_s": 1.0, "steps": 10,
            "history": [{"step": s, "stage": 0, "loss_reca": 1.0 / s} for s in range(1, 5)]}


def test_claims_table_records_negatives_and_decoupled_controls(tmp_path, all_bases):
    cfg = rp.ReproduceConfig(only="claim1,claim2,claim4", archs="showo-vq,bagel", out=str(tmp_path))
    res = {}
    for s in range(3):
        for r in (_result("showo-vq", "control", s, 0.60 + 0.01 * s),
                  _result("showo-vq", "reca", s, 0.40 + 0.01 * s, ratio=0.5),  # RecA hurts: a negative
                  _result("showo-vq", "und_full", s, 0.30 + 0.01 * s, ratio=0.05),
                  _result("showo-vq", "blur", s, 0.41 + 0.01 * s, ratio=0.3),
                  _result("bagel", "base", s, 0.50 + 0.01 * s, i2t=1.0),
                  _result("bagel", "reca", s, 0.58 + 0.01 * s, i2t=1.0, frozen=True),
                  _result("bagel", "und_full", s, 0.55, i2t=1.0),
                  _result("bagel", "freeze_none", s, 0.55, i2t=0.7 + 0.01 * s)):
            res[r["job_id"]] = r
    rows = rp.claim_rows(res, cfg, {})
    get = {(r["claim"], r["arch"], r["metric"], r["arm_a"], r["arm_b"]): r for r in rows}
    assert get[("claim1", "showo-vq", "t2i.overall", "reca", "control")]["verdict"] == "not reproduced"
    assert get[("claim1", "bagel", "t2i.overall", "reca", "control")]["verdict"] == "reproduced"  # vs base
    assert get[("claim1", "bagel", "t2i.overall", "reca", "control")]["b_mean"] == pytest.approx(0.51)
    assert get[("claim2", "showo-vq", "reca_ratio", "und_full", "reca")]["verdict"] == "reproduced"
    assert get[("claim2", "showo-vq", "t2i.overall", "blur", "reca")]["verdict"] == "inconclusive"
    assert get[("claim2", "bagel", "t2i.overall", "reca", "und_full")]["verdict"] == "reproduced"
    assert get[("claim4", "bagel", "i2t.exact", "reca", "freeze_none")]["verdict"] == "reproduced"
    assert get[("claim4", "bagel", "frozen_identical", "reca", "")]["verdict"] == "reproduced"
    assert len([r for r in rows if r["claim"] == "claim1" and r["secondary"]]) == 2 * len(CATEGORIES)

    rp.write_csv(rows, tmp_path / "claims.csv")
    figs = rp.make_figures(rows, res, cfg, tmp_path / "figures")
    rp.write_markdown(rows, res, cfg, {}, {"x-s0": "Traceback\nRuntimeError: boom"}, 1.0,
                      tmp_path / "claims.md", figs)
    md = (tmp_path / "claims.md").read_text()
    assert "| 1 | showo-vq | t2i.overall | reca > control | Show-o VQ: 68.70 → 70.61" in md
    assert "**not reproduced**" in md and "0.410 ± 0.010 (n=3)" in md
    assert "`x-s0`: RuntimeError: boom" in md  # failures are listed, not hidden
    with open(tmp_path / "claims.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(rp.CSV_COLUMNS) == set(table[0])
    assert {"claim1.png", "claim1_categories.png", "claim2.png", "claim2_collapse.png", "claim4.png"} == \
        {os.path.basename(f) for f in figs}

    # the typed readers give back what was written
    (tmp_path / "runs").mkdir()
    for r in res.values():
        (tmp_path / "runs" / f"{r['job_id']}.json").write_text(json.dumps(r))
    runs = rp.load_results(tmp_path)
    assert len(runs) == len(res) and runs["bagel-reca-s2"].metric("t2i.overall") == pytest.approx(0.60)
    assert rp.seed_values(runs, "showo-vq", "reca", "t2i.overall") == pytest.approx([0.40, 0.41, 0.42])
    assert runs["bagel-reca-s0"].metric("frozen_identical") == 1.0
    assert runs["bagel-base-s0"].metric("x") is None
    claims = rp.load_claims(tmp_path / "claims.csv")
    assert len(claims) == len(rows) and [f.name for f in fields(rp.ClaimRow)] == list(rp.CSV_COLUMNS)
    first = claims[0]
    assert first.number == 1 and first.secondary is False and isinstance(first.n_a, int)
    assert first.diff == pytest.approx(rows[0]["diff"], rel=1e-5) and first.verdict == rows[0]["verdict"]
    frozen = next(c for c in claims if c.metric == "frozen_identical")
    assert math.isnan(frozen.b_mean) and frozen.n_b == 0 and frozen.arm_b == ""


# ----------------------------------------------------------------------------- the ci sweep, for real


def _run(out, home, *extra):
    env = {**os.environ, "RECA_NB_HOME": str(home), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "reca_nb.reproduce", "--preset=ci", f"--out={out}",
                        "--threads=1", "--progress=False", *extra],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, time.time() - t0


@pytest.mark.slow
def test_ci_sweep_writes_the_table_and_reruns_skip_finished_jobs(tmp_path):
    out, home = tmp_path / "out", tmp_path / "home"
    stdout, seconds = _run(out, home)
    cfg = rp.ReproduceConfig(preset="ci", out=str(out))
    jobs, skipped = rp.plan(cfg)
    assert f"{len(jobs)} jobs" in stdout and f"{len(jobs)} to run" in stdout
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == len(jobs) and not (out / "work").exists()
    for path in runs:
        r = json.loads(path.read_text())
        assert r["fingerprint"] == rp.fingerprint(rp.Job(r["arch"], r["arm"], r["seed"]), cfg)
        assert 0.0 <= r["metrics"]["t2i"]["overall"] <= 1.0 and 0.0 <= r["metrics"]["i2t"]["exact"] <= 1.0
        assert r["metrics"]["t2i"]["counts"] == {c: 1 for c in CATEGORIES}  # ci: 1 prompt per category
        assert r["steps"] == {"base": 0, "sft": 6, "sft_reca": 6}.get(r["arm"], 3)  # ci: 3 steps a stage
    frozen = json.loads((out / "runs" / "bagel-reca-s0.json").read_text())["metrics"]
    assert frozen["frozen_identical"] is True and frozen["n_frozen_tensors"] > 0

    md = (out / "claims.md").read_text()
    for key in rp.CLAIMS:
        assert f"### {key[5:]}. {rp.CLAIMS[key].title}" in md
    with open(out / "claims.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["claim"] for r in rows} == set(rp.CLAIMS)
    assert {r["verdict"] for r in rows} <= {*rp.VERDICTS, "skipped"}
    # one seed: no error estimate, so no difference may be called either way
    assert all(r["verdict"] == "inconclusive" for r in rows if r["metric"] != "frozen_identical")
    for name in ("claim1", "claim2", "claim2_collapse", "claim6"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"ci sweep: {len(jobs)} jobs in {seconds:.1f} s")

    # an interrupted sweep: one result lost -> the rerun trains exactly that job and keeps the others
    lost = out / "runs" / "showo-vq-blur-s0.json"
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    stdout, _ = _run(out, home)
    assert f"{len(jobs) - 1} finished, 1 to run" in stdout
    assert lost.exists()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json") if p.name in kept} == kept


def test_provenance_is_counted_from_the_job_files(tmp_path):
    res = {"a-s0": {"device": "cuda", "threads": 1, "wall_s": 1800.0, "finished": "2026-12-01T10:00:00+00:00"},
           "b-s0": {"device": "cpu", "threads": 2, "wall_s": 900.0, "finished": "2026-12-02T11:30:00+00:00"},
           "b-s1": {"device": "cpu", "threads": 1, "wall_s": 1800.0, "finished": "2026-12-02T09:00:00+00:00"}}
    text = rp.provenance(res, tmp_path / "runs")
    assert text.startswith(f"**Provenance.** 3 job files in `{tmp_path / 'runs'}/`, finished 2026-12-01 10:00 to "
                           "2026-12-02 11:30 UTC: ")
    # CPU-hours count threads; a GPU job's hours are its wall time
    assert text.endswith("2 on cpu (1/2 torch threads each), 1 on cuda (1 torch thread each); "
                         "job time 1.0 CPU-hours, 0.5 cuda job-hours.")
    assert rp.provenance({}, tmp_path / "runs").endswith("No job files in " f"`{tmp_path / 'runs'}/` yet.")
