"""Per-session state, per-process files, and the server's memory and disk bounds.

A public Space is shared by strangers, so everything one visitor leaves behind is bounded.
A session's state is a plain dict held by Gradio's `gr.State` (one per browser tab or
gradio_client), never shared between users; on top of Gradio's own time to live
(`SESSION_TTL_S`):

* `Janitor`: a background sweep that caps all sessions' state together (`SESSION_MAX_BYTES`,
  least recently used dropped first) and the number of sessions, removes request folders
  older than `FILES_TTL_S`, keeps the disk under DISK_MAX_BYTES (`cap_disk`), and hands freed
  memory back to the system.
* `lab_folder`: this process's private folder (mkdtemp: a fresh name, mode 0700), holding
  its start-up files (`static_dir`), its request folders (`request_dir`) and, unless the
  operator set GRADIO_TEMP_DIR, Gradio's upload folder. A shared, predictable folder could be
  a symlink planted by another local user, or hold another instance's files; a private one
  is neither, and `cleanup_at_exit` removes it whole, touching nothing else.
* `release_memory`: collects garbage and calls glibc's malloc_trim, so that the server's
  RSS comes back down after a burst of large requests.

Queue places are `ivfusion.lab.places`; the HTTP bounds (bodies, uploads per client) are
`ivfusion.lab.guard`.
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

from .slot import COMPUTE

log = logging.getLogger(__name__)

SESSION_TTL_S = 900  # a session's state is dropped this many seconds after its last update
SESSION_MAX_BYTES = 160 * 2**20  # all sessions' state together (a 640x480 pair and its last run: ~28 MB;
# a pair and its clean features live in the shared `cache`, not in sessions)
MAX_SESSIONS = 1000  # sessions Gradio remembers (each holds a copy of the page's config)
FILES_TTL_S = 120  # request folders older than this are removed (Gradio copied the files long before)
LAB_PREFIX = "ivfusion-lab-"  # private folders are named ivfusion-lab-<pid>-<random>
# Gradio's upload folder and the Lab's own files together stay under this: the biggest
# uploader's files go first, then the oldest unowned ones; the page's own files never
# (`cap_disk`).
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
    * the disk: Gradio's upload folder and the Lab's folder under `disk_max_bytes`
      (`cap_disk`, with the upload `ledger`'s owners and protected files).
    * freed heap pages go back to the system (`release_memory`) after large frees, and once
      the compute slot goes idle after work.
    """

    def __init__(self, demo, state_max_bytes: int = SESSION_MAX_BYTES, max_sessions: int = MAX_SESSIONS,
                 files_ttl_s: float = FILES_TTL_S, interval_s: float = 1.0, files_root: Path | None = None,
                 upload_folder: str | os.PathLike | None = None, disk_max_bytes: int = DISK_MAX_BYTES,
                 ledger=None):
        self.demo, self.state_max_bytes, self.max_sessions = demo, int(state_max_bytes), int(max_sessions)
        self.files_ttl_s, self.interval_s = files_ttl_s, interval_s
        self.files_root = Path(files_root) if files_root else requests_root()
        self.upload_folder, self.disk_max_bytes, self.ledger = upload_folder, int(disk_max_bytes), ledger
        self._next_disk_check = 0.0
        self.state_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_after_trim = 0.0
        self._busy_since_trim = False

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
            self.cap_disk()
            self._next_disk_check = time.monotonic() + DISK_CHECK_S
        rss = rss_mib()
        trimmed = False
        # A trim on growth alone happens mid-burst: what the burst frees after it stays mapped
        # (a K=32 stability run left the server about 200 MiB up). So one more trim once the
        # compute slot is idle after having been busy.
        busy = COMPUTE.holder is not None or COMPUTE.waiting > 0
        self._busy_since_trim = self._busy_since_trim or busy
        if dropped or rss > self._rss_after_trim + 32 or (self._busy_since_trim and not busy):
            release_memory()
            self._rss_after_trim = rss_mib()
            self._busy_since_trim = busy
            trimmed = True
        return {"state_bytes": self.state_bytes, "states_dropped": dropped, "folders_removed": removed,
                "trimmed": trimmed}

    def cap_disk(self) -> int:
        """`cap_disk` over the upload folder and the Lab's folder (once, when one holds the other)."""
        folders = {os.path.realpath(f) for f in (self.upload_folder, lab_folder()) if f}
        folders = [f for f in folders if not any(f != g and f.startswith(g + os.sep) for g in folders)]
        if self.ledger is None:
            return cap_disk(folders, self.disk_max_bytes)
        removed = cap_disk(folders, self.disk_max_bytes, self.ledger.protected, self.ledger.owners())
        self.ledger.forget_missing()
        return removed

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


_LAB_FOLDER: Path | None = None
_LAB_LOCK = threading.Lock()
_CLOSED = False  # set by cleanup_at_exit: the folder is never made again


def check_private(folder: str | os.PathLike, what: str = "the Lab's folder") -> Path:
    """`folder`, refused with one line (ValueError) when it is a symlink, not a folder, owned
    by another user, or writable by others: a file planted there could be served or swept."""
    folder = Path(folder)
    try:
        st = os.lstat(folder)
    except OSError as e:
        raise ValueError(f"{what} {folder} cannot be used: {e.strerror}") from None
    import stat

    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{what} {folder} is a symlink; refused (use a private folder)")
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {folder} is not a folder")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ValueError(f"{what} {folder} belongs to another user (uid {st.st_uid}); refused")
    if st.st_mode & 0o022:
        raise ValueError(f"{what} {folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); refused")
    return folder


def lab_folder() -> Path:
    """This process's private folder, made on first use with mkdtemp (a fresh name, mode
    0700, never a folder that existed before); private folders of processes that are gone
    (killed before they could clean up) and that this user owns are removed then."""
    global _LAB_FOLDER
    with _LAB_LOCK:
        if _CLOSED:
            raise RuntimeError("the Lab is shutting down: its folder is gone")
        if _LAB_FOLDER is None or _LAB_FOLDER.parent == Path() or not _LAB_FOLDER.is_dir():
            tmp = Path(tempfile.gettempdir())
            for old in tmp.glob(LAB_PREFIX + "*-*"):
                pid = old.name[len(LAB_PREFIX):].split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                    try:
                        shutil.rmtree(check_private(old), ignore_errors=True)
                    except ValueError:
                        pass  # not ours, or a symlink: never followed, never removed
            _LAB_FOLDER = check_private(tempfile.mkdtemp(prefix=f"{LAB_PREFIX}{os.getpid()}-"))
            log.info("Lab folder: %s", _LAB_FOLDER)
        return _LAB_FOLDER


def static_dir() -> Path:
    """This process's folder for start-up files (thumbnails, the precomputed result), inside
    its private `lab_folder`; removed with it at exit."""
    folder = lab_folder() / "static"
    folder.mkdir(exist_ok=True)  # not parents: see request_dir
    return folder


def requests_root() -> Path:
    return lab_folder() / "requests"


def cleanup_at_exit(ledger=None) -> None:
    """At exit (SIGTERM included, see app.main): remove this process's private folder (its
    start-up files, request folders and, when private, Gradio's upload folder), and the
    uploads `ledger` (a `guard.UploadLedger`) recorded elsewhere. Nothing another process
    wrote is touched. A request still running then cannot make the folder again."""
    global _CLOSED
    with _LAB_LOCK:
        _CLOSED = True
    if _LAB_FOLDER is not None:
        shutil.rmtree(_LAB_FOLDER, ignore_errors=True)
    if ledger is not None:
        ledger.remove_all()


def cap_disk(folders, max_bytes: int = DISK_MAX_BYTES, protected=frozenset(), owners=None) -> int:
    """Delete files under `folders` until their total size is at most max_bytes; returns the
    bytes removed. Files in `protected` (the page's own: its examples, start-up results and
    figures) are never removed. `owners` (path -> client, from the upload ledger): the files
    of the client holding the most go first, its oldest first, then the oldest unowned."""
    owners = owners or {}
    files = []
    for folder in folders:
        if folder and Path(folder).is_dir():
            for p in Path(folder).rglob("*"):
                try:
                    if p.is_file() and not p.is_symlink():
                        st = p.stat()
                        files.append((st.st_mtime, st.st_size, str(p)))
                except OSError:
                    pass
    total = sum(size for _, size, _ in files)
    if total <= max_bytes:
        return 0
    by_owner: dict[Any, list] = {}
    for f in sorted(files):
        if f[2] not in protected:
            by_owner.setdefault(owners.get(f[2]), []).append(f)
    held = {o: sum(size for _, size, _ in fs) for o, fs in by_owner.items() if o is not None}
    removed = 0
    while total - removed > max_bytes:
        if held:
            owner = max(held, key=held.get)
        elif by_owner.get(None):
            owner = None
        else:
            break  # only protected files are left
        _, size, path = by_owner[owner].pop(0)
        if owner is not None:
            held[owner] -= size
            if not by_owner[owner]:
                del held[owner]
        try:
            os.unlink(path)
            removed += size
        except OSError:
            pass
    return removed


def remove_request_folders(root: Path, max_age_s: float) -> int:
    """Remove the request folders under `root` older than max_age_s; returns how many."""
    if not root.is_dir():
        return 0
    now, removed = time.time(), 0
    for old in root.iterdir():
        try:
            if old.is_dir() and not old.is_symlink() and now - old.stat().st_mtime >= max_age_s:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    return removed


def request_dir(root: Path | None = None, max_age_s: float = FILES_TTL_S) -> Path:
    """A fresh temporary folder for one request's files (under this process's private
    folder by default); folders older than max_age_s from earlier requests are removed."""
    if root is None:
        root = requests_root()
        root.mkdir(exist_ok=True)  # not parents: a folder removed at exit is never made again
    else:
        root = Path(root)
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
