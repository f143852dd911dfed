"""Write the repository's address into every Colab badge and Colab bootstrap (clone) cell.

The address lives in ONE place, pyproject.toml:

    [project.urls]
    Repository = "https://github.com/OWNER/reca_nb"

Fork or publish the project under another account: edit that line, then run

    python tools/set_repo_url.py           # rewrite README.md, notebooks/*.py and their .ipynb  (make colab-links)
    python tools/set_repo_url.py --check   # exit 1 if any badge or clone line disagrees with pyproject

A badge is `https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/NN.ipynb`; a clone line is
the `git clone --depth=1 https://github.com/OWNER/REPO` of each notebook's first (Colab-only) cell. Only these
URLs are touched; the .ipynb files are regenerated from their .py sources (tools/sync_notebooks.py), so they
stay byte-identical to what `make notebooks` writes.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `python tools/set_repo_url.py` or `-m tools.set_repo_url`
from sync_notebooks import NOTEBOOK_DIR, REPO_ROOT, render, sources  # noqa: E402

PYPROJECT = REPO_ROOT / "pyproject.toml"
README = REPO_ROOT / "README.md"
# a GitHub owner or repository name: letters, digits, '-', '_', '.'
_NAME = r"[A-Za-z0-9_.-]+"
BADGE = re.compile(rf"(https://colab\.research\.google\.com/github/)({_NAME}/{_NAME})(/blob/)")
CLONE = re.compile(rf"(\"clone\", \"--depth=1\", \"https://github\.com/)({_NAME}/{_NAME})(\")")


def repo_slug(pyproject: Path = PYPROJECT) -> str:
    """'owner/name' from pyproject's [project.urls] Repository."""
    urls = tomllib.loads(pyproject.read_text())["project"].get("urls", {})
    url = urls.get("Repository")
    m = re.fullmatch(rf"https://github\.com/({_NAME}/{_NAME})/?", url or "")
    if m is None:
        raise SystemExit(f"error: {pyproject.name} [project.urls] Repository must be https://github.com/OWNER/NAME, "
                         f"got {url!r}")
    return m.group(1)


def slugs(text: str) -> list[str]:
    """Every 'owner/name' named by a badge or a clone line in `text`."""
    return [m.group(2) for pat in (BADGE, CLONE) for m in pat.finditer(text)]


def rewrite(text: str, slug: str) -> str:
    for pat in (BADGE, CLONE):
        text = pat.sub(lambda m: f"{m.group(1)}{slug}{m.group(3)}", text)
    return text


def targets() -> list[Path]:
    """README and the notebook sources; each .ipynb follows its .py."""
    return [README, *sources(NOTEBOOK_DIR)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report disagreeing files; exit 1 if any")
    args = ap.parse_args(argv)
    slug = repo_slug()
    stale = []
    for path in targets():
        ipynb = path.with_suffix(".ipynb") if path.parent == NOTEBOOK_DIR else None
        text = path.read_text()
        new = rewrite(text, slug)
        wrong = [s for s in slugs(text) if s != slug]
        if ipynb is not None and ipynb.exists():
            wrong += [s for s in slugs(ipynb.read_text()) if s != slug]
        if not wrong:
            continue
        stale.append(path)
        if args.check:
            print(f"{path.relative_to(REPO_ROOT)}: links to {sorted(set(wrong))}, pyproject says {slug}")
            continue
        path.write_text(new)
        if ipynb is not None:
            ipynb.write_text(render(path))
        print(f"wrote {path.relative_to(REPO_ROOT)}" + (f" and {ipynb.name}" if ipynb is not None else ""))
    if args.check and stale:
        print("run `make colab-links` (python tools/set_repo_url.py) to rewrite them")
        return 1
    if not stale:
        print(f"every Colab badge and clone line already points at github.com/{slug}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
