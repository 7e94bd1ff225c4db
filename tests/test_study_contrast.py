"""The study's primary statistic, the paired contrast with the untrained null (`stats.contrast`),
on seeded simulations: it holds its level on maps with no relation beyond the null, and finds a
planted one.

The simulated pair has a layout L (image structure, which both networks' gates and changes
follow) and an intervention component M (the same masks for both networks). Each network w has
change_w = L + M + E_w and gate_w = L / 2 + U_w, with E_w and U_w its own smooth noise: every
gate then correlates with its change (r near +0.3), as the untrained network's does on real
pairs, so r against 0 would "find" a relation in every cell. A planted relation adds -E_t to
the trained gate: more open where the trained network's own change is smaller, beyond the
layout. Tolerances are binomial quantiles at 0.001: each assertion fails with probability at
most 0.001 when the true rate is exactly at its bound.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import binom

from ivfusion.study.stats import contrast, sign_flip_p

SIDE, PAIRS, Q = 16, 30, 0.05
CELLS = [(m, lv) for m in ("output", "features") for lv in ("coarse", "mid", "fine")] * 2  # 12: one family
INTERVENTIONS = ["complementary"] * 6 + ["random"] * 6


def _fields(rng, *shape):
    """Smooth random maps (SIDE x SIDE) of the given leading shape, each standardised."""
    x = gaussian_filter(rng.standard_normal((*shape, SIDE, SIDE)), sigma=(0,) * len(shape) + (1.5, 1.5), mode="wrap")
    x -= x.mean((-2, -1), keepdims=True)
    return x / x.std((-2, -1), keepdims=True)


def _r(a, b):
    """Pearson r of each pair of maps (over the last two axes)."""
    a = a - a.mean((-2, -1), keepdims=True)
    b = b - b.mean((-2, -1), keepdims=True)
    return (a * b).sum((-2, -1)) / np.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1)))


def _family(rng, planted: list[bool]) -> list[dict]:
    """Study test rows for one dataset, a 'trained' and the 'untrained' weights, PAIRS pairs and
    the 12 cells of one contrast family; `planted` says which cells carry the relation."""
    layout, masks, change_t, gate_t, change_n, gate_n = _fields(rng, 6, len(CELLS), PAIRS)
    plant = np.asarray(planted, np.float64)[:, None, None, None]
    r = {"trained": _r(layout / 2 + gate_t - plant * change_t, layout + masks + change_t),
         "untrained": _r(layout / 2 + gate_n, layout + masks + change_n)}
    return [{"dataset": "sim", "weights": w, "pair": f"p{i:02d}", "intervention": intervention, "measure": measure,
             "level": level, "r": float(r[w][c, i])}
            for c, ((measure, level), intervention) in enumerate(zip(CELLS, INTERVENTIONS))
            for w in r for i in range(PAIRS)]


def test_sign_flip_p_matches_the_exact_enumeration_and_never_goes_below_its_floor():
    # six positive differences: of the 2^6 sign patterns, 2 reach |mean| = 1, so p = 2/64
    p = sign_flip_p([1.0] * 6, n_perm=9_999, seed=1)
    assert abs(p - 2 / 64) < 4 * np.sqrt(2 / 64 * (1 - 2 / 64) / 9_999)
    assert sign_flip_p([5.0, 4.0, 6.0] * 20, n_perm=99) == pytest.approx(1 / 100)
    assert sign_flip_p([0.3, -0.3], n_perm=999) == 1.0
    assert np.isnan(sign_flip_p([0.2])) and np.isnan(sign_flip_p([0.2, None, float("nan")]))


def test_contrast_pairs_by_pair_and_leaves_out_pairs_the_null_lacks():
    r = {("trained", "a"): 0.10, ("trained", "b"): 0.20, ("trained", "c"): 0.30, ("trained", "d"): -0.5,
         ("untrained", "a"): 0.00, ("untrained", "b"): 0.25, ("untrained", "c"): 0.10, ("untrained", "d"): None}
    tests = [{"dataset": "s", "weights": w, "pair": p, "intervention": "random", "measure": "output", "level": "mid",
              "r": v} for (w, p), v in r.items()]
    [row] = contrast(tests, n_boot=500)
    assert row["weights"] == "trained" and row["null"] == "untrained" and row["pairs"] == 3
    assert row["mean_d"] == pytest.approx((0.10 + -0.05 + 0.20) / 3)
    assert row["mean_r"] == pytest.approx(0.2) and row["mean_r_null"] == pytest.approx(0.35 / 3)
    assert row["ci_low"] <= row["mean_d"] <= row["ci_high"] and row["family"] == "clean gate"
    assert contrast([t for t in tests if t["weights"] == "trained"]) == []  # no null: no contrast


@pytest.mark.slow  # a seeded simulation, about 7 CPU-seconds
def test_unrelated_maps_are_rejected_at_no_more_than_the_nominal_rate():
    rng = np.random.default_rng(20261207)
    reps = 300
    cells = families_rejecting = 0
    biased = []
    for rep in range(reps):
        rows = contrast(_family(rng, [False] * len(CELLS)), q=Q, n_boot=100, n_perm=999, seed=rep)
        assert len(rows) == len(CELLS) and all(r["pairs"] == PAIRS for r in rows)
        cells += sum(r["p"] <= Q for r in rows)
        families_rejecting += any(r["verdict"] in ("claim", "opposite") for r in rows)
        if rep < 10:  # the bias the null removes is there: r alone is far from 0
            biased += [r["mean_r"] for r in rows]
    n_cells = reps * len(CELLS)
    assert cells <= binom.ppf(0.999, n_cells, Q), cells / n_cells  # each test: its nominal level
    assert families_rejecting <= binom.ppf(0.999, reps, Q), families_rejecting / reps  # BH, all nulls true
    assert min(biased) > 0.1, min(biased)


def test_a_planted_relation_beyond_the_null_is_found_in_the_claims_direction():
    rng = np.random.default_rng(7)
    reps = 100
    planted = [i % 2 == 0 for i in range(len(CELLS))]
    found = opposite = 0
    for rep in range(reps):
        rows = contrast(_family(rng, planted), q=Q, n_boot=500, n_perm=999, seed=rep)
        by_cell = {(r["intervention"], r["measure"], r["level"]): r for r in rows}
        for ((measure, level), intervention, plant) in zip(CELLS, INTERVENTIONS, planted):
            r = by_cell[(intervention, measure, level)]
            if plant:
                found += r["verdict"] == "claim" and r["ci_high"] < 0
            opposite += r["verdict"] == "opposite"
    n_planted = reps * sum(planted)
    # power of at least 80%, the conventional target
    assert found >= binom.ppf(0.001, n_planted, 0.8), found / n_planted
    # no planted cell comes out the wrong way, and the unplanted ones stay within their level
    assert opposite <= binom.ppf(0.999, reps * (len(CELLS) - sum(planted)), Q), opposite

