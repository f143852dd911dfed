"""Where things live (package data, shipped checkpoints, the user cache) and how files are written there.

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


def atomic_write(path, content) -> Path:
    """Write `content` to `path` so that readers see the old file or the new one, never half of one.

    content: str, bytes, or a function that writes the file at the temporary path it is given (safetensors'
    `save_file`, say). On any failure (disk full, Ctrl-C) the temporary file is removed and the previous
    `path` is left intact. The temporary name carries the process id: parallel writers never share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
