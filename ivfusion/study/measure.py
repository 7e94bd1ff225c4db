"""One pair, one set of weights: the study's correlations, and the cache that makes a study resumable.

For each intervention type the pair gets K seeded interventions (`StabilityAnalysis`, which
reuses the clean pass and the clean encoder features). The masks depend only on the seed, the
run's number and the pair's size, so every set of weights sees the same interventions: that is
what pairs a trained model with the untrained null (`stats.contrast`). Each gate level gives
three tests:

* "output": the clean gate of that level, upsampled, against the fused output's instability,
  over the pixels visible in at least one run;
* "features": the clean gate against the relative change of that level's cross-attended
  features (the features the gate reads);
* "intervened": what L_inv rewards, per intervened pass d: the gate *of that pass* (the
  level's, upsampled; level "mean" is their mean, the G_bar_d that L_inv weighs) against the
  realised change |F_d - F| of the same pass, over every pixel (L_inv averages over all of
  them, hidden ones included). r is the mean over the K passes of the per-pass r.

"output" and "features" are Pearson r with the p-value of Dutilleul's modified t-test
(`ivfusion.stability`). "intervened" has one r per pass; its p-value is the one-sample t-test
of their Fisher z over the K passes (the passes are independent draws of masks on one pair),
so it asks whether this pair's relation holds across interventions, not whether it is beyond
spatial autocorrelation: only its contrast with the null answers the paper's question.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import io
from ..interventions import MaskConfig
from ..levels import GATE_LEVELS
from ..metrics import pearson
from ..predictor import BatchOutput, Fuser
from ..stability import Correlation, StabilityAnalysis, StabilityResult

MEASURES = ("output", "features", "intervened")
STUDY_INTERVENTIONS = ("complementary", "random")  # the interventions of L_inv
G_BAR = "mean"  # the "level" of the intervened measure's G_bar_d, the mean of the three gates
FORMAT = 2  # bump when a record's meaning changes, so older caches are not read as new ones


@dataclass(frozen=True)
class StudySettings:
    """What a pair's record depends on besides the pair and the weights.

    k: interventions per type (run i of a type draws its masks from the seed (seed, i)).
    max_side: pairs are downscaled to this longer side first (the study's working size; the
        masks are the paper's 16-pixel holes at that size).
    """

    k: int = 16
    seed: int = 0
    max_side: int = 320
    interventions: tuple[str, ...] = STUDY_INTERVENTIONS
    mask_config: MaskConfig = MaskConfig()

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 2 <= self.k <= 256:
            raise ValueError(f"k must be a whole number from 2 to 256, got {self.k!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 32:
            raise ValueError(f"max_side must be a whole number of at least 32, got {self.max_side!r}")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["interventions"] = list(self.interventions)
        d["format"] = FORMAT
        return d

    @property
    def key(self) -> str:
        return _short_hash(json.dumps(self.as_dict(), sort_keys=True).encode())


def weights_key(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters and buffers: two specs naming the same weights
    share it, and changed weights never reuse a cached record."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(dataclasses.asdict(model.config), sort_keys=True).encode())
    return h.hexdigest()[:16]


def pair_key(ir_path: Path, vi_path: Path) -> str:
    """A short hash of the two files' bytes (a replaced image is a new pair)."""
    return _short_hash(Path(ir_path).read_bytes() + b"\0" + Path(vi_path).read_bytes())


def analyse(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, intervention: str,
            settings: StudySettings, *, intervened: IntervenedGate | None = None) -> StabilityResult:
    """K seeded interventions of one type on a pair (the fuser's max_side is the study's).
    `intervened`, when given, also sees every pass the analysis runs (no pass of its own)."""
    fuser.set_pair(visible, infrared)
    seen = fuser if intervened is None else _Watched(fuser, intervened)
    return StabilityAnalysis(seen, [intervention], k=settings.k, seed=settings.seed,
                             mask_config=settings.mask_config).run()


class IntervenedGate:
    """The "intervened" measure: per intervened pass, r between each level's gate of that pass
    (bilinearly upsampled, as L_inv's G_bar is made) and their mean G_bar_d, and |F_d - F| over
    every pixel. A pass that hides nothing changes nothing and is skipped."""

    def __init__(self, fuser: Fuser):
        self.fuser = fuser
        self.r: dict[str, list[float]] = {key: [] for key in (*(lv.key for lv in GATE_LEVELS), G_BAR)}
        self.n_pixels = 0

    def __call__(self, out: BatchOutput) -> None:
        clean = torch.from_numpy(self.fuser.clean.fused_y)
        size = tuple(clean.shape)
        for j, (m_vi, m_ir) in enumerate(out.masks):
            if m_vi.min() >= 1 and m_ir.min() >= 1:
                continue
            change = (out.fused[j, 0] - clean).abs().numpy()
            gates = [F.interpolate(g[j:j + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
                     for g in out.gates]
            for lv in GATE_LEVELS:
                self.r[lv.key].append(pearson(gates[lv.index].numpy(), change))
            self.r[G_BAR].append(pearson(torch.stack(gates).mean(0).numpy(), change))
            self.n_pixels = change.size

    def tests(self, intervention: str) -> list[dict]:
        """One row per level (and G_BAR): the mean of the passes' r, and the t-test over passes."""
        from scipy.stats import ttest_1samp

        rows = []
        for level, rs in self.r.items():
            finite = np.array([r for r in rs if math.isfinite(r)])
            r = float(finite.mean()) if finite.size else math.nan
            p = math.nan
            if finite.size >= 2:
                z = np.arctanh(np.clip(finite, -0.999999, 0.999999))
                p = float(ttest_1samp(z, 0.0).pvalue) if np.ptp(z) > 0 else (1.0 if z[0] == 0 else 0.0)
            rows.append({"intervention": intervention, "level": level, "measure": "intervened",
                         **_numbers(Correlation(r, p, self.n_pixels, math.nan, ""))})
        return rows


class _Watched:
    """A Fuser whose batched passes are also handed to `see`: the intervened measure reads the
    passes the stability analysis runs anyway, so it costs no forward pass."""

    def __init__(self, fuser: Fuser, see):
        self._fuser, self._see = fuser, see

    def __getattr__(self, name):
        return getattr(self._fuser, name)

    def intervene_batch(self, *args, **kwargs):
        for out in self._fuser.intervene_batch(*args, **kwargs):
            self._see(out)
            yield out


def tests_of(res: StabilityResult, intervention: str) -> list[dict]:
    """The study's clean-gate tests in one analysis: one row per level and measure."""
    rows = []
    for lv in res.levels:
        for measure, corr in (("output", lv.output_correlation), ("features", lv.correlation)):
            rows.append({"intervention": intervention, "level": lv.level.key, "measure": measure, **_numbers(corr)})
    return rows


def measure_pair(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: StudySettings) -> dict:
    """The record of one pair: {"size": [h, w], "seconds", "tests": rows of `tests_of` and
    `IntervenedGate.tests`}."""
    t0 = time.perf_counter()
    tests = []
    for intervention in settings.interventions:
        intervened = IntervenedGate(fuser)
        tests += tests_of(analyse(fuser, visible, infrared, intervention, settings, intervened=intervened),
                          intervention)
        tests += intervened.tests(intervention)
    return {"size": list(fuser.pair.shape), "seconds": round(time.perf_counter() - t0, 3), "tests": tests}


_TEST_KEYS = {"intervention", "level", "measure", "r", "p"}  # what the statistics read of a cached test


class Cache:
    """One JSON file per (settings, weights, dataset, pair) under `root`; a record is read back
    only if it was made from the same files' bytes."""

    def __init__(self, root: Path, settings: StudySettings):
        self.root = Path(root) / settings.key
        self.stale: list[Path] = []  # records found torn or malformed by `get` (measured again)

    def path(self, weights: str, dataset: str, stem: str) -> Path:
        return self.root / weights / dataset.replace("/", "__") / f"{stem}.json"

    def get(self, weights: str, dataset: str, stem: str, content: str) -> dict | None:
        path = self.path(weights, dataset, stem)
        try:
            record = json.loads(path.read_text())
        except OSError:  # absent
            return None
        except ValueError:  # torn by a kill: measure again
            self.stale.append(path)
            return None
        if not isinstance(record, dict) or record.get("content") != content:
            return None
        tests = record.get("tests")
        if not isinstance(tests, list) or not all(isinstance(t, dict) and _TEST_KEYS <= t.keys() for t in tests):
            self.stale.append(path)  # edited by hand or by a broken writer: measure again
            return None
        return record

    def put(self, weights: str, dataset: str, stem: str, content: str, record: dict) -> None:
        path = self.path(weights, dataset, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_write(path, json.dumps({**record, "content": content}, allow_nan=True).encode())


def _numbers(c: Correlation) -> dict:
    clean = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)  # noqa: E731
    return {"r": clean(c.r), "p": clean(c.p_value), "n_eff": clean(c.n_eff), "n_pixels": int(c.n_pixels)}


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]

