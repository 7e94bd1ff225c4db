"""The Fuser facade on real pairs: outputs, interventions, seeds, and bad input."""
import numpy as np
import pytest

from ivfusion import INTERVENTIONS, Fuser, FusionResult, ImageError, MaskConfig


@pytest.fixture(scope="module")
def fuser(untrained):
    return Fuser(untrained, device="cpu", max_side=160)


def test_result_fields_shapes_and_ranges(fuser, pairs):
    name, vis, ir = pairs[0]
    r = fuser.fuse(vis, ir)
    assert isinstance(r, FusionResult)
    h, w = r.fused_y.shape
    assert max(h, w) == 160 and "downscaled from 496x301" in r.notices[0]
    assert r.fused_rgb.shape == (h, w, 3) and r.fused_rgb.dtype == np.uint8
    assert r.fused_y.dtype == np.float32 and 0 <= r.fused_y.min() and r.fused_y.max() <= 1
    assert [g.shape for g in r.gates] == [(h // 4, w // 4), (h // 2, w // 2), (h, w)]
    assert r.gates_full.shape == (3, h, w)
    np.testing.assert_allclose(r.gates_full[2], r.gates[2], atol=1e-6)
    assert set(r.inputs) == {"visible_y", "infrared"} and r.intervention == "none"
    assert len(r.gate_means()) == 3


def test_colour_restoration_keeps_visible_chroma(fuser, pairs):
    _, vis, ir = pairs[0]
    r = fuser.fuse(vis, ir)
    pair = fuser.prepare(vis, ir)
    import cv2

    ycc_out = cv2.cvtColor(r.fused_rgb.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
    # chroma is put back (up to 8-bit rounding and clipping in saturated pixels)
    assert np.median(np.abs(ycc_out[..., 1:] - pair.ycrcb[..., 1:])) < 2 / 255
    assert np.abs(ycc_out[..., 0] - r.fused_y).mean() < 2 / 255


@pytest.mark.parametrize("kind", INTERVENTIONS)
def test_inputs_are_what_the_network_saw(fuser, pairs, kind):
    _, vis, ir = pairs[2]
    r = fuser.fuse(vis, ir, kind, seed=3)
    clean = fuser.prepare(vis, ir)
    m_vi, m_ir = r.masks
    np.testing.assert_array_equal(r.inputs["visible_y"], clean.ycrcb[..., 0] * m_vi)
    np.testing.assert_array_equal(r.inputs["infrared"], clean.infrared * m_ir)
    if kind == "drop-vis":
        assert r.inputs["visible_y"].max() == 0
    if kind == "complementary":
        assert not np.any((m_vi == 0) & (m_ir == 0)) and (m_vi == 0).any()


def test_a_seed_fixes_the_result_and_changes_with_it(fuser, pairs):
    _, vis, ir = pairs[1]
    a = fuser.fuse(vis, ir, "random", seed=1)
    b = fuser.fuse(vis, ir, "random", seed=1)
    c = fuser.fuse(vis, ir, "random", seed=2)
    np.testing.assert_array_equal(a.fused_y, b.fused_y)
    assert not np.array_equal(a.masks[0], c.masks[0])


def test_intervention_changes_the_output_where_masked(fuser, pairs):
    _, vis, ir = pairs[1]
    clean = fuser.fuse(vis, ir)
    dropped = fuser.fuse(vis, ir, "drop-ir")
    assert np.abs(clean.fused_y - dropped.fused_y).mean() > 1e-4


def test_hand_drawn_masks_are_applied(fuser, pairs):
    _, vis, ir = pairs[0]
    h, w = fuser.prepare(vis, ir).shape
    hide = np.ones(ir.shape[:2], np.float32)
    hide[:, : ir.shape[1] // 2] = 0  # hide the left half of the IR image, at input size
    r = fuser.fuse(vis, ir, masks=(None, hide))
    assert r.inputs["infrared"][:, : w // 2 - 1].max() == 0
    assert r.masks[0].min() == 1
    with pytest.raises(ImageError, match="keep mask"):
        fuser.fuse(vis, ir, masks=(np.ones((2, 2, 2, 2)), None))


def test_mask_config_is_used(fuser, pairs):
    _, vis, ir = pairs[2]
    r = fuser.fuse(vis, ir, "random", seed=0, mask_config=MaskConfig(mask_size=4, min_holes=1, max_holes=1))
    assert (r.masks[0] == 0).sum() == 16


def test_grey_visible_and_three_channel_ir_work(fuser, pairs):
    _, vis, ir = pairs[0]
    grey = vis.mean(-1).astype(np.uint8)
    r = fuser.fuse(grey, np.dstack([ir] * 3))
    np.testing.assert_array_equal(r.fused_rgb[..., 0], r.fused_rgb[..., 2])


def test_mismatched_sizes_are_an_error_unless_resized(fuser, pairs):
    _, vis, ir = pairs[0]
    small_ir = ir[:200, :300]
    with pytest.raises(ImageError, match=r"infrared image is 300x200 but the visible image is 496x301.*resize_ir=True"):
        fuser.fuse(vis, small_ir)
    r = fuser.fuse(vis, small_ir, resize_ir=True)
    assert any("infrared resized from 300x200" in n for n in r.notices)


@pytest.mark.parametrize(
    "vis, ir, message",
    [
        (np.zeros((10, 10, 5), np.uint8), np.zeros((10, 10), np.uint8), "visible image: 5 channels"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((0, 10), np.uint8), "infrared image: the image is empty"),
        ("not an array", np.zeros((10, 10), np.uint8), "expected a numpy array"),
        (np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), np.uint8), "at least 4x4"),
    ],
)
def test_bad_input_is_named(fuser, vis, ir, message):
    with pytest.raises(ValueError, match=message):
        fuser.fuse(vis, ir)


def test_unknown_intervention_is_named(fuser, pairs):
    _, vis, ir = pairs[0]
    with pytest.raises(ValueError, match="accepted: none, complementary, random, drop-vis, drop-ir"):
        fuser.fuse(vis, ir, "blur")


def test_sixteen_bit_pair(fuser, pairs):
    _, vis, ir = pairs[2]
    r8 = fuser.fuse(vis, ir)
    r16 = fuser.fuse(vis.astype(np.uint16) * 257, ir.astype(np.uint16) * 257)
    assert any("16-bit" in n for n in r16.notices)
    # same pixels up to the 8-bit rounding of the 8-bit pair's downscaling
    assert np.abs(r8.inputs["visible_y"] - r16.inputs["visible_y"]).max() < 1 / 255
