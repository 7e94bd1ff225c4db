"""The convolutional building blocks shared by the encoder, the CFI and the decoder."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNAct(nn.Module):
    """Conv(k x k, same padding, with bias) -> BatchNorm -> LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, negative_slope: float = 0.01):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


def double_conv(in_ch: int, out_ch: int, negative_slope: float = 0.01) -> nn.Sequential:
    """[Conv3x3 -> BN -> LeakyReLU] x 2: one encoder stage or one decoder block."""
    return nn.Sequential(
        ConvBNAct(in_ch, out_ch, 3, negative_slope), ConvBNAct(out_ch, out_ch, 3, negative_slope)
    )


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear upsampling to `ref`'s exact spatial size, so odd sizes need no padding."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
