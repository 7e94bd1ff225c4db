"""Does bf16 autocast train like fp32? An A/B from one seed, against fp32's own run-to-run noise.

    python tools/train_precision_ab.py [--steps 300] [--crop 64] [--batch 8] [--out runs/precision-ab]

Three short runs of the default recipe on roadscene/train + msrs/train (the v3 hold-out left
out): fp32 with seed 0, fp32 with seed 1 (what fp32 varies by itself: other crops, masks and
initial weights), and bf16 autocast with seed 0. Each run's loss curve is smoothed over 25
steps; the table gives the mean loss and L_f over the last 50 steps and the largest gap between
smoothed curves: bf16 against fp32 of the same seed, and fp32 against fp32 of another seed.
bf16 "stays within the noise" when its gap is not larger than the seed-to-seed gap. Runs are
resumable (--resume), so a killed A/B goes on where it stopped; the table is reprinted from
their logs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HOLDOUT = ["00001D", "00005N", "00009N", "00013N", "00017N", "00021N", "00025N", "00029N", "00033N", "00037N"]


def _curve(out: Path, key: str) -> np.ndarray:
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return np.array([r[key] for r in rows if key in r])


def _smooth(x: np.ndarray, k: int = 25) -> np.ndarray:
    return np.convolve(x, np.ones(k) / k, mode="valid")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/precision-ab")
    p.add_argument("--table-only", action="store_true", help="reprint the table from the runs' logs")
    args = p.parse_args(argv)
    from ivfusion.device import bf16_native
    from ivfusion.train import TrainConfig, main as train

    shared = Path(__import__("os").environ.get("IVFUSION_SHARED") or ROOT.parent / "shared") / "data"
    runs = {"fp32 seed 0": (False, 0), "fp32 seed 1": (False, 1), "bf16 seed 0": (True, 0)}
    if not bf16_native():
        print("bf16 is not native on this CPU: the bf16 run would be emulated (slow); it runs anyway")
    for name, (amp, seed) in runs.items():
        out = Path(args.out) / name.replace(" ", "-")
        if args.table_only:
            continue
        cfg = TrainConfig(data=[str(shared / "roadscene/train"), str(shared / "msrs/train")], holdout=HOLDOUT,
                          val=None, out=str(out), crop=args.crop, batch_size=args.batch, steps=args.steps,
                          log_every=1, val_every=100, seed=seed, amp=amp, threads=args.threads,
                          resume=(out / "train_config.json").is_file())
        train(cfg, echo=lambda *a: None)
    curves = {name: {k: _curve(Path(args.out) / name.replace(" ", "-"), k) for k in ("loss", "L_f")} for name in runs}
    print(f"{args.steps} steps, crop {args.crop}, batch {args.batch}; last 50 steps' means; largest gap between "
          "curves smoothed over 25 steps")
    print(f"{'run':<14}{'loss':>9}{'L_f':>9}")
    for name, c in curves.items():
        print(f"{name:<14}{c['loss'][-50:].mean():>9.4f}{c['L_f'][-50:].mean():>9.4f}")
    for key in ("loss", "L_f"):
        s = {n: _smooth(c[key]) for n, c in curves.items()}
        bf16 = np.abs(s["bf16 seed 0"] - s["fp32 seed 0"]).max()
        noise = np.abs(s["fp32 seed 1"] - s["fp32 seed 0"]).max()
        print(f"{key}: bf16 vs fp32 (same seed) {bf16:.4f}; fp32 seed 1 vs seed 0 {noise:.4f}; "
              f"{'within' if bf16 <= noise else 'OUTSIDE'} the seed-to-seed noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
