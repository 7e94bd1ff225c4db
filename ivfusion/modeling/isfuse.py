"""The ISFuse network: two encoders, a CFI per level and a hierarchical decoder."""
from __future__ import annotations

from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ..config import ISFuseConfig
from .blocks import double_conv
from .cfi import CFI
from .decoder import Decoder
from .encoder import Encoder

MIN_SIDE = 4  # two 2x max-poolings must leave at least one pixel


class ISFuse(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ivfusion",
    tags=["image-fusion", "infrared", "visible", "isfuse"],
    license="mit",
):
    """ISFuse (Wang et al., CVPR 2026) for infrared/visible fusion.

    forward(vis_y, ir) takes the visible luminance and the infrared image, each (B, 1, H, W)
    float in [0, 1], any H, W >= 4, and returns:
      fused: (B, 1, H, W) in [0, 1], the fused luminance;
      gates: the three invariance gate maps, (B, 1, H/4, W/4), (B, 1, H/2, W/2), (B, 1, H, W)
             (floored sizes), coarsest first, each in [0, 1].
    As a PyTorchModelHubMixin it has `save_pretrained`, `from_pretrained` and `push_to_hub`
    (model.safetensors + config.json).
    """

    def __init__(self, config: ISFuseConfig | dict | None = None):
        super().__init__()
        if isinstance(config, dict):  # from config.json via PyTorchModelHubMixin.from_pretrained
            config = ISFuseConfig.from_dict(config)
        self.config = config = config or ISFuseConfig()
        c, s = config.dim, config.negative_slope
        self.encoder_vi = Encoder(c, s)
        # A shared (Siamese) encoder is the same module under both names; state dicts then
        # hold it once per name, which load_state_dict handles.
        self.encoder_ir = self.encoder_vi if config.shared_encoder else Encoder(c, s)
        self.cfis = nn.ModuleList([CFI(c, config.r, config.gate_dim, s) for _ in range(3)])
        self.decoder = Decoder(c, s)
        if config.with_unused:
            from .blocks import ConvBNAct

            self.unused = nn.ModuleDict(
                {
                    "adjust_channels3": ConvBNAct(2 * c, c, 1, s),
                    "module4": double_conv(c, c, s),
                    "module5": double_conv(c, c, s),
                }
            )

    def forward(self, vis_y: Tensor, ir: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        return self.fuse_features(*self.encode(vis_y, ir))

    def encode(self, vis_y: Tensor, ir: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The two encoders' features (f_vi, f_ir), each a list of three (B, C, h, w) maps at
        H, H/2 and H/4 (floored), finest first. Each encoder sees only its own modality, so a
        caller that changes one input may reuse the other's features. Inputs as for `forward`."""
        check_inputs(vis_y, ir)
        return self.encoder_vi(vis_y), self.encoder_ir(ir)

    def fuse_features(
        self, f_vi: list[Tensor], f_ir: list[Tensor], return_cross: bool = False
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]] | tuple[Tensor, tuple, tuple]:
        """Everything after the encoders: a CFI per level (coarse to fine) and the decoder.

        Returns (fused, gates) as `forward` does; with return_cross=True also the three CFIs'
        cross-attended features (B, C, h, w), coarsest first, as a third item.
        """
        psi, gates, crosses = [], [], []
        for cfi, level in zip(self.cfis, (2, 1, 0)):  # coarse to fine
            p, g, cross = cfi.forward_with_cross(f_vi[level], f_ir[level])
            psi.append(p)
            gates.append(g)
            crosses.append(cross)
        fused = self.decoder(psi)
        return (fused, tuple(gates), tuple(crosses)) if return_cross else (fused, tuple(gates))

    def num_parameters(self, used_only: bool = True) -> int:
        """Parameters of the forward path, or of every module (as the paper counts)."""
        params = {id(p): p for n, p in self.named_parameters() if not (used_only and n.startswith("unused."))}
        return sum(p.numel() for p in params.values())


def check_inputs(vis_y: Tensor, ir: Tensor) -> None:
    """Raise a ValueError that names the problem for inputs the network cannot take."""
    for name, t in (("vis_y", vis_y), ("ir", ir)):
        if t.dim() != 4 or t.shape[1] != 1:
            raise ValueError(f"{name} must be (B, 1, H, W) luminance, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [0, 1], got {t.dtype}")
    if vis_y.shape != ir.shape:
        raise ValueError(
            f"vis_y and ir must have the same shape, got {tuple(vis_y.shape)} and {tuple(ir.shape)}"
        )
    if min(vis_y.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {tuple(vis_y.shape[-2:])}")
