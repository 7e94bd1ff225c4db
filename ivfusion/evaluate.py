"""``ivfusion evaluate``: score fusion methods' outputs with the eleven metrics.

    ivfusion evaluate --ir DIR --vis DIR --fused DIR [--fused DIR2 ...] [--names A,B]
                      [--weights SPEC [--interventions]] [--csv F] [--json F] [--plot F.png]
                      [--workers N]

Pairs are the images whose file stem appears in both ``--ir`` and ``--vis``; each method's
output is the image with the same stem in its ``--fused`` folder (any image suffix). Every
image is read for the metrics as the reference values were made (:func:`ivfusion.metrics.read_grey`:
OpenCV, BGR, ``COLOR_BGR2GRAY``, float64). A missing, unreadable or mis-sized output is
reported by name and left out; the rest is still scored.

Output: a Markdown table of per-method means (the best value of each column in bold), and on
request per-image values as CSV/JSON and a box plot PNG. ``--weights SPEC`` also runs ISFuse
itself on each pair (method "ISFuse"); with ``--interventions`` it also fuses each pair under
every intervention (fixed seeds) and reports each metric's relative change against the clean
output, with each gate level's mean activation next to the training target eta.

"Best" per column: all eleven metrics are read as higher-is-better
(:data:`ivfusion.metrics.HIGHER_IS_BETTER`), as fusion papers do. Two of them are ambiguous
and the table still bolds the highest value: EN/SD/SF/AG also rise with noise and artefacts,
and PSNR is ``inf`` only for an output equal to both sources (a tie of such outputs is bold
for all of them). NaN (SCD where a difference image is constant) is never best and is left
out of the means; the table's notes say where.

Exit status of the command: 0 when everything was scored, 1 when some output or pair was
missing, unreadable or mis-sized (the rest is still scored and written), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .metrics import HIGHER_IS_BETTER, METRIC_NAMES, evaluate_pair, read_grey, to_grey

__all__ = [
    "MethodResult",
    "EvaluationResults",
    "InterventionReport",
    "evaluate_folders",
    "evaluate_model",
    "markdown_table",
    "interventions_table",
    "plot_results",
    "add_parser",
    "build_parser",
    "run",
    "main",
]

PathLike = Union[str, os.PathLike]
Scores = Dict[str, float]

MODEL_METHOD = "ISFuse"
INTERVENTION_KINDS = ("complementary", "random", "drop-vis", "drop-ir")
GATE_LABELS = ("gate 1/4", "gate 1/2", "gate 1/1")


# --------------------------------------------------------------------------------------
# Result containers
# --------------------------------------------------------------------------------------

def _nan_mean(values: Iterable[float]) -> Tuple[float, int]:
    """Mean over the non-NaN values and their count (NaN, 0 when there is none)."""
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), 0
    if np.isinf(v).any():  # avoid inf - inf warnings; mean of +inf values is +inf
        pos, neg = bool((v == np.inf).any()), bool((v == -np.inf).any())
        return (float("nan") if pos and neg else (math.inf if pos else -math.inf)), int(v.size)
    return float(v.mean()), int(v.size)


@dataclass
class MethodResult:
    """One method's scores: ``scores[stem][metric]`` for each scored pair (pair order).

    ``problems[stem]`` says why a pair was not scored for this method (missing, unreadable,
    mis-sized output). ``source`` is the folder (or the weights) the outputs came from.
    """

    name: str
    source: str
    scores: Dict[str, Scores] = field(default_factory=dict)
    problems: Dict[str, str] = field(default_factory=dict)

    def _values(self, stems: Optional[Iterable[str]]) -> List[Scores]:
        if stems is None:
            return list(self.scores.values())
        return [self.scores[s] for s in stems]

    def mean(self, stems: Optional[Iterable[str]] = None) -> Scores:
        """Per-metric mean over ``stems`` (default: all scored pairs), NaN values left out."""
        vals = self._values(stems)
        return {m: _nan_mean(s[m] for s in vals)[0] for m in METRIC_NAMES}

    def counts(self, stems: Optional[Iterable[str]] = None) -> Dict[str, int]:
        """Per-metric number of non-NaN values behind :meth:`mean`."""
        vals = self._values(stems)
        return {m: _nan_mean(s[m] for s in vals)[1] for m in METRIC_NAMES}


@dataclass
class InterventionReport:
    """ISFuse under the interventions: mean scores, gate means and seeds per kind.

    ``means[kind]`` (kind "none" is the clean output), ``gate_means[kind]`` the mean over
    pairs of each gate level's mean activation (coarsest first), ``seeds[stem]`` the seed
    used for every intervention of that pair.
    """

    eta: float
    means: Dict[str, Scores] = field(default_factory=dict)
    gate_means: Dict[str, Tuple[float, float, float]] = field(default_factory=dict)
    per_image: Dict[str, Dict[str, Scores]] = field(default_factory=dict)
    seeds: Dict[str, int] = field(default_factory=dict)

    def relative_change(self) -> Dict[str, Scores]:
        """(mean under the intervention - clean mean) / |clean mean|, per kind and metric."""
        clean = self.means["none"]
        out: Dict[str, Scores] = {}
        for kind, m in self.means.items():
            if kind == "none":
                continue
            out[kind] = {}
            for name in METRIC_NAMES:
                c, v = clean[name], m[name]
                ok = math.isfinite(c) and math.isfinite(v) and c != 0
                out[kind][name] = (v - c) / abs(c) if ok else float("nan")
        return out


@dataclass
class EvaluationResults:
    """Scores of several methods on the same pairs (what :func:`evaluate_folders` returns)."""

    pairs: List[str]
    methods: List[MethodResult]
    pair_problems: Dict[str, str] = field(default_factory=dict)
    interventions: Optional[InterventionReport] = None

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def common_pairs(self) -> List[str]:
        """The pairs scored for every method (pair order): what the means compare on."""
        return [s for s in self.pairs if all(s in m.scores for m in self.methods)]

    def means(self) -> Dict[str, Scores]:
        """``{method: {metric: mean}}`` over :meth:`common_pairs`, so that methods are
        compared on the same images even when some outputs are missing."""
        common = self.common_pairs()
        return {m.name: m.mean(common) for m in self.methods}

    @property
    def problems(self) -> List[str]:
        """Every problem as one readable line (pairs first, then per method)."""
        lines = [f"pair {stem}: {msg}" for stem, msg in self.pair_problems.items()]
        for m in self.methods:
            lines += [f"{m.name}: {stem}: {msg}" for stem, msg in m.problems.items()]
        return lines

    def rows(self) -> List[Dict[str, Union[str, float]]]:
        """Per-image rows: ``{"method", "image", EN, ..., CC}`` for every scored image."""
        out = []
        for m in self.methods:
            for stem, s in m.scores.items():
                out.append({"method": m.name, "image": stem, **s})
        return out

    def write_csv(self, path: PathLike) -> None:
        """Per-image values, one row per (method, image); floats at full precision."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["method", "image", *METRIC_NAMES])
            for r in self.rows():
                w.writerow([r["method"], r["image"], *(repr(float(r[k])) for k in METRIC_NAMES)])

    def to_dict(self) -> dict:
        """JSON-ready dict. NaN becomes null; +-inf becomes the strings "inf"/"-inf"."""
        d = {
            "metrics": list(METRIC_NAMES),
            "higher_is_better": dict(HIGHER_IS_BETTER),
            "pairs": list(self.pairs),
            "common_pairs": self.common_pairs(),
            "pair_problems": dict(self.pair_problems),
            "methods": {
                m.name: {
                    "source": m.source,
                    "mean": m.mean(self.common_pairs()),
                    "n": m.counts(self.common_pairs()),
                    "mean_all_scored": m.mean(),
                    "images": m.scores,
                    "problems": m.problems,
                }
                for m in self.methods
            },
        }
        if self.interventions is not None:
            r = self.interventions
            d["interventions"] = {
                "eta": r.eta,
                "seeds": r.seeds,
                "means": r.means,
                "relative_change": r.relative_change(),
                "gate_means": {k: list(v) for k, v in r.gate_means.items()},
                "images": r.per_image,
            }
        return _json_safe(d)

    def write_json(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------------------
# Scoring (worker side)
# --------------------------------------------------------------------------------------

def _image_files(folder: Path) -> Dict[str, Path]:
    """Image files of a folder keyed by stem (the project's io.list_images)."""
    from .io import list_images

    return list_images(folder)


def _size(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _score_pair(task) -> Tuple[str, Optional[str], Dict[str, Union[Scores, str]]]:
    """Score every method's output of one pair. Returns (stem, pair problem, per method:
    scores or a problem message)."""
    stem, ir_path, vis_path, outputs = task
    try:
        a = read_grey(ir_path)
        b = read_grey(vis_path)
    except (OSError, ValueError) as e:
        return stem, f"cannot read the sources: {e}", {}
    if a.shape != b.shape:
        return stem, (f"infrared {Path(ir_path).name} is {_size(a.shape)} but visible "
                      f"{Path(vis_path).name} is {_size(b.shape)}"), {}
    out: Dict[str, Union[Scores, str]] = {}
    for method, path in outputs:
        if path is None:
            out[method] = "missing output (no image with this stem)"
            continue
        try:
            f = read_grey(path)
        except (OSError, ValueError) as e:
            out[method] = f"unreadable output: {e}"
            continue
        if f.shape != a.shape:
            out[method] = (f"output {Path(path).name} is {_size(f.shape)} but the pair is "
                           f"{_size(a.shape)}")
            continue
        out[method] = evaluate_pair(a, b, f)
    return stem, None, out


def _score_arrays(key, ir_grey: np.ndarray, vis_grey: np.ndarray, fused: np.ndarray):
    return key, evaluate_pair(ir_grey, vis_grey, fused)


POOL_MIN_JOBS = 16
"""Fewer jobs than this are scored in this process: starting the pool (a fresh forkserver
imports numpy, OpenCV and the ivfusion package, torch included) costs more than it saves."""


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; no thread oversubscription


class _Inline:
    """Executor stand-in that runs jobs at submission (workers <= 1 or few jobs)."""

    def submit(self, fn, *args):
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # pragma: no cover - re-raised by result()
            f.set_exception(e)
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _mp_context():
    """forkserver where available (Python 3.14's default on Linux), else spawn.

    Not fork: the calling process may hold OpenCV / OpenMP / torch thread-pool locks, and a
    forked child that touches them deadlocks (observed with OpenCV). The forkserver is a
    clean single-threaded process that preloads this module once; workers fork from it.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ivfusion.evaluate"])
        return ctx
    return multiprocessing.get_context("spawn")


def _make_pool(workers: Optional[int], jobs: int):
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, jobs)
    if workers <= 1 or jobs < POOL_MIN_JOBS:
        return _Inline()
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                                  initializer=_worker_init)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


# --------------------------------------------------------------------------------------
# Library entry points
# --------------------------------------------------------------------------------------

def _unique_names(folders: Sequence[Path]) -> List[str]:
    names = [f.name or str(f) for f in folders]
    if len(set(names)) == len(names):
        return names
    names = [f"{f.parent.name}/{f.name}" for f in folders]
    if len(set(names)) == len(names):
        return names
    return [str(f) for f in folders]


def _match_pairs(ir_dir: Path, vis_dir: Path) -> Tuple[List[Tuple[str, Path, Path]], Dict[str, str]]:
    for label, d in (("infrared", ir_dir), ("visible", vis_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f"{label} folder not found: {d}")
    irs, viss = _image_files(ir_dir), _image_files(vis_dir)
    problems = {s: f"no visible image in {vis_dir}" for s in sorted(set(irs) - set(viss))}
    problems.update({s: f"no infrared image in {ir_dir}" for s in sorted(set(viss) - set(irs))})
    pairs = [(s, irs[s], viss[s]) for s in sorted(set(irs) & set(viss))]
    return pairs, problems


def evaluate_folders(
    ir_dir: PathLike,
    vis_dir: PathLike,
    fused_dirs: Union[PathLike, Sequence[PathLike]],
    names: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> EvaluationResults:
    """Score the outputs in ``fused_dirs`` (one folder per method) on the pairs of
    ``ir_dir``/``vis_dir`` (matched by file stem).

    ``names`` defaults to the folder names. ``workers`` processes score pairs in parallel
    (default ``os.cpu_count()``; 1, or fewer than :data:`POOL_MIN_JOBS` pairs = in this
    process). Missing, unreadable or mis-sized
    outputs land in each method's ``problems`` and are not scored; the rest is.
    """
    if isinstance(fused_dirs, (str, os.PathLike)):
        fused_dirs = [fused_dirs]
    folders = [Path(d) for d in fused_dirs]
    if names is None:
        names = _unique_names(folders)
    names = list(names)
    if len(names) != len(folders):
        raise ValueError(f"{len(names)} names given for {len(folders)} fused folders")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for d in folders:
        if not d.is_dir():
            raise FileNotFoundError(f"fused folder not found: {d}")
    pairs, pair_problems = _match_pairs(Path(ir_dir), Path(vis_dir))
    outputs = {n: _image_files(d) for n, d in zip(names, folders)}
    methods = [MethodResult(n, str(d)) for n, d in zip(names, folders)]
    tasks = [(stem, str(ir), str(vi), [(n, None if stem not in outputs[n] else str(outputs[n][stem]))
                                       for n in names])
             for stem, ir, vi in pairs]

    results: Dict[str, Tuple[Optional[str], Dict]] = {}
    pool = _make_pool(workers, len(tasks)) if tasks else _Inline()
    try:
        futures = [pool.submit(_score_pair, t) for t in tasks]
        with _progress(len(futures), "evaluate", progress) as bar:
            for fut in cf.as_completed(futures):
                stem, problem, per_method = fut.result()
                results[stem] = (problem, per_method)
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    scored_pairs = []
    for stem, _, _ in pairs:  # keep the sorted pair order
        problem, per_method = results[stem]
        if problem is not None:
            pair_problems[stem] = problem
            continue
        scored_pairs.append(stem)
        for m in methods:
            v = per_method[m.name]
            if isinstance(v, str):
                m.problems[stem] = v
            else:
                m.scores[stem] = v
    return EvaluationResults(scored_pairs, methods, dict(sorted(pair_problems.items())))


def evaluate_model(
    ir_dir: PathLike,
    vis_dir: PathLike,
    weights: Optional[str] = None,
    interventions: bool = False,
    seed: int = 0,
    device: str = "auto",
    workers: Optional[int] = None,
    progress: bool = False,
    fuser=None,
    name: str = MODEL_METHOD,
) -> EvaluationResults:
    """Run ISFuse (``ivfusion.Fuser(weights)``, or ``fuser``) on every pair and score
    ``fused_rgb`` against the sources, read as the metrics read files.

    With ``interventions``, each pair is also fused under every intervention of
    :data:`INTERVENTION_KINDS` with seed ``seed + i`` (i = the pair's index in sorted stem
    order), scored against the clean sources; the result's ``interventions`` report holds
    the mean scores, the relative change against the clean output and each gate level's
    mean activation (with the model's eta). Images are fused at full size (no downscaling).
    """
    from .io import read_image
    from .predictor import Fuser

    pairs, pair_problems = _match_pairs(Path(ir_dir), Path(vis_dir))
    kinds = ("none",) + (INTERVENTION_KINDS if interventions else ())
    pool = _make_pool(workers, len(pairs) * len(kinds)) if pairs else _Inline()
    try:
        if fuser is None:
            fuser = Fuser(weights, device=device, max_side=None)
        method = MethodResult(name, f"weights: {fuser.weights_source}")
        cfg = getattr(fuser.model, "config", None)
        report = InterventionReport(eta=float(getattr(cfg, "eta", 0.3))) if interventions else None
        futures = []
        gates: Dict[Tuple[str, str], Tuple[float, float, float]] = {}
        with _progress(len(pairs), "fuse", progress) as bar:
            for i, (stem, ir_path, vis_path) in enumerate(pairs):
                try:
                    a, b = read_grey(ir_path), read_grey(vis_path)
                    vis_img, ir_img = read_image(vis_path), read_image(ir_path)
                except (OSError, ValueError) as e:
                    pair_problems[stem] = f"cannot read the sources: {e}"
                    bar.update(1)
                    continue
                if a.shape != b.shape:
                    pair_problems[stem] = (f"infrared {ir_path.name} is {_size(a.shape)} but "
                                           f"visible {vis_path.name} is {_size(b.shape)}")
                    bar.update(1)
                    continue
                if report is not None:
                    report.seeds[stem] = seed + i
                for kind in kinds:
                    res = fuser.fuse(vis_img, ir_img, intervention=None if kind == "none" else kind,
                                     seed=seed + i)
                    fused = to_grey(res.fused_rgb)
                    if fused.shape != a.shape:
                        method.problems[stem] = (f"model output is {_size(fused.shape)} but the "
                                                 f"pair is {_size(a.shape)}")
                        break
                    gates[(kind, stem)] = res.gate_means()
                    futures.append(pool.submit(_score_arrays, (kind, stem), a, b, fused))
                bar.update(1)
        scores: Dict[Tuple[str, str], Scores] = {}
        for fut in futures:
            key, s = fut.result()
            scores[key] = s
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    stems = [s for s, _, _ in pairs if s not in pair_problems]
    for stem in stems:
        if ("none", stem) in scores and stem not in method.problems:
            method.scores[stem] = scores[("none", stem)]
    if report is not None:
        done = [s for s in stems if s in method.scores]
        for kind in kinds:
            report.per_image[kind] = {s: scores[(kind, s)] for s in done}
            report.means[kind] = {m: _nan_mean(scores[(kind, s)][m] for s in done)[0]
                                  for m in METRIC_NAMES}
            g = np.array([gates[(kind, s)] for s in done], dtype=np.float64).reshape(-1, 3)
            report.gate_means[kind] = tuple(float(x) for x in g.mean(axis=0)) if len(g) \
                else (float("nan"),) * 3
    return EvaluationResults(stems, [method], dict(sorted(pair_problems.items())), report)


BASELINES = {
    "mean": ("(IR+VI)/2", lambda a, b: np.round((a + b) / 2)),  # numpy rounds half to even
    "max": ("max(IR,VI)", np.maximum),
}


def evaluate_baseline(ir_dir: PathLike, vis_dir: PathLike, kind: str, workers: Optional[int] = None,
                      progress: bool = False) -> EvaluationResults:
    """Score a pixel-wise baseline (``mean`` = round((IR+VI)/2), ``max``) on the grey sources."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; accepted: {', '.join(BASELINES)}")
    name, combine = BASELINES[kind]
    pairs, pair_problems = _match_pairs(Path(ir_dir), Path(vis_dir))
    method = MethodResult(name, f"baseline: {name}")
    pool = _make_pool(workers, len(pairs)) if pairs else _Inline()
    try:
        futures = []
        with _progress(len(pairs), kind, progress) as bar:
            for stem, ir_path, vis_path in pairs:
                a, b = read_grey(ir_path), read_grey(vis_path)
                if a.shape != b.shape:
                    pair_problems[stem] = f"infrared is {_size(a.shape)} but visible is {_size(b.shape)}"
                else:
                    futures.append(pool.submit(_score_arrays, stem, a, b, combine(a, b)))
                bar.update(1)
        for fut in futures:
            stem, scores = fut.result()
            method.scores[stem] = scores
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    stems = [s for s, _, _ in pairs if s not in pair_problems]
    return EvaluationResults(stems, [method], dict(sorted(pair_problems.items())))


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

def _fmt(v: float, digits: int) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def markdown_table(
    results: Union[EvaluationResults, Mapping[str, Mapping[str, float]]],
    digits: int = 4,
    counts: Optional[Mapping[str, int]] = None,
) -> str:
    """Markdown table of per-method means: one row per method, one column per metric.

    ``results`` is an :class:`EvaluationResults` or ``{method: {metric: mean}}``. With two
    or more methods the best value of each column is bold (highest, or lowest for a metric
    whose :data:`HIGHER_IS_BETTER` entry is False), compared as displayed so that ties are
    all bold; NaN is never best. With an EvaluationResults, an "images" column gives the
    number of images behind the means: the pairs scored for every method (a pair with a
    missing or mis-sized output for one method is left out of all rows, so that rows compare
    the same images); notes under the table name such pairs and say where NaN values were
    left out of a mean.
    """
    notes: List[str] = []
    if isinstance(results, EvaluationResults):
        means = results.means()
        common = results.common_pairs()
        n = len(common)
        counts = {m.name: n for m in results.methods}
        left_out = [s for s in results.pairs if s not in common]
        if left_out:
            notes.append(f"means over the {n} pairs scored for every method; left out because "
                         f"some method has no valid output: {', '.join(left_out)}")
        for m in results.methods:
            for metric, c in m.counts(common).items():
                if c < n:
                    notes.append(f"{m.name}: {metric} is undefined (NaN) for {n - c} of {n} "
                                 f"images, left out of its mean")
    else:
        means = {k: dict(v) for k, v in results.items()}
    header = ["method"] + (["images"] if counts is not None else []) + list(METRIC_NAMES)
    cells = {name: {k: _fmt(float(row.get(k, float("nan"))), digits) for k in METRIC_NAMES}
             for name, row in means.items()}
    if len(means) >= 2:
        for k in METRIC_NAMES:
            vals = [float(row.get(k, float("nan"))) for row in means.values()]
            vals = [v for v in vals if not math.isnan(v)]
            if not vals:
                continue
            best = _fmt(max(vals) if HIGHER_IS_BETTER[k] else min(vals), digits)
            for name in means:
                if cells[name][k] == best:
                    cells[name][k] = f"**{best}**"
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + ([" ---: "] if counts is not None else [])
                            + [" ---: "] * len(METRIC_NAMES)) + "|"]
    for name in means:
        row = [name.replace("|", "\\|")] + ([str(counts.get(name, 0))] if counts is not None else [])
        lines.append("| " + " | ".join(row + [cells[name][k] for k in METRIC_NAMES]) + " |")
    if len(means) >= 2:
        lines.append("")
        lines.append("Bold: best per column (all eleven metrics: higher is better).")
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def interventions_table(report: InterventionReport, digits: int = 1) -> str:
    """Markdown table: per intervention, each metric's relative change (%) against the
    clean output, and each gate level's mean activation (coarsest first) next to eta."""
    rel = report.relative_change()
    header = ["intervention"] + [f"{m} Δ%" for m in METRIC_NAMES] + list(GATE_LABELS)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for kind in report.means:
        if kind == "none":
            changes = ["—"] * len(METRIC_NAMES)
            label = "none (clean)"
        else:
            changes = [_fmt(100 * rel[kind][m], digits) if not math.isnan(rel[kind][m]) else "NaN"
                       for m in METRIC_NAMES]
            label = kind
        g = [_fmt(x, 3) for x in report.gate_means[kind]]
        lines.append("| " + " | ".join([label] + changes + g) + " |")
    lines.append("")
    lines.append(f"Gates: mean activation per level; training target eta = {report.eta:g}. "
                 f"Δ%: (mean under the intervention - clean mean) / |clean mean|, scored "
                 f"against the unperturbed sources.")
    return "\n".join(lines)


def plot_results(results: EvaluationResults, path: PathLike) -> None:
    """Box plot PNG: one panel per metric, one box per method (per-image values over the
    pairs scored for every method)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    methods = results.methods
    common = results.common_pairs()
    fig = Figure(figsize=(max(12.0, 1.1 * len(methods) * 4), 9), dpi=100)
    axes = fig.subplots(3, 4).ravel()
    for ax, metric in zip(axes, METRIC_NAMES):
        data = []
        for m in methods:
            v = np.array([m.scores[s][metric] for s in common], dtype=np.float64)
            data.append(v[np.isfinite(v)])
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1))
        ax.set_xticklabels([m.name for m in methods], rotation=30, ha="right", fontsize=8)
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        ax.set_title(f"{metric} {arrow}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].axis("off")
    axes[-1].text(0.0, 0.5, f"{len(common)} pairs (scored for every method)\nbox: per-image values\n"
                  "triangle: mean\n↑ higher is better", fontsize=9, va="center")
    fig.tight_layout()
    fig.savefig(str(path))


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

_DESCRIPTION = """\
Score fusion methods' outputs with the eleven metrics (EN SD SF AG MI SCD VIF Qabf SSIM PSNR
CC, conventions of METRICS.md). Pairs are the file stems found in both --ir and --vis; each
method's output is the image with the same stem in its --fused folder. Prints a Markdown
table of per-method means, the best of each column in bold (all eleven: higher is better)."""

_EPILOG = """\
Missing, unreadable or mis-sized outputs are reported by name and the rest is still scored.
Exit status: 0 all scored, 1 some output or pair not scored, 2 usage error."""


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--ir", required=True, metavar="DIR", help="folder of infrared images")
    p.add_argument("--vis", required=True, metavar="DIR", help="folder of visible images")
    p.add_argument("--fused", action="append", default=[], metavar="DIR",
                   help="folder of one method's fused images (same file stems); repeat for "
                        "several methods")
    p.add_argument("--names", metavar="A,B", help="comma-separated method names, one per --fused "
                                                   "(default: folder names)")
    p.add_argument("--weights", metavar="SPEC", action="append", default=[],
                   help=f"also run ISFuse with these weights (method '{MODEL_METHOD}'): a "
                        "folder, .safetensors, best.pth, hf://owner/repo, 'untrained' or "
                        "'default'; repeat to compare several (named by their spec)")
    p.add_argument("--baseline", action="append", default=[], choices=sorted(BASELINES),
                   help="also score a pixel-wise baseline: mean = round((IR+VI)/2), max = "
                        "max(IR, VI); repeatable")
    p.add_argument("--interventions", action="store_true",
                   help="with --weights: also fuse under each intervention and report the "
                        "relative metric changes and the gate means")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of the interventions (pair i uses seed + i; default 0)")
    p.add_argument("--device", default="auto", help="device for --weights: auto, cpu, cuda")
    p.add_argument("--csv", metavar="F", help="write per-image values as CSV")
    p.add_argument("--json", metavar="F", help="write means, per-image values and problems as JSON")
    p.add_argument("--plot", metavar="F.png", help="write a box plot of the per-image values")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes scoring in parallel (default: all CPU cores)")
    p.add_argument("--digits", type=int, default=4, help="decimals in the table (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="score fused images (or ISFuse itself) with the eleven fusion metrics",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(p)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (``python -m ivfusion.evaluate``)."""
    parser = argparse.ArgumentParser(prog="ivfusion")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ivfusion evaluate`` with parsed arguments; returns the exit status."""
    err = sys.stderr
    if not args.fused and not args.weights and not args.baseline:
        print("ivfusion evaluate: give at least one --fused DIR, --weights SPEC or --baseline", file=err)
        return 2
    if args.interventions and len(args.weights) != 1:
        print("ivfusion evaluate: --interventions needs exactly one --weights SPEC", file=err)
        return 2
    names = None
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.fused):
            print(f"ivfusion evaluate: --names gives {len(names)} names for {len(args.fused)} "
                  f"--fused folders", file=err)
            return 2
    if args.workers is not None and args.workers < 1:
        print("ivfusion evaluate: --workers must be >= 1", file=err)
        return 2
    progress = not args.no_progress
    parts: List[EvaluationResults] = []
    try:
        if args.fused:
            parts.append(evaluate_folders(args.ir, args.vis, args.fused, names=names,
                                          workers=args.workers, progress=progress))
        for spec in args.weights:
            name = MODEL_METHOD if len(args.weights) == 1 else f"{MODEL_METHOD} [{spec}]"
            parts.append(evaluate_model(args.ir, args.vis, None if spec == "default" else spec,
                                        interventions=args.interventions, seed=args.seed,
                                        device=args.device, workers=args.workers,
                                        progress=progress, name=name))
        for kind in args.baseline:
            parts.append(evaluate_baseline(args.ir, args.vis, kind, workers=args.workers,
                                           progress=progress))
    except (FileNotFoundError, ValueError) as e:
        print(f"ivfusion evaluate: {e}", file=err)
        return 2
    except Exception as e:  # weights that cannot be loaded, a CUDA request without CUDA
        print(f"ivfusion evaluate: {type(e).__name__}: {e}", file=err)
        return 2
    results = parts[0]
    for other in parts[1:]:
        taken = {x.name for x in results.methods}
        for m in other.methods:
            while m.name in taken:
                m.name += " (2)"
            results.methods.append(m)
        results.pairs = [p for p in results.pairs if p in set(other.pairs)]
        results.pair_problems = {**other.pair_problems, **results.pair_problems}
        if other.interventions is not None:
            results.interventions = other.interventions

    if not results.pairs:
        print(f"ivfusion evaluate: no pair to score (no file stem in both {args.ir} and "
              f"{args.vis})", file=err)
        for line in results.problems:
            print(f"  {line}", file=err)
        return 2
    print(f"{len(results.pairs)} pairs; means of the eleven metrics (METRICS.md conventions):\n")
    print(markdown_table(results, digits=args.digits))
    if results.interventions is not None:
        print("\nISFuse under interventions:\n")
        print(interventions_table(results.interventions))
    if args.csv:
        results.write_csv(args.csv)
    if args.json:
        results.write_json(args.json)
    if args.plot:
        plot_results(results, args.plot)
    for f in (args.csv, args.json, args.plot):
        if f:
            print(f"wrote {f}", file=err)
    if results.problems:
        print(f"\n{len(results.problems)} problem(s); these were not scored:", file=err)
        for line in results.problems:
            print(f"  {line}", file=err)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(["evaluate", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    # run the imported module's main, so that pool jobs pickle as ivfusion.evaluate.*
    from ivfusion.evaluate import main as _main

    sys.exit(_main())
