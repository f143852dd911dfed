"""Test-session environment for every pytest run in this repo: unit tests and `pytest --nbmake notebooks/X`.

Set in `pytest_configure`, i.e. before collection and before nbmake starts any kernel, so the notebooks run
under `make test` inherit the same environment as the unit tests:
  HF_HUB_OFFLINE=1   nothing may download weights or data sets
  MPLBACKEND=Agg     no display needed
  RECA_NB_HOME       a fresh temporary cache for the whole session (removed afterwards), so tests never read
                     or pollute ~/.cache/reca_nb; set RECA_NB_TEST_HOME=<dir> to use (and keep) a fixed one
  torch threads      min(4, cores), also OMP_NUM_THREADS for notebook kernels; override: RECA_NB_THREADS
"""
import os
import shutil
import tempfile

_session_home = None


def pytest_configure(config):
    global _session_home
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MPLBACKEND"] = "Agg"
    if os.environ.get("RECA_NB_TEST_HOME"):
        os.environ["RECA_NB_HOME"] = os.environ["RECA_NB_TEST_HOME"]
    else:
        _session_home = tempfile.mkdtemp(prefix="reca_nb_test_home_")
        os.environ["RECA_NB_HOME"] = _session_home
    threads = int(os.environ.get("RECA_NB_THREADS", min(4, os.cpu_count() or 1)))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))

    import torch

    torch.set_num_threads(threads)


def pytest_unconfigure(config):
    if _session_home:
        shutil.rmtree(_session_home, ignore_errors=True)
