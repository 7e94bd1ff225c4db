"""The figures of one request: fused images, network inputs, difference map, gate heat maps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import viz
from .runs import LabRun

ETA = viz.ETA


@dataclass
class LabFigures:
    """What the lab shows for one request; all (H, W, 3) or (H, W) uint8."""

    fused_clean: np.ndarray
    fused_intervened: np.ndarray
    input_visible: np.ndarray
    input_infrared: np.ndarray
    difference: np.ndarray
    gates: list[np.ndarray]  # clean levels 1-3, then intervened levels 1-3
    gate_labels: list[str]


def render(run: LabRun, gate_scale: str = "fixed") -> LabFigures:
    """The figures of one request (fused images are the exact pixels; heat maps are panels).
    gate_scale: one of `viz.GATE_SCALES`; a stretched scale is shared by a level's clean and
    intervened maps."""
    vis = run.clean.visible_rgb
    ranges = [viz.gate_range([run.clean.gates[k], run.intervened.gates[k]], gate_scale) for k in range(3)]
    gates, labels = [], []
    for name, res in (("clean pass", run.clean), ("intervened pass", run.intervened)):
        for k in range(3):
            mean = float(res.gates[k].mean())
            gates.append(viz.gate_panel(res.gates_full[k], vis, k, name, mean=mean, vmin=ranges[k][0], vmax=ranges[k][1]))
            labels.append(f"{name}, gate {viz.LEVEL_NAMES[k]}: mean {mean:.3f} (\u03b7 = {ETA:g})")
    diff = viz.difference_panel(run.intervened.fused_y, run.clean.fused_y)
    return LabFigures(
        fused_clean=run.clean.fused_rgb,
        fused_intervened=run.intervened.fused_rgb,
        input_visible=viz.to_uint8(run.intervened.inputs["visible_y"]),
        input_infrared=viz.to_uint8(run.intervened.inputs["infrared"]),
        difference=diff,
        gates=gates,
        gate_labels=labels,
    )
