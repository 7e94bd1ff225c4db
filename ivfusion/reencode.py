"""Exact local re-encoding: recompute an encoder's features only around changed input pixels.

The ISFuse encoder is local: 3x3 convolutions (zero padding), BatchNorm (affine in eval),
LeakyReLU and 2x2 max-pooling between stages. A changed input pixel therefore changes the
features only within a bounded distance (`Geometry.influence`), and the features of a crop of
the input equal the full image's features except within a bounded band along the crop's
inner edges (`Geometry.margin`), provided the crop starts on the pooling grid
(`Geometry.align`). `reencode` uses both to rebuild the features of an intervened input from
the clean features plus the encoder run on a few crops, with the same values as a full
forward (to float rounding: the convolution kernels may sum in another order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Geometry:
    """align: crops start on multiples of this (the coarsest level's pixel, in input pixels).
    influence: a changed input pixel changes features whose footprint lies within this many
        input pixels of it, at every level.
    margin: a crop's features are exact except within this many input pixels of an inner
        crop edge (a multiple of align)."""

    align: int
    influence: int
    margin: int

    @classmethod
    def of(cls, encoder: nn.Module) -> "Geometry":
        """From an `Encoder`'s own description: per-stage conv reach and the pooling factor."""
        radii, pool = encoder.stage_radii(), encoder.pool
        align = pool ** (len(radii) - 1)
        influence = 0
        for offset in range(align):  # where the changed pixel sits on the pooling grid
            lo = hi = offset
            for level, r in enumerate(radii):
                if level:
                    lo, hi = lo // pool, hi // pool  # pooled cell i holds pixels pool*i .. pool*i + pool - 1
                lo, hi = lo - r, hi + r
                s = pool ** level
                influence = max(influence, offset - lo * s, hi * s + s - 1 - offset)
        band, margin = 0, 0
        for level, r in enumerate(radii):  # contaminated band along an inner crop edge
            band = (math.ceil(band / pool) if level else 0) + r
            margin = max(margin, band * pool ** level)
        return cls(align, influence, -(-margin // align) * align)


def dirty_boxes(changed: np.ndarray, geometry: Geometry) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1), in input pixels, that together cover every feature the changed
    pixels (a (H, W) bool array) can reach: the bounding boxes of the connected parts of the
    changed pixels dilated by geometry.influence, widened to the pooling grid (y0, x0 on
    multiples of geometry.align; y1, x1 too, or clipped to the image)."""
    h, w = changed.shape
    d, a = geometry.influence, geometry.align
    grown = cv2.dilate(changed.astype(np.uint8), np.ones((2 * d + 1, 2 * d + 1), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    boxes = []
    for x, y, bw, bh, _ in stats[1:n]:
        boxes.append((y // a * a, min(h, -(-(y + bh) // a) * a), x // a * a, min(w, -(-(x + bw) // a) * a)))
    return boxes


def reencode(encoder: nn.Module, x: Tensor, clean: list[Tensor] | Callable[[], list[Tensor]], changed: np.ndarray,
             geometry: Geometry, max_fraction: float = 0.6, bucket: int = 32) -> tuple[list[Tensor], str]:
    """The encoder's features of `x` (1, 1, H, W), given the features `clean` (or a callable
    that returns them, called only if needed) of an input that differs from x only where
    `changed` ((H, W) bool) is True.

    Returns (features, how): how is "local" (crops around the changes, pasted into a copy of
    `clean`) or "full" (a full forward, when the crops would cover more than max_fraction of
    the image or the image is too small for crops). All crops get one size if that stays within
    max_fraction (the largest need, rounded up to `bucket`, grown into the image; else each its
    own need, rounded up) and crops of one size run as one batch: on a busy machine with
    two threads, each small call waits on thread barriers (ten small crop calls measured 2x a
    full encode; one batched call far less), and each new shape costs oneDNN a new primitive.
    """
    h, w = changed.shape
    m, a = geometry.margin, geometry.align
    boxes = dirty_boxes(changed, geometry)
    up = lambda n: -(-n // bucket) * bucket
    need = [(up(min(h, y1 + m) - max(0, y0 - m)), up(min(w, x1 + m) - max(0, x0 - m))) for y0, y1, x0, x1 in boxes]
    th, tw = max((n[0] for n in need), default=0), max((n[1] for n in need), default=0)
    crops = None
    for sizes in ([(th, tw)] * len(boxes), need):  # one size for all crops (one batch), else one per crop
        crops = [(*_span(y0 - m, h, a, sh), *_span(x0 - m, w, a, sw)) for (y0, _, x0, _), (sh, sw) in zip(boxes, sizes)]
        if sum((cy1 - cy0) * (cx1 - cx0) for cy0, cy1, cx0, cx1 in crops) <= max_fraction * h * w:
            break
    else:
        return encoder(x), "full"
    if any(min(cy1 - cy0, cx1 - cx0) < 2 * a for cy0, cy1, cx0, cx1 in crops):
        return encoder(x), "full"
    out = [f.clone() for f in (clean() if callable(clean) else clean)]
    pool = encoder.pool
    groups: dict[tuple[int, int], list] = {}  # crops of one shape run as one batch
    for box, crop in zip(boxes, crops):
        groups.setdefault((crop[1] - crop[0], crop[3] - crop[2]), []).append((box, crop))
    for group in groups.values():
        batch = torch.cat([x[..., cy0:cy1, cx0:cx1] for _, (cy0, cy1, cx0, cx1) in group]).contiguous()
        feats = encoder(batch)
        for i, ((y0, y1, x0, x1), (cy0, cy1, cx0, cx1)) in enumerate(group):
            for level, (dst, src) in enumerate(zip(out, feats)):
                s = pool ** level
                hl, wl = dst.shape[-2:]
                ty0, tx0 = y0 // s, x0 // s
                ty1 = hl if y1 == h else y1 // s  # at the image's end the floored size decides
                tx1 = wl if x1 == w else x1 // s
                sy0, sx0 = ty0 - cy0 // s, tx0 - cx0 // s
                dst[..., ty0:ty1, tx0:tx1] = src[i:i + 1, :, sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0]
    return out, "local"


def zero_input_size(n: int, geometry: Geometry) -> int:
    """The side of the small all-zero image whose features give those of an all-zero image of
    side n (`expand_zero_features`): n itself when that is no larger. It keeps n's remainder
    modulo geometry.align, so that both images end on the pooling grid the same way."""
    small = 2 * geometry.margin + 2 * geometry.align + n % geometry.align
    return min(n, small)


def _zero_index(n: int, small: int, s: int, geometry: Geometry) -> Tensor:
    """For each of the n // s feature rows of an all-zero image of side n (a level of scale s),
    the row of the small zero image's features that holds the same value.

    Each full row is read from a window of the full image of side `small` that starts on the
    pooling grid and leaves the row more than geometry.margin from the window's inner edges,
    where a crop's features are exact (`Geometry`); every such window of an all-zero image is
    the small image itself. Rows near the top (bottom) edge come from the window at that edge,
    the others from a window whose offset keeps their phase on the pooling grid."""
    nl, sl = n // s, small // s
    if small == n:
        return torch.arange(nl)
    m, period = -(-geometry.margin // s), geometry.align // s
    offset = (n - small) // s  # (n - small) is a multiple of align, hence of s
    top, bottom = (small - geometry.margin) // s, offset + m
    i = torch.arange(nl)
    middle = m + (i - m) % period
    return torch.where(i < top, i, torch.where(i >= bottom, i - offset, middle))


def expand_zero_features(small: list[Tensor], h: int, w: int, geometry: Geometry, pool: int) -> list[Tensor]:
    """The encoder's features of an all-zero (h, w) image, exactly, from `small`: its
    features of an all-zero image of `zero_input_size(h)` x `zero_input_size(w)` (a few dozen
    pixels a side). The encoder is translation-equivariant on the pooling grid and local
    (`Geometry`), so every feature of the large zero image equals one of the small one's.
    Outputs keep `small`'s memory format (channels-last stays channels-last)."""
    hs, ws = zero_input_size(h, geometry), zero_input_size(w, geometry)
    out = []
    for level, f in enumerate(small):
        s = pool ** level
        rows = _zero_index(h, hs, s, geometry).to(f.device)
        cols = _zero_index(w, ws, s, geometry).to(f.device)
        if f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous():
            nhwc = f.permute(0, 2, 3, 1)
            out.append(nhwc.index_select(2, cols).index_select(1, rows).permute(0, 3, 1, 2))
        else:
            out.append(f.index_select(3, cols).index_select(2, rows))
    return out


def _span(lo: int, size: int, align: int, length: int) -> tuple[int, int]:
    """A window [lo', lo' + length) clipped to [0, size), starting at or before `lo` on a
    multiple of `align`; moved back from the image's end where needed (there its length is
    what the alignment leaves, the same for every window at that end)."""
    lo = max(0, lo) // align * align
    hi = min(size, lo + length)
    if hi - lo < length:
        lo = max(0, (size - length) // align * align)
    return lo, hi
