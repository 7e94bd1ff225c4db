"""The Fuser facade on real pairs: outputs, interventions, seeds, feature reuse and bad input."""
import numpy as np
import pytest
import torch

from ivfusion import Fuser, FusionResult, ImageError, MaskConfig
from ivfusion.interventions import INTERVENTIONS

from .helpers import encoder_calls, plain_forward

FP32_TOL = 1e-5  # fast vs reference forward deviate by ~2e-6 (test_fast.py)


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
def test_inputs_and_masks_follow_the_intervention(fuser, pairs, kind):
    _, vis, ir = pairs[2]
    r = fuser.fuse(vis, ir, kind, seed=3)
    clean = fuser.prepare(vis, ir)
    m_vi, m_ir = r.masks
    assert r.intervention == kind
    for m in (m_vi, m_ir):
        assert m.shape == clean.shape and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
    hidden_vi, hidden_ir = m_vi == 0, m_ir == 0
    expected_hidden = {  # which modality loses pixels, and whether the two masks coincide
        "none": (False, False), "complementary": (True, True), "random": (True, True),
        "drop-visible": (True, False), "drop-infrared": (False, True),
    }[kind]
    assert (hidden_vi.any(), hidden_ir.any()) == expected_hidden
    if kind == "complementary":
        assert not (hidden_vi & hidden_ir).any()
    if kind == "random":
        assert np.array_equal(hidden_vi, hidden_ir)
    if kind.startswith("drop-"):
        assert (hidden_vi if kind == "drop-visible" else hidden_ir).all()
    if kind in ("complementary", "random"):
        assert (hidden_vi | hidden_ir).mean() <= MaskConfig().max_fraction
    # the inputs are the clean inputs, zero exactly where hidden
    for name, src, hidden in (("visible_y", clean.visible_y, hidden_vi), ("infrared", clean.infrared, hidden_ir)):
        assert (r.inputs[name][hidden] == 0).all()
        np.testing.assert_array_equal(r.inputs[name][~hidden], src[~hidden])


def test_combined_interventions(fuser, pairs):
    _, vis, ir = pairs[2]
    fuser.set_pair(vis, ir)
    assert fuser.intervene("drop-infrared").intervention == "drop-infrared"
    both = fuser.intervene(["complementary", "drop-infrared"], seed=5)
    assert both.intervention == "complementary+drop-infrared"
    assert both.masks[1].max() == 0 and (both.masks[0] == 0).any()
    # the visible mask is the complementary draw of the same seed: masks multiply in order
    alone = fuser.intervene("complementary", seed=5)
    np.testing.assert_array_equal(both.masks[0], alone.masks[0])


def test_a_seed_fixes_the_result_and_changes_with_it(fuser, pairs):
    _, vis, ir = pairs[1]
    a = fuser.fuse(vis, ir, "random", seed=1)
    b = fuser.fuse(vis, ir, "random", seed=1)
    c = fuser.fuse(vis, ir, "random", seed=2)
    np.testing.assert_array_equal(a.fused_y, b.fused_y)
    assert not np.array_equal(a.masks[0], c.masks[0])


def test_intervention_changes_the_output_where_masked(pairs):
    from ivfusion.hub import DEFAULT_WEIGHTS

    fuser = Fuser(str(DEFAULT_WEIGHTS), device="cpu", max_side=None)
    _, vis, ir = pairs[1]
    clean = fuser.set_pair(vis, ir)
    h, w = clean.fused_y.shape
    keep = np.ones((h, w), np.float32)
    y0, x0 = h // 2 - 24, w // 2 - 24
    keep[y0:y0 + 48, x0:x0 + 48] = 0  # hide a 48x48 square of the infrared image
    diff = np.abs(fuser.intervene("none", masks=(None, keep)).fused_y - clean.fused_y)
    inside = diff[y0:y0 + 48, x0:x0 + 48].mean()
    far = np.ones((h, w), bool)
    far[max(0, y0 - 64):y0 + 112, max(0, x0 - 64):x0 + 112] = False  # 64 px away and more
    assert inside > 0
    assert inside > diff[far].mean()


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
    with pytest.raises(ValueError, match="accepted: none, complementary, random, drop-visible, drop-infrared"):
        fuser.fuse(vis, ir, "blur")


def test_sixteen_bit_pair(fuser, pairs):
    _, vis, ir = pairs[2]
    r8 = fuser.fuse(vis, ir)
    r16 = fuser.fuse(vis.astype(np.uint16) * 257, ir.astype(np.uint16) * 257)
    assert any("16-bit" in n for n in r16.notices)
    # same pixels up to the 8-bit rounding of the 8-bit pair's downscaling
    assert np.abs(r8.inputs["visible_y"] - r16.inputs["visible_y"]).max() < 1 / 255


# ---------------------------------------------------------------- set_pair / intervene


@pytest.fixture(scope="module")
def crops(pairs):
    """A native-size real pair (496x301) and an odd-sized crop of another (131x97)."""
    _, vis, ir = pairs[0]
    _, vis2, ir2 = pairs[1]
    return [(vis, ir), (vis2[41:138, 17:148], ir2[41:138, 17:148])]


@pytest.mark.slow  # every intervention on both paths, several seconds on 2 cores
@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("intervention", [*INTERVENTIONS, ["complementary", "drop-infrared"], ["random", "drop-visible"]])
def test_intervene_equals_a_full_forward_of_the_intervened_inputs(untrained, crops, path, intervention):
    fuser = Fuser(untrained, device="cpu", max_side=None, path=path)
    for seed, (vis, ir) in enumerate(crops):
        fuser.set_pair(vis, ir)
        r = fuser.intervene(intervention, seed=seed)
        fused, gates = plain_forward(untrained, r.inputs["visible_y"], r.inputs["infrared"])
        assert np.abs(r.fused_y - fused).max() < FP32_TOL
        assert max(np.abs(a - b).max() for a, b in zip(r.gates, gates)) < FP32_TOL


@pytest.mark.slow  # several real forwards
def test_reuse_skips_encoder_work(untrained, crops):
    fuser = Fuser(untrained, device="cpu", max_side=None)
    vis, ir = crops[0]
    with encoder_calls(fuser.net) as seen:
        clean = fuser.set_pair(vis, ir)
    h, w = clean.fused_y.shape
    assert seen == {"vi": [(h, w)], "ir": [(h, w)]}
    with encoder_calls(fuser.net) as seen:
        fuser.set_pair(vis, ir)  # the same pair again: nothing runs
        fuser.intervene("none")
    assert seen == {"vi": [], "ir": []}
    with encoder_calls(fuser.net) as seen:
        fuser.intervene("drop-infrared", seed=0)
    # visible reused; the zero image's features come from a small zero image, encoded once
    assert seen["vi"] == [] and len(seen["ir"]) == 1 and seen["ir"][0][0] * seen["ir"][0][1] < h * w / 50
    with encoder_calls(fuser.net) as seen:
        fuser.intervene("drop-infrared", seed=1)
        fuser.intervene("drop-visible")
        fuser.fork().fuse(vis[::-1].copy(), ir[::-1].copy(), "drop-infrared")  # a fork shares them
    assert seen["ir"] == [] and len(seen["vi"]) == 2 and (h, w) in seen["vi"]  # the small zero image once; the fork's visible
    with encoder_calls(fuser.net) as seen:
        r = fuser.intervene("complementary", seed=2)
    # partly hidden inputs: the encoders run on crops around the holes only
    for m in ("vi", "ir"):
        assert seen[m] and all(ch < h or cw < w for ch, cw in seen[m])
        assert sum(ch * cw for ch, cw in seen[m]) < h * w
    assert (r.masks[0] == 0).any() and (r.masks[1] == 0).any()


def test_fuse_with_an_intervention_costs_one_forward(untrained, crops):
    """fuse() leaves the clean pass and the dropped modality's clean features unencoded until
    asked for: a drop costs the infrared encoder pass and one on a small zero image."""
    fuser = Fuser(untrained, device="cpu", max_side=None)
    vis, ir = crops[1]
    with encoder_calls(fuser.net) as seen:
        r = fuser.fuse(vis, ir, "drop-visible")
    assert seen["ir"] == [(97, 131)] and len(seen["vi"]) == 1 and seen["vi"][0] < (97, 131)
    with encoder_calls(fuser.net) as seen:
        clean = fuser.clean  # computed now: only the visible image's clean features are new
    assert seen == {"vi": [(97, 131)], "ir": []}
    fused, _ = plain_forward(untrained, clean.inputs["visible_y"], clean.inputs["infrared"])
    assert np.abs(clean.fused_y - fused).max() < FP32_TOL
    assert np.abs(r.fused_y - clean.fused_y).max() > 0


def test_intervene_batch_matches_intervene(untrained, crops):
    fuser = Fuser(untrained, device="cpu", max_side=None)
    vis, ir = crops[1]
    fuser.set_pair(vis, ir)
    singles = [fuser.intervene(kind, seed=4) for kind in ("complementary", "drop-visible", "random")]
    masks = [r.masks for r in singles] + [(None, None)]
    outs = list(fuser.intervene_batch(masks, batch_pixels=2 * 97 * 131, return_cross=True))
    assert [o.start for o in outs] == [0, 2] and [len(o.masks) for o in outs] == [2, 2]
    fused = torch.cat([o.fused for o in outs])
    for k, r in enumerate(singles):
        assert (fused[k, 0].numpy() - r.fused_y).__abs__().max() < FP32_TOL
    assert (fused[3, 0].numpy() - fuser.clean.fused_y).__abs__().max() < FP32_TOL
    assert [c.shape[-2:] for c in outs[0].cross] == [g.shape for g in fuser.clean.gates]


def test_predictor_state_eta_and_fork(untrained, crops):
    fuser = Fuser(untrained, device="cpu", max_side=None)
    assert fuser.eta == untrained.config.eta
    with pytest.raises(RuntimeError, match="set_pair"):
        fuser.intervene("random")
    vis, ir = crops[1]
    fuser.set_pair(vis, ir)
    other = fuser.fork()
    assert other.net is fuser.net and other.pair is None and fuser.pair is not None
    other.set_pair(*crops[0])
    assert fuser.pair.shape == (97, 131) and other.pair.shape == (301, 496)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_zero_image_features_are_exact(untrained, path):
    """The all-zero image's features, expanded from a small zero image, equal a direct encode
    at sizes with every remainder on the pooling grid."""
    from ivfusion.reencode import Geometry, expand_zero_features, zero_input_size

    fuser = Fuser(untrained, device="cpu", max_side=None, path=path)
    enc = fuser.net.encoder_ir
    geo = Geometry.of(untrained.encoder_ir)
    for h, w in ((203, 157), (96, 128), (5, 4), (130, 255), (301, 42)):
        with torch.inference_mode():
            full = enc(torch.zeros(1, 1, h, w))
            small = enc(torch.zeros(1, 1, zero_input_size(h, geo), zero_input_size(w, geo)))
            got = expand_zero_features(small, h, w, geo, enc.pool)
        assert [t.shape for t in got] == [t.shape for t in full]
        assert max((a - b).abs().max().item() for a, b in zip(got, full)) < 1e-5, (h, w)


def test_without_kept_features_results_are_the_same(untrained, crops):
    vis, ir = crops[1]
    keep = Fuser(untrained, device="cpu", max_side=None)
    lean = Fuser(untrained, device="cpu", max_side=None, keep_features=False)
    a, b = keep.set_pair(vis, ir), lean.set_pair(vis, ir)
    assert np.abs(a.fused_y - b.fused_y).max() < FP32_TOL and lean._feats == {}
    for kind in ("complementary", "drop-visible", ["random", "drop-infrared"]):
        a, b = keep.intervene(kind, seed=3), lean.intervene(kind, seed=3)
        assert np.abs(a.fused_y - b.fused_y).max() < FP32_TOL and lean._feats == {}
    out = list(lean.intervene_batch([a.masks, (None, None)]))
    assert np.abs(out[0].fused[0, 0].numpy() - a.fused_y).max() < FP32_TOL and lean._feats == {}
    keep.release_features()
    assert keep._feats == {} and keep.clean is not None


@pytest.mark.parametrize("side", [(1, 1), (3, 3), (3, 40), (40, 2)])
def test_images_under_the_minimum_size_are_named(fuser, side):
    from ivfusion import ImageError

    h, w = side
    with pytest.raises(ImageError, match=rf"{w}x{h} pixels; ISFuse needs at least 4x4"):
        fuser.set_pair(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8))


@pytest.mark.parametrize("seed", [-1, 1.5, "7", None, True, [1, -2]])
def test_bad_seeds_are_named(fuser, crops, seed):
    fuser.set_pair(*crops[1])
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer .*got"):
        fuser.intervene("random", seed=seed)


def test_a_pair_too_large_for_the_free_memory_is_refused_before_the_forward(untrained, monkeypatch):
    """Issue 19, item 7: `ivfusion fuse --max-side 0` on an 8000x6000 pair passed 10 GB."""
    import ivfusion.predictor as P
    from ivfusion import ImageError

    fuser = P.Fuser(untrained, device="cpu", max_side=None)
    monkeypatch.setattr(P, "available_memory", lambda: 64 * 64 * P.FORWARD_BYTES_PER_PIXEL * 2)  # 2x a 64x64 pass
    ok = fuser.fuse(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    assert ok.fused_rgb.shape == (64, 64, 3)
    with pytest.raises(ImageError, match=r"128x96 pixels: fusing it needs about .* downscale it"):
        fuser.fuse(np.zeros((96, 128, 3), np.uint8), np.zeros((96, 128), np.uint8))


@pytest.mark.parametrize("mask, message", [
    (np.full((8, 8), np.nan, np.float32), "NaN or infinite"), (np.zeros((0, 0), np.float32), "got shape"),
    (np.zeros((8, 8, 0), np.float32), "got shape"), (np.zeros((2, 8, 8, 1), np.float32), "got shape")])
def test_bad_keep_masks_are_named_not_silently_fused(untrained, mask, message):
    from ivfusion import ImageError
    from ivfusion.predictor import Fuser

    fuser = Fuser(untrained, device="cpu")
    fuser.set_pair(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8))
    with pytest.raises(ImageError, match=message):
        fuser.intervene("none", masks=(mask, None))
