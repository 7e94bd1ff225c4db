"""One visitor cannot break the Lab for everyone (issue 25), through a real server
(`python app.py`, tests/appserver.py) on 127.0.0.1: an upload flood, oversized requests and
bodies, queue hoarding with invented session hashes, and after each the page still serves
its images and another visitor's Fuse finishes.

Distinct clients are told apart as a proxy in front would tell them: the server runs with
IVFUSION_PROXY_HOPS=1 and each client sends its own X-Forwarded-For.
"""
import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.appserver import AppServer, call, dependency, payload, silent_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

MIB = 2**20
ATTACKER = {"x-forwarded-for": "10.0.0.1"}
VISITOR = {"x-forwarded-for": "10.0.0.2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"IVFUSION_MAX_SIDE": "128", "IVFUSION_WEIGHTS": "", "IVFUSION_PROXY_HOPS": "1", "IVFUSION_QUEUE": "12"}
    with AppServer(env=env, log_dir=tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def pair(shared_dir):
    root = shared_dir / "data" / "roadscene" / "test"
    name = sorted(p.name for p in (root / "ir").iterdir())[0]
    return root / "vi" / name, root / "ir" / name


def _fuse(server, vis: dict, ir: dict, session: str | None = None) -> dict:
    fn_index, dep = dependency(server.config, "fuse")
    data = payload(server.config, dep, vis, ir)
    editors = [i for i, c in enumerate(dep["inputs"]) if _type(server, c) == "imageeditor"]
    for i in editors:
        data[i] = None
    return call(server, fn_index, dep, data, timeout=120, session=session)


def _type(server, cid):
    return next(c for c in server.config["components"] if c["id"] == cid).get("type")


def _post_files(server, files: list[Path], headers: dict) -> httpx.Response:
    handles = [open(f, "rb") for f in files]
    try:
        return httpx.post(server.api + "/upload", files=[("files", (f.name, h)) for f, h in zip(files, handles)],
                          headers=headers, timeout=120)
    finally:
        for h in handles:
            h.close()


def test_an_upload_flood_evicts_the_flooders_own_files_and_the_page_keeps_working(server, pair, tmp_path):
    from ivfusion.lab.guard import CLIENT_MAX_BYTES, MAX_UPLOAD_REQUEST_BYTES

    vis = server.upload(pair[0], headers=VISITOR)
    ir = server.upload(pair[1], headers=VISITOR)
    assert not server.broken_images()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(45 * MIB))
    # two 45 MiB files in one request: each is under the 50 MB file limit, the request is not
    r = _post_files(server, [blob, blob], ATTACKER)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "90.0 MB in one upload request" in r.json()["detail"], r.text
    n = CLIENT_MAX_BYTES // (45 * MIB) + 3  # more than the client may hold
    kept = []
    for _ in range(n):
        r = _post_files(server, [blob], ATTACKER)
        assert r.status_code == 200, (r.status_code, r.text[:200])
        kept.append(Path(r.json()[0]))
    # each upload of the same bytes lands in one folder: count the flooder's distinct names
    held = sum(p.stat().st_size for p in set(kept) if p.exists())
    assert held <= CLIENT_MAX_BYTES
    assert MAX_UPLOAD_REQUEST_BYTES < 2 * 45 * MIB
    # the visitor's files, the page's images and a Fuse all survive the flood
    assert Path(vis["path"]).is_file() and Path(ir["path"]).is_file()
    assert not server.broken_images()
    res = _fuse(server, vis, ir)
    assert res["ok"], res
    assert server.alive() and not server.tracebacks(), server.tracebacks()


def test_a_flood_of_distinct_files_evicts_the_flooders_oldest_first(server, tmp_path):
    from ivfusion.lab.guard import CLIENT_MAX_BYTES

    size = 40 * MIB
    paths = []
    for k in range(CLIENT_MAX_BYTES // size + 3):
        f = tmp_path / f"flood{k}.bin"
        f.write_bytes(os.urandom(1024) + bytes(size - 1024))  # distinct contents: distinct upload folders
        r = _post_files(server, [f], ATTACKER)
        f.unlink()
        assert r.status_code == 200, (r.status_code, r.text[:200])
        paths.append(Path(r.json()[0]))
    alive = [p.exists() for p in paths]
    assert not alive[0] and alive[-1], alive  # the oldest went first, the newest stayed
    assert sum(p.stat().st_size for p in paths if p.exists()) <= CLIENT_MAX_BYTES
    assert alive == sorted(alive), alive  # evicted strictly oldest first
    assert not server.broken_images()


def test_a_json_body_over_the_bound_is_refused_before_it_is_read(server):
    from ivfusion.lab.guard import MAX_JSON_BYTES

    rss = server.rss()
    body = b'{"data": ["' + b"x" * (MAX_JSON_BYTES + 10) + b'"], "fn_index": 0, "session_hash": "big"}'
    r = httpx.post(server.api + "/queue/join", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "at most 1,048,576 bytes" in r.json()["detail"], r.text[:200]

    def chunks():  # no Content-Length: read here, bounded
        for _ in range(MAX_JSON_BYTES // 65536 + 2):
            yield b"x" * 65536

    r = httpx.post(server.api + "/queue/join", content=chunks(), headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 413, r.text[:200]
    assert server.rss() - rss < 50
    assert "refused large body" in server.log_tail(20000)
    assert server.alive() and not server.tracebacks(), server.tracebacks()


def _long_stability(server, pair) -> tuple[int, list]:
    """/stability with K=32: one run holds the stability group for seconds, so the joins
    after it wait in the queue whatever the machine's speed."""
    vis, ir = server.upload(pair[0]), server.upload(pair[1])
    fn_index, dep = dependency(server.config, "stability")
    data = payload(server.config, dep, vis, ir)
    for i, cid in enumerate(dep["inputs"]):
        comp = next(c for c in server.config["components"] if c["id"] == cid)
        if comp.get("type") == "imageeditor":
            data[i] = None
        if comp.get("props", {}).get("elem_id") == "k-slider":
            data[i] = 32
    return fn_index, data


def _join(server, fn_index, data, session, headers):
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    return httpx.post(server.api + "/queue/join", json=body, headers=headers, timeout=60)


def test_one_session_holds_two_waiting_places_and_the_page_is_told_why(server, pair):
    """A browser's refusal carries the Lab's own text (Gradio's page shows the detail of a 400
    but replaces every 503's with "This application is currently busy"); gradio_client
    (x-gradio-user: api) gets a 503 queue-full."""
    fn_index, data = _long_stability(server, pair)
    page = [_join(server, fn_index, data, "one-session-page", VISITOR) for _ in range(5)]
    api = [_join(server, fn_index, data, "one-session-api", {**VISITOR, "x-gradio-user": "api"}) for _ in range(5)]
    codes = [r.status_code for r in page]
    assert codes.count(200) <= 3 and 400 in codes and 503 not in codes, codes  # 1 computing + 2 waiting
    detail = next(r for r in page if r.status_code == 400).json()["detail"]
    assert "requests waiting" in detail and "per visitor" in detail, detail
    codes = [r.status_code for r in api]
    assert codes.count(200) <= 2 and 503 in codes and 400 not in codes, codes


def _wait_for_empty_queue(server, timeout: float = 120.0) -> None:
    """Until the queue is empty (bounded); fails if it never empties."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = httpx.get(server.api + "/queue/status", timeout=10).json().get("queue_size")
        if size == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"the queue still holds {size} requests after {timeout:.0f} s: requests of gone clients are kept")


def test_invented_session_hashes_cannot_hoard_the_queue(server, pair):
    """8 made-up hashes x 2 joins of a long stability run from one address, never listening:
    the address gets at most its share of the queue's places, the rest are refused with one
    line, and another visitor's Fuse still finishes. (Dropping the requests of clients that
    never listen, and the fair order: tests/test_lab_bounds.py.)"""
    from ivfusion.lab.places import address_share

    _wait_for_empty_queue(server)  # the last test's joins never listened: they are dropped
    fn_index, data = _long_stability(server, pair)
    codes = [_join(server, fn_index, data, uuid.uuid4().hex[:11] + str(k // 2), ATTACKER).status_code
             for k in range(16)]
    share = address_share(12)
    # one may have left the queue to run: at most share + 1 joined, the rest refused (400 for a page)
    assert codes.count(200) <= share + 1 and set(codes) == {200, 400}, codes
    assert "refused queue places (address)" in server.log_tail(50000)
    res = _fuse(server, server.upload(pair[0], headers=VISITOR), server.upload(pair[1], headers=VISITOR))
    assert res["ok"], res
    assert server.alive() and not server.tracebacks(), server.tracebacks()


def test_a_fuse_with_a_hundred_mask_layers_is_refused_in_one_line(server, pair, tmp_path):
    import cv2
    import numpy as np

    from ivfusion.lab.uploads import MAX_LAYERS

    layer_png = tmp_path / "layer.png"
    img = np.zeros((480, 640, 4), np.uint8)
    img[100:200, 100:300] = 255
    cv2.imwrite(str(layer_png), img)
    layer = server.upload(layer_png)
    vis, ir = server.upload(pair[0]), server.upload(pair[1])
    fn_index, dep = dependency(server.config, "fuse")
    data = payload(server.config, dep, vis, ir)
    editor = next(i for i, c in enumerate(dep["inputs"]) if _type(server, c) == "imageeditor")
    data[editor] = {"background": vis, "layers": [layer] * 100, "composite": None}
    data[editor + 1] = None
    res = call(server, fn_index, dep, data, timeout=120)
    assert not res["ok"] and f"100 layers received; at most {MAX_LAYERS} are accepted" in res["error"], res
    data[editor]["layers"] = [layer]  # the page's own editor sends one: it is used
    assert call(server, fn_index, dep, data, timeout=120)["ok"]
    assert server.alive() and not server.tracebacks(), server.tracebacks()


# ----------------------------------------------------------------------------- a silent network
@pytest.fixture()
def silent_hub():
    """A stand-in for the Hub or GitHub at the network boundary: it accepts connections and
    never answers (the only stub in these tests: an external service)."""
    with silent_server() as url:
        yield url


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _load_hub_weights(endpoint: str) -> str:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, IVFUSION_HUB_DEADLINE_S="2")
    code = "from ivfusion.hub import load_model\ntry:\n    load_model('hf://owner/repo')\nexcept Exception as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def test_a_silent_hub_is_given_up_at_the_deadline_and_no_network_at_once(silent_hub):
    assert "the Hugging Face Hub did not answer within 2 s" in _load_hub_weights(silent_hub)
    assert "the Hugging Face Hub cannot be reached" in _load_hub_weights(_closed_port())


def _model_status(srv) -> tuple[str, str | None]:
    """What a page opened now is told: the start-up notice and the model preselected (None:
    the start-up default)."""
    fn_index, dep = dependency(srv.config, "model_status")
    res = call(srv, fn_index, dep, [], timeout=60)
    assert res["ok"], res
    note, model, _info = res["output"]
    note = note.get("value") if isinstance(note, dict) else note
    model = model.get("value") if isinstance(model, dict) else model
    return note or "", model


def _until_status(srv, done, what: str, timeout: float = 120.0) -> tuple[str, str | None]:
    """The page status once done(note, model) holds (bounded); fails if it never does."""
    import time

    end = time.monotonic() + timeout
    while True:
        status = _model_status(srv)
        if done(*status):
            return status
        if time.monotonic() > end:
            pytest.fail(f"the page never said {what}: {status}")
        time.sleep(0.5)


def test_the_lab_starts_at_once_while_a_silent_network_is_tried_in_the_background(silent_hub, pair, tmp_path):
    """Both downloads (IVFUSION_WEIGHTS=hf://..., the authors' checkpoint as the Space's default)
    hang on a stand-in that never answers. The page is built while they are still under way
    (its notice says so, which it could not if start-up had waited for them), serves on the
    bundled weights, and once they are given up at the deadline says why."""
    env = {"IVFUSION_MAX_SIDE": "128", "IVFUSION_WEIGHTS": "hf://owner/repo", "HF_ENDPOINT": silent_hub,
           "HF_HUB_OFFLINE": "", "IVFUSION_HUB_DEADLINE_S": "3", "IVFUSION_DEFAULT_MODEL": "authors",
           "IVFUSION_OFFICIAL_URL": silent_hub + "/best.pth", "IVFUSION_CACHE": str(tmp_path / "cache")}
    with AppServer(env=env, log_dir=tmp_path, start_timeout=120) as srv:
        page = str(srv.config)
        assert "The authors' checkpoint is downloading in the background" in page, page[:2000]
        assert "(hf://owner/repo) are downloading in the background" in page, page[:2000]
        assert not srv.broken_images()
        res = _fuse(srv, srv.upload(pair[0]), srv.upload(pair[1]))
        assert res["ok"], res
        note, model = _until_status(srv, lambda note, _m: "downloading" not in note, "the downloads ended")
        assert "did not download within 3 s" in note and "did not answer within 3 s" in note, note
        assert "bundled weights" in note and model is None, (note, model)
        assert srv.alive() and not srv.tracebacks(), srv.tracebacks()


@pytest.fixture()
def held_checkpoint(shared_dir):
    """A stand-in for GitHub at the network boundary serving the authors' checkpoint, holding
    every request until the test releases it."""
    import http.server
    import threading

    data = (shared_dir / "weights" / "authors" / "best.pth").read_bytes()
    release, asked = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            asked.set()
            release.wait(300)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/best.pth", asked, release
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_the_authors_checkpoint_downloaded_after_start_becomes_the_default(held_checkpoint, pair, tmp_path):
    """The Space's default model downloads after start: the page serves on the bundled weights
    while the server holds the download, and a page opened once it has landed (SHA-256
    checked, cached) gets the authors' checkpoint."""
    from ivfusion.lab import models

    url, asked, release = held_checkpoint
    cache = tmp_path / "cache"
    env = {"IVFUSION_MAX_SIDE": "128", "IVFUSION_WEIGHTS": "", "IVFUSION_DEFAULT_MODEL": "authors",
           "IVFUSION_HUB_DEADLINE_S": "600", "IVFUSION_OFFICIAL_URL": url, "IVFUSION_CACHE": str(cache)}
    with AppServer(env=env, log_dir=tmp_path, start_timeout=120) as srv:
        assert asked.wait(60)  # the download has reached the server, which holds it: the page is up all the same
        note, model = _model_status(srv)
        assert "The authors' checkpoint is downloading in the background" in note and model is None, (note, model)
        assert _fuse(srv, srv.upload(pair[0]), srv.upload(pair[1]))["ok"]
        release.set()
        note, model = _until_status(srv, lambda _n, m: m is not None, "the authors' model")
        assert model == models.OFFICIAL_CHOICE and "downloading" not in note, (note, model)
        assert models.sha256_of(cache / "authors-best.pth") == models.OFFICIAL_SHA256
        assert srv.alive() and not srv.tracebacks(), srv.tracebacks()


def test_refused_requests_are_one_log_line_each_and_pick_example_survives_no_event_data(server, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not for the Lab")
    fn_index, dep = dependency(server.config, "fuse")
    # a path Gradio itself refuses (not uploaded, with meta): refused in one line, no traceback
    data = payload(server.config, dep, {"path": str(outside), "meta": {"_type": "gradio.FileData"}})
    res = call(server, fn_index, dep, data, timeout=60)
    assert not res["ok"]
    gallery = next(c["id"] for c in server.config["components"] if c.get("props", {}).get("elem_id") == "examples")
    pick = next(i for i, d in enumerate(server.config["dependencies"])
                if d.get("targets") and d["targets"][0] == [gallery, "select"])
    for event_data in (None, {"index": None}, {"index": 10**9}, {"index": 0, "value": None}):
        body = {"data": [], "fn_index": pick, "session_hash": "pick", "event_data": event_data, "trigger_id": None}
        r = httpx.post(server.api + "/run/predict", json=body, timeout=60)
        assert r.status_code == 200, (event_data, r.status_code, r.text[:200])
    log = server.log_tail(200000)
    assert "refused request: InvalidPathError" in log
    assert "Traceback" not in log, log[-3000:]
