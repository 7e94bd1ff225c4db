"""ivfusion.viz: colour maps, colour bars, overlays and self-explaining heat map panels."""
from pathlib import Path

import numpy as np
import pytest

from ivfusion import read_image, viz

WHITE = np.array([255, 255, 255], np.uint8)


@pytest.fixture(scope="module")
def visible():
    return read_image(Path(__file__).resolve().parents[1] / "assets" / "examples" / "vi" / "msrs_00001D.png")


def test_colorize_maps_ends_saturates_and_handles_nan():
    lut = viz.colormap_lut("viridis")
    x = np.array([[0.0, 1.0, -3.0, 7.0, np.nan, 0.5]], np.float32)
    rgb = viz.colorize(x, 0.0, 1.0, "viridis")
    assert rgb.shape == (1, 6, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], lut[0])
    np.testing.assert_array_equal(rgb[0, 1], lut[255])
    np.testing.assert_array_equal(rgb[0, 2], lut[0])  # below vmin saturates
    np.testing.assert_array_equal(rgb[0, 3], lut[255])  # above vmax saturates
    np.testing.assert_array_equal(rgb[0, 4], lut[0])  # NaN shows as vmin
    np.testing.assert_array_equal(rgb[0, 5], lut[128])  # 127.5 rounds to the nearest level


def test_colorize_respects_the_scale():
    x = np.full((2, 2), 10.0, np.float32)
    lut = viz.colormap_lut("magma")
    np.testing.assert_array_equal(viz.colorize(x, 0, 20, "magma")[0, 0], lut[128])
    np.testing.assert_array_equal(viz.colorize(x, 10, 20, "magma")[0, 0], lut[0])


@pytest.mark.parametrize("bad", [dict(values=np.zeros((2, 2, 2))), dict(values=np.zeros((2, 2)), vmin=1, vmax=1)])
def test_colorize_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        viz.colorize(**bad)


def test_unknown_colormap_is_a_readable_error():
    with pytest.raises(ValueError, match="unknown colour map"):
        viz.colormap_lut("no-such-map")


def test_edge_overlay_keeps_the_colour_bar_colours_off_the_edges(visible):
    heat = viz.colorize(np.full(visible.shape[:2], 0.7, np.float32))
    edges = viz.edge_mask(visible, visible.shape[:2])
    assert 0.005 < edges.mean() < 0.3  # some edges, not everything
    out = viz.edge_overlay(heat, edges=edges)
    np.testing.assert_array_equal(out[~edges], heat[~edges])  # exactly the bar's colour elsewhere
    assert (out[edges].astype(int).sum(-1) < heat[edges].astype(int).sum(-1)).all()  # edges darker
    np.testing.assert_array_equal(viz.edge_overlay(heat, visible), out)
    dark = (visible // 8).astype(np.uint8)  # a night scene: thresholds follow the image's own gradients
    assert viz.edge_mask(dark, dark.shape[:2]).mean() > 0.005


def test_colorbar_runs_from_vmax_at_top_to_vmin_at_bottom_with_red_eta_mark():
    bar = viz.colorbar(300, 0.0, 1.0, "viridis", ticks=(0, 0.5, 1), marks=[(0.3, "eta")], font_size=14)
    assert bar.shape[0] == 300 and bar.dtype == np.uint8
    lut = viz.colormap_lut("viridis")
    col = bar[:, 6 + 7]  # middle of the bar
    top, bottom = col[15], col[-15]
    assert np.abs(top.astype(int) - lut[250]).max() < 30
    assert np.abs(bottom.astype(int) - lut[5]).max() < 30
    red = (bar[..., 0] > 200) & (bar[..., 1] < 60) & (bar[..., 2] < 60)
    rows = np.flatnonzero(red.any(1))
    pad = 14 // 2 + 2
    y_eta = pad + (1 - 0.3) * (300 - 2 * pad - 1)
    assert rows.size and abs(rows.mean() - y_eta) < 4  # the mark sits at eta = 0.3


def test_heat_image_is_the_map_and_its_colour_bar_without_text(visible):
    values = np.linspace(0, 1, 120 * 160, dtype=np.float32).reshape(120, 160)
    img = viz.heat_image(values)
    h, w = viz.display_size(120, 160)
    assert max(h, w) == viz.PANEL_MIN_SIDE  # small maps are enlarged so that the bar labels fit
    assert img.shape[0] == h and img.shape[1] > w and img.dtype == np.uint8  # no header above
    np.testing.assert_array_equal(img[:, :w], viz.colorize(viz.resize_for_display(values, (h, w)), 0, 1))
    bare = viz.heat_image(values, bar=False)
    assert bare.shape == (h, w, 3)
    big = viz.heat_image(np.zeros((2000, 3000), np.float32), base=np.zeros((2000, 3000), np.uint8))
    assert big.shape[1] < viz.PANEL_MAX_SIDE + 200  # large maps are reduced


def test_gate_image_colours_follow_the_gate_and_mark_eta(visible):
    h, w = visible.shape[:2]
    low = viz.gate_image(np.full((h // 4, w // 4), 0.05, np.float32), None, 0.0, 1.0, 0.3)
    high = viz.gate_image(np.full((h // 4, w // 4), 0.95, np.float32), None, 0.0, 1.0, 0.3)
    dh, dw = viz.display_size(h // 4, w // 4)
    body_low, body_high = low[:, :dw].astype(int), high[:, :dw].astype(int)
    # viridis: high gates are yellow (R and G high), low gates purple (B > G)
    assert body_high[..., 1].mean() > body_low[..., 1].mean() + 40
    assert body_low[..., 2].mean() > body_low[..., 1].mean()
    bar = low[:, dw:]
    red = (bar[..., 0] > 200) & (bar[..., 1] < 60) & (bar[..., 2] < 60)
    assert red.any()  # the eta mark


def test_gate_range_fixed_stretched_and_narrow():
    rng = np.random.default_rng(0)
    a = (0.29 + 0.02 * rng.random((50, 60))).astype(np.float32)
    b = (0.30 + 0.04 * rng.random((25, 30))).astype(np.float32)
    assert viz.gate_range([a, b], "fixed") == (0.0, 1.0)
    assert viz.gate_range([a, b]) == (0.0, 1.0)  # the default
    lo, hi = viz.gate_range([a, b], "stretched")  # the shared 1st-99th percentile
    both = np.concatenate([a.ravel(), b.ravel()])
    assert lo == pytest.approx(np.percentile(both, 1)) and hi == pytest.approx(np.percentile(both, 99))
    assert 0.29 <= lo < 0.30 and 0.33 < hi <= 0.34
    flat = np.full((10, 10), 0.3, np.float32)
    lo, hi = viz.gate_range([flat], "stretched")
    assert hi - lo == pytest.approx(viz.MIN_GATE_SPAN) and lo < 0.3 < hi
    lo, hi = viz.gate_range([np.zeros((4, 4), np.float32)], "stretched")  # widened inside [0, 1]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(viz.MIN_GATE_SPAN)
    with pytest.raises(ValueError, match="gate colour scale"):
        viz.gate_range([a], "log")


def test_stretched_gate_scale_shows_what_a_fixed_scale_hides(visible):
    h, w = visible.shape[:2]
    gate = np.full((h, w), 0.30, np.float32)
    gate[:, w // 2 :] = 0.31  # a 0.01 step: one colour on a 0..1 scale
    dh, dw = viz.display_size(h, w)
    lo, hi = viz.gate_range([gate], "stretched")
    bodies = {}
    for name, (vmin, vmax) in (("fixed", (0.0, 1.0)), ("stretched", (lo, hi))):
        body = viz.gate_image(gate, None, vmin, vmax, 0.3)[:, :dw].astype(int)
        bodies[name] = np.abs(body[:, : dw // 3].mean((0, 1)) - body[:, -dw // 3 :].mean((0, 1))).sum()
    assert bodies["fixed"] < 10 < 100 < bodies["stretched"]


def test_colour_bar_tick_labels_tell_narrow_ticks_apart():
    assert viz._tick_labels([0.0, 0.5, 1.0]) == ["0", "0.5", "1"]
    labels = viz._tick_labels(viz._nice_ticks(0.2652, 0.2711))
    assert len(set(labels)) == len(labels) == 3 and labels[0] == "0.266"


def test_difference_map_and_image_scale():
    a = np.zeros((60, 80), np.float32)
    b = a.copy()
    b[10:20, 10:20] = 10 / 255
    d = viz.difference_map(a, b)
    assert d.max() == pytest.approx(10 / 255) and d[0, 0] == 0
    assert viz.grey_level_scale(d * 255) == 16  # 10 grey levels -> a colour bar up to 16
    assert viz.grey_level_scale(np.zeros(3)) == 1
    img, caption = viz.difference_image(b, a)
    dh, dw = viz.display_size(60, 80)
    lut = viz.colormap_lut(viz.CHANGE_CMAP)
    np.testing.assert_array_equal(img[-1, 0], lut[0])  # unchanged pixels: the colour of 0
    assert "max 10" in caption and "2.1% of pixels changed" in caption
    with pytest.raises(ValueError, match="different sizes"):
        viz.difference_map(a, b[:10])


def test_to_rgb_to_uint8_side_by_side():
    g = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(viz.to_uint8(g), [[0, 128, 255]])
    assert viz.to_rgb(g).shape == (1, 3, 3)
    assert viz.to_rgb(np.zeros((2, 2, 4), np.uint8)).shape == (2, 2, 3)
    s = viz.side_by_side([np.zeros((4, 5), np.uint8), np.zeros((6, 2, 3), np.uint8)], gap=3)
    assert s.shape == (6, 5 + 3 + 2, 3)


def test_side_by_side_equal_pads_each_panel_to_the_widest():
    """The gate figure's grid (render.GATE_GRID), which a phone shows panel by panel."""
    a, b = np.zeros((10, 5, 3), np.uint8), np.zeros((8, 7), np.uint8)
    out = viz.side_by_side([a, b], gap=2, equal=True)
    assert out.shape == (10, 7 + 2 + 7, 3)
    assert (out[:, 5:7] == 255).all() and (out[:, :5] == 0).all()  # the narrower panel padded with white
    assert viz.side_by_side([a, b], gap=2).shape == (10, 5 + 2 + 7, 3)
