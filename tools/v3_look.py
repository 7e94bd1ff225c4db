"""How bright each model's fused output is on the MSRS pairs the v3 run held out, beside its
sources, and a figure of a few of them (issue 20's write-up, docs/research/v3-cpu.md).

    python tools/v3_look.py --weights bundled --weights runs/v3/last \
        --weights ../shared/weights/authors/best.pth [--figure docs/research/v3-cpu/heldout.jpg]

Prints, per pair and on average, the mean of the visible luminance, the infrared and each
model's fused luminance (0-255, the network's own inputs and output). The held-out names come
from the run's committed config, as in tools/v3_tables.py. Two last lines give each model's
mean output with other BatchNorm statistics: each image's own (train mode), and running
statistics re-estimated on clean crops of the run's training data (40 batches of 16, seeded;
training averaged them over the five variants, masked and single-modality ones included).
They show how much of the output's brightness the running statistics set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from ablation import recalibrate_bn  # tools/ is on the path when this file runs

from ivfusion import Fuser, read_image
from ivfusion.hub import load_model
from ivfusion.train.dataset import PairDataset
from v3_tables import CONFIG, SHARED

FIGURE_PAIRS = 3  # rows of the figure: the first held-out pairs by name
TILE = (320, 240)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, metavar="SPEC")
    p.add_argument("--figure", type=Path, default=None, help="write the figure here (JPEG)")
    args = p.parse_args()
    config = json.loads(CONFIG.read_text())
    stems = sorted(config["holdout"])
    src = SHARED / "msrs" / "train"
    fusers = [Fuser(w, device="cpu") for w in args.weights]
    own_stats = [load_model(w).train(True) for w in args.weights]  # fresh copies: never the Fusers' models
    folders = [str(SHARED / Path(d).relative_to("../shared/data")) for d in config["data"]]  # IVFUSION_SHARED too
    clean = PairDataset(folders, config["crop"], seed=0, holdout=stems)
    recalibrated = [recalibrate_bn(load_model(w), clean, batches=40, batch_size=16, seed=0) for w in args.weights]
    print("pair | visible | infrared | " + " | ".join(args.weights))
    means, rows, own, recal = [], [], [], []
    for stem in stems:
        vis, ir = (read_image(str(next((src / sub).glob(stem + ".*")))) for sub in ("vi", "ir"))
        outs = [f.fuse(vis, ir) for f in fusers]
        first = outs[0].inputs
        maps = [first["visible_y"], first["infrared"]] + [o.fused_y for o in outs]
        means.append([float(m.mean()) * 255 for m in maps])
        v, i = (torch.from_numpy(first[k])[None, None] for k in ("visible_y", "infrared"))
        with torch.no_grad():
            own.append([float(m(v, i)[0].clamp(0, 1).mean()) * 255 for m in own_stats])
            recal.append([float(m(v, i)[0].clamp(0, 1).mean()) * 255 for m in recalibrated])
        print(f"{stem} | " + " | ".join(f"{m:.1f}" for m in means[-1]))
        if len(rows) < FIGURE_PAIRS:
            tiles = [cv2.resize((np.clip(m, 0, 1) * 255).astype(np.uint8), TILE) for m in maps]
            rows.append(np.concatenate(tiles, 1))
    print("mean | " + " | ".join(f"{m:.1f}" for m in np.mean(means, axis=0)))
    print("mean, BatchNorm on each image's own statistics | | | " + " | ".join(f"{m:.1f}" for m in np.mean(own, axis=0)))
    print("mean, BatchNorm re-estimated on clean training crops | | | "
          + " | ".join(f"{m:.1f}" for m in np.mean(recal, axis=0)))
    if args.figure:
        cv2.imwrite(str(args.figure), np.concatenate(rows, 0), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"wrote {args.figure}: columns visible, infrared, " + ", ".join(args.weights))


if __name__ == "__main__":
    main()
