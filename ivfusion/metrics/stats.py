"""Shared numerical pieces of the metrics: histograms, Pearson correlation, MATLAB-style filtering."""

from __future__ import annotations

import cv2
import numpy as np


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram given as counts."""
    c = counts[counts > 0].astype(np.float64)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: a constant image gives 0, not -0



def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over all elements (MATLAB ``corr2``), as a Python float.

    ``x`` and ``y`` are arrays of one shape (any dtype; computed in float64). Returns NaN,
    without warnings, when either is constant (zero variance): the correlation is undefined.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson needs arrays of one shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        return float("nan")
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
