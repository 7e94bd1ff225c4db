"""The eleven image-fusion metrics, computed as the project's reference defines them.

The definitions follow ``shared/paper/METRICS.md``: the conventions of the MATLAB code
behind most published infrared/visible fusion tables (VIFB and the evaluation code used for
the SeAFusion/PIAFusion tables). ``shared/data/metrics-reference.json`` holds values computed
this way; ``tests/test_metrics.py`` reproduces every one of them to a relative error of 1e-6.

Notation used in the docstrings: A = infrared, B = visible, F = fused, each a 2-D float64
array of grey levels in 0..255. ``corr(x, y)`` is Pearson correlation over all pixels
(MATLAB ``corr2``); ``u8(x)`` is ``x`` as MATLAB's ``uint8`` makes it (rounded half away
from zero, saturated to 0..255), used for histograms only.

Colour images are first converted to grey with OpenCV's weights, rounded (:func:`to_grey`);
files are read for metrics with :func:`read_grey`, exactly as the reference values were made
(OpenCV, 3-channel BGR, ``COLOR_BGR2GRAY``).

Known differences to other evaluators (documented here, deliberately not copied):

- The widely used Python evaluator of the CDDFuse/EMMA repositories gives MI in nats
  (scikit-learn), PSNR on the 0..255 scale (~12-20 dB instead of ~60 dB), AG divided by
  H*W instead of (H-1)(W-1), and its SSIM call fails on scikit-image 0.26.
- Some MATLAB tables were computed on uint8 arrays and overflow (SD capped near 9, SF on a
  0-1 scale, VIF inflated); such numbers are not comparable with these.
- Numbers from this module are comparable with tables that follow METRICS.md, e.g. the
  ISFuse paper's (PSNR around 60-66 dB).

Use :func:`evaluate_pair` for all eleven at once; :data:`METRIC_NAMES` gives their order and
:data:`HIGHER_IS_BETTER` their direction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "METRIC_NAMES",
    "HIGHER_IS_BETTER",
    "to_grey",
    "read_grey",
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "SCD",
    "VIF",
    "Qabf",
    "SSIM",
    "PSNR",
    "CC",
    "evaluate_pair",
    "time_metrics",
]

METRIC_NAMES: Tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC",
)
"""The eleven metrics, in the order :func:`evaluate_pair` returns them."""

HIGHER_IS_BETTER: Dict[str, bool] = {name: True for name in METRIC_NAMES}
"""Direction of each metric. All eleven are read as "higher is better" in the fusion
literature: EN/SD/SF/AG measure information and detail in F alone; MI, SCD, VIF, Qabf,
SSIM, PSNR and CC measure how much of the sources F preserves (higher = closer to them)."""

# OpenCV's fixed-point 8-bit BGR2GRAY/RGB2GRAY weights (imgproc color_rgb, gray_shift = 15):
# Y = (R*9798 + G*19235 + B*3735 + 2^14) >> 15, i.e. 0.299/0.587/0.114 rounded to 15 bits.
# Checked against cv2.cvtColor on all 2^24 RGB triples (OpenCV 5.0).
_GREY_SHIFT = 15
_GREY_R, _GREY_G, _GREY_B = 9798, 19235, 3735


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------

def to_grey(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as a 2-D float64 array of grey levels (0..255) for the metrics.

    - ``(H, W)`` and ``(H, W, 1)`` arrays are taken as grey and only cast to float64
      (float grey input is *not* rounded, so a fused float image keeps its precision).
    - ``(H, W, 3)`` arrays are **RGB** (the project's convention for numpy images) and are
      converted with OpenCV's grey weights, rounded as OpenCV does:
      ``Y = floor((9798 R + 19235 G + 3735 B) / 2**15 + 0.5)``. For integer-valued input this
      equals ``cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)`` bit for bit (and hence the
      reference's ``COLOR_BGR2GRAY`` on the BGR file); float input uses the same formula.

    Values are expected on the 0..255 scale. Integer arrays with values above 255 (e.g.
    16-bit images) raise ``ValueError``: scale them to 0..255 first.
    """
    a = np.asarray(img)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer)
                                   or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"expected a numeric image array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8 and a.size and \
            (a.max() > 255 or a.min() < 0):
        raise ValueError(
            f"integer image of dtype {a.dtype} has values outside 0..255 "
            f"(min {a.min()}, max {a.max()}); scale it to 0..255 first")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return a.astype(np.float64, copy=True)
    if a.ndim == 3 and a.shape[2] == 3:
        if a.dtype == np.uint8:
            return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY).astype(np.float64)
        f = a.astype(np.float64)
        y = (_GREY_R * f[:, :, 0] + _GREY_G * f[:, :, 1] + _GREY_B * f[:, :, 2]) \
            / float(1 << _GREY_SHIFT)
        return np.floor(y + 0.5)
    raise ValueError(
        f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {a.shape}")


def read_grey(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as the metrics need it: float64 grey levels 0..255.

    Exactly as the reference values were made: OpenCV reads it as 3-channel 8-bit BGR
    (``IMREAD_COLOR``; grey files are replicated, 16-bit files reduced to 8 bits by
    OpenCV), converted with ``COLOR_BGR2GRAY``, then cast to float64. Raises
    ``FileNotFoundError`` when the file is missing and ``ValueError`` when OpenCV cannot
    decode it.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such image file: {p}")
    # imdecode on the bytes instead of imread: works for any path (non-ASCII names included)
    data = np.fromfile(str(p), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"OpenCV cannot decode image file: {p}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)


def _as_grey(x: np.ndarray) -> np.ndarray:
    """Grey float64 view used by the single metrics (accepts colour too)."""
    a = np.asarray(x)
    if a.ndim == 2 and a.dtype == np.float64:
        return a
    return to_grey(a)


def _check_same_size(**images: np.ndarray) -> None:
    shapes = {k: np.shape(v) for k, v in images.items()}
    items = list(shapes.items())
    k0, s0 = items[0]
    for k, s in items[1:]:
        if tuple(s[:2]) != tuple(s0[:2]):
            raise ValueError(
                f"image sizes differ: {k0} has shape {tuple(s0)} but {k} has shape "
                f"{tuple(s)}; all images of a pair must have the same height and width")


def _u8(x: np.ndarray) -> np.ndarray:
    """MATLAB uint8(x): round half away from zero, saturate to 0..255."""
    if x.dtype == np.uint8:
        return x
    # floor(x + 0.5) equals half-away-from-zero rounding wherever the result is kept (x >= 0)
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram given as counts."""
    c = counts[counts > 0].astype(np.float64)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def _corr2(x: np.ndarray, y: np.ndarray) -> float:
    """MATLAB corr2: Pearson correlation over all pixels; NaN if either is constant."""
    xm = x - x.mean()
    ym = y - y.mean()
    sxx = float((xm * xm).sum())
    syy = float((ym * ym).sum())
    if sxx == 0.0 or syy == 0.0:
        return float("nan")
    return float((xm * ym).sum() / np.sqrt(sxx * syy))


def _filter_valid(img: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """MATLAB filter2(outer(k, k), img, 'valid') for a symmetric separable kernel."""
    n = kernel_1d.size
    r = n // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, kernel_1d, kernel_1d,
                          borderType=cv2.BORDER_REPLICATE)
    return out[r:img.shape[0] - r, r:img.shape[1] - r]


def _gaussian_1d(n: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB fspecial('gaussian', n, sigma) (symmetric, sums to 1).

    fspecial zeroes entries below eps * max before normalising; that would break
    separability, so it is checked (it never triggers for the windows used here).
    """
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g1 = np.exp(-(x * x) / (2.0 * sigma * sigma))
    g2 = np.outer(g1, g1)
    if np.any(g2 < np.finfo(np.float64).eps * g2.max()):  # pragma: no cover
        raise AssertionError("fspecial threshold would apply; separable filter invalid")
    return g1 / g1.sum()


_SSIM_WIN = _gaussian_1d(11, 1.5)
_VIF_WINS = [_gaussian_1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in (1, 2, 3, 4)]


# --------------------------------------------------------------------------------------
# Metrics on the fused image alone
# --------------------------------------------------------------------------------------

def EN(fused: np.ndarray) -> float:
    """Entropy. EN = -sum_k p_k log2 p_k over the 256-bin histogram of u8(F).

    In bits. Higher is better (more information in F).
    """
    f = _u8(_as_grey(fused))
    return _entropy_bits(np.bincount(f.ravel(), minlength=256))


def SD(fused: np.ndarray) -> float:
    """Standard deviation. SD = sqrt(mean((F - mean F)^2)) (population SD, grey levels).

    Higher is better (more contrast).
    """
    f = _as_grey(fused)
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))


def SF(fused: np.ndarray) -> float:
    """Spatial frequency. SF = sqrt(RF + CF).

    RF = mean of squared differences of vertically adjacent pixels ((H-1) x W terms),
    CF = the same for horizontally adjacent pixels (H x (W-1) terms). Grey levels 0..255.
    Higher is better (more detail).
    """
    f = _as_grey(fused)
    rf = np.mean(np.diff(f, axis=0) ** 2)
    cf = np.mean(np.diff(f, axis=1) ** 2)
    return float(np.sqrt(rf + cf))


def AG(fused: np.ndarray) -> float:
    """Average gradient. AG = sum(sqrt((gx^2 + gy^2) / 2)) / ((H-1)(W-1)).

    gx, gy as MATLAB ``gradient(F)``: central differences inside, one-sided at the
    borders; the sum runs over all H x W pixels but is divided by (H-1)(W-1) (the field's
    convention; the CDDFuse/EMMA Python evaluator divides by H*W). Higher is better.
    """
    f = _as_grey(fused)
    h, w = f.shape
    gy, gx = np.gradient(f)
    return float(np.sqrt((gx * gx + gy * gy) / 2.0).sum() / ((h - 1) * (w - 1)))


# --------------------------------------------------------------------------------------
# Metrics against the sources
# --------------------------------------------------------------------------------------

def _mi_bits(x_u8: np.ndarray, f_u8: np.ndarray, h_f: float) -> float:
    joint = np.bincount(x_u8.ravel().astype(np.intp) * 256 + f_u8.ravel(),
                        minlength=256 * 256)
    h_x = _entropy_bits(np.bincount(x_u8.ravel(), minlength=256))
    return h_x + h_f - _entropy_bits(joint)


def MI(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Mutual information. MI = MI(A, F) + MI(B, F), MI(X, F) = H(X) + H(F) - H(X, F).

    Entropies in **bits** from 256-bin (joint 256 x 256) histograms of the u8 images; the
    sum over the two sources (not the mean). Higher is better (F carries more of the
    sources). The CDDFuse/EMMA Python evaluator reports nats instead.
    """
    a, b, f = (_u8(_as_grey(x)) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    h_f = _entropy_bits(np.bincount(f.ravel(), minlength=256))
    return float(_mi_bits(a, f, h_f) + _mi_bits(b, f, h_f))


def SCD(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Sum of the correlations of differences. SCD = corr(F - B, A) + corr(F - A, B).

    corr is MATLAB corr2 (Pearson over all pixels). Returns NaN (without warnings) when a
    difference image or a source is constant, e.g. for F = B. Higher is better.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    return _corr2(f - b, a) + _corr2(f - a, b)


def _vif_stats(img: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale of vifp_mscale.m: (image at that scale, local mean, local variance >= 0).

    Each image's pyramid and moments depend on that image alone, so the fused image's are
    computed once and shared by both sources.
    """
    out = []
    x = img
    for scale, win in enumerate(_VIF_WINS, start=1):
        if scale > 1:
            x = _filter_valid(x, win)[::2, ::2]
        mu = _filter_valid(x, win)
        var = _filter_valid(x * x, win) - mu * mu
        var[var < 0] = 0.0
        out.append((x, mu, var))
    return out


def _vifp(ref_stats, dist_stats) -> Tuple[float, float]:
    """Numerator and denominator of vifp_mscale.m (Sheikh & Bovik, pixel domain)."""
    sigma_nsq = 2.0
    num = 0.0
    den = 0.0
    for win, (ref, mu1, s1), (dist, mu2, s2) in zip(_VIF_WINS, ref_stats, dist_stats):
        s1 = s1.copy()  # modified below; the stats are shared between calls
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        m = s1 < 1e-10
        g[m] = 0.0
        sv[m] = s2[m]
        s1[m] = 0.0
        m = s2 < 1e-10
        g[m] = 0.0
        sv[m] = 0.0
        m = g < 0
        sv[m] = s2[m]
        g[m] = 0.0
        sv[sv <= 1e-10] = 1e-10
        num += float(np.log10(1.0 + g * g * s1 / (sv + sigma_nsq)).sum())
        den += float(np.log10(1.0 + s1 / sigma_nsq).sum())
    return num, den


def VIF(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Visual information fidelity. VIF = VIFp(A, F) + VIFp(B, F) (sum over the sources).

    Pixel-domain VIF as in ``vifp_mscale.m``: 4 scales; at scale s a Gaussian window of
    size N = 2^(5-s) + 1, sigma N/5; from scale 2 on both images are filtered with it
    ('valid') and subsampled by 2; local (co)variances by 'valid' filtering;
    g = s12 / (s1 + 1e-10), sv = s2 - g s12 with the reference's clean-up rules; noise
    variance 2; VIFp = sum_scales sum log10(1 + g^2 s1 / (sv + 2)) /
    sum_scales sum log10(1 + s1 / 2), the source X being the reference image.
    Higher is better. Images must be at least 33 x 33 pixels.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    if min(f.shape) < 33:
        raise ValueError(f"VIF needs images of at least 33 x 33 pixels, got {f.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        fs = _vif_stats(f)
        na, da = _vifp(_vif_stats(a), fs)
        nb, db = _vifp(_vif_stats(b), fs)
        return float(na / da + nb / db)


# Sobel kernels of Qabf.m, applied with MATLAB conv2 (true convolution = correlation with
# the kernel rotated by 180 degrees), 'same' size, zero padding.
_QABF_HX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_QABF_HY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)


def _conv2_same(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(img, cv2.CV_64F, kernel[::-1, ::-1].copy(), anchor=(1, 1),
                        borderType=cv2.BORDER_CONSTANT)


def _sobel_strength_angle(img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    sx = _conv2_same(img, _QABF_HX)
    sy = _conv2_same(img, _QABF_HY)
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.arctan(sy / np.where(zero, 1.0, sx))
    a[zero] = np.pi / 2
    return g, a


def _q_xf(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    # Relative strength with the reference's quirk: G = gF where gX == gF (not 1).
    gt = g_x > g_f
    lt = g_x < g_f
    G = g_f.copy()  # the gX == gF case
    G[gt] = g_f[gt] / g_x[gt]
    G[lt] = g_x[lt] / g_f[lt]
    Aa = 1.0 - np.abs(a_x - a_f) / (np.pi / 2)
    qg = 0.9994 / (1.0 + np.exp(-15.0 * (G - 0.5)))
    qa = 0.9879 / (1.0 + np.exp(-22.0 * (Aa - 0.8)))
    return qg * qa


def Qabf(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Edge preservation Q^{AB/F} (Xydeas & Petrovic), as in the reference ``Qabf.m``.

    Sobel responses sx ([[-1,0,1],[-2,0,2],[-1,0,1]]) and sy ([[1,2,1],[0,0,0],[-1,-2,-1]])
    by 2-D convolution, 'same' size, zero padding; g = sqrt(sx^2 + sy^2);
    a = arctan(sy / sx), pi/2 where sx = 0. For source X: G = gF/gX where gX > gF,
    G = gF where gX == gF (the reference's quirk), gX/gF otherwise;
    Aa = 1 - |aX - aF| / (pi/2);
    Q_XF = 0.9994 / (1 + exp(-15 (G - 0.5))) * 0.9879 / (1 + exp(-22 (Aa - 0.8))).
    Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB), in 0..1. Higher is better.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    g_a, a_a = _sobel_strength_angle(a)
    g_b, a_b = _sobel_strength_angle(b)
    g_f, a_f = _sobel_strength_angle(f)
    q_af = _q_xf(g_a, a_a, g_f, a_f)
    q_bf = _q_xf(g_b, a_b, g_f, a_f)
    den = float((g_a + g_b).sum())
    if den == 0.0:
        return float("nan")
    return float((q_af * g_a + q_bf * g_b).sum() / den)


def _ssim_stats(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, local mean, local variance) with the SSIM window; shared between sources."""
    mu = _filter_valid(x, _SSIM_WIN)
    return x, mu, _filter_valid(x * x, _SSIM_WIN) - mu * mu


def _ssim(xs, ys) -> float:
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    x, mu1, s1 = xs
    y, mu2, s2 = ys
    mu12 = mu1 * mu2
    s12 = _filter_valid(x * y, _SSIM_WIN) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def SSIM(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Structural similarity. SSIM = ssim(A, F) + ssim(B, F) (sum over the sources, max 2).

    Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, 'valid' filtering,
    K1 = 0.01, K2 = 0.03, L = 255, mean of the SSIM map; no downsampling.
    Higher is better. Images must be at least 11 x 11 pixels.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    if min(f.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {f.shape}")
    fs = _ssim_stats(f)
    return _ssim(_ssim_stats(a), fs) + _ssim(_ssim_stats(b), fs)


def PSNR(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Peak signal-to-noise ratio, the field's convention (~60 dB for typical fusions).

    MSE = (mean((F - A)^2) + mean((F - B)^2)) / 2 on images divided by 255, and
    PSNR = 20 log10(255 / sqrt(MSE)). (The textbook form would use a peak of 1 on the
    [0, 1] scale, giving 20 log10(255) = 48.13 dB less; the CDDFuse/EMMA Python evaluator
    gives ~12-20 dB.) Returns ``inf`` when F equals both sources (MSE = 0).
    Higher is better (F closer to the sources).
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    mse = (np.mean(((f - a) / 255.0) ** 2) + np.mean(((f - b) / 255.0) ** 2)) / 2.0
    if mse == 0.0:
        return float("inf")
    return float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def CC(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Correlation coefficient. CC = (corr(A, F) + corr(B, F)) / 2 (mean over the sources).

    corr is MATLAB corr2. NaN (without warnings) when F or a source is constant.
    Higher is better.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    return (_corr2(a, f) + _corr2(b, f)) / 2.0


# --------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------

def evaluate_pair(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> Dict[str, float]:
    """All eleven metrics for one fused image, as ``{name: value}`` in METRIC_NAMES order.

    ``ir``, ``visible`` and ``fused`` are uint8 or float arrays on the 0..255 scale, grey
    ``(H, W)`` or RGB ``(H, W, 3)`` (converted with :func:`to_grey`). Their height and width
    must agree, otherwise ``ValueError`` naming both shapes. Values are Python floats;
    SCD is NaN where undefined (a difference image is constant), PSNR is inf when the fused
    image equals both sources.
    """
    _check_same_size(ir=np.asarray(ir), visible=np.asarray(visible), fused=np.asarray(fused))
    a, b, f = to_grey(ir), to_grey(visible), to_grey(fused)
    return {
        "EN": EN(f),
        "SD": SD(f),
        "SF": SF(f),
        "AG": AG(f),
        "MI": MI(a, b, f),
        "SCD": SCD(a, b, f),
        "VIF": VIF(a, b, f),
        "Qabf": Qabf(a, b, f),
        "SSIM": SSIM(a, b, f),
        "PSNR": PSNR(a, b, f),
        "CC": CC(a, b, f),
    }


def time_metrics(repeats: int = 5, shared_dir: Union[str, Path, None] = None) -> Dict[str, float]:
    """Time the metrics on one 640 x 480 MSRS triple (IR, VI, max fusion) and print it.

    Reads ``msrs/train/{ir,vi}/00001D.png`` from the shared data folder (``shared_dir``,
    else ``$IVFUSION_SHARED``, else ``<repo>/../shared``). Prints the best-of-``repeats``
    wall time of each metric and of :func:`evaluate_pair`, plus the process CPU time of
    :func:`evaluate_pair` (all threads) and the load average: on a busy machine wall time
    measures the machine, CPU time the code. Returns the wall times in seconds, with
    ``"evaluate_pair_cpu"`` added.
    """
    import os

    if shared_dir is None:
        shared_dir = os.environ.get("IVFUSION_SHARED") or \
            Path(__file__).resolve().parents[1].parent / "shared"
    data = Path(shared_dir) / "data" / "msrs" / "train"
    a = read_grey(data / "ir" / "00001D.png")
    b = read_grey(data / "vi" / "00001D.png")
    f = np.maximum(a, b)

    def best(fn, clock=time.perf_counter) -> float:
        ts = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            ts.append(clock() - t0)
        return min(ts)

    single = {"EN": EN, "SD": SD, "SF": SF, "AG": AG}
    out: Dict[str, float] = {}
    for name in METRIC_NAMES:
        fn = globals()[name]
        out[name] = best((lambda fn=fn: fn(f)) if name in single
                         else (lambda fn=fn: fn(a, b, f)))
    out["evaluate_pair"] = best(lambda: evaluate_pair(a, b, f))
    out["evaluate_pair_cpu"] = best(lambda: evaluate_pair(a, b, f), clock=time.process_time)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"metrics timing on {a.shape[1]}x{a.shape[0]} (best of {repeats}; "
          f"{os.cpu_count()} CPUs, load average {load:.2f}, OpenCV threads "
          f"{cv2.getNumThreads()}):")
    for k, v in out.items():
        label = "evaluate_pair CPU" if k == "evaluate_pair_cpu" else k
        print(f"  {label:18s} {v * 1000:8.1f} ms")
    return out


if __name__ == "__main__":  # pragma: no cover
    time_metrics()
