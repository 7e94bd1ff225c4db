"""The four metrics of the fused image alone: EN, SD, SF, AG (F = fused, grey levels 0..255).

Degenerate inputs (each documented below): a constant image is defined for all four (no
information, contrast or detail: 0). SF and AG need neighbours along both axes; for an image
with a single row or column they are NaN (their defining means are empty).
"""

from __future__ import annotations

import numpy as np

from .grey import _as_grey, _u8
from .stats import _entropy_bits


def EN(fused: np.ndarray) -> float:
    """Entropy. EN = -sum_k p_k log2 p_k over the 256-bin histogram of u8(F).

    In bits. Higher is better (more information in F). A constant image: 0 (one level).
    """
    f = _u8(_as_grey(fused))
    return _entropy_bits(np.bincount(f.ravel(), minlength=256))


def SD(fused: np.ndarray) -> float:
    """Standard deviation. SD = sqrt(mean((F - mean F)^2)) (population SD, grey levels).

    Higher is better (more contrast). A constant image: 0.
    """
    f = _as_grey(fused)
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))


def SF(fused: np.ndarray) -> float:
    """Spatial frequency. SF = sqrt(RF + CF).

    RF = mean of squared differences of vertically adjacent pixels ((H-1) x W terms),
    CF = the same for horizontally adjacent pixels (H x (W-1) terms). Grey levels 0..255.
    Higher is better (more detail). A constant image: 0. NaN when H < 2 or W < 2: RF or CF
    is then a mean over no pixel pairs, undefined (the MATLAB code gives NaN too).
    """
    f = _as_grey(fused)
    if min(f.shape) < 2:
        return float("nan")
    rf = np.mean(np.diff(f, axis=0) ** 2)
    cf = np.mean(np.diff(f, axis=1) ** 2)
    return float(np.sqrt(rf + cf))


def AG(fused: np.ndarray) -> float:
    """Average gradient. AG = sum(sqrt((gx^2 + gy^2) / 2)) / ((H-1)(W-1)).

    gx, gy as MATLAB ``gradient(F)``: central differences inside, one-sided at the
    borders; the sum runs over all H x W pixels but is divided by (H-1)(W-1) (the field's
    convention; the CDDFuse/EMMA Python evaluator divides by H*W). Higher is better.
    A constant image: 0. NaN when H < 2 or W < 2: the divisor (H-1)(W-1) is 0 and a
    one-sided difference needs two pixels.
    """
    f = _as_grey(fused)
    h, w = f.shape
    if min(h, w) < 2:
        return float("nan")
    gy, gx = np.gradient(f)
    return float(np.sqrt((gx * gx + gy * gy) / 2.0).sum() / ((h - 1) * (w - 1)))
