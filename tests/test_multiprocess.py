"""`accelerate launch --num_processes=2 --cpu` (gloo) runs the same training loop as one process: two processes
with half the batch follow one process's loss curve, only the main process writes files, and resume works."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # four interpreter starts (two of them doubled), each importing torch

# the Janus miniature from scratch, condition dropout off, RecA only (fixed-length targets: the mean of two equal
# shares is the global mean; I2T captions vary in length, so their token mean would not split evenly)
RUN = ["--arch=janus", "--preset=ci", "--base=none", "--model.cfg_dropout=0", "--steps=4", "--save_every=2",
       "--keep_ckpts=5", "--warmup=1", "--lambda_i2t=0", "--prompts=single", "--progress=False", "--threads=1"]
GLOBAL_BATCH = 4


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, RECA_NB_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               RECA_NB_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def _run(cmd: list, tmp_path: Path):
    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _one(tmp_path, out, extra=()):
    return _run([sys.executable, "-m", "reca_nb.train", *RUN, f"--batch={GLOBAL_BATCH}", f"--out={out}", *extra],
                tmp_path)


def _two(tmp_path, out, extra=()):
    # `accelerate launch --cpu --num_processes=2` starts ONE process (accelerate 1.16 hands --cpu to its simple
    # launcher unless MPI is set up); --multi_gpu is its torchrun launcher, and train() picks gloo without CUDA
    return _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
                 "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "reca_nb.train", *RUN,
                 f"--batch={GLOBAL_BATCH // 2}", f"--out={out}", *extra], tmp_path)


def _losses(out: Path) -> list:
    rows = json.loads((out / "history.json").read_text())
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_two_processes_follow_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _one(tmp_path, one)
    r = _two(tmp_path, two)
    a, b = _losses(one), _losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert a[0][1] != a[-1][1]  # the curve moves: matching it is not trivial
    for (s, x), (_, y) in zip(a, b):
        assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), f"step {s}: one process {x}, two processes {y}"
    # files are written once, by the main process: one set of checkpoints, one "done" line
    assert sorted(p.name for p in two.glob("ckpt-*.safetensors")) == ["ckpt-000002.safetensors",
                                                                      "ckpt-000004.safetensors"]
    assert r.stdout.count("done: 4 steps") == 1, r.stdout[-2000:]

    # resume: drop the last checkpoint and the final files, continue from step 2 with two processes again
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    for name in ("ckpt-000004.safetensors", "history.json", "model.safetensors"):
        (resumed / name).unlink()
    r = _two(tmp_path, resumed, ["--resume"])
    assert r.stdout.count("resumed from") == 1, r.stdout[-2000:]
    c = _losses(resumed)
    assert [s for s, _ in c] == [1, 2, 3, 4]
    for (s, x), (_, y) in zip(b, c):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), f"step {s}: uninterrupted {x}, resumed {y}"
