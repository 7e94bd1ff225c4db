"""One request: the clean and the intervened pass of a pair."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .. import viz
from ..predictor import Fuser, FusionResult
from .settings import Settings, intervention_masks
from .uploads import size_notes


@dataclass
class LabRun:
    """The clean and the intervened pass of one request."""

    clean: FusionResult
    intervened: FusionResult
    settings: Settings
    model: str
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def difference(self) -> np.ndarray:
        """|F_intervened - F_clean|, (H, W) float32 luminance in [0, 1]."""
        return viz.difference_map(self.intervened.fused_y, self.clean.fused_y)

    @property
    def has_intervention(self) -> bool:
        return self.intervened.intervention != "none"


def _results_from_batch(pair, fused, gates, inputs, masks, kinds) -> list[FusionResult]:
    out = []
    for i, ((vis_y, ir), m, kind) in enumerate(zip(inputs, masks, kinds)):
        out.append(Fuser.build_result(pair, fused[i : i + 1], tuple(g[i : i + 1] for g in gates), vis_y, ir, m, kind))
    return out


def _pct(x: float) -> str:
    return "0%" if x == 0 else ("100%" if x == 1 else f"{100 * x:.1f}%")


def clean_key(model: str, vis_y: np.ndarray, ir: np.ndarray) -> str:
    """A key for the clean pass of a prepared pair under a model (content hash)."""
    import hashlib

    h = hashlib.sha1(f"{model}|{vis_y.shape}".encode())
    h.update(np.ascontiguousarray(vis_y).tobytes())
    h.update(np.ascontiguousarray(ir).tobytes())
    return h.hexdigest()


def run_pair(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, settings: Settings = Settings(),
             drawn: Sequence[np.ndarray | None] = (None, None), model: str = "",
             cache: dict | None = None) -> LabRun:
    """Fuse a pair without and with the settings' interventions (and drawn masks), as one
    batched network call. Sizes that differ are resized (with a notice); oversized pairs are
    downscaled to the fuser's max_side (with a notice).

    cache: an optional dict owned by one user session. The clean pass of the last pair is kept
    in it (network outputs only, about 2.5 MB at 640x480), so re-fusing the same pair with
    other interventions runs the network once instead of twice.
    """
    t0 = time.perf_counter()
    pair = fuser.prepare(visible, infrared, resize_ir=True)
    notices = [n[0].upper() + n[1:] + "." for n in pair.notices]
    if visible.shape[:2] != infrared.shape[:2]:
        notices += size_notes(visible.shape[:2], infrared.shape[:2])[1:]
    h, w = pair.shape
    has_drawn = any(d is not None for d in drawn)
    m_vi, m_ir = intervention_masks(settings, h, w, drawn)
    vis_y, ir = pair.ycrcb[..., 0], pair.infrared
    ones = np.ones((h, w), np.float32)
    label = settings.label(has_drawn)
    key = clean_key(f"{model}|{fuser.weights_source}", vis_y, ir) if cache is not None else None
    cached = cache.get("clean") if cache is not None and cache.get("key") == key else None
    iv, ii = vis_y * m_vi, ir * m_ir
    if label == "none":
        notices.append("No intervention is selected, so the intervened output equals the clean one. "
                       "Turn on an intervention or draw a mask.")
        fused, gates = cached or fuser.run(torch.from_numpy(vis_y)[None, None], torch.from_numpy(ir)[None, None])
        clean = intervened = _results_from_batch(pair, fused, gates, [(vis_y, ir)], [(ones, ones)], ["none"])[0]
    elif cached is not None:
        fused, gates = fuser.run(torch.from_numpy(iv)[None, None], torch.from_numpy(ii)[None, None])
        clean = _results_from_batch(pair, cached[0], cached[1], [(vis_y, ir)], [(ones, ones)], ["none"])[0]
        intervened = _results_from_batch(pair, fused, gates, [(iv, ii)], [(m_vi, m_ir)], [label])[0]
    else:
        batch_vis = torch.from_numpy(np.stack([vis_y, iv]))[:, None]
        batch_ir = torch.from_numpy(np.stack([ir, ii]))[:, None]
        fused, gates = fuser.run(batch_vis, batch_ir)
        clean, intervened = _results_from_batch(
            pair, fused, gates, [(vis_y, ir), (iv, ii)], [(ones, ones), (m_vi, m_ir)], ["none", label])
    if cache is not None and cached is None:
        cache["key"] = key
        cache["clean"] = (fused[:1].clone(), tuple(g[:1].clone() for g in gates))
    if label != "none":
        hidden_vi, hidden_ir = 1.0 - float(m_vi.mean()), 1.0 - float(m_ir.mean())
        notices.append(f"Intervention: {label}. Hidden: {_pct(hidden_vi)} of the visible input, "
                       f"{_pct(hidden_ir)} of the infrared input.")
    if cached is not None:
        notices.append("Clean pass reused (computed when this pair was loaded, or by your previous request): "
                       "only the intervened pass ran.")
    return LabRun(clean, intervened, settings, model, notices, time.perf_counter() - t0)


def prefetch_clean(fuser: Fuser, visible: np.ndarray, infrared: np.ndarray, model: str, cache: dict) -> bool:
    """Run the clean pass of a pair into a session's `cache` (see `run_pair`), unless it is
    there already; True if it ran. The app calls it as soon as a pair is loaded, so that
    pressing Fuse then only runs the intervened pass."""
    pair = fuser.prepare(visible, infrared, resize_ir=True)
    vis_y, ir = pair.ycrcb[..., 0], pair.infrared
    key = clean_key(f"{model}|{fuser.weights_source}", vis_y, ir)
    if cache.get("key") == key:
        return False
    fused, gates = fuser.run(torch.from_numpy(vis_y)[None, None], torch.from_numpy(ir)[None, None])
    cache["key"], cache["clean"] = key, (fused, gates)
    return True
