"""CollapseMonitor on synthetic 400-step RecA loss curves: a copy path (same tokens in and out, the loss falls
towards 0) is flagged, a bottlenecked run (the loss settles on a floor) is not."""
import math

import pytest

from reca_nb.collapse import CollapseMonitor


def copying(step):  # same tokens in and out: ~1.0 at step 25, halves every ~50 steps, -> 0.02 by 400
    return 2.0 * math.exp(-step / 36) + 0.005


def healthy(step):  # bottlenecked: falls from ~2 to a floor near 0.27
    return 1.7 * math.exp(-step / 40) + 0.27


def run(curve, steps=400, **kw):
    m = CollapseMonitor(**kw)
    fired = [m.update(curve(s), step=s) for s in range(steps)]
    return m, fired


def test_copy_curve_is_flagged_with_self_reference():
    m, fired = run(copying)
    assert m.collapsed and any(fired) and fired[-1]
    assert 25 < m.collapse_step < 400 and m.collapse_ratio < 0.05
    assert "reference" in m.reason or "below" in m.reason


def test_healthy_curve_is_not_flagged():
    m, fired = run(healthy)
    assert not any(fired) and not m.collapsed
    assert 0.1 < m.collapse_ratio < 0.5  # it did fall a lot, just not to zero


def test_external_reference_of_a_bottlenecked_run():
    # the paper-style signal: the loss of a bottlenecked run at the same step; 1/5 threshold by default
    m, _ = run(copying, reference=[healthy(s) for s in range(400)], floor=0.0)
    assert m.threshold == 0.2 and m.collapsed and m.collapse_ratio < 0.2
    m, _ = run(lambda s: 0.5 * healthy(s), reference=healthy, floor=0.0)  # blur-like: 2x lower, not a copy
    assert not m.collapsed and m.collapse_ratio == pytest.approx(0.5, rel=0.05)
    m, _ = run(healthy, reference=0.27, floor=0.0)  # a float reference works too
    assert not m.collapsed


def test_floor_catches_a_loss_going_to_zero():
    m, _ = run(lambda s: 0.01, warmup=5)  # flat from the start: the ratio stays 1, only the floor fires
    assert m.collapsed and "below" in m.reason
    m, _ = run(lambda s: 0.01, warmup=5, floor=0.0)
    assert not m.collapsed


def test_token_agreement_fires():
    m = CollapseMonitor()
    assert not m.update(1.0, 0, token_agreement=0.90)
    assert m.update(1.0, 1, token_agreement=0.97) and "tokens" in m.reason


def test_nan_is_ignored_and_state_round_trips():
    m, _ = run(healthy, steps=50)
    ema = m.ema
    assert not m.update(float("nan")) and m.ema == ema
    m2 = CollapseMonitor()
    m2.load_state_dict(m.state_dict())
    steps = range(50, 60)
    assert [m2.update(healthy(s), s) for s in steps] == [m.update(healthy(s), s) for s in steps]
    assert m2.ema == m.ema
