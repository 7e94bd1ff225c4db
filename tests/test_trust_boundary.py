"""The trust boundary of a public Lab (issue 19), driven over HTTP as an anonymous client would:
every event handler, called by fn_index with file payloads that name files outside the upload
folder (with and without Gradio's `meta`), must neither serve them back nor decode them, and
the queued events cannot be called past the queue.

A real server (`python app.py`, tests/appserver.py) on 127.0.0.1; the secrets live in a fresh
temporary folder, outside Gradio's upload folder and outside the folders the other tests trust.
"""
import os
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.appserver import AppServer, call, components, dependency, holds_pixels, output_refs

pytestmark = [pytest.mark.slow, pytest.mark.server]  # the whole module is slow: a real `python app.py` server

SECRET_TEXT = "ivfusion-secret-" + "7f3a9c" * 8
FILE_TYPES = ("image", "imageeditor", "file", "gallery")


@pytest.fixture(scope="module")
def secrets():
    folder = Path(tempfile.mkdtemp(prefix="ivfusion-secret-"))
    text = folder / "secret.txt"
    text.write_text(SECRET_TEXT)
    rng = np.random.default_rng(7)
    secret = (rng.random((96, 128)) * 255).astype(np.uint8)  # noise: nothing else correlates with it
    png = folder / "secret.png"
    cv2.imwrite(str(png), secret)
    yield {"text": text, "png": png, "pixels": secret, "missing": folder / "no-such-file.png"}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    with AppServer(env={"IVFUSION_MAX_SIDE": "128", "IVFUSION_WEIGHTS": ""}) as srv:
        yield srv


def _file(path: Path, meta: bool) -> dict:
    out = {"path": str(path), "orig_name": path.name}
    if meta:
        out["meta"] = {"_type": "gradio.FileData"}
    return out


def _data(config: dict, dep: dict, payload: dict) -> list:
    comps = components(config)
    data = []
    for cid in dep["inputs"]:
        comp = comps[cid]
        kind = comp.get("type")
        if kind == "imageeditor":
            data.append({"background": payload, "layers": [payload], "composite": payload})
        elif kind in FILE_TYPES:
            data.append([payload] if kind == "gallery" else payload)
        else:
            data.append(comp.get("props", {}).get("value"))
    return data


def _fetch(server: AppServer, ref: str) -> bytes | None:
    url = ref if ref.startswith("http") else f"{server.api}/file={ref}"
    try:
        r = httpx.get(url, timeout=30)
    except httpx.HTTPError:
        return None
    return r.content if r.status_code == 200 else None


def test_no_handler_serves_or_decodes_a_file_it_was_not_given(server, secrets):
    config = server.config
    comps = components(config)
    handlers = [(dep.get("id", i), dep) for i, dep in enumerate(config["dependencies"])
                if dep.get("backend_fn") is not False
                and any(comps.get(c, {}).get("type") in FILE_TYPES for c in dep["inputs"])]
    assert len(handlers) >= 8, [d.get("api_name") for _, d in handlers]  # uploads, editors, fuse, stability ...
    served = []
    for fn_index, dep in handlers:
        for target in ("text", "png"):
            for meta in (False, True):
                res = call(server, fn_index, dep, _data(config, dep, _file(secrets[target], meta)), timeout=120)
                for ref in output_refs(res["output"]):
                    body = _fetch(server, ref)
                    if body is None:
                        continue
                    if SECRET_TEXT.encode() in body or holds_pixels(body, secrets["pixels"]):
                        served.append((dep.get("api_name") or fn_index, target, meta, ref))
    assert not served, served
    assert server.alive()


def test_errors_say_nothing_about_whether_a_file_exists(server, secrets):
    fn_index, dep = dependency(server.config, "fuse")
    config = server.config
    comps = components(config)
    texts = []
    for path in (secrets["png"], secrets["missing"], Path("/etc/hostname")):
        payload = {"path": str(path), "orig_name": "x.png"}
        data = [payload if comps[c].get("type") == "image" else comps[c].get("props", {}).get("value")
                for c in dep["inputs"]]
        res = _join_queue(server, fn_index, dep, data)
        assert not res["ok"]
        texts.append(re.sub(r"\s+", " ", str(res["error"])))
    assert texts[0] == texts[1] == texts[2], texts
    assert "not uploaded to the Lab" in texts[0]


def _join_queue(server, fn_index, dep, data):
    return call(server, fn_index, {**dep, "queue": True}, data, timeout=120)


@pytest.mark.parametrize("api_name", ["fuse", "stability", "compare", "metrics", "downloads"])
def test_queued_events_cannot_be_called_past_the_queue(server, api_name):
    fn_index, dep = dependency(server.config, api_name)
    body = {"data": [], "fn_index": fn_index, "session_hash": "direct", "event_data": None, "trigger_id": None}
    r = httpx.post(server.api + "/run/predict", json=body, timeout=60)
    assert r.status_code == 404 and "queue" in r.text.lower(), (r.status_code, r.text[:200])
    r = httpx.post(f"{server.api}/api/{api_name}", json={"data": []}, timeout=60)
    assert r.status_code == 404, (r.status_code, r.text[:200])


def test_sigterm_cleans_the_uploads_and_the_start_up_files(shared_dir):
    """Issue 19, item 8: after SIGTERM 1.1 GB of uploads were left, and each start leaked one
    static folder."""
    import signal

    srv = AppServer(env={"IVFUSION_MAX_SIDE": "128", "IVFUSION_WEIGHTS": ""})
    try:
        (private,) = Path(tempfile.gettempdir()).glob(f"ivfusion-lab-{srv.pid}-*")  # the process's own folder
        static = private / "static"
        assert static.is_dir()
        uploaded = Path(srv.upload(shared_dir / "data" / "msrs" / "train" / "vi" / "00003N.png")["path"])
        assert uploaded.is_file()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        assert not uploaded.exists() and not static.exists() and not private.exists()
    finally:
        srv.close()


def test_the_disk_cap_removes_the_oldest_files_first(tmp_path):
    from ivfusion.lab.session import cap_disk

    for k in range(5):
        f = tmp_path / f"f{k}.bin"
        f.write_bytes(bytes(1000))
        os.utime(f, (1000 + k, 1000 + k))
    assert cap_disk([tmp_path], 2500) == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f3.bin", "f4.bin"]
