"""The study across pairs: bootstrap intervals of the mean r, and Benjamini-Hochberg control.

A *family* is one dataset, one set of weights, one intervention type and one measure; its tests
are its pairs x the three gate levels. Within a family the p-values go through the
Benjamini-Hochberg step-up procedure at level q (false discovery rate q), and each rejected test
counts for the claim's direction (r < 0: the gate is more open where the change is smaller) or
for the opposite one (r > 0). A test whose r is undefined (a constant map) is not rejected and
is counted apart.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from ..levels import GATE_LEVELS
from .measure import MEASURES

FAMILY = ("dataset", "weights", "intervention", "measure")
ROW = FAMILY + ("level",)


def benjamini_hochberg(p: Sequence[float], q: float = 0.05) -> np.ndarray:
    """Which p-values the Benjamini-Hochberg step-up procedure rejects at level q: a bool
    array. NaN p-values are never rejected and do not count among the tests."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    p = np.asarray(p, np.float64)
    defined = np.flatnonzero(np.isfinite(p))
    rejected = np.zeros(p.shape, bool)
    m = defined.size
    if m == 0:
        return rejected
    order = defined[np.argsort(p[defined], kind="stable")]
    passes = p[order] <= q * np.arange(1, m + 1) / m
    if passes.any():
        rejected[order[: int(np.flatnonzero(passes)[-1]) + 1]] = True
    return rejected


def bootstrap_mean_ci(values: Sequence[float], *, n_boot: int = 10_000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its percentile bootstrap interval
    over them (resampled with replacement, `n_boot` times, from `seed`). NaNs with fewer than
    two values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size < 2:
        return (float(v.mean()) if v.size else math.nan), math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(v.mean()), float(lo), float(hi)


def decide(tests: list[dict], q: float = 0.05) -> list[dict]:
    """The tests with a "verdict" added, family by family: "claim" (rejected, r < 0), "opposite"
    (rejected, r > 0), "none" (not rejected) or "undefined" (no r)."""
    families: dict[tuple, list[dict]] = defaultdict(list)
    for t in tests:
        families[tuple(t[k] for k in FAMILY)].append(t)
    out = []
    for members in families.values():
        p = [math.nan if t["p"] is None else t["p"] for t in members]
        for t, rej in zip(members, benjamini_hochberg(p, q)):
            verdict = "undefined" if t["r"] is None else "none" if not rej else "claim" if t["r"] < 0 else "opposite"
            out.append({**t, "verdict": verdict})
    return out


def summarise(decided: Iterable[dict], *, n_boot: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per dataset, weights, intervention, measure and level: the pairs, the mean r and
    its bootstrap 95% interval over pairs, the median r, and the shares of pairs whose test
    went for the claim or the opposite after control (`decide`)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in decided:
        groups[tuple(t[k] for k in ROW)].append(t)
    level_order = {lv.key: i for i, lv in enumerate(GATE_LEVELS)}
    measure_order = {m: i for i, m in enumerate(MEASURES)}
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], measure_order.get(k[3], 9), level_order.get(k[4], 9))):
        members = groups[key]
        rs = [t["r"] for t in members]
        mean, lo, hi = bootstrap_mean_ci(rs, n_boot=n_boot, seed=seed)
        n = len(members)
        count = lambda v: sum(t["verdict"] == v for t in members)  # noqa: E731
        finite = [r for r in rs if r is not None]
        rows.append({**dict(zip(ROW, key)), "pairs": n, "mean_r": mean, "ci_low": lo, "ci_high": hi,
                     "median_r": float(np.median(finite)) if finite else math.nan,
                     "claim_share": count("claim") / n, "opposite_share": count("opposite") / n,
                     "undefined": count("undefined")})
    return rows
