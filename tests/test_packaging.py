"""Packaging, Makefile, CI script, README and the notebook sync tool agree with each other."""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from reca_nb.paths import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

sys.path.insert(0, str(REPO_ROOT / "tools"))
import sync_notebooks  # noqa: E402

MAKE_TARGETS = ("venv", "lab", "tour", "test", "test-fast", "notebooks", "check-notebooks", "data")


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _conda_pip_lines():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    return env, pip


def _name(req: str) -> str:
    return Requirement(req).name.lower().replace("_", "-")


# --- pyproject.toml <-> environment.yml ----------------------------------------------------------------
def test_environment_yml_lists_the_pyproject_packages():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r) for r in project["dependencies"] + extras["dev"] + extras["browser"]}
    _, pip = _conda_pip_lines()
    pinned = {_name(r) for r in pip if not r.startswith(("-", "."))}
    assert pinned == wanted, f"only in environment.yml: {pinned - wanted}; in pyproject: {wanted - pinned}"
    assert "-e ." in pip


def test_environment_pins_satisfy_pyproject_bounds_and_torch_comes_first():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["dev"] + extras["browser"]
    bounds = {_name(r): Requirement(r) for r in declared}
    _, pip = _conda_pip_lines()
    reqs = [Requirement(r) for r in pip if not r.startswith(("-", "."))]
    assert str(reqs[0]) == "torch==2.13.0"
    for r in reqs:
        (spec,) = r.specifier
        assert spec.operator == "==", f"{r} must be pinned"
        assert bounds[_name(str(r))].specifier.contains(spec.version), f"{r} violates {bounds[_name(str(r))]}"


def _constraints(name: str) -> dict:
    lines = (REPO_ROOT / "constraints" / name).read_text().splitlines()
    reqs = [Requirement(l) for l in lines if l.strip() and not l.startswith("#")]
    for r in reqs:
        (spec,) = r.specifier
        assert spec.operator == "==", f"constraints/{name}: {r} must be pinned"
    pins = {_name(str(r)): r.specifier for r in reqs}
    assert len(pins) == len(reqs), f"constraints/{name} names a package twice"
    return {n: next(iter(s)).version for n, s in pins.items()}


def test_tested_constraints_carry_the_environment_yml_pins():
    """`make venv` (constraints/tested.txt) and conda (environment.yml) install the same tested versions."""
    tested = _constraints("tested.txt")
    _, pip = _conda_pip_lines()
    for r in (Requirement(r) for r in pip if not r.startswith(("-", "."))):
        (spec,) = r.specifier
        assert tested.get(_name(str(r))) == spec.version, \
            f"environment.yml pins {r}, constraints/tested.txt {tested.get(_name(str(r)))}"
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    for r in project["dependencies"] + extras["dev"] + extras["browser"]:
        assert Requirement(r).specifier.contains(tested[_name(r)]), f"tested {tested[_name(r)]} violates {r}"


def test_colab_versions_satisfy_the_lower_bounds():
    """Every runtime dependency is pinned at Colab's version in constraints/colab.txt and pyproject admits it,
    so `make test-colab` tests the lower bounds and `pip install -e .` on Colab upgrades nothing."""
    colab = _constraints("colab.txt")
    for r in _pyproject()["project"]["dependencies"]:
        assert _name(r) in colab, f"constraints/colab.txt lacks {_name(r)}"
        assert Requirement(r).specifier.contains(colab[_name(r)]), f"Colab's {_name(r)} {colab[_name(r)]} violates {r}"
    assert colab["ipywidgets"].startswith("7.")  # Colab's widget manager supports no other


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_venvs_install_their_constraints(tmp_path):
    def dry(*args):
        return _make_dry_run(*args, check=True).stdout
    assert '-c constraints/tested.txt -e ".[dev]"' in dry("venv", f"VENV={tmp_path / 'v'}").replace("\\\n\t", "")
    # -B: as if .venv-colab / .venv-latest did not exist yet (here they may, and be up to date)
    colab = dry("-B", "venv-colab")
    assert '"torch==2.11.0"' in colab and "-c constraints/colab.txt" in colab
    assert _constraints("colab.txt")["torch"] == "2.11.0"
    latest = dry("-B", "venv-latest")
    assert "-c constraints" not in latest and "--upgrade-strategy eager" in latest
    test_colab = dry("test-colab")
    assert "--nbmake" in test_colab and "notebooks/07_" in test_colab and ".venv-colab/bin/python -m pytest tests" \
        in test_colab


def test_pyproject_shape():
    cfg = _pyproject()
    deps = {_name(r): r for r in cfg["project"]["dependencies"]}
    assert deps["torch"] == "torch>=2.4"  # loose on purpose: Colab keeps its own torch
    assert "nbmake==1.5.5" in cfg["project"]["optional-dependencies"]["dev"]
    # every layer folder is a subpackage: find them all, and nothing else (data/, notebooks/ are not code)
    assert cfg["tool"]["setuptools"]["packages"]["find"]["include"] == ["reca_nb*"]
    ini = cfg["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    assert any(m.startswith("slow:") for m in ini["markers"])


def test_import_reca_nb_is_light():
    code = "import sys, reca_nb; print(reca_nb.__version__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout.split()
    assert re.fullmatch(r"\d+\.\d+\.\d+", out[0]) and out[1] == "False"


# --- Makefile, CI script, README ------------------------------------------------------------------------
def _make_dry_run(*args, check: bool = False):
    # under an outer make (`make test-colab` runs `make test VENV=... NOTEBOOKS=...`) its command-line variables
    # reach us through MAKEFLAGS, and it exports them (VENV, TORCH, CONSTRAINTS, ...) into our environment where
    # `?=` would take them: read the Makefile as a user's make does, with only the shell's basics
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYENV_ROOT", "RECA_NB_HOME")}
    return subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=check, env=env)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_exist_and_install_torch_first(tmp_path):
    for target in MAKE_TARGETS:
        r = _make_dry_run(target)
        assert r.returncode == 0, f"make -n {target}: {r.stderr}"
    # a venv that does not exist yet: the recipe must create it and install pinned torch before the package
    r = _make_dry_run("venv", f"VENV={tmp_path / 'v'}", check=True)
    lines = r.stdout.splitlines()
    torch_at = next(i for i, l in enumerate(lines) if '"torch==2.13.0"' in l)
    pkg_at = next(i for i, l in enumerate(lines) if '-e ".[dev]"' in l)
    assert any("-m venv" in l for l in lines[:torch_at]) and torch_at < pkg_at


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_test_is_offline_and_runs_notebooks():
    r = _make_dry_run("test")
    text = Path(REPO_ROOT / "Makefile").read_text()
    assert "export HF_HUB_OFFLINE := 1" in text
    assert "-m pytest tests" in r.stdout and "--nbmake" in r.stdout
    nbs = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for nb in nbs:
        assert nb in r.stdout, f"make test does not run {nb}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_lab_binds_localhost_without_browser():
    out = _make_dry_run("lab").stdout
    assert "--ip=127.0.0.1" in out and "--no-browser" in out
    # the learner's working copies, outside the repository (autosaved outputs never dirty git status)
    assert "tools/lab_workspace.py" in out and 'root_dir="' in out and "/lab" in out
    assert ("--allow-root" in out) == (os.getuid() == 0)


def test_make_targets_call_modules_that_exist():
    text = (REPO_ROOT / "Makefile").read_text()
    modules = set(re.findall(r"-m (reca_nb(?:\.\w+)+)", text))
    assert {"reca_nb.build.fit_tokenizers", "reca_nb.build.fit_clip", "reca_nb.build.fit_scorer",
            "reca_nb.build.pretrain", "reca_nb.reproduce"} <= modules
    missing = [m for m in sorted(modules) if not ((path := REPO_ROOT / m.replace(".", "/")).with_suffix(".py").exists()
                                                  or (path / "__main__.py").exists())]
    missing += [s for s in re.findall(r"\$\(PY\) ((?:tools|benchmarks)/\S+\.py)", text)
                if not (REPO_ROOT / s).exists()]
    assert not missing, f"Makefile calls files that do not exist: {missing}"


def test_make_data_covers_every_arch():
    archs = pytest.importorskip("reca_nb.models.registry").ARCHS
    line = next(l for l in (REPO_ROOT / "Makefile").read_text().splitlines() if l.startswith("ARCHS ?="))
    assert set(line.split("=", 1)[1].split()) == set(archs)


def test_ci_script():
    path = REPO_ROOT / ".ci" / "run"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert path.stat().st_mode & stat.S_IXUSR, ".ci/run must be executable"
    assert "set -euo pipefail" in text and "HF_HUB_OFFLINE=1" in text and "MPLBACKEND=Agg" in text
    assert "RECA_NB_HOME" in text
    steps = [l.strip() for l in text.splitlines() if l.strip().startswith("make ")]
    assert steps == ["make venv", "make check-notebooks", "make test", "make test-browser", "make venv-colab",
                     "make test-colab"]
    assert "apt-get install -y -qq chromium" in text  # the Debian browser Playwright drives
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_readme_opens_with_exactly_lab_and_test():
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [l.split("#")[0].strip() for l in first_block.splitlines() if l.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    assert "colab.research.google.com/github/" in text  # the address itself: tests/test_colab_links.py


def test_readme_lists_every_notebook():
    text = (REPO_ROOT / "README.md").read_text()
    for nb in sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        assert f"notebooks/{nb.name}" in text, f"README's table lacks {nb.name}"


# --- tools/sync_notebooks.py ----------------------------------------------------------------------------
TINY = '''# %% [markdown]
# # 01 · Tiny
# A markdown cell.

# %% tags=["parameters"]
steps = 3

# %%
print(steps * 2)
'''


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_sync_writes_a_stripped_python3_notebook_byte_stably(tmp_path):
    (tmp_path / "01_tiny.py").write_text(TINY)
    (tmp_path / "_helper.py").write_text("x = 1\n")  # helpers are not notebooks
    assert sync_notebooks.main(["--dir", str(tmp_path)]) == 0
    ipynb = tmp_path / "01_tiny.ipynb"
    first = _md5(ipynb)
    ipynb.unlink()
    assert sync_notebooks.main(["--dir", str(tmp_path)]) == 0
    assert _md5(ipynb) == first
    assert not (tmp_path / "_helper.ipynb").exists()

    nb = json.loads(ipynb.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code", "code"]
    assert [c["id"] for c in nb["cells"]] == ["0", "1", "2"]
    assert nb["cells"][1]["metadata"]["tags"] == ["parameters"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in nb["cells"][1:])
    assert sync_notebooks.check(tmp_path) == []


def test_sync_check_catches_stale_outputs_missing_and_orphans(tmp_path):
    py = tmp_path / "01_tiny.py"
    py.write_text(TINY)
    assert sync_notebooks.check(tmp_path) == ["01_tiny.ipynb: missing (generate it from 01_tiny.py)"]
    sync_notebooks.write(tmp_path)
    ipynb = tmp_path / "01_tiny.ipynb"

    py.write_text(TINY.replace("steps = 3", "steps = 4"))
    assert sync_notebooks.check(tmp_path) == ["01_tiny.ipynb: out of sync with 01_tiny.py"]
    assert sync_notebooks.main(["--check", "--dir", str(tmp_path)]) == 1
    sync_notebooks.write(tmp_path)
    assert sync_notebooks.main(["--check", "--dir", str(tmp_path)]) == 0

    nb = json.loads(ipynb.read_text())
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["8\n"]}]
    nb["cells"][2]["execution_count"] = 1
    ipynb.write_text(json.dumps(nb, indent=1))
    assert sync_notebooks.check(tmp_path) == ["01_tiny.ipynb: has outputs"]

    sync_notebooks.write(tmp_path)
    shutil.copy(ipynb, tmp_path / "02_orphan.ipynb")
    (problem,) = sync_notebooks.check(tmp_path)
    assert problem.startswith("02_orphan.ipynb: no 02_orphan.py source")


def test_repository_notebooks_are_in_sync():
    """The same gate as `make check-notebooks`: committed .ipynb == regenerated from .py, no outputs."""
    assert sync_notebooks.check(REPO_ROOT / "notebooks") == []
