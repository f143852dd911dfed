"""`python -m reca_nb.train`: argument handling in-process; SIGKILL + resume, Ctrl-C + resume and the one-line
warnings in subprocesses.

The CLI needs an arch without a shipped base checkpoint, so the toy registers itself through the environment
(RECA_NB_EXTRA_ARCHS="toy=tests.toy_umm:ToyUMM") and --base=none builds it from scratch.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from reca_nb.paths import REPO_ROOT
from reca_nb.train import main

pytestmark = pytest.mark.usefixtures("own_home_one_thread", "toy_arch")


def test_cli_trains_and_writes_out_dir(tmp_path, capsys):
    out = tmp_path / "run"
    h = main(["--arch=toy", "--preset=ci", "--base=none", "--model.d=16", "--steps=3", "--und_res=16",
              f"--out={out}", "--progress=False"])
    text = capsys.readouterr().out
    assert "und_res              = 16" in text and "steps                = 3" in text  # resolved recipe shown
    assert [r["step"] for r in h] == [1, 2, 3]
    assert (out / "model.safetensors").exists() and (out / "ckpt-000003.safetensors").exists()
    assert json.loads((out / "history.json").read_text()) == h


def test_cli_default_out_dir_under_cache(tmp_path):
    main(["--arch=toy", "--preset=ci", "--base=none", "--steps=1", "--warmup=0", "--progress=False", "--seed=7"])
    assert (tmp_path / "home" / "runs" / "toy-ci-7" / "model.safetensors").exists()


@pytest.mark.parametrize("argv,err,match", [
    (["--arch=toy", "--base=none", "--stepz=3"], ValueError, "Unknown config key 'stepz'.*'steps'"),
    (["--arch=toy", "--base=none", "--steps=three"], ValueError, "Recipe.steps expects int"),
    (["--arch=nope"], ValueError, "unknown arch 'nope'; valid: showo-vq"),
    (["--arch=toy", "--preset=huge", "--base=none"], ValueError, "unknown preset"),
    (["--arch=toy"], FileNotFoundError, r"python -m reca_nb.build.pretrain --arch=toy"),
    (["--arch=toy", "--model.d=8"], ValueError, "need --base=none"),
    (["--steps=3"], SystemExit, "--arch is required"),
    (["arch=toy"], ValueError, "expected --key=value"),
])
def test_cli_rejects_bad_arguments(argv, err, match):
    with pytest.raises(err, match=match):
        main(argv)


def test_unregistered_toy_is_unknown(monkeypatch):
    monkeypatch.delenv("RECA_NB_EXTRA_ARCHS")
    with pytest.raises(ValueError, match="RECA_NB_EXTRA_ARCHS"):
        main(["--arch=toy", "--base=none"])


def test_pretrain_writes_checkpoint_and_manifest(tmp_path):
    from reca_nb.build import pretrain
    from reca_nb.models.umm import UMM

    argv = ["--arch=toy", "--steps=3", "--warmup=1", "--batch=4", "--n_images=32", "--n_t2i_pairs=8",
            "--model.d=16", f"--dest={tmp_path / 'ck'}", f"--out={tmp_path / 'run'}", "--eval=False",
            "--progress=False"]
    entry = pretrain.main(argv)
    path = tmp_path / "ck" / "toy.safetensors"
    manifest = json.loads((tmp_path / "ck" / "MANIFEST.json").read_text())
    assert manifest["toy"] == json.loads(json.dumps(entry)) and entry["sha256"] == pretrain.sha256(path)
    assert entry["recipe"]["stage"] == "pretrain" and entry["recipe"]["lambda_reca"] == 0
    assert entry["model_config"]["d"] == 16 and entry["params"] > 0 and entry["bytes"] == path.stat().st_size
    assert entry["command"].startswith("python -m reca_nb.build.pretrain --arch=toy")
    from reca_nb.models import registry

    model = registry.load_base("toy", path)
    assert isinstance(model, UMM) and model.config.d == 16
    pretrain.main([a.replace("--steps=3", "--steps=2") for a in argv])  # same arch again: entry replaced
    assert json.loads((tmp_path / "ck" / "MANIFEST.json").read_text())["toy"]["recipe"]["steps"] == 2


def _cmd(out, *extra):
    return [sys.executable, "-m", "reca_nb.train", "--arch=toy", "--preset=ci", "--base=none", "--steps=60",
            "--save_every=5", "--log_every=1", "--batch=4", "--und_res=16", "--threads=1", "--progress=False",
            f"--out={out}", *extra]


def _losses(out):
    return [(r["step"], r["loss"], r["loss_reca"], r["loss_i2t"])
            for r in json.loads((out / "history.json").read_text())]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(ref), cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(killed), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not list(killed.glob("ckpt-*.safetensors")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed; raise --steps"
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: whatever is on disk is all there is
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ck = sorted(killed.glob("ckpt-*.safetensors"))
    assert ck and int(ck[-1].stem.split("-")[1]) < 60 and not (killed / "model.safetensors").exists()

    done = subprocess.run(_cmd(killed, "--resume"), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr + done.stdout
    assert _losses(killed) == _losses(ref)  # the whole 60-step curve, bit for bit
    a, b = load_file(killed / "model.safetensors"), load_file(ref / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _proc_env():
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _lines(text):
    return [x for x in text.splitlines() if x.strip()]


@pytest.mark.slow
def test_ctrl_c_saves_prints_one_resume_line_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reca_nb.train", "--arch=toy", "--preset=ci", "--base=none", "--steps=100000",
           "--save_every=5", "--log_every=1", "--batch=4", "--und_res=16", "--threads=1", "--progress=False",
           f"--out={out}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_proc_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 240
    while not list(out.glob("ckpt-*.safetensors")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert len(_lines(err)) == 1, err[-3000:]
    line = _lines(err)[0]
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    assert f"checkpoint saved: {out / f'ckpt-{step:06d}.safetensors'}" in line  # the step it stopped at
    assert (out / f"ckpt-{step:06d}.safetensors").exists()
    again = shlex.split(line.split("continue with: ")[1])
    assert again[:3] == ["python", "-m", "reca_nb.train"] and again[-1] == "--resume"
    assert again[3:-1] == cmd[3:]  # the same arguments, so the same out_dir and recipe

    done = subprocess.run([sys.executable, *again[1:], f"--steps={step + 2}"], cwd=REPO_ROOT, env=_proc_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {step}" in done.stderr + done.stdout  # "resumed from ... at step N"
    rows = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in rows] == list(range(1, step + 3))  # nothing lost, nothing repeated


def test_cli_warning_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "reca_nb.train", "--arch=toy", "--preset=ci", "--base=none",
                        "--steps=2", "--warmup=2", "--threads=1", "--progress=False", f"--out={tmp_path / 'run'}"],
                       cwd=REPO_ROOT, env=_proc_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _lines(p.stderr) == ["warning: warmup=2 >= steps=2: the whole run is linear warm-up (the learning "
                                "rate peaks at 0.0005 in the last step, the cosine schedule never runs); set "
                                "warmup < steps"], p.stderr[-3000:]
