"""Where things live: package data, shipped checkpoints and the user cache.

Every path in reca_nb resolves from here, never from the current working directory
(nbmake runs each notebook with its own folder as cwd).
"""
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = REPO_ROOT / "data"  # shipped, small, regenerable artefacts (see data/README.md)


def cache_dir() -> Path:
    """$RECA_NB_HOME, else ~/.cache/reca_nb; created on first use."""
    root = Path(os.environ.get("RECA_NB_HOME", Path.home() / ".cache" / "reca_nb")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
