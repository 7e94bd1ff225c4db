"""The per-modality feature encoder."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import double_conv


class Encoder(nn.Module):
    """Three stages at H, H/2 and H/4, each `double_conv`, with MaxPool2d(2) between them.

    Max-pooling floors odd sizes (an H of 301 gives 150 and 75), as the reference does.
    Input (B, 1, H, W) in [0, 1]; returns the three feature maps, finest first.
    """

    def __init__(self, dim: int = 32, negative_slope: float = 0.01):
        super().__init__()
        self.stages = nn.ModuleList(
            [double_conv(1 if k == 0 else dim, dim, negative_slope) for k in range(3)]
        )

    pool = 2  # the max-pooling factor between stages

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for k, stage in enumerate(self.stages):
            if k:
                x = F.max_pool2d(x, self.pool)
            x = stage(x)
            feats.append(x)
        return feats

    def stage_radii(self) -> list[int]:
        """How far each stage's convolutions reach, in that stage's pixels (the sum of kernel // 2
        over its convolutions). With `pool`, this fixes the encoder's locality, which lets
        a caller recompute the features of a changed region exactly from a crop."""
        return [sum(m.kernel_size[0] // 2 for m in stage.modules() if isinstance(m, nn.Conv2d)) for stage in self.stages]
