"""Uploads (paths, Gradio file payloads or arrays) to checked numpy images, with readable
`ImageError`s; the pair description; hand-drawn masks from the image editor.

The trust boundary: a client names files by path, with or without Gradio's `meta`, and the
handlers take the payloads raw (`preprocess=False`), so Gradio's own upload-folder check does
not apply. Every path therefore goes through `source_path`, which accepts only files inside
`trusted_roots()` (Gradio's upload folder, the bundled examples, the Lab's own request files)
and refuses every other path with one message that says nothing about the file system (not
whether the file exists). Nothing is opened before that check.

Memory rules for a public server (issue 11), which every function here keeps:

* Every file goes through the one guarded decoder, `ivfusion.io.read_image`: the header is
  checked against a pixel and a decoded-byte budget before a pixel is decoded.
* Cheap functions for unqueued events (`header`, `pair_info`, `display_copy`) read headers,
  or decode only files within the small `PREVIEW_MAX_BYTES` budget. Gradio's private events
  are still reachable with a POST to /gradio_api/run/predict, so these stay cheap whatever
  they receive.
* Full decodes (`load_image`, `load_pair`, `drawn_keep_mask`) belong in queued events. They
  run one at a time in the whole process (`_DECODE_LOCK`), and shrink the image to the Lab's
  working size before the lock is released, so a full-size array never outlives its decode.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import io
from ..io import ImageError, ImageHeader
from ..modeling.isfuse import MIN_SIDE
from .models import APP_MAX_SIDE
from .slot import check_budget

MAX_UPLOAD_PIXELS = 50_000_000  # the decoder's budgets, checked from the header before decoding
MAX_UPLOAD_BYTES = io.MAX_BYTES  # decoded bytes: 256 MiB (a 50 MP 8-bit RGB image)
PREVIEW_MAX_BYTES = 32 * 2**20  # an unqueued handler may decode this much (a 2048^2 16-bit RGBA TIFF)
MASK_MAX_SIDE = 2048  # drawn masks are kept at most this large (the image is at most max_side)
# A drawn mask is the editor's layers: the Lab's editor (layers=False) sends one, the size of
# the image drawn on. Each layer costs a decode (about 0.4 s for 49 MP), so a request naming
# hundreds of them held the compute slot for minutes (issue 25): at most MAX_LAYERS layers and
# MAX_LAYER_PIXELS pixels in all per editor, checked from their headers before any decode.
MAX_LAYERS = 4
MAX_LAYER_PIXELS = MAX_UPLOAD_PIXELS
_VERIFIED_MAX = 256  # files whose full check is remembered (by path, size and mtime)
_BROWSER_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif")
# One full decode at a time in the whole server: queued events of different concurrency
# groups (fuse, stability, prefetch) may run together, and their decodes must not add up.
_DECODE_LOCK = threading.Lock()


class UntrustedPath(ImageError):
    """A path outside the folders the Lab serves files from."""


NOT_UPLOADED = "this file was not uploaded to the Lab; upload it again, or pick an example pair"
_EXTRA_ROOTS: list[str] = []


def trust_folder(folder: str | os.PathLike) -> None:
    """Accept files inside `folder` too (an operator's choice, or a test's data folder)."""
    _EXTRA_ROOTS.append(os.path.realpath(folder))


def trusted_roots() -> tuple[str, ...]:
    """The resolved folders whose files a client may name: Gradio's upload folder (where
    /upload writes, and where Gradio caches what the page shows), the bundled examples, the
    Lab's request files, and any `trust_folder`."""
    try:
        from gradio.utils import get_upload_folder

        upload = get_upload_folder()
    except ImportError:  # the Lab without Gradio (in-process use): Gradio's default place
        upload = os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")
    from ..hub import EXAMPLES_DIR
    from .session import lab_folder

    return tuple(os.path.realpath(p) for p in (upload, EXAMPLES_DIR, lab_folder())) + tuple(_EXTRA_ROOTS)


def _raw_path(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict):
        path = source.get("path")
        return str(path) if isinstance(path, (str, os.PathLike)) and path else None
    path = getattr(source, "path", None)  # gradio FileData objects
    return str(path) if isinstance(path, (str, os.PathLike)) and path else None


def source_path(source: Any, name: str = "image") -> str | None:
    """The resolved file path of an upload (a path, or a Gradio file payload {"path": ...}),
    or None when there is none. Raises UntrustedPath, naming `name` only, for a path outside
    `trusted_roots()`, whether or not such a file exists."""
    path = _raw_path(source)
    if path is None:
        return None
    if "\x00" in path:
        raise UntrustedPath(f"{name}: {NOT_UPLOADED}")
    real = os.path.realpath(path)  # symlinks and '..' resolved before the check
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in trusted_roots()):
        raise UntrustedPath(f"{name}: {NOT_UPLOADED}")
    return real


def _path_of(source: Any, name: str) -> str:
    if source is None:
        raise ImageError(f"{name}: missing. Upload one, or click one of the example pairs.")
    path = source_path(source, name)
    if not path:
        raise ImageError(f"{name}: no file was received. Upload it again.")
    return path


def _decode(path: str, name: str) -> np.ndarray:
    """One upload through the guarded decoder with the upload budgets (the caller holds
    _DECODE_LOCK), its errors named after the upload rather than the temporary file."""
    try:
        return io.read_image(path, max_pixels=MAX_UPLOAD_PIXELS, max_bytes=MAX_UPLOAD_BYTES, name=name)
    except ImageError as e:
        raise _named(e, path, name) from None


def _named(e: ImageError, path: str, name: str) -> ImageError:
    """The decoder's message with the server's path replaced by the upload's name."""
    text = str(e).replace(str(path), Path(path).name)
    return ImageError(text if text.startswith(name) else f"{name}: {text}")


def header(source: Any, name: str) -> ImageHeader:
    """The checked header of an upload (size, channels, depth, format), decoding nothing.
    Safe in unqueued events. Raises ImageError for a missing, corrupt or over-budget file."""
    path = _path_of(source, name)
    try:
        return io.check_header(io.read_header(path, name=name), name, max_pixels=MAX_UPLOAD_PIXELS,
                               max_bytes=MAX_UPLOAD_BYTES)
    except ImageError as e:
        raise _named(e, path, name) from None


_verified: dict[tuple, str | None] = {}  # (path, size, mtime) -> error text, None when it decodes


def verify(source: Any, name: str) -> ImageHeader:
    """The upload's header, after a full check of the file (`header` reads only the header, so
    a truncated PNG or a file the decoder refuses looked "Ready" until Fuse refused it): files
    within PREVIEW_MAX_BYTES decoded are decoded once (one at a time, the result remembered
    per file), larger PNG and JPEG files are checked for their end marker. Safe in unqueued
    events. Raises ImageError as Fuse would."""
    h = header(source, name)
    path = _path_of(source, name)
    try:
        st = os.stat(path)
    except OSError:
        raise ImageError(f"{name}: no such file; upload it again") from None
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _verified:
        error = None
        try:
            if h.decoded_bytes <= PREVIEW_MAX_BYTES:
                with _DECODE_LOCK:
                    io.read_image(path, max_pixels=MAX_UPLOAD_PIXELS, max_bytes=PREVIEW_MAX_BYTES, name=name)
            elif not _ends_whole(path, h.format):
                error = (f"{name}: the file is cut short (its end is missing); upload it again; accepted: "
                         f"{io.ACCEPTED}")
        except ImageError as e:
            error = str(_named(e, path, name))
        if len(_verified) >= _VERIFIED_MAX:
            _verified.pop(next(iter(_verified)))
        _verified[key] = error
    if _verified[key]:
        raise ImageError(_verified[key])
    return h


def _ends_whole(path: str, fmt: str) -> bool:
    """Whether a PNG ends with its IEND chunk, a JPEG with its EOI marker (other formats: True)."""
    fmt = (fmt or "").upper()
    if fmt not in ("PNG", "JPEG", "MPO"):
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 12))
        tail = f.read()
    return tail.endswith(b"IEND\xaeB`\x82") if fmt == "PNG" else tail.rstrip(b"\0").endswith(b"\xff\xd9")


def fusable_size(width: int, height: int, name: str, max_side: int | None) -> None:
    """Refuse, naming the upload's own size, an image that is, or once downscaled to
    `max_side` would be, under ISFuse's minimum side (a 100000x1 upload was refused as
    "640x1 pixels", the size after downscaling)."""
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: {width}x{height} pixels; ISFuse needs at least {MIN_SIDE}x{MIN_SIDE}")
    if max_side and max(width, height) > max_side:
        s = max_side / max(width, height)
        w, h = max(1, round(width * s)), max(1, round(height * s))
        if min(w, h) < MIN_SIDE:
            raise ImageError(f"{name}: {width}x{height} pixels would be {w}x{h} once downscaled to at most {max_side} "
                             f"a side, under ISFuse's minimum of {MIN_SIDE}x{MIN_SIDE}; crop it to a less elongated "
                             "shape")


def load_image(source: Any, name: str, max_side: int | None = None) -> np.ndarray:
    """An uploaded image as a numpy array (RGB/grey, 8- or 16-bit as stored). Decodes: call
    it from queued events only.

    source: a file path, a Gradio file payload ({"path": ...}), or a numpy array.
    max_side: when given, an image with a longer side is downscaled to it (area averaging, in
    its own depth) before the full-size array is let go.
    Raises ImageError naming `name` ("visible image", ...) for a missing, corrupt,
    unsupported or over-budget file; the budgets are checked from the header first.
    """
    if isinstance(source, np.ndarray):
        img = io.check_array(source, name, max_pixels=MAX_UPLOAD_PIXELS)
        return io.fit_max_side(img, max_side)[0] if max_side else img
    path = _path_of(source, name)
    with _DECODE_LOCK:
        img = _decode(path, name)
        img = io.check_array(img, name, max_pixels=MAX_UPLOAD_PIXELS)
        if max_side:
            img = io.fit_max_side(img, max_side)[0]
    check_budget(name)
    return img


def load_pair(visible: Any, infrared: Any, max_side: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both images of a pair, each downscaled on load to at most `max_side` (the Fuser's
    limit, so the Fuser gets the very arrays it would have made), and notices saying what
    was done. Decodes: queued events only."""
    notes = []
    for source, name in ((visible, "visible image"), (infrared, "infrared image")):
        if source is not None and not isinstance(source, np.ndarray):
            h = header(source, name)
            fusable_size(h.width, h.height, name, max_side)
    if max_side:
        hv = header(visible, "visible image") if not isinstance(visible, np.ndarray) else None
        (vh, vw) = (hv.height, hv.width) if hv else visible.shape[:2]
        if max(vh, vw) > max_side:
            s = max_side / max(vh, vw)
            notes.append(f"Downscaled from {vw}x{vh} to {max(1, round(vw * s))}x{max(1, round(vh * s))} "
                         f"(maximum side {max_side}).")
    return load_image(visible, "visible image", max_side), load_image(infrared, "infrared image", max_side), notes


def describe_image(img: np.ndarray) -> str:
    """'640x480, colour, 8-bit' and the like, for an array."""
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    kind = _KINDS.get(ch, f"{ch} channels")
    if ch == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
        kind = "grey (3 equal channels)"
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(img.dtype, str(img.dtype))
    return f"{w}x{h}, {kind}, {depth}"


_KINDS = {1: "grey", 2: "grey + alpha", 3: "colour", 4: "colour + alpha"}


def describe_header(h: ImageHeader) -> str:
    """'640x480, colour, 8-bit' and the like, from a header alone."""
    return f"{h.width}x{h.height}, {_KINDS.get(h.channels, f'{h.channels} channels')}, {max(h.bit_depth, 8)}-bit"


def pair_info(visible: Any, infrared: Any, max_side: int = APP_MAX_SIDE) -> str:
    """A short Markdown description of the loaded pair and what the lab will do with it, from
    the files' headers (decodes nothing: safe in unqueued events). Raises ImageError for an
    unusable image."""
    parts, sizes = [], {}
    for key, source, name in (("visible", visible, "visible image"), ("infrared", infrared, "infrared image")):
        if source is None:
            continue
        if isinstance(source, np.ndarray):
            img = io.check_array(source, name, max_pixels=MAX_UPLOAD_PIXELS)
            sizes[key], text = img.shape[:2], describe_image(img)
        else:
            h = verify(source, name)
            fusable_size(h.width, h.height, name, max_side)
            sizes[key], text = (h.height, h.width), describe_header(h)
        parts.append(f"**{key.capitalize()}:** {text}")
    if not parts:
        return "Load a pair: upload a visible and an infrared image, or click an example below."
    notes = []
    if len(sizes) < 2:
        notes.append(f"Now add the {'infrared' if 'infrared' not in sizes else 'visible'} image.")
    else:
        notes += size_notes(sizes["visible"], sizes["infrared"])
        h, w = sizes["visible"]
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
    (e.g. TIFF), keeping 16-bit depth; None when the file can be shown as it is, or when it is
    over `PREVIEW_MAX_BYTES` decoded (then it is still fused, only not previewed). Checks the
    header first (ImageError for a bad file); safe in unqueued events."""
    path = source_path(source)
    if not path:
        return None
    h = header(path, "image")
    if Path(path).suffix.lower() in _BROWSER_SUFFIXES or h.decoded_bytes > PREVIEW_MAX_BYTES:
        return None
    with _DECODE_LOCK:
        try:
            img = io.read_image(path, max_pixels=MAX_UPLOAD_PIXELS, max_bytes=PREVIEW_MAX_BYTES, name="image")
        except ImageError as e:
            raise _named(e, path, "image") from None
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    out = Path(folder) / (Path(path).stem + ".png")
    io.write_png(out, img)
    return str(out)


def drawn_keep_mask(value: Any, max_side: int = MASK_MAX_SIDE) -> np.ndarray | None:
    """A keep mask (1 keeps, 0 hides) from what the user painted in an image editor, or None
    when nothing was painted. Decodes: queued events only.

    value: a Gradio ImageEditor payload {"background", "layers", "composite"} (file payloads,
    paths or arrays), or an (H, W, 4) RGBA / (H, W) array where painted pixels are opaque / > 0.
    At most MAX_LAYERS layers and MAX_LAYER_PIXELS pixels in all (from their headers, before
    any decode); each goes through the guarded decoder (the upload budgets apply), masks
    larger than `max_side` are area-averaged down to it (the fraction hidden is kept) before
    the next layer is read, and the compute slot's budget is checked after each layer.
    Returns (h, w) float32 in [0, 1].
    """
    if value is None:
        return None
    layers = value.get("layers") if isinstance(value, dict) else [value]
    if layers is not None and not isinstance(layers, (list, tuple)):
        raise ImageError("drawn mask: the editor sent no list of layers; paint the mask again")
    layers = [layer for layer in layers or [] if layer is not None]
    if len(layers) > MAX_LAYERS:
        raise ImageError(f"drawn mask: {len(layers)} layers received; at most {MAX_LAYERS} are accepted "
                         "(the Lab's editor sends one)")
    pixels = 0
    for k, layer in enumerate(layers):  # headers only: the budget is known before any decode
        if isinstance(layer, np.ndarray):
            pixels += int(layer.shape[0]) * int(layer.shape[1]) if layer.ndim >= 2 else layer.size
        else:
            h = header(layer, f"drawn mask layer {k + 1}")
            pixels += h.width * h.height
    if pixels > MAX_LAYER_PIXELS:
        raise ImageError(f"drawn mask: its layers hold {pixels / 1e6:.1f} megapixels; at most "
                         f"{MAX_LAYER_PIXELS / 1e6:.0f} are accepted per image")
    hidden = None  # float32 fraction hidden, at most max_side a side
    for k, layer in enumerate(layers):
        name = f"drawn mask layer {k + 1}"
        if isinstance(layer, np.ndarray):
            arr = io.check_array(layer, name, max_pixels=MAX_UPLOAD_PIXELS)
            painted = _painted(arr)
        else:
            path = _path_of(layer, name)
            with _DECODE_LOCK:
                arr = _decode(path, name)
                painted = _painted(arr)
                del arr
        frac = _shrink(painted, max_side)
        del painted
        if hidden is None:
            hidden = frac
        elif hidden.shape == frac.shape:
            np.maximum(hidden, frac, out=hidden)
        check_budget(name)
    if hidden is None or not hidden.any():
        return None
    return 1.0 - hidden


def _painted(arr: np.ndarray) -> np.ndarray:
    """uint8 255 where painted (opaque alpha, or any value in a grey/RGB layer), else 0."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = arr[..., -1]
    else:
        alpha = arr if arr.ndim == 2 else arr.max(-1)
    return np.where(alpha > 0, np.uint8(255), np.uint8(0))


def _shrink(painted: np.ndarray, max_side: int) -> np.ndarray:
    """Fraction painted, (h, w) float32, area-averaged down to at most max_side a side."""
    h, w = painted.shape
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        painted = cv2.resize(painted, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return painted.astype(np.float32) / 255.0
