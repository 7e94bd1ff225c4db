"""The figures of one request, and re-rendering them for a display option (no forward pass).

Per gate level the page shows three maps side by side: the clean pass's gate, the intervened
pass's gate (both on one colour scale) and the gate change, intervened - clean, on one
symmetric diverging scale centred on 0 shared by the three levels (and by both models when
two are compared), stated in the caption. Each map is titled inside the picture (level and map), so the
labels stay with it when a phone pans or zooms; the numbers (means, ranges) are returned as
caption text for the page.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import viz
from ..levels import GATE_LEVELS
from .runs import LabRun

LEVEL_MAP_SIDE = 448  # long side of each gate map: three side by side fill a desktop page
# The gate figure's grid: 3 levels (rows) x clean | intervened | change (columns), each panel
# padded to one size, these gaps between them. A phone shows the nine panels one under the
# other at the screen's width (app.py's PHONE_GATES reads these), instead of a figure wider
# than the screen.
GATE_GRID = {"rows": 3, "cols": 3, "row_gap": 16, "col_gap": 12}
# the gate colour scales as the page names them, in the order of viz.GATE_SCALES
GATE_SCALE_CHOICES = ("fixed 0 to 1", "stretched per level")
DEFAULT_GATE_SCALE = "fixed 0 to 1"


def gate_scale_name(choice: str | None) -> str:
    """viz.GATE_SCALES name of a page choice (the viz names are accepted too, for API callers)."""
    names = dict(zip(GATE_SCALE_CHOICES, viz.GATE_SCALES)) | {n: n for n in viz.GATE_SCALES}
    if choice not in names:
        raise ValueError(f"gate colour scale must be one of {', '.join(GATE_SCALE_CHOICES)}, got {choice!r}")
    return names[choice]


@dataclass
class LevelFigures:
    """One gate level: the clean and intervened gate maps (one colour bar, shared) and the
    change map (its own diverging bar), uint8 RGB, and `image`, the three side by side (one
    picture per level: it stays side by side on a phone, and is one file to send)."""

    clean: np.ndarray
    intervened: np.ndarray
    change: np.ndarray
    image: np.ndarray
    caption: str


@dataclass
class LabFigures:
    """What the page shows for one request; images are (H, W, 3) or (H, W) uint8."""

    fused_clean: np.ndarray
    fused_intervened: np.ndarray
    input_visible: np.ndarray
    input_infrared: np.ndarray
    inputs: np.ndarray  # the two inputs side by side
    difference: np.ndarray
    difference_caption: str
    levels: list[LevelFigures]
    change_limit: float


def change_limit(runs: list[LabRun]) -> float:
    """The half-width of the one symmetric gate-change scale shared by the three levels (and by
    every run given: both models in compare mode), so that a 0.05 shift never looks as
    saturated as a 0.5 one; `viz.change_range` of all their changes together."""
    changes = [r.intervened.gates_full - r.clean.gates_full for r in runs]  # (3, H, W) each
    return viz.change_range(np.concatenate([c.reshape(-1, c.shape[-1]) for c in changes]))


def render_levels(run: LabRun, gate_scale: str = "fixed", limit: float | None = None,
                  name: str | None = None) -> list[LevelFigures]:
    """The three levels' gate maps on `gate_scale` (a page choice or a viz.GATE_SCALES name);
    a stretched scale is shared by a level's clean and intervened maps; the change maps share
    one symmetric scale, `limit` (default: `change_limit` of this run). name: a label put
    before each row's title (the model, in compare mode)."""
    scale = gate_scale_name(gate_scale)
    limit = change_limit([run]) if limit is None else float(limit)
    base = run.clean.fused_y  # edges of both modalities' structure, for orientation
    edges = viz.edge_mask(base, viz.display_size(*base.shape, max_side=LEVEL_MAP_SIDE, min_side=LEVEL_MAP_SIDE // 2))
    out = []
    for level in GATE_LEVELS:
        k = level.index
        g_clean, g_inter = run.clean.gates[k], run.intervened.gates[k]
        lo, hi = viz.gate_range([g_clean, g_inter], scale)
        clean_img = viz.gate_image(run.clean.gates_full[k], None, lo, hi, run.eta, bar=False, edges=edges)
        inter_img = viz.gate_image(run.intervened.gates_full[k], None, lo, hi, run.eta, edges=edges)
        change = run.intervened.gates_full[k] - run.clean.gates_full[k]
        change_img = viz.gate_change_image(change, None, limit, edges=edges)
        m_c, m_i = float(g_clean.mean()), float(g_inter.mean())
        p1, p99 = (float(v) for v in np.percentile(np.concatenate([g_clean.ravel(), g_inter.ravel()]), [1, 99]))
        span = ("0 to 1" if (lo, hi) == (0.0, 1.0) else
                f"{lo:.3f} to {hi:.3f}, stretched: the gates use only {100 * (p99 - p1):.1f}% of their 0-1 range")
        label = level.label[:1].upper() + level.label[1:]
        caption = (f"**{label} gates**: clean | intervened | change. "
                   f"Mean clean {m_c:.3f}, intervened {m_i:.3f} (target \u03b7 = {run.eta:g}); gate colours span "
                   f"{span}; largest change {float(np.abs(change).max()):.3f}.")
        title = f"{name}: {label}" if name else label
        image = viz.side_by_side([viz.with_title(clean_img, f"{title}: clean"),
                                  viz.with_title(inter_img, "intervened"), viz.with_title(change_img, "change")],
                                 gap=GATE_GRID["col_gap"], equal=True)
        out.append(LevelFigures(clean_img, inter_img, change_img, image, caption))
    return out


def scale_caption(limit: float, what: str = "the three levels") -> str:
    """The caption line that states the shared change scale."""
    return (f"**Change scale**: one symmetric scale, \u00b1{limit:.3f}, shared by {what} (red: the gate opened, "
            "blue: it closed, white: no change), so equal colours mean equal changes.")


def gate_figure(levels: list[LevelFigures], limit: float | None = None) -> tuple[np.ndarray, str]:
    """The page's one gate picture (the levels' rows, coarse to fine, stacked: one file to send)
    and its caption (the shared change scale when `limit` is given, then one line per level).
    Its panels form a regular grid (`GATE_GRID`), which a phone shows cell by cell (app.py)."""
    lines = ([scale_caption(limit)] if limit is not None else []) + [fig.caption for fig in levels]
    return viz.stacked([fig.image for fig in levels], gap=GATE_GRID["row_gap"]), "  \n".join(lines)


def render(run: LabRun, gate_scale: str = "fixed") -> LabFigures:
    """The figures of one request (fused images are the exact pixels; heat maps are drawn)."""
    diff, diff_caption = viz.difference_image(run.intervened.fused_y, run.clean.fused_y)
    in_vis = viz.to_uint8(run.intervened.inputs["visible_y"])
    in_ir = viz.to_uint8(run.intervened.inputs["infrared"])
    limit = change_limit([run])
    return LabFigures(
        fused_clean=run.clean.fused_rgb,
        fused_intervened=run.intervened.fused_rgb,
        input_visible=in_vis,
        input_infrared=in_ir,
        inputs=viz.side_by_side([in_vis, in_ir], gap=8)[..., 0],  # grey on white: one channel to encode
        difference=diff,
        difference_caption=diff_caption,
        levels=render_levels(run, gate_scale, limit),
        change_limit=limit,
    )
