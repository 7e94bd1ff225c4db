"""What a study writes: the contrast with the null and the per-weights table (printed and in
report.md), contrast.csv, summary.csv, tests.csv, study.json, the distribution of r per level and
weights, and the maps of the strongest and weakest pairs."""
from __future__ import annotations

import csv
import json
import math
import re
from io import StringIO
from pathlib import Path

import numpy as np

from .. import io
from ..data import load_pair
from ..levels import GATE_LEVELS
from ..predictor import Fuser
from .measure import MEASURES, analyse
from .run import StudyResult
from .stats import NULL


def _f(v: float, digits: int = 2, sign: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def table(result: StudyResult) -> str:
    """What the command prints, as Markdown: the contrast with the null (the primary table),
    then the per-weights table."""
    return contrast_table(result) + "\n" + weights_table(result)


def contrast_table(result: StudyResult) -> str:
    """The paired contrast of each trained set of weights with the null: one block per dataset."""
    if not result.contrast:
        return (f"No contrast with the null: the study has no '{NULL}' weights, or no other weights to compare "
                f"with it (give --weights {NULL} and at least one other).\n")
    out = []
    for d in result.datasets:
        rows = [r for r in result.contrast if r["dataset"] == d.label]
        out.append(f"**{d.label}: trained minus the {NULL} null** ({len(d.pairs)} pairs)\n")
        out.append("| weights | intervention | measure | level | mean d [95% CI] | mean r | null's mean r | p "
                   "| verdict |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            ci = f"{_f(r['mean_d'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
            p = "n/a" if not math.isfinite(r["p"]) else f"{r['p']:.4f}"
            out.append(f"| {r['weights']} | {r['intervention']} | {r['measure']} | {r['level']} | {ci} | "
                       f"{_f(r['mean_r'])} | {_f(r['mean_r_null'])} | {p} | {r['verdict']} |")
        out.append("")
    return "\n".join(out)


def weights_table(result: StudyResult) -> str:
    """Each set of weights on its own (r against 0, not against the null): one block per dataset."""
    out = []
    for d in result.datasets:
        rows = [r for r in result.rows if r["dataset"] == d.label]
        out.append(f"**{d.label}: each set of weights on its own** ({len(d.pairs)} pairs)\n")
        out.append("| weights | intervention | measure | level | mean r [95% CI] | median r | claim | opposite | undefined |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            ci = f"{_f(r['mean_r'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
            out.append(f"| {r['weights']} | {r['intervention']} | {r['measure']} | {r['level']} | {ci} | "
                       f"{_f(r['median_r'])} | {r['claim_share']:.0%} | {r['opposite_share']:.0%} | {r['undefined']} |")
        out.append("")
    return "\n".join(out)


def preamble(result: StudyResult) -> str:
    s = result.settings
    m = s.mask_config
    weights = "; ".join(f"{w.label}" + (f" = {w.spec}" if w.spec != w.label else "") + f" (parameters {w.key})"
                        for w in result.weights)
    return (f"K = {s.k} seeded interventions per type and pair (seed {s.seed}; every set of weights gets the same "
            f"masks), pairs downscaled to a longer side of {s.max_side}, masks of style '{m.style}' ({m.mask_size}-pixel "
            f"holes, {m.min_holes} to {m.max_holes} per mask). Measures: *output* = "
            f"r(clean gate of the level, upsampled; instability of the fused output over the runs that saw the pixel), "
            f"*features* = r(clean gate; relative change of that level's cross-attended features), *intervened* = "
            f"mean over the K passes of r(gate of the intervened pass, upsampled, or their mean at level 'mean' = "
            f"G_bar_d; |F_d - F| of the same pass, every pixel), the relation L_inv rewards. The claim predicts r < 0. "
            f"Primary table: per pair d = r(weights) - r({NULL}), the mean d with a bootstrap 95% interval over pairs, "
            f"the p-value of a sign-flip test over pairs, and the verdict after Benjamini-Hochberg control at "
            f"q = {result.q} over one dataset's and weights' clean-gate tests (output, features) or intervened-gate "
            f"tests: *claim* (d < 0), *opposite* (d > 0), *none* (no relation beyond the null under these measures). "
            f"Second table, each set of weights against r = 0: *claim* / *opposite* = the share of pairs whose own "
            f"test is significant in that direction after Benjamini-Hochberg control at q = {result.q} over the pairs "
            f"and levels of one dataset, weights, intervention and measure (p-values: Dutilleul's modified t-test; "
            f"for *intervened*, the t-test of the passes' Fisher z). Weights: {weights}.")


def write_outputs(result: StudyResult, out: Path) -> list[Path]:
    """contrast.csv, summary.csv, tests.csv, study.json and report.md under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("contrast.csv", result.contrast), ("summary.csv", result.rows), ("tests.csv", result.tests)):
        buf = StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["empty"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        io.atomic_write(out / name, buf.getvalue().encode())
        paths.append(out / name)
    s = result.settings
    doc = {"settings": s.as_dict(), "q": result.q, "cpu": result.cpu,
           "weights": [vars(w) for w in result.weights],
           "datasets": [{"label": d.label, "pairs": [p[0] for p in d.pairs]} for d in result.datasets],
           "rows": result.rows, "tests": result.tests, "failures": result.failures,
           "timing": {"computed": result.computed, "cached": result.cached, "compute_s": round(result.compute_s, 1),
                      "total_s": round(result.total_s, 1)}}
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731  (JSON has no NaN)
    doc["rows"] = [{k: clean(v) for k, v in r.items()} for r in result.rows]
    doc["contrast"] = [{k: clean(v) for k, v in r.items()} for r in result.contrast]
    io.atomic_write(out / "study.json", json.dumps(doc, indent=1).encode())
    io.atomic_write(out / "report.md", (preamble(result) + "\n\n" + table(result)).encode())
    return paths + [out / "study.json", out / "report.md"]


def distribution_figure(result: StudyResult, path: Path) -> Path:
    """r per pair for every level and weights (dots), with the mean and its interval, one panel per
    measure and intervention (rows) and dataset (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(m, iv) for m in MEASURES for iv in result.settings.interventions]
    ncol = len(result.datasets)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(4.2 * ncol + 1, 2.6 * len(panels)), squeeze=False,
                             sharey=True)
    colours = plt.get_cmap("tab10").colors
    rng = np.random.default_rng(result.settings.seed)  # jitter only
    nw = len(result.weights)
    for i, (measure, iv) in enumerate(panels):
        for j, d in enumerate(result.datasets):
            ax = axes[i][j]
            ax.axhline(0, color="0.6", lw=0.8)
            for li, level in enumerate(GATE_LEVELS):
                for wi, w in enumerate(result.weights):
                    x = li * (nw + 1) + wi
                    rs = [t["r"] for t in result.tests if t["dataset"] == d.label and t["weights"] == w.label
                          and t["measure"] == measure and t["intervention"] == iv and t["level"] == level.key
                          and t["r"] is not None]
                    ax.scatter(x + rng.uniform(-0.25, 0.25, len(rs)), rs, s=6, alpha=0.45, color=colours[wi % 10],
                               label=w.label if (li == 0 and i == 0 and j == 0) else None)
                    row = next((r for r in result.rows if r["dataset"] == d.label and r["weights"] == w.label
                                and r["measure"] == measure and r["intervention"] == iv and r["level"] == level.key),
                               None)
                    if row and math.isfinite(row["mean_r"]) and math.isfinite(row["ci_low"]):
                        ax.errorbar(x, row["mean_r"], yerr=[[row["mean_r"] - row["ci_low"]], [row["ci_high"] - row["mean_r"]]],
                                    fmt="o", color="black", ms=4, capsize=3, lw=1.2)
            ax.set_xticks([li * (nw + 1) + (nw - 1) / 2 for li in range(len(GATE_LEVELS))])
            ax.set_xticklabels([lv.key for lv in GATE_LEVELS])
            ax.set_title(f"{d.label}: {iv}, {measure}", fontsize=9)
            if j == 0:
                ax.set_ylabel("r  (claim: r < 0)", fontsize=8)
    fig.legend(loc="upper center", ncol=nw, fontsize=8, frameon=False, markerscale=3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def extreme_pairs(result: StudyResult, weights: str) -> list[tuple[str, str, float]]:
    """(dataset, pair, score) of the strongest and the weakest pair for the claim under `weights`:
    the lowest and the highest mean r over the pair's clean-gate tests (the maps the figure shows)."""
    scores: dict[tuple[str, str], list[float]] = {}
    for t in result.tests:
        if t["weights"] == weights and t["r"] is not None and t["measure"] in ("output", "features"):
            scores.setdefault((t["dataset"], t["pair"]), []).append(t["r"])
    if not scores:
        return []
    ranked = sorted(scores, key=lambda k: (float(np.mean(scores[k])), k))
    picks = [ranked[0]] + ([ranked[-1]] if len(ranked) > 1 else [])
    return [(d, p, float(np.mean(scores[(d, p)]))) for d, p in picks]


def extremes_figure(result: StudyResult, fuser: Fuser, weights: str, path: Path) -> Path | None:
    """For the strongest and the weakest pair under `weights` (`extreme_pairs`), per level: the
    visible image, the clean gate, the output instability and the relative feature change, under
    the study's first intervention type (run again from the same seed: the same masks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = extreme_pairs(result, weights)
    if not picks:
        return None
    iv = result.settings.interventions[0]
    paths = {(d.label, stem): (ir, vi) for d in result.datasets for stem, ir, vi in d.pairs}
    fig, axes = plt.subplots(len(picks) * len(GATE_LEVELS), 4, figsize=(11, 2.2 * len(picks) * len(GATE_LEVELS)),
                             squeeze=False)
    for k, (dataset, stem, score) in enumerate(picks):
        visible, infrared = load_pair(*paths[(dataset, stem)], form="image")
        res = analyse(fuser, visible, infrared, iv, result.settings)
        which = "strongest" if k == 0 else "weakest"
        for li, lv in enumerate(res.levels):
            row = axes[k * len(GATE_LEVELS) + li]
            g_lo, g_hi = (float(v) for v in np.percentile(lv.gate, [1, 99]))
            g_hi = max(g_hi, g_lo + 1e-3)  # a flat gate still gets a colour bar
            panels = [(res.visible_rgb, None, f"{which}: {dataset}/{stem}\nmean r {score:+.2f}; {lv.level.key}"),
                      (lv.gate, (g_lo, g_hi), f"gate, {lv.level.key}\nstretched: 1st-99th pct. {g_lo:.3f}-{g_hi:.3f}"),
                      (res.instability, None, f"output instability\nr = {_f(lv.output_correlation.r)}"),
                      (lv.change, None, f"relative feature change\nr = {_f(lv.correlation.r)}")]
            for ax, (img, lim, title) in zip(row, panels):
                if img.ndim == 3:
                    ax.imshow(img)
                else:
                    finite = img[np.isfinite(img)]
                    lo, hi = lim or (0.0, float(np.percentile(finite, 99)) if finite.size else 1.0)
                    cmap = plt.get_cmap("viridis" if lim else "inferno").with_extremes(bad="0.75")
                    im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=lo, vmax=hi)
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
    fig.suptitle(f"{weights}: {iv} masking, K = {result.settings.k} (grey: never visible)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, pil_kwargs={"quality": 85} if path.suffix == ".jpg" else None)
    plt.close(fig)
    return path


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "weights"
