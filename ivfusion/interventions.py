"""The three interventions of ISFuse training, also usable at inference.

An intervention replaces the input pair (visible, infrared) by a perturbed pair:
  complementary masking  (vis * M_vi, ir * M_ir), M_vi and M_ir never hide the same pixel:
                         can each modality make up for what the other lost?
  random masking         (vis * M, ir * M), one mask for both: which features survive
                         partial observation?
  modality dropout       (0, ir) or (vis, 0): what does each modality alone contribute?
The registry `INTERVENTIONS` (name -> Intervention) is the one list of them; `get_intervention`
resolves a name.
Masks here are *keep* masks: 1 keeps a pixel, 0 hides it. Each mask is 1 to 6 holes of
`mask_size` pixels and hides at most half of the image; for complementary masking the two
masks together hide at most half (the supplementary's "total masked area"), and never the
same pixel. MaskConfig.style picks the sampler: "authors-code" (the authors' released
training code: squares and disks, two independent masks whose overlap a coin resolves;
training's default), "supplementary" (the supplementary's rule as written: squares only) or
"disjoint" (squares placed apart, shrinking to fit small images; the Lab's). Every random
choice comes from the `rng` passed in, so a seed fixes every mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


# The most holes a mask may have: enough for the paper's 16-pixel holes to fill max_fraction 0.5
# of its 256-pixel crop (256 * 256 / 2 / 16**2 = 128). The bound is on time: the authors-code and
# supplementary samplers make a pass over the image per hole, so the masks of one training batch
# (16 crops at 256) take 1.3 s at 128 holes against 0.09 s at the paper's 6
# (`python tools/mask_cost.py`, 2 CPU cores), and 100,000 holes made a step take 12.5 s (issue 25).
MAX_HOLES = 128
MASK_STYLES = ("authors-code", "disjoint", "supplementary")


@dataclass(frozen=True)
class MaskConfig:
    """How masks are drawn (supplementary Sec. 3: 16-pixel holes, 1 to 6 per mask, at most half
    of the image hidden).

    style: "authors-code" (default), the sampler of the authors' released training code (their
        Train.py, what ISFuse was trained with), which goes beyond the supplementary's text:
        each hole is a mask_size square or, with probability disk_prob, a disk of radius
        mask_size/2, placed uniformly; complementary masking draws two independent masks and
        gives each pixel both hide back to one of them by a fair coin.
        "supplementary", the supplementary's rule as written (Sec. 3): 1 to 6 mask_size
        squares at uniform positions, a square that would take the hidden area past
        max_fraction left out; the infrared mask of complementary masking leaves out the
        squares that would hide a pixel the visible mask hides. Squares only (no disk_prob).
        "disjoint" (the Lab's, chosen there explicitly): squares unless disk_prob says
        otherwise, the infrared holes placed away from the visible ones, and holes that shrink
        on images too small for them.
    mask_size: side of a square hole, or diameter of a disk hole, in pixels.
    min_holes, max_holes: the number of holes is uniform in [min_holes, max_holes].
    disk_prob: probability that a hole is a disk; None is the style's own (authors-code 0.3,
        disjoint 0); the supplementary style has squares only.
    max_fraction: upper bound on the hidden fraction of the image (both masks together for
        complementary masking); it never binds for the paper's 256-pixel crops, and makes holes
        shrink or drop on images too small for them.
    """

    mask_size: int = 16
    min_holes: int = 1
    max_holes: int = 6
    disk_prob: float | None = None
    max_fraction: float = 0.5
    style: str = "authors-code"

    def __post_init__(self):
        for name in ("mask_size", "min_holes", "max_holes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be a whole number, got {v!r}")
        if self.mask_size < 1:
            raise ValueError(f"mask_size must be >= 1, got {self.mask_size}")
        if self.max_holes > MAX_HOLES:
            raise ValueError(f"max_holes must be at most {MAX_HOLES} (each hole costs a pass over the image, so more "
                             f"would slow every step), got {self.max_holes}")
        if not 1 <= self.min_holes <= self.max_holes:
            raise ValueError(
                f"need 1 <= min_holes <= max_holes, got min_holes={self.min_holes}, max_holes={self.max_holes}"
            )
        if self.disk_prob is not None and not 0.0 <= self.disk_prob <= 1.0:  # NaN fails too
            raise ValueError(f"disk_prob must be in [0, 1], got {self.disk_prob}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.style not in MASK_STYLES:
            raise ValueError(f"unknown mask style {self.style!r}; accepted: {', '.join(MASK_STYLES)}")
        if self.style == "supplementary" and self.disk_prob:
            raise ValueError("the supplementary mask style has squares only; disk_prob applies to the "
                             "authors-code and disjoint styles")

    @property
    def p_disk(self) -> float:
        """The disk probability in effect."""
        if self.disk_prob is not None:
            return self.disk_prob
        return 0.3 if self.style == "authors-code" else 0.0


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a seed (or the Generator itself)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _hole_geometry(height: int, width: int, cfg: MaskConfig, masks: int = 1) -> tuple[int, int]:
    """Hole side and the most holes, over `masks` masks, that keep the hidden area within
    max_fraction of the image (holes shrink on images too small for them)."""
    budget = cfg.max_fraction * height * width
    side = max(1, min(cfg.mask_size, height, width, int((budget / masks) ** 0.5)))
    return side, max(masks, int(budget // (side * side)))


def _stamp(mask: np.ndarray, y: int, x: int, side: int, disk: bool) -> None:
    if disk:
        yy, xx = np.ogrid[:side, :side]
        c = (side - 1) / 2
        hole = (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2
        mask[y : y + side, x : x + side][hole] = 0
    else:
        mask[y : y + side, x : x + side] = 0


def _holes(height, width, side, n, cfg, rng, forbidden: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """A keep mask of up to n holes at uniform positions, and how many were placed. With a
    `forbidden` keep mask, only at positions whose whole box avoids its hidden pixels (so the
    two masks stay disjoint); there may be no such position left."""
    mask = np.ones((height, width), np.float32)
    ny, nx = height - side + 1, width - side + 1
    if forbidden is None:
        free = None
    else:  # box sums of the forbidden hidden pixels by an integral image
        c = np.pad((forbidden == 0).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        boxes = c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]
        free = np.flatnonzero(boxes[:ny, :nx].ravel() == 0)
    for placed in range(n):
        if free is None:
            y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx))
        elif free.size:
            y, x = divmod(int(free[rng.integers(0, free.size)]), nx)
        else:
            return mask, placed
        _stamp(mask, y, x, side, bool(rng.random() < cfg.p_disk))
    return mask, n


def _keep_all(height, width, rng, config):
    ones = np.ones((height, width), np.float32)
    return ones, ones.copy()


def _drop_visible(height, width, rng, config):
    return np.zeros((height, width), np.float32), np.ones((height, width), np.float32)


def _drop_infrared(height, width, rng, config):
    return np.ones((height, width), np.float32), np.zeros((height, width), np.float32)


def _authors_code_mask(height, width, rng, config, hidden: np.ndarray | None = None, share: float = 1.0,
                masks: int = 1) -> np.ndarray:
    """The authors' code's sampler: 1-6 holes, each a square (side mask_size) or, with p_disk, a disk
    of radius mask_size // 2 whose centre keeps it inside the image where it fits. A hole that
    would take the hidden area (with `hidden`, the other mask's too) past max_fraction is left
    out; holes shrink only on images smaller than themselves (sized for `masks` masks).
    `share` < 1 keeps this mask to that share of the budget (room for the second complementary
    mask on small images)."""
    side, _ = _hole_geometry(height, width, config, masks=masks)
    budget = share * config.max_fraction * height * width
    mask = np.ones((height, width), np.float32)
    union = np.zeros((height, width), bool) if hidden is None else hidden.copy()
    yy, xx = np.ogrid[:height, :width]
    for _ in range(int(rng.integers(config.min_holes, config.max_holes + 1))):
        hole = np.zeros((height, width), bool)
        if rng.random() < config.p_disk:
            rr = side // 2
            cy = int(rng.integers(rr, height - rr + 1)) if height - rr > rr else rr
            cx = int(rng.integers(rr, width - rr + 1)) if width - rr > rr else rr
            hole = (yy - cy) ** 2 + (xx - cx) ** 2 <= rr * rr
        else:
            y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            hole[y0 : y0 + side, x0 : x0 + side] = True
        if (union | hole).sum() <= budget:
            union |= hole
            mask[hole] = 0
    return mask


def _supplementary_mask(height, width, rng, config, hidden: np.ndarray | None = None) -> np.ndarray:
    """The supplementary's rule as written: min_holes to max_holes squares of side mask_size (at
    most the image's side) at uniform positions; a square that would take the hidden area (with
    `hidden`, the other mask's too) past max_fraction of the image, or that would hide a pixel
    `hidden` hides, is left out."""
    side = min(config.mask_size, height, width)
    budget = config.max_fraction * height * width
    mask = np.ones((height, width), np.float32)
    union = np.zeros((height, width), bool) if hidden is None else hidden.copy()
    for _ in range(int(rng.integers(config.min_holes, config.max_holes + 1))):
        y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        hole = np.zeros((height, width), bool)
        hole[y0 : y0 + side, x0 : x0 + side] = True
        if (hidden is not None and (hole & hidden).any()) or (union | hole).sum() > budget:
            continue
        union |= hole
        mask[hole] = 0
    return mask


def _random(height, width, rng, config):
    if config.style in ("authors-code", "supplementary"):
        sample = _authors_code_mask if config.style == "authors-code" else _supplementary_mask
        m = sample(height, width, rng, config)
        return m, m.copy()
    side, most = _hole_geometry(height, width, config)
    n = int(rng.integers(min(config.min_holes, most), min(config.max_holes, most) + 1))
    m, _ = _holes(height, width, side, n, config, rng)
    return m, m.copy()


def _complementary(height, width, rng, config):
    if config.style == "supplementary":
        m_vi = _supplementary_mask(height, width, rng, config)
        return m_vi, _supplementary_mask(height, width, rng, config, hidden=m_vi == 0)
    if config.style == "authors-code":
        m_vi = _authors_code_mask(height, width, rng, config, share=0.5, masks=2)
        m_ir = _authors_code_mask(height, width, rng, config, hidden=m_vi == 0, masks=2)
        both = (m_vi == 0) & (m_ir == 0)
        coin = rng.random((height, width)) < 0.5  # a fair coin per pixel that both hide
        m_vi[both & coin] = 1
        m_ir[both & ~coin] = 1
        return m_vi, m_ir
    # the union of both masks' holes stays within max_fraction too
    side, most = _hole_geometry(height, width, config, masks=2)
    n_vi = int(rng.integers(min(config.min_holes, most - 1), min(config.max_holes, most - 1) + 1))
    n_ir = int(rng.integers(min(config.min_holes, most - n_vi), min(config.max_holes, most - n_vi) + 1))
    for attempt in range(1, 31):
        m_vi, _ = _holes(height, width, side, n_vi, config, rng)
        m_ir, placed = _holes(height, width, side, n_ir, config, rng, forbidden=m_vi)
        if placed == n_ir:
            break
        if attempt % 10 == 0:  # small images: no room beside the visible holes, so shrink
            side = max(1, side // 2)
    return m_vi, m_ir


@dataclass(frozen=True)
class Intervention:
    """One intervention of the registry.

    name: the public name (CLI, API, npz, docs). label: the words the UI shows.
    masking: True for the two masking interventions (the ones L_inv uses).
    sample(height, width, rng, config) -> (m_visible, m_infrared): keep masks, each
        (height, width) float32 in {0, 1}; rng is a numpy Generator, config a MaskConfig.
    """

    name: str
    label: str
    masking: bool
    sample: Callable[[int, int, np.random.Generator, MaskConfig], tuple[np.ndarray, np.ndarray]]


INTERVENTIONS: dict[str, Intervention] = {
    iv.name: iv
    for iv in (
        Intervention("none", "none", False, _keep_all),
        Intervention("complementary", "complementary masking", True, _complementary),
        Intervention("random", "random masking", True, _random),
        Intervention("drop-visible", "drop visible", False, _drop_visible),
        Intervention("drop-infrared", "drop infrared", False, _drop_infrared),
    )
}


def get_intervention(name: str) -> Intervention:
    """The registry entry for `name`."""
    iv = INTERVENTIONS.get(name)
    if iv is None:
        raise ValueError(f"unknown intervention {name!r}; accepted: {', '.join(INTERVENTIONS)}")
    return iv


def sample_masks(
    kind: str, height: int, width: int, rng=None, config: MaskConfig = MaskConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Keep masks (M_vi, M_ir) for one image, each (height, width) float32 in {0, 1}.

    kind: an INTERVENTIONS name. rng: a numpy Generator or an int seed.
    """
    return get_intervention(kind).sample(height, width, as_rng(rng), config)
