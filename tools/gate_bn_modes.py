"""Gate statistics of a weights spec in eval mode (BN running statistics, as at inference) and in
train mode (each image normalised by its own batch statistics, as the gates were trained).

    python tools/gate_bn_modes.py --weights SPEC [--weights SPEC ...] --pairs DIR [--limit 10]

If the gates are structured only in eval mode, the structure comes from running statistics
that match no single input distribution (the five variants' statistics averaged), not from
what training asked of the gates.
"""
from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

from ivfusion.hub import load_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from gate_stats import LEVELS, load_pairs  # noqa: E402


@torch.no_grad()
def stats(model, pairs, train_mode: bool) -> dict:
    model = copy.deepcopy(model).train(train_mode)  # a copy: train mode would update running stats
    rows = []
    for y, ir in pairs:
        _, gates = model(torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None])
        row = {}
        for name, g in zip(LEVELS, gates):
            g = g[0, 0].numpy()
            p1, p99 = np.percentile(g, [1, 99])
            row.update({f"mean {name}": g.mean(), f"std {name}": g.std(), f"span {name}": p99 - p1})
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--limit", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pairs = load_pairs(args.pairs, args.limit)
    cols = [f"{s} {l}" for s in ("std", "span", "mean") for l in LEVELS]
    print(f"{len(pairs)} pairs of {args.pairs}\n")
    print("| weights | BN mode | " + " | ".join(cols) + " |")
    print("| --- | --- |" + " ---: |" * len(cols))
    for spec in args.weights:
        model = load_model(spec)
        for mode in (False, True):
            r = stats(model, pairs, mode)
            print(f"| {spec} | {'train (own batch stats)' if mode else 'eval (running stats)'} | "
                  + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
