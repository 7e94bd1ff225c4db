"""The stability verdict allows for which interventions were drawn, and is withheld below a
minimum K (ivfusion/stability.py): real pairs, the real network at a reduced size."""
import math
import threading

import numpy as np
import pytest

from ivfusion import Fuser, lab, read_image
from ivfusion.stability import BOOTSTRAP, MIN_K, StabilityAnalysis, combined_p

pytestmark = [pytest.mark.slow]  # K forward passes

EX = lab.EXAMPLES_DIR


@pytest.fixture(scope="module")
def pair():
    import cv2

    vis, ir = (read_image(EX / d / "msrs_00037N.png") for d in ("vi", "ir"))
    return tuple(cv2.resize(a, (160, 120), interpolation=cv2.INTER_AREA) for a in (vis, ir))


@pytest.fixture(scope="module")
def fuser():
    return Fuser(device="cpu")


def test_below_the_minimum_k_there_is_data_but_no_verdict(fuser, pair):
    res = StabilityAnalysis(fuser, ("complementary",), k=MIN_K - 1, seed=3, resample=True).run(*pair)
    for corr in [res.correlation] + [lv.correlation for lv in res.levels]:
        assert math.isfinite(corr.r) and corr.runs == MIN_K - 1
        assert not corr.verdict and "too few interventions for a verdict" in corr.reading
        assert "as the paper's claim predicts" not in corr.reading and "the opposite" not in corr.reading


def test_a_cancelled_run_below_the_minimum_reports_data_without_a_verdict(fuser, pair):
    stop = threading.Event()

    def progress(done, total):
        if done == 3:
            stop.set()  # Cancel, pressed after the third intervention

    res = StabilityAnalysis(fuser, ("random",), k=16, seed=1, batch_pixels=1, resample=True).run(*pair, progress=progress,
                                                                                 cancel=stop)
    assert res.cancelled and res.done == 3
    assert np.isfinite(res.instability).any() and math.isfinite(res.correlation.r)  # the data are shown
    assert not res.correlation.verdict and "too few interventions for a verdict" in res.correlation.reading


def test_r_against_k_and_a_p_value_that_allows_for_the_runs_drawn(fuser, pair):
    res = StabilityAnalysis(fuser, ("complementary",), k=MIN_K, seed=5, resample=True).run(*pair)
    c = res.correlation
    assert [k for k, _ in c.r_by_k] == [1, 2, 4, MIN_K] and c.r_by_k[-1][1] == pytest.approx(c.r, abs=1e-5)
    assert c.runs == MIN_K and math.isfinite(c.p_runs)
    # resampling the runs adds variance: the combined p is never smaller than the spatial test's
    # own (computed in the same Fisher-z form, for a like-for-like comparison)
    assert c.p_runs >= combined_p(c.r, c.n_eff, np.full(BOOTSTRAP, c.r)) - 1e-12
    assert c.verdict == (c.p_runs < 0.05)


def test_combined_p_grows_with_the_spread_over_resampled_runs():
    rng = np.random.default_rng(0)
    narrow = -0.2 + 0.01 * rng.standard_normal(BOOTSTRAP)
    wide = -0.2 + 0.3 * rng.standard_normal(BOOTSTRAP)
    assert combined_p(-0.2, 400, narrow) < 0.05 < combined_p(-0.2, 400, wide)
