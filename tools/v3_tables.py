"""The tables of issues 20 and 24: fusion metrics and gate statistics per level for several
weights, on roadscene/test and on the MSRS pairs a run held out.

    python tools/v3_tables.py --weights bundled --weights runs/v3/last \
        [--weights ../shared/weights/authors/best.pth] [--limit N]
    python tools/v3_tables.py --config docs/research/v4/protocol.json --interventions \
        --weights runs/v4/last --weights runs/control/last --weights ../shared/weights/authors/best.pth

The held-out pairs are read from a committed config ("holdout": by default v3's,
docs/research/v3-cpu/train_config.json; v4's protocol names the same ten), so the table and
the training agree on them by construction. --interventions adds evaluate's per-intervention
table (each metric's change under each intervention, and the gate means).
Each table is `ivfusion evaluate` on a folder of links to those pairs; the authors' checkpoint
is only compared with (never trained from).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IVFUSION_SHARED") or ROOT.parent / "shared") / "data"
CONFIG = ROOT / "docs" / "research" / "v3-cpu" / "train_config.json"


def linked_pairs(src: Path, stems: list[str], dest: Path) -> Path:
    """A folder with ir/ and vi/ holding links to the named pairs of `src`."""
    for sub in ("ir", "vi"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            found = [p for p in (src / sub).iterdir() if p.stem == stem]
            if not found:
                raise SystemExit(f"{src / sub}: no file for held-out pair {stem}")
            (dest / sub / found[0].name).symlink_to(found[0].resolve())
    return dest


def evaluate(folder: Path, weights: list[str], label: str, interventions: bool = False) -> None:
    cmd = [sys.executable, "-m", "ivfusion", "evaluate", "--infrared", str(folder / "ir"), "--visible",
           str(folder / "vi"), "--baseline", "mean", "--digits", "3", "--no-progress",
           *(["--interventions"] if interventions else [])]
    for w in weights:
        cmd += ["--weights", w]
    print(f"\n## {label}\n", flush=True)
    subprocess.run(cmd, check=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", action="append", required=True, help="weights spec, repeatable")
    p.add_argument("--limit", type=int, default=0, help="only the first N pairs of each set (0: all)")
    p.add_argument("--config", type=Path, default=CONFIG, help="a JSON file naming the held-out pairs (\"holdout\")")
    p.add_argument("--interventions", action="store_true", help="also each intervention's table (ivfusion evaluate)")
    args = p.parse_args(argv)
    holdout = json.loads(args.config.read_text())["holdout"]
    with tempfile.TemporaryDirectory(prefix="ivfusion-v3-") as tmp:
        test = sorted(p.stem for p in (SHARED / "roadscene" / "test" / "ir").iterdir())
        sets = [("roadscene/test", SHARED / "roadscene" / "test", test),
                (f"msrs held-out ({', '.join(holdout)})", SHARED / "msrs" / "train", holdout)]
        for k, (label, src, stems) in enumerate(sets):
            stems = stems[: args.limit] if args.limit else stems
            pairs = linked_pairs(src, stems, Path(tmp) / str(k))
            evaluate(pairs, args.weights, f"{label}, {len(stems)} pairs")
            for w in args.weights if args.interventions else []:  # evaluate takes one weights spec for these
                evaluate(pairs, [w], f"{label}, {len(stems)} pairs: {w} under each intervention", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
