"""Issue 24's short A/Bs: which data choices keep a model trained from scratch from darkening
the night, each arm read at its last step (the protocol: docs/research/v4/protocol.json).

    nice -n 19 python tools/v4_ab.py --out runs/ab            # train every arm (resumes), then the table
    python tools/v4_ab.py --out runs/ab --table               # only the table and the decision, from the logs

Arms are cumulative, each adding one choice to the one before, all from scratch at crop 128,
batch 16, seed 0, with the protocol's held-out pairs left out and validated on:

    v3          v3's recipe (the authors' recipe at crop 128): uniform sampling, flips and rot90
    +quota      half of every batch from night pairs
    +exposure   photometric gain/gamma per modality (p 0.5), daylight pairs darkened (p 0.3)
    +zoom       random-resized crops up to 3x the crop side
    +flat       crops whose two modalities are both flat (std < 0.02) drawn again

The table gives, per arm and validation folder, Qabf, VIF, the fused mean beside the sources'
and how many pairs have it at or above the darker source, and the gate std per level. Then the
decision, by the protocol's rule (`ab_rule`) applied in code: each arm against the arm before
it (the arms are cumulative), read at its last step; a choice is kept when it raises the
held-out count at or above the darker source, or the held-out Qabf or VIF, without lowering
roadscene/test's Qabf or VIF by more than 0.02. It prints the v4 flags that follow.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = json.loads((ROOT / "docs" / "research" / "v4" / "protocol.json").read_text())
DATA = ["../shared/data/roadscene/train", "../shared/data/msrs/train"]
VAL = ["../shared/data/roadscene/test", "../shared/data/msrs/train"]
COMMON = ["--data", *DATA, "--val", *VAL, "--holdout", *PROTOCOL["holdout"], "--crop", "128",
          "--batch-size", "16", "--seed", "0", "--val-pairs", "10", "--threads", "2"]
ARMS = {
    "v3": [],
    "+quota": ["--augment.night-share", "0.5"],
    "+exposure": ["--augment.photometric", "0.5", "--augment.darken", "0.3"],
    "+zoom": ["--augment.zoom", "3"],
    "+flat": ["--augment.flat-below", "0.02"],
}


def arm_flags(name: str) -> list[str]:
    """The arm's own flags and those of every arm before it (the arms are cumulative)."""
    names = list(ARMS)
    return [f for n in names[: names.index(name) + 1] for f in ARMS[n]]


def folder(out: Path, name: str) -> Path:
    return out / name.lstrip("+")


def train(out: Path, name: str, steps: int, val_every: int) -> None:
    run = folder(out, name)
    if (run / "summary.json").is_file():
        return
    resume = ["--resume"] if (run / "train_config.json").is_file() else []
    cmd = [sys.executable, "-m", "ivfusion", "train", *COMMON, *arm_flags(name), "--steps", str(steps),
           "--val-every", str(val_every), "--out", str(run), *resume]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


HELD_OUT, TEST = "msrs/train (held out)", "roadscene/test"
TOLERANCE = 0.02  # the protocol's ab_rule: what a kept choice may cost roadscene/test's Qabf or VIF


def last_validation(out: Path, name: str) -> dict | None:
    """The arm's last validation record ({"step", "val": {folder: metrics}}), or None."""
    log = folder(out, name) / "log.jsonl"
    if not log.is_file():
        return None
    vals = [r for r in map(json.loads, log.read_text().splitlines()) if "val" in r]
    return vals[-1] if vals else None


def decide(out: Path, steps: int) -> list[str] | None:
    """Print the protocol's A/B decision; the kept arms' flags (None while an arm is unfinished)."""
    records = {name: last_validation(out, name) for name in ARMS}
    unfinished = [n for n, r in records.items() if r is None or r["step"] != steps]
    if unfinished:
        print(f"\nNo decision yet: the rule reads each arm at its last step ({steps}); not there: "
              f"{', '.join(unfinished)}")
        return None
    names = list(ARMS)
    flags: list[str] = []
    print("\nDecision (protocol ab_rule; each arm against the one before it):")
    for prev, name in zip(names, names[1:]):
        a, b = records[prev]["val"], records[name]["val"]
        gains = [what for what, key in (("held-out >= darker", "val_above_darker"), ("held-out Qabf", "val_Qabf"),
                                        ("held-out VIF", "val_VIF")) if b[HELD_OUT][key] > a[HELD_OUT][key]]
        costs = [f"roadscene/test {m} {a[TEST][f'val_{m}']:.3f} -> {b[TEST][f'val_{m}']:.3f}" for m in ("Qabf", "VIF")
                 if b[TEST][f"val_{m}"] < a[TEST][f"val_{m}"] - TOLERANCE]
        keep = bool(gains) and not costs
        if keep:
            flags += ARMS[name]
        why = ("raises " + ", ".join(gains)) if gains else "raises nothing on the held-out pairs"
        print(f"  {name}: {'kept' if keep else 'dropped'} ({why}{'; but lowers ' + ', '.join(costs) if costs else ''})")
    print(f"v4 flags: {' '.join(flags) if flags else '(none: v3 recipe)'}")
    return flags


def table(out: Path) -> None:
    print("arm | step | folder | Qabf | VIF | fused mean (visible, infrared) | >= darker | gate std coarse/mid/fine")
    for name in ARMS:
        log = folder(out, name) / "log.jsonl"
        if not log.is_file():
            print(f"{name} | not run")
            continue
        vals = [r for r in map(json.loads, log.read_text().splitlines()) if "val" in r]
        if not vals:
            print(f"{name} | no validation yet")
            continue
        last = vals[-1]
        for label, v in last["val"].items():
            std = "/".join(f"{v[f'val_gate_std_{lvl}']:.3f}" for lvl in ("coarse", "mid", "fine"))
            print(f"{name} | {last['step']} | {label} | {v['val_Qabf']:.3f} | {v['val_VIF']:.3f} | "
                  f"{v['val_fused_mean']:.1f} ({v['val_visible_mean']:.1f}, {v['val_infrared_mean']:.1f}) | "
                  f"{v['val_above_darker']}/{v['val_pairs']} | {std}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ab")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--table", action="store_true", help="only print the table from the runs' logs")
    args = p.parse_args(argv)
    if not args.table:
        for name in args.arms:
            train(args.out, name, args.steps, args.val_every)
    table(args.out)
    decide(args.out, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
