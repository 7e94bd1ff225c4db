"""The Lab's intervention controls (`Settings`) and the keep masks they make."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import io
from ..interventions import MaskConfig, get_intervention, sample_masks

DROPOUT_CHOICES = ("none", get_intervention("drop-visible").label, get_intervention("drop-infrared").label)
# page words and old spellings -> INTERVENTIONS name (None: no dropout)
_DROPOUT_KIND = {"none": None, "": None, None: None, "drop visible": "drop-visible", "drop infrared": "drop-infrared",
                 "drop IR": "drop-infrared", "drop-visible": "drop-visible", "drop-infrared": "drop-infrared"}
# The paper's 16-pixel holes on 256-pixel crops are 6.25% of the short side: holes scale with
# the image, so that an intervention hides the same share of any picture.
DEFAULT_HOLE_PERCENT = 6.25
HOLE_PERCENT_RANGE = (1.0, 25.0)
DEFAULT_HOLES = 6
MAX_SEED = 2**31 - 1  # numpy's seeds are wider; this is what the page's number field accepts


@dataclass(frozen=True)
class Settings:
    """The lab's intervention controls.

    complementary, random: the two masking interventions (toggles; both may be on).
    dropout: "none", "drop visible" or "drop infrared" (or an INTERVENTIONS name / alias).
    hole_percent: side of each square hole as a percentage of the image's short side
        (paper: 16 px of 256, 6.25%); holes: holes per mask (1 to 6); seed: fixes every mask.
    """

    complementary: bool = False
    random: bool = False
    dropout: str = "none"
    hole_percent: float = DEFAULT_HOLE_PERCENT
    holes: int = DEFAULT_HOLES
    seed: int = 0

    def __post_init__(self):
        if self.dropout not in _DROPOUT_KIND:
            raise ValueError(f"dropout must be one of {', '.join(DROPOUT_CHOICES)}, got {self.dropout!r}")
        kind = _DROPOUT_KIND[self.dropout]
        object.__setattr__(self, "dropout", "none" if kind is None else get_intervention(kind).label)
        lo, hi = HOLE_PERCENT_RANGE
        try:
            pct = float(self.hole_percent)
        except (TypeError, ValueError):
            pct = float("nan")
        if not lo <= pct <= hi:  # NaN fails too
            raise ValueError(f"hole size must be from {lo:g}% to {hi:g}% of the image's short side, "
                             f"got {self.hole_percent!r}")
        object.__setattr__(self, "hole_percent", pct)
        for name, lo, hi in (("holes", 1, 6), ("seed", 0, MAX_SEED)):
            v = getattr(self, name)
            try:
                ok = v is not None and float(v) == int(float(v)) and lo <= int(v) <= hi
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("complementary", "random"):
            v = getattr(self, name)
            if v not in (True, False, 0, 1) or isinstance(v, str):
                raise ValueError(f"{name} must be true or false, got {v!r}")
            object.__setattr__(self, name, bool(v))

    @property
    def masking_kinds(self) -> list[str]:
        return [k for k, on in (("complementary", self.complementary), ("random", self.random)) if on]

    @property
    def dropout_kind(self) -> str | None:
        return _DROPOUT_KIND[self.dropout]

    @property
    def kinds(self) -> list[str]:
        """The enabled interventions, as `ivfusion.INTERVENTIONS` names."""
        return self.masking_kinds + ([self.dropout_kind] if self.dropout_kind else [])

    def hole_px(self, height: int, width: int) -> int:
        """The hole side in pixels for an image of this size."""
        return max(1, round(min(height, width) * self.hole_percent / 100.0))

    def mask_config(self, height: int, width: int) -> MaskConfig:
        # disjoint: the Lab places the infrared holes away from the visible ones, so that each
        # hidden spot is seen by the other modality (the authors-code sampler lets them overlap)
        return MaskConfig(mask_size=self.hole_px(height, width), min_holes=self.holes, max_holes=self.holes,
                          style="disjoint")

    def label(self, drawn: bool = False) -> str:
        parts = [get_intervention(k).label for k in self.kinds] + (["drawn mask"] if drawn else [])
        return " + ".join(parts) if parts else "none"


def intervention_masks(settings: Settings, height: int, width: int,
                       drawn: Sequence[np.ndarray | None] = (None, None),
                       rng: np.random.Generator | int | None = None,
                       kinds: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep masks (M_vi, M_ir), (height, width) float32, of the enabled interventions combined:
    each enabled intervention's masks (drawn with `rng`, default the settings' seed) multiply,
    then the drawn keep masks (resized to the image) multiply in. `kinds` overrides the enabled
    masking kinds (dropout is taken from the settings)."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(settings.seed if rng is None else rng)
    m_vi = np.ones((height, width), np.float32)
    m_ir = np.ones((height, width), np.float32)
    cfg = settings.mask_config(height, width)
    todo = list(settings.masking_kinds if kinds is None else kinds)
    if settings.dropout_kind:
        todo.append(settings.dropout_kind)
    for kind in todo:
        a, b = sample_masks(kind, height, width, rng, cfg)
        m_vi *= a
        m_ir *= b
    for m, user in ((m_vi, drawn[0]), (m_ir, drawn[1])):
        if user is not None:
            user = np.asarray(user, np.float32)
            if user.shape != (height, width):
                user = io.resize_to(user, height, width)
            m *= np.clip(user, 0.0, 1.0)
    return m_vi, m_ir


def env_number(name: str, default: float, low: float, high: float, kind: type = int,
               env: dict[str, str] | None = None) -> float:
    """A numeric setting from the environment (`env`, default os.environ), checked: unset or
    empty gives `default`; anything that is not a `kind` in [low, high] raises ValueError
    naming the variable, the value and what is accepted (the app prints it as one line)."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw) if kind is int else float(raw)
        ok = low <= value <= high  # NaN fails
    except ValueError:
        ok = False
    if not ok:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={raw!r}: expected {what} from {low:g} to {high:g} (unset: {default:g})")
    return value
