"""The stability analysis as the Lab runs and shows it (the analysis itself is
`ivfusion.stability.StabilityAnalysis`): the page's settings become its interventions, and
its result becomes three pictures and a summary."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from .. import viz
from ..interventions import get_intervention
from ..levels import GATE_LEVELS
from ..predictor import Fuser
from ..stability import BOOTSTRAP, MIN_K, StabilityAnalysis, StabilityResult
from .render import gate_scale_name
from .settings import Settings
from .slot import ChunkedHold, ComputeSlot

FEATURE_SIDE = 400  # long side of each level's feature-change map
NEVER_VISIBLE = np.array([200, 200, 200], np.uint8)  # pixels with no visible run: grey, off every colour bar


def interventions_of(settings: Settings) -> tuple[list, bool]:
    """The analysis' interventions for the page's settings, and whether they alternate: the
    enabled masking interventions combined in every run; with no masking on, runs alternate
    complementary and random masking, the interventions of L_inv. Modality dropout is left
    out: it hides a whole input in every run, so no pixel would ever be visible to measure
    (every correlation would be undefined after K wasted runs)."""
    if settings.masking_kinds:
        return [list(settings.masking_kinds)], False
    return [["complementary"], ["random"]], True


def run_stability(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: Settings = Settings(),
                  k: int = 8, drawn: Sequence[np.ndarray | None] = (None, None),
                  progress: Callable[[int, int], None] | None = None, cancel=None,
                  budget_s: float | None = None, slot: ComputeSlot | None = None) -> StabilityResult:
    """K seeded interventions on a pair (a private fork of `fuser`), holes sized as the settings
    say; progress(done, k) after each run; `cancel` (an Event) stops it, and the result then
    covers the runs done (`cancelled` is True).

    budget_s: a time budget in seconds (None: none), checked between interventions once at
    least one is done; a run stopped by it is marked cancelled and `stopped_by` is
    "time budget" ("cancelled" for Cancel, None when all K ran).
    slot: the compute slot (`slot.COMPUTE` in the app), held for the clean pass and for one
    intervention at a time and released in between, so other requests' forwards never run at
    the same time as this one's and wait for at most one intervention.
    """
    deadline = None if budget_s is None else time.perf_counter() + float(budget_s)
    hold = ChunkedHold(slot or ComputeSlot(), "stability", cancel, deadline)
    own = fuser.fork()
    with hold:
        own.set_pair(visible, infrared, resize_ir=True)
        h, w = own.pair.shape
        runs, _ = interventions_of(settings)
        masks = tuple(drawn) if any(d is not None for d in drawn) else None
        # one run per forward: the slot, the page's progress and Cancel act per intervention
        analysis = StabilityAnalysis(own, runs, k=int(k), seed=settings.seed, mask_config=settings.mask_config(h, w),
                                     masks=masks, batch_pixels=h * w, resample=True)

        def done_one(done: int, total: int) -> None:
            hold.step_done()
            if done == total:
                hold.release()  # the correlations need no forward pass
            if progress is not None:
                progress(done, total)

        res = analysis.run(progress=done_one, cancel=hold.between)
    res.stopped_by = hold.reason if res.cancelled else None
    return res


def _with_never_visible(img: np.ndarray, values: np.ndarray, **size) -> np.ndarray:
    """Paint the pixels whose value is NaN (never visible) grey on a bare heat map drawn with
    the display size options `size` (max_side, min_side)."""
    nan = ~np.isfinite(values)
    if not nan.any():
        return img
    h, w = viz.display_size(*values.shape, **size)
    mask = viz.resize_for_display(nan.astype(np.uint8), (h, w), smooth=False) > 0
    out = img.copy()
    out[:h, :w][mask] = NEVER_VISIBLE
    return out


def stability_figures(res: StabilityResult, gate_scale: str = "stretched per level", eta: float = 0.3
                      ) -> dict[str, object]:
    """The pictures and the Markdown summary of a stability run: "instability" (the fused
    output's RMS change over the runs in which each pixel was visible, in grey levels),
    "mean_gate" (the clean pass's level-averaged gate), "features" (per level, the
    cross-attended features' relative change: coarse | mid | fine) and "summary"."""
    inst = np.where(np.isfinite(res.instability), res.instability, np.nan) * 255.0
    # the scale's top is the 99th percentile, not the maximum: the holes' edges change most, and
    # on a max scale they left the rest of the map black (the top 1% saturate)
    finite = inst[np.isfinite(inst)]
    top = viz.grey_level_scale(np.array([np.percentile(finite, 99)]) if finite.size else np.zeros(1))
    inst_img = _with_never_visible(viz.heat_image(np.nan_to_num(inst), vmin=0.0, vmax=top, cmap=viz.CHANGE_CMAP), inst)
    lo, hi = viz.gate_range([res.gate], gate_scale_name(gate_scale))
    gate_img = viz.gate_image(res.gate, res.visible_rgb, lo, hi, eta)
    feats = []
    for lv in res.levels:
        ch = lv.change
        vmax = max(float(np.nanpercentile(ch, 99)) if np.isfinite(ch).any() else 0.0, 1e-6)
        size = dict(max_side=FEATURE_SIDE, min_side=FEATURE_SIDE)  # one size for the three levels
        img = viz.heat_image(np.nan_to_num(ch), vmin=0.0, vmax=vmax, cmap=viz.CHANGE_CMAP, smooth=False, **size)
        feats.append(_with_never_visible(img, ch, **size))
    names = []
    for spec in dict.fromkeys(tuple(r.split("+")) for r in res.runs):
        names.append(" + ".join(get_intervention(n).label for n in spec if n != "none") or "none")
    what = " and ".join(names) + (" alternately" if len(names) > 1 else "")
    budget = getattr(res, "stopped_by", None) == "time budget"
    if budget:
        status = (f"stopped by the time budget after {res.done} of {res.k} runs; the maps and r cover the runs "
                  "done (a smaller K, or a smaller image, fits the budget)")
    elif res.cancelled:
        status = f"cancelled after {res.done} of {res.k} runs; the maps cover the runs done"
    else:
        status = f"{res.done} runs"
    lines = [f"**Output** (the fused image's instability against the mean gate; {status}: {what}; "
             f"{res.seconds:.1f} s): {res.correlation.reading}"]
    for lv, level in zip(res.levels, GATE_LEVELS):
        lines.append(f"**Features, {level.label}**: {lv.correlation.reading}")
    by_k = res.correlation.r_by_k
    if len(by_k) > 1:
        lines.append("**r against K** (output; has the sign settled?): "
                     + ", ".join(f"{k} runs {r:+.2f}" for k, r in by_k) + ".")
    lines.append("Instability is measured only over the runs in which a pixel was visible (grey: never visible), "
                 "so the map is not just a map of where the holes fell. The claim predicts r < 0. The p-value "
                 "allows for both sources of chance: the maps' spatial autocorrelation (Dutilleul's modified t-test "
                 f"counts only as many independent pixels as it allows) and which interventions were drawn (the runs "
                 f"resampled {BOOTSTRAP} times); under {MIN_K} runs there is no verdict.")
    notices = [n for n in res.notices if not (budget and n.startswith("Cancelled after"))]
    if notices:
        lines.append(" ".join(notices))
    return {"instability": inst_img, "mean_gate": gate_img,
            "features": viz.side_by_side(feats, gap=12) if feats else None, "summary": "  \n".join(lines)}
