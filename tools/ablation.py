"""The gate-structure ablation of docs/TRAINING.md: short runs from one init, equal steps,
one factor changed per run, then one table of gate structure and fusion scores.

    nice -n 10 python tools/ablation.py run --only faithful pooled-bn ... --steps 40   # trains (minutes each)
    nice -n 10 python tools/ablation.py run --only scratch-separate ... --steps 150
    nice -n 10 python tools/ablation.py recal [--only NAME ...]            # + clean BN recalibration
    python tools/ablation.py table                                          # reprints the table

Every run starts from the v2 weights (assets/weights/isfuse-ivfusion), trains on
roadscene/train and validates on the first 6 pairs of msrs/train (another sensor and scene
set: the cross-dataset proxy), all in runs/ablation/NAME. The table reads each run's last
validation record from its log.jsonl: per gate level the spatial std and the 1st-99th
percentile span (eval mode, full-size pairs), then Qabf and VIF. "+ recal" rows are the same
weights after `recalibrate_bn` below (BN statistics re-estimated on 40 batches of 16 clean
128x128 roadscene/train crops, seed 0; nothing else changes). It was a hypothesis (inference
would then normalise a clean image as the clean pass was normalised in training); the rows
refute it, so it stays here and not in the package.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from ivfusion.levels import GATE_LEVELS

LEVEL_KEYS = [lv.key for lv in GATE_LEVELS]

OUT = Path("runs/ablation")
BASE = ["--data", "../shared/data/roadscene/train", "--val", "../shared/data/msrs/train", "--val-pairs", "6",
        "--init", "assets/weights/isfuse-ivfusion", "--crop", "64", "--batch-size", "4", "--threads", "1",
        "--workers", "0", "--log-every", "5", "--seed", "0"]
# name: (what changes, extra flags). "faithful" is the authors' recipe at CPU scale.
RUNS = {
    "faithful": ("authors' recipe: separate passes, authors-code masks, aggregated R, lr 1e-4", []),
    "pooled-bn": ("one pooled forward (BN statistics shared by the five variants)", ["--passes", "pooled"]),
    "disjoint-masks": ("squares placed apart, area capped (v1/v2's sampler)", ["--masks.style", "disjoint"]),
    "per-level-R": ("R on each level's gate, not on their mean", ["--regulariser", "per-level"]),
    "crop-32": ("crop 32 (batch 16, same pixels per step)", ["--crop", "32", "--batch-size", "16"]),
    "lr-1e-3": ("lr 1e-3", ["--lr", "1e-3"]),
    "no-L_inv": ("alpha = 0: no L_inv at all (what L_f alone does to the gates)", ["--alpha", "0"]),
    "area-only-R": ("R without its entropy term (the area term alone)", ["--regulariser", "area-only"]),
}
# The BN regime again, from scratch (no regime has a head start): untrained init, lr 1e-3,
# 48x48 crops, batch 8, 150 steps (run with --steps 150).
SCRATCH = ["--init", "untrained", "--lr", "1e-3", "--crop", "48", "--batch-size", "8"]
RUNS.update({
    "scratch-separate": ("from scratch: separate passes (authors)", SCRATCH),
    "scratch-pooled": ("from scratch: pooled forward (v1/v2)", SCRATCH + ["--passes", "pooled"]),
})


def run(names: list[str], steps: int) -> None:
    from ivfusion.train import TrainConfig, config_from_args, main
    from ivfusion.train.config import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    for name in names:
        out = OUT / name
        args = p.parse_args(BASE + RUNS[name][1] + ["--steps", str(steps), "--val-every", str(steps), "--out", str(out)])
        cfg: TrainConfig = config_from_args(args)
        print(f"== {name}: {RUNS[name][0]}", flush=True)
        print(json.dumps(main(cfg)), flush=True)


def _val_pairs():
    from ivfusion.data import find_pairs, load_scored_pair

    return [load_scored_pair(ir, vi) for _, ir, vi in find_pairs("../shared/data/msrs/train")[:6]]


def baseline_row() -> dict:
    """The init itself (v2), validated the same way, so every run can be read against it."""
    from ivfusion.hub import load_model
    from ivfusion.train.loop import validate

    return validate(load_model("assets/weights/isfuse-ivfusion"), _val_pairs(), torch.device("cpu"), 1.0)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset, batches: int = 50, batch_size: int = 16,
                   seed: int = 0) -> nn.Module:
    """Replace every BatchNorm's running mean/var by the average over `batches` clean batches
    of `dataset` crops (keys (seed-derived step, index), so a seed fixes them). Returns `model`
    in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    g = torch.Generator().manual_seed(seed)
    for b in range(batches):
        idx = torch.randint(len(dataset), (batch_size,), generator=g).tolist()
        image = torch.stack([torch.from_numpy(dataset.crop_at(10**6 + b, i)) for i in idx])
        device = next(model.parameters()).device
        model(image[:, :1].to(device), image[:, 1:].to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def recal(names: list[str]) -> None:
    """Clean-BN recalibration of the init and of each finished run, validated like the runs."""
    from ivfusion.hub import load_model
    from ivfusion.train.dataset import PairDataset
    from ivfusion.train.loop import validate

    torch.set_num_threads(1)
    data = PairDataset(["../shared/data/roadscene/train"], 128, seed=0)
    pairs = _val_pairs()
    for name in ["init"] + names:
        spec = "assets/weights/isfuse-ivfusion" if name == "init" else OUT / name / "last"
        if name != "init" and not (OUT / name / "last").is_dir():
            continue
        model = recalibrate_bn(load_model(spec), data, batches=40, batch_size=16, seed=0)
        (OUT / name).mkdir(parents=True, exist_ok=True)
        (OUT / name / "recal.json").write_text(json.dumps(validate(model, pairs, torch.device("cpu"), 1.0)))
        print(f"recalibrated {name}", flush=True)


def table() -> str:
    cols = [f"val_gate_std_{l}" for l in LEVEL_KEYS] + [f"val_gate_span_{l}" for l in LEVEL_KEYS] + ["val_Qabf", "val_VIF"]
    head = ["run", "change", "steps"] + [c.removeprefix("val_gate_").replace("_", " ") for c in cols[:6]] + ["Qabf", "VIF"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(head) - 2)]
    cache = OUT / "init.json"
    if not cache.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(baseline_row()))
    init = json.loads(cache.read_text())
    lines.append("| init (v2) | no training | 0 | " + " | ".join(f"{init[c]:.3f}" for c in cols) + " |")
    rows = []
    for name, (what, _) in [("init", ("v2, no training", None))] + list(RUNS.items()):
        r = OUT / name / "recal.json"
        if r.is_file():
            v = json.loads(r.read_text())
            rows.append(f"| {name} + recal | {what}; clean BN statistics | | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |")
    for name, (what, _) in RUNS.items():
        log = OUT / name / "log.jsonl"
        if not log.is_file():
            continue
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        val = [r for r in recs if "val_L_f" in r]
        if not val:
            continue
        v = val[-1]
        lines.append(f"| {name} | {what} | {v['step']} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines + rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "recal", "table"])
    p.add_argument("--only", nargs="+", choices=list(RUNS), help="these runs only")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    if args.what == "run":
        run(args.only or list(RUNS), args.steps)
    if args.what == "recal":
        recal(args.only or list(RUNS))
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
