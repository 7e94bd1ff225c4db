"""Scoring files: fused folders (one per method) and pixel-wise baselines, pair by pair.

Every pair is scored on its own: whatever fails for one pair (an unreadable or oversized file,
mismatched sizes, anything the metrics raise) is recorded under that pair's name and the
others are still scored.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..cli_flags import failure_reason
from ..data import find_pairs, load_pair
from ..io import list_images
from ..metrics import evaluate_pair, fused_grey
from . import pool as _pool
from .results import EvaluationResults, MethodResult, PathLike, Scores


def size_text(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def match_pairs(ir_dir: PathLike, vis_dir: PathLike) -> Tuple[List[Tuple[str, Path, Path]], Dict[str, str]]:
    """The pairs of two folders (data.find_pairs) and a problem line per unmatched file."""
    pairs = find_pairs(infrared=ir_dir, visible=vis_dir)
    problems = {s: f"no visible image in {vis_dir}" for s in pairs.infrared_only}
    problems.update({s: f"no infrared image in {ir_dir}" for s in pairs.visible_only})
    return list(pairs), problems


def read_sources(ir_path, vis_path) -> Tuple[np.ndarray, np.ndarray]:
    """(infrared, visible) grey float64 0..255 as the metrics read files; raises on failure."""
    vis, ir = load_pair(ir_path, vis_path, form="grey")
    return ir, vis


def score_or_problem(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> Union[Scores, str]:
    """evaluate_pair, or a one-line problem if it raises (it should not: degenerate images
    have defined values; this keeps one bad pair from ending a run)."""
    try:
        return evaluate_pair(a, b, f)
    except Exception as e:
        return f"scoring failed: {failure_reason(e)}"


def score_pair(task) -> Tuple[str, Optional[str], Dict[str, Union[Scores, str]]]:
    """Score every method's output of one pair (a pool job). Returns (stem, pair problem, per
    method: scores or a problem message)."""
    stem, ir_path, vis_path, outputs = task
    try:
        a, b = read_sources(ir_path, vis_path)
    except Exception as e:
        return stem, f"cannot use the sources: {failure_reason(e)}", {}
    out: Dict[str, Union[Scores, str]] = {}
    for method, path in outputs:
        if path is None:
            out[method] = "missing output (no image with this stem)"
            continue
        try:
            f = fused_grey(path)
        except Exception as e:
            out[method] = f"unreadable output: {failure_reason(e)}"
            continue
        if f.shape != a.shape:
            out[method] = (f"output {Path(path).name} is {size_text(f.shape)} but the pair is "
                           f"{size_text(a.shape)}")
            continue
        out[method] = score_or_problem(a, b, f)
    return stem, None, out


def score_arrays(key, ir_grey: np.ndarray, vis_grey: np.ndarray, fused: np.ndarray):
    """(key, scores or a problem line) for in-memory images (a pool job)."""
    return key, score_or_problem(ir_grey, vis_grey, fused)


def collect(futures: Dict[cf.Future, object], bar=None) -> Dict[object, object]:
    """{key: result} of pool jobs; a job whose process died gives its key a problem line."""
    out = {}
    for fut in cf.as_completed(futures):
        key = futures[fut]
        try:
            out[key] = fut.result()
        except Exception as e:  # a crashed worker (out of memory, ...) fails its pair only
            out[key] = e
        if bar is not None:
            bar.update(1)
    return out


def _unique_names(folders: Sequence[Path]) -> List[str]:
    names = [f.name or str(f) for f in folders]
    if len(set(names)) == len(names):
        return names
    names = [f"{f.parent.name}/{f.name}" for f in folders]
    if len(set(names)) == len(names):
        return names
    return [str(f) for f in folders]


def evaluate_folders(
    ir_dir: PathLike,
    vis_dir: PathLike,
    fused_dirs: Union[PathLike, Sequence[PathLike]],
    names: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> EvaluationResults:
    """Score the outputs in ``fused_dirs`` (one folder per method) on the pairs of
    ``ir_dir``/``vis_dir`` (data.find_pairs: matched by file name without suffix).

    ``names`` defaults to the folder names. ``workers`` processes score pairs in parallel
    (default ``os.cpu_count()``; 1, or fewer than ``pool.POOL_MIN_JOBS`` pairs = in this
    process). Missing, unreadable or mis-sized outputs land in each method's ``problems``
    and are not scored; the rest is.
    """
    if isinstance(fused_dirs, (str, os.PathLike)):
        fused_dirs = [fused_dirs]
    folders = [Path(d) for d in fused_dirs]
    names = _unique_names(folders) if names is None else list(names)
    if len(names) != len(folders):
        raise ValueError(f"{len(names)} names given for {len(folders)} fused folders")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for d in folders:
        if not d.is_dir():
            raise FileNotFoundError(f"fused folder not found: {d}")
    pairs, pair_problems = match_pairs(ir_dir, vis_dir)
    outputs = {n: list_images(d) for n, d in zip(names, folders)}
    methods = [MethodResult(n, str(d)) for n, d in zip(names, folders)]
    tasks = [(stem, str(ir), str(vi), [(n, str(outputs[n][stem]) if stem in outputs[n] else None)
                                       for n in names])
             for stem, ir, vi in pairs]

    ex = _pool.make_pool(workers, len(tasks)) if tasks else _pool.Inline()
    try:
        with _pool.progress(len(tasks), "evaluate", progress) as bar:
            done = collect({ex.submit(score_pair, t): t[0] for t in tasks}, bar)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)

    scored_pairs = []
    for stem, _, _ in pairs:  # keep the sorted pair order
        result = done[stem]
        if isinstance(result, BaseException):
            pair_problems[stem] = f"scoring failed: {failure_reason(result)}"
            continue
        _, problem, per_method = result
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
    pairs, pair_problems = match_pairs(ir_dir, vis_dir)
    method = MethodResult(name, f"baseline: {name}")
    ex = _pool.make_pool(workers, len(pairs)) if pairs else _pool.Inline()
    try:
        futures = {}
        with _pool.progress(len(pairs), kind, progress) as bar:
            for stem, ir_path, vis_path in pairs:
                try:
                    a, b = read_sources(ir_path, vis_path)
                    futures[ex.submit(score_arrays, stem, a, b, combine(a, b))] = stem
                except Exception as e:
                    pair_problems[stem] = f"cannot use the sources: {failure_reason(e)}"
                bar.update(1)
        done = collect(futures)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    for stem, result in done.items():
        v = result[1] if not isinstance(result, BaseException) else f"scoring failed: {failure_reason(result)}"
        if isinstance(v, str):
            method.problems[stem] = v
        else:
            method.scores[stem] = v
    method.scores = {s: method.scores[s] for s, _, _ in pairs if s in method.scores}  # pair order
    stems = [s for s, _, _ in pairs if s not in pair_problems]
    return EvaluationResults(stems, [method], dict(sorted(pair_problems.items())))
