"""The runtime a newcomer reads in README.md, in a notebook's header and in results/bench.md is one number:
`make bench` (benchmarks/series_time.py) measures it and writes it into the other two."""
import re
import sys

import pytest

from reca_nb.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import bench_report  # noqa: E402

TIMES = bench_report.read_series_times()
NOTEBOOKS = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))


def test_bench_measured_every_notebook():
    assert sorted(TIMES) == NOTEBOOKS


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_readme_and_header_quote_the_bench(stem):
    label = bench_report.runtime_label(TIMES[stem])
    row = next(line for line in (REPO_ROOT / "README.md").read_text().splitlines() if f"[`{stem}.ipynb`]" in line)
    assert f"| ≈ {label} |" in row, f"README says {row.split('|')[4].strip()!r}, bench {label!r}"
    header = bench_report.HEADER.search((REPO_ROOT / "notebooks" / f"{stem}.py").read_text())
    assert header and header[0].endswith(f"≈ {label}"), f"{stem} header: {header and header[0]!r}, bench {label!r}"


def test_labels_and_rewrite(tmp_path):
    assert [bench_report.runtime_label(s) for s in (12, 61, 95, 250, 400)] == ["10 s", "60 s", "1.5 min",
                                                                               "4 min", "7 min"]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_x.py").write_text("# **Runtime**: CPU ≈ 3–4 min (measured).\n")
    (tmp_path / "README.md").write_text("| [`00_x.ipynb`](n) | p | s | ≈1 min | [badge] |\n")
    bench_report.apply_runtimes({"00_x": 95}, root=tmp_path)
    assert "≈ 1.5 min (measured)" in (tmp_path / "notebooks" / "00_x.py").read_text()
    assert re.search(r"\| ≈ 1\.5 min \| \[badge\]", (tmp_path / "README.md").read_text())


def _provenance(text: str) -> str:
    """The **Provenance.** paragraph, unwrapped (markdown or a notebook's `# ` comment lines)."""
    paragraphs = re.split(r"\n\s*#?\s*\n", text)
    found = [" ".join(line.lstrip("# ").strip() for line in p.splitlines()) for p in paragraphs
             if p.lstrip("# ").startswith("**Provenance.**")]
    assert len(found) == 1, "no single **Provenance.** paragraph"
    return found[0]


def test_claims_provenance_is_told_the_same_way_everywhere():
    # claims.md's paragraph is generated from the job files; README and notebook 06 quote it, then may go on
    claims = _provenance((REPO_ROOT / "results" / "claims.md").read_text())
    assert _provenance((REPO_ROOT / "README.md").read_text()).startswith(claims)
    assert _provenance((REPO_ROOT / "notebooks" / "06_side_by_side.py").read_text()).startswith(claims)
