"""Issue 24's diagnosis, without training: how much of a model's night brightness its BatchNorm
statistics set, with the statistics re-estimated on clean full-size pairs of one domain or
another, and how the output changes with the input's size.

    python tools/bn_domains.py --weights ../shared/weights/authors/best.pth --weights bundled

For each weights spec and each BatchNorm source it prints, on the held-out night pairs (the
"holdout" of docs/research/v4/protocol.json) at two sizes (longest side 320 px, and native
640 px), the mean grey level of the fused image as written (colour restored) beside the two
sources' (0-255), how many pairs have the fused mean at or above the darker source, and the
mean Qabf and VIF, all through the one metric pipeline (metrics.fused_grey):

    running        the checkpoint's own running statistics
    msrs           re-estimated on every non-held-out msrs/train pair (mostly night), full size
    roadscene      re-estimated on as many roadscene/train pairs (daylight), full size
    mix            half of each

Re-estimation is a cumulative average over one train-mode forward per pair (batch 1, full size,
clean inputs); nothing is trained. The authors' checkpoint is only compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ivfusion import io, metrics
from ivfusion.data import find_pairs, load_pair
from ivfusion.hub import load_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IVFUSION_SHARED") or ROOT.parent / "shared") / "data"
PROTOCOL = ROOT / "docs" / "research" / "v4" / "protocol.json"
SIDES = (320, 640)


def resize_longest(img: np.ndarray, side: int) -> np.ndarray:
    """A decoded image (H, W[, C]) uint8 with its longest side `side` (area averaging)."""
    h, w = img.shape[:2]
    s = side / max(h, w)
    if s == 1:
        return img
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def reestimate(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]]) -> nn.Module:
    """Every BatchNorm's running statistics replaced by their cumulative average over one clean
    train-mode forward per (visible Y, IR) pair; returns the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for y, ir in pairs:
        model(torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None])
    return model.eval()


@torch.no_grad()
def score(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], side: int) -> dict:
    """`pairs`: decoded (visible, infrared) images, resized to `side` here; scored through the
    one metric pipeline (metrics.fused_grey), as `ivfusion evaluate` scores written files."""
    rows = []
    for vis_img, ir_img in pairs:
        vis_img, ir_img = resize_longest(vis_img, side), resize_longest(ir_img, side)
        y = np.ascontiguousarray(io.visible_to_ycrcb(vis_img)[..., 0])
        ir = io.infrared_to_grey(ir_img)[0]
        fused = model(torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None])[0][0, 0].clamp(0, 1).numpy()
        f8, ir8, y8 = metrics.fused_grey(fused, vis_img), metrics.to_grey(ir_img), metrics.to_grey(vis_img)
        s = metrics.evaluate_pair(ir8, y8, f8)
        rows.append({"fused": f8.mean(), "visible": y8.mean(), "infrared": ir8.mean(),
                     "above_darker": f8.mean() >= min(y8.mean(), ir8.mean()), "Qabf": s["Qabf"], "VIF": s["VIF"]})
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("fused", "visible", "infrared", "Qabf", "VIF")}
    out["above_darker"] = int(sum(r["above_darker"] for r in rows))
    out["pairs"] = len(rows)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, metavar="SPEC")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    holdout = set(json.loads(PROTOCOL.read_text())["holdout"])
    msrs = find_pairs(SHARED / "msrs" / "train")
    test = [load_pair(ir, vi, form="image") for stem, ir, vi in msrs if stem in holdout]
    calib_msrs = [load_pair(ir, vi) for stem, ir, vi in msrs if stem not in holdout]
    # as many RoadScene pairs as MSRS ones, spread over the folder (sorted names, fixed stride)
    road = find_pairs(SHARED / "roadscene" / "train")
    stride = max(1, len(road) // len(calib_msrs))
    calib_road = [load_pair(ir, vi) for _, ir, vi in list(road)[::stride][: len(calib_msrs)]]
    half = len(calib_msrs) // 2
    sources = {"running": None, "msrs": calib_msrs, "roadscene": calib_road,
               "mix": calib_msrs[:half] + calib_road[:half]}
    print(f"held-out night pairs: {', '.join(sorted(holdout))}; BatchNorm re-estimated on "
          f"{len(calib_msrs)} msrs / {len(calib_road)} roadscene / {2 * half} mixed full-size pairs")
    print("weights | BN statistics | side | fused mean | visible | infrared | pairs >= darker source | Qabf | VIF")
    results = []
    for spec in args.weights:
        for name, calib in sources.items():
            model = load_model(spec)
            if calib is not None:
                reestimate(model, calib)
            for side in SIDES:
                r = score(model, test, side)
                results.append({"weights": spec, "bn": name, "side": side, **r})
                print(f"{spec} | {name} | {side} | {r['fused']:.1f} | {r['visible']:.1f} | {r['infrared']:.1f} | "
                      f"{r['above_darker']}/{r['pairs']} | {r['Qabf']:.3f} | {r['VIF']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
