"""The Lab's bounds against one visitor who wants to break it for everyone (issue 25), part
by part and in-process: the upload ledger and the disk cap, the HTTP guard (Starlette's
TestClient in front of a small app), queue places on a real Gradio queue, and the private Lab
folder. tests/test_lab_abuse.py drives the same through a real server.
"""
import asyncio
import os

import gradio as gr
import pytest
from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from ivfusion.lab import guard, places, session

MIB = 2**20


def _file(folder, name, size):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(b"\0" * size)
    return str(p)


# ----------------------------------------------------------------------------- the ledger
def test_a_client_over_its_bound_loses_its_own_oldest_files_first(tmp_path):
    ledger = guard.UploadLedger(client_max_bytes=3 * MIB, total_max_bytes=100 * MIB)
    other = _file(tmp_path / "b", "other.bin", MIB)
    ledger.record("10.0.0.2", [other])
    mine = []
    for k in range(5):
        assert ledger.reserve("10.0.0.1", MIB)
        mine.append(_file(tmp_path / "a", f"{k}.bin", MIB))
        ledger.release("10.0.0.1", MIB)
        ledger.record("10.0.0.1", [mine[-1]])
    assert [os.path.exists(p) for p in mine] == [False, False, True, True, True]
    assert ledger.held("10.0.0.1") == 3 * MIB and os.path.exists(other)


def test_uploads_in_flight_count_and_too_many_at_once_are_refused(tmp_path):
    ledger = guard.UploadLedger(client_max_bytes=3 * MIB)
    assert ledger.reserve("a", 2 * MIB)
    assert not ledger.reserve("a", 2 * MIB)  # 4 MiB in flight would pass the bound
    assert ledger.reserve("b", 2 * MIB)  # another client is not affected
    ledger.release("a", 2 * MIB)
    assert ledger.reserve("a", 2 * MIB)


def test_over_the_total_the_biggest_uploader_loses_first_and_the_page_never(tmp_path):
    page = _file(tmp_path / "page", "default.png", MIB)
    ledger = guard.UploadLedger(client_max_bytes=10 * MIB, total_max_bytes=4 * MIB)
    ledger.protect(tmp_path / "page")
    small = _file(tmp_path / "s", "s.bin", MIB)
    ledger.record("small", [small])
    big = [_file(tmp_path / "g", f"{k}.bin", MIB) for k in range(4)]
    ledger.record("big", big)
    ledger.record("big", [page])  # the page's own file, uploaded again: never the client's to lose
    assert os.path.exists(small) and os.path.exists(page)
    assert sum(os.path.exists(p) for p in big) == 3 and not os.path.exists(big[0])


def test_the_disk_cap_spares_the_page_and_takes_from_the_biggest_uploader(tmp_path):
    page = [_file(tmp_path / "page", f"p{k}.png", MIB) for k in range(2)]
    small = _file(tmp_path / "up", "small.bin", MIB)
    big = [_file(tmp_path / "up", f"big{k}.bin", MIB) for k in range(4)]
    unowned = _file(tmp_path / "out", "result.png", MIB)
    for k, p in enumerate(page + [unowned, small] + big):  # the page's files are the oldest
        os.utime(p, (1000 + k, 1000 + k))
    owners = {small: "small", **{p: "big" for p in big}}
    removed = session.cap_disk([tmp_path], 5 * MIB, protected=frozenset(page), owners=owners)
    assert removed == 3 * MIB
    assert all(os.path.exists(p) for p in page) and os.path.exists(small) and os.path.exists(unowned)
    assert [os.path.exists(p) for p in big] == [False, False, False, True]
    # only the page's files left over the cap: they stay
    assert session.cap_disk([tmp_path / "page"], 0, protected=frozenset(page)) == 0


# ----------------------------------------------------------------------------- the HTTP guard
@pytest.fixture()
def guarded():
    state = guard.GuardState(hops=1, max_json_bytes=1000, max_upload_bytes=5000)
    app = FastAPI(middleware=[Middleware(guard.Guard, state=state)])

    @app.post("/echo")
    async def echo(request: Request):
        return {"bytes": len(await request.body())}

    return TestClient(app), state


def test_bodies_over_the_bound_are_refused_with_one_line(guarded):
    client, state = guarded
    assert client.post("/echo", content=b"x" * 900).json() == {"bytes": 900}
    r = client.post("/echo", content=b"x" * 1001)
    assert r.status_code == 413 and "1,001-byte request body" in r.json()["detail"]
    r = client.post("/echo", content=iter([b"x" * 600, b"x" * 600]))  # chunked, no Content-Length
    assert r.status_code == 413
    assert client.post("/echo", content=iter([b"x" * 300, b"x" * 300])).json() == {"bytes": 600}
    r = client.post("/echo", files={"files": ("a.bin", b"x" * 6000)})
    assert r.status_code == 413 and "in one upload request" in r.json()["detail"]
    assert state.refused["large body"] == 2 and state.refused["large upload"] == 1


def test_the_client_is_its_address_not_its_own_forwarded_for_words():
    scope = {"client": ("127.0.0.1", 5), "headers": [(b"x-forwarded-for", b"6.6.6.6, 10.0.0.1")]}
    assert guard.client_key(scope, 0) == "127.0.0.1"  # no proxy in front: the header is the client's
    assert guard.client_key(scope, 1) == "10.0.0.1"  # one proxy: the address it saw
    assert guard.proxy_hops({"SPACE_ID": "x/y"}) == 1 and guard.proxy_hops({}) == 0
    with pytest.raises(ValueError, match="IVFUSION_PROXY_HOPS"):
        guard.proxy_hops({"IVFUSION_PROXY_HOPS": "-1"})


# ----------------------------------------------------------------------------- queue places
def _request(address: str):
    return Request({"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "query_string": b"",
                    "client": ("127.0.0.1", 1), "headers": [(b"x-forwarded-for", address.encode())]})


@pytest.fixture()
def queue():
    """A real Gradio queue (not started: joined events stay where the places put them)."""
    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda x: x, box, box, api_name="echo")
    demo.queue(max_size=12)
    state = guard.GuardState(hops=1)
    return places.QueuePlaces(demo, state, gone_after_s=5.0), state


def _join(qp, session: str, address: str):
    from gradio.data_classes import PredictBodyInternal

    request = _request(address)
    body = PredictBodyInternal(data=["x"], fn_index=0, session_hash=session, request=request)
    return asyncio.run(qp.push(body, request, None))


def _order(qp):
    return [ev.session_hash for ev in qp.waiting()]


def test_a_session_and_an_address_hold_at_most_their_places(queue):
    qp, state = queue
    assert _join(qp, "s1", "10.0.0.1")[0] and _join(qp, "s1", "10.0.0.1")[0]
    ok, text, _ = _join(qp, "s1", "10.0.0.1")
    assert not ok and "at most 2 waiting requests per visitor" in text
    for k in range(places.address_share(12) - 2):  # invented hashes fill the address's share ...
        assert _join(qp, f"fake{k}", "10.0.0.1")[0]
    ok, text, _ = _join(qp, "fake-next", "10.0.0.1")
    assert not ok and "from your network" in text
    assert _join(qp, "visitor", "10.0.0.2")[0]  # ... and never another address's places
    assert state.refused["queue places (address)"] == 1


def test_a_new_visitor_goes_ahead_of_others_second_requests_and_addresses_take_turns(queue):
    qp, _ = queue
    for session in ("a", "a", "b", "b"):
        _join(qp, session, "10.0.0.1")
    assert _order(qp) == ["a", "b", "a", "b"]  # b's first request before a's second
    _join(qp, "c", "10.0.0.2")  # another address: its first request right after that address's first
    assert _order(qp) == ["a", "c", "b", "a", "b"]


def test_a_class_behind_one_address_is_served_in_order(queue):
    qp, _ = queue
    for k in range(6):
        _join(qp, f"student{k}", "10.9.9.9")
    assert _order(qp) == [f"student{k}" for k in range(6)]


def test_requests_of_clients_that_never_listen_are_dropped(queue):
    qp, state = queue
    _join(qp, "listening", "10.0.0.1")
    _join(qp, "gone", "10.0.0.2")
    state.streams.opened("listening")
    for ev in qp.waiting():
        ev.enqueue_time -= 6.0  # both joined 6 s ago
    assert asyncio.run(qp.drop_gone()) == 1
    assert _order(qp) == ["listening"]
    state.streams.closed("listening")
    assert asyncio.run(qp.drop_gone()) == 1 and _order(qp) == []


# ----------------------------------------------------------------------------- the Lab's folder
def test_the_lab_folder_is_private_and_a_planted_one_is_refused(tmp_path):
    folder = session.lab_folder()
    st = os.lstat(folder)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.getuid()
    assert folder.name.startswith(f"ivfusion-lab-{os.getpid()}-")
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="is a symlink"):
        session.check_private(link)
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    with pytest.raises(ValueError, match="writable by other users"):
        session.check_private(open_folder)


def test_a_dead_process_folder_is_swept_and_a_symlinked_one_is_never_followed(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    stale = tmp / f"ivfusion-lab-{pid}-abc"
    stale.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (tmp / f"ivfusion-lab-{pid}-xyz").symlink_to(victim)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(session, "_LAB_FOLDER", None)
    folder = session.lab_folder()
    assert folder.parent == tmp and folder.is_dir()
    assert not stale.exists()
    assert (victim / "keep.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- bounded work per request
def _layer(path, h=32, w=48):
    import cv2
    import numpy as np

    img = np.zeros((h, w, 4), np.uint8)
    img[: h // 2, : w // 2] = 255
    cv2.imwrite(str(path), img)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_an_editor_with_too_many_layers_is_refused_in_one_line(tmp_path):
    from ivfusion.io import ImageError
    from ivfusion.lab import uploads

    layers = [_layer(tmp_path / f"l{k}.png") for k in range(uploads.MAX_LAYERS + 1)]
    with pytest.raises(ImageError, match=rf"^drawn mask: {uploads.MAX_LAYERS + 1} layers received; at most "):
        uploads.drawn_keep_mask({"background": None, "layers": layers, "composite": None})
    mask = uploads.drawn_keep_mask({"background": None, "layers": layers[: uploads.MAX_LAYERS], "composite": None})
    assert mask is not None and mask.min() == 0.0 and mask.max() == 1.0


def test_layers_over_the_pixel_budget_are_refused_from_their_headers(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from ivfusion import io
    from ivfusion.io import ImageError
    from ivfusion.lab import uploads

    side = int((uploads.MAX_LAYER_PIXELS * 0.6) ** 0.5)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((side, side), np.uint8))
    decodes = []
    real = io.read_image
    monkeypatch.setattr(io, "read_image", lambda *a, **k: decodes.append(a) or real(*a, **k))
    layer = {"path": str(big), "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(ImageError, match=r"^drawn mask: its layers hold \d+\.\d megapixels; at most 50 are accepted"):
        uploads.drawn_keep_mask({"background": None, "layers": [layer, layer], "composite": None})
    assert decodes == []  # refused before any decode


def test_a_hold_past_its_budget_stops_at_the_next_step_with_one_line(tmp_path, monkeypatch):
    from ivfusion.lab import slot, uploads

    layers = [_layer(tmp_path / f"l{k}.png") for k in range(2)]
    monkeypatch.setattr(slot.COMPUTE, "budget_s", 1e-9)  # any real step passes it
    with slot.COMPUTE.hold("fuse"):
        with pytest.raises(slot.OverBudget, match=r"passed its 1e-09 s compute budget \(.* at drawn mask layer 1\)"):
            uploads.drawn_keep_mask({"background": None, "layers": layers, "composite": None})
    # outside the slot (an unqueued handler) the budget does not apply
    assert uploads.drawn_keep_mask({"background": None, "layers": layers, "composite": None}) is not None


# ----------------------------------------------------------------------------- what the page says about an upload
def test_the_pair_note_never_says_ready_for_a_file_fuse_would_refuse(tmp_path):
    import cv2
    import numpy as np

    from ivfusion.io import ImageError
    from ivfusion.lab import uploads

    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8))
    assert "Ready" in uploads.pair_info(str(ok), str(ok))
    data = ok.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])  # a truncated PNG: its header is fine
    # a large one (over the preview decode budget) is judged by its end marker
    big = tmp_path / "big.png"
    img = np.zeros((3000, 3000, 3), np.uint16)
    img[::5] = 40000
    cv2.imwrite(str(big), img)
    big_cut = tmp_path / "big_cut.png"
    big_cut.write_bytes(big.read_bytes()[:-200])
    for bad in (cut, big_cut):
        with pytest.raises(ImageError):
            uploads.load_image(str(bad), "visible image")  # what Fuse does
        with pytest.raises(ImageError, match="^visible image: "):
            uploads.pair_info(str(bad), str(ok))
    assert "Visible" in uploads.pair_info(str(big), None)


def test_an_elongated_upload_is_refused_with_its_own_size(tmp_path):
    import cv2
    import numpy as np

    from ivfusion.io import ImageError
    from ivfusion.lab import uploads

    long = tmp_path / "long.png"
    cv2.imwrite(str(long), np.zeros((10, 100000), np.uint8))
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), np.zeros((64, 64), np.uint8))
    expected = r"^visible image: 100000x10 pixels would be 640x\d once downscaled to at most 640 a side"
    with pytest.raises(ImageError, match=expected):
        uploads.load_pair(str(long), str(ok), 640)
    with pytest.raises(ImageError, match=expected):
        uploads.pair_info(str(long), str(ok), 640)
    thin = tmp_path / "thin.png"
    cv2.imwrite(str(thin), np.zeros((1, 100000), np.uint8))
    with pytest.raises(ImageError, match=r"^visible image: 100000x1 pixels; ISFuse needs at least"):
        uploads.load_pair(str(thin), str(ok), 640)


@pytest.mark.parametrize("value", ["0", "-1", "none"])
def test_a_max_side_of_zero_never_turns_downscaling_off(value):
    from ivfusion.lab.models import ModelBank

    with pytest.raises(ValueError, match=rf"^IVFUSION_MAX_SIDE={value!r}: expected a whole number from 64 to 8192"):
        ModelBank(env={"IVFUSION_MAX_SIDE": value})
