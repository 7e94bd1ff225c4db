"""``ivfusion study``: does the invariance gate open where features stay stable under intervention,
across whole datasets?

    ivfusion study PAIRS... --weights SPEC [--weights SPEC ...] [--k 16] [--limit N] [--seed 0]
                   [--out study] [--max-side 320] [--q 0.05] [--no-plots] [--no-progress]

PAIRS: dataset folders holding ir/ and vi/ (`ivfusion.data.find_pairs`). SPEC: any weights spec
(a folder, a .safetensors file, the authors' .pth, hf://...), 'bundled' for the default shipped
weights, a shipped name (`ivfusion.hub.NAMED_WEIGHTS`), or 'untrained', the null model. For every pair, weights and intervention type (complementary,
random), K seeded interventions (the same masks for every weights) measure per gate level
(`measure`): the clean gate against the fused output's instability and against the relative
change of the cross-attended features, and the intervened pass's gate against that pass's
|F_d - F| (what L_inv rewards). The primary table (`stats.contrast`) is the paired contrast of
each set of weights with the untrained null: per pair d = r - r_null, the mean d with a
bootstrap 95% interval over pairs and a sign-flip p-value, Benjamini-Hochberg control over each
family. A second table gives each set of weights against r = 0 (`stats.summarise`).

Each pair's record is cached under OUT/cache, keyed by the settings, the weights' parameters and
the pair's bytes, so a killed study resumes where it stopped and a rerun only summarises.
Writes OUT/report.md (the printed tables), contrast.csv, summary.csv, tests.csv, study.json, r_distribution.png
and extremes_<weights>.jpg (the strongest and the weakest pair's maps).

A file with no partner of the same name is named on one line per folder and left out. Exit
status: 0 every pair measured; 1 some pair failed (each named, and left out of the statistics);
2 a usage error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_flags import add_device_flag, out_folder_problem, user_error, whole_number
from ..interventions import MaskConfig
from .measure import MEASURES, STUDY_INTERVENTIONS, StudySettings, measure_pair
from .run import StudyResult, load_datasets, run_study
from ..shipped import ACCEPTED_SPECS
from .stats import benjamini_hochberg, bootstrap_mean_ci, contrast, decide, sign_flip_p, summarise

__all__ = ["MEASURES", "STUDY_INTERVENTIONS", "StudySettings", "StudyResult", "benjamini_hochberg",
           "bootstrap_mean_ci", "contrast", "decide", "load_datasets", "measure_pair", "run_study", "sign_flip_p",
           "summarise"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("study", help="test the paper's claim (gates open where features are stable) over datasets",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", nargs="+", metavar="PAIRS", help="dataset folders, each holding ir/ and vi/")
    p.add_argument("--weights", action="append", required=True, metavar="SPEC",
                   help=f"weights spec, repeatable: {ACCEPTED_SPECS} (untrained: the null model)")
    p.add_argument("--k", type=int, default=StudySettings.k, help="interventions per type and pair (default 16)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N pairs of each folder, by name")
    p.add_argument("--seed", type=whole_number(0), default=StudySettings.seed, help="fixes every mask and the bootstrap (default 0)")
    p.add_argument("--max-side", type=int, default=StudySettings.max_side,
                   help="pairs are downscaled to this longer side (default 320)")
    p.add_argument("--q", type=float, default=0.05, help="false discovery rate of the Benjamini-Hochberg control (default 0.05)")
    p.add_argument("--out", type=Path, default=Path("study"), help="output folder (default ./study); its cache/ resumes a study")
    add_device_flag(p, "cpu")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..hub import WeightsError
    from . import report

    if args.limit is not None and args.limit < 1:
        return user_error("study", f"--limit must be at least 1, got {args.limit}")
    if not 0.0 < args.q < 1.0:
        return user_error("study", f"--q must be between 0 and 1, got {args.q}")
    problem = out_folder_problem(args.out)
    if problem:
        return user_error("study", f"--out {problem}")
    try:
        settings = StudySettings(k=args.k, seed=args.seed, max_side=args.max_side, mask_config=MaskConfig())
        datasets = load_datasets(args.pairs, args.limit)
        for d in datasets:
            if d.unmatched:
                print(d.unmatched, file=sys.stderr)
        result = run_study(datasets, list(dict.fromkeys(args.weights)), settings, args.out / "cache", q=args.q,
                           progress=not args.no_progress, device=args.device)
    except (ValueError, FileNotFoundError, WeightsError) as e:
        return user_error("study", e)
    written = report.write_outputs(result, args.out)
    if not args.no_plots and result.tests:
        from ..predictor import Fuser
        from ..hub import load_model

        written.append(report.distribution_figure(result, args.out / "r_distribution.png"))
        for w in result.weights:
            fuser = Fuser(load_model(w.spec), device=args.device, max_side=settings.max_side)
            path = report.extremes_figure(result, fuser, w.label, args.out / f"extremes_{report.safe_name(w.label)}.jpg")
            if path:
                written.append(path)
    print(report.preamble(result) + "\n")
    print(report.table(result))
    for f in result.failures:
        print(f"failed: {f['dataset']}/{f['pair']} with {f['weights']}: {f['reason']}")
    print(result.timing_line())
    print("wrote " + ", ".join(str(p) for p in written))
    if result.stale:
        print(f"study: {result.stale} cached record(s) were torn or malformed (no readable \"tests\") and were "
              f"measured again", file=sys.stderr)
    if result.failures:
        runs = result.computed + result.cached + len(result.failures)
        print(f"ivfusion study: {len(result.failures)} of {runs} pair runs failed (named above) and are left out "
              "of the statistics", file=sys.stderr)
        return 1
    return 0
