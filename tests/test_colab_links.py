"""Every Colab badge and Colab clone cell points at pyproject's [project.urls] Repository."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "set_repo_url.py"
sys.path.insert(0, str(TOOL.parent))
import set_repo_url  # noqa: E402


def test_badges_and_clone_cells_agree_with_pyproject():
    out = subprocess.run([sys.executable, str(TOOL), "--check"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_notebook_has_a_badge_and_a_clone_line():
    readme = set_repo_url.README.read_text()
    for src in set_repo_url.sources(set_repo_url.NOTEBOOK_DIR):
        assert f"notebooks/{src.stem}.ipynb" in readme
        assert set_repo_url.CLONE.search(src.read_text()), f"{src.name}: no Colab clone line"


def test_check_fails_on_a_stray_address(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("[![Colab](b.svg)](https://colab.research.google.com/github/someone-else/reca_nb/blob/main/x.ipynb)")
    monkeypatch.setattr(set_repo_url, "README", readme)
    monkeypatch.setattr(set_repo_url, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(set_repo_url, "targets", lambda: [readme])
    assert set_repo_url.main(["--check"]) == 1
    assert "someone-else/reca_nb" in capsys.readouterr().out
    assert set_repo_url.main([]) == 0  # rewrite
    assert set_repo_url.slugs(readme.read_text()) == [set_repo_url.repo_slug()]
