"""The ISFuse training objective (Algorithm 1 of the supplementary; reference-code forms).

    L = L_f + alpha * L_inv + beta * L_nec        (alpha = 0.1, beta = 0.05)

All images are (B, 1, H, W) in [0, 1]; "L1(a, b)" is mean(|a - b|) over every element.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LAPLACIAN = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]]).view(1, 1, 3, 3)
_ENTROPY_EPS = 1e-6


def laplacian(x: Tensor) -> Tensor:
    """8-neighbour Laplacian [[1,1,1],[1,-8,1],[1,1,1]], zero padding, same size."""
    return F.conv2d(x, _LAPLACIAN.to(x), padding=1)


def fusion_loss(fused: Tensor, ir: Tensor, vis_y: Tensor, lambda1: float = 1.0) -> Tensor:
    """L_f = L1(F, IR) + L1(F, VI) + lambda1 * L1(|Lap F|, max(|Lap IR|, |Lap VI|)).

    The intensity terms pull F towards both sources; the gradient term asks F to keep the
    stronger edge of the two at every pixel.
    """
    edge_target = torch.maximum(laplacian(ir).abs(), laplacian(vis_y).abs())
    return (
        F.l1_loss(fused, ir)
        + F.l1_loss(fused, vis_y)
        + lambda1 * F.l1_loss(laplacian(fused).abs(), edge_target)
    )


def mean_gate(gates: tuple[Tensor, ...] | list[Tensor], size: tuple[int, int]) -> Tensor:
    """G_bar: the mean of the gate maps, each bilinearly upsampled to `size` (H, W)."""
    up = [F.interpolate(g, size=size, mode="bilinear", align_corners=False) for g in gates]
    return torch.stack(up).mean(0)


def gate_regulariser(g_bar: Tensor, eta: float = 0.3) -> Tensor:
    """R(G) = |mean(G) - eta| - H(G), per image, then averaged over the batch.

    eta is the target share of gate activation (0.3: gates open on about 30% of the evidence).
    H is the binary entropy in nats, g clamped to [1e-6, 1 - 1e-6], averaged over pixels (the
    authors' form). Note what it rewards: for a given mean, the pixel-averaged entropy is
    largest when every pixel equals that mean (Jensen), so R alone is minimised by a constant
    gate at eta; spatial structure can only come from the consistency term and from L_f.
    """
    g = g_bar.flatten(1).clamp(_ENTROPY_EPS, 1 - _ENTROPY_EPS)
    entropy = -(g * g.log() + (1 - g) * (1 - g).log()).mean(1)
    return ((g.mean(1) - eta).abs() - entropy).mean()


REGULARISERS = ("aggregated", "per-level", "area-only")


def intervention_loss(
    fused: Tensor,
    intervened: list[Tensor],
    intervened_gates: list[tuple[Tensor, ...]],
    eta: float = 0.3,
    regulariser: str = "aggregated",
) -> Tensor:
    """L_inv = mean over d in {complementary, random} of mean(|F_d - F| * G_bar_d) + R(.).

    F_d is the output under intervention d and intervened_gates[d] that pass's three gate
    maps (coarsest first); G_bar_d is their mean at full size (`mean_gate`). An output that
    changes where the gate is open (claims stability) is penalised. The clean output F is not
    detached: the term's gradient reaches the clean pass as well as the intervened one (the
    paper does not say; docs/TRAINING.md).
    regulariser: "aggregated" (the authors' code): R(G_bar_d); "per-level": the mean over the
    three levels of R(G_d^level) at each level's own size, so no level can stay flat behind
    the average; "area-only": |mean(G_bar_d) - eta| without the entropy term, which (see
    gate_regulariser) is what rewards a flat gate.
    """
    if regulariser not in REGULARISERS:
        raise ValueError(f"unknown regulariser {regulariser!r}; accepted: {', '.join(REGULARISERS)}")
    terms = []
    for f_d, gates in zip(intervened, intervened_gates, strict=True):
        g_bar = mean_gate(gates, fused.shape[-2:])
        if regulariser == "aggregated":
            reg = gate_regulariser(g_bar, eta)
        elif regulariser == "area-only":
            reg = (g_bar.flatten(1).mean(1) - eta).abs().mean()
        else:
            reg = torch.stack([gate_regulariser(g, eta) for g in gates]).mean()
        terms.append(((f_d - fused).abs() * g_bar).mean() + reg)
    return torch.stack(terms).mean()


NECESSITY_VARIANTS = ("reference", "contribution")


def necessity_loss(
    fused: Tensor, ir_only: Tensor, vis_only: Tensor, variant: str = "reference", margin: float = 0.1
) -> Tensor:
    """L_nec from the two modality-dropout outputs F_ir-only = f(0, IR), F_vi-only = f(VI, 0).

    "reference" (default, the authors' code): L1(F, F_ir-only) + L1(F, F_vi-only), which keeps
    the output usable when one modality is missing.
    "contribution" (the paper's wording, that each modality must contribute something of its
    own): sum over the two of relu(margin - L1(F, F_x-only)), which penalises a fused output
    that one modality alone already reproduces. Untested in training: no run has used it, and
    only its formula is tested (tests/test_losses.py); kept as the one reading of the text.
    """
    d_ir, d_vi = F.l1_loss(fused, ir_only), F.l1_loss(fused, vis_only)
    if variant == "reference":
        return d_ir + d_vi
    if variant == "contribution":
        return F.relu(margin - d_ir) + F.relu(margin - d_vi)
    raise ValueError(f"unknown necessity variant {variant!r}; accepted: {', '.join(NECESSITY_VARIANTS)}")


def total_loss(
    l_f: Tensor, l_inv: Tensor, l_nec: Tensor, alpha: float = 0.1, beta: float = 0.05
) -> Tensor:
    """L = L_f + alpha * L_inv + beta * L_nec."""
    return l_f + alpha * l_inv + beta * l_nec
