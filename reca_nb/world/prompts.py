"""RecA prompt templates: the text that accompanies the understanding embedding (paper Sec. 3, practice 2).

The official repo samples one of ~360 "describe the image" requests per sample. Ours are written for this
project (data/prompts/reca_templates.txt, one per line, '#' starts a comment) and span terse labels, casual
asks, polite requests and long attribute lists. `single` mode returns the one prompt used in ablations.
"""
from __future__ import annotations

import random
from functools import lru_cache

from reca_nb.paths import DATA_DIR

TEMPLATE_FILE = DATA_DIR / "prompts" / "reca_templates.txt"
SINGLE_PROMPT = "Describe the image."


@lru_cache(maxsize=1)
def _all_templates() -> tuple:
    lines = TEMPLATE_FILE.read_text().splitlines()
    out, seen = [], set()
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and line not in seen:
            seen.add(line)
            out.append(line)
    return tuple(out)


def load_templates(mode: str = "diverse", n: int | None = None, seed: int = 0) -> tuple:
    """'diverse': every shipped template (>=360 unique); 'single': just SINGLE_PROMPT.

    n: keep a fixed random subset of n templates (drawn without replacement with random.Random(seed), kept
    in file order), for ablations on the number of templates; None (default) keeps them all."""
    if mode == "diverse":
        pool = _all_templates()
    elif mode == "single":
        pool = (SINGLE_PROMPT,)
    else:
        raise ValueError(f"prompt mode must be 'diverse' or 'single', got {mode!r}")
    if n is None:
        return pool
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(pool):
        raise ValueError(f"n must be an int in 1..{len(pool)} for mode {mode!r}, got {n!r}")
    keep = sorted(random.Random(seed).sample(range(len(pool)), n))
    return tuple(pool[i] for i in keep)


def sample_templates(n: int, mode: str = "diverse", rng: random.Random | None = None) -> list:
    """n templates drawn uniformly with replacement (one per sample, as in the official data loaders)."""
    pool = load_templates(mode)
    rng = rng or random
    return [pool[rng.randrange(len(pool))] for _ in range(n)]
