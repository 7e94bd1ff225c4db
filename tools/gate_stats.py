"""Per-level invariance-gate statistics of one or more weights specs on a folder of pairs.

    python tools/gate_stats.py --weights bundled --weights ../shared/weights/authors/best.pth \
        --pairs ../shared/data/roadscene/test [--skip N] [--limit N]

For each gate level (coarse 1/4, mid 1/2, fine 1/1) and each pair: the gate map's spatial mean,
spatial std and 1st-99th percentile span; the table shows their means over the pairs, plus
Qabf and VIF of the fused output, scored as `ivfusion evaluate` scores the written file
(`metrics.fused_grey`). Evaluation mode (BN running statistics), full-size pairs.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ivfusion import metrics
from ivfusion.data import find_pairs, load_scored_pair
from ivfusion.levels import gate_stats as level_stats
from ivfusion.hub import load_model
from ivfusion.levels import GATE_LEVELS

LEVELS = tuple(level.key for level in GATE_LEVELS)


def gate_row(gates, sep: str = "_") -> dict:
    """One pair's per-level gate mean/std/span (`ivfusion evaluate`'s gate statistics) as flat
    columns named f"{stat}{sep}{level}"; `gates` as the model returns them (B = 1)."""
    stats = level_stats(g[0, 0].numpy() for g in gates)
    return {f"{name}{sep}{level}": stats[level][key] for level in LEVELS
            for name, key in (("mean", "mean"), ("std", "std"), ("span", "p1_p99"))}


@torch.no_grad()
def gate_stats(model, pairs, with_metrics: bool = True) -> dict:
    """Mean over pairs of per-level gate mean/std/p1-p99 span (and Qabf, VIF)."""
    model.eval()
    rows = []
    for p in pairs:
        fused, gates = model(torch.from_numpy(p.visible_y)[None, None], torch.from_numpy(p.infrared)[None, None])
        row = gate_row(gates)
        if with_metrics:
            f = metrics.fused_grey(fused[0, 0].numpy(), p.visible)
            s = metrics.evaluate_pair(p.infrared_grey, p.visible_grey, f)
            row.update({"Qabf": float(s["Qabf"]), "VIF": float(s["VIF"])})
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def load_pairs(folder: str, limit: int | None = None, skip: int = 0) -> list:
    """data.ScoredPair of the folder's pairs, by name."""
    return [load_scored_pair(ir, vi) for _, ir, vi in find_pairs(folder)[skip:][:limit]]


def table(results: dict[str, dict]) -> str:
    cols = [f"std_{l}" for l in LEVELS] + [f"span_{l}" for l in LEVELS] + [f"mean_{l}" for l in LEVELS]
    cols += [c for c in ("Qabf", "VIF") if any(c in r for r in results.values())]
    head = "| weights | " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    lines = [head, "| --- |" + " ---: |" * len(cols)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, help="a weights spec (repeatable)")
    p.add_argument("--pairs", required=True, help="a folder with ir/ and vi/")
    p.add_argument("--limit", type=int, default=None, help="first N pairs by name (after --skip)")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N pairs by name (e.g. a validation split)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.pairs, args.limit, args.skip)
    results = {spec: gate_stats(load_model(spec), pairs) for spec in args.weights}
    print(f"{len(pairs)} pairs of {args.pairs}" + (f" (from pair {args.skip} by name)" if args.skip else "") + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
