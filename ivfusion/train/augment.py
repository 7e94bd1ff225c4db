"""Data made for night robustness: what each batch holds and how its crops are altered.

The authors' recipe samples pairs uniformly and only flips and rotates its crops. With
roadscene/train (171 daylight pairs) beside msrs/train (mostly night), a batch of 16 then holds
about 1.7 night crops, and a model trained so darkens unseen night scenes (docs/research/
v3-cpu.md). AugmentConfig's settings, each off by default (the authors' recipe):

    night_share  the share of every batch drawn from night pairs (a per-batch quota)
    photometric  a random gain and gamma per modality
    darken       a daylight pair turned into a night-like one: visible darkened with sensor
                 noise, infrared rescaled toward the night range
    zoom         random-resized crops: a region up to `zoom` x the crop side, resized to the crop,
                 so that a crop holds scene context as a full test image does
    flat_below   a crop whose two modalities are both nearly flat is drawn again

L_f's targets are the altered sources (the network sees and is scored against the same images),
so the objective stays consistent. Every bound below is a module constant that the tests read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# photometric: y -> clip(gain * y ** gamma), per modality
PHOTO_GAIN = (0.7, 1.3)
PHOTO_GAMMA = (0.7, 1.4)
# darken (daylight pairs only): visible -> clip(gain * y ** gamma + noise), infrared -> gain * ir.
# Night MSRS pairs have visible means of 0.04-0.2 and infrared means of 0.05-0.12 (0-1); the
# daylight ones 0.35-0.8 and 0.36-0.71, so these ranges carry a daylight pair into the night's.
DARK_VIS_GAIN = (0.05, 0.4)
DARK_VIS_GAMMA = (1.0, 2.0)
DARK_NOISE_SIGMA = (0.002, 0.02)  # additive Gaussian sensor noise, after darkening
DARK_IR_GAIN = (0.1, 0.6)
FLAT_TRIES = 10  # crops drawn before a flat one is kept anyway (a pair may be flat everywhere)


@dataclass
class AugmentConfig:
    """What each batch holds and how its crops are altered; every setting off by default."""

    night_share: float = 0.0  # share of each batch from night pairs; 0: uniform over all pairs
    night_below: float = 0.25  # a pair is "night" when its visible luminance mean (0-1) is below this
    photometric: float = 0.0  # probability, per sample and modality, of a random gain and gamma
    darken: float = 0.0  # probability, per daylight sample, of making it night-like
    zoom: float = 1.0  # largest cropped region's side, as a multiple of the crop side (1: plain crops)
    flat_below: float = 0.0  # redraw a crop whose two modalities both have a std below this (0: off)

    def __post_init__(self):
        for name in ("night_share", "photometric", "darken"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"--augment.{name.replace('_', '-')} must be a probability in [0, 1], got {v!r}")
        if not (0.0 < self.night_below < 1.0):
            raise ValueError(f"--augment.night-below must be in (0, 1), got {self.night_below!r}")
        if not (math.isfinite(self.zoom) and 1.0 <= self.zoom <= 8.0):
            raise ValueError(f"--augment.zoom must be in [1, 8], got {self.zoom!r}")
        if not (0.0 <= self.flat_below < 0.5):
            raise ValueError(f"--augment.flat-below must be in [0, 0.5), got {self.flat_below!r}")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def region_side(rng: np.random.Generator, crop: int, h: int, w: int, zoom: float) -> int:
    """The side of the region to crop before resizing to `crop`: log-uniform in
    [crop, min(zoom * crop, h, w)], so zoomed-out and plain crops are alike in number."""
    top = min(zoom * crop, h, w)
    if top <= crop:
        return crop
    return int(round(math.exp(rng.uniform(math.log(crop), math.log(top)))))


def resize_to(img: np.ndarray, crop: int) -> np.ndarray:
    """(C, s, s) float32 -> (C, crop, crop); area averaging, as a downscaled test image would be."""
    if img.shape[-1] == crop:
        return img
    return np.stack([cv2.resize(c, (crop, crop), interpolation=cv2.INTER_AREA) for c in img])


def is_flat(img: np.ndarray, below: float) -> bool:
    """Both modalities of a (2, H, W) crop have a spatial std below `below`."""
    return bool(below > 0 and img[0].std() < below and img[1].std() < below)


def photometric(img: np.ndarray, night: bool, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The (2, H, W) [visible Y, IR] crop with the altered exposure; values stay in [0, 1].
    Draws from `rng` in a fixed order, so a sample's alteration is a function of its key alone."""
    vis, ir = img[0], img[1]
    darken = (not night) and rng.random() < cfg.darken
    if darken:
        g, gamma, sigma, g_ir = (_uniform(rng, DARK_VIS_GAIN), _uniform(rng, DARK_VIS_GAMMA),
                                 _uniform(rng, DARK_NOISE_SIGMA), _uniform(rng, DARK_IR_GAIN))
        vis = g * np.power(vis, gamma) + rng.normal(0.0, sigma, vis.shape).astype(np.float32)
        ir = g_ir * ir
    else:
        if rng.random() < cfg.photometric:
            vis = _uniform(rng, PHOTO_GAIN) * np.power(vis, _uniform(rng, PHOTO_GAMMA))
        if rng.random() < cfg.photometric:
            ir = _uniform(rng, PHOTO_GAIN) * np.power(ir, _uniform(rng, PHOTO_GAMMA))
    return np.clip(np.stack([vis, ir]), 0.0, 1.0).astype(np.float32)
