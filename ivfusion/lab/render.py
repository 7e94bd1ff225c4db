"""The figures of one request, and re-rendering them for a display option (no forward pass).

Per gate level the page shows three maps side by side: the clean pass's gate, the intervened
pass's gate (both on one colour scale) and the gate change, intervened - clean, on a
diverging scale centred on 0. Each map is titled inside the picture (level and map), so the
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


def render_levels(run: LabRun, gate_scale: str = "fixed") -> list[LevelFigures]:
    """The three levels' gate maps on `gate_scale` (a page choice or a viz.GATE_SCALES name);
    a stretched scale is shared by a level's clean and intervened maps."""
    scale = gate_scale_name(gate_scale)
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
        limit = viz.change_range(change)
        change_img = viz.gate_change_image(change, None, limit, edges=edges)
        m_c, m_i = float(g_clean.mean()), float(g_inter.mean())
        p1, p99 = (float(v) for v in np.percentile(np.concatenate([g_clean.ravel(), g_inter.ravel()]), [1, 99]))
        span = ("0 to 1" if (lo, hi) == (0.0, 1.0) else
                f"{lo:.3f} to {hi:.3f}, stretched: the gates use only {100 * (p99 - p1):.1f}% of their 0-1 range")
        name = level.label[:1].upper() + level.label[1:]
        caption = (f"**{name} gates**: clean | intervened | change. "
                   f"Mean clean {m_c:.3f}, intervened {m_i:.3f} (target \u03b7 = {run.eta:g}); gate colours span "
                   f"{span}; change scale \u00b1{limit:.3f}.")
        image = viz.side_by_side([viz.with_title(clean_img, f"{name}: clean"),
                                  viz.with_title(inter_img, "intervened"), viz.with_title(change_img, "change")], gap=12)
        out.append(LevelFigures(clean_img, inter_img, change_img, image, caption))
    return out


def gate_figure(levels: list[LevelFigures]) -> tuple[np.ndarray, str]:
    """The page's one gate picture (the levels' rows, coarse to fine, stacked: one file to send)
    and its caption (one line per level)."""
    return viz.stacked([fig.image for fig in levels], gap=16), "  \n".join(fig.caption for fig in levels)


def render(run: LabRun, gate_scale: str = "fixed") -> LabFigures:
    """The figures of one request (fused images are the exact pixels; heat maps are drawn)."""
    diff, diff_caption = viz.difference_image(run.intervened.fused_y, run.clean.fused_y)
    in_vis = viz.to_uint8(run.intervened.inputs["visible_y"])
    in_ir = viz.to_uint8(run.intervened.inputs["infrared"])
    return LabFigures(
        fused_clean=run.clean.fused_rgb,
        fused_intervened=run.intervened.fused_rgb,
        input_visible=in_vis,
        input_infrared=in_ir,
        inputs=viz.side_by_side([in_vis, in_ir], gap=8)[..., 0],  # grey on white: one channel to encode
        difference=diff,
        difference_caption=diff_caption,
        levels=render_levels(run, gate_scale),
    )
