"""Seconds to draw the masks of one training batch (16 crops of 256: complementary and random
masks, as the training dataset draws them) as the number of holes grows, for each mask style.
Reprints the figures beside MaskConfig's MAX_HOLES (ivfusion/interventions.py).

    python tools/mask_cost.py [--holes 6 32 128] [--crop 256] [--batch 16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ivfusion.interventions import MASK_STYLES, MaskConfig, sample_masks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holes", type=int, nargs="+", default=[6, 32, 128], help="holes per mask (default 6 32 128)")
    p.add_argument("--crop", type=int, default=256, help="crop side (default 256)")
    p.add_argument("--batch", type=int, default=16, help="crops per batch (default 16)")
    args = p.parse_args()
    for style in MASK_STYLES:
        for n in args.holes:
            cfg = MaskConfig(style=style, min_holes=n, max_holes=n)  # every mask gets n holes
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            for _ in range(args.batch):
                sample_masks("complementary", args.crop, args.crop, rng, cfg)
                sample_masks("random", args.crop, args.crop, rng, cfg)
            print(f"{style:14s} {n:4d} holes: {time.perf_counter() - t:6.2f} s per batch of {args.batch} crops "
                  f"at {args.crop}")


if __name__ == "__main__":
    main()
