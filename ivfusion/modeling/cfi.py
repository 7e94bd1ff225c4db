"""The Causal Feature Integrator (CFI): pooled cross-attention plus an invariance gate."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvBNAct


class PooledCrossAttention(nn.Module):
    """Bidirectional single-head cross-attention against an r x r pooled grid of keys/values.

    Queries stay at full resolution; keys and values are adaptive-average-pooled to r x r, so
    every query attends to r*r tokens and the cost is linear in H*W. Visible queries attend to
    IR keys/values and IR queries to visible ones; `cross` is the sum of both directions:
        cross = A(Q_vi, K_ir, V_ir) + A(Q_ir, K_vi, V_vi),  A(Q, K, V) = softmax(Q^T K / sqrt(C)) V.
    """

    def __init__(self, dim: int = 32, r: int = 8):
        super().__init__()
        self.r = r
        self.q_vi, self.k_vi, self.v_vi = (nn.Conv2d(dim, dim, 1) for _ in range(3))
        self.q_ir, self.k_ir, self.v_ir = (nn.Conv2d(dim, dim, 1) for _ in range(3))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, w = q.shape
        k = F.adaptive_avg_pool2d(k, self.r).flatten(2)  # B, C, r*r
        v = F.adaptive_avg_pool2d(v, self.r).flatten(2)
        q = q.flatten(2).transpose(1, 2)  # B, HW, C
        attn = torch.softmax(q @ k / math.sqrt(c), dim=-1)  # B, HW, r*r
        return (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        return self._attend(self.q_vi(f_vi), self.k_ir(f_ir), self.v_ir(f_ir)) + self._attend(
            self.q_ir(f_ir), self.k_vi(f_vi), self.v_vi(f_vi)
        )


class InvarianceGate(nn.Module):
    """The invariance gate g in [0, 1], one value per pixel, computed from `cross`.

    g = Sigmoid(Conv1x1(16->1)(LeakyReLU(BN(Conv3x3(32->16)(cross))))). L_inv charges the
    output's change under an intervention, |F_d - F|, weighted by the gates of that intervened
    pass, so training pays for an open gate where the output moves. The paper reads an open
    gate as marking intervention-stable cross-modal features; whether trained gates do so more
    than an untrained network's is measured by `ivfusion study` (docs/STUDY.md), not assumed.
    """

    def __init__(self, dim: int = 32, gate_dim: int = 16, negative_slope: float = 0.01):
        super().__init__()
        self.block = ConvBNAct(dim, gate_dim, 3, negative_slope)
        self.proj = nn.Conv2d(gate_dim, 1, 1)

    def forward(self, cross: Tensor) -> Tensor:
        return torch.sigmoid(self.proj(self.block(cross)))


class GatedMix(nn.Module):
    """The CFI's gated combination g * cross + (1 - g) * local, with local = f_vi + f_ir the
    plain sum of the two modalities' features. No parameters; a module of its own so that the
    fast path (ivfusion.fast) can swap in an in-place form."""

    def forward(self, cross: Tensor, g: Tensor, f_vi: Tensor, f_ir: Tensor) -> Tensor:
        local = f_vi + f_ir
        return g * cross + (1 - g) * local


class CFI(nn.Module):
    """Causal Feature Integrator at one level: fused = refine(g * cross + (1 - g) * local).

    local = f_vi + f_ir is the plain combination; the gate decides per pixel how much of the
    cross-attended features replaces it. Returns the fused features and the gate map (B,1,h,w).
    """

    def __init__(self, dim: int = 32, r: int = 8, gate_dim: int = 16, negative_slope: float = 0.01):
        super().__init__()
        self.attention = PooledCrossAttention(dim, r)
        self.gate = InvarianceGate(dim, gate_dim, negative_slope)
        self.mix = GatedMix()
        self.refine = ConvBNAct(dim, dim, 3, negative_slope)

    def forward(self, f_vi: Tensor, f_ir: Tensor) -> tuple[Tensor, Tensor]:
        fused, g, _ = self.forward_with_cross(f_vi, f_ir)
        return fused, g

    def forward_with_cross(self, f_vi: Tensor, f_ir: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(fused, g, cross): also the cross-attended features (B, C, h, w) that the gate reads,
        for analyses of how they change under interventions."""
        cross = self.attention(f_vi, f_ir)
        g = self.gate(cross)
        return self.refine(self.mix(cross, g, f_vi, f_ir)), g, cross
