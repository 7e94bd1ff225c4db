"""The Intervention Lab app: its callbacks and its HTTP API (gradio_client against a real server
on 127.0.0.1). The browser tests are in test_browser.py.

Everything runs the real network at a reduced size (the server downscales to 128 pixels a
side) so that the module stays within a few minutes on two busy CPU cores.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import time  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import lab, read_image  # noqa: E402
from ivfusion.lab import callbacks as cb  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.server]  # the whole module is slow: a real server and the real network

SIDE = 128
EX = lab.EXAMPLES_DIR
VIS, IR = EX / "vi" / "msrs_00039N.png", EX / "ir" / "msrs_00039N.png"


@pytest.fixture(scope="module")
def bank():
    return lab.ModelBank(env={}, device="cpu", max_side=SIDE)


@pytest.fixture(scope="module")
def lab_app(bank):
    return app.LabApp(bank)


def _inputs(out: dict) -> tuple[np.ndarray, np.ndarray]:
    """The visible and infrared network inputs from the side-by-side `inputs` PNG (128 px wide each)."""
    both = read_image(out["inputs"])
    both = both[..., 0] if both.ndim == 3 else both
    return both[:, :128], both[:, -128:]


def _fuse(lab_app, *args, **kwargs) -> dict:
    out = lab_app.fuse(*args, **kwargs)
    assert sorted(out) == sorted(app.FUSE_OUTPUTS)  # every named output, nothing else
    return out


# ----------------------------------------------------------------------------- callbacks
def test_fuse_callback_returns_every_named_output(lab_app):
    out = _fuse(lab_app, str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "drop infrared", 12.5, 2, 1)
    clean, inter = read_image(out["fused_clean"]), read_image(out["fused_intervened"])
    assert clean.shape == (96, 128, 3) and clean.dtype == np.uint8 and out["fused_clean"].endswith(".png")
    assert not np.array_equal(clean, inter)
    run = out["state"]["run"]
    np.testing.assert_array_equal(inter, run.intervened.fused_rgb)  # the page shows the exact pixels
    in_vis, in_ir = _inputs(out)
    assert in_ir.max() == 0 and in_vis.min() == 0  # infrared dropped; visible holes
    gates = read_image(out["gates"])
    assert gates.ndim == 3 and gates.shape[1] > 3 * 128 and gates.shape[0] > 3 * 96  # 3 rows of 3 maps + bars
    for level in ("Coarse", "Mid", "Fine"):
        assert f"**{level} (" in out["gate_captions"]
    assert out["gate_captions"].count("Mean clean") == 3 and "\u03b7 = 0.3" in out["gate_captions"]
    notices = out["notices"]
    assert "complementary masking + drop infrared (holes of 12 px)" in notices and "Downscaled from 640x480" in notices
    assert "/" not in notices.replace("1/4", "")  # no server paths
    assert "Change in the fused image" in out["difference_caption"]
    rows = lab_app.metrics(out["state"])
    assert [r[0] for r in rows][:3] == ["EN", "SD", "SF"] and len(rows) == 11 and len(rows[0]) == 4
    files = lab_app.downloads(out["state"])
    assert [Path(f).name for f in files] == ["fused_clean.png", "fused_intervened.png", "gates.npz"]
    np.testing.assert_array_equal(read_image(files[1]), inter)


def test_refuse_of_the_same_pair_reuses_its_clean_pass(lab_app):
    state = {}
    first = _fuse(lab_app, str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "none", state=state)
    clean = state["run"].clean
    again = _fuse(lab_app, str(VIS), str(IR), lab.UNTRAINED_CHOICE, False, True, "none", state=state)
    assert state["run"].clean is clean  # the shared pair's clean pass, not computed again
    np.testing.assert_array_equal(read_image(again["fused_clean"]), read_image(first["fused_clean"]))
    assert "reused" not in again["notices"]  # no repeated notices
    _fuse(lab_app, str(IR), str(IR), lab.UNTRAINED_CHOICE, True, state=state)  # another pair
    assert state["run"].clean is not clean


def test_display_options_rerender_without_a_forward_pass(lab_app, monkeypatch):
    state = {}
    out = _fuse(lab_app, str(VIS), str(IR), lab.DEFAULT_CHOICE, True, False, "none", 12.5, 6, 1, state=state)
    fuser, _ = lab_app.bank.get(lab.DEFAULT_CHOICE)
    calls = []
    for name in ("run", "fuse"):
        real = getattr(type(fuser), name)
        monkeypatch.setattr(type(fuser), name, lambda self, *a, _real=real, **k: (calls.append(1), _real(self, *a, **k))[1])
    stretched = lab_app.rerender("stretched per level", state)
    assert sorted(stretched) == sorted(app.RENDER_OUTPUTS) and calls == []
    assert "span 0 to 1" in out["gate_captions"] and "span 0 to 1" not in stretched["gate_captions"]
    a, b = read_image(stretched["gates"]).astype(int), read_image(out["gates"]).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5
    back = lab_app.rerender("fixed 0 to 1", state)
    assert np.abs(read_image(back["gates"]).astype(int) - b).mean() < 2  # JPEG noise only
    with pytest.raises(gr.Error, match="gate colour scale must be one of"):
        lab_app.rerender("rainbow", state)
    # a new session shows the precomputed default result, and re-renders it too
    assert "fused_clean" in lab_app.default_outputs and lab_app.default_run is not None
    assert "span 0 to 1" in lab_app.rerender("fixed 0 to 1", {})["gate_captions"]


def test_fuse_callback_takes_gradio_payloads_and_a_drawn_mask(lab_app, tmp_path):
    layer = np.zeros((480, 640, 4), np.uint8)
    layer[100:300, 200:400, 3] = 255  # painted: hide this box of the infrared image
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    editor = {"background": {"path": str(IR)}, "layers": [{"path": str(tmp_path / "layer.png")}], "composite": None}
    out = _fuse(lab_app, {"path": str(VIS)}, {"path": str(IR)}, lab.UNTRAINED_CHOICE, False, False, "none", 6.25, 3, 0,
                None, editor)
    in_vis, in_ir = _inputs(out)
    assert "drawn mask" in out["notices"]
    assert in_ir[21:59, 41:79].max() == 0 and in_ir.max() > 0  # the box (20:60, 40:80 at 128x96) is hidden
    assert in_vis.min() > 0 or (in_vis == 0).mean() < 0.01  # the visible input is untouched


@pytest.mark.parametrize("case, message", [
    ("missing", "visible image: missing"),
    ("corrupt", "not a readable image"),
    ("holes", "holes must be"),
    ("hole size", "hole size must be"),
    ("model", "unknown model"),
])
def test_bad_input_is_a_readable_gr_error(lab_app, tmp_path, case, message):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg" * 3)
    args = dict(visible=str(VIS), infrared=str(IR), model=lab.UNTRAINED_CHOICE, holes=3)
    args.update({"missing": dict(visible=None), "corrupt": dict(visible=str(bad)), "holes": dict(holes=9),
                 "hole size": dict(hole_percent=90), "model": dict(model="GPT")}[case])
    with pytest.raises(gr.Error, match=message):
        lab_app.fuse(**args)


def test_other_callbacks(lab_app, tmp_path):
    fresh = app.LabApp(lab_app.bank, precompute=False)
    with pytest.raises(gr.Error, match="Fuse a pair first"):
        fresh.metrics(None)
    with pytest.raises(gr.Error, match="Fuse a pair first"):
        fresh.downloads({})
    assert len(lab_app.metrics({})) == 11  # a new session: the metrics of the precomputed result
    with pytest.raises(gr.Error, match="K must be a whole number from 4 to 32"):
        lab_app.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, k=64)
    tif = tmp_path / "ir.tif"
    cv2.imwrite(str(tif), read_image(IR).astype(np.uint16) * 257)
    png = lab_app.on_input({"path": str(tif)})
    assert png.endswith(".png") and read_image(png).dtype == np.uint16
    assert lab_app.on_input({"path": str(IR)}) == gr.skip()  # shown as it is: nothing written back
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(gr.Error, match="not a readable image"):
        lab_app.on_input({"path": str(tmp_path / "x.png")})
    assert "Ready" in lab_app.info(str(VIS), str(IR)) or "downscaled" in lab_app.info(str(VIS), str(IR))
    assert "untrained" in lab_app.model_info(lab.UNTRAINED_CHOICE)
    assert "/" not in lab_app.model_info(lab.DEFAULT_CHOICE)  # no server paths
    assert "**6 px** on this 128x96 pair (as downscaled)" in lab_app.hole_text(str(VIS), 6.25)
    assert lab_app.hole_text(str(VIS), 30) == "Hole size must be from 1% to 25% of the short side."  # no false px
    changed = dict(zip(app.PAIR_OUTPUTS, lab_app.on_pair_change(str(VIS), str(IR), 6.25)))
    assert "fused_clean" not in changed and "notices" not in changed  # the results stay until the next Fuse
    assert changed["draw_visible"] is None and "**6 px**" in changed["hole_text"] and "640x480" in changed["pair_info"]


def test_prefetch_callback_prepares_the_clean_pass_for_fuse(lab_app):
    lab_app.prefetch(str(VIS), None, lab.UNTRAINED_CHOICE)  # nothing to do
    lab_app.prefetch(str(VIS), str(IR), lab.UNTRAINED_CHOICE)
    pair = lab_app._pair(str(VIS), str(IR), lab.UNTRAINED_CHOICE)  # the shared pair cache's entry
    lab_app.prefetch(str(VIS), str(IR), lab.UNTRAINED_CHOICE)
    assert lab_app._pair(str(VIS), str(IR), lab.UNTRAINED_CHOICE) is pair  # already there
    out = _fuse(lab_app, str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "none", state={})
    assert out["state"]["run"].clean is pair.clean
    lab_app.prefetch(str(VIS), "/no/such/file.png", lab.UNTRAINED_CHOICE)  # silent


def test_stability_callback_and_its_cancel(lab_app):
    out = lab_app.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, True, False, "none", 6.25, 3, 0, None, None, 4)
    assert sorted(out) == sorted(app.STABILITY_OUTPUTS)
    assert all(read_image(out[n]).ndim == 3 for n in ("instability", "mean_gate", "features"))
    assert "**Output** (" in out["summary"] and "r = " in out["summary"] and "4 runs" in out["summary"]
    state = {}
    seen = []

    def progress(*a, **k):
        seen.append(k.get("desc"))
        if len(seen) == 3:
            lab_app.cancel(state)  # the Cancel button, from another thread in the app

    out = lab_app.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, k=16, state=state, progress=progress)
    assert "cancelled after 2 of 16 runs" in out["summary"]  # the maps of the runs done are shown
    assert seen[:3] == ["0 of 16 interventions", "1 of 16 interventions", "2 of 16 interventions"]


def test_compare_runs_the_same_pair_and_masks_through_two_models(lab_app):
    state = {}
    out = lab_app.compare(str(VIS), str(IR), lab.DEFAULT_CHOICE, lab.UNTRAINED_CHOICE, True, False, "none", 12.5, 3,
                          2, state=state)
    assert sorted(out) == sorted(app.COMPARE_OUTPUTS)
    a, b = (lab_app._pair(str(VIS), str(IR), m) for m in (lab.DEFAULT_CHOICE, lab.UNTRAINED_CHOICE))
    assert a.model == lab.DEFAULT_CHOICE and b.model == lab.UNTRAINED_CHOICE
    run_a = lab.run_session_pair(a, lab.Settings(True, False, "none", 12.5, 3, 2))
    run_b = lab.run_session_pair(b, lab.Settings(True, False, "none", 12.5, 3, 2))
    np.testing.assert_array_equal(run_a.intervened.masks[0], run_b.intervened.masks[0])  # the same masks
    fused = read_image(out["compare_fused"]["value"])
    assert out["compare_fused"]["label"] == "Fused, intervened: Bundled (left) | Untrained (right)"
    np.testing.assert_array_equal(fused[:, :128], run_a.intervened.fused_rgb)
    np.testing.assert_array_equal(fused[:, -128:], run_b.intervened.fused_rgb)
    strip = read_image(out["compare_fine"]["value"])
    assert strip.shape[0] > 2 * 128 * 0.75  # two strips, one above the other
    assert lab.UNTRAINED_CHOICE in out["compare_summary"] and "the same masks" in out["compare_summary"]
    with pytest.raises(gr.Error, match="Choose a second model"):
        lab_app.compare(str(VIS), str(IR), lab.DEFAULT_CHOICE, lab.DEFAULT_CHOICE)


def test_layout_has_stable_api_names_labels_and_fair_queues(bank):
    demo = app.build_demo(bank, max_size=7, concurrency=1, precompute=False)
    cfg = demo.get_config_file()
    names = {d["api_name"] for d in cfg["dependencies"] if d.get("api_visibility") == "public"}
    assert {"fuse", "stability", "metrics", "render", "downloads", "compare"} <= names
    labels = {c["props"].get("label") for c in cfg["components"]}
    assert {"Visible image", "Infrared image"} <= labels
    assert demo._queue.max_size == 7
    assert demo._queue.default_concurrency_limit == 1
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    # /fuse has its own group of FUSE_WORKERS handlers: cache hits are answered while forwards take
    # turns in the one compute slot
    assert fns["fuse"].queue and fns["fuse"].concurrency_id == "fuse"
    assert fns["fuse"].concurrency_limit == cb.FUSE_WORKERS > 1
    # stability has its own group: a long run never holds up another user's Fuse
    assert fns["stability"].concurrency_id == "stability" and fns["stability"].concurrency_limit == 1
    assert fns["render"].concurrency_id not in ("compute", "stability")
    assert len(fns["fuse"].outputs) == len(app.FUSE_OUTPUTS)


# ----------------------------------------------------------------------------- a real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(bank, **kwargs):
    """The app on a free port of 127.0.0.1; returns (demo, url)."""
    demo = app.build_demo(bank, **kwargs)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def served(bank):
    demo, url = launch(bank)
    yield url, demo
    demo.close()


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def test_api_lists_endpoints_with_labelled_inputs_and_documented_outputs(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/fuse", "/stability", "/metrics", "/render", "/downloads"} <= set(named)
    for ep in ("/fuse", "/stability"):
        params = named[ep]["parameters"]
        assert [p["label"] for p in params[:2]] == ["Visible image", "Infrared image"]
        assert [p["parameter_name"] for p in params[:2]] == ["visible", "infrared"]
    assert len(named["/fuse"]["returns"]) == len(app.API_FUSE_OUTPUTS)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()
    for name in (*app.API_FUSE_OUTPUTS, *app.STABILITY_OUTPUTS):
        assert f"`{name}`" in doc, name
    for p in named["/fuse"]["parameters"]:
        assert f"`{p['parameter_name']}`" in doc, p["parameter_name"]
    # an API client uploads every file default with each call: only the pair may have one
    with_files = [p["parameter_name"] for p in named["/fuse"]["parameters"] if "path" in str(p["parameter_default"])]
    assert with_files == ["visible", "infrared"]


@pytest.mark.parametrize("kwargs, expect", [
    (dict(complementary=True), "complementary masking"),
    (dict(complementary=False, random_masking=True), "random masking"),
    (dict(complementary=False, dropout="drop visible"), "drop visible"),
    (dict(complementary=False, dropout="drop infrared"), "drop infrared"),
])
def test_fuse_over_http_with_each_intervention(client, kwargs, expect):
    from gradio_client import handle_file

    out = client.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), seed=3, **kwargs,
                         api_name="/fuse")
    out = dict(zip(app.API_FUSE_OUTPUTS, out, strict=True))  # the session state stays on the server
    assert f"Intervention: {expect}" in out["notices"]
    clean, inter = read_image(out["fused_clean"]), read_image(out["fused_intervened"])
    assert clean.shape == (96, 128, 3) and not np.array_equal(clean, inter)
    in_vis, in_ir = _inputs(out)
    if expect == "drop infrared":
        assert in_ir.max() == 0 and in_vis.max() > 0
    elif expect == "drop visible":
        assert in_vis.max() == 0 and in_ir.max() > 0
        assert (inter[..., 0] == inter[..., 1]).all() and "output is grey" in out["notices"]
    else:
        assert (in_vis == 0).any() and (in_ir == 0).any()
    assert read_image(out["gates"]).shape[1] > 3 * 128
    assert "**Mid (" in out["gate_captions"]


def test_stability_over_http(client):
    from gradio_client import handle_file

    out = client.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), k=4, api_name="/stability")
    out = dict(zip(app.STABILITY_OUTPUTS, out, strict=True))
    assert read_image(out["instability"]).ndim == 3 and read_image(out["features"]).ndim == 3
    assert "**Output** (" in out["summary"] and "Features, fine" in out["summary"]


def test_api_errors_are_readable(client, tmp_path, capfd):
    from gradio_client import handle_file

    capfd.readouterr()

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(Exception, match="not a readable image") as err:
        client.predict(visible=handle_file(str(bad)), infrared=handle_file(str(IR)), api_name="/fuse")
    assert "Traceback" not in str(err.value)
    with pytest.raises(Exception, match="infrared image: missing"):
        client.predict(visible=handle_file(str(VIS)), infrared=None, api_name="/fuse")
    with pytest.raises(Exception, match="K must be a whole number"):
        client.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), k=8.9, api_name="/stability")
    log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out  # a user error leaves no traceback in the server log


def test_sessions_do_not_share_state(server):
    from gradio_client import Client, handle_file

    a, b = Client(server, verbose=False), Client(server, verbose=False)
    a.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), complementary=False,
              dropout="drop infrared", api_name="/fuse")
    b.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), complementary=False, api_name="/fuse")
    rows_a = a.predict(api_name="/metrics")["data"]
    rows_b = b.predict(api_name="/metrics")["data"]
    assert any(float(r[3]) != 0 for r in rows_a)  # A's own run: infrared dropped, metrics change
    assert all(float(r[3]) == 0 for r in rows_b if r[3] == r[3])  # B's own run: no intervention
    files = a.predict(api_name="/downloads")
    assert sorted(Path(f).name for f in files) == ["fused_clean.png", "fused_intervened.png", "gates.npz"]


def test_a_stability_run_does_not_starve_another_clients_fuse(served):
    """Judged by the compute slot's own record and synchronised on it, never on the clock: the
    test takes places in the slot's queue itself (tests.helpers.SlotPlace), so that the run is
    paused with its first intervention queued when the other client's Fuse asks for the slot.
    The Fuse must then wait for at most that one intervention, and the run go on after it."""
    from gradio_client import Client, handle_file

    from ivfusion.lab.slot import COMPUTE
    from tests.helpers import SlotPlace, wait_until

    server, demo = served
    # the start-up precompute holds the slot too: it must be over, and the Fuse's seed is one it
    # did not compute (a cached result never enters the slot)
    wait_until(demo.lab_app.precomputed.is_set, "the Lab's start-up precompute to finish", 600)
    pair = dict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)))
    slow, quick = Client(server, verbose=False), Client(server, verbose=False)
    t0 = time.perf_counter()  # the slot's clock
    first = SlotPlace(COMPUTE)
    second = None
    try:
        wait_until(first.holding.is_set, "the compute slot to be free")
        job = slow.submit(**pair, k=32, api_name="/stability")
        wait_until(lambda: COMPUTE.waiting == 1, "the stability run's decode to queue for the slot")
        second = SlotPlace(COMPUTE)  # behind the decode, ahead of the run's first intervention
        wait_until(lambda: COMPUTE.waiting == 2, "the test's second place to queue behind the decode")
        first.release()
        wait_until(lambda: second.holding.is_set() and COMPUTE.waiting == 1, "the run's first intervention to queue")
        fuse = quick.submit(**pair, seed=4242, api_name="/fuse")
        wait_until(lambda: COMPUTE.waiting == 2, "the other client's Fuse to queue behind the run")
    finally:
        for place in (first, second):
            if place is not None:
                place.release()
    fuse.result()
    job.result()
    holds = [h for h in COMPUTE.history if h[1] >= t0]
    (_, asked, entered, left), = [h for h in holds if h[0] == "fuse"]
    steps = [h for h in holds if h[0] == "stability"]
    assert len(steps) > 1 and asked < min(h[2] for h in steps), \
        "the Fuse asked after the run's first step had entered: the test did not pause the run"
    assert left < max(h[3] for h in steps), "the Fuse waited for the whole stability run"
    ahead = [h for h in steps if asked < h[2] < entered]
    assert len(ahead) <= 1, f"{len(ahead)} stability steps went ahead of a waiting Fuse"


def test_the_janitor_trims_the_heap_once_the_compute_slot_goes_idle_after_work():
    """A trim on RSS growth alone happens mid-burst, and what the burst frees after it stayed
    mapped (tools/fault_probe.py --only l): one more trim follows once the slot is idle."""
    janitor = lab.session.Janitor(None)
    janitor.sweep()  # the first sweep trims: nothing trimmed before
    assert not janitor.sweep()["trimmed"]  # idle, no growth: nothing to do
    with lab.slot.COMPUTE.hold("test"):
        assert not janitor.sweep()["trimmed"]  # busy, no growth: not now
    assert janitor.sweep()["trimmed"]  # idle after work: the freed pages go back
    assert not janitor.sweep()["trimmed"]  # once


def test_an_expired_result_says_press_fuse_again(served):
    """When the Janitor drops a session's state (its memory bounds), /render, /metrics and
    /downloads say the result expired instead of showing the default example. Runs last: the
    sweep drops every session's state."""
    from gradio_client import Client, handle_file

    url, demo = served
    c = Client(url, verbose=False)
    c.predict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)), api_name="/fuse")
    assert len(c.predict(api_name="/metrics")["data"]) == 11
    assert lab.session.Janitor(demo, state_max_bytes=0).sweep()["states_dropped"] >= 1
    for api_name, kwargs in (("/render", dict(gate_scale="fixed 0 to 1")), ("/metrics", {}), ("/downloads", {})):
        with pytest.raises(Exception, match="expired.*press Fuse again") as err:
            c.predict(**kwargs, api_name=api_name)
        assert "Traceback" not in str(err.value)
    fresh = Client(url, verbose=False)  # a session that never fused still sees the default result
    assert len(fresh.predict(api_name="/metrics")["data"]) == 11


def test_the_first_page_result_survives_gradios_cache_clean_up(bank, tmp_path):
    """The precomputed default result is the first page's value; Gradio's delete_cache sweep
    (the app's `delete_cache=(300, 900)`) must not remove its files, or a page opened later
    would show broken images."""
    from gradio.route_utils import delete_files_created_by_app

    demo = app.build_demo(bank, precompute=True)
    try:
        values = {c["props"].get("elem_id"): c["props"].get("value") for c in demo.get_config_file()["components"]}
        paths = [values[e]["path"] for e in ("fused-clean", "fused-intervened", "difference", "gates", "inputs")]
        paths += [item["image"]["path"] for item in values["examples"]]
        assert len(paths) > 5 and all(Path(p).is_file() for p in paths)
        other = tmp_path / "a-request-file.png"  # a file of some request: the sweep does remove those
        other.write_bytes(b"x")
        demo.temp_file_sets[0].add(str(other))
        delete_files_created_by_app(demo, age=None)  # None: every file, whatever its age (no sleep)
        assert not other.exists(), "the sweep removed nothing: nothing was tested"
        assert [p for p in paths if not Path(p).is_file()] == []
    finally:
        demo.janitor.stop()

