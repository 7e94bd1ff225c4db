"""Images as the metrics see them: float64 grey levels 0..255 (colour converted as OpenCV does)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np

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

    Exactly as the reference values were made: OpenCV's 3-channel 8-bit BGR reading
    (``IMREAD_COLOR``: grey files replicated, alpha dropped, 16-bit files reduced to 8 bits by
    OpenCV), converted with ``COLOR_BGR2GRAY``, then cast to float64. The file goes through
    the project's guarded decoder first (:func:`ivfusion.io.read_image`: size and budget
    checks): a missing file is a FileNotFoundError, a corrupt or oversized one an
    ``io.ImageError`` (a ValueError) naming it. For 8-bit files the grey image is computed from that decode, which equals
    OpenCV's ``IMREAD_COLOR`` + ``COLOR_BGR2GRAY`` bit for bit; 16-bit files are decoded
    once more by OpenCV so that its 16-to-8-bit reduction is kept.
    """
    from .. import io

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    img = io.read_image(path)
    if img.ndim == 3 and img.shape[2] in (2, 4):  # IMREAD_COLOR drops alpha without blending
        img = img[..., :1] if img.shape[2] == 2 else img[..., :3]
    if img.dtype == np.uint8:
        return to_grey(img)
    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:  # pragma: no cover - io.read_image decoded the same bytes
        raise io.ImageError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)


def fused_grey(fused: Union[str, Path, np.ndarray], visible: np.ndarray | None = None) -> np.ndarray:
    """The one path from a fused image to the grey levels the metrics score (float64, whole
    numbers 0..255): the fused image as ``ivfusion fuse`` writes it, read as the reference
    reads files. ``ivfusion evaluate`` (files and in-memory model outputs), training's
    validation and the tools all score fused images through it, so that one image gives one
    number whichever command measured it.

    ``fused`` is one of:
      - a file path: :func:`read_grey`;
      - an 8-bit array, grey ``(H, W)`` or RGB ``(H, W, 3)``, a fused image as written:
        :func:`to_grey` (equal to :func:`read_grey` of its lossless file);
      - the network's float luminance ``(H, W)`` in [0, 1]: first made the 8-bit image that
        ``ivfusion fuse`` writes, with ``visible`` (the decoded visible image, as
        ``io.read_image`` gives it) its Cr/Cb put back (``io.restore_colour``), without it a
        grey image; then as above. Rounding the luminance alone instead (what validation and
        tools/gate_stats did) moved Qabf in the third decimal.
    """
    if isinstance(fused, (str, Path)):
        return read_grey(fused)
    f = np.asarray(fused)
    if np.issubdtype(f.dtype, np.floating):
        if f.ndim != 2:
            raise ValueError(f"a float fused image is the network's (H, W) luminance, got shape {f.shape}")
        from .. import io

        if visible is None:
            f = np.clip(np.rint(f.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        else:
            f = io.restore_colour(f, io.visible_to_ycrcb(np.asarray(visible)))
    return to_grey(f)


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
