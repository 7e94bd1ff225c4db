"""Uploads (paths, Gradio file payloads or arrays) to checked numpy images, with readable
`ImageError`s; the pair description; hand-drawn masks from the image editor."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..io import ImageError
from .models import APP_MAX_SIDE

MAX_UPLOAD_PIXELS = 50_000_000  # checked from the file header, before decoding
_BROWSER_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif")


def source_path(source: Any) -> str | None:
    """The file path of an upload: a path, or a Gradio file payload {"path": ...}."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict):
        return source.get("path")
    path = getattr(source, "path", None)  # gradio FileData objects
    return str(path) if path else None


def load_image(source: Any, name: str) -> np.ndarray:
    """An uploaded image as a numpy array (RGB/grey, 8- or 16-bit as stored).

    source: a file path, a Gradio file payload ({"path": ...}), or a numpy array. Raises
    ImageError naming `name` ("visible image", ...) for a missing, corrupt, unsupported or
    enormous file; the pixel count is checked from the header, before decoding.
    """
    if source is None:
        raise ImageError(f"{name}: missing. Upload one, or click one of the example pairs.")
    if isinstance(source, np.ndarray):
        return io._check_array(source, name)
    path = source_path(source)
    if not path:
        raise ImageError(f"{name}: no file was received. Upload it again.")
    _check_header(Path(path), name)
    try:
        img = io.read_image(path)
    except ImageError as e:
        raise ImageError(f"{name}: {str(e).replace(str(path), Path(path).name)}") from None
    return io._check_array(img, name)


def _check_header(path: Path, name: str) -> None:
    """Refuse images too large to decode safely, from their header alone (Pillow reads lazily)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a readable message
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not Pillow-readable: OpenCV decides (and explains)
        return
    if w * h > MAX_UPLOAD_PIXELS:
        raise ImageError(
            f"{name}: {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is too large for the lab "
            f"(limit {MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels). Downscale it first; the lab would shrink "
            "it to at most 1024 pixels on its longer side anyway.")


def describe_image(img: np.ndarray) -> str:
    """'640x480, colour, 8-bit' and the like."""
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    kind = {1: "grey", 2: "grey + alpha", 3: "colour", 4: "colour + alpha"}.get(ch, f"{ch} channels")
    if ch == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
        kind = "grey (3 equal channels)"
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(img.dtype, str(img.dtype))
    return f"{w}x{h}, {kind}, {depth}"


def pair_info(visible: Any, infrared: Any, max_side: int = APP_MAX_SIDE) -> str:
    """A short Markdown description of the loaded pair and what the lab will do with it.
    Raises ImageError for an unusable image."""
    parts, vis, ir = [], None, None
    if visible is not None:
        vis = load_image(visible, "visible image")
        parts.append(f"**Visible:** {describe_image(vis)}")
    if infrared is not None:
        ir = load_image(infrared, "infrared image")
        parts.append(f"**Infrared:** {describe_image(ir)}")
    if not parts:
        return "Load a pair: upload a visible and an infrared image, or click an example below."
    notes = []
    if vis is None or ir is None:
        notes.append(f"Now add the {'infrared' if ir is None else 'visible'} image.")
    else:
        notes += size_notes(vis.shape[:2], ir.shape[:2])
        h, w = vis.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            notes.append(f"The pair will be downscaled to {round(w * s)}x{round(h * s)} (at most {max_side} px a side).")
        if not notes:
            notes.append("Ready: press **Fuse**.")
    return " · ".join(parts) + "  \n" + " ".join(notes)


def size_notes(vis_hw: tuple[int, int], ir_hw: tuple[int, int]) -> list[str]:
    """What happens to a pair whose sizes differ, in plain words."""
    if tuple(vis_hw) == tuple(ir_hw):
        return []
    (vh, vw), (ih, iw) = vis_hw, ir_hw
    notes = [f"The sizes differ: the infrared image ({iw}x{ih}) is resized to the visible size ({vw}x{vh}). "
             "Fusion assumes both images show the same scene pixel for pixel (a registered pair)."]
    if abs(vw / vh - iw / ih) > 0.02 * (vw / vh):
        notes.append("Their shapes (aspect ratios) differ too, so they are probably not registered: "
                     "expect doubled edges in the result.")
    return notes


def display_copy(source: Any, folder: Path) -> str | None:
    """A browser-displayable, lossless PNG copy of an upload in a format browsers cannot show
    (e.g. TIFF), keeping 16-bit depth; None when the file can be shown as it is."""
    path = source_path(source)
    if not path or Path(path).suffix.lower() in _BROWSER_SUFFIXES:
        return None
    img = load_image(path, "image")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 2:
        img = img[..., 0]
    out = Path(folder) / (Path(path).stem + ".png")
    io.write_png(out, img)
    return str(out)


def drawn_keep_mask(value: Any) -> np.ndarray | None:
    """A keep mask (1 keeps, 0 hides) from what the user painted in an image editor, or None
    when nothing was painted.

    value: a Gradio ImageEditor payload {"background", "layers", "composite"} (file payloads,
    paths or arrays), or an (H, W, 4) RGBA / (H, W) array where painted pixels are opaque / > 0.
    """
    if value is None:
        return None
    layers = value.get("layers") if isinstance(value, dict) else [value]
    hidden = None
    for layer in layers or []:
        if layer is None:
            continue
        arr = layer if isinstance(layer, np.ndarray) else io.read_image(source_path(layer))
        if arr.ndim == 3 and arr.shape[2] == 4:
            painted = arr[..., 3] > 0
        elif arr.ndim == 3 and arr.shape[2] == 2:
            painted = arr[..., 1] > 0
        else:
            painted = (arr if arr.ndim == 2 else arr.max(-1)) > 0
        hidden = painted if hidden is None else (hidden | painted if hidden.shape == painted.shape else hidden)
    if hidden is None or not hidden.any():
        return None
    return (~hidden).astype(np.float32)
