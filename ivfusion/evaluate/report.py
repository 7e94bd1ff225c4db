"""What `ivfusion evaluate` prints and draws: Markdown tables (metrics, gate diagnostics,
interventions) and a box plot."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Union

import numpy as np

from ..interventions import INTERVENTIONS
from ..levels import GATE_LEVELS
from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES
from ..levels import GATE_STATS
from .results import EvaluationResults, InterventionReport, PathLike

GATE_STAT_LABELS = {"mean": "mean", "std": "std", "p1_p99": "p1-p99"}


def _fmt(v: float, digits: int) -> str:
    if v is None or math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def _table(header: List[str], rows: List[List[str]], left: int = 1) -> List[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] * left + [" ---: "] * (len(header) - left)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


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
    rows = [[name.replace("|", "\\|")] + ([str(counts.get(name, 0))] if counts is not None else [])
            + [cells[name][k] for k in METRIC_NAMES] for name in means]
    lines = _table(header, rows)
    if len(means) >= 2:
        lines += ["", "Bold: best per column (all eleven metrics: higher is better)."]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def gates_table(results: EvaluationResults, digits: int = 3) -> str:
    """Markdown table of the gate diagnostics: one row per ISFuse weights spec; per level
    (coarse, mid, fine) the gate map's mean, spatial std and 1st-99th percentile span,
    each averaged over the pairs of the metrics table. Empty string when no method has gates."""
    methods = results.gated_methods()
    if not methods:
        return ""
    common = results.common_pairs()
    header = ["weights", "images", "eta"] + [f"{lv.key} {GATE_STAT_LABELS[k]}" for lv in GATE_LEVELS
                                             for k in GATE_STATS]
    rows = []
    for m in methods:
        stems = [s for s in common if s in m.gates]
        g = m.gate_mean(stems)
        rows.append([m.name.replace("|", "\\|"), str(len(stems)), _fmt(m.eta, 2)]
                    + [_fmt(g[lv.key][k], digits) for lv in GATE_LEVELS for k in GATE_STATS])
    levels = ", ".join(f"{lv.key} 1/{round(1 / lv.scale)}" for lv in GATE_LEVELS)
    return "\n".join(_table(header, rows) + [
        "",
        f"Gate maps of the clean pass at their native resolution ({levels} of the input size). mean: the map's "
        "mean activation (L_inv pulls it towards eta); std: its spatial standard deviation; "
        "p1-p99: its 99th minus 1st percentile. Each is computed per pair, then averaged over "
        "the pairs. Small std and span: flat gates.",
    ])


def interventions_table(report: InterventionReport, digits: int = 1) -> str:
    """Markdown table: per intervention, each metric's relative change (%) against the
    clean output, and each gate level's mean activation next to eta."""
    rel = report.relative_change()
    header = ["intervention"] + [f"{m} Δ%" for m in METRIC_NAMES] + [f"{lv.key} gate mean" for lv in GATE_LEVELS]
    rows = []
    for kind in report.means:
        if kind == "none":
            changes = ["—"] * len(METRIC_NAMES)
            label = f"{INTERVENTIONS['none'].label} (clean)"
        else:
            changes = [_fmt(100 * rel[kind][m], digits) for m in METRIC_NAMES]
            label = INTERVENTIONS[kind].label
        rows.append([label] + changes + [_fmt(report.gate_means[kind][lv.key], 3) for lv in GATE_LEVELS])
    return "\n".join(_table(header, rows) + [
        "",
        f"Gates: mean activation per level; training target eta = {report.eta:g}. "
        f"Δ%: (mean under the intervention - clean mean) / |clean mean|, scored "
        f"against the unperturbed sources.",
    ])


def plot_results(results: EvaluationResults, path: PathLike) -> None:
    """Box plot PNG: one panel per metric, one box per method (per-image values over the
    pairs scored for every method). Written to a temporary name and renamed."""
    import io as _bytes_io

    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    from ..io import atomic_write

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
    buf = _bytes_io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
