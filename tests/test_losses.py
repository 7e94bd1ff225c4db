"""Each loss term on hand-made tensors whose value is worked out by hand in the comments."""
import math

import pytest
import torch

from ivfusion import losses


def full(value, size=4):
    return torch.full((1, 1, size, size), float(value))


def test_laplacian_of_a_delta_is_the_kernel():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    lap = losses.laplacian(x)[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = torch.tensor([[1.0, 1, 1], [1, -8, 1], [1, 1, 1]])
    torch.testing.assert_close(lap, expected)


def test_fusion_loss_by_hand():
    # F = 0.5, IR = 0, VI = 1 on 4x4 with zero padding: intensity terms 0.5 + 0.5.
    # |Lap c| = 5c at the 4 corners (3 neighbours - 8), 3c at the 8 edge pixels, 0 inside;
    # target max(|Lap IR|, |Lap VI|) = VI's. L1 = (4 * |2.5 - 5| + 8 * |1.5 - 3|) / 16 = 1.375.
    value = losses.fusion_loss(full(0.5), full(0.0), full(1.0), lambda1=1.0)
    assert value.item() == pytest.approx(1.0 + 1.375)
    assert losses.fusion_loss(full(0.5), full(0.0), full(1.0), lambda1=0.0).item() == pytest.approx(1.0)


def test_mean_gate_upsamples_then_averages():
    gates = (torch.full((1, 1, 2, 2), 0.2), torch.full((1, 1, 4, 4), 0.4), torch.full((1, 1, 8, 8), 0.6))
    g = losses.mean_gate(gates, (8, 8))
    assert g.shape == (1, 1, 8, 8)
    torch.testing.assert_close(g, torch.full((1, 1, 8, 8), 0.4))


def test_gate_regulariser_by_hand():
    # G = 0.5: |0.5 - 0.3| - ln 2 ; G = 0.3 on half, 0.3 elsewhere: |0.3 - 0.3| - H(0.3)
    assert losses.gate_regulariser(full(0.5), 0.3).item() == pytest.approx(0.2 - math.log(2), abs=1e-6)
    h03 = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert losses.gate_regulariser(full(0.3), 0.3).item() == pytest.approx(-h03, abs=1e-6)
    # per image, then batch mean: images at 0.5 and 0.3
    batch = torch.cat([full(0.5), full(0.3)])
    assert losses.gate_regulariser(batch, 0.3).item() == pytest.approx((0.2 - math.log(2) - h03) / 2, abs=1e-6)
    # saturated gates are clamped, not NaN
    assert torch.isfinite(losses.gate_regulariser(full(1.0), 0.3))


def levels(coarse, mid, fine, size=8):
    return (torch.full((1, 1, size // 4, size // 4), coarse), torch.full((1, 1, size // 2, size // 2), mid),
            torch.full((1, 1, size, size), fine))


def test_intervention_loss_by_hand():
    # |F_d - F| = 0.2 everywhere, all gates 0.5: 0.2 * 0.5 + (0.2 - ln 2), same for both d.
    f, f_d, g = full(0.0, 8), full(0.2, 8), levels(0.5, 0.5, 0.5)
    value = losses.intervention_loss(f, [f_d, f_d], [g, g], eta=0.3)
    assert value.item() == pytest.approx(0.1 + 0.2 - math.log(2), abs=1e-6)
    # where the gate is closed, a changed output costs nothing but R
    shut = levels(1e-9, 1e-9, 1e-9)
    closed = losses.intervention_loss(f, [f_d], [shut], eta=0.3).item()
    assert closed == pytest.approx(losses.gate_regulariser(full(1e-9), 0.3).item(), abs=1e-6)


def h(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_aggregated_and_per_level_regularisers_differ_by_hand():
    # levels 0.1 / 0.3 / 0.5, F unchanged (no consistency cost). Aggregated: G_bar = 0.3
    # everywhere, R = 0 - H(0.3). Per level: mean of |0.1-0.3| - H(0.1), -H(0.3), |0.5-0.3| - H(0.5).
    f, g = full(0.0, 8), levels(0.1, 0.3, 0.5)
    agg = losses.intervention_loss(f, [f], [g], eta=0.3, regulariser="aggregated").item()
    per = losses.intervention_loss(f, [f], [g], eta=0.3, regulariser="per-level").item()
    assert agg == pytest.approx(-h(0.3), abs=1e-5)
    assert per == pytest.approx((0.2 - h(0.1) - h(0.3) + 0.2 - h(0.5)) / 3, abs=1e-5)
    area = losses.intervention_loss(f, [f], [levels(0.2, 0.2, 0.2)], eta=0.3, regulariser="area-only").item()
    assert area == pytest.approx(0.1, abs=1e-6)  # |0.2 - 0.3|, no entropy
    with pytest.raises(ValueError, match="accepted: aggregated, per-level, area-only"):
        losses.intervention_loss(f, [f], [g], regulariser="mean")


def test_a_constant_gate_at_eta_minimises_the_regulariser():
    # the reason R cannot make gates structured: at a fixed mean 0.3, any spread lowers H
    flat = losses.gate_regulariser(full(0.3, 8), 0.3).item()
    two_valued = torch.full((1, 1, 8, 8), 0.1)
    two_valued[..., :4, :] = 0.5  # mean still 0.3
    assert losses.gate_regulariser(two_valued, 0.3).item() > flat + 0.05


def test_necessity_loss_by_hand():
    f, f_ir, f_vi = full(0.5), full(0.2), full(0.9)
    assert losses.necessity_loss(f, f_ir, f_vi).item() == pytest.approx(0.3 + 0.4)
    assert losses.necessity_loss(f, f_ir, f_vi, "contribution").item() == pytest.approx(0.0)
    assert losses.necessity_loss(f, full(0.45), f_vi, "contribution", margin=0.1).item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="accepted: reference, contribution"):
        losses.necessity_loss(f, f_ir, f_vi, "other")


def test_total_loss_weights():
    assert losses.total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)).item() == pytest.approx(
        1 + 0.1 * 2 + 0.05 * 3)
