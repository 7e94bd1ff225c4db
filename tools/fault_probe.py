"""Fault probe for issue 11: the four judged checks, against a real app server on 127.0.0.1.

    python tools/fault_probe.py            # all four checks, then a pass/fail table
    python tools/fault_probe.py --only a   # one check (a to i)

(a) A 49-MP 16-bit RGBA PNG (7000x7000; it compresses to a few hundred KB) is sent at once,
    `--repeat` times, through every event handler that takes an image: the unqueued ones by a
    POST to /gradio_api/run/predict with their fn_index (being private hides them from
    gradio_client only), the queued ones (/fuse included) through /gradio_api/queue/join.
    The server's peak RSS growth is read from /proc/PID/status (VmHWM after clear_refs=5).
    Bar: at most 1 GB. The probe kills the server it started if growth passes --kill-gb.
(b) The app started with junk IVFUSION_WEIGHTS (a junk .pth; a folder with a bad config.json)
    must start and serve one /fuse of a real pair.
(c) `ivfusion fuse` over folders whose middle pair is unusable (1x1) must write the others and
    exit non-zero without a traceback.
(d) The eleven metrics on black images must not raise.
(e) An extra, not one of the judged four (`--only e`): check (a) with the same image in 16-bit
    grey (93 MiB decoded), which the decoder accepts, so it measures the full decodes and
    the network at the Lab's working size (IVFUSION_MAX_SIDE, default 640: the server
    inherits this process's environment, so `IVFUSION_MAX_SIDE=1024 python
    tools/fault_probe.py --only e` measures another size).

(f)-(i) The trust boundary (issue 19): (f) paths to a text file and a distinctive PNG outside the
    upload folder, with and without Gradio's `meta`, sent to every handler that takes a file:
    no returned URL may serve the text, no returned image may hold the PNG; (g) every queued
    event called past the queue must be refused; (h) a 44 MB TIFF with 5.5 million strip
    offsets (a 51 MB one is refused by /upload with 413) through the unqueued handlers at once: peak RSS growth under 200 MiB; (i) a deflated
    `.pth` declaring 2 GB through `ivfusion fuse`: refused, peak under 1 GiB.

(j)-(o) One visitor who wants to break the Lab for everyone (issue 25), each against a real
    server: (j) an upload flood from one address (13 x 45 MiB, plus one request holding two
    45 MiB files); (k) a /fuse whose drawn mask has 100 layers; (l) 8 invented session hashes
    x 2 joins of a K=32 stability run; (m) a 112 MiB JSON body to /queue/join; (n) a Hub and a
    checkpoint URL that accept connections and never answer, at start-up; (o) planted
    symlinks where a shared Lab folder used to be. After each: the page's images still answer
    200, a plain Fuse from another client (a fresh seed: no cached result) finishes, and the
    server's RSS returns within 100 MiB of its baseline. `python tools/fault_probe.py --only
    jklmno` reprints them (docs/LAB.md, "One visitor against everyone").

Only loopback traffic; every loop and wait is bounded. The server helpers (`AppServer`,
`image_handlers`, `payload`, `call`) are reused by tests/test_app_load.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's tests/
from tests.appserver import (PYTHON, ROOT, AppServer, RssWatch, big_png, burst, call,  # noqa: E402
                             dependency, holds_pixels, image_handlers, output_refs, payload, silent_server)

SHARED = Path(os.environ.get("IVFUSION_SHARED") or ROOT.parent / "shared")
GB = 1024.0  # MiB


def real_pair(k: int = 0) -> tuple[Path, Path]:
    root = SHARED / "data" / "roadscene" / "test"
    names = sorted(p.name for p in (root / "ir").iterdir())
    return root / "vi" / names[k], root / "ir" / names[k]


# ----------------------------------------------------------------------------- the four checks
def check_a(work: Path, repeat: int, kill_gb: float, channels: int = 4) -> tuple[bool, str]:
    """The issue's file: 7000x7000 16-bit RGBA (373 MiB decoded). channels=1: the same in
    16-bit grey (93 MiB decoded, within the decode budget), which reaches the full decodes
    and the network at the Lab's working size (check e, reported, not one of the judged four)."""
    png = big_png(work / f"big49mp_{channels}ch16.png", channels=channels)
    with AppServer(log_dir=work) as server:
        handlers = image_handlers(server.config)
        names = sorted({f"{dep.get('api_name') or '?'}#{i}{'' if dep.get('queue') is not False else '(unqueued)'}"
                        for i, dep in handlers})
        image = server.upload(png)
        jobs = [(i, dep, payload(server.config, dep, image)) for _ in range(repeat) for i, dep in handlers]
        time.sleep(3.0)  # let start-up work settle before the baseline
        server.reset_peak()
        watch = RssWatch(server, kill_gb * GB)
        results = burst(server, jobs)
        watch.stop()
        growth = max(server.peak(), watch.max_rss) - watch.base
        alive = server.alive() and not watch.killed
    errors = sorted({(r["error"] or "")[:100] for r in results if not r["ok"]})
    detail = (f"peak RSS growth {'>' if watch.killed else ''}{growth:.0f} MiB (base {watch.base:.0f} MiB) over "
              f"{len(jobs)} calls to {len(handlers)} handlers [{', '.join(names)}]; "
              f"{sum(r['ok'] for r in results)} succeeded; server "
              f"{'KILLED by the probe' if watch.killed else ('alive' if alive else 'DIED')}"
              + (f"; refusals: {' | '.join(errors)}" if errors else ""))
    return alive and growth <= GB, detail


def check_e(work: Path, repeat: int, kill_gb: float) -> tuple[bool, str]:
    return check_a(work, repeat, kill_gb, channels=1)


def check_b(work: Path) -> tuple[bool, str]:
    junk_pth = work / "junk.pth"
    junk_pth.write_bytes(os.urandom(4096))
    bad_dir = work / "badweights"
    bad_dir.mkdir(exist_ok=True)
    (bad_dir / "config.json").write_text('{"dim": "twenty", "eta": ')
    (bad_dir / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    vis, ir = real_pair(0)
    parts, ok_all = [], True
    for label, spec in (("junk .pth", junk_pth), ("folder with a bad config.json", bad_dir)):
        try:
            with AppServer(env={"IVFUSION_WEIGHTS": str(spec)}, log_dir=work) as server:
                fn_index, dep = dependency(server.config, "fuse")
                res = call(server, fn_index, dep, payload(server.config, dep, server.upload(vis), server.upload(ir)))
                page = json.dumps(server.config)
                said = "bundled" in page or "could not be loaded" in page
                ok = res["ok"]
                parts.append(f"{label}: started, /fuse {'served' if ok else 'FAILED: ' + str(res['error'])}"
                             f"{', page names the fallback' if said else ', page silent about the fallback'}")
        except RuntimeError as e:
            ok = False
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            parts.append(f"{label}: did NOT start ({lines[-1][:120] if lines else e})")
        ok_all &= ok
    return ok_all, "; ".join(parts)


def check_c(work: Path) -> tuple[bool, str]:
    import cv2
    import numpy as np

    root = work / "cli"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True)
    for k, stem in ((0, "1_first"), (1, "3_last")):
        vis, ir = real_pair(k)
        shutil.copy(vis, root / "vi" / f"{stem}{vis.suffix}")
        shutil.copy(ir, root / "ir" / f"{stem}{ir.suffix}")
    for sub in ("ir", "vi"):
        cv2.imwrite(str(root / sub / "2_tiny.png"), np.full((1, 1), 128, np.uint8))
    cmd = [PYTHON, "-m", "ivfusion", "fuse", "--infrared", str(root / "ir"), "--visible", str(root / "vi"),
           "--out", str(root / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    out_dir = root / "out"
    written = sorted(q.name for q in out_dir.iterdir()) if out_dir.is_dir() else []
    both = any(n.startswith("1_first") for n in written) and any(n.startswith("3_last") for n in written)
    tb = "Traceback (most recent call last)" in p.stdout + p.stderr
    passed = both and p.returncode != 0 and not tb
    last = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()][-2:]
    return passed, (f"exit {p.returncode}; wrote {written or 'nothing'}; traceback: {'YES' if tb else 'no'}; "
                    f"last lines: {' / '.join(x[:110] for x in last)}")


def check_d(work: Path) -> tuple[bool, str]:
    code = (
        "import json, numpy as np\n"
        "from ivfusion.metrics import evaluate_pair\n"
        "out = {}\n"
        "noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)\n"
        "for name, side, fused in (('black 64x64', 64, None), ('black 8x8', 8, None), ('black sources', 64, noise)):\n"
        "    z = np.zeros((side, side), np.uint8)\n"
        "    f = np.zeros((side, side, 3), np.uint8) if fused is None else fused\n"
        "    out[name] = evaluate_pair(z, np.zeros((side, side, 3), np.uint8), f)\n"
        "print(json.dumps(out, default=float))\n"
    )
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    tb = "Traceback" in p.stderr
    if p.returncode != 0 or tb:
        last = [ln for ln in p.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
        return False, f"raised: {last[0][:160]}"
    vals = json.loads(p.stdout.strip().splitlines()[-1])
    shown = ", ".join(f"{k}={v:.3g}" for k, v in vals["black 64x64"].items())
    return True, f"no exception on black 64x64, 8x8 and black sources with a noisy fusion; black 64x64: {shown}"


def check_f(work: Path) -> tuple[bool, str]:
    """Paths a client names outside the upload folder, with and without Gradio's meta, to every
    handler that takes a file: nothing of them may come back, and the refusal is one message
    whether or not the file exists."""
    import cv2
    import numpy as np

    secret_dir = Path(tempfile.mkdtemp(prefix="ivfusion-secret-"))
    text = secret_dir / "secret.txt"
    text.write_text("ivfusion-probe-secret-" + uuid.uuid4().hex)
    pixels = (np.random.default_rng(1).random((96, 128)) * 255).astype(np.uint8)
    png = secret_dir / "secret.png"
    cv2.imwrite(str(png), pixels)
    leaks, calls = [], 0
    try:
        with AppServer(env={"IVFUSION_MAX_SIDE": "128"}, log_dir=work) as server:
            comps = {c["id"]: c for c in server.config["components"]}
            for fn_index, dep in enumerate(server.config["dependencies"]):
                kinds = [comps.get(c, {}).get("type") for c in dep["inputs"]]
                if dep.get("backend_fn") is False or not any(k in ("image", "imageeditor", "file") for k in kinds):
                    continue
                for target in (text, png):
                    for meta in (False, True):
                        f = {"path": str(target), "orig_name": target.name}
                        if meta:
                            f["meta"] = {"_type": "gradio.FileData"}
                        data = [({"background": f, "layers": [f], "composite": f} if k == "imageeditor" else
                                 f if k in ("image", "file") else comps[c].get("props", {}).get("value"))
                                for c, k in zip(dep["inputs"], kinds)]
                        res = call(server, dep.get("id", fn_index), dep, data, timeout=120)
                        calls += 1
                        for ref in output_refs(res["output"]):
                            url = ref if ref.startswith("http") else f"{server.api}/file={ref}"
                            r = httpx.get(url, timeout=30)
                            if r.status_code == 200 and (text.read_text().encode() in r.content
                                                         or holds_pixels(r.content, pixels)):
                                leaks.append(f"{dep.get('api_name') or fn_index}:{target.name}:meta={meta}")
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
    return not leaks, f"{calls} calls to every file-taking handler; served back: {leaks or 'nothing'}"


def check_g(work: Path) -> tuple[bool, str]:
    """Direct calls of the queued events, past the queue, must be refused."""
    refused, names = 0, []
    with AppServer(env={"IVFUSION_MAX_SIDE": "128"}, log_dir=work) as server:
        for fn_index, dep in enumerate(server.config["dependencies"]):
            if dep.get("backend_fn") is False or dep.get("queue") is False:
                continue
            body = {"data": [], "fn_index": dep.get("id", fn_index), "session_hash": "probe", "event_data": None,
                    "trigger_id": None}
            r = httpx.post(server.api + "/run/predict", json=body, timeout=60)
            names.append(dep.get("api_name") or str(fn_index))
            refused += r.status_code == 404
    return refused == len(names), f"{refused} of {len(names)} queued events refused a direct call ({', '.join(names)})"


def check_h(work: Path) -> tuple[bool, str]:
    """A 44 MB TIFF with 5.5 million strip offsets, 16 header reads at once (pair info, the
    unqueued handler): the header read is refused within its budget."""
    sys.path.insert(0, str(ROOT))
    from tests.bad_files import tiff_strip_bomb

    bomb = work / "bomb.tif"
    bomb.write_bytes(tiff_strip_bomb(5_500_000))  # 44 MB: under the launch's 50 MB upload limit (a 51 MB file gets 413)
    with AppServer(env={"IVFUSION_MAX_SIDE": "128"}, log_dir=work) as server:
        image = server.upload(bomb)
        handlers = [(i, d) for i, d in image_handlers(server.config) if d.get("queue") is False]
        jobs = [(i, d, payload(server.config, d, image)) for i, d in handlers for _ in range(16 // max(1, len(handlers)) + 1)]
        time.sleep(2.0)
        server.reset_peak()
        watch = RssWatch(server, 4 * GB)
        t0 = time.monotonic()
        burst(server, jobs, timeout=120)
        seconds = time.monotonic() - t0
        watch.stop()
        growth = max(server.peak(), watch.max_rss) - watch.base
        alive = server.alive()
    return alive and growth < 200, f"{len(jobs)} unqueued calls in {seconds:.1f} s; peak RSS growth {growth:.0f} MiB"


def check_i(work: Path) -> tuple[bool, str]:
    """A 2 MB deflated .pth whose entries declare 2 GB, through the CLI: refused, bounded memory."""
    from tests.bad_files import pth_bomb

    pth_bomb(work / "bomb.pth", 2**31)
    import cv2
    import numpy as np

    img = work / "p.png"
    cv2.imwrite(str(img), np.zeros((64, 64), np.uint8))
    argv = ["fuse", "--infrared", str(img), "--visible", str(img), "--out", str(work / "o.png"),
            "--weights", str(work / "bomb.pth")]
    run = ("import resource, sys\nfrom ivfusion.cli import main\n"
           f"rc = main({argv!r})\n"
           "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    p = subprocess.run([PYTHON, "-c", run], capture_output=True, text=True, timeout=300, cwd=ROOT)
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    peak_mib = int(last.split()[1]) / 1024 if last.startswith("peak_kib") else -1.0
    ok = (p.returncode != 0 and "refused before unpacking" in p.stderr and "Traceback" not in p.stderr
          and 0 < peak_mib < 1024)
    return ok, f"exit {p.returncode}, peak RSS {peak_mib:.0f} MiB: {p.stderr.strip().splitlines()[0][:160]}"


# ----------------------------------------------------------------------------- issue 25: one against everyone
ATTACKER = {"x-forwarded-for": "10.0.0.1"}  # the probe's server trusts one proxy hop (IVFUSION_PROXY_HOPS=1)
VISITOR = {"x-forwarded-for": "10.0.0.2"}
ABUSE_ENV = {"IVFUSION_PROXY_HOPS": "1", "IVFUSION_WEIGHTS": "", "IVFUSION_QUEUE": "96"}
_ABUSE: dict = {}


def _comp_index(server: AppServer, dep: dict, elem_id: str | None = None, kind: str | None = None) -> list[int]:
    comps = {c["id"]: c for c in server.config["components"]}
    return [i for i, c in enumerate(dep["inputs"])
            if (elem_id and comps[c].get("props", {}).get("elem_id") == elem_id)
            or (kind and comps[c].get("type") == kind)]


def plain_fuse(server: AppServer, headers: dict | None = None) -> tuple[bool, float, str]:
    """A visitor's Fuse of a real pair with a fresh seed (so no cached result answers it):
    (finished, seconds from the join, error)."""
    vis, ir = real_pair(0)
    fn_index, dep = dependency(server.config, "fuse")
    data = payload(server.config, dep, server.upload(vis, headers=headers), server.upload(ir, headers=headers))
    for i in _comp_index(server, dep, kind="imageeditor"):
        data[i] = None
    for i in _comp_index(server, dep, elem_id="seed"):
        data[i] = int.from_bytes(os.urandom(3), "big")
    res = call(server, fn_index, dep, data, timeout=300)
    return res["ok"], res["seconds"], res["error"] or ""


def settle(server: AppServer, target: float, timeout: float = 60.0) -> float:
    """The server's RSS once under `target` MiB, or its last reading after `timeout` s."""
    deadline = time.monotonic() + timeout
    rss = server.rss()
    while rss > target and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = server.rss()
    return rss


def after_attack(server: AppServer, base: float, leave=None) -> tuple[bool, str]:
    """The three judged conditions after an attack: the page's images, a plain Fuse from
    another client, and (once the attacker has gone: `leave()`) RSS back near `base`."""
    broken = server.broken_images()
    ok, seconds, error = plain_fuse(server)
    if leave is not None:
        leave()
    # a stability run already started finishes first: on a loaded machine a K=32 run outlasts any
    # fixed wait (row l read +337 MiB at a load of 10-16, +3 and +41 MiB idle), so wait for the
    # server to go quiet, then give the janitor's trim its time
    server.wait_idle(timeout=900)
    rss = settle(server, base + 100, timeout=180)
    tracebacks = server.tracebacks()
    passed = not broken and ok and rss - base <= 100 and not tracebacks and server.alive()
    return passed, (f"page images {'all 200' if not broken else f'{len(broken)} broken'}; plain Fuse "
                    f"{'finished in %.1f s' % seconds if ok else 'FAILED: ' + error[:80]}; RSS {rss - base:+.0f} MiB "
                    f"vs baseline{'; tracebacks: ' + str(tracebacks[:2]) if tracebacks else ''}")


def baseline(server: AppServer) -> float:
    """The server's RSS once its start-up precompute is over and a plain Fuse's pair is in the
    shared cache (so the Fuse after an attack measures the attack, not a cache filling)."""
    plain_fuse(server)
    server.wait_idle()
    plain_fuse(server)
    return settle(server, 0, timeout=3)


def abuse_server(work: Path) -> tuple[AppServer, float]:
    """One server for checks j-m (started once), and its baseline RSS after a first Fuse."""
    if "server" not in _ABUSE or not _ABUSE["server"].alive():
        server = AppServer(env=ABUSE_ENV, log_dir=work)
        _ABUSE["server"], _ABUSE["base"] = server, baseline(server)
    return _ABUSE["server"], _ABUSE["base"]


def _post_files(server: AppServer, files: list[Path], headers: dict) -> httpx.Response:
    handles = [open(f, "rb") for f in files]
    try:
        return httpx.post(server.api + "/upload", files=[("files", (f.name, h)) for f, h in zip(files, handles)],
                          headers=headers, timeout=120)
    finally:
        for h in handles:
            h.close()


def check_j(work: Path) -> tuple[bool, str]:
    """An upload flood from one address: the flooder's own oldest files go, not the page's
    and not a visitor's earlier upload."""
    server, base = abuse_server(work)
    visitor = server.upload(real_pair(1)[0], headers=VISITOR)
    blob = work / "flood.bin"
    blob.write_bytes(os.urandom(45 * 2**20))
    two = _post_files(server, [blob, blob], ATTACKER)  # each file under the 50 MB limit, the request not
    t0, codes, written = time.monotonic(), [], 0
    for k in range(13):
        blob.write_bytes(os.urandom(45 * 2**20))  # distinct files: each lands in its own folder
        r = _post_files(server, [blob], ATTACKER)
        codes.append(r.status_code)
        written += blob.stat().st_size if r.status_code == 200 else 0
    seconds = time.monotonic() - t0
    blob.unlink()
    from ivfusion.lab.guard import CLIENT_MAX_BYTES

    upload_dir = Path(visitor["path"]).parents[1]
    held = sum(f.stat().st_size for f in upload_dir.rglob("flood.bin"))
    kept = Path(visitor["path"]).is_file()
    passed, text = after_attack(server, base)
    ok = passed and two.status_code == 413 and kept and held <= CLIENT_MAX_BYTES and set(codes) == {200}
    return ok, (f"one request of 2 x 45 MiB: HTTP {two.status_code}; {written / 2**30:.2f} GiB in 13 uploads in "
                f"{seconds:.0f} s, the flooder holds {held / 2**20:.0f} MiB after (bound "
                f"{CLIENT_MAX_BYTES / 2**20:.0f}); a visitor's earlier upload {'kept' if kept else 'LOST'}; {text}")


def check_k(work: Path) -> tuple[bool, str]:
    """A /fuse whose drawn mask has 100 layers of a 7000x7000 16-bit PNG."""
    server, base = abuse_server(work)
    layer = server.upload(big_png(work / "layer7000.png", channels=1), headers=ATTACKER)
    vis, ir = real_pair(0)
    fn_index, dep = dependency(server.config, "fuse")
    data = payload(server.config, dep, server.upload(vis, headers=ATTACKER), server.upload(ir, headers=ATTACKER))
    editors = _comp_index(server, dep, kind="imageeditor")
    data[editors[0]] = {"background": None, "layers": [layer] * 100, "composite": None}
    data[editors[1]] = None
    res = call(server, fn_index, dep, data, timeout=600)
    passed, text = after_attack(server, base)
    refused = not res["ok"] and "layers received" in (res["error"] or "")
    return passed and refused, (f"100 layers refused in {res['seconds']:.1f} s "
                                f"({(res['error'] or 'not refused')[:70]}); {text}")


def check_l(work: Path) -> tuple[bool, str]:
    """Invented session hashes x 2 joins of a K=32 stability run from one address, more than
    the queue holds, each hash listening (a client that never listens is dropped 10 s after
    it joins): how many places they got, a plain Fuse from another client meanwhile, and the
    queue once the attacker has gone."""
    server, base = abuse_server(work)
    vis, ir = real_pair(0)
    fn_index, dep = dependency(server.config, "stability")
    data = payload(server.config, dep, server.upload(vis, headers=ATTACKER), server.upload(ir, headers=ATTACKER))
    for i in _comp_index(server, dep, kind="imageeditor"):
        data[i] = None
    for i in _comp_index(server, dep, elem_id="k-slider"):
        data[i] = 32
    from ivfusion.lab.places import address_share

    size = int(ABUSE_ENV["IVFUSION_QUEUE"])  # the app's default queue
    import threading

    stop, streams, opened = threading.Event(), [], []

    def listen(session):  # a capable attacker listens, so its requests are not dropped as gone
        try:
            with httpx.stream("GET", server.api + "/queue/data", params={"session_hash": session},
                              headers=ATTACKER, timeout=httpx.Timeout(300, connect=30)) as r:
                opened.append(r)
                for _ in r.iter_lines():
                    if stop.is_set():
                        return
        except (httpx.HTTPError, httpx.StreamError, RuntimeError):
            pass

    codes = []
    for k in range(2 * size):  # more than the whole queue, 2 joins a hash, as the probe did
        session = f"rot{k // 2:03d}{uuid.uuid4().hex[:6]}" if k % 2 == 0 else session
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
        codes.append(httpx.post(server.api + "/queue/join", json=body, headers=ATTACKER, timeout=60).status_code)
        if k % 2 == 0 and codes[-1] == 200:
            streams.append(threading.Thread(target=listen, args=(session,), daemon=True))
            streams[-1].start()
    accepted = codes.count(200)
    left = [None]

    def leave():
        stop.set()  # the attacker goes: its streams close and Gradio drops its requests
        for r in list(opened):
            try:
                r.close()
            except Exception:  # noqa: BLE001 - closing from another thread may race its read
                pass
        for t in streams:
            t.join(30)
        deadline = time.monotonic() + 120
        while httpx.get(server.api + "/queue/status", timeout=10).json().get("queue_size") and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        left[0] = httpx.get(server.api + "/queue/status", timeout=10).json().get("queue_size")

    passed, text = after_attack(server, base, leave)
    share = address_share(size)
    return passed and left[0] == 0 and accepted <= share + 2, (
        f"{len(codes)} joins from {len(codes) // 2} hashes: {accepted} accepted (the address's share: {share} of "
        f"{size} places), {len(codes) - accepted} refused; queue empty once it left: {left[0] == 0}; {text}")


def check_m(work: Path) -> tuple[bool, str]:
    """A 112 MiB JSON body to /queue/join, three at once."""
    server, base = abuse_server(work)
    body = b'{"data": ["' + b"x" * (112 * 2**20) + b'"], "fn_index": 0, "session_hash": "big"}'
    server.reset_peak()
    before = server.rss()
    jobs = [None] * 3

    def one(k):
        try:
            jobs[k] = httpx.post(server.api + "/queue/join", content=body, timeout=120,
                                 headers={"content-type": "application/json"}).status_code
        except httpx.HTTPError as e:  # the server may close the connection as it refuses
            jobs[k] = type(e).__name__

    import threading

    threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    peak = server.peak() - before
    passed, text = after_attack(server, base)
    return passed and all(j in (413, "RemoteProtocolError", "WriteError") for j in jobs), (
        f"3 x 112 MiB bodies: {jobs}; peak RSS during them {peak:+.0f} MiB; {text}")


def check_n(work: Path) -> tuple[bool, str]:
    """A Hub (IVFUSION_WEIGHTS=hf://...) and the authors' checkpoint URL (the Space's default
    model) that accept connections and never answer: time to a served page, which must not
    wait for them; then what a page opened after the deadline says."""
    from ivfusion.hub import hub_deadline_s

    with silent_server() as silent:
        env = {**ABUSE_ENV, "IVFUSION_WEIGHTS": "hf://owner/repo", "HF_ENDPOINT": silent, "HF_HUB_OFFLINE": "",
               "IVFUSION_DEFAULT_MODEL": "authors", "IVFUSION_OFFICIAL_URL": silent + "/best.pth",
               "IVFUSION_CACHE": str(work / "cache")}
        t0 = time.monotonic()
        with AppServer(env=env, log_dir=work, start_timeout=600) as server:
            up = time.monotonic() - t0
            said = str(server.config).count("downloading in the background") >= 2
            fn_index, dep = dependency(server.config, "model_status")
            note = ""
            while time.monotonic() - t0 < 120 and ("did not download within" not in note
                                                    or "did not answer within" not in note):
                time.sleep(1)
                note = str(call(server, fn_index, dep, [], timeout=60).get("output"))
            told = time.monotonic() - t0
            said = said and "did not download within" in note and "did not answer within" in note
            base = baseline(server)
            passed, text = after_attack(server, base)
    deadline = hub_deadline_s(env)
    return passed and said, (f"page served {up:.0f} s after start (downloads in the background, deadline "
                             f"{deadline:g} s each), a page opened {told:.0f} s after start says they failed: "
                             f"{said}; {text}")


def check_o(work: Path) -> tuple[bool, str]:
    """Symlinks planted where a shared Lab folder used to be ($TMPDIR/ivfusion-lab, and one
    named like a dead process's private folder), pointing at another user's folder: nothing
    there is served, swept or removed."""
    import cv2
    import numpy as np

    tmp = work / "tmp"
    tmp.mkdir()
    victim = work / "victim"
    victim.mkdir()
    pixels = (np.random.default_rng(2).random((96, 128)) * 255).astype(np.uint8)
    cv2.imwrite(str(victim / "secret.png"), pixels)
    (victim / "static-1").mkdir()
    (tmp / "ivfusion-lab").symlink_to(victim)
    (tmp / "ivfusion-lab-999999-planted").symlink_to(victim)
    env = {**ABUSE_ENV, "TMPDIR": str(tmp)}
    served = []
    with AppServer(env=env, log_dir=work) as server:
        base = baseline(server)
        for path in (tmp / "ivfusion-lab" / "secret.png", tmp / "ivfusion-lab-999999-planted" / "secret.png"):
            fn_index, dep = dependency(server.config, "fuse")
            res = call(server, fn_index, dep, payload(server.config, dep, {"path": str(path)}), timeout=120)
            served += [ref for ref in output_refs(res["output"])
                       if holds_pixels(httpx.get(ref if ref.startswith("http") else f"{server.api}/file={ref}",
                                                 timeout=30).content, pixels)]
        passed, text = after_attack(server, base)
        import signal

        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(60)
    intact = (victim / "secret.png").is_file() and (victim / "static-1").is_dir()
    return passed and not served and intact, (f"planted folder's file served: {bool(served)}; its files intact after "
                                              f"start, requests and SIGTERM: {intact}; {text}")


CHECKS = {
    "a": ("49-MP 16-bit PNG through every image handler: peak RSS growth <= 1 GB", check_a),
    "b": ("junk IVFUSION_WEIGHTS: the app starts and serves /fuse", check_b),
    "c": ("ivfusion fuse, middle pair unusable: others written, exit != 0, no traceback", check_c),
    "d": ("metrics on black images do not raise", check_d),
    "e": ("(extra) 49-MP 16-bit GREY PNG, accepted by the decoder: peak RSS growth <= 1 GB", check_e),
    "f": ("paths outside the upload folder, with and without meta, to every file handler: nothing served", check_f),
    "g": ("queued events called directly, past the queue: refused", check_g),
    "h": ("TIFF strip-offset bomb through the unqueued handlers: bounded header reads", check_h),
    "i": ("deflated .pth declaring 2 GB through the CLI: refused before unpacking", check_i),
    "j": ("upload flood from one address: its own files go, the page and a visitor keep theirs", check_j),
    "k": ("/fuse with a 100-layer drawn mask: refused in one line", check_k),
    "l": ("invented session hashes x 2 joins from one address, listening: places bounded, dropped when gone",
          check_l),
    "m": ("112 MiB JSON bodies to /queue/join, 3 at once: refused unread", check_m),
    "n": ("silent Hub and checkpoint URL at start-up: the page comes up on the bundled weights", check_n),
    "o": ("symlinks planted where a shared Lab folder was: nothing followed", check_o),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="abcdfghijklmno",
                    help="which checks to run, e.g. 'a' or 'cd' (default: all but the extra 'e')")
    ap.add_argument("--repeat", type=int, default=2, help="calls per image handler in check (a) (default 2)")
    ap.add_argument("--kill-gb", type=float, default=4.0,
                    help="check (a) kills the server past this RSS growth, to protect the machine (default 4)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ivfusion-probe-"))
    rows = []
    try:
        for key in args.only:
            title, fn = CHECKS[key]
            t0 = time.monotonic()
            print(f"[{key}] {title} ...", flush=True)
            try:
                kwargs = {"repeat": args.repeat, "kill_gb": args.kill_gb} if key in "ae" else {}
                passed, detail = fn(work, **kwargs)
            except Exception as e:  # noqa: BLE001 - a probe reports, it does not stop
                passed, detail = False, f"probe error: {type(e).__name__}: {str(e)[-300:]}"
            rows.append((key, title, passed, detail, time.monotonic() - t0))
            print(f"    {'PASS' if passed else 'FAIL'} ({time.monotonic() - t0:.0f} s): {detail}", flush=True)
    finally:
        if "server" in _ABUSE:
            _ABUSE.pop("server").close()
        shutil.rmtree(work, ignore_errors=True)
    print("\n| check | result | what | measured |\n|---|---|---|---|")
    for key, title, passed, detail, _ in rows:
        print(f"| {key} | {'PASS' if passed else 'FAIL'} | {title} | {detail} |")
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
