"""benchmarks/sweep_cost.py: the projection of `make reproduce`'s cost covers the plan's jobs and schedules
them as `--jobs=N` workers would."""
import subprocess
import sys

import pytest

from reca_nb.paths import REPO_ROOT

BENCH = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import sweep_cost  # noqa: E402


def test_schedule_is_longest_first_on_free_workers():
    assert sweep_cost.schedule([3, 3, 2, 2, 2], cores=2) == 7  # 3+2+2 | 3+2
    assert sweep_cost.schedule([5, 1, 1, 1], cores=2) == 5
    assert sweep_cost.schedule([1.5] * 4, cores=1) == 6


def test_schedule_in_plan_order():
    assert sweep_cost.schedule([2, 2, 3, 3, 2], cores=2, longest_first=False) == 7  # 2+3+2 | 2+3
    assert sweep_cost.schedule([1, 1, 1, 5], cores=2, longest_first=False) == 6  # 1+5 | 1+1


def test_replay_of_recorded_job_files(tmp_path):
    """Every bagel job of the plan written with a wall_s: replayed in plan order, as `--jobs=2` runs them;
    one job missing or run on a GPU: no replay."""
    import json

    from reca_nb import reproduce as rp

    jobs, _ = rp.plan(rp.ReproduceConfig(archs="bagel"))
    walls = [10.0 * (i % 4 + 1) for i in range(len(jobs))]
    for job, w in zip(jobs, walls):
        (tmp_path / f"{job.job_id}.json").write_text(json.dumps({"wall_s": w, "device": "cpu"}))
    assert sweep_cost.replayed(["bagel"], 2, tmp_path) == sweep_cost.schedule(walls, 2, longest_first=False)
    assert sorted(sweep_cost.recorded("bagel", tmp_path)) == sorted(walls)
    gpu = tmp_path / f"{jobs[0].job_id}.json"
    gpu.write_text(json.dumps({"wall_s": 1.0, "device": "cuda:0"}))
    assert sweep_cost.replayed(["bagel"], 2, tmp_path) is None
    gpu.unlink()
    assert sweep_cost.replayed(["bagel"], 2, tmp_path) is None


def test_plan_stages_follow_reproduce_plan():
    from reca_nb import reproduce as rp

    stages = sweep_cost.plan_stages(["bagel"])["bagel"]
    jobs, _ = rp.plan(rp.ReproduceConfig(archs="bagel"))
    assert sorted(j for j, _ in stages) == sorted(j.job_id for j in jobs)
    by_id = dict(stages)
    assert by_id["bagel-base-s0"] == []  # the base is evaluated, not trained
    assert [n for _, n in by_id["bagel-reca-s0"]] == [200]
    # seeds cost the same: one timing serves the three seeds of an arm
    assert by_id["bagel-reca-s0"][0][0] == by_id["bagel-reca-s2"][0][0]


def _run(*args):
    return subprocess.run([sys.executable, str(BENCH / "sweep_cost.py"), *args], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_one_arch_end_to_end():
    r = _run("--archs=bagel", "--steps=1", "--cores=3")
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("| bagel |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "18" and cells[2] == "4200" and float(cells[5]) > 0
    assert "on 3 cores" in r.stdout


def test_bad_options_are_one_line_errors():
    r = _run("--cores=0")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == "--steps and --cores must be >= 1"
    r = _run("--stepz=2")
    assert r.returncode != 0 and "unknown option(s) ['stepz']" in r.stderr
