"""ivfusion.lab: the Intervention Lab's logic on real pairs with the real network and metrics."""
import json
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ivfusion import ImageError, WeightsError, lab, read_image, viz
from ivfusion.hub import DEFAULT_WEIGHTS
from ivfusion.levels import GATE_LEVELS, npz_key
from ivfusion.metrics import METRIC_NAMES, evaluate_pair

EXAMPLES = lab.EXAMPLES_DIR
SIDE = 128  # tests run the network on small real images: the machine is shared and CPU-only


@pytest.fixture(scope="module")
def fuser():
    return lab.make_fuser("untrained", device="cpu", max_side=SIDE)


@pytest.fixture(scope="module")
def pair():
    """A real night pair (MSRS 00037N), downscaled to 128x96."""
    vis = read_image(EXAMPLES / "vi" / "msrs_00037N.png")
    ir = read_image(EXAMPLES / "ir" / "msrs_00037N.png")
    return cv2.resize(vis, (128, 96), interpolation=cv2.INTER_AREA), cv2.resize(ir, (128, 96), interpolation=cv2.INTER_AREA)


def huge_png(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A PNG whose header declares w x h pixels (a decompression bomb: tiny file, huge image)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- examples
def test_examples_are_real_registered_pairs_day_and_night_documented():
    pairs = lab.example_pairs()
    assert len(pairs) >= 6 and len(pairs) == len(lab.EXAMPLES)
    names = [Path(v).stem for v, _, _ in pairs]
    assert any(n.endswith("D") or "Day" in lab.EXAMPLES[n] for n in names)
    assert sum("Night" in lab.EXAMPLES[n] for n in names) >= 3 and sum("Day" in lab.EXAMPLES[n] for n in names) >= 2
    readme = (EXAMPLES / "README.md").read_text()
    total = 0
    for v, i, label in pairs:
        vis, ir = read_image(v), read_image(i)
        assert vis.shape[:2] == ir.shape[:2] and vis.ndim == 3 and ir.ndim == 2
        assert Path(v).stem in readme and label
        total += Path(v).stat().st_size + Path(i).stat().st_size
    assert total < 3_000_000
    assert "MIT" in readme and "RoadScene" in readme and "licence" in readme


# ----------------------------------------------------------------------------- inputs
def test_load_image_reads_paths_payloads_and_arrays():
    path = EXAMPLES / "ir" / "msrs_00001D.png"
    a = lab.load_image(str(path), "infrared image")
    b = lab.load_image({"path": str(path), "orig_name": "x.png"}, "infrared image")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (480, 640) and a.dtype == np.uint8
    assert lab.load_image(a, "infrared image") is not None


@pytest.mark.parametrize("case, message", [
    ("missing", "visible image: missing"),
    ("no-path", "no file was received"),
    ("corrupt", "not a readable image"),
    ("empty", "the file is empty"),
    ("huge", "megapixels"),
    ("channels", "5 channels"),
])
def test_bad_inputs_give_readable_errors(tmp_path, case, message):
    src = {
        "missing": lambda: None,
        "no-path": lambda: {"path": None},
        "corrupt": lambda: _write(tmp_path / "corrupt.png", b"\x89PNG\r\n\x1a\n this is not an image" * 10),
        "empty": lambda: _write(tmp_path / "empty.png", b""),
        "huge": lambda: str(huge_png(tmp_path / "huge.png")),
        "channels": lambda: np.zeros((10, 10, 5), np.uint8),
    }[case]()
    with pytest.raises(ImageError, match=message) as err:
        lab.load_image(src, "visible image")
    assert "Traceback" not in str(err.value) and str(tmp_path) not in str(err.value)  # no server paths leak


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_pair_info_explains_sizes_and_downscaling(tmp_path):
    vis = EXAMPLES / "vi" / "msrs_00001D.png"
    ir_small = tmp_path / "ir_small.png"
    cv2.imwrite(str(ir_small), cv2.resize(read_image(EXAMPLES / "ir" / "msrs_00001D.png"), (320, 240)))
    text = lab.pair_info(str(vis), str(ir_small), max_side=SIDE)
    assert "640x480, colour, 8-bit" in text and "320x240" in text
    assert "resized to the visible size" in text and "downscaled to 128x96" in text
    ir_wide = tmp_path / "ir_wide.png"
    cv2.imwrite(str(ir_wide), np.zeros((100, 400), np.uint8))
    assert "aspect ratios" in lab.pair_info(str(vis), str(ir_wide))
    assert "Now add the infrared image" in lab.pair_info(str(vis), None)
    assert "Ready" in lab.pair_info(str(vis), str(EXAMPLES / "ir" / "msrs_00001D.png"), max_side=1024)


def test_load_pair_decodes_at_the_working_size_and_says_so():
    vis, ir = EXAMPLES / "vi" / "msrs_00001D.png", EXAMPLES / "ir" / "msrs_00001D.png"
    v, i, notes = lab.uploads.load_pair(str(vis), {"path": str(ir)}, SIDE)
    assert v.shape == (96, 128, 3) and i.shape[:2] == (96, 128)
    assert notes == ["Downscaled from 640x480 to 128x96 (maximum side 128)."]
    np.testing.assert_array_equal(v, lab.uploads.load_image(str(vis), "visible image", SIDE))
    v, _, notes = lab.uploads.load_pair(str(vis), str(ir), 1024)
    assert v.shape == (480, 640, 3) and notes == []


def test_display_copy_turns_16bit_tiff_into_lossless_16bit_png(tmp_path):
    ir = read_image(EXAMPLES / "ir" / "msrs_00009N.png").astype(np.uint16) * 257
    tif = tmp_path / "ir16.tiff"
    assert cv2.imwrite(str(tif), ir)
    png = lab.display_copy(str(tif), tmp_path)
    assert png and png.endswith(".png")
    np.testing.assert_array_equal(read_image(png), ir)
    assert lab.display_copy(str(EXAMPLES / "ir" / "msrs_00009N.png"), tmp_path) is None


def test_drawn_keep_mask_from_editor_layers(tmp_path):
    layer = np.zeros((40, 60, 4), np.uint8)
    layer[10:20, 30:50] = (255, 0, 255, 255)
    path = tmp_path / "layer.png"
    cv2.imwrite(str(path), cv2.cvtColor(layer, cv2.COLOR_RGBA2BGRA))
    for value in (layer, {"background": None, "layers": [{"path": str(path)}], "composite": None}):
        keep = lab.drawn_keep_mask(value)
        assert keep.shape == (40, 60) and keep.dtype == np.float32
        assert keep[10:20, 30:50].max() == 0 and keep.sum() == 40 * 60 - 200
    assert lab.drawn_keep_mask({"background": None, "layers": [np.zeros((4, 4, 4), np.uint8)]}) is None
    assert lab.drawn_keep_mask(None) is None


# ----------------------------------------------------------------------------- settings and masks
def test_settings_validate_and_name_themselves():
    s = lab.Settings(complementary=True, dropout="drop IR", hole_percent=12.5, holes=2.0, seed=3)
    assert s.kinds == ["complementary", "drop-infrared"] and s.holes == 2 and isinstance(s.holes, int)
    assert s.label() == "complementary masking + drop infrared" and s.label(drawn=True).endswith("drawn mask")
    assert lab.Settings(dropout="drop-visible").dropout == "drop visible"
    assert lab.Settings().label() == "none"
    assert lab.Settings().hole_px(480, 640) == 30 and lab.Settings().hole_px(256, 256) == 16  # the paper's 16 px
    for bad in (dict(holes=7), dict(holes=0), dict(hole_percent=0.5), dict(hole_percent=float("nan")),
                dict(seed=-1), dict(dropout="drop both"), dict(holes=2.5), dict(complementary="no")):
        with pytest.raises(ValueError):
            lab.Settings(**bad)


def test_intervention_masks_combine_multiplicatively_and_are_seeded():
    s = lab.Settings(complementary=True, holes=4, hole_percent=12.5, seed=5)
    m_vi, m_ir = lab.intervention_masks(s, 64, 96)
    assert m_vi.min() == 0 and m_ir.min() == 0
    assert 64 <= (m_vi == 0).sum() <= 4 * 64  # 4 holes of 8x8 px (12.5% of 64), overlaps allowed
    assert not ((m_vi == 0) & (m_ir == 0)).any()  # complementary: never the same pixel
    again = lab.intervention_masks(s, 64, 96)
    np.testing.assert_array_equal(m_vi, again[0])
    other = lab.intervention_masks(lab.Settings(complementary=True, holes=4, hole_percent=12.5, seed=6), 64, 96)
    assert not np.array_equal(m_vi, other[0])
    m_vi2, m_ir2 = lab.intervention_masks(lab.Settings(complementary=True, dropout="drop IR", holes=4,
                                                       hole_percent=12.5, seed=5), 64, 96)
    np.testing.assert_array_equal(m_vi2, m_vi)
    assert m_ir2.max() == 0
    r_vi, r_ir = lab.intervention_masks(lab.Settings(random=True, seed=1), 64, 96)
    np.testing.assert_array_equal(r_vi, r_ir)  # random masking: one mask for both
    drawn = np.ones((32, 48), np.float32)
    drawn[:16] = 0  # top half hidden, drawn at half resolution
    d_vi, d_ir = lab.intervention_masks(lab.Settings(), 64, 96, drawn=(None, drawn))
    assert d_vi.min() == 1 and d_ir[:30].max() == 0 and d_ir[34:].min() == 1


# ----------------------------------------------------------------------------- runs
def _square_holes(mask: np.ndarray, side: int) -> bool:
    """Every hidden pixel lies in a fully hidden side x side square (holes of that size)."""
    hidden = (mask == 0).astype(np.uint8)
    full = cv2.erode(hidden, np.ones((side, side), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)
    covered = cv2.dilate(full, np.ones((side, side), np.uint8), anchor=(side - 1, side - 1))
    return bool(hidden.any()) and np.array_equal(covered[: hidden.shape[0], : hidden.shape[1]] > 0, hidden > 0)


def test_run_pair_matches_two_separate_fuses(fuser, pair):
    vis, ir = pair
    s = lab.Settings(complementary=True, holes=3, hole_percent=12.5, seed=2)
    run = lab.run_pair(fuser, vis, ir, s)
    clean = fuser.fuse(vis, ir)
    np.testing.assert_allclose(run.clean.fused_y, clean.fused_y, atol=1e-5)
    np.testing.assert_allclose(run.clean.gates_full, clean.gates_full, atol=1e-5)
    # the masks the run reports: complementary (disjoint) square holes of 12.5% of the 96-px side
    m_vi, m_ir = run.intervened.masks
    assert _square_holes(m_vi, 12) and _square_holes(m_ir, 12) and not ((m_vi == 0) & (m_ir == 0)).any()
    assert (m_vi == 0).sum() <= 3 * 144 and (m_ir == 0).sum() <= 3 * 144
    np.testing.assert_array_equal(run.intervened.inputs["visible_y"], clean.inputs["visible_y"] * m_vi)
    np.testing.assert_array_equal(run.intervened.inputs["infrared"], clean.inputs["infrared"] * m_ir)
    # and the intervened pass is what a plain fuse with those masks gives
    inter = fuser.fuse(vis, ir, masks=(m_vi, m_ir))
    np.testing.assert_allclose(run.intervened.fused_y, inter.fused_y, atol=1e-5)
    for k in range(3):
        np.testing.assert_allclose(run.intervened.gates[k], inter.gates[k], atol=1e-5)
    assert run.intervened.intervention == "complementary masking" and run.has_intervention
    assert any("Hidden:" in n and "holes of 12 px" in n for n in run.notices)
    assert run.difference.shape == run.clean.fused_y.shape and run.eta == fuser.model.config.eta


def test_a_shared_pair_runs_its_clean_pass_once_and_keeps_its_features(fuser, pair):
    sp = lab.SharedPair(fuser, *pair, model="m")
    assert sp.fuser is not fuser and sp.fuser._feats  # its own fork, holding the clean features
    feats = {k: list(v) for k, v in sp.fuser._feats.items()}
    first = lab.run_session_pair(sp, lab.Settings(random=True, seed=1))
    second = lab.run_session_pair(sp, lab.Settings(dropout="drop IR"))
    assert first.clean is second.clean is sp.clean  # not recomputed
    # the clean features stay for the next visitor, untouched by the interventions
    assert all(a is b for k in feats for a, b in zip(feats[k], sp.fuser._feats[k]))
    fresh = lab.run_pair(fuser, *pair, lab.Settings(dropout="drop IR"), model="m")
    np.testing.assert_allclose(second.clean.fused_y, fresh.clean.fused_y, atol=1e-5)
    np.testing.assert_allclose(second.intervened.fused_y, fresh.intervened.fused_y, atol=1e-5)
    other = lab.SharedPair(fuser, pair[0][::-1].copy(), pair[1][::-1].copy(), model="m")
    assert other.fuser is not sp.fuser
    np.testing.assert_allclose(lab.run_session_pair(sp, lab.Settings(random=True, seed=1)).intervened.fused_y,
                               first.intervened.fused_y, atol=1e-6)  # the other pair did not leak in


def test_dropping_a_modality_drops_its_colour_too(fuser, pair):
    run = lab.run_pair(fuser, *pair, lab.Settings(dropout="drop IR"))
    assert run.intervened.inputs["infrared"].max() == 0
    np.testing.assert_array_equal(run.intervened.inputs["visible_y"], run.clean.inputs["visible_y"])
    assert run.difference.max() > 0
    rgb = run.intervened.fused_rgb.astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 1  # the visible image's colour stays
    assert any("keeps its colour" in n for n in run.notices)
    dv = lab.run_pair(fuser, *pair, lab.Settings(dropout="drop visible"))
    assert dv.intervened.inputs["visible_y"].max() == 0
    rgb = dv.intervened.fused_rgb.astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 1  # grey
    np.testing.assert_allclose(rgb[..., 1] / 255.0, dv.intervened.fused_y, atol=1.5 / 255)
    assert any("output is grey" in n for n in dv.notices)
    masked = lab.run_pair(fuser, *pair, lab.Settings(complementary=True, holes=2, hole_percent=25, seed=1))
    hidden = masked.intervened.masks[0] == 0
    rgb = masked.intervened.fused_rgb.astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2])[hidden].max() <= 1  # grey only where the visible image was hidden


def test_no_intervention_runs_once_and_says_so(fuser, pair):
    run = lab.run_pair(fuser, *pair, lab.Settings())
    assert run.intervened is run.clean and not run.has_intervention
    assert any("No intervention" in n for n in run.notices)
    assert run.difference.max() == 0


def test_sizes_that_differ_and_oversized_pairs_are_handled_with_notices(fuser):
    vis = read_image(EXAMPLES / "vi" / "msrs_00010N.png")  # 640x480: more than max_side
    ir = cv2.resize(read_image(EXAMPLES / "ir" / "msrs_00010N.png"), (200, 100))  # another shape
    run = lab.run_pair(fuser, vis, ir, lab.Settings(random=True))
    assert run.clean.fused_rgb.shape == (96, 128, 3)
    text = " ".join(run.notices)
    assert "Infrared resized from 200x100" in text and "Downscaled from 640x480" in text
    assert "aspect ratios" in text


def test_sixteen_bit_tiff_infrared_and_grey_visible(fuser, tmp_path, pair):
    vis, ir = pair
    tif = tmp_path / "ir16.tif"
    cv2.imwrite(str(tif), ir.astype(np.uint16) * 200 + 1000)
    ir16 = lab.load_image(str(tif), "infrared image")
    assert ir16.dtype == np.uint16
    grey_vis = cv2.cvtColor(vis, cv2.COLOR_RGB2GRAY)
    run = lab.run_pair(fuser, grey_vis, ir16, lab.Settings(random=True))
    assert any("16-bit infrared stretched" in n for n in run.notices)
    rgb = run.clean.fused_rgb
    assert (rgb[..., 0] == rgb[..., 1]).all()  # a grey visible image gives a grey fusion


def test_render_gives_fused_images_inputs_and_three_maps_per_level(fuser, pair):
    run = lab.run_pair(fuser, *pair, lab.Settings(complementary=True, seed=1, hole_percent=25))
    figs = lab.render.render(run)
    assert figs.fused_clean is run.clean.fused_rgb and figs.fused_intervened is run.intervened.fused_rgb
    np.testing.assert_array_equal(figs.input_infrared, np.rint(run.intervened.inputs["infrared"] * 255).astype(np.uint8))
    assert [lv.key for lv in GATE_LEVELS] == ["coarse", "mid", "fine"] and len(figs.levels) == 3
    for level, fig in zip(GATE_LEVELS, figs.levels):
        assert all(m.ndim == 3 and m.dtype == np.uint8 for m in (fig.clean, fig.intervened, fig.change))
        k = level.index
        assert f"{float(run.clean.gates[k].mean()):.3f}" in fig.caption and f"\u03b7 = {run.eta:g}" in fig.caption
        assert f"{float(run.intervened.gates[k].mean()):.3f}" in fig.caption
    # the default scale is the whole range; stretched is shared by the clean and intervened maps
    # and its caption says how much of the range the gates use
    assert "span 0 to 1" in figs.levels[2].caption
    fine = lab.render_levels(run, "stretched per level")[2]
    lo, hi = viz.gate_range([run.clean.gates[2], run.intervened.gates[2]], "stretched")
    assert f"{lo:.3f} to {hi:.3f}, stretched: the gates use only" in fine.caption
    edges = viz.edge_mask(run.clean.fused_y, fine.clean.shape[:2])
    np.testing.assert_array_equal(fine.clean, viz.gate_image(run.clean.gates_full[2], None, lo, hi, run.eta, bar=False,
                                                             edges=edges))
    assert fine.image.shape[1] > fine.clean.shape[1] + fine.intervened.shape[1] + fine.change.shape[1]
    fixed = lab.render_levels(run, "fixed 0 to 1")
    assert "span 0 to 1" in fixed[2].caption and not np.array_equal(fixed[2].clean, fine.clean)
    np.testing.assert_array_equal(fixed[2].change, fine.change)  # the change map does not depend on the gate scale
    with pytest.raises(ValueError, match="gate colour scale"):
        lab.render.render(run, "rainbow")


def test_gate_change_map_is_signed_and_centred_on_zero(visible_base=None):
    change = np.zeros((60, 80), np.float32)
    change[:, :30] = 0.08  # opened
    change[:, 50:] = -0.03  # closed, less
    limit = viz.change_range(change)
    assert limit == pytest.approx(0.08)
    img = viz.gate_change_image(change, None, limit)
    h, w = viz.display_size(60, 80)
    body = img[:h, :w].astype(int)
    lut = viz.colormap_lut(viz.DIVERGING_CMAP).astype(int)
    np.testing.assert_array_equal(body[h // 2, w // 2], lut[128])  # no change: the middle (white) colour
    np.testing.assert_array_equal(body[h // 2, 2], lut[255])  # +limit: the top of the bar (red)
    assert body[h // 2, -3, 2] > body[h // 2, -3, 0]  # closed: blue
    # a floor: a shift of a few thousandths is not painted as if the gate had opened everywhere
    assert viz.change_range(np.full((4, 4), 0.003)) == pytest.approx(viz.CHANGE_FLOOR) == 0.05
    tiny = viz.gate_change_image(np.full((60, 80), 0.003, np.float32), None)[:h, :w].astype(int)
    # 0.003 is 6% of the half-range: under a tenth of the way from the white middle to the red end
    assert np.abs(tiny[h // 2, w // 2] - lut[128]).max() < 0.1 * np.abs(lut[255] - lut[128]).max()


def test_metrics_table_matches_evaluate_pair_without_constant_columns(fuser, pair):
    run = lab.run_pair(fuser, *pair, lab.Settings(dropout="drop visible"))
    rows = lab.metrics_table(run)
    assert [r[0] for r in rows] == list(METRIC_NAMES) and lab.METRIC_HEADERS == ["metric", "clean", "intervened", "change"]
    ref = evaluate_pair(np.rint(run.clean.inputs["infrared"] * 255).astype(np.uint8), run.clean.visible_rgb,
                        run.intervened.fused_rgb)
    for name, clean, inter, change in rows:
        if np.isfinite(ref[name]):
            assert inter == pytest.approx(ref[name], rel=1e-3, abs=1e-9)
        if np.isfinite(clean) and np.isfinite(inter):
            assert change == pytest.approx(inter - clean, rel=1e-2, abs=1e-3 * max(1.0, abs(clean)))
    assert any(r[3] != 0 for r in rows)  # dropping the visible image changes the metrics
    same = lab.metrics_table(lab.metric_sources(lab.run_pair(fuser, *pair, lab.Settings())))
    assert all(r[3] == 0 or not np.isfinite(r[3]) for r in same)
    assert "SSIM" in lab.METRICS_NOTE and "60 dB" in lab.METRICS_NOTE


def test_downloads_are_lossless_pngs_and_an_npz_of_gates(fuser, pair, tmp_path):
    run = lab.run_pair(fuser, *pair, lab.Settings(random=True, seed=4))
    files = lab.write_downloads(run, tmp_path)
    assert [Path(f).name for f in files] == ["fused_clean.png", "fused_intervened.png", "gates.npz"]
    np.testing.assert_array_equal(read_image(files[0]), run.clean.fused_rgb)
    np.testing.assert_array_equal(read_image(files[1]), run.intervened.fused_rgb)
    with np.load(files[2]) as z:
        for name, res in (("clean", run.clean), ("intervened", run.intervened)):
            for level in GATE_LEVELS:
                np.testing.assert_array_equal(z[f"{name}_{npz_key(level)}"], res.gates[level.index])
        np.testing.assert_array_equal(z["mask_infrared"], run.intervened.masks[1])
        info = json.loads(str(z["info"]))
    assert info["intervention"] == "random masking" and info["settings"]["seed"] == 4
    assert info["eta"] == fuser.model.config.eta and info["levels"] == ["coarse", "mid", "fine"]


def test_page_images_are_lossless_png_for_fused_and_jpeg_for_heat_maps(fuser, pair, tmp_path):
    run = lab.run_pair(fuser, *pair, lab.Settings(random=True, seed=4))
    png = lab.save_image(tmp_path, "fused", run.intervened.fused_rgb, lossless=True)
    np.testing.assert_array_equal(read_image(png), run.intervened.fused_rgb)
    heat = lab.render_levels(run)[0].clean
    jpg = lab.save_image(tmp_path, "heat", heat, lossless=False)
    shown = read_image(jpg).astype(int)
    room = lab.downloads.BUTTON_ROOM
    assert jpg.endswith(".jpg") and shown.shape[0] == heat.shape[0] + room and shown[: room - 4].min() > 245
    assert np.abs(shown[room:] - heat).mean() < 3


def test_request_dirs_are_fresh_and_old_ones_are_pruned(tmp_path):
    a = lab.request_dir(tmp_path)
    b = lab.request_dir(tmp_path)
    assert a != b and a.is_dir() and b.is_dir()
    old = time.time() - 7200
    os.utime(a, (old, old))
    lab.request_dir(tmp_path, max_age_s=3600)
    assert not a.exists() and b.exists()


# ----------------------------------------------------------------------------- stability
def test_the_page_settings_become_the_analysis_interventions():
    # a dropout hides a whole input in every run: left out, or no pixel would ever be measured
    assert lab.interventions_of(lab.Settings(complementary=True, dropout="drop IR")) == ([["complementary"]], False)
    assert lab.interventions_of(lab.Settings(dropout="drop visible")) == ([["complementary"], ["random"]], True)
    assert lab.interventions_of(lab.Settings()) == ([["complementary"], ["random"]], True)


@pytest.mark.slow  # K real interventions
def test_run_stability_uses_the_settings_holes_and_seed_and_reports_per_run(fuser, pair):
    s = lab.Settings(complementary=True, holes=4, hole_percent=12.5, seed=7)
    calls = []
    res = lab.run_stability(fuser, *pair, s, k=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)] and res.done == 4 and not res.cancelled
    assert res.instability.shape == (96, 128) and res.runs == ["complementary"] * 4
    assert len(res.levels) == 3 and np.isfinite(res.correlation.r)
    again = lab.run_stability(fuser, *pair, s, k=4)
    np.testing.assert_array_equal(np.nan_to_num(again.instability), np.nan_to_num(res.instability))
    # the first run's masks: complementary, square holes of 12 px (12.5% of 96), from the seed (7, 0)
    f = fuser.fork()
    f.set_pair(*pair)
    (m_vi, m_ir), _ = f.sample_masks(["complementary"], [7, 0], mask_config=s.mask_config(96, 128))
    assert _square_holes(m_vi, 12) and _square_holes(m_ir, 12)
    figs = lab.stability_figures(res)
    assert {"instability", "mean_gate", "features", "summary"} == set(figs)
    assert all(figs[n].ndim == 3 and figs[n].dtype == np.uint8 for n in ("instability", "mean_gate", "features"))
    assert "**Output** (" in figs["summary"] and "4 runs: complementary masking" in figs["summary"]
    assert figs["summary"].count("**Features, ") == 3 and "p" in res.correlation.reading


def test_stability_can_be_cancelled_and_keeps_the_runs_done(fuser, pair):
    calls = []
    res = lab.run_stability(fuser, *pair, lab.Settings(random=True), k=6, progress=lambda d, t: calls.append(d),
                            cancel=lambda: len(calls) >= 2)
    assert res.cancelled and res.done == 2 and calls == [1, 2]
    text = lab.stability_figures(res)["summary"]
    assert "cancelled after 2 of 6 runs" in text


def test_stability_with_only_a_dropout_selected_measures_the_masking_runs(fuser, pair):
    """Issue 16, defect 6: a dropout-only selection spent all K runs on undefined correlations."""
    res = lab.run_stability(fuser, *pair, lab.Settings(dropout="drop visible"), k=4)
    assert res.runs == ["complementary", "random"] * 2
    figs = lab.stability_figures(res)
    assert "alternately" in figs["summary"] and "undefined" not in figs["summary"].lower()


# ----------------------------------------------------------------------------- models
def test_model_bank_offers_choices_from_the_environment_and_caches(tmp_path):
    from tests.official import synthetic_official_state_dict

    bank = lab.ModelBank(env={}, device="cpu", max_side=SIDE)
    assert bank.choices()[0] == lab.DEFAULT_CHOICE and lab.UNTRAINED_CHOICE in bank.choices()
    f1, notes = bank.get(lab.UNTRAINED_CHOICE)
    f2, _ = bank.get(lab.UNTRAINED_CHOICE)
    assert f1 is f2 and "random weights" in notes[0] and f1.max_side == SIDE
    with pytest.raises(WeightsError, match="unknown model"):
        bank.get("no such model")
    with pytest.raises(WeightsError, match="IVFUSION_OFFICIAL_WEIGHTS"):
        bank.get(lab.OFFICIAL_CHOICE)
    ckpt = tmp_path / "best.pth"
    torch.save(synthetic_official_state_dict(), ckpt)
    bank = lab.ModelBank(env={"IVFUSION_OFFICIAL_WEIGHTS": str(ckpt), "IVFUSION_MAX_SIDE": "64"}, device="cpu")
    assert bank.choices() == [lab.DEFAULT_CHOICE, lab.OFFICIAL_CHOICE, lab.UNTRAINED_CHOICE] and bank.max_side == 64
    fuser, _ = bank.get(lab.OFFICIAL_CHOICE)
    assert fuser.weights_source.endswith("best.pth")
    assert "Authors' checkpoint" in bank.describe(lab.OFFICIAL_CHOICE)
    bad = lab.ModelBank(env={"IVFUSION_OFFICIAL_WEIGHTS": str(tmp_path / "missing.pth")}, device="cpu")
    with pytest.raises(WeightsError, match="not found"):
        bad.get(lab.OFFICIAL_CHOICE)


@pytest.mark.parametrize("spec", ["local", "hf://ivfusion-tests/no-such-repo"])
def test_unloadable_ivfusion_weights_fall_back_to_the_bundled_file_with_a_notice(tmp_path, spec):
    spec = str(tmp_path / "nowhere.safetensors") if spec == "local" else spec
    bank = lab.ModelBank(env={"IVFUSION_WEIGHTS": spec}, device="cpu")
    if not (DEFAULT_WEIGHTS / "model.safetensors").is_file():
        pytest.fail(f"the bundled weights are missing: {DEFAULT_WEIGHTS}", pytrace=False)
    choice, notes = bank.default_choice()
    fuser, _ = bank.get(choice)
    assert choice == lab.DEFAULT_CHOICE and str(DEFAULT_WEIGHTS) in fuser.weights_source
    assert not getattr(fuser.model, "is_untrained", False)
    assert "could not be loaded" in notes[0] and "bundled" in notes[0]


def test_bundled_weights_load():
    """The app's default model: the bundled trained weights (assets/weights/isfuse-ivfusion)."""
    if not (DEFAULT_WEIGHTS / "model.safetensors").is_file():
        pytest.fail(f"the bundled trained weights are missing: {DEFAULT_WEIGHTS / 'model.safetensors'} "
                    "(the training run writes them there); the app falls back to the untrained network "
                    "without them", pytrace=False)
    bank = lab.ModelBank(env={}, device="cpu", max_side=SIDE)
    choice, notes = bank.default_choice()
    assert choice == lab.DEFAULT_CHOICE and notes == []
    fuser, _ = bank.get(choice)
    assert not getattr(fuser.model, "is_untrained", False) and str(DEFAULT_WEIGHTS) in fuser.weights_source


def test_the_default_model_is_the_authors_on_a_space_and_falls_back_offline(tmp_path):
    """Issue 16, models: on a Space (SPACE_ID set) the released checkpoint is the default; when it
    cannot be fetched, the bundled weights, with a notice; IVFUSION_DEFAULT_MODEL chooses."""
    from tests.official import synthetic_official_state_dict
    import torch

    pth = tmp_path / "best.pth"
    torch.save(synthetic_official_state_dict(), pth)
    bank = lab.ModelBank(env={"SPACE_ID": "x/y", "IVFUSION_OFFICIAL_WEIGHTS": str(pth)}, device="cpu", max_side=SIDE)
    assert bank.default_choice() == (lab.OFFICIAL_CHOICE, [])
    dead = lab.ModelBank(env={"SPACE_ID": "x/y", "IVFUSION_OFFICIAL_URL": "http://127.0.0.1:9/best.pth",
                              "IVFUSION_CACHE": str(tmp_path / "cache")}, device="cpu", max_side=SIDE)
    choice, notes = dead.default_choice()  # at once: the download goes on in the background
    assert choice == lab.DEFAULT_CHOICE and "downloading in the background" in notes[0]
    assert dead.wait_for_downloads(60)
    choice, notes = dead.current_default()
    assert choice == lab.DEFAULT_CHOICE and "could not be had" in notes[0]
    local = lab.ModelBank(env={"IVFUSION_OFFICIAL_WEIGHTS": str(pth)}, device="cpu", max_side=SIDE)
    assert local.default_choice()[0] == lab.DEFAULT_CHOICE  # off a Space: no network needed
    with pytest.raises(ValueError, match="IVFUSION_DEFAULT_MODEL='x'"):
        lab.ModelBank(env={"IVFUSION_DEFAULT_MODEL": "x"}, device="cpu").default_choice()


def test_the_instability_map_is_scaled_to_its_99th_percentile_not_its_peak(fuser, pair):
    """Issue 16, defect 5: on a max scale the holes' edges left the rest of the map black."""
    import dataclasses

    res = lab.run_stability(fuser, *pair, lab.Settings(complementary=True), k=4)
    inst = np.full_like(res.instability, 0.02)  # 5 grey levels almost everywhere
    inst[:2, :2] = 1.0  # a few pixels at the full 255
    figs = lab.stability_figures(dataclasses.replace(res, instability=inst))
    img = figs["instability"].astype(int)
    h, w = viz.display_size(*inst.shape)
    lut = viz.colormap_lut(viz.CHANGE_CMAP).astype(int)
    centre = img[h // 2, w // 2]
    assert np.abs(centre - lut[0]).sum() > 60  # the bulk is not drawn as black (on a max scale: 5/255 of it)
