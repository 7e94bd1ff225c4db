"""The stability analysis as the Lab runs it: K seeded interventions, the per-pixel
instability map, the mean gate map and their correlation."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import viz
from ..interventions import MASKED_KINDS, get_intervention
from ..predictor import Fuser
from .render import gate_scale_name
from .runs import fuser_eta
from .settings import Settings, intervention_masks


class Cancelled(Exception):
    """The user cancelled a stability run."""


@dataclass
class StabilityResult:
    """K intervened passes summarised per pixel."""

    std: np.ndarray  # (H, W) std of the fused luminance over the K passes, [0, 1] units
    gate_mean: np.ndarray  # (H, W) mean over passes of the mean of the three gates (G_bar)
    correlation: float  # Pearson r between std and gate_mean over pixels (NaN if undefined)
    k: int
    kinds: list[str]
    visible_rgb: np.ndarray
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    untrained: bool = False
    alternate: bool = False  # True: samples alternate between the masking kinds (none was on)
    eta: float = 0.3


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays over all their elements; NaN when either is constant."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 1e-20 else float("nan")


def stability(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: Settings = Settings(),
              k: int = 8, drawn: Sequence[np.ndarray | None] = (None, None),
              batch_pixels: int = 640 * 480,
              progress: Callable[[int, int], None] | None = None,
              cancelled: Callable[[], bool] | None = None) -> StabilityResult:
    """Run `k` sampled interventions and summarise them per pixel.

    Sample i draws its masks with the seed (settings.seed, i), so a seed fixes the whole run.
    The masking interventions enabled in `settings` are drawn anew for each sample; when none
    is enabled, samples alternate between complementary and random masking (the two that the
    paper's intervention loss averages over). Dropout and drawn masks, if set, apply to every
    sample. Samples run as batched forwards of at most `batch_pixels` pixels; `progress(done,
    k)` is called after each batch; when `cancelled()` turns true the run stops with `Cancelled`.
    """
    if not 2 <= int(k) <= 256:
        raise ValueError(f"k must be from 2 to 256, got {k}")
    k = int(k)
    t0 = time.perf_counter()
    pair = fuser.prepare(visible, infrared, resize_ir=True)
    notices = [n[0].upper() + n[1:] + "." for n in pair.notices]
    h, w = pair.shape
    pool = settings.masking_kinds
    if not pool:
        pool = None
        notices.append("No masking intervention is on, so the samples alternate between complementary and "
                       "random masking (the interventions of the paper's invariance loss).")
    vis_y = torch.from_numpy(pair.ycrcb[..., 0])
    ir = torch.from_numpy(pair.infrared)
    per_batch = max(1, min(k, batch_pixels // max(1, h * w)))
    s1 = torch.zeros(h, w, dtype=torch.float64)
    s2 = torch.zeros(h, w, dtype=torch.float64)
    g_sum = torch.zeros(h, w, dtype=torch.float64)
    mean_ref = None
    done = 0
    while done < k:
        if cancelled is not None and cancelled():
            raise Cancelled(f"stopped after {done} of {k} interventions")
        n = min(per_batch, k - done)
        mv, mi = [], []
        for i in range(done, done + n):
            kinds = pool if pool is not None else [MASKED_KINDS[i % 2]]
            a, b = intervention_masks(settings, h, w, drawn, rng=np.random.default_rng([settings.seed, i]), kinds=kinds)
            mv.append(a)
            mi.append(b)
        bv = vis_y[None, None] * torch.from_numpy(np.stack(mv))[:, None]
        bi = ir[None, None] * torch.from_numpy(np.stack(mi))[:, None]
        fused, gates = fuser.run(bv, bi)
        f = fused[:, 0].double()
        if mean_ref is None:  # shift by the first output: a numerically stable variance
            mean_ref = f[0].clone()
        d = f - mean_ref
        s1 += d.sum(0)
        s2 += (d * d).sum(0)
        gbar = sum(F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False) for g in gates) / 3.0
        g_sum += gbar[:, 0].double().sum(0)
        done += n
        if progress is not None:
            progress(done, k)
    var = (s2 / k - (s1 / k) ** 2).clamp_min(0.0)
    std = var.sqrt().float().numpy()
    gate_mean = (g_sum / k).float().numpy()
    r = correlation(std, gate_mean)
    used = pool if pool is not None else list(MASKED_KINDS)
    return StabilityResult(std, gate_mean, r, k, [*used, *([settings.dropout_kind] if settings.dropout_kind else [])],
                           pair.visible_rgb, notices, time.perf_counter() - t0,
                           bool(getattr(fuser.model, "is_untrained", False)), pool is None, fuser_eta(fuser))


def interpret_correlation(r: float, untrained: bool = False) -> str:
    """The correlation between instability and gate, in plain words."""
    if not math.isfinite(r):
        return ("The correlation is undefined: the output (or the gate) did not vary at all. "
                "Try larger or more holes, or another intervention.")
    strength = "weak" if abs(r) < 0.3 else ("moderate" if abs(r) < 0.6 else "strong")
    if r <= -0.1:
        return (f"r = {r:+.3f}, a {strength} negative correlation: where the gate is open, the fused output "
                "changes less under the interventions. On this image, the gated features are the intervention-stable "
                "ones, as the paper claims.")
    if r >= 0.1:
        return (f"r = {r:+.3f}, a {strength} positive correlation: the gate is open where the output is least "
                "stable. On this image the paper's claim (gated features are the stable ones) does not hold.")
    return (f"r = {r:+.3f}: no clear relation between where the gate is open and where the output is stable "
            "on this image" + (" (expected for the untrained network)." if untrained else "."))


def stability_figures(res: StabilityResult, gate_scale: str = "stretched") -> tuple[np.ndarray, np.ndarray, str]:
    """The instability panel, the mean gate panel (colour scale: one of `viz.GATE_SCALES`) and
    a Markdown summary of a stability run."""
    inst = viz.instability_panel(res.std, res.k)
    lo, hi = viz.gate_range([res.gate_mean], gate_scale_name(gate_scale))
    gate = viz.mean_gate_panel(res.gate_mean, res.visible_rgb, res.k, eta=res.eta, vmin=lo, vmax=hi)
    masking = [get_intervention(k).label for k in res.kinds if k in MASKED_KINDS]
    rest = [get_intervention(k).label for k in res.kinds if k not in MASKED_KINDS]
    what = (" and ".join(masking) + " alternately") if res.alternate else " + ".join(masking)
    what = " + ".join([what, *rest])
    text = (f"**Correlation between instability and mean gate: r = {res.correlation:+.3f}** "
            f"(Pearson, over all {res.std.size:,} pixels; {res.k} interventions: {what}; {res.seconds:.1f} s)  \n"
            + interpret_correlation(res.correlation, res.untrained))
    if res.notices:
        text += "  \n" + " ".join(res.notices)
    return inst, gate, text
