"""Fixtures shared by several test files (the repository-wide session set-up is ../conftest.py)."""
import pytest
import torch


@pytest.fixture
def own_home_one_thread(tmp_path, monkeypatch):
    """A private $RECA_NB_HOME and one torch thread for the test (restored afterwards)."""
    monkeypatch.setenv("RECA_NB_HOME", str(tmp_path / "home"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
