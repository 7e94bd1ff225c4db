"""`Fuser`: numpy images in, fused image and invariance gates out (segment-anything's Predictor)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import io
from .hub import describe, load_model
from .interventions import KINDS, MaskConfig, apply_masks, sample_masks
from .modeling import ISFuse

DEFAULT_MAX_SIDE = 2048


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but this torch build sees no CUDA GPU; use 'cpu' or 'auto'")
    return device


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


@dataclass
class FusionResult:
    """What `Fuser.fuse` returns. Every array is (H, W[, C]) at the (possibly downscaled) input size.

    fused_rgb: (H, W, 3) uint8, the fused luminance with the visible Cr/Cb put back.
    fused_y: (H, W) float32 in [0, 1], the network's fused luminance.
    gates: the three invariance gate maps at native size, coarsest first:
        (H/4, W/4), (H/2, W/2), (H, W), float32 in [0, 1].
    gates_full: (3, H, W) float32 in [0, 1], the same gates bilinearly resized to (H, W).
    inputs: the exact network inputs, after any intervention: {"visible_y", "infrared"},
        each (H, W) float32 in [0, 1].
    masks: keep masks (M_vi, M_ir), (H, W) float32, 1 = kept, 0 = hidden.
    visible_rgb: (H, W, 3) uint8, the visible image as processed.
    intervention: the intervention applied ("none" if none).
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


class Fuser:
    """Fuse registered infrared/visible numpy images with ISFuse.

    model: an ISFuse module, or a weights spec for `load_model` (None: the bundled default).
    device: "auto" (CUDA if available), "cpu" or "cuda".
    max_side: images whose longer side exceeds this are downscaled, with a notice.
    path: the inference path (`ivfusion.fast`): "auto" (default: the fastest path that holds
        the 2/255 deviation bound on this device), "reference" (the modules in
        ivfusion.modeling, op by op as the authors' forward pass), "fast" (fp32 fast path) or
        "fast-bf16". The fast paths copy the weights: after changing `model`'s weights, build a
        new Fuser (or call `set_path`).
    """

    def __init__(self, model: ISFuse | str | None = None, device: str | torch.device = "auto",
                 max_side: int | None = DEFAULT_MAX_SIDE, path: str = "auto"):
        self.device = resolve_device(device)
        self.model = (model if isinstance(model, torch.nn.Module) else load_model(model)).to(self.device).eval()
        self.max_side = max_side
        self.set_path(path)

    def set_path(self, path: str = "auto") -> None:
        """Choose the module that runs inference, `self.net`: (vis_y, ir) -> (fused, gates)."""
        from .fast import make_net

        self.net, self.path = make_net(self.model, self.device, path)

    @property
    def weights_source(self) -> str:
        return describe(self.model)

    def prepare(self, visible: np.ndarray, infrared: np.ndarray, resize_ir: bool = False) -> PreparedPair:
        """Validate and convert a pair. IR of another size than the visible image is an error
        unless resize_ir=True, which resizes it to the visible size (with a notice)."""
        notices: list[str] = []
        vis_arr = io._check_array(visible, "visible image")
        ir_arr = io._check_array(infrared, "infrared image")
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
            notices.append(note)
            ir_arr = io.resize_to(ir_arr, *vis_arr.shape[:2])
        ycrcb = io.visible_to_ycrcb(vis_arr)
        ir, ir_notes = io.infrared_to_grey(ir_arr)
        rgb = io.restore_colour(ycrcb[..., 0], ycrcb)
        return PreparedPair(ycrcb, ir, rgb, notices + ir_notes)

    @torch.inference_mode()
    def run(self, vis_y: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The batched network call: (B, 1, H, W) tensors in [0, 1] -> (fused, gates) on CPU, float32."""
        fused, gates = self.net(vis_y.to(self.device), ir.to(self.device))
        return fused.float().cpu(), tuple(g.float().cpu() for g in gates)

    def fuse(
        self,
        visible: np.ndarray,
        infrared: np.ndarray,
        intervention: str | None = None,
        seed: int = 0,
        *,
        masks: tuple[np.ndarray | None, np.ndarray | None] | None = None,
        mask_config: MaskConfig = MaskConfig(),
        resize_ir: bool = False,
    ) -> FusionResult:
        """Fuse one pair.

        visible: (H, W, 3) RGB or (H, W) grey, uint8/uint16 or float in [0, 1] (RGBA: alpha dropped).
        infrared: (H, W) grey or (H, W, 3), uint8/uint16 or float in [0, 1].
        intervention: None/"none", "complementary", "random", "drop-vis" or "drop-ir", drawn
            with `seed` and `mask_config`.
        masks: optional hand-drawn keep masks (M_vi, M_ir) at the input size, values in [0, 1]
            (1 keeps, 0 hides); either may be None. They multiply any intervention's masks.
        """
        kind = intervention or "none"
        if kind not in KINDS:
            raise ValueError(f"unknown intervention {kind!r}; accepted: {', '.join(KINDS)}")
        pair = self.prepare(visible, infrared, resize_ir=resize_ir)
        h, w = pair.shape
        m_vi, m_ir = sample_masks(kind, h, w, seed, mask_config)
        if masks is not None:
            m_vi, m_ir = (m * _user_mask(u, h, w, name) for m, u, name in
                          ((m_vi, masks[0], "visible mask"), (m_ir, masks[1], "infrared mask")))
        vis_y, ir = apply_masks(pair.ycrcb[..., 0], pair.infrared, m_vi, m_ir)
        fused, gates = self.run(torch.from_numpy(vis_y)[None, None], torch.from_numpy(ir)[None, None])
        return self.build_result(pair, fused, gates, vis_y, ir, (m_vi, m_ir), kind)

    @staticmethod
    def build_result(pair: PreparedPair, fused, gates, vis_y, ir, masks, kind: str) -> FusionResult:
        """A FusionResult from one network output: fused (1, 1, H, W) and gates (1, 1, h, w)
        tensors (as `run` returns them, sliced to one item), the inputs fed (H, W) and the
        keep masks. For callers that batch several passes through `run` themselves."""
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


def _user_mask(mask, h: int, w: int, name: str) -> np.ndarray:
    if mask is None:
        return np.ones((h, w), np.float32)
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 3:
        mask = mask.min(-1)
    if mask.ndim != 2:
        raise io.ImageError(f"{name}: expected an (H, W) keep mask, got shape {mask.shape}")
    if mask.shape != (h, w):
        mask = io.resize_to(mask, h, w)
    return np.clip(mask, 0.0, 1.0)
