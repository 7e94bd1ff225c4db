"""`ivfusion bench`: parameters, MACs, latency, throughput, peak memory and deviation of each
inference path, plus the time of the eleven metrics on one pair.

Timing is interleaved: every timed round runs each path once, in rotating order, so that a
busy machine slows all paths alike and the speed-up (reference median / path median) is
measured in the same run. Each row also gives the process CPU time per forward, which a busy
machine inflates far less than wall time. Deviation is the largest absolute difference of a
path's fused image (and gates) from the reference forward, on the benchmark input and on real
pairs at their native sizes (odd sizes included).

    ivfusion bench --threads 2                       # 256x256 and 640x480, reference vs fast
    ivfusion bench --sizes 640x480 --runs 20 --json bench.json
    ivfusion bench --ablation                        # what each optimisation step buys
    ivfusion bench --app                             # the Intervention Lab's request latency

For each size the default Fuser's set_pair (a new pair) and intervene (a re-fuse with each
intervention) are also timed, as ratios to its own forward pass (--no-intervene skips them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli_flags import add_device_flag, user_error, whole_number
from .macs import count_macs
from .paths import parse_sizes
from ..shipped import ACCEPTED_SPECS

__all__ = ["add_parser", "count_macs", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="latency, throughput, MACs, memory and deviation of each inference path",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None,
                   help=f"weights spec as for `ivfusion fuse` ({ACCEPTED_SPECS}); "
                        "default: the bundled weights if present, else 'synthetic' (random weights with random "
                        "BatchNorm statistics). 'untrained' and 'synthetic' are accepted.")
    p.add_argument("--sizes", default="256x256,640x480", type=parse_sizes, help="comma-separated WIDTHxHEIGHT (default: 256x256,640x480)")
    p.add_argument("--batch", type=whole_number(1), default=1, help="images per forward (default 1)")
    add_device_flag(p, "cpu")
    p.add_argument("--threads", type=whole_number(1), default=2, help="torch CPU threads (default 2)")
    p.add_argument("--runs", type=whole_number(1), default=10, help="timed runs per path and size (default 10)")
    p.add_argument("--warmup", type=whole_number(0), default=2, help="untimed runs per path and size first (default 2)")
    p.add_argument("--paths", default=None,
                   help="comma-separated paths to time, from reference, fast, fast-bf16 (default: reference, fast, "
                        "and fast-bf16 where bf16 is native)")
    p.add_argument("--ablation", action="store_true",
                   help="also time each optimisation step alone (BN folding, channels-last, attention, fusion)")
    p.add_argument("--pairs", action="append", default=None,
                   help="folder with ir/ and vi/ for the deviation check, repeatable (default: shared "
                        "data roadscene/test and msrs/train)")
    p.add_argument("--max-pairs", type=whole_number(0), default=4, help="pairs per folder for the deviation check (0: all; default 4)")
    p.add_argument("--metrics-repeats", type=whole_number(0), default=3, help="repeats for the metrics timing (0: skip; default 3)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON to this file")
    p.add_argument("--no-intervene", dest="intervene", action="store_false",
                   help="skip timing the default Fuser's set_pair and intervene against its forward pass")
    p.add_argument("--app", action="store_true",
                   help="benchmark the Intervention Lab through gradio_client instead (ivfusion.bench.app)")
    p.add_argument("--app-pairs", type=whole_number(1), default=4, help="held-out pairs for --app (default 4)")
    p.add_argument("--train", action="store_true",
                   help="time training steps instead: fp32 and bf16 autocast (where native), contiguous and "
                        "channels-last, on --pairs (default msrs/train); --runs timed steps after --warmup")
    p.add_argument("--train-crop", type=whole_number(16), default=128, help="crop side for --train (default 128)")
    p.add_argument("--train-batch", type=whole_number(1), default=16, help="batch for --train (default 16, the paper's)")
    p.add_argument("--app-data", default=None, help="folder with ir/ and vi/ holding the --app pairs")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.app:
        return _run_app(args)
    if args.train:
        from .train import run_train_bench

        report = run_train_bench(args)
        if args.json_path:
            Path(args.json_path).write_text(json.dumps({"train": report}, indent=2, default=str))
        return 0
    from .model import format_report, run_bench

    report = run_bench(args)
    print(format_report(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json_path}")
    return 0


def _run_app(args) -> int:
    """`--app`: the Lab benchmark in ivfusion.bench.app, imported only here (it needs the app)."""
    try:
        from .app import run_app_bench
    except ModuleNotFoundError as e:
        if e.name not in ("ivfusion.bench.app", "gradio", "gradio_client"):
            raise
        return user_error("bench", f"--app: the app benchmark is not available ({e}); install the app extra")
    app_args = argparse.Namespace(pairs=args.app_pairs, data=args.app_data, threads=args.threads, weights=args.weights)
    result = run_app_bench(app_args)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"app": result}, indent=2, default=str))
    return 0
