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
(OpenCV, 3-channel BGR, ``COLOR_BGR2GRAY``). A fused image, whether a file, an 8-bit array or
the network's float luminance, reaches the metrics through :func:`fused_grey` only.

Known differences to other evaluators (documented here, deliberately not copied):

- The widely used Python evaluator of the CDDFuse/EMMA repositories gives MI in nats
  (scikit-learn), PSNR on the 0..255 scale (~12-20 dB instead of ~60 dB), AG divided by
  H*W instead of (H-1)(W-1), and its SSIM call fails on scikit-image 0.26.
- Some MATLAB tables were computed on uint8 arrays and overflow (SD capped near 9, SF on a
  0-1 scale, VIF inflated); such numbers are not comparable with these.
- Numbers from this module are comparable with tables that follow METRICS.md, e.g. the
  ISFuse paper's (PSNR around 60-66 dB).

Degenerate inputs (constant or black images, images of a few pixels) never raise: every
metric has a defined value, documented next to its code. Summary: EN, SD, MI are 0 for a
constant image; SF and AG are 0 for a constant image and NaN with fewer than 2 rows or
columns; SCD and CC are NaN where a correlation is 0/0 (a constant source, difference or
F); VIF is NaN for a constant source or images under 33 x 33, SSIM NaN under 11 x 11;
Qabf is NaN when neither source has an edge; PSNR is inf when F equals both sources.
Only wrong input raises: mismatched sizes, empty arrays, non-numeric data (ValueError).

Layout: ``grey`` (reading and grey conversion), ``stats`` (histograms, :func:`pearson`,
MATLAB-style filters), ``fused`` (the four metrics of F alone), ``sources`` (the seven of F
against A and B). Timing the metrics is ``ivfusion bench``'s job (``ivfusion.bench``).

Use :func:`evaluate_pair` for all eleven at once; :data:`METRIC_NAMES` gives their order and
:data:`HIGHER_IS_BETTER` their direction.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .fused import AG, EN, SD, SF
from .grey import _check_same_size, fused_grey, read_grey, to_grey
from .sources import CC, MI, PSNR, SCD, SSIM, VIF, Qabf
from .stats import pearson

__all__ = [
    "METRIC_NAMES",
    "HIGHER_IS_BETTER",
    "to_grey",
    "read_grey",
    "fused_grey",
    "pearson",
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
]

METRIC_NAMES: Tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC",
)
"""The eleven metrics, in the order :func:`evaluate_pair` returns them."""

HIGHER_IS_BETTER: Dict[str, bool] = {name: True for name in METRIC_NAMES}
"""Direction of each metric. All eleven are read as "higher is better" in the fusion
literature: EN/SD/SF/AG measure information and detail in F alone; MI, SCD, VIF, Qabf,
SSIM, PSNR and CC measure how much of the sources F preserves (higher = closer to them)."""



def evaluate_pair(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> Dict[str, float]:
    """All eleven metrics for one fused image, as ``{name: value}`` in METRIC_NAMES order.

    ``ir``, ``visible`` and ``fused`` are uint8 or float arrays on the 0..255 scale, grey
    ``(H, W)`` or RGB ``(H, W, 3)`` (converted with :func:`to_grey`). Their height and width
    must agree, otherwise ``ValueError`` naming both shapes; an empty image is a ValueError
    too. Values are Python floats; degenerate inputs give the documented NaN or limit values
    (see the module docstring), never an exception.
    """
    _check_same_size(ir=np.asarray(ir), visible=np.asarray(visible), fused=np.asarray(fused))
    a, b, f = to_grey(ir), to_grey(visible), to_grey(fused)
    if f.size == 0:
        raise ValueError(f"the images are empty (shape {f.shape}); the metrics need at least one pixel")
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
