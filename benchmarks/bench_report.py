"""results/bench.md is shared by several benchmarks: each one owns a marked section and rewrites only that.

    write_section("results/bench.md", "arch_throughput", markdown)   # replaces or appends the section
"""
import re
from pathlib import Path

from reca_nb.paths import REPO_ROOT


def write_section(path, name: str, markdown: str) -> Path:
    """Put `markdown` between <!-- bench:name --> markers in `path` (relative paths: from the repo root)."""
    path = Path(path)
    path = path if path.is_absolute() else REPO_ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# reca_nb benchmarks\n\nWritten by `make bench`.\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    return path


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
