"""The `ivfusion evaluate` command: arguments, the run, what it prints and writes."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..cli_flags import (add_device_flag, add_modality_flags, failure_reason, missing_modality_flags, user_error,
                         whole_number)
from .model import MODEL_METHOD, evaluate_model
from .report import gates_table, interventions_table, markdown_table, plot_results
from .results import EvaluationResults
from ..shipped import ACCEPTED_SPECS
from .scoring import BASELINES, evaluate_baseline, evaluate_folders

_DESCRIPTION = """\
Score fusion methods' outputs with the eleven metrics (EN SD SF AG MI SCD VIF Qabf SSIM PSNR
CC, conventions of METRICS.md). Pairs are the file names (without suffix) found in both
--infrared and --visible; each method's output is the image with the same name in its --fused
folder. Prints a Markdown table of per-method means, the best of each column in bold (all
eleven: higher is better). For each --weights spec it also prints the gate diagnostics: per
level (coarse, mid, fine) the gate map's mean, spatial std and 1st-99th percentile span."""

_EPILOG = """\
Any pair that cannot be scored (missing, unreadable, oversized or mis-sized files, a network
failure) is named with the reason and the rest is still scored.
Exit status: 0 all scored, 1 some output or pair not scored, 2 usage error."""


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_modality_flags(p, "folder (the pairs' sources)")
    p.add_argument("--fused", action="append", default=[], metavar="DIR",
                   help="folder of one method's fused images (same file names); repeat for "
                        "several methods")
    p.add_argument("--names", metavar="A,B", help="comma-separated method names, one per --fused "
                                                   "(default: folder names)")
    p.add_argument("--weights", metavar="SPEC", action="append", default=[],
                   help=f"also run ISFuse with these weights (method '{MODEL_METHOD}'): {ACCEPTED_SPECS}; "
                        "repeat to compare several (named by their spec)")
    p.add_argument("--baseline", action="append", default=[], choices=sorted(BASELINES),
                   help="also score a pixel-wise baseline: mean = round((IR+VI)/2), max = "
                        "max(IR, VI); repeatable")
    p.add_argument("--interventions", action="store_true",
                   help="with --weights: also fuse under each intervention and report the "
                        "relative metric changes and the gate means")
    p.add_argument("--seed", type=whole_number(0), default=0,
                   help="base seed of the interventions (pair i uses seed + i; default 0)")
    add_device_flag(p, "auto", "device for --weights")
    p.add_argument("--csv", metavar="F", help="write per-image values (and gate diagnostics) as CSV")
    p.add_argument("--json", metavar="F", help="write means, per-image values, gate diagnostics and problems as JSON")
    p.add_argument("--plot", metavar="F.png", help="write a box plot of the per-image values")
    p.add_argument("--workers", type=whole_number(1), default=None, metavar="N",
                   help="processes scoring in parallel (default: all CPU cores)")
    p.add_argument("--digits", type=whole_number(0, 12), default=4,
                   help="decimals in the table, 0 to 12 (a float holds about 15 digits; default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="score fused images (or ISFuse itself, with gate diagnostics) with the eleven fusion metrics",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(p)


def _usage_error(args) -> Optional[str]:
    missing = missing_modality_flags(args)
    if missing:
        return missing
    if not args.fused and not args.weights and not args.baseline:
        return "give at least one --fused DIR, --weights SPEC or --baseline"
    if args.interventions and len(args.weights) != 1:
        return "--interventions needs exactly one --weights SPEC"
    if args.names and len(args.names.split(",")) != len(args.fused):
        return f"--names gives {len(args.names.split(','))} names for {len(args.fused)} --fused folders"
    return None


def _evaluate(args, progress: bool) -> EvaluationResults:
    parts: List[EvaluationResults] = []
    if args.fused:
        names = [n.strip() for n in args.names.split(",")] if args.names else None
        parts.append(evaluate_folders(args.infrared, args.visible, args.fused, names=names,
                                      workers=args.workers, progress=progress))
    for spec in args.weights:
        name = MODEL_METHOD if len(args.weights) == 1 else f"{MODEL_METHOD} [{spec}]"
        parts.append(evaluate_model(args.infrared, args.visible, spec,
                                    interventions=args.interventions, seed=args.seed,
                                    device=args.device, workers=args.workers,
                                    progress=progress, name=name))
    for kind in args.baseline:
        parts.append(evaluate_baseline(args.infrared, args.visible, kind, workers=args.workers,
                                       progress=progress))
    results = parts[0]
    for other in parts[1:]:
        results.merge(other)
    return results


def _write_outputs(results: EvaluationResults, args, err) -> List[str]:
    """Write the requested files; returns a problem line for each that could not be written."""
    failed = []
    for path, write in ((args.csv, results.write_csv), (args.json, results.write_json),
                        (args.plot, lambda p: plot_results(results, p))):
        if not path:
            continue
        try:
            write(path)
            print(f"wrote {path}", file=err)
        except Exception as e:
            failed.append(f"could not write {path}: {failure_reason(e)}")
    return failed


def run(args: argparse.Namespace) -> int:
    """Run ``ivfusion evaluate`` with parsed arguments; returns the exit status."""
    err = sys.stderr
    usage = _usage_error(args)
    if usage:
        return user_error("evaluate", usage)
    try:
        results = _evaluate(args, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        return user_error("evaluate", e)
    except Exception as e:  # weights that cannot be loaded
        return user_error("evaluate", failure_reason(e))

    if not results.pairs:
        user_error("evaluate", f"no pair could be scored in {args.infrared} and {args.visible}")
        for line in results.problems:
            print(f"  {line}", file=err)
        return 2
    print(f"{len(results.pairs)} pairs; means of the eleven metrics (METRICS.md conventions):\n")
    print(markdown_table(results, digits=args.digits))
    gates = gates_table(results)
    if gates:
        print("\nGate diagnostics per weights spec and level:\n")
        print(gates)
    if results.interventions is not None:
        print("\nISFuse under interventions:\n")
        print(interventions_table(results.interventions))
    problems = results.problems
    write_failures = _write_outputs(results, args, err)
    if problems:
        print(f"\n{len(problems)} problem(s); these were not scored:", file=err)
        for line in problems:
            print(f"  {line}", file=err)
    for line in write_failures:
        print(f"ivfusion evaluate: error: {line}", file=err)
    return 1 if problems or write_failures else 0

