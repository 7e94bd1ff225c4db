"""The Intervention Lab app: its callbacks, its HTTP API (gradio_client against a real server on
127.0.0.1) and a real browser (Playwright driving Debian's Chromium).

Everything runs the real network at a reduced size (the server downscales to 128 pixels a
side) so that the module stays within a few minutes on two busy CPU cores.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import contextlib  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import lab, read_image  # noqa: E402

SIDE = 128
BROWSER_SIDE = 320
EX = lab.EXAMPLES_DIR
VIS, IR = EX / "vi" / "msrs_00039N.png", EX / "ir" / "msrs_00039N.png"
OUT = Path(__file__).resolve().parents[1] / "test-output"
CHROMIUM = "/usr/bin/chromium"
N_OUTPUTS = 15  # compare, fused x2, inputs x2, difference, gates x6, notices, files, state


@pytest.fixture(scope="module")
def bank():
    return lab.ModelBank(env={}, device="cpu", max_side=SIDE)


@pytest.fixture(scope="module")
def lab_app(bank):
    return app.LabApp(bank)


# ----------------------------------------------------------------------------- callbacks
def test_fuse_callback_returns_every_output(lab_app):
    out = lab_app.fuse(str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "drop IR", 16, 2, 1)
    assert len(out) == N_OUTPUTS
    compare, clean, inter, in_vis, in_ir, diff, *rest = out
    gates, notices, files, state = rest[:6], rest[6], rest[7], rest[8]
    assert clean.shape == (96, 128, 3) and clean.dtype == np.uint8
    np.testing.assert_array_equal(compare[0], clean)
    np.testing.assert_array_equal(compare[1], inter)
    assert not np.array_equal(clean, inter)
    assert in_ir.max() == 0 and in_vis.min() == 0  # IR dropped; visible holes
    assert diff.ndim == 3
    assert all(g.ndim == 3 and g.shape[1] > 128 for g in gates)  # panels: heat map + colour bar
    assert "complementary masking + drop IR" in notices and "Downscaled from 640x480" in notices
    assert [Path(f).name for f in files] == ["fused_clean.png", "fused_intervened.png", "gates.npz"]
    np.testing.assert_array_equal(read_image(files[1]), inter)
    rows = lab_app.metrics(state)
    assert [r[0] for r in rows][:3] == ["EN", "SD", "SF"] and len(rows) == 11
    again = lab_app.fuse(str(VIS), str(IR), lab.UNTRAINED_CHOICE, False, True, "none", 16, 2, 1, None, None, state)
    assert "reused" in again[12]  # same pair, same session: the clean pass is not recomputed
    np.testing.assert_array_equal(again[1], clean)


def test_fuse_callback_takes_gradio_payloads_and_a_drawn_mask(lab_app, tmp_path):
    layer = np.zeros((480, 640, 4), np.uint8)
    layer[100:300, 200:400, 3] = 255  # painted: hide this box of the infrared image
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    editor = {"background": {"path": str(IR)}, "layers": [{"path": str(tmp_path / "layer.png")}], "composite": None}
    out = lab_app.fuse({"path": str(VIS)}, {"path": str(IR)}, lab.UNTRAINED_CHOICE, False, False, "none", 16, 3, 0,
                       None, editor)
    in_vis, in_ir, notices = out[3], out[4], out[12]
    assert "drawn mask" in notices
    assert in_ir[21:59, 41:79].max() == 0 and in_ir.max() > 0  # the box (20:60, 40:80 at 128x96) is hidden
    assert in_vis.min() > 0 or (in_vis == 0).mean() < 0.01  # the visible input is untouched


@pytest.mark.parametrize("case, message", [
    ("missing", "visible image: missing"),
    ("corrupt", "not a readable image"),
    ("holes", "holes must be"),
    ("model", "unknown model"),
])
def test_bad_input_is_a_readable_gr_error(lab_app, tmp_path, case, message):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg" * 3)
    args = dict(visible=str(VIS), infrared=str(IR), model=lab.UNTRAINED_CHOICE, holes=3)
    args.update({"missing": dict(visible=None), "corrupt": dict(visible=str(bad)), "holes": dict(holes=9),
                 "model": dict(model="GPT")}[case])
    with pytest.raises(gr.Error, match=message):
        lab_app.fuse(**args)


def test_other_callbacks(lab_app, tmp_path):
    with pytest.raises(gr.Error, match="Fuse a pair first"):
        lab_app.metrics(None)
    with pytest.raises(gr.Error, match="K must be from 4 to 32"):
        lab_app.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, k=64)
    tif = tmp_path / "ir.tif"
    cv2.imwrite(str(tif), read_image(IR).astype(np.uint16) * 257)
    png = lab_app.on_input({"path": str(tif)})
    assert png.endswith(".png") and read_image(png).dtype == np.uint16
    assert lab_app.on_input({"path": str(IR)}) == gr.update()
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(gr.Error, match="not a readable image"):
        lab_app.on_input({"path": str(tmp_path / "x.png")})
    assert "Ready" in lab_app.info(str(VIS), str(IR)) or "downscaled" in lab_app.info(str(VIS), str(IR))
    assert "untrained" in lab_app.model_info(lab.UNTRAINED_CHOICE)


def test_prefetch_callback_prepares_the_clean_pass_for_fuse(lab_app):
    assert lab_app.prefetch(str(VIS), None, lab.UNTRAINED_CHOICE, None) == gr.skip()
    session = lab_app.prefetch(str(VIS), str(IR), lab.UNTRAINED_CHOICE, None)
    assert session["cache"]["key"]
    assert lab_app.prefetch(str(VIS), str(IR), lab.UNTRAINED_CHOICE, session) == gr.skip()  # already there
    out = lab_app.fuse(str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "none", 16, 3, 0, None, None, session)
    assert "reused" in out[12]
    assert lab_app.prefetch(str(VIS), "/no/such/file.png", lab.UNTRAINED_CHOICE, None) == gr.skip()  # silent


def test_gate_colour_scale_choice(lab_app):
    args = (str(VIS), str(IR), lab.DEFAULT_CHOICE, True, False, "none", 16, 2, 1)
    fixed = lab_app.fuse(*args)[6:12]
    stretched = lab_app.fuse(*args, gate_scale="stretched per level")[6:12]
    assert all(not np.array_equal(a, b) for a, b in zip(stretched, fixed))
    np.testing.assert_array_equal(lab_app.fuse(*args, gate_scale="stretched")[6], stretched[0])
    with pytest.raises(gr.Error, match="gate colour scale must be one of"):
        lab_app.fuse(*args, gate_scale="rainbow")
    _, gate_fixed, _ = lab_app.stability(*args, k=4)
    _, gate_stretched, _ = lab_app.stability(*args, k=4, gate_scale="stretched per level")
    assert not np.array_equal(gate_fixed, gate_stretched)


def test_stability_callback(lab_app):
    inst, gate, text = lab_app.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "none", 16, 3, 0,
                                         None, None, 4)
    assert inst.ndim == 3 and gate.ndim == 3
    assert "r = " in text and "4 interventions" in text


def test_layout_has_stable_api_names_labels_and_a_bounded_queue(bank):
    demo = app.build_demo(bank, max_size=7, concurrency=1)
    cfg = demo.get_config_file()
    names = {d["api_name"] for d in cfg["dependencies"] if d.get("api_visibility") == "public"}
    assert {"fuse", "stability", "metrics"} <= names
    labels = {c["props"].get("label") for c in cfg["components"]}
    assert {"Visible image", "Infrared image"} <= labels
    assert demo._queue.max_size == 7
    assert demo._queue.default_concurrency_limit == 1
    heavy = [fn for fn in demo.fns.values() if fn.api_name in ("fuse", "stability")]
    assert len(heavy) == 2 and all(fn.queue and fn.concurrency_id == "compute" for fn in heavy)  # one queue, one at a time
    assert all(fn.concurrency_limit in ("default", 1) for fn in heavy)


# ----------------------------------------------------------------------------- a real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(bank):
    demo = app.build_demo(bank)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(bank):
    demo, url = _launch(bank)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser_server():
    """The app as a user meets it, at a larger size than the API tests (for a readable screenshot)."""
    demo, url = _launch(lab.ModelBank(env={}, device="cpu", max_side=BROWSER_SIDE))
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def test_api_lists_fuse_and_stability_with_labelled_image_inputs(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/fuse", "/stability", "/metrics"} <= set(named)
    for ep in ("/fuse", "/stability"):
        params = named[ep]["parameters"]
        assert [p["label"] for p in params[:2]] == ["Visible image", "Infrared image"]
        assert [p["parameter_name"] for p in params[:2]] == ["visible", "infrared"]


@pytest.mark.parametrize("kwargs, expect", [
    (dict(complementary=True), "complementary masking"),
    (dict(complementary=False, random_masking=True), "random masking"),
    (dict(complementary=False, dropout="drop visible"), "drop visible"),
    (dict(complementary=False, dropout="drop IR"), "drop IR"),
])
def test_fuse_over_http_with_each_intervention(client, kwargs, expect):
    from gradio_client import handle_file

    out = client.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), seed=3, **kwargs,
                         api_name="/fuse")
    assert len(out) == N_OUTPUTS - 1  # the session state stays on the server
    compare, clean, inter, in_vis, in_ir, diff, *gates = out[:12]
    notices, files = out[12], out[13]
    assert f"Intervention: {expect}." in notices
    clean, inter = read_image(clean), read_image(inter)
    assert clean.shape == (96, 128, 3) and not np.array_equal(clean, inter)
    in_vis, in_ir = read_image(in_vis), read_image(in_ir)
    if expect == "drop IR":
        assert in_ir.max() == 0 and in_vis.max() > 0
    elif expect == "drop visible":
        assert in_vis.max() == 0 and in_ir.max() > 0
    else:
        assert (in_vis == 0).any() and (in_ir == 0).any()
    assert all(read_image(g).shape[1] > 128 for g in gates)  # heat map panels with colour bars
    assert {Path(f).name for f in files} == {"fused_clean.png", "fused_intervened.png", "gates.npz"}
    np.testing.assert_array_equal(read_image([f for f in files if f.endswith("intervened.png")][0]), inter)


def test_stability_over_http(client):
    from gradio_client import handle_file

    inst, gate, text = client.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), k=4,
                                      api_name="/stability")
    assert read_image(inst).ndim == 3 and read_image(gate).ndim == 3
    assert "Correlation between instability and mean gate: r = " in text


def test_api_errors_are_readable(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(Exception, match="not a readable image") as err:
        client.predict(visible=handle_file(str(bad)), infrared=handle_file(str(IR)), api_name="/fuse")
    assert "Traceback" not in str(err.value)
    with pytest.raises(Exception, match="infrared image: missing"):
        client.predict(visible=handle_file(str(VIS)), infrared=None, api_name="/fuse")


def test_sessions_do_not_share_state(server):
    from gradio_client import Client, handle_file

    a, b = Client(server, verbose=False), Client(server, verbose=False)
    a.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), complementary=False, dropout="drop IR",
              api_name="/fuse")
    b.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), complementary=False, api_name="/fuse")
    rows_a = a.predict(api_name="/metrics")["data"]
    rows_b = b.predict(api_name="/metrics")["data"]
    assert any(float(r[3]) != 0 for r in rows_a)  # A's own run: IR dropped, metrics change
    assert all(float(r[3]) == 0 for r in rows_b if r[3] == r[3])  # B's own run: no intervention


# ----------------------------------------------------------------------------- a real browser
def _chromium(playwright):
    """Debian's Chromium (Playwright's own browser download cannot work here); fails if absent."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install Debian's chromium package (apt-get install "
                    "chromium)", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


@contextlib.contextmanager
def _lab_page(url: str, height: int):
    """A Chromium page on the running lab, ready once the Fuse button is there."""
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(url)
            page.wait_for_selector("#fuse-btn", timeout=60_000)
            yield page
        finally:
            browser.close()


def test_browser_upload_intervene_fuse_and_see_gates(browser_server):
    from playwright.sync_api import expect

    shot = OUT / "app-browser.png"
    shot.unlink(missing_ok=True)
    with _lab_page(browser_server, 1000) as page:
        page.locator("#visible-input input[type=file]").set_input_files(str(VIS))
        page.locator("#infrared-input input[type=file]").set_input_files(str(IR))
        expect(page.locator("#pair-info")).to_contain_text("Infrared:", timeout=60_000)
        expect(page.locator("#pair-info")).to_contain_text("640x480")
        page.get_by_label("Complementary masking").uncheck()
        page.get_by_label("Random masking").check()
        page.locator("#fuse-btn").click()
        expect(page.locator("#notices")).to_contain_text("Intervention: random masking", timeout=180_000)
        for sel in ("#fused-clean", "#fused-intervened", "#difference", "#gate-clean-1", "#gate-clean-2",
                    "#gate-clean-3", "#gate-intervened-1", "#gate-intervened-2", "#gate-intervened-3"):
            img = page.locator(f"{sel} img").first
            expect(img).to_be_visible(timeout=30_000)
            page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
            w, h = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            assert (w, h) == (320, 240) if sel.startswith("#fused") else w > 320, (sel, w, h)
        gate_png = np.frombuffer(page.locator("#gate-intervened-3 img").first.screenshot(), np.uint8)
        gate = cv2.imdecode(gate_png, cv2.IMREAD_COLOR)
        assert gate.std() > 10  # a rendered heat map, not a blank box
        # the stretched gate scale redraws the gates (the default is the fixed 0..1 scale)
        shot_gate = lambda: cv2.imdecode(np.frombuffer(page.locator("#gate-clean-3 img").first.screenshot(),
                                                       np.uint8), cv2.IMREAD_COLOR).astype(int)
        fixed, before = shot_gate(), page.locator("#gate-clean-3 img").first.get_attribute("src")
        page.get_by_label("stretched per level").check()
        page.locator("#fuse-btn").click()
        page.wait_for_function("([i, s]) => i.src !== s && i.complete && i.naturalWidth > 320",
                               arg=[page.locator("#gate-clean-3 img").first.element_handle(), before],
                               timeout=120_000)
        stretched = shot_gate()
        assert fixed.shape == stretched.shape and np.abs(fixed - stretched).mean() > 5
        expect(page.locator("#metrics")).to_contain_text("Qabf", timeout=120_000)
        k_box = page.locator("#k-slider input[type=number]")
        k_box.fill("4")
        k_box.press("Enter")
        page.locator("#stability-btn").click()
        expect(page.locator("#stability-text")).to_contain_text("Correlation between instability", timeout=180_000)
        expect(page.locator("#stability-text")).to_contain_text("4 interventions")
        for sel in ("#instability", "#mean-gate"):
            page.wait_for_function("i => i.complete && i.naturalWidth > 320",
                                   arg=page.locator(f"{sel} img").first.element_handle(), timeout=30_000)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.is_file() and shot.stat().st_size > 50_000


def test_browser_shows_a_readable_error_for_a_corrupt_upload(browser_server, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)  # a PNG signature and nothing valid after it
    with _lab_page(browser_server, 900) as page:
        page.locator("#visible-input input[type=file]").set_input_files(str(bad))
        page.locator("#infrared-input input[type=file]").set_input_files(str(IR))
        expect(page.locator("#pair-info")).to_contain_text("Cannot use this pair", timeout=60_000)
        page.locator("#fuse-btn").click()
        toast = page.locator(".toast-body").filter(has_text="not a readable image").first
        expect(toast).to_be_visible(timeout=60_000)
        assert "photo.png" in toast.inner_text() and "Traceback" not in page.content()
        page.screenshot(path=str(OUT / "app-browser-error.png"))
