"""Reading images and turning them into the network's inputs, and colour restoration.

Conventions: numpy images are RGB (not OpenCV's BGR), (H, W) or (H, W, C). The network sees
luminance in [0, 1]: the visible image's Y (OpenCV YCrCb weights, computed in float from the
8-bit image without rounding, as the reference does) and the infrared image as grey / 255.
After fusion the visible Cr/Cb are put back and the result converted to RGB.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ACCEPTED = "PNG, JPEG, BMP, TIFF or WebP; grey, RGB or RGBA; 8- or 16-bit"
MAX_PIXELS = 200_000_000  # past this even reading the file is a memory hazard


class ImageError(ValueError):
    """An input image that cannot be used, with what is wrong and what is accepted."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB(A) or grey, keeping its bit depth.

    Returns (H, W) or (H, W, 3|4) uint8 or uint16. Raises ImageError for a missing,
    unreadable, corrupt or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"{path}: the file is empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported); accepted: {ACCEPTED}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB or grey uint8/uint16 array as a lossless PNG."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())


def check_array(img, name: str) -> np.ndarray:
    """Validate an in-memory image: (H, W) or (H, W, 1..4), non-empty, within MAX_PIXELS.

    Returns it with a trailing single channel dropped; raises ImageError naming `name`.
    """
    if not isinstance(img, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ImageError(f"{name}: expected (H, W) or (H, W, C), got shape {img.shape}")
    if img.size == 0 or min(img.shape[:2]) == 0:
        raise ImageError(f"{name}: the image is empty (shape {img.shape})")
    if img.ndim == 3 and img.shape[2] > 4:
        raise ImageError(
            f"{name}: {img.shape[2]} channels; accepted: 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)"
        )
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {img.shape[1]}x{img.shape[0]} is too large (limit {MAX_PIXELS:,} pixels)")
    return img


_check_array = check_array  # deprecated private name, kept until lab.py and predictor.py switch


def to_unit_float(img: np.ndarray, name: str) -> tuple[np.ndarray, str | None]:
    """Scale uint8 (/255), uint16 (/65535) or float in [0, 1] to float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, None
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0, None
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise ImageError(f"{name}: float images must be finite and in [0, 1]; this one holds NaN or inf")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageError(f"{name}: float images must be finite and in [0, 1], got range [{lo:g}, {hi:g}]")
        return img.astype(np.float32), None
    raise ImageError(f"{name}: unsupported dtype {img.dtype}; accepted: uint8, uint16, or float in [0, 1]")


def _drop_alpha(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 2:
        return img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        return img[..., :3]
    return img


def visible_to_ycrcb(visible: np.ndarray) -> np.ndarray:
    """Visible image -> (H, W, 3) float32 YCrCb in [0, 1] (OpenCV's float convention, delta 0.5).

    A grey visible image gets neutral chroma (Cr = Cb = 0.5), so its fusion stays grey.
    """
    img = _drop_alpha(check_array(visible, "visible image"))
    rgb, _ = to_unit_float(img, "visible image")
    if rgb.ndim == 2:
        return np.dstack([rgb, np.full_like(rgb, 0.5), np.full_like(rgb, 0.5)])
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)


def infrared_to_grey(infrared: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Infrared image -> (H, W) float32 in [0, 1], with notices of what was done.

    3-channel IR with equal channels (as MSRS stores it) is read as grey; unequal channels
    (a false-colour palette) are converted with the luminance weights, with a notice. 16-bit IR
    rarely fills 0..65535 (radiometric sensors store 12-14 bits), so it is stretched from its own
    min..max to 0..1, with a notice.
    """
    img = _drop_alpha(check_array(infrared, "infrared image"))
    notices = []
    if img.ndim == 3:
        if np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]):
            img = img[..., 0]
        else:
            notices.append("infrared image has unequal colour channels; converted to grey by luminance")
            src = img.astype(np.float32) if img.dtype == np.float64 else img
            img = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2GRAY)
    if img.dtype == np.uint16:
        lo, hi = int(img.min()), int(img.max())
        notices.append(f"16-bit infrared stretched from its range [{lo}, {hi}] to [0, 1]")
        return ((img.astype(np.float32) - lo) / max(hi - lo, 1)).astype(np.float32), notices
    grey, _ = to_unit_float(img, "infrared image")
    return grey, notices


def restore_colour(fused_y: np.ndarray, ycrcb: np.ndarray) -> np.ndarray:
    """Put the visible Cr/Cb back under the fused luminance: (H, W) + (H, W, 3) -> RGB uint8."""
    ycc = np.dstack([fused_y.astype(np.float32), ycrcb[..., 1], ycrcb[..., 2]])
    rgb = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking and bilinear when enlarging."""
    shrink = height * width < img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_max_side(img: np.ndarray, max_side: int | None) -> tuple[np.ndarray, str | None]:
    """Downscale so that the longer side is at most max_side; returns a notice if it did."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, None
    s = max_side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return resize_to(img, nh, nw), f"downscaled from {w}x{h} to {nw}x{nh} (maximum side {max_side})"


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """Image files of a folder keyed by file stem."""
    return {p.stem: p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
