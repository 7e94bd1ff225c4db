"""Reading images and turning them into the network's inputs, and colour restoration.

Every image file entering the project goes through one guarded decoder, `read_image`: the
header is read first (`read_header`, nothing decoded) and checked against a pixel budget and a
decoded-byte budget (`check_header`), so a small file that would decode to gigabytes is refused
for the cost of reading its header. Arrays passed in memory are checked by `check_array`.
Files are written with `atomic_write` (a temporary name, then a rename).

Conventions: numpy images are RGB (not OpenCV's BGR), (H, W) or (H, W, C). The network sees
luminance in [0, 1]: the visible image's Y (OpenCV YCrCb weights, computed in float from the
8-bit image without rounding, as the reference does) and the infrared image as grey / 255.
After fusion the visible Cr/Cb are put back and the result converted to RGB.
"""
from __future__ import annotations

import io as _bytes_io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ACCEPTED = "PNG, JPEG, BMP, TIFF or WebP; grey, RGB or RGBA; 8- or 16-bit"
# The budgets every decode must fit, checked from the header before any pixel is decoded.
# 50 MP covers any camera in the field; 256 MiB of decoded samples is a 50 MP 8-bit RGB image
# or a 33 MP 16-bit RGBA one, so a 7000x7000 16-bit RGBA file (374 MiB) is refused unread.
# A decode peaks at about twice its decoded size (OpenCV's decoders keep a working buffer).
MAX_PIXELS = 50_000_000
MAX_BYTES = 256 * 2**20
# Pillow format names accepted (MPO: a JPEG with extra frames, as some cameras write).
_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP")
# What reading a header may read: tags, EXIF, ICC and text chunks can be made to grow without
# bound (a 51 MB TIFF with 6.4 million strip offsets cost 374 MiB a header read), and headers
# are read before the queue. Real headers, ICC profiles and EXIF included, are far smaller.
HEADER_MAX_READ = 4 * 2**20


class _HeaderTooLarge(Exception):
    pass


class _BoundedReader:
    """A binary file object that refuses to read more than `budget` bytes in all."""

    def __init__(self, fp, budget: int):
        self._fp, self._left = fp, budget

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            raise _HeaderTooLarge
        data = self._fp.read(n)
        self._left -= len(data)
        return data

    def __getattr__(self, name):  # seek, tell, readline... of the file itself
        return getattr(self._fp, name)


def _webp_header(fp, label: str) -> ImageHeader | None:
    """Size and channels from a WebP file's first chunk (Pillow's opener reads the whole file);
    None when the file is not a WebP."""
    head = fp.read(30)
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    kind = head[12:16]
    if kind == b"VP8X":  # extended: canvas size, alpha flag
        alpha = bool(head[20] & 0x10)
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif kind == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit sizes, alpha hint
        bits = int.from_bytes(head[21:25], "little")
        width, height, alpha = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool((bits >> 28) & 1)
    elif kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: no alpha
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        alpha = False
    else:
        raise ImageError(f"{label}: not a readable image (corrupt or unsupported WebP); accepted: {ACCEPTED}")
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: the WEBP header says {width}x{height} pixels; the image is empty")
    return ImageHeader(width, height, 4 if alpha else 3, 8, "WEBP")


class ImageError(ValueError):
    """An input image that cannot be used, with what is wrong and what is accepted."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding a pixel.

    channels: those `read_image` returns (a palette expands to RGB, or RGBA with transparency;
    grey+alpha PNGs decode as RGBA). bit_depth: bits per sample in the file (1, 8, 16 or 32).
    format: Pillow's name (PNG, JPEG, MPO, BMP, TIFF, WEBP).
    """

    width: int
    height: int
    channels: int
    bit_depth: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array: width * height * channels * bytes per sample."""
        per_sample = 1 if self.bit_depth <= 8 else 2 if self.bit_depth <= 16 else 4
        return self.pixels * self.channels * per_sample

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.format}, {self.channels} channel(s), {self.bit_depth}-bit"


Source = str | os.PathLike | bytes | bytearray | memoryview


def _label(source: Source, name: str | None) -> str:
    if name:
        return name
    return "image (in memory)" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def _open_source(source: Source, label: str):
    """A binary file object on the source, after checking that there is something to read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{label}: the data is empty")
        return _bytes_io.BytesIO(bytes(source))
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"{label}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise ImageError(f"{label}: the file is empty")
    try:
        return open(path, "rb")
    except OSError as e:
        raise ImageError(f"{label}: cannot be opened ({e.strerror or e})") from None


def _channels_and_depth(im) -> tuple[int, int]:
    """(channels as decoded, bits per sample) from a lazily opened Pillow image."""
    mode = im.mode
    # Pillow opens 16-bit RGB(A) as 8-bit modes; the raw mode of the first tile keeps the depth.
    args = im.tile[0][3] if im.tile and len(im.tile[0]) > 3 else None
    rawmode = (args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args and
               isinstance(args[0], str) else "") or ""
    if mode.startswith("I;16") or ";16" in rawmode:
        depth = 16
    elif mode in ("I", "F"):
        depth = 32
    elif mode == "1":
        depth = 1
    else:
        depth = 8
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        channels = 1
    elif mode == "P":
        channels = 4 if "transparency" in im.info else 3
    elif mode in ("LA", "PA", "RGBA", "RGBa", "La"):
        channels = 4  # OpenCV decodes grey+alpha as BGRA
    else:  # RGB, YCbCr, LAB, HSV; CMYK JPEGs decode to RGB
        channels = 3
    return channels, depth


def read_header(source: Source, *, name: str | None = None) -> ImageHeader:
    """Size, channels, bit depth and format of an image file (or its bytes), without decoding.

    Raises ImageError naming the file for a missing, empty, unreadable or unaccepted one.
    """
    from PIL import Image

    label = _label(source, name)
    fp = _open_source(source, label)
    try:
        prefix = fp.read(16)
        fp.seek(0)
        webp = _webp_header(fp, label)
        if webp is not None:
            return webp
        Image.init()
        # Pillow's own opener loop without its decompression-bomb guard, which would refuse
        # large headers before naming their size; check_header applies our budgets instead.
        for fmt in _FORMATS:
            factory, accept = Image.OPEN.get(fmt, (None, None))
            if fmt == "WEBP" or factory is None or (accept and not accept(prefix)):
                continue
            fp.seek(0)
            try:
                im = factory(_BoundedReader(fp, HEADER_MAX_READ), label)
            except _HeaderTooLarge:
                raise ImageError(f"{label}: its {fmt} header (tags, metadata) is larger than "
                                 f"{HEADER_MAX_READ // 2**20} MiB; refused unread. Re-save the image "
                                 f"without metadata; accepted: {ACCEPTED}") from None
            except Exception:  # noqa: BLE001 - any parser error means "not this format"
                continue
            channels, depth = _channels_and_depth(im)
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{label}: the {fmt} header says {width}x{height} pixels; the image is empty")
            return ImageHeader(width, height, channels, depth, fmt)
        fp.seek(0)
        try:  # name a format that Pillow knows but this project does not accept (GIF, ICO ...)
            other = Image.open(_BoundedReader(fp, HEADER_MAX_READ)).format
        except Exception:  # noqa: BLE001 - unknown to Pillow too
            other = None
        what = f"a {other} image, not accepted" if other else "not a readable image (corrupt or unsupported)"
        raise ImageError(f"{label}: {what}; accepted: {ACCEPTED}")
    finally:
        fp.close()


def check_header(header: ImageHeader, name: str, *, max_pixels: int | None = MAX_PIXELS,
                 max_bytes: int | None = MAX_BYTES) -> ImageHeader:
    """Refuse, before decoding, what read_image would refuse: too many pixels, too many decoded
    bytes, or a sample depth other than 8 or 16 bits (1-bit files decode to 8). None: no limit."""
    if header.bit_depth > 16:
        raise ImageError(f"{name}: {header.describe()} samples; accepted: {ACCEPTED}")
    if max_pixels is not None and header.pixels > max_pixels:
        raise ImageError(
            f"{name}: {header.width}x{header.height} is {header.pixels / 1e6:,.1f} megapixels, over the "
            f"limit of {max_pixels / 1e6:,.1f} megapixels; downscale it first")
    if max_bytes is not None and header.decoded_bytes > max_bytes:
        raise ImageError(
            f"{name}: {header.describe()} would take {header.decoded_bytes / 2**20:,.1f} MiB decoded, over "
            f"the limit of {max_bytes / 2**20:,.1f} MiB; use fewer channels, 8 bits or a smaller image")
    return header


def read_image(source: Source, *, max_pixels: int | None = MAX_PIXELS, max_bytes: int | None = MAX_BYTES,
               name: str | None = None) -> np.ndarray:
    """Read an image file (or its bytes) as RGB(A) or grey, keeping its bit depth.

    The one guarded decoder: the header is read and checked against `max_pixels` and
    `max_bytes` (decoded width * height * channels * bytes per sample) before any decoding.
    Returns (H, W) or (H, W, 3|4) uint8 or uint16. Raises ImageError naming the file (or
    `name`) for a missing, empty, corrupt, unsupported or over-budget image.
    """
    label = _label(source, name)
    header = check_header(read_header(source, name=label), label, max_pixels=max_pixels, max_bytes=max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = np.frombuffer(source, dtype=np.uint8)
    else:
        if max_bytes is not None and os.path.getsize(source) > max_bytes:
            raise ImageError(f"{label}: the file is {os.path.getsize(source) / 2**20:,.0f} MiB, over the "
                             f"limit of {max_bytes / 2**20:,.0f} MiB")
        data = np.fromfile(source, dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise ImageError(f"{label}: not a readable image (corrupt or unsupported); accepted: {ACCEPTED}")
    if img.shape[:2] != (header.height, header.width) or img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{label}: decoded as {img.shape} {img.dtype}, not the {header.describe()} that its "
                         f"header says; accepted: {ACCEPTED}")
    if img.ndim == 3 and img.shape[2] == 3:
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second copy of a large image
    elif img.ndim == 3 and img.shape[2] == 4:
        cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA, dst=img)
    return img


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` all at once or not at all: a temporary name in the same folder,
    then os.replace, so a full disk or a kill leaves no partial file under `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB or grey uint8/uint16 array as a lossless PNG, atomically."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write(path, buf.tobytes())


def check_array(img, name: str, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Validate an in-memory image: (H, W) or (H, W, 1..4), non-empty, within max_pixels.

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
    if max_pixels is not None and img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"{name}: {img.shape[1]}x{img.shape[0]} is {img.shape[0] * img.shape[1] / 1e6:,.1f} "
                         f"megapixels, over the limit of {max_pixels / 1e6:,.1f} megapixels; downscale it first")
    return img


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
