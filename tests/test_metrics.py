"""ivfusion.metrics: reference values (METRICS.md conventions) and properties."""

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivfusion import metrics as M

REL_TOL = 1e-6

# The reference file is read at collection time for parametrisation; it is located the same
# way as the shared_dir fixture, which fails the tests with a clear message if it is absent.
_REF_CASES = list(range(9))


@pytest.fixture(scope="module")
def reference(shared_dir):
    path = shared_dir / "data" / "metrics-reference.json"
    assert path.is_file(), f"metrics reference missing: {path}"
    with open(path) as fh:
        ref = json.load(fh)
    assert len(ref["cases"]) == len(_REF_CASES), "update _REF_CASES to the reference file"
    return ref


_cache = {}


def _case_values(shared_dir: Path, case: dict) -> dict:
    key = (case["ir"], case["vi"], case["fused"])
    if key not in _cache:
        data = shared_dir / "data"
        a = M.read_grey(data / case["ir"])
        b = M.read_grey(data / case["vi"])
        assert list(a.shape) == case["shape"]
        fused = {
            "mean": lambda: np.round((a + b) / 2),  # numpy round-half-to-even, as the json says
            "max": lambda: np.maximum(a, b),
            "visible": lambda: b.copy(),
        }[case["fused"]]()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning spam, e.g. SCD of F = VI
            _cache[key] = M.evaluate_pair(a, b, fused)
    return _cache[key]


@pytest.mark.parametrize("metric", M.METRIC_NAMES)
@pytest.mark.parametrize("case_index", _REF_CASES)
def test_reference_value(shared_dir, reference, case_index, metric):
    case = reference["cases"][case_index]
    expected = case["metrics"][metric]
    got = _case_values(shared_dir, case)[metric]
    assert isinstance(got, float)
    if expected is None:
        assert math.isnan(got), f"{metric} should be NaN (undefined) for {case}"
    else:
        assert got == pytest.approx(expected, rel=REL_TOL), (case["ir"], case["fused"], metric)


def test_names():
    assert M.METRIC_NAMES == ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM",
                              "PSNR", "CC")


def test_directions_rank_a_blurred_fusion_worse(shared_dir):
    """HIGHER_IS_BETTER is what the tables bold by; check it against behaviour: blurring a
    fused image loses detail and fidelity to the sources, and every metric but EN (a
    histogram measure, which smoothing can raise) must rank the blurred image worse."""
    data = shared_dir / "data" / "roadscene" / "test"
    for stem in ("FLIR_00211", "FLIR_04269"):
        a, b = M.read_grey(data / "ir" / f"{stem}.jpg"), M.read_grey(data / "vi" / f"{stem}.jpg")
        sharp = np.round((a + b) / 2)
        blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
        s, t = M.evaluate_pair(a, b, sharp), M.evaluate_pair(a, b, blurred)
        for k in M.METRIC_NAMES:
            if k == "EN":
                continue
            sharp_better = s[k] > t[k] if M.HIGHER_IS_BETTER[k] else s[k] < t[k]
            assert sharp_better, (stem, k, s[k], t[k])


@pytest.fixture(scope="module")
def pair(shared_dir):
    data = shared_dir / "data" / "roadscene" / "test"
    a = M.read_grey(data / "ir" / "FLIR_04269.jpg")
    b = M.read_grey(data / "vi" / "FLIR_04269.jpg")
    return a, b


def test_evaluate_pair_keys_in_order(pair):
    a, b = pair
    r = M.evaluate_pair(a, b, np.maximum(a, b))
    assert tuple(r) == M.METRIC_NAMES


def test_mi_symmetric_in_sources_and_identity(pair):
    a, b = pair
    f = np.round((a + b) / 2)
    # MI sums over the two sources: swapping them changes nothing
    assert M.MI(a, b, f) == pytest.approx(M.MI(b, a, f), rel=1e-12)
    # MI(X, X) = H(X): with A = B = F, MI = 2 * EN(F)
    assert M.MI(f, f, f) == pytest.approx(2 * M.EN(f), rel=1e-12)
    # a bijective grey-level relabelling of F keeps MI (histogram based)
    assert M.MI(a, b, 255 - f) == pytest.approx(M.MI(a, b, f), rel=1e-12)


def test_source_symmetric_metrics(pair):
    a, b = pair
    f = np.maximum(a, b)
    for name in ("SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC"):
        fn = getattr(M, name)
        assert fn(a, b, f) == pytest.approx(fn(b, a, f), rel=1e-12), name


def test_identical_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 80)).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = M.evaluate_pair(x, x, x)
    assert r["PSNR"] == math.inf
    assert math.isnan(r["SCD"])  # F - B is constant (zero)
    assert r["SSIM"] == pytest.approx(2.0, rel=1e-12)
    assert r["CC"] == pytest.approx(1.0, rel=1e-12)
    assert r["VIF"] == pytest.approx(2.0, rel=1e-9)
    # same strength everywhere: G = gF (quirk), so Qabf is not 1; it is still finite in 0..1
    assert 0.0 < r["Qabf"] < 1.0


def test_psnr_convention():
    a = np.zeros((20, 20))
    b = np.zeros((20, 20))
    f = np.full((20, 20), 255.0)  # MSE on [0,1] = 1 -> 20 log10(255)
    assert M.PSNR(a, b, f) == pytest.approx(20 * math.log10(255), rel=1e-12)


def test_single_image_metrics_by_hand():
    f = np.array([[0, 0, 255, 255]] * 2, dtype=np.float64)
    assert M.EN(f) == pytest.approx(1.0)  # two equally likely levels: 1 bit
    assert M.SD(f) == pytest.approx(127.5)
    # RF = 0 (rows equal); CF = mean([0, 255^2, 0]) over 2 rows
    assert M.SF(f) == pytest.approx(math.sqrt(255.0 ** 2 / 3))
    # MATLAB gradient along x: [0, 127.5, 127.5, 0]; gy = 0; divided by (H-1)(W-1) = 3
    assert M.AG(f) == pytest.approx(2 * 2 * 127.5 / math.sqrt(2) / 3)


def test_grey_and_equal_channel_colour_agree(pair):
    a, b = pair
    f = np.maximum(a, b)
    grey = M.evaluate_pair(a, b, f)
    to3 = lambda x: np.repeat(x.astype(np.uint8)[:, :, None], 3, axis=2)
    colour = M.evaluate_pair(to3(a), to3(b), to3(f))
    colour_float = M.evaluate_pair(to3(a).astype(np.float32), to3(b), to3(f).astype(float))
    for k in M.METRIC_NAMES:
        assert colour[k] == grey[k], k
        assert colour_float[k] == grey[k], k


def test_to_grey_matches_reference_reading(shared_dir):
    path = shared_dir / "data" / "roadscene" / "test" / "vi" / "FLIR_00211.jpg"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rgb = bgr[:, :, ::-1]
    expected = M.read_grey(path)
    assert np.array_equal(M.to_grey(rgb), expected)  # uint8 RGB
    assert np.array_equal(M.to_grey(rgb.astype(np.float64)), expected)  # float RGB
    # the RGB convention matters: treating it as BGR gives a different grey image
    assert not np.array_equal(M.to_grey(bgr), expected)


def test_to_grey_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        M.to_grey(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        M.to_grey(np.full((4, 4), 1000, np.uint16))


def test_mismatched_shapes_name_both(pair):
    a, b = pair
    with pytest.raises(ValueError) as exc:
        M.evaluate_pair(a, b, np.zeros((a.shape[0], a.shape[1] - 1, 3), np.uint8))
    msg = str(exc.value)
    assert str(a.shape) in msg and str((a.shape[0], a.shape[1] - 1, 3)) in msg
    with pytest.raises(ValueError):
        M.SSIM(a, b[:-1], a)


def test_read_grey_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        M.read_grey(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError):
        M.read_grey(bad)


def test_to_grey_float_path_equals_opencv_on_random_colours():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    assert np.array_equal(M.to_grey(rgb), expected)
    assert np.array_equal(M.to_grey(rgb.astype(np.float32)), expected)


def test_pearson_is_matlab_corr2_and_nan_when_constant():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 30))
    y = 0.5 * x + rng.normal(size=(40, 30))
    assert M.pearson(x, y) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], rel=1e-12)
    assert M.pearson(x, -3 * x + 7) == pytest.approx(-1.0, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(M.pearson(x, np.full_like(x, 4.0)))
    with pytest.raises(ValueError, match="one shape"):
        M.pearson(x, y[:-1])


def _all_metrics_quietly(a, b, f):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither an exception nor a RuntimeWarning
        return M.evaluate_pair(a, b, f)


def test_black_images_give_the_documented_values():
    z = np.zeros((48, 64))
    r = _all_metrics_quietly(z, z, z)
    # no information, contrast or detail; F shares nothing beyond a constant
    for k in ("EN", "SD", "SF", "AG", "MI"):
        assert r[k] == 0.0 and math.copysign(1.0, r[k]) == 1.0, k
    assert r["PSNR"] == math.inf  # F equals both sources
    assert r["SSIM"] == pytest.approx(2.0, rel=1e-12)  # equal constants: 1 per source
    for k in ("SCD", "VIF", "Qabf", "CC"):  # 0/0: undefined, as MATLAB gives
        assert math.isnan(r[k]), k


def test_one_constant_image_among_real_ones(pair):
    a, b = pair
    flat = np.full_like(a, 128.0)
    r = _all_metrics_quietly(flat, b, b)  # constant infrared source
    assert math.isnan(r["VIF"]) and math.isnan(r["SCD"])
    assert math.isfinite(r["Qabf"]) and math.isfinite(r["MI"])
    r = _all_metrics_quietly(a, b, flat)  # constant fused image: nothing passed on
    assert r["VIF"] == 0.0 and r["SD"] == 0.0 and r["EN"] == 0.0
    assert math.isnan(r["CC"])


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 5), (10, 40), (32, 32)])
def test_tiny_images_give_defined_values(pair, shape):
    a, b = pair
    h, w = shape
    a, b = a[100:100 + h, 100:100 + w], b[100:100 + h, 100:100 + w]
    r = _all_metrics_quietly(a, b, np.maximum(a, b))
    assert list(r) == list(M.METRIC_NAMES)
    assert math.isnan(r["VIF"])  # windows of the four scales need 33 x 33
    assert math.isnan(r["SSIM"]) == (min(shape) < 11)
    assert math.isnan(r["SF"]) == (min(shape) < 2) and math.isnan(r["AG"]) == (min(shape) < 2)
    assert math.isfinite(r["EN"]) and math.isfinite(r["SD"]) and math.isfinite(r["MI"])


def test_empty_image_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        M.evaluate_pair(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)))


# ---- one path from a fused image to the metrics (metrics.fused_grey) -------------------------
@pytest.mark.parametrize("folder, stem", [("roadscene/test", "FLIR_00211"),
                                          pytest.param("msrs/train", "00003N", marks=pytest.mark.slow)])
def test_a_fused_luminance_its_8_bit_image_and_its_file_score_the_same_grey(shared_dir, untrained, tmp_path,
                                                                            folder, stem):
    """Validation and the tools score the network's float output, `ivfusion evaluate` the written
    file: both must give the grey that OpenCV reads from that file (the reference's way)."""
    from ivfusion import io
    from ivfusion.data import find_pairs, load_scored_pair
    from ivfusion.predictor import Fuser

    (_, ir_path, vi_path), = [p for p in find_pairs(shared_dir / "data" / folder) if p[0] == stem]
    pair = load_scored_pair(ir_path, vi_path)
    res = Fuser(untrained, device="cpu", max_side=None).fuse(pair.visible, io.read_image(ir_path))
    written = tmp_path / "fused.png"
    io.write_png(written, res.fused_rgb)
    expected = cv2.cvtColor(cv2.imread(str(written), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY).astype(np.float64)
    for fused in (written, res.fused_rgb, res.fused_y):
        np.testing.assert_array_equal(M.fused_grey(fused, pair.visible), expected)
    # rounding the luminance alone (the old validation path) is another image, so this test tells them apart
    assert (np.rint(res.fused_y * 255.0) != expected).any()
    for got, path in ((pair.visible_grey, vi_path), (pair.infrared_grey, ir_path)):
        np.testing.assert_array_equal(got, cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR),
                                                        cv2.COLOR_BGR2GRAY).astype(np.float64))


def test_a_fused_luminance_without_a_visible_image_is_a_grey_image():
    y = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 1.2]], np.float32)
    np.testing.assert_array_equal(M.fused_grey(y), [[0, 64, 128], [191, 255, 255]])  # round(255 y), clipped
    with pytest.raises(ValueError, match=r"\(H, W\) luminance"):
        M.fused_grey(np.zeros((4, 4, 3), np.float32))
