"""`Fuser`: numpy images in, fused image and invariance gates out (segment-anything's Predictor).

    fuser = Fuser()
    clean = fuser.set_pair(visible_rgb, infrared)        # runs and caches the clean pass
    a = fuser.intervene("complementary", seed=1)         # recomputes only what the masks change
    b = fuser.intervene(["complementary", "drop-infrared"], seed=2)

`set_pair` keeps the clean pass's encoder features. `intervene` then re-encodes only what its
keep masks change: a modality kept whole reuses its clean features, a dropped one uses the
features of an all-zero image (expanded exactly from those of a small zero image, which the
Fusers of one `fork` family share), and a partly hidden one is re-encoded only in crops
around the hidden pixels (`ivfusion.reencode`, exact). The CFIs and the decoder see every
pixel of both modalities and always run.

Memory: at 1024x1024 the two encoders' features are 336 MB (a 32-channel float map at full
size is 128 MB). `Fuser(keep_features=False)` keeps none between calls (each call encodes
what it needs), which is what a server with many sessions wants; tools/forward_memory.py
measures both.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import io
from .device import resolve_device
from .hub import describe, load_model
from .interventions import MaskConfig, get_intervention
from .modeling import ISFuse, check_inputs
from .modeling.isfuse import MIN_SIDE
from .reencode import Geometry, expand_zero_features, reencode, zero_input_size

DEFAULT_MAX_SIDE = 2048
# What a forward pass may hold per input pixel, at most (the reference path at 1024x1024 peaked
# at +1.3-1.4 GiB: tools/forward_memory.py). A pair whose estimate exceeds the memory this
# machine has free is refused before the forward, with the size that would fit.
FORWARD_BYTES_PER_PIXEL = 1536


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(height: int, width: int) -> None:
    """Raise ImageError when a forward pass at height x width would need more memory than is free."""
    free = available_memory()
    need = height * width * FORWARD_BYTES_PER_PIXEL
    if free is not None and need > free:
        side = int((free / FORWARD_BYTES_PER_PIXEL * max(height, width) / min(height, width)) ** 0.5)
        raise io.ImageError(f"the pair is {width}x{height} pixels: fusing it needs about {need / 2**30:.1f} GiB, more "
                            f"than the {free / 2**30:.1f} GiB this machine has free; downscale it (a longer side of "
                            f"about {side // 64 * 64} fits; the command line's --max-side, or Fuser(max_side=...))")


@dataclass
class PreparedPair:
    """A validated pair, ready for the network. All arrays share one (H, W).

    ycrcb: (H, W, 3) float32 in [0, 1], the visible image in YCrCb (channel 0 feeds the net).
    infrared: (H, W) float32 in [0, 1].
    visible_rgb: (H, W, 3) uint8, the visible image as processed (for display and overlays).
    notices: what was changed on the way (downscaling, resizing, channel handling).
    """

    ycrcb: np.ndarray
    infrared: np.ndarray
    visible_rgb: np.ndarray
    notices: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.infrared.shape

    @property
    def visible_y(self) -> np.ndarray:
        """(H, W) float32 in [0, 1]: the visible luminance the network sees."""
        return self.ycrcb[..., 0]


@dataclass
class FusionResult:
    """One pass of the network. Every array is (H, W[, C]) at the (possibly downscaled) input size.

    fused_rgb: (H, W, 3) uint8, the fused luminance with the visible Cr/Cb put back.
    fused_y: (H, W) float32 in [0, 1], the network's fused luminance.
    gates: the three invariance gate maps at native size, coarsest first (`ivfusion.levels`):
        (H/4, W/4), (H/2, W/2), (H, W) (floored), float32 in [0, 1].
    gates_full: (3, H, W) float32 in [0, 1], the same gates bilinearly resized to (H, W).
    inputs: the exact network inputs, after any intervention: {"visible_y", "infrared"},
        each (H, W) float32 in [0, 1].
    masks: keep masks (M_visible, M_infrared), (H, W) float32 in [0, 1], 1 = kept, 0 = hidden.
    visible_rgb: (H, W, 3) uint8, the visible image as processed.
    intervention: the intervention applied: "none", a registry name, or names joined by "+".
    notices: what was changed on the way (downscaling, resizing, channel handling).
    """

    fused_rgb: np.ndarray
    fused_y: np.ndarray
    gates: tuple[np.ndarray, np.ndarray, np.ndarray]
    gates_full: np.ndarray
    inputs: dict[str, np.ndarray]
    masks: tuple[np.ndarray, np.ndarray]
    visible_rgb: np.ndarray
    intervention: str = "none"
    notices: list[str] = field(default_factory=list)

    def gate_means(self) -> tuple[float, float, float]:
        """Mean activation of each gate level (coarsest first), to compare with eta."""
        return tuple(float(g.mean()) for g in self.gates)


@dataclass
class BatchOutput:
    """One chunk of `Fuser.intervene_batch`: items start .. start + len(masks) - 1.

    fused: (B, 1, H, W) float32 in [0, 1]; gates: three (B, 1, h, w) float32 in [0, 1],
    coarsest first; cross: None, or the CFIs' cross-attended features, three (B, C, h, w)
    float32 (unbounded), coarsest first; masks: the B keep-mask pairs, (H, W) float32 in [0, 1].
    Tensors are on the CPU.
    """

    start: int
    fused: torch.Tensor
    gates: tuple[torch.Tensor, ...]
    cross: tuple[torch.Tensor, ...] | None
    masks: list[tuple[np.ndarray, np.ndarray]]


class Fuser:
    """Fuse registered infrared/visible numpy images with ISFuse.

    model: an ISFuse module, or a weights spec for `load_model` (None: the bundled default).
    device: "auto" (CUDA if available), "cpu" or "cuda".
    max_side: images whose longer side exceeds this are downscaled, with a notice.
    path: the inference path (`ivfusion.fast`): "auto" (default: the fp32 fast path on CPUs,
        the reference on CUDA; `ivfusion.fast.resolve_path`), "reference" (the modules in
        ivfusion.modeling, op by op as the authors' forward pass), "fast" (fp32 fast path),
        "fast-mixed" (fp32 encoders, bf16 CFIs and decoder: within 2/255, faster where bf16 is
        native) or "fast-bf16". The fast paths copy the weights: after changing `model`'s
        weights, build a new Fuser (or call `set_path`).
    keep_features: keep the current pair's clean encoder features between calls (default), so
        that `intervene` re-encodes only what its masks change; False keeps only the pair and
        its clean pass (at 1024x1024: about 60 MB instead of about 400 MB), and each call
        encodes what it needs. Results are the same either way.

    A Fuser holds one pair at a time (`set_pair`) and is not thread-safe; `fork()` gives another
    Fuser that shares the weights and networks but holds its own pair.
    """

    def __init__(self, model: ISFuse | str | None = None, device: str | torch.device = "auto",
                 max_side: int | None = DEFAULT_MAX_SIDE, path: str = "auto", keep_features: bool = True):
        self.device = resolve_device(device)
        self.model = (model if isinstance(model, torch.nn.Module) else load_model(model)).to(self.device).eval()
        self.max_side = max_side
        self.keep_features = bool(keep_features)
        self._geometry = {name: Geometry.of(getattr(self.model, f"encoder_{name}")) for name in ("vi", "ir")}
        self.set_path(path)

    def set_path(self, path: str = "auto") -> None:
        """Choose the module that runs inference, `self.net`: (vis_y, ir) -> (fused, gates).
        Forgets the current pair (its cached features belong to the previous module)."""
        from .fast import FastISFuse, make_net

        self.net, self.path = make_net(self.model, self.device, path)
        self._releases = isinstance(self.net, FastISFuse)  # its fuse_features can free features as it goes
        # features of small all-zero images, {(modality, h, w): features}: a few hundred KB,
        # shared with every fork (they depend only on the weights and the size)
        self._zero_small: dict = {}
        self.reset()

    def reset(self) -> None:
        """Forget the current pair and every cached feature."""
        self._pair: PreparedPair | None = None
        self._clean: FusionResult | None = None
        self._feats: dict[str, list[torch.Tensor]] = {}

    def release_features(self) -> None:
        """Drop the cached encoder features (the pair and its clean pass stay); the next call
        encodes what it needs again."""
        self._feats = {}

    def fork(self) -> "Fuser":
        """A Fuser sharing this one's model, inference module and zero-image features, holding
        no pair (one per session or thread)."""
        other = object.__new__(Fuser)
        other.__dict__.update({k: v for k, v in self.__dict__.items()})
        other.reset()
        return other

    @property
    def eta(self) -> float:
        """The gate regulariser's target mean activation, from the model's config."""
        return float(self.model.config.eta)

    @property
    def weights_source(self) -> str:
        return describe(self.model)

    @property
    def pair(self) -> PreparedPair | None:
        """The pair given to `set_pair`, as prepared (None before)."""
        return self._pair

    @property
    def clean(self) -> FusionResult | None:
        """The clean pass of the current pair (None before `set_pair`)."""
        return None if self._pair is None else self._ensure_clean()

    def prepare(self, visible: np.ndarray, infrared: np.ndarray, resize_ir: bool = False) -> PreparedPair:
        """Validate and convert a pair. IR of another size than the visible image is an error
        unless resize_ir=True, which resizes it to the visible size (with a notice)."""
        notices: list[str] = []
        vis_arr = io.check_array(visible, "visible image")
        ir_arr = io.check_array(infrared, "infrared image")
        for name, arr in (("visible", vis_arr), ("infrared", ir_arr)):
            if min(arr.shape[:2]) < MIN_SIDE:
                h, w = arr.shape[:2]
                raise io.ImageError(f"the {name} image is {w}x{h} pixels; ISFuse needs at least {MIN_SIDE}x{MIN_SIDE} "
                                    "(its encoder halves the size twice)")
        if vis_arr.shape[:2] != ir_arr.shape[:2]:
            (vh, vw), (ih, iw) = vis_arr.shape[:2], ir_arr.shape[:2]
            if not resize_ir:
                raise io.ImageError(
                    f"the infrared image is {iw}x{ih} but the visible image is {vw}x{vh}; the pair must be "
                    "registered (same size). Pass resize_ir=True to resize the infrared image to the visible size."
                )
            ir_arr = io.resize_to(ir_arr, vh, vw)
            notices.append(f"infrared resized from {iw}x{ih} to the visible size {vw}x{vh}")
        vis_arr, note = io.fit_max_side(vis_arr, self.max_side)
        if note:
            if min(vis_arr.shape[:2]) < MIN_SIDE:
                raise io.ImageError(f"the pair would be {note} and then be under ISFuse's minimum of {MIN_SIDE}x{MIN_SIDE} "
                                    "pixels; crop it to a less elongated shape")
            notices.append(note)
            ir_arr = io.resize_to(ir_arr, *vis_arr.shape[:2])
        if self.device.type == "cpu":
            check_memory(*vis_arr.shape[:2])
        ycrcb = io.visible_to_ycrcb(vis_arr)
        ir, ir_notes = io.infrared_to_grey(ir_arr)
        rgb = io.restore_colour(ycrcb[..., 0], ycrcb)
        return PreparedPair(ycrcb, ir, rgb, notices + ir_notes)

    @torch.inference_mode()
    def run(self, vis_y: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The batched network call: (B, 1, H, W) tensors in [0, 1] -> (fused, gates) on CPU, float32."""
        fused, gates = self.net(vis_y.to(self.device), ir.to(self.device))
        return fused.float().cpu(), tuple(g.float().cpu() for g in gates)

    # ------------------------------------------------------------------ the predictor interface
    @torch.inference_mode()
    def set_pair(self, visible: np.ndarray, infrared: np.ndarray, *, resize_ir: bool = False) -> FusionResult:
        """Prepare a pair, run the clean pass and keep it with both encoders' features.

        visible: (H, W, 3) RGB or (H, W) grey, uint8/uint16 or float in [0, 1] (RGBA: alpha dropped).
        infrared: (H, W) grey or (H, W, 3), uint8/uint16 or float in [0, 1].
        Returns the clean FusionResult. Setting the same pair again reuses the cached pass.
        """
        self._load(self.prepare(visible, infrared, resize_ir=resize_ir))
        return self._ensure_clean()

    def sample_masks(self, intervention: str | Sequence[str] = "complementary", seed: int = 0, *,
                     masks: tuple[np.ndarray | None, np.ndarray | None] | None = None,
                     mask_config: MaskConfig = MaskConfig()) -> tuple[tuple[np.ndarray, np.ndarray], str]:
        """The keep masks `intervene` uses, and the intervention's name, for the current pair.

        intervention: one name of `ivfusion.interventions.INTERVENTIONS` (or a deprecated
            alias), or a list of names whose masks multiply, all drawn from one Generator
            seeded with `seed`, in order.
        masks: optional hand-drawn keep masks (M_visible, M_infrared), (H, W) or any size
            (resized), values in [0, 1] (1 keeps, 0 hides); either may be None. They multiply
            the intervention's masks.
        Returns ((M_visible, M_infrared), name), each mask (H, W) float32 in [0, 1].
        """
        h, w = self._require_pair().shape
        names = [intervention] if isinstance(intervention, str) or intervention is None else list(intervention)
        resolved = [get_intervention(n or "none") for n in names]
        rng = np.random.default_rng(check_seed(seed))
        m_vi, m_ir = np.ones((h, w), np.float32), np.ones((h, w), np.float32)
        for iv in resolved:
            a, b = iv.sample(h, w, rng, mask_config)
            m_vi, m_ir = m_vi * a, m_ir * b
        if masks is not None:
            m_vi = m_vi * _user_mask(masks[0], h, w, "visible mask")
            m_ir = m_ir * _user_mask(masks[1], h, w, "infrared mask")
        name = "+".join(iv.name for iv in resolved if iv.name != "none") or "none"
        return (m_vi.astype(np.float32), m_ir.astype(np.float32)), name

    @torch.inference_mode()
    def intervene(self, intervention: str | Sequence[str] = "complementary", seed: int = 0, *,
                  masks: tuple[np.ndarray | None, np.ndarray | None] | None = None,
                  mask_config: MaskConfig = MaskConfig()) -> FusionResult:
        """Fuse the current pair under an intervention, recomputing only what it changes.

        intervention, seed, masks, mask_config: as `sample_masks` (a seed fixes every mask).
        Returns a FusionResult whose `inputs` are the masked inputs (visible_y * M_visible,
        infrared * M_infrared) and whose `masks` are the keep masks.
        """
        (m_vi, m_ir), name = self.sample_masks(intervention, seed, masks=masks, mask_config=mask_config)
        pair = self._pair
        if m_vi.min() == 1 and m_ir.min() == 1:
            clean = self._ensure_clean()
            return dataclasses.replace(clean, intervention=name, notices=list(clean.notices))
        f_vi, f_ir = self._features("vi", m_vi), self._features("ir", m_ir)
        if not self.keep_features:
            self.release_features()
        fused, gates = self._fuse([f_vi, f_ir])
        return self.build_result(pair, fused.float().cpu(), tuple(g.float().cpu() for g in gates),
                                 pair.visible_y * m_vi, pair.infrared * m_ir, (m_vi, m_ir), name)

    @torch.inference_mode()
    def intervene_batch(self, keep_masks: Sequence[tuple[np.ndarray | None, np.ndarray | None]], *,
                        batch_pixels: int = 2 * 640 * 480, return_cross: bool = False) -> Iterator[BatchOutput]:
        """Fuse the current pair under many keep-mask pairs, in chunks of at most
        `batch_pixels` pixels (at least one item), so memory stays bounded.

        keep_masks: (M_visible, M_infrared) pairs, each (H, W) float in [0, 1] or None (keep all).
        Yields a BatchOutput per chunk, in order; with return_cross, also the CFIs'
        cross-attended features. Encoder features are reused as in `intervene`.
        """
        pair = self._require_pair()
        h, w = pair.shape
        per = max(1, int(batch_pixels) // (h * w))
        ones = np.ones((h, w), np.float32)
        try:
            for start in range(0, len(keep_masks), per):
                chunk = [(ones if a is None else np.asarray(a, np.float32),
                          ones if b is None else np.asarray(b, np.float32)) for a, b in keep_masks[start:start + per]]
                items = [(self._features("vi", a), self._features("ir", b)) for a, b in chunk]
                f_vi = [torch.cat([it[0][k] for it in items]) if len(items) > 1 else items[0][0][k] for k in range(3)]
                f_ir = [torch.cat([it[1][k] for it in items]) if len(items) > 1 else items[0][1][k] for k in range(3)]
                del items
                out = self._fuse([f_vi, f_ir], return_cross=return_cross)
                del f_vi, f_ir
                cpu = lambda ts: tuple(t.float().cpu() for t in ts)
                yield BatchOutput(start, out[0].float().cpu(), cpu(out[1]), cpu(out[2]) if return_cross else None, chunk)
        finally:  # the clean features serve every chunk; without keep_features they go with the call
            if not self.keep_features:
                self.release_features()

    def fuse(
        self,
        visible: np.ndarray,
        infrared: np.ndarray,
        intervention: str | Sequence[str] | None = None,
        seed: int = 0,
        *,
        masks: tuple[np.ndarray | None, np.ndarray | None] | None = None,
        mask_config: MaskConfig = MaskConfig(),
        resize_ir: bool = False,
    ) -> FusionResult:
        """Fuse one pair: `set_pair`, then `intervene` unless no intervention and no masks are
        asked for (then the clean pass alone). Arguments as for those two methods.

        With an intervention, the clean pass and the clean features of a modality the
        intervention drops are left to be computed when first needed, so that one call costs
        about one forward pass."""
        self._load(self.prepare(visible, infrared, resize_ir=resize_ir))
        if (intervention in (None, "none")) and masks is None:
            return self._ensure_clean()
        return self.intervene(intervention or "none", seed, masks=masks, mask_config=mask_config)

    @staticmethod
    def build_result(pair: PreparedPair, fused, gates, vis_y, ir, masks, kind: str) -> FusionResult:
        """A FusionResult from one network output: fused (1, 1, H, W) and gates (1, 1, h, w)
        CPU float32 tensors, the inputs fed (H, W) and the keep masks."""
        h, w = pair.shape
        fused_y = fused[0, 0].numpy()
        full = torch.cat([F.interpolate(g[:1], size=(h, w), mode="bilinear", align_corners=False) for g in gates], 1)
        return FusionResult(
            fused_rgb=io.restore_colour(fused_y, pair.ycrcb),
            fused_y=fused_y,
            gates=tuple(g[0, 0].numpy() for g in gates),
            gates_full=full[0].numpy(),
            inputs={"visible_y": np.asarray(vis_y, np.float32), "infrared": np.asarray(ir, np.float32)},
            masks=masks,
            visible_rgb=pair.visible_rgb,
            intervention=kind,
            notices=list(pair.notices),
        )

    # ------------------------------------------------------------------ feature reuse
    def _require_pair(self) -> PreparedPair:
        if self._pair is None:
            raise RuntimeError("no pair is set: call Fuser.set_pair(visible, infrared) first")
        return self._pair

    def _load(self, pair: PreparedPair) -> None:
        """Make `pair` the current pair; keep the caches if it is the same pair again."""
        old = self._pair
        if (old is not None and old.shape == pair.shape and np.array_equal(old.ycrcb, pair.ycrcb)
                and np.array_equal(old.infrared, pair.infrared)):
            return
        check_inputs(self._tensor(pair.visible_y), self._tensor(pair.infrared))
        self.reset()
        self._pair = pair

    @torch.inference_mode()
    def _clean_features(self, which: str) -> list[torch.Tensor]:
        """The clean encoder features of modality `which` ("vi" or "ir"), encoded when first needed."""
        if which not in self._feats:
            encoder = self.net.encoder_vi if which == "vi" else self.net.encoder_ir
            image = self._pair.visible_y if which == "vi" else self._pair.infrared
            self._feats[which] = list(encoder(self._tensor(image)))
        return self._feats[which]

    @torch.inference_mode()
    def _ensure_clean(self) -> FusionResult:
        """The clean pass of the current pair, run when first needed."""
        if self._clean is None:
            pair = self._pair
            feats = [list(self._clean_features("vi")), list(self._clean_features("ir"))]
            if not self.keep_features:
                self.release_features()
            fused, gates = self._fuse(feats)
            ones = np.ones(pair.shape, np.float32)
            self._clean = self.build_result(pair, fused.float().cpu(), tuple(g.float().cpu() for g in gates),
                                            pair.visible_y, pair.infrared, (ones, ones.copy()), "none")
        return self._clean

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None].to(self.device)

    def _fuse(self, feats: list, return_cross: bool = False):
        """net.fuse_features on [f_vi, f_ir], a list the caller gives up: it is emptied, and
        on the fast path each level's features are freed once used (a cached list stays
        whole: pass a copy)."""
        f_vi, f_ir = feats.pop(0), feats.pop(0)
        if self._releases:
            return self.net.fuse_features(f_vi, f_ir, return_cross=return_cross, release=True)
        return self.net.fuse_features(f_vi, f_ir, return_cross=return_cross)

    def _features(self, which: str, keep: np.ndarray) -> list[torch.Tensor]:
        """Encoder features of modality `which` ("vi" or "ir") with keep mask `keep`, as a new
        list (its maps may be the cached ones)."""
        encoder = self.net.encoder_vi if which == "vi" else self.net.encoder_ir
        if keep.min() == 1:
            return list(self._clean_features(which))
        if keep.max() == 0:
            return self._zero_features(which, encoder)
        image = self._pair.visible_y if which == "vi" else self._pair.infrared
        x = self._tensor(image * keep)
        if which not in self._feats and not self.keep_features:
            return list(encoder(x))  # no clean features to patch: one full encode costs least
        feats, _ = reencode(encoder, x, lambda: self._clean_features(which), keep != 1, self._geometry[which])
        return feats

    def _zero_features(self, which: str, encoder) -> list[torch.Tensor]:
        """Features of an all-zero image of the current size, expanded from those of a small
        zero image (`reencode.expand_zero_features`, exact), which forks share."""
        h, w = self._pair.shape
        geometry = self._geometry[which]
        key = (which, zero_input_size(h, geometry), zero_input_size(w, geometry))
        small = self._zero_small.get(key)
        if small is None:
            small = self._zero_small[key] = encoder(torch.zeros(1, 1, *key[1:], device=self.device))
        return expand_zero_features(small, h, w, geometry, encoder.pool)


def check_seed(seed):
    """The seed, checked: a non-negative integer, or a sequence of them (e.g. (seed, run));
    anything else is a ValueError naming the seed and what is accepted."""
    def ok(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0

    if isinstance(seed, (np.random.SeedSequence, np.random.Generator, np.random.BitGenerator)):
        return seed
    items = seed if isinstance(seed, (list, tuple)) else [seed]
    if not items or not all(ok(v) for v in items):
        raise ValueError(f"seed must be a non-negative integer (or a sequence of them), got {seed!r}")
    return seed


def _user_mask(mask, h: int, w: int, name: str) -> np.ndarray:
    """A hand-drawn keep mask checked and fitted to (h, w): (H, W) or (H, W, C) (the channels'
    minimum), finite values, clipped to [0, 1]. ImageError names what is wrong."""
    if mask is None:
        return np.ones((h, w), np.float32)
    try:
        mask = np.asarray(mask, np.float32)
    except (TypeError, ValueError):
        raise io.ImageError(f"{name}: expected a numeric (H, W) keep mask in [0, 1]") from None
    if mask.ndim == 3 and mask.shape[2] >= 1:
        mask = mask.min(-1)
    if mask.ndim != 2 or 0 in mask.shape:
        raise io.ImageError(f"{name}: expected an (H, W) keep mask with values in [0, 1], got shape {mask.shape}")
    if not np.isfinite(mask).all():
        raise io.ImageError(f"{name}: the keep mask holds NaN or infinite values; expected values in [0, 1]")
    if mask.shape != (h, w):
        mask = io.resize_to(mask, h, w)
    return np.clip(mask, 0.0, 1.0)


__all__ = ["BatchOutput", "Fuser", "FusionResult", "PreparedPair", "resolve_device"]
