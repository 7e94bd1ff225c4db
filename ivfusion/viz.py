"""Figures for people: bare heat maps with colour bars, scene edges, difference maps.

Everything here returns (H, W, 3) uint8 RGB numpy images, drawn with numpy, OpenCV and
Pillow only (no matplotlib figure, no pyplot): the Intervention Lab draws a dozen of these per
request inside its latency budget. Matplotlib is used only as a source of its colour maps
and of the DejaVu Sans font it ships.

A heat map here carries no text but its colour bar; `with_title` puts a short label strip
over a panel, and the page writes the longer captions, so they stay readable and unclipped
at any screen width.

    +------------------------------+--+----------+
    | heat map (scene edges drawn  |  | 1.0      |
    | as dark lines; every other   |  | - eta    |
    | pixel is its bar colour)     |  | 0.0      |
    +------------------------------+--+----------+

Conventions: values are floats; `vmin`/`vmax` fix the colour scale (so two maps with the same
scale can be compared); `marks` draws reference lines on the colour bar (e.g. the gate
target eta).
"""
from __future__ import annotations

import functools
import os
from typing import Iterable, Sequence

import cv2
import numpy as np

GATE_CMAP = "viridis"  # perceptually uniform; dark = low gate, yellow = high gate
CHANGE_CMAP = "magma"  # black = no change, bright = large change
DIVERGING_CMAP = "RdBu_r"  # signed changes: blue = down, white = 0, red = up
EDGE_DARKEN = 0.45  # scene edges drawn over a heat map keep this share of the colour's brightness
PANEL_MAX_SIDE = 640  # heat maps are drawn at most this large (long side)
PANEL_MIN_SIDE = 400  # and at least this large, so that colour-bar labels stay readable
# Gate colour scales: "fixed" (the Lab's default) is the gates' whole range 0..1, comparable
# across images and models, and honest about how little a gate varies; "stretched" spans the
# maps' own 1st-99th percentiles, to see the structure of a gate that varies by a few
# hundredths (the bundled v2 weights' gates do), and its caption says how narrow that is.
GATE_SCALES = ("fixed", "stretched")
MIN_GATE_SPAN = 0.01  # a stretched scale never spans less: smaller differences are noise-like

_BG = (255, 255, 255)
_INK = (20, 20, 20)


# ----------------------------------------------------------------------------- basics
@functools.lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colour map (read-only)."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError as e:
        raise ValueError(f"unknown colour map {name!r}") from e
    lut = np.rint(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colorize(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = GATE_CMAP) -> np.ndarray:
    """Map a 2-D float array to RGB with a colour map; values outside [vmin, vmax] saturate,
    NaN shows as vmin."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise ValueError(f"colorize takes a 2-D array, got shape {values.shape}")
    if not vmax > vmin:
        raise ValueError(f"need vmax > vmin, got vmin={vmin}, vmax={vmax}")
    scale = 255.0 / (vmax - vmin)
    idx = values * np.float32(scale)
    idx += np.float32(0.5 - vmin * scale)  # + 0.5: round to the nearest level on truncation
    np.clip(idx, 0.0, 255.0, out=idx)
    if np.isnan(idx.sum()):  # NaN -> vmin
        idx[np.isnan(idx)] = 0.0
    idx = idx.astype(np.uint8)
    return cv2.LUT(cv2.merge([idx, idx, idx]), _lut3(cmap))


@functools.lru_cache(maxsize=16)
def _lut3(name: str) -> np.ndarray:
    return np.ascontiguousarray(colormap_lut(name).reshape(256, 1, 3))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (or uint8) -> uint8, rounding to the nearest grey level."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(x.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grey (H, W) or (H, W, 1) -> (H, W, 3); RGB(A) -> RGB; always uint8."""
    img = to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def display_size(h: int, w: int, max_side: int = PANEL_MAX_SIDE, min_side: int = PANEL_MIN_SIDE) -> tuple[int, int]:
    """(height, width) for showing an h x w image: the long side brought into [min_side, max_side]."""
    long = max(h, w)
    s = max_side / long if long > max_side else (min_side / long if long < min_side else 1.0)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_for_display(img: np.ndarray, size: tuple[int, int], smooth: bool = True) -> np.ndarray:
    """Resize to (height, width): area averaging to shrink; bilinear (smooth) or nearest
    (to show true pixels, e.g. a coarse gate map) to enlarge."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    if h * w < img.shape[0] * img.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST
    return cv2.resize(img, (w, h), interpolation=interp)


# ----------------------------------------------------------------------------- text
@functools.lru_cache(maxsize=32)
def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)
    except (ImportError, OSError):  # pragma: no cover - matplotlib always ships DejaVu
        return ImageFont.load_default(size)


@functools.lru_cache(maxsize=512)
def _text_width_cached(text: str, size: int, bold: bool) -> int:
    return int(np.ceil(_font(size, bold).getlength(text)))


def _text_width(text: str, font) -> int:
    return _text_width_cached(text, font.size, "Bold" in str(getattr(font, "path", "")))


# ----------------------------------------------------------------------------- colour bar
def _nice_ticks(vmin: float, vmax: float) -> list[float]:
    span = vmax - vmin
    raw = span / 4
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = np.ceil(vmin / step) * step
    return [float(t) for t in np.arange(first, vmax + step * 1e-6, step)]


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels for `ticks`, with as many decimals as it takes to tell them apart."""
    labels = [_fmt(t) for t in ticks]
    digits = 2
    while len(set(labels)) < len(labels) and digits < 6:
        digits += 1
        labels = [f"{t:.{digits}f}" for t in ticks]
    return labels


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2g}" if abs(v) < 0.1 else f"{v:.2f}".rstrip("0").rstrip(".")


def colorbar(height: int, vmin: float = 0.0, vmax: float = 1.0, cmap: str = GATE_CMAP, *,
             ticks: Sequence[float] | None = None, marks: Iterable[tuple[float, str]] = (),
             font_size: int = 16, bar_width: int | None = None) -> np.ndarray:
    """A vertical colour bar `height` pixels tall (vmax at the top) with tick labels on its
    right and reference `marks` [(value, label)] drawn as red lines across the bar.
    Returns a read-only array (bars are cached: panels on one scale share one)."""
    ticks = tuple(_nice_ticks(vmin, vmax) if ticks is None else ticks)
    return _colorbar(int(height), float(vmin), float(vmax), cmap, ticks, tuple(marks), int(font_size), bar_width)


@functools.lru_cache(maxsize=64)
def _colorbar(height, vmin, vmax, cmap, ticks, marks, font_size, bar_width) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _font(font_size)
    bar_w = bar_width or max(14, font_size)
    tick_labels = _tick_labels(ticks)
    labels = tick_labels + [lab for _, lab in marks]
    label_w = max([_text_width(s, font) for s in labels] + [0])
    pad_top = font_size // 2 + 2
    inner = max(8, height - 2 * pad_top)
    width = 6 + bar_w + 8 + label_w + 6
    canvas = np.full((height, width, 3), _BG, np.uint8)
    ramp = np.linspace(vmax, vmin, inner, dtype=np.float32)[:, None].repeat(bar_w, 1)
    canvas[pad_top : pad_top + inner, 6 : 6 + bar_w] = colorize(ramp, vmin, vmax, cmap)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    draw.rectangle([6, pad_top, 6 + bar_w - 1, pad_top + inner - 1], outline=_INK)

    def y_of(v: float) -> int:
        return int(round(pad_top + (vmax - v) / (vmax - vmin) * (inner - 1)))

    x_text = 6 + bar_w + 8
    mark_ys = [y_of(v) for v, _ in marks if vmin <= v <= vmax]
    for t, label in zip(ticks, tick_labels):
        if vmin - 1e-9 <= t <= vmax + 1e-9:
            y = y_of(t)
            draw.line([6 + bar_w, y, 6 + bar_w + 4, y], fill=_INK, width=1)
            if all(abs(y - ym) > font_size for ym in mark_ys):  # a mark's label wins the space
                draw.text((x_text, y), label, fill=_INK, font=font, anchor="lm")
    for v, lab in marks:
        if vmin <= v <= vmax:
            y = y_of(v)
            draw.line([2, y, 6 + bar_w + 4, y], fill=(230, 30, 30), width=3)
            draw.text((x_text, y), lab, fill=(200, 20, 20), font=_font(font_size, True), anchor="lm")
    out = np.asarray(img).copy()
    out.setflags(write=False)
    return out


def gate_range(maps: Iterable[np.ndarray], scale: str = "fixed") -> tuple[float, float]:
    """(vmin, vmax) of a gate colour scale (see GATE_SCALES) shared by `maps`, so that maps
    shown side by side (a level's clean and intervened gates) can be compared."""
    if scale == "fixed":
        return 0.0, 1.0
    if scale != "stretched":
        raise ValueError(f"unknown gate colour scale {scale!r}; accepted: {', '.join(GATE_SCALES)}")
    values = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    if hi - lo < MIN_GATE_SPAN:
        mid = min(max((lo + hi) / 2, MIN_GATE_SPAN / 2), 1 - MIN_GATE_SPAN / 2)
        lo, hi = mid - MIN_GATE_SPAN / 2, mid + MIN_GATE_SPAN / 2
    return lo, hi


def grey_level_scale(values_255: np.ndarray, floor: float = 1.0) -> float:
    """A round upper end for a colour scale of grey-level differences (at least `floor`)."""
    top = float(np.max(values_255)) if np.size(values_255) else 0.0
    top = max(top, floor)
    for nice in (1, 2, 4, 8, 16, 32, 64, 128, 255):
        if top <= nice:
            return float(nice)
    return 255.0


def difference_map(fused_a: np.ndarray, fused_b: np.ndarray) -> np.ndarray:
    """|a - b| for two (H, W) float images of the same size, float32."""
    a, b = np.asarray(fused_a, np.float32), np.asarray(fused_b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"difference of images of different sizes: {a.shape} and {b.shape}")
    return np.abs(a - b)


def stacked(images: Sequence[np.ndarray], gap: int = 12) -> np.ndarray:
    """Images (grey or RGB) one above the other, left-aligned, on white."""
    rgb = [to_rgb(i) for i in images]
    w = max(i.shape[1] for i in rgb)
    parts = []
    for k, i in enumerate(rgb):
        parts.append(np.concatenate([i, np.full((i.shape[0], w - i.shape[1], 3), _BG, np.uint8)], 1))
        if k < len(rgb) - 1:
            parts.append(np.full((gap, w, 3), _BG, np.uint8))
    return np.concatenate(parts, axis=0)


def with_title(img: np.ndarray, text: str, size: int = 28) -> np.ndarray:
    """`img` (grey or RGB) under a white strip holding `text`, left-aligned, `size` px high: the
    label travels with the picture (a page caption is lost when a phone pans or zooms it)."""
    from PIL import Image, ImageDraw

    img = to_rgb(img)
    strip = Image.new("RGB", (img.shape[1], round(size * 1.5)), tuple(int(v) for v in _BG))
    ImageDraw.Draw(strip).text((2, strip.height // 2), text, fill=_INK, font=_font(size, True), anchor="lm")
    return np.concatenate([np.asarray(strip), img], axis=0)


def pad_top(img: np.ndarray, pixels: int) -> np.ndarray:
    """`img` with a white strip on top (room for a viewer's buttons over the picture)."""
    img = to_rgb(img)
    return np.concatenate([np.full((pixels, img.shape[1], 3), _BG, np.uint8), img], axis=0)


def side_by_side(images: Sequence[np.ndarray], gap: int = 6, equal: bool = False) -> np.ndarray:
    """Images (grey or RGB) next to each other, top-aligned, on white; `equal`: each padded on
    the right to the widest, so that the panels form a regular grid."""
    rgb = [to_rgb(i) for i in images]
    h = max(i.shape[0] for i in rgb)
    w = max(i.shape[1] for i in rgb) if equal else 0
    parts = []
    for k, i in enumerate(rgb):
        if i.shape[0] < h or i.shape[1] < w:
            canvas = np.full((h, max(w, i.shape[1]), 3), _BG, np.uint8)
            canvas[:i.shape[0], :i.shape[1]] = i
            i = canvas
        parts.append(i)
        if k < len(rgb) - 1:
            parts.append(np.full((h, gap, 3), _BG, np.uint8))
    return np.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------- bare heat maps
def edge_mask(base: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The scene's edges at display `size` (height, width): Canny on `base` in grey, with
    thresholds from the image's own gradients, so that dark night scenes get edges too."""
    grey = cv2.cvtColor(to_rgb(base), cv2.COLOR_RGB2GRAY)
    if grey.shape[:2] != tuple(size):
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    mag = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    hi = max(float(np.percentile(mag[::4, ::4], 93)), 8.0)
    return cv2.Canny(grey, hi / 2, hi, L2gradient=True) > 0


def edge_overlay(heat_rgb: np.ndarray, base: np.ndarray | None = None, darken: float = EDGE_DARKEN,
                 edges: np.ndarray | None = None) -> np.ndarray:
    """The scene's edges (`edge_mask` of `base`, or `edges` given) drawn as darker lines over a
    heat map. Unlike an alpha blend, every other pixel keeps exactly its colour-bar colour."""
    if edges is None:
        edges = edge_mask(base, heat_rgb.shape[:2])
    out = heat_rgb.copy()
    out[edges] = (out[edges].astype(np.float32) * darken).astype(np.uint8)
    return out


def heat_image(values: np.ndarray, *, base: np.ndarray | None = None, edges: np.ndarray | None = None,
               vmin: float = 0.0, vmax: float = 1.0,
               cmap: str = GATE_CMAP, ticks: Sequence[float] | None = None,
               marks: Iterable[tuple[float, str]] = (), smooth: bool = True, bar: bool = True,
               max_side: int = PANEL_MAX_SIDE, min_side: int = PANEL_MIN_SIDE) -> np.ndarray:
    """A heat map of `values` (2-D float) with its colour bar on the right (bar=False: none,
    for a map that shares the bar of its neighbour) and no text above: the page writes the
    caption, so it stays readable at any screen width.

    base: an image whose edges are drawn over the map (see `edge_overlay`), or None; edges:
    its precomputed `edge_mask` at the display size (several maps of one scene share it).
    Returns (h, w, 3) uint8, the map's long side in [min_side, max_side].
    """
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise ValueError(f"heat_image takes a 2-D array, got shape {values.shape}")
    if edges is not None:
        size = edges.shape[:2]
    else:
        ref = base if base is not None else values
        size = display_size(*ref.shape[:2], max_side=max_side, min_side=min_side)
    heat = colorize(resize_for_display(values, size, smooth), vmin, vmax, cmap)
    if edges is not None or base is not None:
        heat = edge_overlay(heat, base, edges=edges)
    if not bar:
        return heat
    tick_size = int(np.clip(round(size[1] / 26), 14, 26))
    bar = colorbar(size[0], vmin, vmax, cmap, ticks=ticks, marks=marks, font_size=tick_size)
    return np.concatenate([heat, np.full((size[0], 4, 3), _BG, np.uint8), bar], axis=1)


def gate_image(gate: np.ndarray, base: np.ndarray | None, vmin: float, vmax: float, eta: float,
               bar: bool = True, edges: np.ndarray | None = None) -> np.ndarray:
    """One gate map (any resolution, values in [0, 1]) on the scale vmin..vmax, eta marked."""
    fixed = (vmin, vmax) == (0.0, 1.0)
    return heat_image(gate, base=base, edges=edges, vmin=vmin, vmax=vmax, cmap=GATE_CMAP, bar=bar,
                      ticks=(0.0, 0.5, 1.0) if fixed else None, marks=[(eta, f"\u03b7={eta:g}")])


CHANGE_FLOOR = 0.05  # a gate change scale spans at least +-0.05: shifts of a few thousandths stay near white


def change_range(change: np.ndarray, floor: float = CHANGE_FLOOR) -> float:
    """The half-width of a colour scale centred on 0 for a signed map: its 99th percentile of
    |change| (so that a few extreme pixels do not wash the rest out), at least `floor`, so
    that a shift of a few thousandths (rounding-level for a gate in 0..1) is not painted as
    if the gate had opened everywhere."""
    a = np.abs(np.asarray(change, np.float32))
    step = max(1, int((a.size / 200_000) ** 0.5))  # a subsample estimates the percentile well enough
    return max(float(np.percentile(a[::step, ::step], 99)) if a.size else 0.0, floor)


def gate_change_image(change: np.ndarray, base: np.ndarray | None, limit: float | None = None,
                      edges: np.ndarray | None = None) -> np.ndarray:
    """A signed gate change (intervened - clean) on a diverging scale centred on 0: red where
    the intervention opened the gate, blue where it closed it, white where it did not move."""
    limit = change_range(change) if limit is None else float(limit)
    return heat_image(change, base=base, edges=edges, vmin=-limit, vmax=limit, cmap=DIVERGING_CMAP,
                      ticks=(-limit, 0.0, limit))


def difference_image(fused_a: np.ndarray, fused_b: np.ndarray) -> tuple[np.ndarray, str]:
    """|fused_a - fused_b| in grey levels as a bare heat map, and a one-line caption."""
    diff = difference_map(fused_a, fused_b) * 255.0
    vmax = grey_level_scale(diff)
    changed = float((diff >= 1.0).mean()) * 100.0
    caption = f"grey levels: mean {diff.mean():.2f}, max {diff.max():.0f}; {changed:.1f}% of pixels changed"
    return heat_image(diff, vmin=0.0, vmax=vmax, cmap=CHANGE_CMAP), caption
