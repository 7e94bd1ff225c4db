"""One pair, one set of weights: the study's correlations, and the cache that makes a study resumable.

For each intervention type the pair gets K seeded interventions (`StabilityAnalysis`, which
reuses the clean pass and the clean encoder features), and each gate level gives two tests:

* "output": the clean gate of that level, upsampled, against the fused output's instability,
  over the pixels visible in at least one run;
* "features": the clean gate against the relative change of that level's cross-attended
  features (the features the gate reads).

Each test is Pearson r with the p-value of Dutilleul's modified t-test (`ivfusion.stability`).
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

from .. import io
from ..interventions import MaskConfig
from ..predictor import Fuser
from ..stability import Correlation, StabilityAnalysis, StabilityResult

MEASURES = ("output", "features")
STUDY_INTERVENTIONS = ("complementary", "random")  # the interventions of L_inv
FORMAT = 1  # bump when a record's meaning changes, so older caches are not read as new ones


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
            settings: StudySettings) -> StabilityResult:
    """K seeded interventions of one type on a pair (the fuser's max_side is the study's)."""
    fuser.set_pair(visible, infrared)
    return StabilityAnalysis(fuser, [intervention], k=settings.k, seed=settings.seed,
                             mask_config=settings.mask_config).run()


def tests_of(res: StabilityResult, intervention: str) -> list[dict]:
    """The study's tests in one analysis: one row per level and measure."""
    rows = []
    for lv in res.levels:
        for measure, corr in (("output", lv.output_correlation), ("features", lv.correlation)):
            rows.append({"intervention": intervention, "level": lv.level.key, "measure": measure, **_numbers(corr)})
    return rows


def measure_pair(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: StudySettings) -> dict:
    """The record of one pair: {"size": [h, w], "seconds", "tests": rows of `tests_of`}."""
    t0 = time.perf_counter()
    tests = []
    for intervention in settings.interventions:
        tests += tests_of(analyse(fuser, visible, infrared, intervention, settings), intervention)
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

