"""The gate-level registry: one naming scheme for the three invariance gate levels.

ISFuse has one CFI, and so one invariance gate, per encoder level. `ISFuse.forward` returns the
gates coarsest first; `GateLevel.index` is the position in that tuple. The npz files written by
the CLI, the Lab's panels, evaluate's tables and the docs all name a level by `key` (npz:
`gate_<key>`) and describe it by `label`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class GateLevel:
    """One gate level.

    key: short stable name ("coarse", "mid", "fine"), used in file keys and CLI output.
    index: position in the model's `gates` tuple (coarsest first).
    scale: the gate map's resolution relative to the input (1/4, 1/2, 1); sizes are floored.
    label: human-readable description for tables and the UI.
    """

    key: str
    index: int
    scale: float
    label: str


GATE_LEVELS: tuple[GateLevel, ...] = (
    GateLevel("coarse", 0, 0.25, "coarse (1/4 res.)"),
    GateLevel("mid", 1, 0.5, "mid (1/2 res.)"),
    GateLevel("fine", 2, 1.0, "fine (1/1 res.)"),
)

_BY_KEY = {level.key: level for level in GATE_LEVELS}


def npz_key(level: GateLevel | str | int) -> str:
    """The npz array name of a level's gate map, e.g. "gate_coarse"."""
    return f"gate_{get_level(level).key}"


def get_level(level: GateLevel | str | int) -> GateLevel:
    """Resolve a GateLevel from itself, its key ("coarse") or its index in the gates tuple."""
    if isinstance(level, GateLevel):
        return level
    if isinstance(level, str) and level in _BY_KEY:
        return _BY_KEY[level]
    if isinstance(level, int) and not isinstance(level, bool) and 0 <= level < len(GATE_LEVELS):
        return GATE_LEVELS[level]
    raise ValueError(
        f"unknown gate level {level!r}; accepted: {sorted(_BY_KEY)} or an index 0..{len(GATE_LEVELS) - 1}"
    )


GATE_STATS = ("mean", "std", "p1_p99")
"""Gate diagnostics per level, each over one gate map (native resolution): the mean activation,
the spatial standard deviation, and the 99th minus the 1st percentile (the span that the map
really uses, robust to a few extreme pixels). Flat gates have a small std and span."""
GateStats = dict[str, dict[str, float]]  # {level key: {stat: value}}


def gate_stats(gates: Iterable) -> GateStats:
    """GATE_STATS of each level's gate map, `gates` coarsest first as the model returns them
    (numpy arrays or tensors of any shape; a batch is pooled)."""
    gates = list(gates)
    out: GateStats = {}
    for level in GATE_LEVELS:
        g = gates[level.index]
        g = np.asarray(g.detach().float().cpu() if hasattr(g, "detach") else g, dtype=np.float64)
        p1, p99 = np.percentile(g, [1, 99])
        out[level.key] = {"mean": float(g.mean()), "std": float(g.std()), "p1_p99": float(p99 - p1)}
    return out
