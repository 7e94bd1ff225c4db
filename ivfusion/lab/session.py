"""Per-session state, per-request files, and the server's memory and queue bounds.

A public Space is shared by strangers, so everything one visitor leaves behind is bounded.
A session's state is a plain dict held by Gradio's `gr.State` (one per browser tab or
gradio_client), never shared between users; on top of Gradio's own time to live
(`SESSION_TTL_S`):

* `Janitor`: a background sweep that caps all sessions' state together (`SESSION_MAX_BYTES`,
  least recently used dropped first) and the number of sessions, removes request folders
  older than `FILES_TTL_S`, and hands freed memory back to the system.
* `request_dir`: each request's files live in a fresh folder; `static_dir` holds one
  process's start-up files; `cap_disk` keeps Gradio's upload folder and the Lab's files
  under DISK_MAX_BYTES (the Janitor calls it), and `cleanup_at_exit` removes them at exit.
* `release_memory`: collects garbage and calls glibc's malloc_trim, so that the server's
  RSS comes back down after a burst of large requests.
* `limit_queue_per_session`: each session may have at most `MAX_QUEUED_PER_SESSION`
  requests waiting in the queue, so that one visitor cannot fill it.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SESSION_TTL_S = 900  # a session's state is dropped this many seconds after its last update
SESSION_MAX_BYTES = 160 * 2**20  # all sessions' state together (a 640x480 pair and its last run: ~28 MB;
# a pair and its clean features live in the shared `cache`, not in sessions)
MAX_SESSIONS = 1000  # sessions Gradio remembers (each holds a copy of the page's config)
FILES_TTL_S = 120  # request folders older than this are removed (Gradio copied the files long before)
MAX_QUEUED_PER_SESSION = 2  # requests one session may have waiting in the queue
FILES_ROOT = Path(tempfile.gettempdir()) / "ivfusion-lab"
# Gradio's upload folder and the Lab's own files together stay under this; the oldest files go
# first (a raw /upload may write any bytes, up to the launch's max_file_size each).
DISK_MAX_BYTES = 2 * 2**30
DISK_CHECK_S = 30.0  # how often the Janitor measures the disk (a walk of the upload folder)


def nbytes(value: Any, _seen: set | None = None, _depth: int = 0) -> int:
    """Approximate memory held by a value: arrays and tensors by their buffers; containers,
    dataclasses and plain objects by their contents. Models (shared by every session) count 0."""
    seen = set() if _seen is None else _seen
    if id(value) in seen or _depth > 8:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor, without importing torch
        return int(value.element_size() * value.nelement())
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if getattr(value, "shared", False) is True:
        return 0  # a result held once by the Lab's shared cache (ivfusion.lab.cache), which bounds it
    if hasattr(value, "forward") and hasattr(value, "parameters"):
        return 0  # an nn.Module: the ModelBank's models are shared by every session
    inner = lambda v: nbytes(v, seen, _depth + 1)  # noqa: E731
    if isinstance(value, dict):
        return 64 + sum(inner(k) + inner(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 64 + sum(inner(v) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return 64 + sum(inner(v) for v in vars(value).values())
    if hasattr(value, "__slots__"):
        return 64 + sum(inner(getattr(value, k, None)) for k in value.__slots__)
    return 64


class Janitor:
    """Keeps a running app's memory and disk bounded, sweeping every `interval_s` seconds
    from a daemon thread:

    * sessions' `gr.State` values: kept newest first while they fit `state_max_bytes` in
      total; older sessions' state is dropped (least recently used first), and sessions past
      `max_sessions` are forgotten. (Gradio's `time_to_live` on the State is the TTL.)
    * request folders (`request_dir`) older than `files_ttl_s`: Gradio has copied their files
      into its own cache (cleared by `delete_cache`) by then.
    * freed heap pages go back to the system (`release_memory`) after large frees.
    """

    def __init__(self, demo, state_max_bytes: int = SESSION_MAX_BYTES, max_sessions: int = MAX_SESSIONS,
                 files_ttl_s: float = FILES_TTL_S, interval_s: float = 1.0, files_root: Path | None = None,
                 upload_folder: str | os.PathLike | None = None, disk_max_bytes: int = DISK_MAX_BYTES):
        self.demo, self.state_max_bytes, self.max_sessions = demo, int(state_max_bytes), int(max_sessions)
        self.files_ttl_s, self.interval_s, self.files_root = files_ttl_s, interval_s, Path(files_root or FILES_ROOT)
        self.upload_folder, self.disk_max_bytes = upload_folder, int(disk_max_bytes)
        self._next_disk_check = 0.0
        self.state_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_after_trim = 0.0

    def start(self) -> "Janitor":
        # A full gc.collect() walks every object of gradio, torch and the models (0.14-0.2 s
        # holding the GIL, tools/lab_overheads.py), which stalls the request in flight.
        # Freezing what exists at start-up makes the sweep's collections walk only newer objects.
        gc.collect()
        gc.freeze()
        self._thread = threading.Thread(target=self._run, name="ivfusion-lab-janitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a sweep must never take the server down
                log.exception("janitor sweep failed")

    def sweep(self) -> dict:
        """One pass; returns what it did."""
        dropped = self._sweep_states()
        removed = self._sweep_files()
        if self.upload_folder is not None and time.monotonic() >= self._next_disk_check:
            # a walk of the whole upload folder: every DISK_CHECK_S, not every sweep
            cap_disk([self.upload_folder, self.files_root], self.disk_max_bytes)
            self._next_disk_check = time.monotonic() + DISK_CHECK_S
        rss = rss_mib()
        trimmed = False
        if dropped or rss > self._rss_after_trim + 32:
            release_memory()
            self._rss_after_trim = rss_mib()
            trimmed = True
        return {"state_bytes": self.state_bytes, "states_dropped": dropped, "folders_removed": removed,
                "trimmed": trimmed}

    def _sweep_states(self) -> int:
        holder = getattr(self.demo, "state_holder", None)
        if holder is None or not hasattr(holder, "session_data"):
            return 0
        with holder.lock:
            sessions = list(holder.session_data.items())  # least recently used first
        total, dropped = 0, 0
        for rank, (sid, sess) in enumerate(reversed(sessions)):
            data = getattr(sess, "state_data", {})
            size = sum(nbytes(v) for v in list(data.values()))
            if rank >= self.max_sessions:
                holder.delete_state(sid)
                with holder.lock:
                    holder.session_data.pop(sid, None)
                    holder.time_last_used.pop(sid, None)
                dropped += 1
            elif total + size > self.state_max_bytes and size:
                holder.delete_state(sid)
                dropped += 1
            else:
                total += size
        self.state_bytes = total
        return dropped

    def _sweep_files(self) -> int:
        return remove_request_folders(self.files_root, self.files_ttl_s)


def rss_mib() -> float:
    """This process's resident memory in MiB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def static_dir(root: Path | None = None) -> Path:
    """This process's folder for start-up files (thumbnails, the precomputed result): one per
    process, `static-<pid>`, removed at exit (`cleanup_at_exit`); folders of processes that
    are gone (killed before they could clean up) are removed here."""
    root = Path(root or FILES_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("static-*"):
        pid = old.name.removeprefix("static-")
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"static-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    return folder


def cleanup_at_exit(upload_folder: str | os.PathLike | None, started: float, root: Path | None = None) -> None:
    """At exit (SIGTERM included, see app.main): remove this process's static folder, the
    request folders, and what Gradio's upload folder gained since `started`."""
    root = Path(root or FILES_ROOT)
    shutil.rmtree(root / f"static-{os.getpid()}", ignore_errors=True)
    remove_request_folders(root, 0.0)
    if upload_folder and Path(upload_folder).is_dir():
        for sub in Path(upload_folder).iterdir():
            try:
                if sub.stat().st_mtime >= started:
                    shutil.rmtree(sub, ignore_errors=True) if sub.is_dir() else sub.unlink()
            except OSError:
                pass


def cap_disk(folders, max_bytes: int = DISK_MAX_BYTES) -> int:
    """Delete the oldest files under `folders` until their total size is at most max_bytes;
    returns the bytes removed."""
    files = []
    for folder in folders:
        if folder and Path(folder).is_dir():
            for p in Path(folder).rglob("*"):
                try:
                    if p.is_file() and not p.is_symlink():
                        st = p.stat()
                        files.append((st.st_mtime, st.st_size, p))
                except OSError:
                    pass
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, p in sorted(files):
        if total - removed <= max_bytes:
            break
        try:
            p.unlink()
            removed += size
        except OSError:
            pass
    return removed


def remove_request_folders(root: Path, max_age_s: float) -> int:
    """Remove the request folders under `root` older than max_age_s (the processes' static
    folders are not request folders: `static_dir` and `cleanup_at_exit` own them); returns
    how many."""
    if not root.is_dir():
        return 0
    now, removed = time.time(), 0
    for old in root.iterdir():
        try:
            if old.is_dir() and not old.name.startswith("static-") and now - old.stat().st_mtime >= max_age_s:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    return removed


def request_dir(root: Path | None = None, max_age_s: float = FILES_TTL_S) -> Path:
    """A fresh temporary folder for one request's files; folders older than max_age_s from
    earlier requests are removed."""
    root = Path(root or FILES_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    remove_request_folders(root, max_age_s)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


_libc = None


def _glibc():
    """glibc, loaded once; False where there is none (malloc_trim and mallopt are glibc's)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _libc = False
    return _libc


M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, for threads that have not allocated yet: call it before the
    model runs (torch's worker threads take arenas too). True if it took; False where there is
    no glibc. Gradio runs handlers in worker threads, and glibc gives threads their
    own heap arenas, whose freed memory the others do not reuse: under a burst of large uploads
    the peak RSS grows with the number of threads. `tools/fault_probe.py --only e` (a 49-MP
    upload through every handler at once) peaked 810-833 MiB above the base with 2 arenas (set
    through the environment, MALLOC_ARENA_MAX=2), against 884-899 MiB with glibc's default."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_ARENA_MAX, int(arenas)))


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim; a no-op
    elsewhere). Large decodes and batches leave the heap fragmented, so without this the
    server's RSS stays at its peak after a burst."""
    gc.collect()
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


def limit_queue_per_session(demo, max_waiting: int = MAX_QUEUED_PER_SESSION) -> None:
    """Refuse a session's request while it already has `max_waiting` requests waiting in the
    queue (not counting the one being computed), with a message saying so. Call after
    `demo.queue(...)`. Uses Gradio's queue internals (gradio 5-6), checked by the load test.

    The refusal is a 503 "queue full" for gradio_client (it sends `x-gradio-user: api` and
    turns a 503 into its QueueError), and a 400 carrying the message for a browser: Gradio's
    page replaces the text of every 503 with its generic "This application is currently busy",
    but shows the detail of other errors, so only a 400 lets the visitor read why."""
    queue = demo._queue
    push = queue.push

    async def limited_push(body, request, username):
        sh = getattr(body, "session_hash", None)
        if sh:
            waiting = sum(ev.session_hash == sh for q in queue.event_queue_per_concurrency_id.values()
                          for ev in q.queue)
            if waiting >= max_waiting:
                api = getattr(request, "headers", {}).get("x-gradio-user") == "api"
                return (False, f"You already have {waiting} requests waiting; wait for them to finish (at most "
                               f"{max_waiting} waiting requests per visitor).", "queue_full" if api else "error")
        return await push(body, request, username)

    queue.push = limited_push
