"""Issue 24's two full runs, from the A/B decision: v4 (ISFuse with the choices the A/Bs kept)
and its control (the same with --no-interventions: L_f on the clean pass alone), each from
scratch with everything else equal (data, held-out pairs, sampler, augmentation, seed, steps).

    nice -n 19 python tools/v4_run.py --ab runs/ab --out runs            # v4, then the control
    nice -n 19 python tools/v4_run.py --ab runs/ab --out runs --which control
    python tools/v4_run.py --ab runs/ab --out runs --dry-run             # the commands only

The flags come from `tools/v4_ab.py`'s decision (the protocol's rule, applied in code), so
nothing is chosen by hand; it refuses to start while an A/B arm is unfinished. Each run
resumes exactly where it stopped (`--resume`, checkpoints every 100 steps) when its folder
already holds one. Each run's train_config.json is what to commit under docs/research/v4/.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("v4_ab", ROOT / "tools" / "v4_ab.py")
v4_ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(v4_ab)

STEPS = 3400  # the "at least 3,400 steps", as v3
VAL_EVERY = 100


def commands(flags: list[str], out: Path, which: str) -> list[list[str]]:
    """The `ivfusion train` command of each run asked for (v4 first)."""
    runs = {"v4": [], "control": ["--no-interventions"]}
    cmds = []
    for name in ("v4", "control") if which == "both" else (which,):
        folder = out / name
        resume = ["--resume"] if (folder / "train_config.json").is_file() else []
        cmds.append([sys.executable, "-m", "ivfusion", "train", *v4_ab.COMMON, *flags, *runs[name],
                     "--steps", str(STEPS), "--val-every", str(VAL_EVERY), "--out", str(folder), *resume])
    return cmds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ab", type=Path, default=ROOT / "runs" / "ab", help="the A/B runs' folder (tools/v4_ab.py --out)")
    p.add_argument("--out", type=Path, default=ROOT / "runs", help="where runs/v4 and runs/control go")
    p.add_argument("--which", choices=("both", "v4", "control"), default="both")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    flags = v4_ab.decide(args.ab, 400)
    if flags is None:
        print("tools/v4_run.py: the A/Bs are not finished; nothing started", file=sys.stderr)
        return 2
    for cmd in commands(flags, args.out, args.which):
        print(" ".join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
