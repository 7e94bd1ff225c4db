"""Scoring ISFuse itself: fuse each pair with given weights (and under each intervention),
score the outputs and measure the invariance gates (diagnostics per level)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from ..cli_flags import failure_reason
from ..data import load_pair
from ..interventions import INTERVENTIONS
from ..levels import GATE_LEVELS
from ..metrics import METRIC_NAMES, fused_grey
from . import pool as _pool
from ..levels import gate_stats
from .results import EvaluationResults, InterventionReport, MethodResult, PathLike, Scores, nan_mean
from .scoring import collect, match_pairs, read_sources, score_arrays, size_text

MODEL_METHOD = "ISFuse"
INTERVENTION_KINDS = tuple(name for name in INTERVENTIONS if name != "none")
"""The interventions `--interventions` runs, in the registry's order (names from
ivfusion.interventions.INTERVENTIONS; "none" is the clean pass, always run)."""


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

    Each clean pass also gives the gate diagnostics of every level (mean, spatial std and
    1st-99th percentile span of the gate map at its native resolution; ``MethodResult.gates``)
    and the model's eta. With ``interventions``, each pair is also fused under every
    intervention of :data:`INTERVENTION_KINDS` with seed ``seed + i`` (i = the pair's index in
    sorted order), scored against the clean sources; the result's ``interventions`` report
    holds the mean scores, the relative change against the clean output and each gate level's
    mean activation. Images are fused at full size (no downscaling). A pair on which the
    network fails is recorded with the reason under the method's problems; the others go on.
    """
    from ..predictor import Fuser

    pairs, pair_problems = match_pairs(ir_dir, vis_dir)
    kinds = ("none",) + (INTERVENTION_KINDS if interventions else ())
    ex = _pool.make_pool(workers, len(pairs) * len(kinds)) if pairs else _pool.Inline()
    try:
        if fuser is None:
            fuser = Fuser(weights, device=device, max_side=None)
        eta = float(fuser.model.config.eta)
        method = MethodResult(name, f"weights: {fuser.weights_source}", eta=eta)
        report = InterventionReport(eta=eta) if interventions else None
        futures = {}
        gate_means: Dict[Tuple[str, str], Dict[str, float]] = {}
        with _pool.progress(len(pairs), "fuse", progress) as bar:
            for i, (stem, ir_path, vis_path) in enumerate(pairs):
                try:
                    a, b = read_sources(ir_path, vis_path)
                    visible, infrared = load_pair(ir_path, vis_path, form="image")
                except Exception as e:
                    pair_problems[stem] = f"cannot use the sources: {failure_reason(e)}"
                    bar.update(1)
                    continue
                if report is not None:
                    report.seeds[stem] = seed + i
                try:
                    for kind in kinds:
                        res = fuser.fuse(visible, infrared, intervention=kind, seed=seed + i)
                        fused = fused_grey(res.fused_rgb)
                        if fused.shape != a.shape:
                            raise ValueError(f"model output is {size_text(fused.shape)} but the pair is "
                                             f"{size_text(a.shape)}")
                        if kind == "none":
                            method.gates[stem] = gate_stats(res.gates)
                        gate_means[(kind, stem)] = {lv.key: float(res.gates[lv.index].mean()) for lv in GATE_LEVELS}
                        futures[ex.submit(score_arrays, (kind, stem), a, b, fused)] = (kind, stem)
                except Exception as e:  # this pair only: record why, go on with the next
                    method.problems[stem] = f"fusion failed: {failure_reason(e)}"
                    method.gates.pop(stem, None)
                bar.update(1)
        done = collect(futures)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)

    scores: Dict[Tuple[str, str], Scores] = {}
    for key, result in done.items():
        v = result[1] if not isinstance(result, BaseException) else f"scoring failed: {failure_reason(result)}"
        if isinstance(v, str):
            method.problems.setdefault(key[1], v if key[0] == "none" else f"{key[0]}: {v}")
        else:
            scores[key] = v
    stems = [s for s, _, _ in pairs if s not in pair_problems]
    for stem in stems:
        if stem not in method.problems and all((k, stem) in scores for k in kinds):
            method.scores[stem] = scores[("none", stem)]
        else:
            method.gates.pop(stem, None)
    if report is not None:
        ok = [s for s in stems if s in method.scores]
        for kind in kinds:
            report.per_image[kind] = {s: scores[(kind, s)] for s in ok}
            report.means[kind] = {m: nan_mean(scores[(kind, s)][m] for s in ok)[0] for m in METRIC_NAMES}
            report.gate_means[kind] = {lv.key: nan_mean(gate_means[(kind, s)][lv.key] for s in ok)[0]
                                       for lv in GATE_LEVELS}
    return EvaluationResults(stems, [method], dict(sorted(pair_problems.items())), report)
