"""Gate statistics of a weights spec in eval mode (BN running statistics, as at inference) and in
train mode (each image normalised by its own batch statistics, as the gates were trained).

    python tools/gate_bn_modes.py --weights SPEC [--weights SPEC ...] --pairs DIR [--limit 10]

It also prints, per level, what the gate's BatchNorm sees on a clean image against its
running statistics: the median over channels of (clean variance / running variance) and of
|clean mean - running mean| / running std. A variance ratio far below 1 means inference
shrinks the gate's features towards a constant (flat gates); a large mean shift pushes the
gate towards 0 or 1.
"""
from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

from ivfusion.hub import load_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from gate_stats import LEVELS, gate_row, load_pairs  # noqa: E402


@torch.no_grad()
def stats(model, pairs, train_mode: bool) -> dict:
    model = copy.deepcopy(model).train(train_mode)  # a copy: train mode would update running stats
    rows = []
    for p in pairs:
        _, gates = model(torch.from_numpy(p.visible_y)[None, None], torch.from_numpy(p.infrared)[None, None])
        rows.append(gate_row(gates, sep=" "))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@torch.no_grad()
def bn_ratios(model, pairs) -> list[tuple[float, float]]:
    """Per level: (median clean var / running var, median |mean shift| / running std)."""
    model = copy.deepcopy(model).eval()
    seen: dict[int, list] = {}
    hooks = []
    for lvl, cfi in enumerate(model.cfis):
        bn = next(m for m in cfi.gate.modules() if isinstance(m, torch.nn.BatchNorm2d))

        def hook(mod, inp, out, lvl=lvl):
            x = inp[0]
            var = (x.var(dim=(0, 2, 3)) / mod.running_var).median().item()
            shift = ((x.mean(dim=(0, 2, 3)) - mod.running_mean).abs() / mod.running_var.sqrt()).median().item()
            seen.setdefault(lvl, []).append((var, shift))

        hooks.append(bn.register_forward_hook(hook))
    for p in pairs:
        model(torch.from_numpy(p.visible_y)[None, None], torch.from_numpy(p.infrared)[None, None])
    return [tuple(float(np.mean([r[k] for r in seen[lvl]])) for k in (0, 1)) for lvl in range(3)]


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
    print("\n| weights | gate BN: clean var / running var (coarse, mid, fine) | mean shift in running stds |")
    print("| --- | --- | --- |")
    for spec in args.weights:
        r = bn_ratios(load_model(spec), pairs)
        print(f"| {spec} | " + ", ".join(f"{v:.3f}" for v, _ in r) + " | " + ", ".join(f"{m:.2f}" for _, m in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
