"""`StabilityAnalysis`: do the invariance gates open where the model is stable under interventions?

The paper's claim (METHOD.md): the invariance gate g opens where the cross-modal features stay
stable under the interventions. The analysis runs K seeded interventions through one `Fuser`
(the clean pass and its encoder features are reused, see `Fuser.intervene_batch`) and measures
two things per pixel:

* output instability: the RMS change of the fused luminance from the clean pass, over only
  the runs in which that pixel was visible to the network (kept in both inputs), normalised by
  how often it was; a pixel never visible is NaN and left out. Without this, the map of change
  would mostly be a map of where the holes fell;
* relative feature change, per gate level: the RMS change of the CFI's cross-attended features
  (the features the gate reads) from the clean pass, per pixel of that level, over the runs in
  which the pixel's whole footprint was visible, divided by the RMS of the clean features at
  that pixel. Relative, because feature magnitude varies across the image: an absolute change
  map would partly be a map of where the features are large.

Each is correlated (Pearson r over the pixels where both maps are defined) with a gate map of
the clean pass: the output instability with the level-averaged gate and with each level's gate
(upsampled), the feature change with that level's gate.
Neighbouring pixels are not independent, so the p-value comes from Dutilleul's modified t-test
(Dutilleul 1993, after Clifford, Richardson and Hemon 1989): the t-test of r with an effective
number of pixels computed from both maps' spatial autocorrelation. Measured on real images
(`python tools/p_calibration.py`), it holds its level where the circular-shift test used here
before did not. Unrelated pairings gave p < 0.05 in 2.0% of 300 pairs of grey images (one turned
by 180 degrees, so no shared layout; shift test 18.3%) and in 2.7-4.3% of pairings of gate maps
(shift test 5.8-18.8%). It pays in power: an image against itself plus twice an unrelated one
gave p < 0.05 in 50% of 60 pairs (shift test 63%). The claim predicts r < 0 (stable where the
gate is open).

Which interventions were drawn is random too: with few runs, r's sign changed with K on real
pairs. So the verdict's p-value (`Correlation.p_runs`) adds to the spatial test's variance the
variance of r over BOOTSTRAP resamples of the K runs (in Fisher's z), no verdict is drawn from
fewer than MIN_K runs (a cancelled run included: its data are still shown), and r after the
first 1, 2, 4, ... runs is reported so a reader sees whether the sign has settled.
`python tools/p_calibration.py --only-stability` measures the false-verdict rate on unrelated
images.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .interventions import MaskConfig, get_intervention
from .levels import GATE_LEVELS, GateLevel
from .metrics import pearson
from .predictor import Fuser

Intervention = str | Sequence[str]  # a registry name, or names whose masks multiply
MIN_K = 8  # fewer runs give r and the maps but no verdict: on real pairs r's sign still changed with K
BOOTSTRAP = 200  # resamples of the K runs


@dataclass
class Correlation:
    """Pearson r between an instability map and a gate map, with its p-value.

    r: over the pixels where both maps are defined (NaN if either is constant there).
    p_value: two-sided, of Dutilleul's modified t-test (`modified_t_test`; NaN when not
        computed or undefined).
    n_pixels: pixels the r is computed over; n_eff: the effective number of independent
        pixels the test used (far fewer: neighbouring pixels are alike).
    reading: one plain sentence.
    """

    r: float
    p_value: float
    n_pixels: int
    n_eff: float
    reading: str
    # which interventions were drawn is random too: p of r against 0 with both the spatial
    # variance (the modified t's n_eff) and the variance of r over resamples of the K runs
    # (bootstrap), in Fisher's z; NaN when not computed
    p_runs: float = float("nan")
    runs: int = 0  # the runs r is computed over
    r_by_k: tuple[tuple[int, float], ...] = ()  # r after the first k runs, k = 1, 2, 4, ... and all
    verdict: bool = False  # whether the reading draws a conclusion (at least MIN_K runs, p_runs < 0.05)


@dataclass
class LevelStability:
    """One gate level's view; maps are (h, w) at that level's size.

    change: float32 >= 0, the relative feature change: RMS over channels and over the runs in
        which the pixel was visible of (cross_run - cross_clean), divided by the RMS over
        channels of cross_clean (floored at 1e-3 of its mean, so that near-zero features do
        not divide by zero); NaN where never visible.
    gate: float32 in [0, 1], the clean pass's gate at this level.
    visible_count: int32, in how many runs the pixel's footprint was visible in both inputs.
    correlation: r of `change` against `gate`.
    output_correlation: r of the output instability against this level's gate, upsampled to
        the pair's size.
    """

    level: GateLevel
    change: np.ndarray
    gate: np.ndarray
    visible_count: np.ndarray
    correlation: Correlation
    output_correlation: Correlation


@dataclass
class StabilityResult:
    """What `StabilityAnalysis.run` returns; (H, W) maps at the prepared pair's size.

    instability: float32 >= 0 in luminance units ([0, 1] scale), the RMS of
        (F_run - F_clean) over the runs in which the pixel was visible; NaN where never visible.
    visible_count: int32, in how many runs the pixel was visible in both inputs.
    gate: float32 in [0, 1], the clean pass's three gates upsampled and averaged.
    correlation: r of instability against gate. levels: the feature-level view per gate level
        (empty when features=False). runs: the intervention name of each completed run.
    cancelled: True when stopped early; the maps then cover the `done` completed runs.
    """

    instability: np.ndarray
    visible_count: np.ndarray
    gate: np.ndarray
    correlation: Correlation
    levels: list[LevelStability]
    runs: list[str]
    k: int
    done: int
    cancelled: bool
    seed: int
    visible_rgb: np.ndarray
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)
    output_runs: "RunMaps | None" = None  # the per-run maps the instability was made of


class StabilityAnalysis:
    """K seeded interventions through one Fuser, summarised per pixel (see the module docstring).

    fuser: the Fuser to run (its current pair is used unless `run` gets a pair).
    interventions: run i uses interventions[i % len(interventions)]; each entry is a registry
        name or a list of names whose masks multiply (e.g. ["complementary", "drop-infrared"]).
        Default: alternate complementary and random masking, the interventions of L_inv.
    k: number of runs (1..256). seed: run i draws its masks from the seed (seed, i), so a seed
        fixes every mask. mask_config: how masks are drawn. masks: optional hand-drawn keep
        masks (M_visible, M_infrared) applied in every run.
    features: also compute the feature-level view (one more pass for the clean cross features).
    p_values: compute the p-values (Dutilleul's modified t-test; False: NaN).
    batch_pixels: at most this many pixels per batched forward (bounds memory).
    resample: also resample the K runs (BOOTSTRAP times) for `Correlation.p_runs`, the p-value
        the verdict then reads (the Lab's); off, the verdict reads the spatial p (a caller that
        takes its uncertainty over many pairs, as the study does, need not pay for it).
    """

    def __init__(self, fuser: Fuser, interventions: Sequence[Intervention] = ("complementary", "random"),
                 k: int = 16, seed: int = 0, mask_config: MaskConfig = MaskConfig(), *,
                 masks: tuple[np.ndarray | None, np.ndarray | None] | None = None, features: bool = True,
                 p_values: bool = True, batch_pixels: int = 640 * 480, resample: bool = False):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 256:
            raise ValueError(f"k must be a whole number from 1 to 256, got {k!r}")
        if isinstance(interventions, str):
            interventions = [interventions]
        if not interventions:
            raise ValueError("interventions must name at least one intervention")
        for spec in interventions:  # unknown names fail here, not after some runs
            for name in [spec] if isinstance(spec, str) else spec:
                get_intervention(name)
        self.fuser, self.interventions, self.k, self.seed = fuser, list(interventions), int(k), int(seed)
        self.mask_config, self.masks, self.features = mask_config, masks, features
        self.p_values, self.batch_pixels, self.resample = p_values, batch_pixels, resample

    def run(self, visible: np.ndarray | None = None, infrared: np.ndarray | None = None, *, resize_ir: bool = False,
            progress: Callable[[int, int], None] | None = None, cancel=None) -> StabilityResult:
        """Run the analysis on (visible, infrared), or on the fuser's current pair if None.

        progress(done, k) is called after each completed run. cancel: a threading.Event or a
        callable returning True to stop; checked before each batch of runs, so a cancelled
        analysis returns the runs done so far, marked cancelled.
        """
        t0 = time.perf_counter()
        fuser = self.fuser
        if visible is not None or infrared is not None:
            if visible is None or infrared is None:
                raise ValueError("give both visible and infrared, or neither (to use the fuser's current pair)")
            fuser.set_pair(visible, infrared, resize_ir=resize_ir)
        elif fuser.pair is None:
            raise RuntimeError("no pair: pass visible and infrared, or call fuser.set_pair first")
        clean, pair = fuser.clean, fuser.pair
        h, w = pair.shape
        is_cancelled = _cancel_check(cancel)
        per_batch = max(1, self.batch_pixels // (h * w))
        names: list[str] = []

        clean_fused = torch.from_numpy(clean.fused_y)
        out_sq, out_n = torch.zeros(h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
        clean_cross, feat_sq, feat_n = None, [], []
        if self.features:
            first = next(fuser.intervene_batch([(None, None)], return_cross=True))
            clean_cross = [c[0] for c in first.cross]
            feat_sq = [torch.zeros(c.shape[-2:], dtype=torch.float64) for c in clean_cross]
            feat_n = [torch.zeros_like(s) for s in feat_sq]
        done, cancelled = 0, False
        out_runs: list[tuple[torch.Tensor, torch.Tensor]] = []  # per run: (visible * change^2, visible)
        feat_runs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in GATE_LEVELS]
        while done < self.k:
            if is_cancelled():
                cancelled = True
                break
            plan = []  # masks drawn per batch: K mask pairs at once could be large
            for i in range(done, min(self.k, done + per_batch)):
                spec = self.interventions[i % len(self.interventions)]
                m, name = fuser.sample_masks(spec, [self.seed, i], masks=self.masks, mask_config=self.mask_config)
                plan.append(m)
                names.append(name)
            out = next(fuser.intervene_batch(plan, batch_pixels=len(plan) * h * w, return_cross=self.features))
            for j, (m_vi, m_ir) in enumerate(out.masks):
                visible_px = torch.from_numpy((m_vi >= 1) & (m_ir >= 1)).double()
                sq = visible_px * (out.fused[j, 0] - clean_fused).double() ** 2
                out_sq += sq
                out_n += visible_px
                out_runs.append((sq.float(), visible_px.float()))
                if self.features:
                    for lv, level in enumerate(GATE_LEVELS):
                        c = out.cross[lv][j]
                        vis_l = _footprint_visible(visible_px, level, c.shape[-2:])
                        d2 = (c - clean_cross[lv]).pow_(2).mean(0, dtype=torch.float64)
                        feat_sq[lv] += vis_l * d2
                        feat_n[lv] += vis_l
                        feat_runs[lv].append(((vis_l * d2).float(), vis_l.float()))
                done += 1
                if progress is not None:
                    progress(done, self.k)

        notices = [n[0].upper() + n[1:] + "." for n in pair.notices]
        instability = _rms(out_sq, out_n)
        gate = clean.gates_full.mean(0).astype(np.float32)
        if done and not (out_n > 0).any():
            notices.append("No pixel was visible in both inputs in any run (a modality is dropped or hidden in every "
                           "run), so the output instability is undefined.")
        if cancelled:
            notices.append(f"Cancelled after {done} of {self.k} runs; the maps cover the runs done.")
        weights = bootstrap_weights(done, self.seed)
        out_stack = _stack(out_runs)
        out_gates = [gate] + ([clean.gates_full[lv.index].astype(np.float32) for lv in GATE_LEVELS]
                              if self.features else [])
        # the output's resamples once for its four gates (a resample's map is the expensive part)
        boot = self.p_values and self.resample
        out_boot = (resampled_r(out_stack, out_gates, weights) if boot and out_stack is not None
                    else [None] * len(out_gates))
        correlation = self.correlate(instability, gate, "the fused output changes", out_stack, out_boot[0])
        levels = []
        if self.features:
            for lv, level in enumerate(GATE_LEVELS):
                size = clean_cross[lv].double().pow(2).mean(0).sqrt()
                scale = 1.0 / size.clamp_min(1e-3 * float(size.mean())).float().numpy()
                change = _rms(feat_sq[lv], feat_n[lv]) * scale
                g = clean.gates[level.index].astype(np.float32)
                stack = _stack(feat_runs[lv], scale)
                r_boot = resampled_r(stack, [g], weights)[0] if boot and stack is not None else None
                corr = self.correlate(change, g, f"the {level.label} cross-attended features change", stack, r_boot)
                out_corr = self.correlate(instability, out_gates[1 + lv], "the fused output changes", out_stack,
                                          out_boot[1 + lv])
                levels.append(LevelStability(level, change, g, feat_n[lv].numpy().astype(np.int32), corr, out_corr))
        return StabilityResult(instability, out_n.numpy().astype(np.int32), gate, correlation, levels, names,
                               self.k, done, cancelled, self.seed, pair.visible_rgb, time.perf_counter() - t0, notices,
                               out_stack)

    def correlate(self, instability: np.ndarray, gate: np.ndarray, what: str, runs: "RunMaps | None" = None,
                  r_boot: np.ndarray | None = None) -> Correlation:
        """r, its p-values and a plain reading, for one map against one gate map. runs: the
        per-run maps the instability was made of (`_stack`), for r against K; r_boot: r over
        resamples of those runs (`resampled_r`), for the p-value that allows for them."""
        valid = np.isfinite(instability) & np.isfinite(gate)
        n = int(valid.sum())
        r = pearson(instability[valid], gate[valid]) if n >= 3 else float("nan")
        p, n_eff, p_runs, by_k = float("nan"), float("nan"), float("nan"), ()
        k = 0 if runs is None else runs.k
        if runs is not None:
            by_k = r_against_k(runs, gate)
        if self.p_values and math.isfinite(r):
            p, n_eff = modified_t_test(instability, gate)
            if r_boot is not None and k >= 2:
                p_runs = combined_p(r, n_eff, r_boot)
        # without resampling (a caller with its own uncertainty over many pairs) the spatial p reads
        p_read = p_runs if self.resample else p
        verdict = k >= MIN_K and math.isfinite(p_read) and p_read < 0.05
        return Correlation(r, p, n, n_eff, reading(r, p_read, what, k), p_runs, k, by_k, verdict)


@dataclass
class RunMaps:
    """Per-run maps of one measure, flattened: sq (K, P) the visible-masked squared change,
    vis (K, P) the visibility, and scale (P,) a factor applied after the RMS (the feature
    view's division by the clean features' size), with the map's shape."""

    sq: np.ndarray
    vis: np.ndarray
    scale: np.ndarray | None
    shape: tuple[int, int]

    @property
    def k(self) -> int:
        return self.sq.shape[0]

    def rms(self, sq: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """The instability map(s) of summed runs, NaN where never visible."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(vis > 0, np.sqrt(sq / np.maximum(vis, 1e-12)), np.nan)
        return out * self.scale if self.scale is not None else out


def bootstrap_weights(runs: int, seed: int = 0) -> np.ndarray | None:
    """BOOTSTRAP resamples of `runs` runs with replacement, as run counts (resamples x runs)."""
    if not runs:
        return None
    rng = np.random.default_rng([seed, 2**20])
    return rng.multinomial(runs, [1.0 / runs] * runs, size=BOOTSTRAP).astype(np.float32)


def _stack(runs: list[tuple[torch.Tensor, torch.Tensor]], scale: np.ndarray | None = None) -> RunMaps | None:
    if not runs:
        return None
    shape = tuple(runs[0][0].shape)
    sq = np.stack([a.numpy().ravel() for a, _ in runs])
    vis = np.stack([b.numpy().ravel() for _, b in runs])
    return RunMaps(sq, vis, None if scale is None else np.asarray(scale, np.float32).ravel(), shape)


def _rows_r(maps: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """Pearson r of each row of `maps` (NaN = left out) against `gate` (P,)."""
    out = np.full(maps.shape[0], np.nan)
    g_ok = np.isfinite(gate)
    for i, m in enumerate(maps):
        ok = np.isfinite(m) & g_ok
        if ok.sum() >= 3:
            out[i] = pearson(m[ok], gate[ok])
    return out


def r_against_k(runs: RunMaps, gate: np.ndarray) -> tuple[tuple[int, float], ...]:
    """r after the first k runs, for k = 1, 2, 4, 8, ... and all K: whether the sign has settled."""
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < runs.k} | {runs.k})
    sq, vis = np.cumsum(runs.sq, 0), np.cumsum(runs.vis, 0)
    maps = runs.rms(sq[[k - 1 for k in ks]], vis[[k - 1 for k in ks]])
    return tuple((k, float(r)) for k, r in zip(ks, _rows_r(maps, np.asarray(gate, np.float64).ravel())))


def resampled_r(runs: RunMaps, gates: Sequence[np.ndarray], weights: np.ndarray, chunk: int = 20) -> list[np.ndarray]:
    """r against each gate over bootstrap resamples of the K runs (weights: resamples x K run
    counts); one array per gate."""
    gs = [np.asarray(g, np.float64).ravel() for g in gates]
    out: list[list[np.ndarray]] = [[] for _ in gs]
    for start in range(0, len(weights), chunk):
        w = weights[start:start + chunk]
        maps = runs.rms(w @ runs.sq, w @ runs.vis)
        for i, g in enumerate(gs):
            out[i].append(_rows_r(maps, g))
    return [np.concatenate(o) for o in out]


def combined_p(r: float, n_eff: float, r_boot: np.ndarray) -> float:
    """Two-sided p of r against 0 in Fisher's z, with the variance of the spatial test
    (1 / (n_eff - 3)) plus the variance of z over resamples of the runs."""
    from scipy.special import ndtr

    z_boot = np.arctanh(np.clip(r_boot[np.isfinite(r_boot)], -0.999999, 0.999999))
    if not math.isfinite(r) or z_boot.size < 10 or not n_eff > 3:
        return float("nan")
    se = math.sqrt(1.0 / (n_eff - 3.0) + float(np.var(z_boot, ddof=1)))
    z = math.atanh(max(-0.999999, min(0.999999, r)))
    return float(2.0 * ndtr(-abs(z) / se))


def effective_n(x: np.ndarray, y: np.ndarray) -> float:
    """Dutilleul's effective number of independent pixels for Pearson r between maps x and y
    (same (H, W); NaN pixels, and pixels where the other map is NaN, are left out):
    1 + 1 / Var(r), with Var(r) = sum over every lag d of N(d) Cx(d) Cy(d) / (n^2 Cx(0) Cy(0)),
    where N(d) counts the pixel pairs at lag d and C are the maps' autocovariances over those
    pairs. The sums come from zero-padded FFTs (no wrap-around). Between 3 and n."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    valid = np.isfinite(x) & np.isfinite(y)
    n = int(valid.sum())
    if n < 4:
        return float("nan")
    shape = (2 * x.shape[0], 2 * x.shape[1])
    spectrum = lambda a: np.abs(np.fft.rfft2(a, shape)) ** 2  # noqa: E731  (its inverse: sums over lags)
    sums_x, sums_y = (np.fft.irfft2(spectrum(np.where(valid, a - a[valid].mean(), 0.0)), shape) for a in (x, y))
    pairs = np.round(np.fft.irfft2(spectrum(valid.astype(np.float64)), shape))
    used = pairs > 0.5
    var_r = float(np.sum(sums_x[used] * sums_y[used] / pairs[used]) / (sums_x[0, 0] * sums_y[0, 0]))
    return float(min(n, max(3.0, 1.0 + 1.0 / var_r))) if var_r > 0 else float(n)


def modified_t_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided p-value of Pearson r(x, y) from the t-test with `effective_n` pixels instead
    of all of them, and that effective n: (p, n_eff). NaN when r is undefined."""
    from scipy.special import stdtr

    valid = np.isfinite(x) & np.isfinite(y)
    r = pearson(np.asarray(x, np.float64)[valid], np.asarray(y, np.float64)[valid]) if valid.sum() >= 4 else math.nan
    if not math.isfinite(r):
        return float("nan"), float("nan")
    n_eff = effective_n(x, y)
    df = n_eff - 2.0
    t = abs(r) * math.sqrt(df / max(1e-12, 1.0 - r * r))
    return float(2.0 * stdtr(df, -t)), n_eff


def reading(r: float, p: float, what: str, runs: int | None = None) -> str:
    """One plain sentence on r and its p-value; `what` is the subject and verb, e.g.
    "the fused output changes". With `runs` under MIN_K there is no verdict, whatever p says."""
    if not math.isfinite(r):
        return ("Undefined: the change map or the gate is constant over the pixels that stayed visible (or no pixel "
                "stayed visible), so there is nothing to correlate.")
    strength = "very weak" if abs(r) < 0.1 else "weak" if abs(r) < 0.3 else "moderate" if abs(r) < 0.6 else "strong"
    ptxt = "no p-value" if not math.isfinite(p) else "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if runs is not None and runs < MIN_K:
        return (f"r = {r:+.2f} after {runs} run{'s' if runs != 1 else ''}: too few interventions for a verdict (at "
                f"least {MIN_K}); with so few, which ones were drawn can still flip the sign.")
    if not (math.isfinite(p) and p < 0.05):
        return (f"r = {r:+.2f} ({ptxt}): no clear relation between where the gate opens and how much {what} "
                "under the interventions; on this image the data neither support nor refute the paper's claim.")
    if r < 0:
        return (f"r = {r:+.2f} ({ptxt}), a {strength} negative relation: where the gate is more open, {what} "
                "less under the interventions, as the paper's claim predicts.")
    return (f"r = {r:+.2f} ({ptxt}), a {strength} positive relation: where the gate is more open, {what} "
            "more under the interventions, the opposite of what the paper's claim predicts.")


def _rms(sq: torch.Tensor, count: torch.Tensor) -> np.ndarray:
    out = torch.where(count > 0, sq / count.clamp_min(1), torch.full_like(sq, float("nan"))).sqrt()
    return out.float().numpy()


def _footprint_visible(visible: torch.Tensor, level: GateLevel, size) -> torch.Tensor:
    """1 where a level pixel's whole footprint (the input pixels pooled into it) is visible."""
    s = round(1 / level.scale)
    if s <= 1:
        return visible
    hidden = F.max_pool2d((1 - visible)[None, None], s)[0, 0]  # floors as the encoder's pooling does
    return 1 - hidden[: size[0], : size[1]]


def _cancel_check(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable returning bool, got {type(cancel).__name__}")
