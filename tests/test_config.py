from dataclasses import dataclass

import pytest

from reca_nb.config import apply_overrides, parse_overrides
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
