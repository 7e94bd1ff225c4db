"""The Lab's intervention controls (`Settings`) and the keep masks they make."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import io
from ..interventions import MaskConfig, sample_masks

DROPOUT_CHOICES = ("none", "drop visible", "drop IR")
_DROPOUT_KIND = {"none": None, "drop visible": "drop-vis", "drop IR": "drop-ir",
                 "drop-vis": "drop-vis", "drop-ir": "drop-ir", None: None, "": None}


@dataclass(frozen=True)
class Settings:
    """The lab's intervention controls.

    complementary, random: the two masking interventions (toggles; both may be on).
    dropout: "none", "drop visible" or "drop IR" (or "drop-vis" / "drop-ir").
    mask_size: side of each square hole in pixels (paper: 16); holes: holes per mask (1 to 6);
    seed: fixes every random choice.
    """

    complementary: bool = False
    random: bool = False
    dropout: str = "none"
    mask_size: int = 16
    holes: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.dropout not in _DROPOUT_KIND:
            raise ValueError(f"dropout must be one of {', '.join(DROPOUT_CHOICES)}, got {self.dropout!r}")
        object.__setattr__(self, "dropout", {None: "none", "drop-vis": "drop visible", "drop-ir": "drop IR", "": "none"}
                           .get(self.dropout, self.dropout))
        for name, lo, hi in (("mask_size", 1, 512), ("holes", 1, 6), ("seed", 0, 2**31 - 1)):
            v = getattr(self, name)
            if v is None or float(v) != int(float(v)) or not lo <= int(v) <= hi:
                raise ValueError(f"{name.replace('_', ' ')} must be a whole number from {lo} to {hi}, got {v!r}")
            object.__setattr__(self, name, int(v))
        object.__setattr__(self, "complementary", bool(self.complementary))
        object.__setattr__(self, "random", bool(self.random))

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

    def mask_config(self) -> MaskConfig:
        return MaskConfig(mask_size=self.mask_size, min_holes=self.holes, max_holes=self.holes)

    def label(self, drawn: bool = False) -> str:
        names = {"complementary": "complementary masking", "random": "random masking",
                 "drop-vis": "drop visible", "drop-ir": "drop IR"}
        parts = [names[k] for k in self.kinds] + (["drawn mask"] if drawn else [])
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
    cfg = settings.mask_config()
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
