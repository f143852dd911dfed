"""Runs are reproducible and fail safely: same seed, same losses and scores; bad CLI input is one clear line;
a full disk, a foreign checkpoint, pickle and the network are refused. Resume after SIGKILL / Ctrl-C, corrupt
checkpoints and NaN losses are in test_train.py and test_cli.py; bad image inputs in test_images.py.
"""
import errno
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from reca_nb.models import registry
from reca_nb.evaluation import geneval
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import preset
from reca_nb.train import CheckpointError, load_checkpoint, train
from tests.toy_umm import ToyUMM, toy

pytestmark = pytest.mark.usefixtures("own_home_one_thread", "toy_arch")


def ci(arch="toy", **kw):
    return replace(preset(arch, "ci"), device="cpu", **kw)


def losses(history):
    return [{k: v for k, v in r.items() if k.startswith("loss")} for r in history if "loss" in r]


# ----------------------------------------------------------------------------- determinism

def _run(arch, seed, steps=6, evaluate=True):
    """Fresh model + CI-preset RecA run (+ GenEval-mini T2I and I2T at the end), all from `seed`."""
    torch.manual_seed(seed)
    model = registry.build(arch)
    r = ci(arch, seed=seed, steps=steps, eval_every=steps if evaluate else 0, eval_n=6)
    h = train(model, r, progress=False)
    return losses(h), [row["eval"] for row in h if "eval" in row], model.state_dict()


def test_same_seed_is_bit_identical_losses_and_geneval():
    arch = "janus"  # real miniature (transformers Janus): condition dropout, sampled generation
    a, b = _run(arch, 0), _run(arch, 0)
    assert len(a[0]) == 6 and len(a[1]) == 1 and set(a[1][0]) == {"t2i", "i2t"}
    assert a[0] == b[0]  # exact float equality, every loss term of every step
    assert a[1] == b[1]  # the whole GenEval-mini result dicts, exactly
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    other = _run(arch, 1, steps=2, evaluate=False)
    assert other[0] != a[0][:2]  # the seed does matter: the comparisons above are not vacuous


# ----------------------------------------------------------------------------- bad inputs through the CLI

BAD_ARGS = [
    (["--arch=nope"], "unknown arch 'nope'; valid: showo-vq"),
    (["--arch=toy", "--base=none", "--stepz=3"], "Unknown config key 'stepz'"),
    (["--arch=toy", "--base=none", "--steps=three"], "Recipe.steps expects int"),
]


@pytest.mark.parametrize("args,match", BAD_ARGS)
def test_cli_bad_input_is_one_clear_line(args, match, monkeypatch):
    """`python -m reca_nb.train ARGS`, run in-process (runpy executes the module's __main__ block)."""
    import runpy
    import warnings

    monkeypatch.setattr(sys, "argv", ["reca_nb.train", *args, "--threads=1", "--progress=False"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module("reca_nb.train", run_name="__main__", alter_sys=True)
    msg = exit_.value.code
    assert isinstance(msg, str), msg  # SystemExit(str): Python prints it to stderr and exits with 1
    assert msg.startswith("error: ") and match in msg and "\n" not in msg


def test_cli_bad_input_in_a_real_process_exits_nonzero_without_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "reca_nb.train", "--arch=toy", "--base=none", "--steps=three"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(lines) == 1 and "Recipe.steps expects int" in lines[0], p.stderr[-3000:]


def test_cli_image_folder_that_is_a_file_is_one_clear_line(tmp_path):
    from PIL import Image

    from reca_nb.train import cli

    photo = tmp_path / "one.png"
    Image.new("RGB", (16, 16)).save(photo)
    with pytest.raises(SystemExit) as exit_:
        cli(["--arch=janus-pro", "--tiny", f"--image_folder={photo}", "--threads=1", "--progress=False"])
    msg = exit_.value.code
    assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg  # exit status 1
    assert f"{photo} is a file, not a folder of images" in msg


# ----------------------------------------------------------------------------- unknown words

@pytest.mark.parametrize("arch", list(registry.ARCHS))
def test_unknown_words_in_captions_and_prompts_raise_clearly(arch):
    torch.manual_seed(0)
    model = registry.build(arch)
    x = torch.rand(2, 3, model.image_size, model.image_size)
    und = torch.rand(2, 3, model.und_size, model.und_size)
    bad = "a zyzzyva circle"
    with pytest.raises(ValueError, match="unknown word 'zyzzyva'"):
        model.i2t_loss(und, ["a red circle on the left .", bad])
    with pytest.raises(ValueError, match="unknown word 'zyzzyva'"):
        model.generation_loss(x, ["a red circle", bad])
    with pytest.raises(ValueError, match="unknown word 'zyzzyva'"):
        model.sample([bad], generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- disk full

def test_disk_full_on_save_is_clear_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch as st

    out = tmp_path / "run"
    r = ci(steps=6, save_every=2, keep_ckpts=2)
    real, calls = st.save_file, []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:  # the step-6 checkpoint: half a file reaches the disk, then ENOSPC
            with open(filename, "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device") as err:
        train(toy(), r, out_dir=out, progress=False)
    assert "ckpt-000006" in str(err.value) and "ckpt-000004" in str(err.value)  # what failed, what is kept
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt")) == \
        ["ckpt-000002.safetensors", "ckpt-000004.safetensors"]  # no half-written leftovers
    assert load_checkpoint(out / "ckpt-000004.safetensors")["step"] == 4  # intact and verified

    monkeypatch.setattr(st, "save_file", real)  # space freed: resuming continues from step 4
    full = train(toy(), r, progress=False)
    res = train(toy(), r, out_dir=out, resume="latest", progress=False)
    assert losses(res) == losses(full)


def test_disk_full_on_model_save_keeps_the_previous_model_file(tmp_path, monkeypatch):
    import safetensors.torch as st

    path = tmp_path / "model.safetensors"
    old = toy(seed=1)
    old.save(path)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(st, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        toy(seed=2).save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    back = ToyUMM.load(path)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), old.state_dict().values()))


# ----------------------------------------------------------------------------- foreign checkpoints

def test_model_checkpoint_from_another_architecture(tmp_path):
    path = tmp_path / "toy.safetensors"
    toy().save(path)
    with pytest.raises(ValueError, match="holds a 'toy' model"):
        registry.get_class("janus").load(path)
    torch.manual_seed(0)
    clip_path = tmp_path / "showo-clip.safetensors"
    registry.build("showo-clip").save(clip_path)
    # one class, two registry names: asking for showo-vq must not hand back the CLIP variant
    with pytest.raises(ValueError, match="showo-clip.*showo-vq|showo-vq.*showo-clip"):
        registry.load_base("showo-vq", clip_path)
    assert registry.load_base("showo-clip", clip_path).arch == "showo-clip"


def test_training_checkpoint_from_another_model_is_a_clear_error(tmp_path):
    train(toy(), ci(steps=2, save_every=2), out_dir=tmp_path, progress=False)
    ckpt = tmp_path / "ckpt-000002.safetensors"
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"'arch': \('toy', 'bagel'\)"):  # another arch (named in its recipe)
        train(registry.build("bagel"), ci("bagel", steps=4), resume=ckpt, progress=False)
    # same recipe, differently shaped model: named, not a load_state_dict wall of size mismatches
    with pytest.raises(CheckpointError, match=r"'toy' model .*'d': \(32, 16\)") as err:
        train(toy(d=16), ci(steps=4, save_every=2), out_dir=tmp_path, resume="latest", progress=False)
    assert len(str(err.value)) < 600
    assert load_checkpoint(ckpt)["step"] == 2  # the foreign attempt touched nothing


# ----------------------------------------------------------------------------- safetensors only

def _is_safetensors(path) -> bool:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return len(raw) == 8 + n + end


def test_checkpoints_are_safetensors_and_load_without_pickle(tmp_path, monkeypatch):
    out = tmp_path / "run"
    r = ci(steps=4, save_every=2, keep_ckpts=2)
    full = train(toy(), r, progress=False)
    train(toy(), replace(r, steps=2), out_dir=out, progress=False)
    files = sorted(p for p in out.iterdir())
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    assert all(_is_safetensors(p) for p in files if p.suffix == ".safetensors")

    def no_pickle(*a, **k):
        raise AssertionError("pickle / torch.load used to read a checkpoint")

    for target, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(target, name, no_pickle)
    with pytest.raises(AssertionError, match="pickle"):  # the patch is live
        torch.load(out / "model.safetensors")
    res = train(toy(), r, out_dir=out, resume="latest", progress=False)  # resume reads ckpt-000002
    assert losses(res) == losses(full)
    assert load_checkpoint(out / "ckpt-000004.safetensors")["step"] == 4
    assert ToyUMM.load(out / "model.safetensors").config.d == 32
    assert geneval._from_file(geneval.SCORER_FILE) is not None  # the shipped scorer
    shipped = sorted(registry.CHECKPOINT_DIR.glob("*.safetensors"))
    assert shipped and all(_is_safetensors(p) for p in shipped)
    assert registry.load_base(shipped[0].stem).arch == shipped[0].stem  # a shipped base checkpoint


# ----------------------------------------------------------------------------- no network

def test_core_runs_with_sockets_blocked(tmp_path, monkeypatch):
    attempts = []

    def blocked(*args, **kw):
        attempts.append(args[1:] or kw)
        raise OSError(errno.ENETUNREACH, "network blocked by test_reliability")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    with pytest.raises(OSError, match="blocked"):  # the patch is live
        socket.create_connection(("huggingface.co", 443), timeout=1)
    attempts.clear()
    torch.manual_seed(0)
    model = registry.build("openuni")  # transformers Qwen2 + CLIP, diffusers Sana DiT + AutoencoderKL
    h = train(model, ci("openuni", steps=3, save_every=3), out_dir=tmp_path, progress=False)
    t2i = geneval.evaluate_t2i(model, n_per_category=1, progress=False)
    i2t = geneval.evaluate_i2t(model, n=4, progress=False)
    back = registry.get_class("openuni").load(tmp_path / "model.safetensors")
    assert len(losses(h)) == 3 and 0 <= t2i["overall"] <= 1 and i2t["n"] == 4 and back.arch == "openuni"
    assert attempts == []
