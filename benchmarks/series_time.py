"""Wall time of each notebook of the series, executed the way `make test` executes it (pytest --nbmake).

    python benchmarks/series_time.py [--notebooks=all|00_shape_world,01_what_is_reca] [--timeout=900]
                                     [--threads=1] [--out=results/bench.md]

Each notebook runs in its own `pytest --nbmake` process on a fresh kernel (nothing shared between them, no
warm caches beyond what a fresh clone has on disk), with HF_HUB_OFFLINE=1, MPLBACKEND=Agg and
RECA_NB_THREADS / OMP_NUM_THREADS = threads. The wall time includes kernel start-up and imports: what a
reader waits for. A failed notebook is reported as such (its time still shown) and makes the exit status 1.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULTS = {"notebooks": "all", "timeout": 900, "threads": 1, "out": ""}


def notebooks(spec, root: Path) -> list:
    found = sorted(root.glob("[0-9]*.ipynb"))
    if spec == "all":
        return found
    by_name = {p.stem: p for p in found}
    out = []
    for name in str(spec).split(","):
        stem = Path(name.strip()).stem
        if stem not in by_name:
            raise SystemExit(f"no notebook {name!r} in {root}; have: {', '.join(by_name) or 'none'}")
        out.append(by_name[stem])
    return out


def run_one(path: Path, cfg: dict, repo: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "RECA_NB_THREADS": str(cfg["threads"]),
           "OMP_NUM_THREADS": str(cfg["threads"])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
           f"--nbmake-timeout={cfg['timeout']}", str(path.relative_to(repo))]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    tail = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return {"notebook": path.name, "seconds": seconds, "ok": proc.returncode == 0, "summary": tail}


def main(argv):
    from reca_nb.config import parse_overrides
    from reca_nb.paths import REPO_ROOT

    cfg = {**DEFAULTS, **parse_overrides(argv)}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    paths = notebooks(cfg["notebooks"], REPO_ROOT / "notebooks")
    if not paths:
        raise SystemExit("no notebooks/NN_*.ipynb to time")
    print(f"series wall time: {len(paths)} notebook(s), pytest --nbmake each, threads={cfg['threads']}",
          flush=True)
    results = []
    for p in paths:
        r = run_one(p, cfg, REPO_ROOT)
        results.append(r)
        print(f"  {r['notebook']:<32} {r['seconds']:7.1f} s  {'ok' if r['ok'] else 'FAILED'}  ({r['summary']})",
              flush=True)
    total = sum(r["seconds"] for r in results)
    print(f"  {'total':<32} {total:7.1f} s")
    from bench_report import md_table, write_section

    rows = [[f"`{r['notebook']}`", f"{r['seconds']:.0f}", "ok" if r["ok"] else "**failed**"] for r in results]
    rows.append(["**total**", f"{total:.0f}", f"{sum(r['ok'] for r in results)}/{len(results)} ok"])
    table = md_table(["notebook", "wall time (s)", "result"], rows)
    print()
    print(table)
    if cfg["out"]:
        import platform

        note = (f"## Notebook wall time\n\n`python benchmarks/series_time.py` ({time.strftime('%Y-%m-%d')}; "
                f"{platform.machine()} {os.cpu_count()} cores, threads={cfg['threads']}): each notebook in its "
                "own `pytest --nbmake` process, as `make test` runs it; times include kernel start-up.\n\n"
                + table)
        print(f"\nwrote {write_section(cfg['out'], 'series_time', note)}")
        if cfg["notebooks"] == "all":  # README and the notebook headers quote this one measurement
            from bench_report import apply_runtimes

            changed = apply_runtimes({Path(r["notebook"]).stem: r["seconds"] for r in results})
            subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "sync_notebooks.py")], check=True)
            print("runtimes written into:", ", ".join(str(p.relative_to(REPO_ROOT)) for p in changed) or "nothing new")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
