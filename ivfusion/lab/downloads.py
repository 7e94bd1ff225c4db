"""The eleven metrics before/after, and the files a user can download."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from .. import io, viz
from .render import ETA
from .runs import LabRun


def metric_sources(run: LabRun) -> dict[str, np.ndarray]:
    """The four uint8 images the metrics need (small enough to keep per session):
    infrared (H, W), visible RGB, fused clean RGB, fused intervened RGB."""
    return {"infrared": viz.to_uint8(run.clean.inputs["infrared"]), "visible": run.clean.visible_rgb,
            "clean": run.clean.fused_rgb, "intervened": run.intervened.fused_rgb,
            "same": np.array(run.intervened is run.clean)}


def metrics_table(run: LabRun | dict) -> list[list]:
    """Rows [metric, clean, intervened, change, "higher is better"] of the eleven metrics
    (`ivfusion.metrics.evaluate_pair`), both outputs measured against the unmasked sources.
    run: a LabRun or its `metric_sources`."""
    from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES, evaluate_pair

    src = metric_sources(run) if isinstance(run, LabRun) else run
    clean = evaluate_pair(src["infrared"], src["visible"], src["clean"])
    same = bool(src.get("same", False)) or np.array_equal(src["clean"], src["intervened"])
    inter = clean if same else evaluate_pair(src["infrared"], src["visible"], src["intervened"])
    rows = []
    for name in METRIC_NAMES:
        a, b = clean[name], inter[name]
        change = b - a if math.isfinite(a) and math.isfinite(b) else float("nan")
        rows.append([name, _round(a), _round(b), _round(change), "yes" if HIGHER_IS_BETTER[name] else "no"])
    return rows


METRIC_HEADERS = ["metric", "clean", "intervened", "change", "higher is better"]


def _round(v: float, digits: int = 4) -> float:
    if not math.isfinite(v) or v == 0:
        return float(v)
    return float(f"{v:.{digits}g}")


def write_downloads(run: LabRun, folder: Path) -> list[str]:
    """fused_clean.png and fused_intervened.png (lossless RGB) and gates.npz (both passes'
    gate maps at native resolution, the keep masks, the difference map, the settings)."""
    folder = Path(folder)
    clean_png, inter_png, npz = folder / "fused_clean.png", folder / "fused_intervened.png", folder / "gates.npz"
    io.write_png(clean_png, run.clean.fused_rgb)
    io.write_png(inter_png, run.intervened.fused_rgb)
    arrays = {}
    for name, res in (("clean", run.clean), ("intervened", run.intervened)):
        for k, g in enumerate(res.gates):
            arrays[f"{name}_gate_level{k + 1}"] = g.astype(np.float32)
    arrays["mask_visible"] = run.intervened.masks[0].astype(np.float32)
    arrays["mask_infrared"] = run.intervened.masks[1].astype(np.float32)
    arrays["difference"] = run.difference.astype(np.float32)
    arrays["info"] = np.array(json.dumps({
        "intervention": run.intervened.intervention, "settings": dataclasses.asdict(run.settings), "model": run.model,
        "eta": ETA, "levels": list(viz.LEVEL_NAMES),
        "note": "gate maps in [0, 1], coarsest first; masks: 1 kept, 0 hidden; difference = |F_intervened - F_clean|",
    }))
    np.savez_compressed(npz, **arrays)
    return [str(clean_png), str(inter_png), str(npz)]
