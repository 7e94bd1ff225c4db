"""The seven metrics of the fused image against its sources: MI, SCD, VIF, Qabf, SSIM, PSNR, CC.

A = infrared, B = visible, F = fused, each a 2-D float64 array of grey levels 0..255 of one
size. Degenerate inputs (constant, black or tiny images) never raise: each metric's docstring
says what it gives, either the limit value where the definition has one or NaN with the
reason (an undefined 0/0, as the MATLAB reference code would give). Evaluators leave NaN out
of means and say so.
"""

from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .grey import _as_grey, _check_same_size, _u8
from .stats import _SSIM_WIN, _VIF_WINS, _entropy_bits, _filter_valid, pearson

def _mi_bits(x_u8: np.ndarray, f_u8: np.ndarray, h_f: float) -> float:
    joint = np.bincount(x_u8.ravel().astype(np.intp) * 256 + f_u8.ravel(),
                        minlength=256 * 256)
    h_x = _entropy_bits(np.bincount(x_u8.ravel(), minlength=256))
    return h_x + h_f - _entropy_bits(joint)


def MI(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Mutual information. MI = MI(A, F) + MI(B, F), MI(X, F) = H(X) + H(F) - H(X, F).

    Entropies in **bits** from 256-bin (joint 256 x 256) histograms of the u8 images; the
    sum over the two sources (not the mean). Higher is better (F carries more of the
    sources). The CDDFuse/EMMA Python evaluator reports nats instead. Constant images are
    defined: a constant F (or source) shares no information, MI(X, F) = 0.
    """
    a, b, f = (_u8(_as_grey(x)) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    h_f = _entropy_bits(np.bincount(f.ravel(), minlength=256))
    return float(_mi_bits(a, f, h_f) + _mi_bits(b, f, h_f))


def SCD(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Sum of the correlations of differences. SCD = corr(F - B, A) + corr(F - A, B).

    corr is MATLAB corr2 (Pearson over all pixels). Returns NaN (without warnings) when a
    difference image or a source is constant, e.g. for F = B or black images: the
    correlation is then 0/0, undefined. Higher is better.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    return pearson(f - b, a) + pearson(f - a, b)


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
    Higher is better.

    Degenerate inputs: NaN when the images are smaller than 33 x 33 pixels (the four scales'
    windows do not fit). NaN when a source is constant (e.g. black): its denominator
    sum log10(1 + s1 / 2) is 0 and its numerator too, so VIFp is 0/0 (MATLAB gives NaN). A
    constant F with varying sources is defined: 0 (no information passed on).
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    if min(f.shape) < 33:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        fs = _vif_stats(f)
        na, da = _vifp(_vif_stats(a), fs)
        nb, db = _vifp(_vif_stats(b), fs)
    if da == 0.0 or db == 0.0:
        return float("nan")
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
    NaN when both sources are constant (no edge anywhere: sum(gA + gB) = 0, so 0/0).
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
    Higher is better. Constant images are defined thanks to K1, K2 (two equal constant
    images: 1 each). NaN when the images are smaller than 11 x 11 pixels (the window does
    not fit: the 'valid' SSIM map is empty).
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    if min(f.shape) < 11:
        return float("nan")
    fs = _ssim_stats(f)
    return _ssim(_ssim_stats(a), fs) + _ssim(_ssim_stats(b), fs)


def PSNR(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> float:
    """Peak signal-to-noise ratio, the field's convention (~60 dB for typical fusions).

    MSE = (mean((F - A)^2) + mean((F - B)^2)) / 2 on images divided by 255, and
    PSNR = 20 log10(255 / sqrt(MSE)). (The textbook form would use a peak of 1 on the
    [0, 1] scale, giving 20 log10(255) = 48.13 dB less; the CDDFuse/EMMA Python evaluator
    gives ~12-20 dB.) Returns ``inf`` when F equals both sources (MSE = 0), the limit value,
    e.g. for three black images.
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

    corr is MATLAB corr2. NaN (without warnings) when F or a source is constant (e.g.
    black): the correlation is 0/0, undefined.
    Higher is better.
    """
    a, b, f = (_as_grey(x) for x in (ir, visible, fused))
    _check_same_size(ir=a, visible=b, fused=f)
    return (pearson(a, f) + pearson(b, f)) / 2.0
