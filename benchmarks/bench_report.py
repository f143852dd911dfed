"""results/bench.md is shared by several benchmarks: each one owns a marked section and rewrites only that.

    write_section("results/bench.md", "arch_throughput", markdown)   # replaces or appends the section
"""
import json
import re
import subprocess
import sys
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


def options(argv: list, defaults: dict) -> tuple:
    """(config, worker) from `--key=value` arguments: `defaults` updated, unknown keys a one-line error;
    worker = the `--_worker=NAME` a benchmark passes to its own subprocesses (None in the parent)."""
    from reca_nb.config import parse_overrides

    args = parse_overrides(argv)
    worker = args.pop("_worker", None)
    cfg = {**defaults, **args}
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}; valid: {sorted(defaults)}")
    return cfg, worker


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def publish(out, section: str, intro: str, header: list, rows: list, failed: int = 0, after: str = ""):
    """Print the table (and `after`, a line below it); with `out`, write `intro` + the table + `after` as
    bench.md's `section`; exit 1 if runs failed."""
    table = md_table(header, rows) + (f"\n\n{after}" if after else "")
    print()
    print(table)
    if out and rows:
        print(f"\nwrote {write_section(out, section, intro + chr(10) * 2 + table)}")
    if failed:
        raise SystemExit(f"{failed} run(s) failed")


def machine_line(threads) -> str:
    """'2026-12-05; x86_64 2 cores, torch 2.13.0, threads=1': where and how a benchmark table was measured."""
    import os
    import platform
    import time

    import torch

    return (f"{time.strftime('%Y-%m-%d')}; {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads={threads}")


def run_worker(script, args: list, env: dict, label: str):
    """Run `script --_worker=... args` in a fresh interpreter (so its peak memory is its own) and return the
    dict it prints as one `RESULT {json}` line; None (and a one-line FAILED report) when it fails."""
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"  {label}: FAILED (exit {proc.returncode}): {tail[0]}", flush=True)
        return None
    return json.loads(line[0][7:])


# --- one measurement, every place a newcomer reads a runtime ------------------------------------------------
# series_time.py measures each notebook once; these put that number into README's table and the notebook's
# own header, and tests/test_runtimes.py checks that all three agree.
HEADER = re.compile(r"(\*\*Runtime\*\*: CPU[^≈\n]*≈ )[0-9.]+(?:–[0-9.]+)? (?:min|s)\b")
README_ROW = re.compile(r"^(\| \[`(\d\d_\w+)\.ipynb`\][^|]*\|[^|]*\|[^|]*\| )([^|]*?)( \|)", re.M)


def runtime_label(seconds: float) -> str:
    """20 -> "20 s", 95 -> "1.5 min", 250 -> "4 min": the precision a reader needs."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    minutes = seconds / 60
    return f"{round(minutes * 2) / 2:g} min" if minutes < 5 else f"{round(minutes):.0f} min"


def read_series_times(bench_md=None) -> dict:
    """{notebook stem: seconds} from the series_time section of results/bench.md."""
    text = Path(bench_md or REPO_ROOT / "results" / "bench.md").read_text()
    section = text.split("<!-- bench:series_time -->", 1)[1].split("<!-- /bench:series_time -->", 1)[0]
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| `(\d\d_\w+)\.ipynb` \| ([0-9.]+) \|", section, re.M)}


def apply_runtimes(times: dict, root=REPO_ROOT) -> list:
    """Write each notebook's measured runtime into README.md's table and the notebook's header; returns the
    files changed (the .ipynb are regenerated from the .py by tools/sync_notebooks.py afterwards)."""
    root, changed = Path(root), []
    readme = root / "README.md"
    text = readme.read_text()
    new = README_ROW.sub(lambda m: m[1] + (f"≈ {runtime_label(times[m[2]])}" if m[2] in times else m[3]) + m[4],
                         text)
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    for stem, seconds in times.items():
        src = root / "notebooks" / f"{stem}.py"
        text = src.read_text()
        if not HEADER.search(text):
            raise SystemExit(f"{src} has no '**Runtime**: CPU ≈ ...' line in its header")
        new = HEADER.sub(lambda m: m[1] + runtime_label(seconds), text, count=1)
        if new != text:
            src.write_text(new)
            changed.append(src)
    return changed
