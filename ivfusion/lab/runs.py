"""One request: the clean and the intervened pass of a pair.

`SharedPair` is a loaded pair with its clean pass and clean encoder features, shared by the
visitors who send the same pair (`cache.PAIRS`), so re-fusing it with another intervention
runs only what the intervention changes (`Fuser.set_pair` / `Fuser.intervene`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from .. import io, viz
from ..predictor import Fuser, FusionResult
from .settings import Settings, intervention_masks
from .uploads import size_notes


@dataclass
class LabRun:
    """The clean and the intervened pass of one request (what the page re-renders from)."""

    clean: FusionResult
    intervened: FusionResult
    settings: Settings
    model: str
    eta: float
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    label: str = "none"
    # held once by the shared result cache (`cache.RESULTS`): the sessions showing it do not
    # count its memory as theirs (`session.nbytes`)
    shared: bool = False

    @property
    def difference(self) -> np.ndarray:
        """|F_intervened - F_clean|, (H, W) float32 luminance in [0, 1]."""
        return viz.difference_map(self.intervened.fused_y, self.clean.fused_y)

    @property
    def has_intervention(self) -> bool:
        return self.intervened is not self.clean


def fuser_eta(fuser: Fuser) -> float:
    """eta, the gate regulariser's target mean, from the model's config."""
    return fuser.eta


class SharedPair:
    """A pair's clean pass and clean encoder features under one model, computed once and
    shared by every visitor who sends the same pair (`cache.PAIRS` holds it, bounded).

    fuser: the shared Fuser of the chosen model; a `fork` of it holds this pair, so the
    networks are shared and the pair's caches are this object's. The clean encoder features
    stay (about 100 MB at 640x480, counted by the cache's bound), so each intervention
    re-encodes only the crops its masks change and a dropped modality costs nothing to
    encode. It is not thread-safe: call it inside the compute slot, as every forward is.
    visible, infrared: the decoded uploads (sizes may differ: the infrared image is resized
    to the visible size, with a notice); load_notices: what the decode did ("Downscaled
    from ..."), repeated to every visitor of this pair.
    """

    def __init__(self, fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, model: str = "",
                 load_notices: Sequence[str] = ()):
        t0 = time.perf_counter()
        self.model = model
        self.load_notices = list(load_notices)
        self.eta = fuser_eta(fuser)
        self.fuser = fuser.fork()
        self.fuser.keep_features = True
        self.size_notices = size_notes(visible.shape[:2], infrared.shape[:2])[1:]
        self.clean = self.fuser.set_pair(visible, infrared, resize_ir=True)
        self.seconds = time.perf_counter() - t0

    @property
    def shape(self) -> tuple[int, int]:
        return self.clean.fused_y.shape

    def intervene(self, settings: Settings, drawn: Sequence[np.ndarray | None] = (None, None)) -> FusionResult:
        """The intervened pass: the settings' interventions and the drawn keep masks combined."""
        h, w = self.shape
        label = settings.label(any(d is not None for d in drawn))
        m_vi, m_ir = intervention_masks(settings, h, w, drawn)
        res = self.fuser.intervene("none", settings.seed, masks=(m_vi, m_ir))
        return replace(res, intervention=label, fused_rgb=colour_from_visible(res, self.clean.visible_rgb))


def colour_from_visible(res: FusionResult, visible_rgb: np.ndarray) -> np.ndarray:
    """The fused RGB with colour only where the network saw the visible image.

    The fused luminance comes from the network; its colour (Cr, Cb) comes from the visible
    image. Where the visible image was hidden, its colour is hidden too (neutral Cr/Cb, grey),
    so that dropping the visible image gives a grey output instead of one that still shows
    the visible image's colours."""
    m_vi = np.asarray(res.masks[0], np.float32)
    if m_vi.min() >= 1.0:
        return res.fused_rgb
    ycrcb = io.visible_to_ycrcb(visible_rgb)
    ycrcb[..., 1:] = 0.5 + (ycrcb[..., 1:] - 0.5) * m_vi[..., None]
    return io.restore_colour(res.fused_y, ycrcb)


def _pct(x: float) -> str:
    return "0%" if x == 0 else ("100%" if x == 1 else f"{100 * x:.1f}%")


def colour_notice(settings: Settings) -> str | None:
    """Why the intervened output's colours look as they do, when a modality is dropped."""
    if settings.dropout_kind == "drop-visible":
        return ("The intervened output is grey: its colour comes from the visible image, which was dropped. "
                "Its brightness is what the network made from the infrared image alone.")
    if settings.dropout_kind == "drop-infrared":
        return ("The intervened output keeps its colour: colour always comes from the visible image, which "
                "the network still saw. Only the brightness changes where the infrared image mattered.")
    return None


def run_session_pair(pair: SharedPair, settings: Settings = Settings(),
                     drawn: Sequence[np.ndarray | None] = (None, None)) -> LabRun:
    """The clean pass (cached in `pair`) and the intervened pass of one request."""
    t0 = time.perf_counter()
    notices = [n[0].upper() + n[1:] + "." for n in pair.clean.notices] + list(pair.size_notices)
    label = settings.label(any(d is not None for d in drawn))
    if label == "none":
        notices.append("No intervention is selected, so the intervened output equals the clean one. "
                       "Turn on an intervention or draw a mask.")
        return LabRun(pair.clean, pair.clean, settings, pair.model, pair.eta, notices,
                      time.perf_counter() - t0, label)
    inter = pair.intervene(settings, drawn)
    h, w = pair.shape
    hidden_vi, hidden_ir = 1.0 - float(inter.masks[0].mean()), 1.0 - float(inter.masks[1].mean())
    holes = f" (holes of {settings.hole_px(h, w)} px)" if settings.masking_kinds else ""
    notices.append(f"Intervention: {label}{holes}. Hidden: {_pct(hidden_vi)} of the visible input, "
                   f"{_pct(hidden_ir)} of the infrared input.")
    colour = colour_notice(settings)
    if colour:
        notices.append(colour)
    return LabRun(pair.clean, inter, settings, pair.model, pair.eta, notices, time.perf_counter() - t0, label)


def run_pair(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: Settings = Settings(),
             drawn: Sequence[np.ndarray | None] = (None, None), model: str = "") -> LabRun:
    """Fuse a pair without and with the settings' interventions (and drawn masks), from scratch."""
    return run_session_pair(SharedPair(fuser, visible, infrared, model), settings, drawn)
