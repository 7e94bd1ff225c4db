"""A real Lab server for tests and probes: `python app.py` as a subprocess on 127.0.0.1, and
raw calls of its events by fn_index, unqueued ones by POST /gradio_api/run/predict and queued
ones through /gradio_api/queue/join, as the page (or an attacker) would send them.

Used by tests/test_app_load.py, tests/test_trust_boundary.py and tools/fault_probe.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
IMAGE_TYPES = ("image", "imageeditor")


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_mib(pid: int, field: str) -> float:
    """VmRSS / VmHWM of a process, in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


class AppServer:
    """`python app.py` as a subprocess on 127.0.0.1 (a free port), with its log in a file.

    env: extra environment variables. Use as a context manager; the process is killed on exit.
    """

    def __init__(self, env: dict[str, str] | None = None, start_timeout: float = 300.0, log_dir: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/gradio_api"
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="ivfusion-probe-")) / f"server-{self.port}.log"
        full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1",
                    "GRADIO_SERVER_PORT": str(self.port), "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, str(ROOT / "app.py")], cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.config = self._wait(start_timeout)

    def _wait(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.proc.returncode} during start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + "/config", timeout=5)
                if r.status_code == 200:
                    return r.json()
            time.sleep(1.0)
        self.close()
        raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def tracebacks(self) -> list[str]:
        """The exception lines of the tracebacks in the server's log, less gr.Error: those are
        user errors shown as a toast, which Gradio also prints unless print_exception=False."""
        self._log.flush()
        out = []
        for chunk in self.log_path.read_text(errors="replace").split("Traceback (most recent call last)")[1:]:
            lines = [ln for ln in chunk.splitlines() if ln.strip(" :") and not ln.startswith((" ", "\t", "^"))]
            last = lines[0] if lines else "?"
            if not last.startswith("gradio.exceptions.Error"):
                out.append(last)
        return out

    def rss(self) -> float:
        return proc_mib(self.pid, "VmRSS")

    def cpu_s(self) -> float:
        """CPU seconds the server has used (user + system)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def wait_idle(self, quiet_s: float = 3.0, timeout: float = 300.0) -> bool:
        """Until the server has used under 5% of a core for quiet_s seconds (its start-up
        precompute is over); False if it never is within timeout."""
        deadline, last, since = time.monotonic() + timeout, self.cpu_s(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_s()
            if now - last > 0.05 * 0.5:
                since = time.monotonic()
            last = now
            if time.monotonic() - since >= quiet_s:
                return True
        return False

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: clear_refs 5), so that VmHWM is this burst's peak."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak(self) -> float:
        return proc_mib(self.pid, "VmHWM")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def upload(self, path: Path | str, headers: dict | None = None) -> dict:
        """Upload a file; its FileData payload as the page would send it. headers: e.g. an
        X-Forwarded-For, as a proxy in front would add (IVFUSION_PROXY_HOPS=1)."""
        with open(path, "rb") as f:
            r = httpx.post(self.api + "/upload", files={"files": (Path(path).name, f)}, timeout=120, headers=headers)
        r.raise_for_status()
        server_path = r.json()[0]
        return {"path": server_path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}

    def page_images(self) -> list[str]:
        """The URLs of every file the page shows from this server (in /config: the default
        pair and results, the example thumbnails, the architecture figure)."""
        found: set[str] = set()

        def walk(value):
            if isinstance(value, dict):
                url = value.get("url")
                if isinstance(url, str) and url.startswith(self.url):
                    found.add(url)
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk(httpx.get(self.url + "/config", timeout=30).json())
        return sorted(found)

    def broken_images(self) -> list[tuple[str, int]]:
        """The page's images that do not answer 200."""
        out = []
        for url in self.page_images():
            code = httpx.get(url, timeout=30).status_code
            if code != 200:
                out.append((url, code))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- the API, raw
def components(config: dict) -> dict[int, dict]:
    return {c["id"]: c for c in config["components"]}


def image_handlers(config: dict) -> list[tuple[int, dict]]:
    """(fn_index, dependency) of every Python event handler with an image among its inputs."""
    comps = components(config)
    out = []
    for i, dep in enumerate(config["dependencies"]):
        if dep.get("backend_fn") is False:
            continue
        if any(comps.get(c, {}).get("type") in IMAGE_TYPES for c in dep["inputs"]):
            out.append((dep.get("id", i), dep))
    return out


def dependency(config: dict, api_name: str) -> tuple[int, dict]:
    for i, dep in enumerate(config["dependencies"]):
        if dep.get("api_name") == api_name:
            return dep.get("id", i), dep
    raise KeyError(f"no event with api_name {api_name!r}")


def payload(config: dict, dep: dict, image: dict | None, other_image: dict | None = None) -> list:
    """The data list for a dependency: its image inputs get `image` (the second image input
    `other_image`, when given), editors get it as background and as one painted layer, and
    every other input its component's current value."""
    comps = components(config)
    data, n_images = [], 0
    for cid in dep["inputs"]:
        comp = comps[cid]
        if comp.get("type") == "image":
            data.append(other_image if (n_images and other_image is not None) else image)
            n_images += 1
        elif comp.get("type") == "imageeditor":
            data.append({"background": image, "layers": [image], "composite": None} if image else None)
        else:
            data.append(comp.get("props", {}).get("value"))
    return data


def call(server: AppServer, fn_index: int, dep: dict, data: list, timeout: float = 300.0,
         session: str | None = None) -> dict:
    """Run one event as the page would: unqueued ones by POST /run/predict with their fn_index,
    queued ones through /queue/join and the session's event stream. Returns
    {"ok": bool, "status": int, "error": str | None, "output": ..., "seconds": float}."""
    session = session or uuid.uuid4().hex[:11]
    t0 = time.monotonic()
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    try:
        if dep.get("queue") is False:
            r = httpx.post(server.api + "/run/predict", json=body, timeout=timeout)
            js = _json(r)
            ok = r.status_code == 200 and not js.get("error")
            return {"ok": ok, "status": r.status_code, "error": None if ok else str(js.get("error") or js)[:300],
                    "output": js.get("data"), "seconds": time.monotonic() - t0}
        r = httpx.post(server.api + "/queue/join", json=body, timeout=60)
        if r.status_code != 200:
            return {"ok": False, "status": r.status_code, "error": str(_json(r).get("detail") or r.text)[:300],
                    "output": None, "seconds": time.monotonic() - t0}
        event_id = r.json()["event_id"]
        with httpx.stream("GET", server.api + "/queue/data", params={"session_hash": session},
                          timeout=httpx.Timeout(timeout, connect=30)) as s:
            for line in s.iter_lines():
                if time.monotonic() - t0 > timeout:
                    break
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    ok = bool(msg.get("success"))
                    return {"ok": ok, "status": 200, "error": None if ok else str(out.get("error") or out)[:300],
                            "output": out.get("data"), "seconds": time.monotonic() - t0}
                if msg.get("msg") == "close_stream":
                    break
        return {"ok": False, "status": 0, "error": "no result before the stream ended or timed out", "output": None,
                "seconds": time.monotonic() - t0}
    except httpx.HTTPError as e:
        return {"ok": False, "status": 0, "error": f"{type(e).__name__}: {e}", "output": None,
                "seconds": time.monotonic() - t0}


def _json(r: httpx.Response) -> dict:
    try:
        js = r.json()
        return js if isinstance(js, dict) else {"data": js}
    except ValueError:
        return {"error": r.text[:300]}


def burst(server: AppServer, jobs: list[tuple[int, dict, list]], timeout: float = 300.0) -> list[dict]:
    """Send every (fn_index, dependency, data) at once, each from its own session."""
    results: list[dict | None] = [None] * len(jobs)

    def one(k, fn_index, dep, data):
        results[k] = call(server, fn_index, dep, data, timeout)

    threads = [threading.Thread(target=one, args=(k, *job), daemon=True) for k, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    return [r or {"ok": False, "status": 0, "error": "no answer", "output": None, "seconds": timeout} for r in results]


class RssWatch:
    """Samples a server's RSS every 50 ms; kills it (SIGKILL) when growth passes `kill_mib`, so
    that a probe of a broken server cannot take the machine down."""

    def __init__(self, server: AppServer, kill_mib: float):
        self.server, self.kill_mib = server, kill_mib
        self.base = server.rss()
        self.max_rss, self.killed = self.base, False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set() and self.server.alive():
            rss = self.server.rss()
            self.max_rss = max(self.max_rss, rss)
            if rss - self.base > self.kill_mib:
                self.killed = True
                self.server.proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._t.join(5)


# ----------------------------------------------------------------------------- test images


def big_png(path: Path, side: int = 7000, channels: int = 4) -> Path:
    """A side x side 16-bit PNG (RGBA, or grey with channels=1) of smooth ramps; it
    compresses to well under 1 MB."""
    import cv2
    import numpy as np

    ramp = (np.arange(side, dtype=np.uint32) * 9 % 65536).astype(np.uint16)
    if channels == 1:
        img = np.add.outer(ramp // 2, ramp // 2).astype(np.uint16)
    else:
        img = np.empty((side, side, 4), np.uint16)
        img[..., 0] = ramp[None, :]
        img[..., 1] = ramp[:, None]
        img[..., 2] = 30000
        img[..., 3] = 65535
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    del img
    return path


def output_refs(value) -> list[str]:
    """Every URL or path string in an event's output (files Gradio would serve)."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k in ("url", "path") and isinstance(v, str)] + \
            [r for k, v in value.items() if k not in ("url", "path") for r in output_refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in output_refs(v)]
    return []


def holds_pixels(data: bytes, secret) -> bool:
    """True when an encoded image holds `secret`'s pixels (a grey uint8 noise image): alone, or
    as one panel of a side-by-side (|r| > 0.3 after resizing to the secret's size)."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return False
    h, w = img.shape
    for part in [img] + ([img[:, : w // 2], img[:, w // 2 :]] if w >= 2 * h else []):
        part = cv2.resize(part, secret.shape[::-1], interpolation=cv2.INTER_AREA).astype(float).ravel()
        if part.std() > 0 and abs(np.corrcoef(part, secret.astype(float).ravel())[0, 1]) > 0.3:
            return True
    return False


@contextlib.contextmanager
def silent_server():
    """A stand-in for an external service (the Hub, GitHub) at the network boundary: it accepts
    connections and never answers. Yields its base URL ("http://127.0.0.1:PORT")."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
