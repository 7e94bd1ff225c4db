"""The in-browser Fuse in Chromium (headless, WebAssembly): `python app.py` as a subprocess,
the page driven as a visitor drives it. The browser's fused image and gates against the
server's own code path (`ivfusion.lab.runs`) on bundled pairs, no /fuse request in browser
mode, the server's Fuse when the model cannot load (its URL failed at the browser boundary by
Playwright's routing), and the live mode."""
import base64
import json
import os

import numpy as np
import pytest

from ivfusion import Fuser, read_image
from ivfusion.export import export_onnx
from ivfusion.lab import browser, examples, models, runs
from ivfusion.lab.settings import Settings
from tests.appserver import AppServer

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.server]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAIRS = ["msrs_00037N", "msrs_00009N", "roadscene_FLIR_05857"]  # night PNGs and an odd-sized JPEG
# (complementary masking checkbox, modality dropout choice) per intervention
INTERVENTIONS = {"none": (False, "none"), "complementary": (True, "none"), "drop-infrared": (False, "drop infrared")}
FUSED_BOUND = 2 / 255
GATE_BOUND = 1e-3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The Lab's cache folder holding the default model's graph, exported and checked by the
    library as the app would, so that the server starts with it ready."""
    folder = tmp_path_factory.mktemp("cache")
    fuser, _ = models.ModelBank(env={}).get(models.DEFAULT_CHOICE)
    (folder / "onnx").mkdir()
    export_onnx(fuser.model, folder / "onnx" / f"isfuse-{browser.weights_digest(fuser.model)[:20]}.onnx")
    return folder


@pytest.fixture(scope="module")
def server(cache):
    env = {"IVFUSION_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "IVFUSION_OFFICIAL_WEIGHTS": "",
           "IVFUSION_WEIGHTS": os.environ.get("IVFUSION_WEIGHTS", "")}
    with AppServer(env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def chromium(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=FLAGS)
        yield b
        b.close()


def fn_index(config: dict, api_name: str) -> int:
    return next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == api_name)


def joins(page) -> list:
    """The fn_index of every queued event the page sends, as it sends it."""
    sent = []

    def on_request(req):
        if "/gradio_api/queue/join" in req.url and req.post_data:
            sent.append(json.loads(req.post_data).get("fn_index"))

    page.on("request", on_request)
    return sent


def open_lab(chromium, server, route_model_fails: bool = False):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    if route_model_fails:
        page.route("**/*.onnx", lambda route: route.abort())
    sent = joins(page)
    page.goto(server.url)
    page.wait_for_function("window.ivfusionLab && ['ready', 'failed'].includes(window.ivfusionLab.state)",
                           timeout=300_000)
    return page, sent


def floats(page, expr: str) -> np.ndarray:
    """A Float32Array of the page, by its bytes."""
    b64 = page.evaluate(f"""() => {{ const a = {expr}; const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
        let s = ''; for (let i = 0; i < u.length; i += 32768) s += String.fromCharCode.apply(null, u.subarray(i, i + 32768));
        return btoa(s); }}""")
    return np.frombuffer(base64.b64decode(b64), np.float32)


def canvas_rgb(page, canvas_id: str) -> np.ndarray:
    data = page.evaluate(f"""() => {{ const c = document.getElementById('{canvas_id}');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }}""")
    w, h, px = data
    return np.asarray(px, np.uint8).reshape(h, w, 4)[..., :3]


def set_controls(page, complementary: bool, dropout: str) -> None:
    box = page.get_by_label("Complementary masking")
    if box.is_checked() != complementary:
        box.click()
    page.get_by_label(dropout, exact=True).check()


def browser_fuse(page) -> None:
    before = page.evaluate("window.ivfusionLab.count || 0")
    page.click("#fuse-web-btn")
    page.wait_for_function("n => (window.ivfusionLab.count || 0) > n || !!window.ivfusionLab.fallbackWhy", arg=before,
                           timeout=600_000)
    assert not page.evaluate("window.ivfusionLab.fallbackWhy"), page.evaluate("window.ivfusionLab.fallbackWhy")


def test_the_browser_fuses_as_the_server_does_and_sends_no_fuse_request(chromium, server):
    page, sent = open_lab(chromium, server)
    assert page.evaluate("window.ivfusionLab.state") == "ready", page.inner_text("#ivf-status")
    assert page.evaluate("window.ivfusionLab.backend") == "WebAssembly"  # no GPU in headless Chromium
    fuse = fn_index(server.config, "fuse")
    lab_fuser, _ = models.ModelBank(env={}).get(models.DEFAULT_CHOICE)
    # the page runs the fp32 graph; the server's own path may be fast-mixed (bf16 CFIs, within
    # 2/255 of fp32 where bf16 is native), so the gates are compared with the same weights in fp32
    server_fuser = Fuser(lab_fuser.model, device="cpu", max_side=lab_fuser.max_side, path="fast")
    names = list(examples.EXAMPLES)
    for name in PAIRS:
        page.locator("#examples .thumbnail-item").nth(names.index(name)).click()
        page.wait_for_function("n => { const i = document.querySelector('#visible-input img'); "
                               "return i && i.src.includes(n); }", arg=name, timeout=60_000)
        vis = read_image(examples.EXAMPLES_DIR / "vi" / next(p.name for p in (examples.EXAMPLES_DIR / "vi").iterdir()
                                                           if p.stem == name))
        ir = read_image(examples.EXAMPLES_DIR / "ir" / next(p.name for p in (examples.EXAMPLES_DIR / "ir").iterdir()
                                                          if p.stem == name))
        pair = runs.SharedPair(server_fuser, vis, ir)
        h, w = pair.shape
        for kind, (complementary, dropout) in INTERVENTIONS.items():
            set_controls(page, complementary, dropout)
            browser_fuse(page)
            assert page.evaluate("window.ivfusionLab.last.where") == "in your browser (WebAssembly)"
            assert "Computed in your browser (WebAssembly)" in page.inner_text("#ivf-where")
            want = pair.intervene(Settings(complementary=complementary, dropout=dropout))  # seed 0, the page's
            fused = floats(page, "window.ivfusionLab.last.fused").reshape(h, w)
            assert np.abs(fused - want.fused_y).max() <= FUSED_BOUND, (name, kind)
            clean = floats(page, "window.ivfusionLab.clean.fused").reshape(h, w)
            assert np.abs(clean - pair.clean.fused_y).max() <= FUSED_BOUND, (name, kind)
            for k, g in enumerate(want.gates):
                got = floats(page, f"window.ivfusionLab.last.gates[{k}].data").reshape(g.shape)
                assert np.abs(got - g).max() <= GATE_BOUND, (name, kind, k)
            # the picture: the luminance's bound plus one grey level of rounding
            rgb = canvas_rgb(page, "ivf-fused-int").astype(int)
            assert np.abs(rgb - want.fused_rgb.astype(int)).max() <= 3, (name, kind)
    assert sent and fuse not in sent  # the masks' requests only: no /fuse


def test_the_server_fuses_when_the_model_cannot_load(chromium, server):
    page, sent = open_lab(chromium, server, route_model_fails=True)
    assert page.evaluate("window.ivfusionLab.state") == "failed"
    assert "Fuse runs on the server" in page.inner_text("#ivf-status")
    assert not page.locator("#fuse-web-btn").is_visible() and page.locator("#fuse-btn").is_visible()
    before = page.locator("#notices").inner_text()
    page.click("#fuse-btn")
    page.wait_for_function("s => document.querySelector('#notices').innerText !== s", arg=before, timeout=600_000)
    assert fn_index(server.config, "fuse") in sent
    assert "computed on the server" in page.inner_text("#ivf-status")


def test_live_mode_moves_a_hole_with_the_pointer(chromium, server):
    page, _ = open_lab(chromium, server)
    page.locator("#examples .thumbnail-item").nth(list(examples.EXAMPLES).index("roadscene_FLIR_05857")).click()
    page.wait_for_function("() => document.querySelector('#visible-input img')?.src.includes('roadscene_FLIR_05857')",
                           timeout=60_000)
    set_controls(page, False, "none")
    browser_fuse(page)
    page.check("#ivf-live")
    canvas = page.locator("#ivf-fused-int")
    seen = []
    for fx in (0.25, 0.75):  # the hole follows the pointer; each move makes one new frame at least
        canvas.scroll_into_view_if_needed()
        view = canvas.bounding_box()  # where it is now: the text above it may have grown
        before = page.evaluate("window.ivfusionLab.live.count || 0")
        page.mouse.move(view["x"] + fx * view["width"], view["y"] + 0.5 * view["height"])
        page.wait_for_function("n => (window.ivfusionLab.live.count || 0) > n", arg=before, timeout=600_000)
        fused = floats(page, "window.ivfusionLab.last.fused")
        clean = floats(page, "window.ivfusionLab.clean.fused")
        w = page.evaluate("window.ivfusionLab.pair.w")
        seen.append(fused)
        x = int(np.argmax(np.abs(fused - clean))) % w
        assert abs(x / w - fx) < 0.1, (x, w, fx)  # the largest change sits under the pointer
    assert np.abs(seen[0] - seen[1]).max() > 1 / 255
    assert "frames/s" in page.inner_text("#ivf-fps")
