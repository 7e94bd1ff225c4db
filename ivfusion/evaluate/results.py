"""What `ivfusion evaluate` computes: per-method scores, gate diagnostics, intervention reports.

Each container can say itself as JSON (NaN as null, +-inf as "inf"/"-inf") and CSV.
"""
from __future__ import annotations

import csv
import io as _text_io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from ..levels import GATE_LEVELS, GATE_STATS, GateStats, npz_key
from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES

PathLike = Union[str, os.PathLike]
Scores = Dict[str, float]



def nan_mean(values: Iterable[float]) -> Tuple[float, int]:
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
    mis-sized output, or the network failing on it). ``source`` is the folder (or the weights)
    the outputs came from. For ISFuse itself, ``gates[stem]`` holds the gate diagnostics
    (:func:`gate_stats`) and ``eta`` the model's training target for the mean gate.
    """

    name: str
    source: str
    scores: Dict[str, Scores] = field(default_factory=dict)
    problems: Dict[str, str] = field(default_factory=dict)
    gates: Dict[str, GateStats] = field(default_factory=dict)
    eta: Optional[float] = None

    def _values(self, stems: Optional[Iterable[str]]) -> List[Scores]:
        if stems is None:
            return list(self.scores.values())
        return [self.scores[s] for s in stems]

    def mean(self, stems: Optional[Iterable[str]] = None) -> Scores:
        """Per-metric mean over ``stems`` (default: all scored pairs), NaN values left out."""
        vals = self._values(stems)
        return {m: nan_mean(s[m] for s in vals)[0] for m in METRIC_NAMES}

    def counts(self, stems: Optional[Iterable[str]] = None) -> Dict[str, int]:
        """Per-metric number of non-NaN values behind :meth:`mean`."""
        vals = self._values(stems)
        return {m: nan_mean(s[m] for s in vals)[1] for m in METRIC_NAMES}

    def gate_mean(self, stems: Optional[Iterable[str]] = None) -> GateStats:
        """Each level's gate diagnostics averaged over ``stems`` (default: all pairs with gates)."""
        stems = list(self.gates) if stems is None else [s for s in stems if s in self.gates]
        return {lv.key: {k: nan_mean(self.gates[s][lv.key][k] for s in stems)[0] for k in GATE_STATS}
                for lv in GATE_LEVELS}


@dataclass
class InterventionReport:
    """ISFuse under the interventions: mean scores, gate means and seeds per intervention.

    ``means[name]`` (name "none" is the clean output; names from the registry
    ``ivfusion.interventions.INTERVENTIONS``), ``gate_means[name][level key]`` the mean over
    pairs of each gate level's mean activation, ``seeds[stem]`` the seed used for every
    intervention of that pair.
    """

    eta: float
    means: Dict[str, Scores] = field(default_factory=dict)
    gate_means: Dict[str, Dict[str, float]] = field(default_factory=dict)
    per_image: Dict[str, Dict[str, Scores]] = field(default_factory=dict)
    seeds: Dict[str, int] = field(default_factory=dict)

    def relative_change(self) -> Dict[str, Scores]:
        """(mean under the intervention - clean mean) / |clean mean|, per intervention and metric."""
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


def gate_columns() -> List[str]:
    """CSV column names of the gate diagnostics: gate_coarse_mean, gate_coarse_std, ..."""
    return [f"{npz_key(lv)}_{k}" for lv in GATE_LEVELS for k in GATE_STATS]


@dataclass
class EvaluationResults:
    """Scores of several methods on the same pairs (what the evaluate_* functions return)."""

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

    def gated_methods(self) -> List[MethodResult]:
        """The methods that have gate diagnostics (ISFuse runs), in table order."""
        return [m for m in self.methods if m.gates]

    def merge(self, other: "EvaluationResults") -> None:
        """Add another evaluation of the same folders (its methods renamed if taken)."""
        taken = {x.name for x in self.methods}
        for m in other.methods:
            while m.name in taken:
                m.name += " (2)"
            taken.add(m.name)
            self.methods.append(m)
        keep = set(other.pairs)
        self.pairs = [p for p in self.pairs if p in keep]
        self.pair_problems = {**other.pair_problems, **self.pair_problems}
        if other.interventions is not None:
            self.interventions = other.interventions

    @property
    def problems(self) -> List[str]:
        """Every problem as one readable line naming the pair (pairs first, then per method)."""
        lines = [f"pair {stem}: {msg}" for stem, msg in self.pair_problems.items()]
        for m in self.methods:
            lines += [f"{m.name}: {stem}: {msg}" for stem, msg in m.problems.items()]
        return lines

    def rows(self) -> List[Dict[str, Union[str, float]]]:
        """Per-image rows: ``{"method", "image", EN, ..., CC[, gate_coarse_mean, ...]}``."""
        out = []
        for m in self.methods:
            for stem, s in m.scores.items():
                row = {"method": m.name, "image": stem, **s}
                g = m.gates.get(stem)
                if g is not None:
                    row.update({f"{npz_key(lv)}_{k}": g[lv.key][k] for lv in GATE_LEVELS for k in GATE_STATS})
                out.append(row)
        return out

    def csv_text(self) -> str:
        """Per-image values, one row per (method, image); floats at full precision. The gate
        columns are there when some method has gates (empty for the others)."""
        cols = list(METRIC_NAMES) + (gate_columns() if self.gated_methods() else [])
        buf = _text_io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "image", *cols])
        for r in self.rows():
            w.writerow([r["method"], r["image"], *(repr(float(r[k])) if k in r else "" for k in cols)])
        return buf.getvalue()

    def to_dict(self) -> dict:
        """JSON-ready dict. NaN becomes null; +-inf becomes the strings "inf"/"-inf"."""
        common = self.common_pairs()
        d = {
            "metrics": list(METRIC_NAMES),
            "higher_is_better": dict(HIGHER_IS_BETTER),
            "gate_levels": [{"key": lv.key, "label": lv.label, "scale": lv.scale} for lv in GATE_LEVELS],
            "gate_stats": list(GATE_STATS),
            "pairs": list(self.pairs),
            "common_pairs": common,
            "pair_problems": dict(self.pair_problems),
            "methods": {},
        }
        for m in self.methods:
            entry = {
                "source": m.source,
                "mean": m.mean(common),
                "n": m.counts(common),
                "mean_all_scored": m.mean(),
                "images": m.scores,
                "problems": m.problems,
            }
            if m.gates:
                entry["eta"] = m.eta
                entry["gates"] = {"mean": m.gate_mean(common), "images": m.gates}
            d["methods"][m.name] = entry
        if self.interventions is not None:
            r = self.interventions
            d["interventions"] = {
                "eta": r.eta,
                "seeds": r.seeds,
                "means": r.means,
                "relative_change": r.relative_change(),
                "gate_means": r.gate_means,
                "images": r.per_image,
            }
        return json_safe(d)

    def json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def write_csv(self, path: PathLike) -> None:
        from ..io import atomic_write

        atomic_write(path, self.csv_text().encode())

    def write_json(self, path: PathLike) -> None:
        from ..io import atomic_write

        atomic_write(path, self.json_text().encode())


def json_safe(x):
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
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
