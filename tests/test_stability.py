"""StabilityAnalysis on real pairs: visibility normalisation, the feature view, seeds,
cancellation, and the p-value's behaviour on real images."""
import threading

import cv2
import numpy as np
import pytest

from ivfusion import Fuser
from ivfusion.data import find_pairs, load_pair
from ivfusion.levels import GATE_LEVELS
from ivfusion.metrics import pearson
from ivfusion.stability import StabilityAnalysis, effective_n, modified_t_test


@pytest.fixture(scope="module")
def fuser(untrained):
    return Fuser(untrained, device="cpu", max_side=160)


@pytest.fixture(scope="module")
def pair(pairs):
    _, vis, ir = pairs[0]
    return vis, ir


def test_instability_is_normalised_over_the_runs_where_a_pixel_was_visible(fuser, pair):
    """Runs 1 and 3 drop the infrared image, so no pixel is visible in them: the map must be
    the RMS change over the two random runs alone, each pixel over the runs it was kept in."""
    res = StabilityAnalysis(fuser, ("random", "drop-infrared"), k=4, seed=7, features=False).run(*pair)
    assert res.runs == ["random", "drop-infrared", "random", "drop-infrared"] and res.done == 4
    clean = fuser.clean.fused_y.astype(np.float64)
    sq, count = np.zeros_like(clean), np.zeros_like(clean)
    for i in (0, 2):  # recomputed with single intervene calls, not the batched path under test
        r = fuser.intervene("random", seed=[7, i])
        kept = (r.masks[0] == 1) & (r.masks[1] == 1)
        sq += kept * (r.fused_y - clean) ** 2
        count += kept
    np.testing.assert_array_equal(res.visible_count, count)
    assert res.visible_count.max() == 2 and (res.visible_count < 2).any()
    expected = np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)
    np.testing.assert_allclose(res.instability, expected, atol=1e-5, equal_nan=True)
    # counting the dropped runs (all pixels hidden) would give a different map
    dropped = fuser.intervene("drop-infrared").fused_y
    seen = count > 0
    assert not np.allclose(np.sqrt((sq + 2 * (dropped - clean) ** 2) / (count + 2))[seen], expected[seen])


def test_pixels_never_visible_are_nan_and_left_out(fuser, pair):
    h, w = fuser.set_pair(*pair).fused_y.shape
    keep = np.ones((h, w), np.float32)
    keep[10:42, 20:60] = 0  # hidden in every run
    res = StabilityAnalysis(fuser, ("complementary",), k=2, seed=1, masks=(keep, None)).run()
    assert np.isnan(res.instability[10:42, 20:60]).all() and (res.visible_count[10:42, 20:60] == 0).all()
    finite = np.isfinite(res.instability)
    assert res.correlation.n_pixels == finite.sum() < h * w
    assert res.correlation.r == pytest.approx(pearson(res.instability[finite], res.gate[finite]))
    for lv in res.levels:  # a level pixel counts only if its whole footprint was visible
        s = round(1 / lv.level.scale)
        assert np.isnan(lv.change[10 // s + 1:42 // s, 20 // s + 1:60 // s]).all()
        assert lv.change.shape == lv.gate.shape == fuser.clean.gates[lv.level.index].shape
        assert np.nanmin(lv.change) >= 0 and np.isfinite(lv.change).any()
    assert [lv.level for lv in res.levels] == list(GATE_LEVELS)


def test_a_seed_fixes_every_mask(fuser, pair):
    a = StabilityAnalysis(fuser, k=3, seed=5, features=False, p_values=False).run(*pair)
    b = StabilityAnalysis(fuser, k=3, seed=5, features=False, p_values=False).run(*pair)
    c = StabilityAnalysis(fuser, k=3, seed=6, features=False, p_values=False).run(*pair)
    np.testing.assert_array_equal(a.instability, b.instability)
    assert not np.array_equal(a.visible_count, c.visible_count)


def test_progress_and_cancellation(fuser, pair):
    stop, seen = threading.Event(), []

    def progress(done, k):
        seen.append((done, k))
        if done == 2:
            stop.set()

    res = StabilityAnalysis(fuser, k=6, seed=2, batch_pixels=1).run(*pair, progress=progress, cancel=stop)
    assert seen == [(1, 6), (2, 6)]
    assert res.cancelled and res.done == 2 and len(res.runs) == 2 and res.k == 6
    assert any("Cancelled after 2 of 6" in n for n in res.notices)
    assert np.isfinite(res.instability).any() and res.visible_count.max() <= 2
    none = StabilityAnalysis(fuser, k=4).run(*pair, cancel=lambda: True)
    assert none.cancelled and none.done == 0 and np.isnan(none.instability).all()
    assert np.isnan(none.correlation.r) and none.correlation.reading.startswith("Undefined")
    with pytest.raises(TypeError, match="threading.Event or a callable"):
        StabilityAnalysis(fuser, k=2).run(*pair, cancel="stop")


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be a whole number from 1 to 256"),
    ({"k": 8.9}, "k must be a whole number"),
    ({"interventions": ["blur"]}, "unknown intervention 'blur'"),
    ({"interventions": []}, "at least one intervention"),
])
def test_bad_settings_are_named(fuser, kwargs, message):
    with pytest.raises(ValueError, match=message):
        StabilityAnalysis(fuser, **kwargs)


def _grey_maps(shared_dir, n):
    """Real images as (120, 160) maps: infrared and visible Y of n MSRS and n RoadScene pairs."""
    out = []
    for folder in ("msrs/train", "roadscene/train"):
        for _, ir_path, vi_path in find_pairs(shared_dir / "data" / folder)[:n]:
            vis, ir = load_pair(ir_path, vi_path)
            out.append([cv2.resize(a, (160, 120), interpolation=cv2.INTER_AREA).astype(np.float64) for a in (ir, vis)])
    return out


def _effective_n_by_lags(x: np.ndarray, y: np.ndarray) -> float:
    """Dutilleul's effective n summed lag by lag (slow; small maps only)."""
    v = np.isfinite(x) & np.isfinite(y)
    xc, yc = np.where(v, x - x[v].mean(), 0.0), np.where(v, y - y[v].mean(), 0.0)
    h, w = x.shape
    total = 0.0
    for dy in range(-h + 1, h):
        for dx in range(-w + 1, w):
            a = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
            b = (slice(max(0, -dy), h + min(0, -dy)), slice(max(0, -dx), w + min(0, -dx)))
            pairs = (v[a] & v[b]).sum()
            if pairs:
                total += (xc[a] * xc[b]).sum() * (yc[a] * yc[b]).sum() / pairs
    return 1 + 1 / (total / ((xc * xc).sum() * (yc * yc).sum()))


def test_effective_n_counts_independent_pixels():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 10)), rng.normal(size=(12, 10))
    x[3:5, 2:7] = np.nan  # left out of every lag, in either map
    assert effective_n(x, y) == pytest.approx(min(np.isfinite(x).sum(), _effective_n_by_lags(x, y)), rel=1e-9)
    white = [rng.normal(size=(60, 80)) for _ in range(2)]
    assert 0.8 * white[0].size <= effective_n(*white) <= white[0].size
    smooth = [cv2.GaussianBlur(a, (0, 0), 4) for a in white]  # neighbours alike: far fewer independent pixels
    assert effective_n(*smooth) < 0.1 * white[0].size


def test_p_value_sanity_on_real_images(shared_dir):
    maps = _grey_maps(shared_dir, 6)
    # unrelated scenes (one rotated by 180 degrees, so no shared layout): a test that ignores
    # spatial autocorrelation rejects independence for most pairings, the modified t-test far less
    naive, modified = 0, 0
    rng = np.random.default_rng(0)
    for k in range(len(maps)):
        x, y = maps[k][0], maps[(k + 7) % len(maps)][1][::-1, ::-1]
        r = pearson(x, y)
        null = [pearson(rng.permutation(x.ravel()), y.ravel()) for _ in range(99)]
        naive += (1 + sum(abs(v) >= abs(r) for v in null)) / 100 < 0.05
        p, n_eff = modified_t_test(x, y)
        assert 0 < p <= 1 and 3 <= n_eff < 0.1 * x.size
        modified += p < 0.05
    assert modified < naive
    # a real dependence is found: an image against itself plus an unrelated image
    for k in range(3):
        x = maps[k][0]
        p, _ = modified_t_test(x, x + maps[k + 3][1][::-1, ::-1])
        assert p < 0.05


def test_result_on_a_real_pair_reads_plainly(fuser, pair):
    res = StabilityAnalysis(fuser, k=2, seed=3).run(*pair)
    for corr in [res.correlation, *(lv.correlation for lv in res.levels), *(lv.output_correlation for lv in res.levels)]:
        assert np.isfinite(corr.r) and 0 < corr.p_value <= 1 and 3 <= corr.n_eff <= corr.n_pixels
        assert corr.reading.startswith(f"r = {corr.r:+.2f}") and corr.reading.count(".") >= 1
    assert res.gate.shape == res.instability.shape and 0 <= res.gate.min() and res.gate.max() <= 1
    # each level's output r is the instability against that level's own gate, upsampled
    for lv in res.levels:
        g = fuser.clean.gates_full[lv.level.index]
        valid = np.isfinite(res.instability)
        assert lv.output_correlation.r == pytest.approx(np.corrcoef(res.instability[valid], g[valid])[0, 1], abs=1e-6)
