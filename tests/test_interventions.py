"""Interventions: complementary masks are disjoint, areas bounded, everything seeded; each mask
style against expectations written here from its rule, not from the sampler."""
import numpy as np
import pytest

from ivfusion.interventions import (INTERVENTIONS, MASK_STYLES, MAX_HOLES, Intervention, MaskConfig,
                                    get_intervention, sample_masks)

SIZES = [(64, 64), (37, 91), (240, 320), (20, 20), (8, 30)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("disk_prob", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("style", ["disjoint", "authors-code"])
def test_complementary_masks_never_hide_the_same_pixel(size, disk_prob, style):
    cfg = MaskConfig(disk_prob=disk_prob, style=style)
    for seed in range(40):
        m_vi, m_ir = sample_masks("complementary", *size, seed, cfg)
        assert not np.any((m_vi == 0) & (m_ir == 0))
        assert (m_vi == 0).any() and (m_ir == 0).any()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["complementary", "random"])
@pytest.mark.parametrize("style", ["disjoint", "authors-code"])
def test_masked_area_is_at_most_half_and_within_hole_counts(size, kind, style):
    h, w = size
    side = min(16, h, w, int((0.5 * h * w / (2 if kind == "complementary" and style == "disjoint" else 1)) ** 0.5))
    for seed in range(40):
        masks = sample_masks(kind, h, w, seed, MaskConfig(style=style))
        for m in masks:
            hidden = int((m == 0).sum())
            assert 0 < hidden <= 0.5 * h * w
            assert hidden <= 6 * side * side
            assert set(np.unique(m)) <= {0.0, 1.0} and m.dtype == np.float32
        assert ((masks[0] == 0) | (masks[1] == 0)).sum() <= 0.5 * h * w


@pytest.mark.parametrize("style", ["disjoint", "supplementary"])
def test_the_square_styles_draw_16_pixel_squares_only(style):
    # one hole per mask: whatever the seed, it is one 16x16 square (the authors' code's disks
    # are the authors-code style's, tested below in their proportion)
    for seed in range(100):
        m, _ = sample_masks("random", 200, 200, seed, MaskConfig(min_holes=1, max_holes=1, style=style))
        ys, xs = np.nonzero(m == 0)
        assert len(ys) == 256 and np.ptp(ys) == 15 and np.ptp(xs) == 15, seed


def test_number_of_holes_follows_the_config():
    areas = {int((sample_masks("random", 400, 400, s, MaskConfig(min_holes=3, max_holes=3))[0] == 0).sum())
             for s in range(10)}
    assert max(areas) == 3 * 256  # three separate holes happen; never more than three
    assert min(areas) >= 256


def test_random_mask_is_shared_and_dropouts_zero_one_modality():
    m_vi, m_ir = sample_masks("random", 50, 60, 1)
    np.testing.assert_array_equal(m_vi, m_ir)
    vi0, ir1 = sample_masks("drop-visible", 50, 60, 1)
    assert vi0.max() == 0 and ir1.min() == 1
    vi1, ir0 = sample_masks("drop-infrared", 50, 60, 1)
    assert vi1.min() == 1 and ir0.max() == 0
    a, b = sample_masks("none", 5, 5, 1)
    assert a.min() == 1 and b.min() == 1


@pytest.mark.parametrize("kind", list(INTERVENTIONS))
def test_a_seed_fixes_every_mask(kind):
    a = sample_masks(kind, 64, 96, 123)
    b = sample_masks(kind, 64, 96, 123)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_give_different_masks():
    masks = {sample_masks("complementary", 64, 96, s)[0].tobytes() for s in range(10)}
    assert len(masks) == 10


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown intervention 'mask'; accepted: none, complementary"):
        sample_masks("mask", 8, 8)
    with pytest.raises(ValueError, match="min_holes"):
        MaskConfig(min_holes=4, max_holes=2)
    with pytest.raises(ValueError, match="mask_size"):
        MaskConfig(mask_size=0)


def test_registry_names_and_labels():
    import ivfusion

    assert list(INTERVENTIONS) == ["none", "complementary", "random", "drop-visible", "drop-infrared"]
    assert ivfusion.INTERVENTIONS is INTERVENTIONS  # one registry, one name
    assert [n for n, iv in INTERVENTIONS.items() if iv.masking] == ["complementary", "random"]
    assert [iv.label for iv in INTERVENTIONS.values()] == [
        "none", "complementary masking", "random masking", "drop visible", "drop infrared"]
    for removed in ("drop-vis", "drop-ir"):  # the 0.1 spellings are gone
        with pytest.raises(ValueError, match="unknown intervention"):
            get_intervention(removed)
    with pytest.raises(ValueError, match="accepted: none, complementary, random, drop-visible, drop-infrared"):
        get_intervention("drop-both")
    with pytest.raises(Exception):  # frozen
        INTERVENTIONS["none"].name = "x"
    assert isinstance(INTERVENTIONS["random"], Intervention)




def test_authors_code_holes_are_16_pixel_squares_or_radius_8_disks_in_the_authors_proportion():
    # one hole per mask on a large image: its pixel count says which shape it is
    cfg = MaskConfig(style="authors-code", min_holes=1, max_holes=1)
    yy, xx = np.mgrid[-8:9, -8:9]
    disk_area = int(((yy ** 2 + xx ** 2) <= 64).sum())  # 197: radius 8 around a pixel centre
    shapes = []
    for seed in range(300):
        m, same = sample_masks("random", 300, 300, seed, cfg)
        np.testing.assert_array_equal(m, same)  # random masking: one mask for both modalities
        hidden = m == 0
        ys, xs = np.nonzero(hidden)
        if hidden.sum() == 256:
            assert np.ptp(ys) == 15 and np.ptp(xs) == 15
            shapes.append("square")
        else:
            assert hidden.sum() == disk_area and np.ptp(ys) == 16 and np.ptp(xs) == 16
            shapes.append("disk")
    share = shapes.count("square") / len(shapes)
    assert 0.62 < share < 0.78  # p = 0.7; 300 draws give a standard error of 0.026


def test_authors_code_complementary_masks_are_independent_and_a_coin_splits_the_overlap():
    # With many large holes the two masks overlap often; each overlapping pixel goes back to
    # one modality, about half of them to each. Independence: the masks' holes are not kept apart.
    cfg = MaskConfig(style="authors-code", mask_size=32, min_holes=6, max_holes=6, disk_prob=0.0, max_fraction=1.0)
    given_to_vi = given_to_ir = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        a, b = sample_masks("complementary", 96, 96, rng, cfg)
        assert not np.any((a == 0) & (b == 0))
        # rebuild the overlap: the same draws without the coin, from the same seed
        rng = np.random.default_rng(seed)
        from ivfusion.interventions import _authors_code_mask

        raw_vi = _authors_code_mask(96, 96, rng, cfg, share=0.5, masks=2)
        raw_ir = _authors_code_mask(96, 96, rng, cfg, hidden=raw_vi == 0, masks=2)
        both = (raw_vi == 0) & (raw_ir == 0)
        given_to_vi += int((a[both] == 1).sum())
        given_to_ir += int((b[both] == 1).sum())
        np.testing.assert_array_equal(a[~both], raw_vi[~both])
    total = given_to_vi + given_to_ir
    assert total > 2000  # the independent masks did overlap
    assert abs(given_to_vi / total - 0.5) < 0.05


def test_unknown_mask_style_is_named():
    with pytest.raises(ValueError, match="accepted: authors-code, disjoint, supplementary"):
        MaskConfig(style="paper")  # the authors-code style's old name
    with pytest.raises(ValueError, match="squares only"):
        MaskConfig(style="supplementary", disk_prob=0.3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_size=1.5), "mask_size must be a whole number"), (dict(mask_size=float("nan")), "mask_size must be"),
    (dict(max_holes=2.0), "max_holes must be a whole number"), (dict(disk_prob=float("nan")), "disk_prob must be"),
    (dict(max_fraction=float("nan")), "max_fraction must be"),
    (dict(max_holes=MAX_HOLES + 1), f"max_holes must be at most {MAX_HOLES} \\(each hole costs a pass"),
    (dict(min_holes=100_000, max_holes=100_000), "max_holes must be at most")])
def test_mask_config_refuses_non_integer_and_nan_settings_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskConfig(**kwargs)


def test_as_many_holes_as_the_bound_are_drawn_and_stay_within_half_the_image():
    for style in MASK_STYLES:
        cfg = MaskConfig(style=style, min_holes=MAX_HOLES, max_holes=MAX_HOLES)
        m_vi, m_ir = sample_masks("complementary", 256, 256, 0, cfg)
        assert 0 < ((m_vi == 0) | (m_ir == 0)).mean() <= 0.5, style


def test_mask_config_defaults_to_the_authors_code_sampler():
    assert MaskConfig().style == "authors-code" and MaskConfig().p_disk == 0.3


# ---- the supplementary's rule as written (Sec. 3): 16x16 squares, 1 to 6, at most half the patch
SUPPLEMENTARY = MaskConfig(style="supplementary")


def _is_union_of_squares(hidden: np.ndarray, side: int = 16) -> bool:
    """Whether every hidden pixel lies in a side x side box that is hidden throughout (the
    hidden set is a union of such squares), by box sums of an integral image."""
    c = np.pad(hidden.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    full = (c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]) == side * side
    covered = np.zeros_like(hidden)
    for y, x in zip(*np.nonzero(full)):
        covered[y : y + side, x : x + side] = True
    return bool(np.array_equal(covered, hidden))


@pytest.mark.parametrize("kind", ["random", "complementary"])
@pytest.mark.parametrize("size", [(32, 32), (64, 48), (128, 128), (256, 256)])
def test_supplementary_masks_are_16_pixel_squares_covering_at_most_half(kind, size):
    h, w = size
    for seed in range(60):
        masks = sample_masks(kind, h, w, seed, SUPPLEMENTARY)
        union = np.zeros((h, w), bool)
        for m in masks:
            hidden = m == 0
            assert set(np.unique(m)) <= {0.0, 1.0} and m.dtype == np.float32
            assert _is_union_of_squares(hidden), seed
            assert hidden.sum() <= 6 * 256
            union |= hidden
        assert union.sum() <= h * w / 2, seed  # both masks together, for complementary masking
        assert (masks[0] == 0).any()  # a first 16x16 square always fits in half of these patches
        if kind == "complementary":
            assert not np.any((masks[0] == 0) & (masks[1] == 0))
        else:
            np.testing.assert_array_equal(*masks)


def test_supplementary_hole_count_is_uniform_from_1_to_6():
    # on a large image squares rarely touch: the hidden area is 256 times the count drawn
    counts = []
    for seed in range(600):
        hidden = int((sample_masks("random", 1024, 1024, seed, SUPPLEMENTARY)[0] == 0).sum())
        if hidden % 256 == 0:
            counts.append(hidden // 256)
    assert len(counts) > 550 and set(counts) == {1, 2, 3, 4, 5, 6}
    shares = np.bincount(counts, minlength=7)[1:] / len(counts)
    assert np.all(np.abs(shares - 1 / 6) < 0.06)  # 1/6 each; the standard error is 0.015


def test_supplementary_squares_are_placed_uniformly():
    # one square per mask: its top-left corner is uniform over the (h - 15) x (w - 15) positions
    h, w = 48, 80
    corners = []
    for seed in range(400):
        m, _ = sample_masks("random", h, w, seed, MaskConfig(style="supplementary", min_holes=1, max_holes=1))
        ys, xs = np.nonzero(m == 0)
        corners.append((ys.min(), xs.min()))
    ys, xs = np.array(corners).T
    assert ys.min() == 0 and ys.max() == h - 16 and xs.min() == 0 and xs.max() == w - 16
    assert abs(ys.mean() - (h - 16) / 2) < 1.5 and abs(xs.mean() - (w - 16) / 2) < 3  # means of uniforms
