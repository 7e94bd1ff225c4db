"""The app rows of issue 11's bad-input table: each bad value or file that reaches the Lab's
callbacks gets a readable message naming the problem (a gr.Error toast, or the pair info),
never a traceback and never a server path. Plus the weights rows the app depends on: junk
IVFUSION_WEIGHTS, unknown model names, and the authors' model fetched over a loopback
"network" (only the network boundary is stood in for: a local HTTP server or a closed port).

Runs the real callbacks and network at 64 pixels a side, in-process.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import functools  # noqa: E402
import hashlib  # noqa: E402
import http.server  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import lab  # noqa: E402
from ivfusion.hub import WeightsError  # noqa: E402
from ivfusion.lab import models, uploads  # noqa: E402

SIDE = 64


@pytest.fixture(scope="module")
def lab_app():
    return app.LabApp(lab.ModelBank(env={}, device="cpu", max_side=SIDE), precompute=False)


@pytest.fixture(scope="module")
def pair():
    vis, ir, _ = lab.example_pairs()[0]
    return vis, ir


def png_header(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A tiny PNG whose header claims width x height (its pixel data is a stub): what an
    attacker sends to make a server allocate from the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def refused(fn, match: str, *args, **kwargs) -> str:
    """Call a callback that must refuse its input: a gr.Error whose message matches `match`,
    with no traceback and no server folder in it. Returns the message."""
    with pytest.raises(gr.Error) as err:
        fn(*args, **kwargs)
    msg = str(err.value.message)
    assert re.search(match, msg, re.I), msg
    assert "Traceback" not in msg and "/tmp" not in msg and "/work" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("field, value, match", [
    ("seed", float("nan"), r"seed must be a whole number"),
    ("seed", float("inf"), r"seed must be a whole number"),
    ("seed", -1, r"seed must be a whole number from 0"),
    ("holes", None, r"holes must be a whole number"),
    ("holes", 2.5, r"holes must be a whole number"),
    ("hole_percent", float("nan"), r"hole size must be from"),
    ("hole_percent", None, r"hole size must be from"),
    ("complementary", "no", r"complementary must be true or false"),
    ("random_masking", "yes", r"random must be true or false"),
    ("dropout", "drop everything", r"dropout must be one of"),
    ("gate_scale", "rainbow", r"scale"),
    ("model", "no such model", r"unknown model 'no such model'; choose one of"),
])
def test_fuse_refuses_bad_parameters_clearly(lab_app, pair, field, value, match):
    refused(lab_app.fuse, match, *pair, **{field: value})


@pytest.mark.parametrize("k, match", [
    (8.9, r"K must be a whole number from 4 to 32"),
    (float("nan"), r"K must be a whole number"),
    (None, r"K must be a whole number"),
    (64, r"K must be .*4 to 32"),
])
def test_stability_refuses_bad_k_clearly(lab_app, pair, k, match):
    refused(lab_app.stability, match, *pair, k=k)


# ----------------------------------------------------------------------------- uploads
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image" * 10)
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("just text with an image name")
    png_header(d / "huge.png", 60000, 60000)  # 3.6 gigapixels claimed by a 100-byte file
    png_header(d / "rgba16.png", 6000, 6000, bit_depth=16, colour_type=6)  # 36 MP, 275 MiB decoded
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "anim.gif")  # a format the project does not accept
    return d


@pytest.mark.parametrize("name, match", [
    ("corrupt.png", r"visible image: .*not a readable image"),
    ("empty.png", r"visible image: .*empty"),
    ("notes.png", r"visible image: .*not a readable image"),
    ("huge.png", r"visible image: 60000x60000 is 3,600.0 megapixels, over the limit"),
    ("rgba16.png", r"visible image: 6000x6000 .*16-bit would take 27\d(\.\d)? MiB decoded, over the limit"),
    ("anim.gif", r"visible image: a GIF image, not accepted; accepted: PNG, JPEG"),
    ("missing.png", r"visible image: no such file"),
])
def test_bad_uploads_are_named_in_fuse_in_the_upload_toast_and_in_the_pair_info(lab_app, pair, bad_files, name,
                                                                                  match, monkeypatch):
    bad = str(bad_files / name)
    refused(lab_app.fuse, match, bad, pair[1])
    decodes = []
    real = uploads.io.read_image
    monkeypatch.setattr(uploads.io, "read_image", lambda *a, **k: (decodes.append(a), real(*a, **k))[1])
    refused(lab_app.on_input, match.replace("visible image", "image"), bad)  # unqueued: header only
    info = lab_app.info(bad, pair[1])
    assert decodes == []  # nothing was decoded
    assert info.startswith("**Cannot use this pair:**") and re.search(match, info), info
    assert str(bad_files) not in info


def test_16bit_and_grey_alpha_uploads_are_accepted(lab_app, pair, tmp_path):
    ir = cv2.imread(str(pair[1]), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "ir16.png"), ir)
    vis = cv2.imread(str(pair[0]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "vis_la.png"), np.dstack([vis, vis, vis, np.full_like(vis, 255)]))
    out = lab_app.fuse(str(tmp_path / "vis_la.png"), str(tmp_path / "ir16.png"))
    assert out["fused_clean"] and "16-bit infrared stretched" in out["notices"]
    assert "16-bit" in lab_app.info(str(tmp_path / "vis_la.png"), str(tmp_path / "ir16.png"))


def test_a_huge_drawn_layer_is_refused_from_its_header(lab_app, pair, bad_files):
    editor = {"background": {"path": pair[1]}, "layers": [{"path": str(bad_files / "huge.png")}], "composite": None}
    refused(lab_app.fuse, r"drawn mask layer 1: 60000x60000 is 3,600.0 megapixels", *pair, draw_infrared=editor)


def test_a_large_drawn_layer_is_shrunk_not_kept_at_full_size(tmp_path):
    layer = np.zeros((6000, 4000, 4), np.uint8)
    layer[:3000, :, 3] = 255  # the top half painted
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    del layer
    keep = uploads.drawn_keep_mask({"layers": [{"path": str(tmp_path / "layer.png")}]})
    assert keep.shape == (uploads.MASK_MAX_SIDE, round(4000 * uploads.MASK_MAX_SIDE / 6000))
    assert keep[: keep.shape[0] // 2 - 1].max() == 0 and keep[keep.shape[0] // 2 + 1:].min() == 1


def test_an_editor_payload_without_a_layer_list_is_refused(lab_app, pair):
    refused(lab_app.fuse, r"drawn mask: the editor sent no list of layers", *pair,
            draw_visible={"background": None, "layers": "oops"})


# ----------------------------------------------------------------------------- models
def test_unknown_model_names_are_refused_and_never_cached(lab_app):
    bank = lab_app.bank
    before = bank.loaded()
    for k in range(100):
        with pytest.raises(WeightsError, match="unknown model"):
            bank.get(f"model {k}")
    assert bank.loaded() == before and not any(k.startswith("model ") for k in bank._errors)
    assert "cannot be loaded: unknown model" in lab_app.model_info("model 7")


def test_junk_ivfusion_weights_fall_back_to_the_bundled_weights_and_say_so(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2048))
    bank = lab.ModelBank(env={"IVFUSION_WEIGHTS": str(junk)}, device="cpu", max_side=SIDE)
    choice, notes = bank.default_choice()
    assert choice == lab.DEFAULT_CHOICE
    text = " ".join(notes)
    assert "junk.pth" in text and "could not be loaded" in text and "bundled weights" in text
    assert str(tmp_path) not in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


class _Serve:
    """A loopback HTTP server handing out one file (the network boundary, stood in for)."""

    def __init__(self, data: bytes):
        handler = functools.partial(_Handler, data)
        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/best.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def __init__(self, data, *args, **kwargs):
        self.data = data
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args):
        pass


def test_the_authors_model_offline_says_it_cannot_be_fetched_and_the_bank_keeps_serving(tmp_path):
    env = {"IVFUSION_OFFICIAL_URL": f"http://127.0.0.1:{_closed_port()}/best.pth", "IVFUSION_CACHE": str(tmp_path)}
    lab_app = app.LabApp(lab.ModelBank(env=env, device="cpu", max_side=SIDE), precompute=False)
    assert lab.OFFICIAL_CHOICE in lab_app.bank.choices()
    with pytest.raises(WeightsError, match=r"authors' released model cannot be fetched \(no network"):
        lab_app.bank.get(lab.OFFICIAL_CHOICE)
    assert "cannot be fetched" in lab_app.model_info(lab.OFFICIAL_CHOICE)
    assert lab_app.bank.get(lab.DEFAULT_CHOICE)[0] is not None  # the current model still serves
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_the_authors_model_with_wrong_bytes_is_refused_and_not_cached(tmp_path):
    server = _Serve(b"not the checkpoint" * 100)
    try:
        bank = lab.ModelBank(env={"IVFUSION_OFFICIAL_URL": server.url, "IVFUSION_CACHE": str(tmp_path)},
                             device="cpu", max_side=SIDE)
        with pytest.raises(WeightsError, match="SHA-256 mismatch"):
            bank.get(lab.OFFICIAL_CHOICE)
    finally:
        server.close()
    assert not list(tmp_path.iterdir())


def test_the_authors_model_downloads_once_checked_cached_with_progress(tmp_path, shared_dir):
    best = shared_dir / "weights" / "authors" / "best.pth"
    data = best.read_bytes()
    assert hashlib.sha256(data).hexdigest() == models.OFFICIAL_SHA256
    server = _Serve(data)
    seen = []
    try:
        env = {"IVFUSION_OFFICIAL_URL": server.url, "IVFUSION_CACHE": str(tmp_path)}
        fuser, _ = lab.ModelBank(env=env, device="cpu", max_side=SIDE).get(lab.OFFICIAL_CHOICE,
                                                                          progress=lambda d, t: seen.append((d, t)))
    finally:
        server.close()
    cached = tmp_path / "authors-best.pth"
    assert cached.is_file() and models.sha256_of(cached) == models.OFFICIAL_SHA256
    assert seen and seen[-1] == (len(data), len(data)) and len(seen) > 1
    assert fuser is not None
    # a second bank finds the cached copy: no network needed (the server is gone)
    again, _ = lab.ModelBank(env=env, device="cpu", max_side=SIDE).get(lab.OFFICIAL_CHOICE)
    assert again is not None


@pytest.mark.slow  # loads three models
def test_an_unreachable_checkpoint_url_stalls_no_one_else_and_is_not_retried_at_once(tmp_path):
    """Issue 19, item 5: a black-hole URL (accepts, never answers). The download holds no lock
    another model needs, and its failure is remembered instead of costing a timeout a click.
    Synchronised on the socket, not the clock: the hole takes the download's request and
    answers nothing until the other models are served, then hangs up."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    hole.settimeout(60)  # bounds the waits below: a hang becomes a failure
    try:
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/best.pth"
        bank = lab.ModelBank(env={"IVFUSION_OFFICIAL_URL": url, "IVFUSION_CACHE": str(tmp_path)}, device="cpu",
                             max_side=SIDE, fetch_timeout=300.0)
        bank.get(lab.DEFAULT_CHOICE)
        failed = []

        def authors():
            try:
                bank.get(lab.OFFICIAL_CHOICE)
            except WeightsError as e:
                failed.append(str(e))

        t = threading.Thread(target=authors)
        t.start()
        conn, _ = hole.accept()
        request = b""
        while b"\r\n\r\n" not in request:  # the whole request: the download now waits for an answer
            request += conn.recv(4096) or pytest.fail("the download hung up before its request ended")
        bank.get(lab.DEFAULT_CHOICE)
        bank.get(lab.UNTRAINED_CHOICE)  # a first load too, not behind the download
        assert t.is_alive() and not failed, "the download ended before the other requests were answered"
        conn.close()  # the server hangs up without an answer
        t.join(60)
        assert not t.is_alive() and failed and "cannot be fetched" in failed[0]
        with pytest.raises(WeightsError, match="cannot be fetched"):
            bank.get(lab.OFFICIAL_CHOICE)
        hole.setblocking(False)
        with pytest.raises(BlockingIOError):  # remembered: the second click never connected
            hole.accept()
    finally:
        hole.close()


@pytest.mark.slow  # starts `python app.py` in a subprocess
@pytest.mark.parametrize("name, value", [("IVFUSION_MAX_SIDE", "abc"), ("IVFUSION_THREADS", "abc"),
                                         ("IVFUSION_STABILITY_BUDGET_S", "abc"), ("IVFUSION_CONCURRENCY", "0"),
                                         ("IVFUSION_QUEUE", "-3"), ("IVFUSION_STABILITY_BUDGET_S", "nan")])
def test_junk_settings_stop_the_app_with_one_line(name, value):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "app.py"], cwd=Path(app.__file__).parent, capture_output=True, text=True,
                         env={**os.environ, name: value, "GRADIO_SERVER_PORT": "1"}, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-500:]
    assert res.stderr.strip().splitlines()[-1].startswith(f"app.py: {name}={value!r}: expected"), res.stderr[-300:]
