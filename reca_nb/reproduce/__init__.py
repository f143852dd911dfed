"""Reproduce the RecA paper's claims in miniature, over seeds, and publish a claims table.

    python -m reca_nb.reproduce --preset=full                       # every claim, arch, arm, >=3 seeds
    python -m reca_nb.reproduce --preset=full --jobs=12 --device=cuda   # the same on a GPU box, 12 processes
    python -m reca_nb.reproduce --preset=ci --out=/tmp/x            # seconds: checks the table and verdicts
    python -m reca_nb.reproduce --only=claim2,claim3 --archs=showo-vq   # a subset (same files, same table)

Read it in this order:
  claims.py   what is claimed (arms, claims, the paper's values) and how it is judged (`verdict`, pure)
  plan.py     the sweep's configuration, each arm's recipes, and the jobs with their fingerprints
  run.py      one job (train from the shipped base, GenEval-mini T2I + I2T, RecA loss early vs late, frozen
              weights unchanged), the sweep in worker processes, and the CLI
  report.py   claims.csv, claims.md and figures from the finished job files; typed readers for notebooks
  premise.py  RecA's premise measured on a base (reconstruction from its own und embedding, prompt gap)
"""
from reca_nb.reproduce.claims import (ALL_ARCHS, ARMS, CLAIMS, PAPER_CATEGORY, VERDICTS, Claim, Comparison,
                                      verdict, verdict_all_true)
from reca_nb.reproduce.plan import (CI_ARCHS, CI_RECIPE, EVAL_SEED, Job, ReproduceConfig, arm_stages,
                                    canonical_arm, finished, fingerprint, plan, reca_recipe,
                                    scorer_fingerprint)
from reca_nb.reproduce.report import (CSV_COLUMNS, ClaimRow, Run, claim_rows, load_claims, load_results,
                                      make_figures, provenance, seed_values, shipped_runs, write_csv,
                                      write_markdown, write_report)
from reca_nb.reproduce.run import main, reca_losses, run_all, run_job, warm_pools

__all__ = ["ALL_ARCHS", "ARMS", "CLAIMS", "PAPER_CATEGORY", "VERDICTS", "Claim", "Comparison", "verdict",
           "verdict_all_true", "CI_ARCHS", "CI_RECIPE", "EVAL_SEED", "Job", "ReproduceConfig", "arm_stages",
           "canonical_arm", "finished", "fingerprint", "plan", "reca_recipe", "scorer_fingerprint",
           "CSV_COLUMNS", "ClaimRow", "Run", "claim_rows", "load_claims", "load_results", "make_figures",
           "provenance", "seed_values", "shipped_runs", "write_csv", "write_markdown", "write_report", "main",
           "reca_losses", "run_all", "run_job", "warm_pools"]
