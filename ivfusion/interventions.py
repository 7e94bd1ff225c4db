"""The three interventions of ISFuse training, also usable at inference.

An intervention replaces the input pair (visible, infrared) by a perturbed pair:
  complementary masking  (vis * M_vi, ir * M_ir), M_vi and M_ir never hide the same pixel:
                         can each modality make up for what the other lost?
  random masking         (vis * M, ir * M), one mask for both: which features survive
                         partial observation?
  modality dropout       (0, ir) or (vis, 0): what does each modality alone contribute?
Masks here are *keep* masks: 1 keeps a pixel, 0 hides it. Each mask is 1 to 6 holes of
`mask_size` pixels (squares; disks optionally, as the reference code does 30% of the time),
and hides at most half of the image. Every random choice comes from the `rng` passed in, so a
seed fixes every mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("none", "complementary", "random", "drop-vis", "drop-ir")
MASKED_KINDS = ("complementary", "random")


@dataclass(frozen=True)
class MaskConfig:
    """How masks are drawn. Defaults are the paper's (supplementary Sec. 3).

    mask_size: side of a square hole, or diameter of a disk hole, in pixels.
    min_holes, max_holes: the number of holes is uniform in [min_holes, max_holes].
    disk_prob: probability that a hole is a disk rather than a square (reference code: 0.3).
    max_fraction: upper bound on the hidden fraction of the image, per mask.
    """

    mask_size: int = 16
    min_holes: int = 1
    max_holes: int = 6
    disk_prob: float = 0.0
    max_fraction: float = 0.5

    def __post_init__(self):
        if self.mask_size < 1:
            raise ValueError(f"mask_size must be >= 1, got {self.mask_size}")
        if not 1 <= self.min_holes <= self.max_holes:
            raise ValueError(
                f"need 1 <= min_holes <= max_holes, got min_holes={self.min_holes}, max_holes={self.max_holes}"
            )
        if not 0.0 <= self.disk_prob <= 1.0:
            raise ValueError(f"disk_prob must be in [0, 1], got {self.disk_prob}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a seed (or the Generator itself)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _hole_geometry(height: int, width: int, cfg: MaskConfig) -> tuple[int, int]:
    """Hole side and the most holes that keep the hidden area within max_fraction."""
    budget = cfg.max_fraction * height * width
    side = min(cfg.mask_size, height, width, int(budget**0.5))
    side = max(side, 1)
    return side, max(1, min(cfg.max_holes, int(budget // (side * side))))


def _stamp(mask: np.ndarray, y: int, x: int, side: int, disk: bool) -> None:
    if disk:
        yy, xx = np.ogrid[:side, :side]
        c = (side - 1) / 2
        hole = (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2
        mask[y : y + side, x : x + side][hole] = 0
    else:
        mask[y : y + side, x : x + side] = 0


def _holes(height, width, cfg, rng, forbidden: np.ndarray | None = None) -> np.ndarray:
    """A keep mask of n random holes; with `forbidden`, holes avoid its hidden pixels."""
    side, most = _hole_geometry(height, width, cfg)
    n = int(rng.integers(min(cfg.min_holes, most), most + 1))
    mask = np.ones((height, width), np.float32)
    for _ in range(n):
        for _try in range(100):  # rejection sampling: only complementary masks can reject
            y = int(rng.integers(0, height - side + 1))
            x = int(rng.integers(0, width - side + 1))
            if forbidden is None or forbidden[y : y + side, x : x + side].all():
                _stamp(mask, y, x, side, bool(rng.random() < cfg.disk_prob))
                break
    return mask


def sample_masks(
    kind: str, height: int, width: int, rng=None, config: MaskConfig = MaskConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Keep masks (M_vi, M_ir) for one image, each (height, width) float32 in {0, 1}.

    kind: one of KINDS. rng: a numpy Generator or an int seed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown intervention {kind!r}; accepted: {', '.join(KINDS)}")
    rng = as_rng(rng)
    ones = np.ones((height, width), np.float32)
    if kind == "none":
        return ones, ones.copy()
    if kind == "drop-vis":
        return np.zeros_like(ones), ones
    if kind == "drop-ir":
        return ones, np.zeros_like(ones)
    m_vi = _holes(height, width, config, rng)
    if kind == "random":
        return m_vi, m_vi.copy()
    return m_vi, _holes(height, width, config, rng, forbidden=m_vi)


def sample_mask_batch(
    kind: str, batch: int, height: int, width: int, rng=None, config: MaskConfig = MaskConfig(),
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample keep masks for a batch: two (batch, 1, height, width) float32 tensors."""
    rng = as_rng(rng)
    pairs = [sample_masks(kind, height, width, rng, config) for _ in range(batch)]
    m_vi = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].to(device)
    m_ir = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].to(device)
    return m_vi, m_ir


def apply_masks(vis, ir, m_vi, m_ir):
    """(vis * M_vi, ir * M_ir) for numpy arrays or torch tensors of broadcastable shapes."""
    return vis * m_vi, ir * m_ir
