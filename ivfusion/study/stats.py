"""The study across pairs: the paired contrast with the null, bootstrap intervals, and
Benjamini-Hochberg control.

The primary statistic (`contrast`) compares each trained set of weights with the untrained
null on the same pairs under the same interventions: per pair, d = r(trained) - r(null); per
dataset, intervention, measure and level, the mean d with a bootstrap 95% interval over pairs
and the p-value of a sign-flip test (under "no relation beyond the null" the trained and the
null model are exchangeable within a pair, so d is as likely to be -d). A contrast family is one
dataset, one trained set of weights and one family of measures (`FAMILIES`: the clean-gate
measures, or the intervened gate); its tests are its interventions x measures x levels, and go
through the Benjamini-Hochberg step-up procedure at level q. The claim predicts d < 0: the gate
is more open where the change is smaller, more so than in a network that learnt nothing.

Per weights (`decide`, `summarise`) the study also reports the mean r itself, and the shares of
pairs whose own test is significant: there a family is one dataset, weights, intervention and
measure, its tests its pairs x levels. A test whose r is undefined (a constant map) is not
rejected and is counted apart.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from ..levels import GATE_LEVELS
from .measure import G_BAR, MEASURES

FAMILY = ("dataset", "weights", "intervention", "measure")
ROW = FAMILY + ("level",)
FAMILIES = {"output": "clean gate", "features": "clean gate", "intervened": "intervened gate"}
NULL = "untrained"  # the label of the null model's weights


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


def sign_flip_p(d: Sequence[float], *, n_perm: int = 9_999, seed: int = 0) -> float:
    """Two-sided p-value of the sign-flip test that the paired differences `d` are symmetric
    about 0 (so their mean is 0): the share of `n_perm` random sign patterns (from `seed`) whose
    |mean| is at least the observed one, counting the observed pattern, so that p is never below
    1 / (n_perm + 1) and the test keeps its level for any n_perm. NaN with fewer than two values."""
    d = np.asarray([x for x in d if x is not None and math.isfinite(x)], np.float64)
    if d.size < 2:
        return math.nan
    observed = abs(d.mean())
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(n_perm, d.size))
    flipped = np.abs(signs @ d) / d.size
    return float((1 + np.count_nonzero(flipped >= observed * (1 - 1e-12))) / (n_perm + 1))


def contrast(tests: Iterable[dict], *, null: str = NULL, q: float = 0.05, n_boot: int = 10_000,
             n_perm: int = 9_999, seed: int = 0) -> list[dict]:
    """The paired contrast of every other set of weights with `null`, one row per dataset,
    weights, intervention, measure and level (see the module docstring): the pairs with r
    defined under both, the mean d = r - r_null with its bootstrap 95% interval, the mean r of
    each, the sign-flip p-value, and the verdict after Benjamini-Hochberg control over the
    contrast family: "claim" (d < 0), "opposite" (d > 0), "none" or "undefined" (no p).
    Empty when `null` is not among the weights."""
    by_key: dict[tuple, dict[str, float]] = defaultdict(dict)
    weights = set()
    for t in tests:
        weights.add(t["weights"])
        if t["r"] is not None and math.isfinite(t["r"]):
            by_key[tuple(t[k] for k in ROW)][t["pair"]] = t["r"]
    if null not in weights:
        return []
    rows = []
    for key, trained in by_key.items():
        if key[1] == null:
            continue
        base = by_key.get((key[0], null, *key[2:]), {})
        pairs = sorted(set(trained) & set(base))
        d = [trained[p] - base[p] for p in pairs]
        mean, lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(ROW, key)), "null": null, "pairs": len(pairs), "mean_d": mean, "ci_low": lo,
                     "ci_high": hi, "mean_r": float(np.mean([trained[p] for p in pairs])) if pairs else math.nan,
                     "mean_r_null": float(np.mean([base[p] for p in pairs])) if pairs else math.nan,
                     "p": sign_flip_p(d, n_perm=n_perm, seed=seed)})
    families: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        families[(r["dataset"], r["weights"], FAMILIES[r["measure"]])].append(r)
    for members in families.values():
        for r, rej in zip(members, benjamini_hochberg([r["p"] for r in members], q)):
            r["family"] = FAMILIES[r["measure"]]
            r["verdict"] = ("undefined" if not math.isfinite(r["p"]) else "none" if not rej
                            else "claim" if r["mean_d"] < 0 else "opposite")
    return sorted(rows, key=_row_order)


def _row_order(r: dict) -> tuple:
    level_order = {lv.key: i for i, lv in enumerate(GATE_LEVELS)} | {G_BAR: len(GATE_LEVELS)}
    return (r["dataset"], r["weights"], r["intervention"], MEASURES.index(r["measure"]) if r["measure"] in MEASURES
            else 9, level_order.get(r["level"], 9))


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
    rows = []
    for key in sorted(groups, key=lambda k: _row_order(dict(zip(ROW, k)))):
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
