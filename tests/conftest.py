"""Fixtures shared by several test files (the repository-wide session set-up is ../conftest.py).

Stand-ins for the frozen CLIP / autoencoder and the tiny model builders are in tests/standins.py, the toy
model in tests/toy_umm.py. A file opts in to these fixtures with
    pytestmark = pytest.mark.usefixtures("own_home_one_thread", "toy_arch")
"""
import pytest
import torch


@pytest.fixture
def own_home_one_thread(tmp_path, monkeypatch):
    """A private $RECA_NB_HOME and one torch thread for the test (restored afterwards): tiny tensors, where
    threads only add contention."""
    monkeypatch.setenv("RECA_NB_HOME", str(tmp_path / "home"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def toy_arch(monkeypatch):
    """Register ToyUMM as arch "toy" (registry, `python -m reca_nb.train --arch=toy`), also for subprocesses
    started from the repository root."""
    # imported here, not at the top: pytest imports this file before ../conftest.py sets HF_HUB_OFFLINE
    from reca_nb.paths import REPO_ROOT
    from tests.toy_umm import TOY_ARCH

    monkeypatch.setenv("RECA_NB_EXTRA_ARCHS", TOY_ARCH)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
