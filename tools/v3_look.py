"""How bright each model's fused output is on the MSRS pairs the v3 run held out, beside its
sources, and a figure of a few of them (issue 20's write-up, docs/research/v3-cpu.md).

    python tools/v3_look.py --weights bundled --weights runs/v3/last \
        --weights ../shared/weights/authors/best.pth [--figure docs/research/v3-cpu/heldout.jpg]

Prints, per pair and on average, the mean of the visible luminance, the infrared and each
model's fused luminance (0-255, the network's own inputs and output). The held-out names come
from the run's committed config, as in tools/v3_tables.py. A last line gives each model's mean
output with BatchNorm in train mode (each image normalised by its own statistics instead of
the running ones): how much of the output's brightness the running statistics set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from ivfusion import Fuser, read_image
from ivfusion.hub import load_model
from v3_tables import CONFIG, SHARED  # tools/ is on the path when this file runs

FIGURE_PAIRS = 3  # rows of the figure: the first held-out pairs by name
TILE = (320, 240)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, metavar="SPEC")
    p.add_argument("--figure", type=Path, default=None, help="write the figure here (JPEG)")
    args = p.parse_args()
    stems = sorted(json.loads(CONFIG.read_text())["holdout"])
    src = SHARED / "msrs" / "train"
    fusers = [Fuser(w, device="cpu") for w in args.weights]
    own_stats = [load_model(w).train(True) for w in args.weights]  # fresh copies: never the Fusers' models
    print("pair | visible | infrared | " + " | ".join(args.weights))
    means, rows, own = [], [], []
    for stem in stems:
        vis, ir = (read_image(str(next((src / sub).glob(stem + ".*")))) for sub in ("vi", "ir"))
        outs = [f.fuse(vis, ir) for f in fusers]
        first = outs[0].inputs
        maps = [first["visible_y"], first["infrared"]] + [o.fused_y for o in outs]
        means.append([float(m.mean()) * 255 for m in maps])
        v, i = (torch.from_numpy(first[k])[None, None] for k in ("visible_y", "infrared"))
        with torch.no_grad():
            own.append([float(m(v, i)[0].clamp(0, 1).mean()) * 255 for m in own_stats])
        print(f"{stem} | " + " | ".join(f"{m:.1f}" for m in means[-1]))
        if len(rows) < FIGURE_PAIRS:
            tiles = [cv2.resize((np.clip(m, 0, 1) * 255).astype(np.uint8), TILE) for m in maps]
            rows.append(np.concatenate(tiles, 1))
    print("mean | " + " | ".join(f"{m:.1f}" for m in np.mean(means, axis=0)))
    print("mean, BatchNorm on each image's own statistics | | | " + " | ".join(f"{m:.1f}" for m in np.mean(own, axis=0)))
    if args.figure:
        cv2.imwrite(str(args.figure), np.concatenate(rows, 0), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"wrote {args.figure}: columns visible, infrared, " + ", ".join(args.weights))


if __name__ == "__main__":
    main()
