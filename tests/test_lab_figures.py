"""Figures a student can read (ivfusion/lab/render.py, the compare view): one symmetric change
scale shared by the three levels and by both models, stated in the caption; compare rows
named by model; the compare menu following the main model. Real network at 128 px."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import lab, read_image, viz  # noqa: E402
from ivfusion.lab import render  # noqa: E402

pytestmark = [pytest.mark.slow]  # the real network

EX = lab.EXAMPLES_DIR
VIS, IR = str(EX / "vi" / "msrs_00037N.png"), str(EX / "ir" / "msrs_00037N.png")


@pytest.fixture(scope="module")
def lab_app():
    return app.LabApp(lab.ModelBank(env={}, device="cpu", max_side=128), precompute=False)


def _bar(img: np.ndarray, map_width: int) -> np.ndarray:
    return img[:, map_width:]  # what is right of the map: its colour bar


def test_the_three_levels_share_one_change_scale_stated_in_the_caption(lab_app):
    fuser, _ = lab_app.bank.get(lab.DEFAULT_CHOICE)
    run = lab.run_pair(fuser, *(read_image(p) for p in (VIS, IR)), lab.Settings(dropout="drop infrared"))
    figs = render.render(run)
    changes = [run.intervened.gates_full[k] - run.clean.gates_full[k] for k in range(3)]
    assert figs.change_limit == pytest.approx(viz.change_range(np.concatenate(changes)))
    # per-level scales would differ here: the levels do not move alike under the dropout
    assert len({round(viz.change_range(c), 4) for c in changes}) > 1
    w = viz.display_size(*run.clean.fused_y.shape, max_side=render.LEVEL_MAP_SIDE, min_side=render.LEVEL_MAP_SIDE // 2)[1]
    bars = [_bar(level.change, w) for level in figs.levels]
    for bar in bars[1:]:
        np.testing.assert_array_equal(bar, bars[0])  # one colour bar, the same ticks
    _, caption = render.gate_figure(figs.levels, figs.change_limit)
    assert f"\u00b1{figs.change_limit:.3f}, shared by the three levels" in caption.splitlines()[0]


def test_compare_shares_the_scale_across_models_and_names_its_rows(lab_app):
    out = lab_app.compare(VIS, IR, lab.DEFAULT_CHOICE, lab.UNTRAINED_CHOICE, False, False, "drop infrared", state={})
    assert "shared by the three levels and both models" in out["compare_summary"]
    for level in ("coarse", "mid", "fine"):
        assert out[f"compare_{level}"]["label"].split(": ", 1)[1].startswith("Bundled (top) | Untrained (bottom)")
    assert out["compare_fused"]["label"].endswith("Bundled (left) | Untrained (right)")
    fuser_a, _ = lab_app.bank.get(lab.DEFAULT_CHOICE)
    fuser_b, _ = lab_app.bank.get(lab.UNTRAINED_CHOICE)
    pair = [read_image(p) for p in (VIS, IR)]
    runs = [lab.run_pair(f, *pair, lab.Settings(dropout="drop infrared")) for f in (fuser_a, fuser_b)]
    limit = render.change_limit(runs)
    assert limit > min(render.change_limit([r]) for r in runs)  # one model's own scale would be narrower
    assert f"\u00b1{limit:.3f}" in out["compare_summary"]


def test_the_compare_menu_follows_the_main_model(lab_app):
    choices = lab_app.bank.choices()
    for main in choices:
        upd = lab_app.compare_choices(main, main)
        assert main not in upd["choices"] and sorted(upd["choices"] + [main]) == sorted(choices)
        assert upd["value"] in upd["choices"]
    # the authors' model as the main one: the bundled weights can be compared against it
    upd = lab_app.compare_choices(lab.OFFICIAL_CHOICE, lab.UNTRAINED_CHOICE)
    assert lab.DEFAULT_CHOICE in upd["choices"] and upd["value"] == lab.UNTRAINED_CHOICE


def test_the_metrics_note_says_which_metrics_rise_under_masking_and_it_is_so(lab_app):
    assert "EN, SD, SF and AG rise under masking" in lab.METRICS_NOTE and "higher-is-better" not in lab.METRICS_NOTE
    fuser, _ = lab_app.bank.get(lab.DEFAULT_CHOICE)
    run = lab.run_pair(fuser, *(read_image(p) for p in (VIS, IR)), lab.Settings(complementary=True))
    change = {row[0]: row[3] for row in lab.metrics_table(run)}
    assert all(change[m] > 0 for m in ("EN", "SD", "SF", "AG"))  # the holes add edges and contrast
    assert all(change[m] < 0 for m in ("SCD", "VIF", "Qabf", "SSIM", "CC"))  # what the sources showed is lost


def test_the_gate_figure_is_the_regular_grid_a_phone_cuts_into_panels(lab_app):
    """app.PHONE_GATES cuts the figure into render.GATE_GRID's panels by arithmetic alone: the
    gaps it skips must be white, and each panel it shows must hold a map (not a gap or padding)."""
    fuser, _ = lab_app.bank.get(lab.DEFAULT_CHOICE)
    run = lab.run_pair(fuser, *(read_image(p) for p in (VIS, IR)), lab.Settings())
    figs = render.render(run)
    fig, _ = render.gate_figure(figs.levels, figs.change_limit)
    g = render.GATE_GRID
    H, W = fig.shape[:2]
    w, h = (W - (g["cols"] - 1) * g["col_gap"]) / g["cols"], (H - (g["rows"] - 1) * g["row_gap"]) / g["rows"]
    assert w == int(w) and h == int(h)
    w, h = int(w), int(h)
    for c in range(1, g["cols"]):
        assert (fig[:, c * (w + g["col_gap"]) - g["col_gap"]:c * (w + g["col_gap"])] == 255).all()
    for r in range(1, g["rows"]):
        assert (fig[r * (h + g["row_gap"]) - g["row_gap"]:r * (h + g["row_gap"])] == 255).all()
    for r in range(g["rows"]):
        for c in range(g["cols"]):
            panel = fig[r * (h + g["row_gap"]):r * (h + g["row_gap"]) + h, c * (w + g["col_gap"]):c * (w + g["col_gap"]) + w]
            assert panel.std() > 10, (r, c)
