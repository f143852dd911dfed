"""Copy-collapse monitor for RecA runs (practice 1, the information bottleneck).

When the understanding input carries the target itself (Show-o VQ at 512 in the paper: the same tokens in and
out) the model learns to copy and the reconstruction loss plunges to ~0 ("CE ~7.5 until 3k steps, then ~1.5
by 4k, and keeps falling"). A bottlenecked run keeps a floor: it must *generate* the details it cannot see.

The signal is the ratio of the RecA loss (an EMA) to a reference loss:
  * reference given (best): the loss of a bottlenecked run at the same step (a float, a per-step sequence or a
    callable step -> loss). Collapse when ratio < threshold, e.g. 1/5: a copying run falls an order of
    magnitude below a bottlenecked one, a blurred input stays within a factor of ~2.5.
  * no reference: the run's own EMA after `warmup` steps times `factor`. A healthy run also falls a lot from
    its start (to ~1/5), a copying one much more (to ~1/40), so the default threshold is 1/20.
  (The measurements behind these thresholds are in data/README.md, "Copy collapse: the monitor's thresholds".)
It also fires when the EMA falls below `floor` (loss -> 0; meaningful for CE losses, not for diffusion or
flow losses, whose noise term never vanishes), or when `model.token_agreement(...)` (VQ-in / VQ-out models:
fraction of understanding tokens equal to target tokens) is >= `agreement`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


class CollapseMonitor:
    def __init__(self, reference=None, threshold: float | None = None, ema: float = 0.9, warmup: int = 25,
                 factor: float = 1.0, floor: float = 0.05, agreement: float = 0.95, stop: bool = False):
        self.reference = reference
        self.threshold = threshold if threshold is not None else (0.2 if reference is not None else 0.05)
        self.beta, self.warmup, self.factor = ema, warmup, factor
        self.floor, self.agreement = floor, agreement
        self.stop = stop  # read by the training loop: end the run when collapsed
        self.ema, self.n, self.self_ref = None, 0, None
        self.collapse_ratio, self.collapsed, self.reason, self.collapse_step = None, False, "", None

    def _reference(self, step: int):
        r = self.reference
        if r is None:
            return self.self_ref
        if callable(r):
            return float(r(step))
        if isinstance(r, Sequence):
            return float(r[min(step, len(r) - 1)])
        return float(r)

    def update(self, loss: float, step: int | None = None, token_agreement: float | None = None) -> bool:
        """Feed one RecA loss; returns True once collapse has been detected (it stays detected)."""
        loss = float(loss)
        if not math.isfinite(loss):
            return self.collapsed
        step = self.n if step is None else step
        self.n += 1
        self.ema = loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * loss
        if self.reference is None and self.self_ref is None and self.n >= self.warmup:
            self.self_ref = self.ema * self.factor
        ref = self._reference(step)
        self.collapse_ratio = self.ema / ref if ref else None
        if self.collapsed:
            return True
        if self.collapse_ratio is not None and self.collapse_ratio < self.threshold:
            self.reason = f"RecA loss is {self.collapse_ratio:.3f} x the reference (< {self.threshold})"
        elif self.n >= self.warmup and self.ema < self.floor:
            self.reason = f"RecA loss EMA {self.ema:.4f} fell below {self.floor}"
        elif token_agreement is not None and token_agreement >= self.agreement:
            self.reason = f"copy shortcut: und tokens equal the target tokens ({token_agreement:.1%})"
        else:
            return False
        self.collapsed, self.collapse_step = True, step
        return True

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("ema", "n", "self_ref", "collapse_ratio", "collapsed", "reason",
                                              "collapse_step")}

    def load_state_dict(self, state: dict):
        for k, v in state.items():
            setattr(self, k, v)
