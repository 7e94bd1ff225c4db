"""The Intervention Lab's logic: everything the app does except drawing widgets.

`app.py` (Gradio) only wires widgets to the functions here, so all of this is testable and
usable without a browser:

* `ModelBank`: the models the lab offers (trained default, the authors' checkpoint when
  configured, the untrained network), each loaded once and cached.
* `load_image`, `pair_info`, `drawn_keep_mask`: uploads (paths, Gradio file payloads or
  arrays) to checked numpy images, with readable `ImageError`s.
* `Settings` + `intervention_masks`: the UI's intervention toggles as keep masks. Enabled
  interventions combine multiplicatively (e.g. complementary masking + drop IR), and so do
  hand-drawn masks.
* `run_pair`: the clean and the intervened pass in one batched network call.
* `render`: the figures (fused images, network inputs, difference map, six gate heat maps).
* `stability`: K seeded interventions, batched; the per-pixel instability map, the mean gate
  map and their correlation.
* `metrics_table`, `write_downloads`: the eleven metrics before/after and the files to keep.
* `benchmark_app`: latency and memory of the lab's main request, as `python -m ivfusion.lab`
  prints it (and `ivfusion bench --app` calls it).

Environment variables (read by `ModelBank`):
  IVFUSION_WEIGHTS            weights spec of the default model (a folder, a .safetensors or
                              .pth file, or hf://owner/repo[/file]); if it cannot be loaded
                              the bundled weights are used, with a notice.
  IVFUSION_OFFICIAL_WEIGHTS   the authors' checkpoint (a path to best.pth or an hf:// spec);
                              when set, "Authors' checkpoint" is offered as a model.
  IVFUSION_MAX_SIDE           images whose longer side exceeds this are downscaled (default 1024).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import io, viz
from .hub import DEFAULT_WEIGHTS, REPO_ROOT, UNTRAINED, WeightsError, load_model
from .interventions import MASKED_KINDS, MaskConfig, sample_masks
from .io import ImageError
from .predictor import Fuser, FusionResult

APP_MAX_SIDE = 1024
MAX_UPLOAD_PIXELS = 50_000_000  # checked from the file header, before decoding
ETA = viz.ETA
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"

# The bundled example pairs: file stem -> label shown in the app. Files live in
# assets/examples/vi and assets/examples/ir; sources and licences in assets/examples/README.md.
EXAMPLES: dict[str, str] = {
    "msrs_00001D": "Day: pedestrians at a building (MSRS)",
    "msrs_00002D": "Day: parked cars (MSRS)",
    "msrs_00009N": "Night: pedestrian and cyclist in the dark (MSRS)",
    "msrs_00010N": "Night: car with headlights (MSRS)",
    "msrs_00037N": "Night: glare hides pedestrians (MSRS)",
    "msrs_00039N": "Night: people the camera misses (MSRS)",
    "roadscene_FLIR_04688": "Day: pedestrian and dog crossing (RoadScene)",
    "roadscene_FLIR_05857": "Night: street with cars (RoadScene)",
}

DEFAULT_CHOICE = "ISFuse, trained weights (default)"
OFFICIAL_CHOICE = "Authors' checkpoint (best.pth)"
UNTRAINED_CHOICE = "Untrained network (teaching contrast)"

DROPOUT_CHOICES = ("none", "drop visible", "drop IR")
_DROPOUT_KIND = {"none": None, "drop visible": "drop-vis", "drop IR": "drop-ir",
                 "drop-vis": "drop-vis", "drop-ir": "drop-ir", None: None, "": None}


def example_pairs(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str, str]]:
    """(visible path, infrared path, label) for each bundled example, in EXAMPLES order."""
    vis, ir = io.list_images(folder / "vi"), io.list_images(folder / "ir")
    return [(str(vis[k]), str(ir[k]), label) for k, label in EXAMPLES.items() if k in vis and k in ir]


# ----------------------------------------------------------------------------- models
def make_fuser(spec: str | os.PathLike | None = None, device: str = "auto", max_side: int | None = APP_MAX_SIDE,
               fast: bool = True) -> Fuser:
    """A Fuser for a weights spec (see `ivfusion.load_model`), on the fastest path that holds
    the deviation bound (`ivfusion.fast`), or on the reference path when fast=False."""
    return Fuser(load_model(spec), device=device, max_side=max_side, path="auto" if fast else "reference")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds (True
    when HF_HUB_OFFLINE is set: then only the local cache is used, which is fast). Saves the
    Hub client's half a minute of retries on a machine without network."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


class ModelBank:
    """The models the lab offers, each loaded at most once (thread-safe) and then shared.

    Models are read-only at inference, so one instance serves every user; no per-user state
    lives here. `env` defaults to os.environ (see the module docstring for the variables).
    """

    def __init__(self, env: dict[str, str] | None = None, device: str = "auto",
                 max_side: int | None = None, fast: bool = True):
        env = dict(os.environ if env is None else env)
        self.device = device
        self.fast = fast
        self.max_side = max_side if max_side is not None else int(env.get("IVFUSION_MAX_SIDE") or APP_MAX_SIDE)
        self.trained_spec = env.get("IVFUSION_WEIGHTS") or None
        self.official_spec = env.get("IVFUSION_OFFICIAL_WEIGHTS") or None
        self._fusers: dict[str, Fuser] = {}
        self._notes: dict[str, list[str]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        out = [DEFAULT_CHOICE]
        if self.official_spec:
            out.append(OFFICIAL_CHOICE)
        return out + [UNTRAINED_CHOICE]

    def _load(self, choice: str) -> tuple[Fuser, list[str]]:
        notes: list[str] = []
        if choice == DEFAULT_CHOICE:
            fuser = None
            if self.trained_spec:
                try:
                    if str(self.trained_spec).startswith("hf://") and not hub_reachable():
                        raise WeightsError("the Hugging Face Hub cannot be reached (offline?); set HF_HUB_OFFLINE=1 "
                                           "to use a copy in the local Hub cache")
                    fuser = make_fuser(self.trained_spec, self.device, self.max_side, self.fast)
                except WeightsError as e:
                    notes.append(f"IVFUSION_WEIGHTS={self.trained_spec} could not be loaded ({e}); "
                                 "using the bundled weights instead.")
            if fuser is None:
                fuser = make_fuser(DEFAULT_WEIGHTS, self.device, self.max_side, self.fast)
        elif choice == OFFICIAL_CHOICE:
            if not self.official_spec:
                raise WeightsError("the authors' checkpoint is not configured: set IVFUSION_OFFICIAL_WEIGHTS "
                                   "to the path of best.pth or to an hf://owner/repo/file spec")
            fuser = make_fuser(self.official_spec, self.device, self.max_side, self.fast)
        elif choice == UNTRAINED_CHOICE:
            fuser = make_fuser(UNTRAINED, self.device, self.max_side, self.fast)
            notes.append("The untrained network has random weights: its output and gates mean nothing. "
                         "Compare it with the trained model to see what training taught the gates.")
        else:
            raise WeightsError(f"unknown model {choice!r}; choose one of: {', '.join(self.choices())}")
        return fuser, notes

    def get(self, choice: str | None = None) -> tuple[Fuser, list[str]]:
        """The Fuser for a model choice (None: the default) and notices about it. Raises
        WeightsError with a readable message when it cannot be loaded."""
        choice = choice or DEFAULT_CHOICE
        with self._lock:
            if choice in self._fusers:
                return self._fusers[choice], list(self._notes[choice])
            if choice in self._errors:
                raise WeightsError(self._errors[choice])
            try:
                fuser, notes = self._load(choice)
            except WeightsError as e:
                if not (choice == DEFAULT_CHOICE and self.trained_spec):
                    self._errors[choice] = str(e)  # a missing file stays missing; Hub errors may be retried
                raise
            self._fusers[choice] = fuser
            self._notes[choice] = notes
            return fuser, list(notes)

    def default_choice(self) -> tuple[str, list[str]]:
        """Load the default model now (at startup) and return the choice to preselect: the
        trained default, or the untrained network with a notice when no trained weights load."""
        try:
            _, notes = self.get(DEFAULT_CHOICE)
            return DEFAULT_CHOICE, notes
        except WeightsError as e:
            self.get(UNTRAINED_CHOICE)
            return UNTRAINED_CHOICE, [f"No trained weights could be loaded ({e}). The lab runs the untrained "
                                      "network until trained weights are available."]

    def describe(self, choice: str | None = None) -> str:
        fuser, _ = self.get(choice)
        return f"{choice or DEFAULT_CHOICE}: weights from {fuser.weights_source}, {fuser.path} path, {fuser.device}"


# ----------------------------------------------------------------------------- inputs
_BROWSER_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif")


def source_path(source: Any) -> str | None:
    """The file path of an upload: a path, or a Gradio file payload {"path": ...}."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict):
        return source.get("path")
    path = getattr(source, "path", None)  # gradio FileData objects
    return str(path) if path else None


def load_image(source: Any, name: str) -> np.ndarray:
    """An uploaded image as a numpy array (RGB/grey, 8- or 16-bit as stored).

    source: a file path, a Gradio file payload ({"path": ...}), or a numpy array. Raises
    ImageError naming `name` ("visible image", ...) for a missing, corrupt, unsupported or
    enormous file; the pixel count is checked from the header, before decoding.
    """
    if source is None:
        raise ImageError(f"{name}: missing. Upload one, or click one of the example pairs.")
    if isinstance(source, np.ndarray):
        return io._check_array(source, name)
    path = source_path(source)
    if not path:
        raise ImageError(f"{name}: no file was received. Upload it again.")
    _check_header(Path(path), name)
    try:
        img = io.read_image(path)
    except ImageError as e:
        raise ImageError(f"{name}: {str(e).replace(str(path), Path(path).name)}") from None
    return io._check_array(img, name)


def _check_header(path: Path, name: str) -> None:
    """Refuse images too large to decode safely, from their header alone (Pillow reads lazily)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a readable message
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not Pillow-readable: OpenCV decides (and explains)
        return
    if w * h > MAX_UPLOAD_PIXELS:
        raise ImageError(
            f"{name}: {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is too large for the lab "
            f"(limit {MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels). Downscale it first; the lab would shrink "
            "it to at most 1024 pixels on its longer side anyway.")


def describe_image(img: np.ndarray) -> str:
    """'640x480, colour, 8-bit' and the like."""
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    kind = {1: "grey", 2: "grey + alpha", 3: "colour", 4: "colour + alpha"}.get(ch, f"{ch} channels")
    if ch == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
        kind = "grey (3 equal channels)"
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(img.dtype, str(img.dtype))
    return f"{w}x{h}, {kind}, {depth}"


def pair_info(visible: Any, infrared: Any, max_side: int = APP_MAX_SIDE) -> str:
    """A short Markdown description of the loaded pair and what the lab will do with it.
    Raises ImageError for an unusable image."""
    parts, vis, ir = [], None, None
    if visible is not None:
        vis = load_image(visible, "visible image")
        parts.append(f"**Visible:** {describe_image(vis)}")
    if infrared is not None:
        ir = load_image(infrared, "infrared image")
        parts.append(f"**Infrared:** {describe_image(ir)}")
    if not parts:
        return "Load a pair: upload a visible and an infrared image, or click an example below."
    notes = []
    if vis is None or ir is None:
        notes.append(f"Now add the {'infrared' if ir is None else 'visible'} image.")
    else:
        notes += size_notes(vis.shape[:2], ir.shape[:2])
        h, w = vis.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            notes.append(f"The pair will be downscaled to {round(w * s)}x{round(h * s)} (at most {max_side} px a side).")
        if not notes:
            notes.append("Ready: press **Fuse**.")
    return " · ".join(parts) + "  \n" + " ".join(notes)


def size_notes(vis_hw: tuple[int, int], ir_hw: tuple[int, int]) -> list[str]:
    """What happens to a pair whose sizes differ, in plain words."""
    if tuple(vis_hw) == tuple(ir_hw):
        return []
    (vh, vw), (ih, iw) = vis_hw, ir_hw
    notes = [f"The sizes differ: the infrared image ({iw}x{ih}) is resized to the visible size ({vw}x{vh}). "
             "Fusion assumes both images show the same scene pixel for pixel (a registered pair)."]
    if abs(vw / vh - iw / ih) > 0.02 * (vw / vh):
        notes.append("Their shapes (aspect ratios) differ too, so they are probably not registered: "
                     "expect doubled edges in the result.")
    return notes


def display_copy(source: Any, folder: Path) -> str | None:
    """A browser-displayable, lossless PNG copy of an upload in a format browsers cannot show
    (e.g. TIFF), keeping 16-bit depth; None when the file can be shown as it is."""
    path = source_path(source)
    if not path or Path(path).suffix.lower() in _BROWSER_SUFFIXES:
        return None
    img = load_image(path, "image")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 2:
        img = img[..., 0]
    out = Path(folder) / (Path(path).stem + ".png")
    io.write_png(out, img)
    return str(out)


def drawn_keep_mask(value: Any) -> np.ndarray | None:
    """A keep mask (1 keeps, 0 hides) from what the user painted in an image editor, or None
    when nothing was painted.

    value: a Gradio ImageEditor payload {"background", "layers", "composite"} (file payloads,
    paths or arrays), or an (H, W, 4) RGBA / (H, W) array where painted pixels are opaque / > 0.
    """
    if value is None:
        return None
    layers = value.get("layers") if isinstance(value, dict) else [value]
    hidden = None
    for layer in layers or []:
        if layer is None:
            continue
        arr = layer if isinstance(layer, np.ndarray) else io.read_image(source_path(layer))
        if arr.ndim == 3 and arr.shape[2] == 4:
            painted = arr[..., 3] > 0
        elif arr.ndim == 3 and arr.shape[2] == 2:
            painted = arr[..., 1] > 0
        else:
            painted = (arr if arr.ndim == 2 else arr.max(-1)) > 0
        hidden = painted if hidden is None else (hidden | painted if hidden.shape == painted.shape else hidden)
    if hidden is None or not hidden.any():
        return None
    return (~hidden).astype(np.float32)


# ----------------------------------------------------------------------------- settings
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


# ----------------------------------------------------------------------------- one request
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


@dataclass
class LabFigures:
    """What the lab shows for one request; all (H, W, 3) or (H, W) uint8."""

    fused_clean: np.ndarray
    fused_intervened: np.ndarray
    input_visible: np.ndarray
    input_infrared: np.ndarray
    difference: np.ndarray
    gates: list[np.ndarray]  # clean levels 1-3, then intervened levels 1-3
    gate_labels: list[str]


def render(run: LabRun, gate_scale: str = "fixed") -> LabFigures:
    """The figures of one request (fused images are the exact pixels; heat maps are panels).
    gate_scale: one of `viz.GATE_SCALES`; a stretched scale is shared by a level's clean and
    intervened maps."""
    vis = run.clean.visible_rgb
    ranges = [viz.gate_range([run.clean.gates[k], run.intervened.gates[k]], gate_scale) for k in range(3)]
    gates, labels = [], []
    for name, res in (("clean pass", run.clean), ("intervened pass", run.intervened)):
        for k in range(3):
            mean = float(res.gates[k].mean())
            gates.append(viz.gate_panel(res.gates_full[k], vis, k, name, mean=mean, vmin=ranges[k][0], vmax=ranges[k][1]))
            labels.append(f"{name}, gate {viz.LEVEL_NAMES[k]}: mean {mean:.3f} (\u03b7 = {ETA:g})")
    diff = viz.difference_panel(run.intervened.fused_y, run.clean.fused_y)
    return LabFigures(
        fused_clean=run.clean.fused_rgb,
        fused_intervened=run.intervened.fused_rgb,
        input_visible=viz.to_uint8(run.intervened.inputs["visible_y"]),
        input_infrared=viz.to_uint8(run.intervened.inputs["infrared"]),
        difference=diff,
        gates=gates,
        gate_labels=labels,
    )


# ----------------------------------------------------------------------------- metrics, downloads
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
    from .metrics import HIGHER_IS_BETTER, METRIC_NAMES, evaluate_pair

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


def request_dir(root: Path | None = None, max_age_s: float = 3600.0) -> Path:
    """A fresh temporary folder for one request's files; folders older than max_age_s from
    earlier requests are removed."""
    root = Path(root or Path(tempfile.gettempdir()) / "ivfusion-lab")
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


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


# ----------------------------------------------------------------------------- stability
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
              batch_pixels: int = 2 * 640 * 480,
              progress: Callable[[int, int], None] | None = None) -> StabilityResult:
    """Run `k` sampled interventions and summarise them per pixel.

    Sample i draws its masks with the seed (settings.seed, i), so a seed fixes the whole run.
    The masking interventions enabled in `settings` are drawn anew for each sample; when none
    is enabled, samples alternate between complementary and random masking (the two that the
    paper's intervention loss averages over). Dropout and drawn masks, if set, apply to every
    sample. Samples run as batched forwards of at most `batch_pixels` pixels; `progress(done,
    k)` is called after each batch.
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
                           bool(getattr(fuser.model, "is_untrained", False)), pool is None)


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


def stability_figures(res: StabilityResult, gate_scale: str = "fixed") -> tuple[np.ndarray, np.ndarray, str]:
    """The instability panel, the mean gate panel (colour scale: one of `viz.GATE_SCALES`) and
    a Markdown summary of a stability run."""
    inst = viz.instability_panel(res.std, res.k)
    lo, hi = viz.gate_range([res.gate_mean], gate_scale)
    gate = viz.mean_gate_panel(res.gate_mean, res.visible_rgb, res.k, vmin=lo, vmax=hi)
    names = {"complementary": "complementary masking", "random": "random masking", "drop-vis": "drop visible",
             "drop-ir": "drop IR"}
    masking = [names[k] for k in res.kinds if k in MASKED_KINDS]
    rest = [names[k] for k in res.kinds if k not in MASKED_KINDS]
    what = (" and ".join(masking) + " alternately") if res.alternate else " + ".join(masking)
    what = " + ".join([what, *rest])
    text = (f"**Correlation between instability and mean gate: r = {res.correlation:+.3f}** "
            f"(Pearson, over all {res.std.size:,} pixels; {res.k} interventions: {what}; {res.seconds:.1f} s)  \n"
            + interpret_correlation(res.correlation, res.untrained))
    if res.notices:
        text += "  \n" + " ".join(res.notices)
    return inst, gate, text


# ----------------------------------------------------------------------------- benchmark
def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark_app(weights: str | None = None, height: int = 480, width: int = 640, requests: int = 100,
                  threads: int = 2, warmup: int = 3, example: str = "msrs_00037N", fast: bool = True,
                  verbose: bool = False) -> dict:
    """Latency and memory of the lab's main request: clean + intervened fuse with gates and all
    heat maps (`run_pair` + `render`), as the app runs it, on a real example pair resized to
    height x width, with `threads` torch threads.

    weights: a weights spec (None: the bundled default, as the app). The interventions rotate
    through complementary, random, drop IR and complementary + drop visible, with a new seed
    each request. Every timed request is cold (both passes run); `cpu_median_s` is the
    process CPU time per request (a load-independent check: with 2 threads, wall time on an
    idle machine is between cpu/2 and cpu). `warm_median_s` times re-fusing the same pair with
    new interventions in one session, where the clean pass is reused (what a user tweaking
    settings sees). Memory: resident set size after `warmup` requests and after all `requests`
    (growth = end - start) and between the middle and the end (a leak grows in both halves).
    Returns a dict; `python -m ivfusion.lab` prints it.
    """
    torch.set_num_threads(int(threads))
    t_load = time.perf_counter()
    fuser = make_fuser(weights, device="cpu", max_side=max(height, width, APP_MAX_SIDE), fast=fast)
    t_load = time.perf_counter() - t_load
    vis_path, ir_path = EXAMPLES_DIR / "vi" / f"{example}.png", EXAMPLES_DIR / "ir" / f"{example}.png"
    vis, ir = io.read_image(vis_path), io.read_image(ir_path)
    if vis.shape[:2] != (height, width):
        vis, ir = io.resize_to(vis, height, width), io.resize_to(ir, height, width)
    rotation = [Settings(complementary=True), Settings(random=True), Settings(dropout="drop IR"),
                Settings(complementary=True, dropout="drop visible")]

    def one(i: int, cache: dict | None = None) -> tuple[float, float]:
        s = rotation[i % len(rotation)]
        s = Settings(s.complementary, s.random, s.dropout, 16, 1 + i % 6, i)
        t, c = time.perf_counter(), time.process_time()
        render(run_pair(fuser, vis, ir, s, cache=cache))
        return time.perf_counter() - t, time.process_time() - c

    for i in range(warmup):
        one(i)
    rss_start = rss_mb()
    lat, cpu, rss_mid = [], [], rss_start
    for i in range(requests):
        t, c = one(warmup + i)
        lat.append(t)
        cpu.append(c)
        if i == requests // 2:
            rss_mid = rss_mb()
        if verbose:
            print(f"  request {i + 1}/{requests}: {t:.3f} s (CPU {c:.2f} s), RSS {rss_mb():.0f} MiB", flush=True)
    rss_end = rss_mb()
    session: dict = {}
    one(0, session)  # fills the session's clean-pass cache
    warm = [one(i, session)[0] for i in range(1, 1 + max(1, min(20, requests // 5)))]
    lat_sorted = sorted(lat)
    p90 = lat_sorted[min(len(lat) - 1, math.ceil(0.9 * len(lat)) - 1)]
    return {
        "what": "clean + intervened fuse with gates and heat maps (ivfusion.lab.run_pair + render)",
        "size": f"{width}x{height}", "threads": int(threads), "requests": int(requests),
        "weights": fuser.weights_source, "path": fuser.path, "device": str(fuser.device),
        "load_s": round(t_load, 3),
        "median_s": round(float(np.median(lat)), 4), "p90_s": round(p90, 4),
        "min_s": round(lat_sorted[0], 4), "max_s": round(lat_sorted[-1], 4),
        "budget_s": 2.0, "median_within_budget": bool(np.median(lat) < 2.0),
        "cpu_median_s": round(float(np.median(cpu)), 4),
        "warm_median_s": round(float(np.median(warm)), 4), "warm_requests": len(warm),
        "rss_start_mib": round(rss_start, 1), "rss_mid_mib": round(rss_mid, 1), "rss_end_mib": round(rss_end, 1),
        "rss_growth_mib": round(rss_end - rss_start, 1), "rss_growth_second_half_mib": round(rss_end - rss_mid, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivfusion.lab",
                                     description="Benchmark the Intervention Lab's main request (latency, memory).")
    parser.add_argument("--weights", default=None, help="weights spec (default: the bundled weights; 'untrained' works offline)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--reference", action="store_true", help="use the reference forward pass, not the fast path")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    res = benchmark_app(args.weights, args.height, args.width, args.requests, args.threads,
                        fast=not args.reference, verbose=args.verbose)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
