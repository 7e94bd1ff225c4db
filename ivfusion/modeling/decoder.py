"""The hierarchical decoder that merges the three CFI outputs from coarse to fine."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import double_conv, upsample_to


class Decoder(nn.Module):
    """x3 = Psi_3; x2 = D4(up(x3) + Psi_2); x1 = D5(up(x2) + Psi_1); F = Sigmoid(Conv3x3(x1)).

    `up` is bilinear to the next level's exact size. Algorithm 1 writes Psi_2 = CFI + D(Psi_3)
    (decode, then add); this adds, then decodes, as the authors' test.py does and their
    checkpoint needs. The output layer is 3x3 as in the released checkpoint (Algorithm 1
    writes 1x1).
    """

    def __init__(self, dim: int = 32, negative_slope: float = 0.01):
        super().__init__()
        self.blocks = nn.ModuleList([double_conv(dim, dim, negative_slope) for _ in range(2)])
        self.head = nn.Conv2d(dim, 1, 3, padding=1)

    def forward(self, psi: list[Tensor]) -> Tensor:
        """psi: the CFI outputs, coarsest (H/4) first. Returns (B, 1, H, W) in [0, 1]."""
        x = psi[0]
        for block, skip in zip(self.blocks, psi[1:]):
            x = block(upsample_to(x, skip) + skip)
        return torch.sigmoid(self.head(x))
