"""Training data: registered pairs from folders with `ir/` and `vi/`, randomly cropped."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import io


def find_pairs(root: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(stem, ir_path, vi_path) for every stem present in both `root/ir` and `root/vi`."""
    root = Path(root)
    if not (root / "ir").is_dir() or not (root / "vi").is_dir():
        raise FileNotFoundError(f"{root}: expected sub-folders ir/ and vi/ holding the pairs")
    ir, vi = io.list_images(root / "ir"), io.list_images(root / "vi")
    return [(stem, ir[stem], vi[stem]) for stem in sorted(set(ir) & set(vi))]


def load_pair(ir_path: Path, vi_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(visible Y, infrared) as (H, W) float32 in [0, 1], Y computed in float without rounding."""
    vis = io.read_image(vi_path)
    ir, _ = io.infrared_to_grey(io.read_image(ir_path))
    y = io.visible_to_ycrcb(vis)[..., 0]
    if y.shape != ir.shape:
        raise ValueError(f"{vi_path.name}: visible {y.shape} and infrared {ir.shape} differ in size")
    return np.ascontiguousarray(y), ir


class PairDataset(torch.utils.data.Dataset):
    """All pairs of the given folders, held in memory as float32 luminance.

    `sample(index, epoch)` returns a (2, crop, crop) float32 array [visible Y, IR]: one random
    crop at the SAME offset in both modalities (the reference code crops them independently,
    which misaligns the pair), then a random flip and rot90. The randomness is a function of
    (seed, epoch, index) alone, so a resumed run sees exactly the crops it would have seen.
    """

    def __init__(self, folders: list[str], crop: int, seed: int = 0):
        self.crop, self.seed = crop, seed
        self.items = []
        for folder in folders:
            for stem, ir_path, vi_path in find_pairs(folder):
                y, ir = load_pair(ir_path, vi_path)
                if min(y.shape) < crop:
                    raise ValueError(f"{vi_path}: {y.shape} is smaller than the crop {crop}")
                self.items.append((np.stack([y, ir]), f"{Path(folder).name}/{stem}"))
        if not self.items:
            raise ValueError(f"no pairs found in {folders}")

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, index])
        img = self.items[index][0]
        _, h, w = img.shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        out = img[:, y : y + self.crop, x : x + self.crop]
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
        out = np.rot90(out, k=int(rng.integers(0, 4)), axes=(1, 2))
        return np.ascontiguousarray(out)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sample(index, 0)
