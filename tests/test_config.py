import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from reca_nb.config import apply_overrides, cli, describe, parse_overrides, run_main
from reca_nb.paths import REPO_ROOT
from reca_nb.recipe import Recipe


def test_parse_literals_strings_and_flags():
    got = parse_overrides(["--steps=200", "--lr=3e-4", "--prompts=single", "--betas=(0.9, 0.99)",
                           "--collapse-stop", "--collapse_stop=False", "--note=hello world", "--x=[1, 2]"])
    assert got == {"steps": 200, "lr": 3e-4, "prompts": "single", "betas": (0.9, 0.99),
                   "collapse_stop": False, "note": "hello world", "x": [1, 2]}
    assert isinstance(got["steps"], int) and isinstance(got["lr"], float)


@pytest.mark.parametrize("bad", ["steps=3", "-steps=3", "--", "--a b=1"])
def test_parse_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_overrides([bad])


def test_parse_never_executes_code(tmp_path):
    target = tmp_path / "pwned"
    got = parse_overrides([f"--x=__import__('pathlib').Path('{target}').touch()"])
    assert isinstance(got["x"], str) and not target.exists()


def test_apply_converts_and_replaces():
    r = apply_overrides(Recipe(), {"steps": 7, "lr": 1, "betas": [0.8, 0.9], "prompts": "single",
                                   "i2t_und_res": [32, 16]})
    assert r.steps == 7 and r.lr == 1.0 and isinstance(r.lr, float)
    assert r.betas == (0.8, 0.9) and r.i2t_und_res == (32, 16) and r.prompts == "single"
    assert Recipe().steps != 7  # the original is untouched (frozen dataclass, replace)


def test_unknown_key_suggests_close_match():
    msg = r"Unknown config key 'lamda_reca' for Recipe; Did you mean 'lambda_reca'"
    with pytest.raises(ValueError, match=msg):
        apply_overrides(Recipe(), {"lamda_reca": 0.0})
    with pytest.raises(ValueError, match="valid keys: arch, stage"):
        apply_overrides(Recipe(), {"zzz": 1})


@pytest.mark.parametrize("key,value", [("steps", "ten"), ("steps", 1.5), ("steps", True), ("lr", "fast"),
                                       ("collapse_stop", 1), ("collapse_stop", "yes"), ("betas", (0.9,)),
                                       ("betas", 0.9), ("prompts", "many"), ("freeze", "all"), ("arch", 3)])
def test_type_and_choice_errors_name_the_field(key, value):
    with pytest.raises(ValueError, match=key):
        apply_overrides(Recipe(), {key: value})


def test_integral_float_accepted_for_int():
    assert apply_overrides(Recipe(), {"steps": 1e3}).steps == 1000


def test_generic_dataclass_and_optional():
    @dataclass
    class C:
        a: int = 1
        b: "float | None" = None
        c: tuple = ()

    c = apply_overrides(C(), {"a": 2, "b": 3, "c": [1, "x"]})
    assert (c.a, c.b, c.c) == (2, 3.0, (1, "x"))
    assert apply_overrides(C(b=1.0), {"b": None}).b is None
    with pytest.raises(ValueError, match="C.b"):
        apply_overrides(C(), {"b": "x"})
    with pytest.raises(TypeError):
        apply_overrides(C, {"a": 1})


# ----------------------------------------------------------------------------- the shared command-line prologue

def test_cli_splits_own_keys_and_applies_threads(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    calls = []
    own, overrides = cli(["--arch=x", "--steps=3", "--threads=2", "--model.d=8"], "usage", ("arch", "threads"))
    assert own == {"arch": "x", "threads": 2} and overrides == {"steps": 3, "model.d": 8} and calls == [2]
    cli(["--threads=0"], "usage", ("threads",))  # 0 keeps torch's default
    cli(["--threads=3"], "usage")  # not a cli key: an override like any other, left alone
    assert calls == [2]
    with pytest.raises(ValueError, match="--threads expects int"):
        cli(["--threads=many"], "usage", ("threads",))


@pytest.mark.parametrize("argv,empty_is_help", [(["--help"], False), (["-h"], False), (["--steps=3", "-h"], False),
                                                ([], True)])
def test_cli_help_prints_usage_and_exits_cleanly(argv, empty_is_help, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv, "usage: x --steps=N", ("steps",), empty_is_help=empty_is_help)
    assert e.value.code in (0, None) and capsys.readouterr().out == "usage: x --steps=N\n"
    assert cli([], "usage") == ({}, {})  # no argument: the defaults, unless empty_is_help


def test_cli_valid_names_every_key_of_the_command():
    with pytest.raises(ValueError, match=r"'baselin' for this command; Did you mean 'baseline'\? "
                                         r"valid keys: out, baseline, steps"):
        cli(["--baselin"], "usage", ("out", "baseline"), valid=("steps",))
    assert cli(["--out=x", "--steps=2"], "usage", ("out", "baseline"), valid=("steps",)) == ({"out": "x"},
                                                                                             {"steps": 2})
    with pytest.raises(ValueError, match="expected --key=value"):
        cli(["steps=2"], "usage")


def test_describe_lists_keys_defaults_and_field_comments():
    @dataclass
    class C:
        steps: int = 3  # optimizer steps
        out: str = ""
        name: str = "x"  # a name

    lines = describe(C()).splitlines()
    assert [line.split()[0] for line in lines] == ["--steps=3", "--out=''", "--name=x"]
    assert lines[0].endswith("optimizer steps") and lines[1].strip() == "--out=''"


def test_run_main_turns_bad_input_into_one_line():
    def main(argv):
        raise ValueError(f"bad {argv}")

    with pytest.raises(SystemExit, match=r"^error: bad \['--x'\]$"):
        run_main(main, ["--x"])
    assert run_main(lambda argv: 7) == 7


BUILD_COMMANDS = {  # module: a key its --help must list
    "reca_nb.build.fit_tokenizers": "--compare_vqmodel=False",
    "reca_nb.build.fit_clip": "--baseline=False",
    "reca_nb.build.fit_scorer": "--noise_frac=0.08",
    "reca_nb.build.pretrain": "n_t2i_pairs",
}


def _run(module, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("module", BUILD_COMMANDS)
def test_build_command_help_lists_its_keys(module):
    r = _run(module, "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: python -m {module}") and BUILD_COMMANDS[module] in r.stdout


@pytest.mark.parametrize("module", BUILD_COMMANDS)
def test_build_command_rejects_an_unknown_key_in_one_line(module):
    r = _run(module, *(["--arch=showo-vq"] if module.endswith("pretrain") else []), "--stepz=3")
    assert r.returncode == 1 and r.stdout == "", r.stderr[-2000:]
    assert r.stderr.startswith("error: Unknown config key 'stepz'") and r.stderr.count("\n") == 1
    assert "Did you mean 'steps'" in r.stderr
