"""HTTP bounds of a public Lab: ASGI middleware in front of every Gradio route (`Guard`).

One visitor must not break the Lab for everyone (issue 25). What a request may cost is
bounded before Gradio reads it:

* a JSON body (/queue/join, /run/predict, every other route that takes one): at most
  `MAX_JSON_BYTES`;
* an upload request (multipart): at most `MAX_UPLOAD_REQUEST_BYTES` in all, whatever number of
  files it holds (Gradio's `max_file_size` is per file), and a Content-Length is required;
* what one client may hold on disk: `CLIENT_MAX_BYTES` of uploads, in flight included. Beyond
  it, that client's own oldest uploads are removed first (`UploadLedger`), so a flood evicts
  the flooder's files, never the page's own (`UploadLedger.protected`) and not another
  visitor's first.

A client is its network address (`client_key`), which it cannot invent cheaply, unlike a
session hash. Behind a proxy (a Hugging Face Space), IVFUSION_PROXY_HOPS names how many
proxies append to X-Forwarded-For (default 1 on a Space, 0 elsewhere: then the header is the
client's own and is ignored). A class behind one school address is one client here, which
is why the bounds are on bytes held (own oldest evicted), not on a count of requests.

The middleware also counts each session's open event streams (/queue/data), so that the
queue can drop the requests of clients that have gone (`ivfusion.lab.places`). Every refusal
is one log line, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger("ivfusion.app")

MAX_JSON_BYTES = 1 * 2**20  # a /queue/join names its files by path: a few KB; 1 MiB is generous
MAX_UPLOAD_REQUEST_BYTES = 64 * 2**20  # one request: the 50 MB file limit plus form overhead
CLIENT_MAX_BYTES = 512 * 2**20  # uploads one client (network address) may hold, in flight included
UPLOADS_MAX_BYTES = 1536 * 2**20  # all clients' uploads together (the disk cap, 2 GiB, holds the rest)


def client_key(scope: dict, hops: int = 0) -> str:
    """The client's network address. With `hops` trusted proxies in front, the address the
    nearest of them saw: the `hops`-th entry from the right of X-Forwarded-For (entries to
    its left are the client's own words and are ignored)."""
    if hops > 0:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                entries = [e.strip() for e in value.decode("latin-1").split(",") if e.strip()]
                if len(entries) >= hops:
                    return entries[-hops]
    client = scope.get("client")
    return str(client[0]) if client else "?"


def proxy_hops(env: dict[str, str] | None = None) -> int:
    from .settings import env_number

    env = os.environ if env is None else env
    return int(env_number("IVFUSION_PROXY_HOPS", 1 if env.get("SPACE_ID") else 0, 0, 8, env=env))


class UploadLedger:
    """Who uploaded which file, and how much each client holds; thread-safe.

    `protected`: the page's own files (snapshotted at start-up by `protect`), never evicted.
    `reserve`/`release` count uploads in flight; `record` adds finished ones, then evicts the
    client's own oldest files beyond `client_max_bytes` and, beyond `total_max_bytes` for all
    clients together, the files of the client holding the most.
    """

    def __init__(self, client_max_bytes: int = CLIENT_MAX_BYTES, total_max_bytes: int = UPLOADS_MAX_BYTES):
        self.client_max_bytes, self.total_max_bytes = int(client_max_bytes), int(total_max_bytes)
        self.protected: frozenset[str] = frozenset()
        self._files: dict[str, list[tuple[float, int, str]]] = defaultdict(list)  # client -> (time, size, path)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.evicted = 0  # files removed so far

    def protect(self, *folders) -> int:
        """Snapshot every file now under `folders` as the page's own; returns how many."""
        found = set(self.protected)
        for folder in folders:
            if folder and Path(folder).is_dir():
                found.update(str(p) for p in Path(os.path.realpath(folder)).rglob("*") if p.is_file())
        self.protected = frozenset(found)
        return len(self.protected)

    def held(self, client: str) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._files.get(client, ()))

    def reserve(self, client: str, nbytes: int) -> bool:
        """Room for an upload of `nbytes` by `client`: False when its uploads in flight alone
        would pass its bound; otherwise its own oldest files go until it fits."""
        with self._lock:
            if self._in_flight[client] + nbytes > self.client_max_bytes:
                return False
            self._in_flight[client] += nbytes
            self._evict_own(client, self.client_max_bytes - self._in_flight[client])
            return True

    def release(self, client: str, nbytes: int) -> None:
        with self._lock:
            self._in_flight[client] -= nbytes
            if self._in_flight[client] <= 0:
                del self._in_flight[client]

    def record(self, client: str, paths) -> None:
        now = time.time()
        with self._lock:
            mine = self._files[client]
            known = {p for _, _, p in mine}
            for path in paths:
                path = os.path.realpath(path)
                if path in self.protected or path in known:
                    continue  # the page's own file, uploaded again: never the client's to lose
                try:
                    mine.append((now, os.path.getsize(path), path))
                except OSError:
                    pass
            self._evict_own(client, self.client_max_bytes - self._in_flight.get(client, 0))
            total = sum(size for files in self._files.values() for _, size, _ in files)
            while total > self.total_max_bytes and self._files:
                biggest = max(self._files, key=lambda c: sum(s for _, s, _ in self._files[c]))
                total -= self._pop_oldest(biggest)

    def owners(self) -> dict[str, str]:
        with self._lock:
            return {p: c for c, files in self._files.items() for _, _, p in files}

    def forget_missing(self) -> None:
        with self._lock:
            for client in list(self._files):
                self._files[client] = [f for f in self._files[client] if os.path.exists(f[2])]
                if not self._files[client]:
                    del self._files[client]

    def remove_all(self) -> None:
        with self._lock:
            for client in list(self._files):
                while self._files.get(client):
                    self._pop_oldest(client)

    def _evict_own(self, client: str, room: int) -> None:
        files = self._files.get(client)
        while files and sum(s for _, s, _ in files) > max(0, room):
            self._pop_oldest(client)
            files = self._files.get(client)

    def _pop_oldest(self, client: str) -> int:
        _, size, path = self._files[client].pop(0)
        if not self._files[client]:
            del self._files[client]
        try:
            os.unlink(path)
            self.evicted += 1
            try:
                os.rmdir(os.path.dirname(path))  # Gradio's per-upload folder, when now empty
            except OSError:
                pass
        except OSError:
            pass
        return size


class Streams:
    """Open event streams (/queue/data) per session hash, and when each session last had one."""

    def __init__(self):
        self._open: dict[str, int] = defaultdict(int)
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def opened(self, session: str) -> None:
        with self._lock:
            self._open[session] += 1
            self._last[session] = time.monotonic()

    def closed(self, session: str) -> None:
        with self._lock:
            self._open[session] -= 1
            self._last[session] = time.monotonic()
            if self._open[session] <= 0:
                del self._open[session]
            if len(self._last) > 20000:  # bounded: forget the oldest half
                for key in sorted(self._last, key=self._last.get)[:10000]:
                    if key not in self._open:
                        self._last.pop(key, None)

    def connected(self, session: str) -> bool:
        with self._lock:
            return self._open.get(session, 0) > 0

    def last_seen(self, session: str) -> float | None:
        with self._lock:
            return self._last.get(session)


class GuardState:
    """What the middleware and the queue places share: the ledger, the streams, the settings."""

    def __init__(self, ledger: UploadLedger | None = None, hops: int | None = None,
                 max_json_bytes: int = MAX_JSON_BYTES, max_upload_bytes: int = MAX_UPLOAD_REQUEST_BYTES):
        self.ledger = ledger or UploadLedger()
        self.streams = Streams()
        self.hops = proxy_hops() if hops is None else hops
        self.max_json_bytes, self.max_upload_bytes = int(max_json_bytes), int(max_upload_bytes)
        self.refused: dict[str, int] = defaultdict(int)  # reason -> count, for the probe and tests


def refuse(state: GuardState, reason: str, client: str, text: str) -> None:
    """One log line per refused request (never a traceback), counted by reason."""
    state.refused[reason] += 1
    log.warning("refused %s from %s: %s", reason, client, text)


class Guard:
    """The ASGI middleware (install with Starlette's Middleware(Guard, state=...))."""

    def __init__(self, app, state: GuardState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method == "GET" and path.endswith("/queue/data"):
            return await self._stream(scope, receive, send)
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        client = client_key(scope, self.state.hops)
        headers = dict(scope.get("headers") or ())
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        length = headers.get(b"content-length")
        try:
            length = int(length) if length is not None else None
        except ValueError:
            length = -1
        if multipart:
            return await self._upload(scope, receive, send, client, length, path)
        limit = self.state.max_json_bytes
        if length is not None and length > limit:
            return await self._refuse(send, 413, "large body", client,
                                      f"a {length:,}-byte request body; at most {limit:,} bytes are accepted")
        if length is None or length < 0:  # chunked or unreadable: read it here, bounded, then replay
            body, too_big = await _read_bounded(receive, limit)
            if too_big:
                return await self._refuse(send, 413, "large body", client,
                                          f"a request body over {limit:,} bytes; at most {limit:,} are accepted")
            return await self.app(scope, _replay(body, receive), send)
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send, client, length, path):
        limit, ledger = self.state.max_upload_bytes, self.state.ledger
        if length is None or length < 0:
            return await self._refuse(send, 411, "upload without length", client,
                                      "an upload without a Content-Length; send its length")
        if length > limit:
            return await self._refuse(send, 413, "large upload", client,
                                      f"{length / 2**20:.1f} MB in one upload request; at most "
                                      f"{limit / 2**20:.0f} MB a request (50 MB a file)")
        if not ledger.reserve(client, length):
            return await self._refuse(send, 429, "uploads in flight", client,
                                      f"too many uploads at once from one client (at most "
                                      f"{ledger.client_max_bytes / 2**20:.0f} MB in flight); wait for them to finish")
        chunks: list[bytes] = []
        status = [0]

        async def capture(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] == 200 and path.endswith("/upload"):
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            ledger.release(client, length)
        if chunks:
            try:
                paths = json.loads(b"".join(chunks))
                ledger.record(client, [p for p in paths if isinstance(p, str)])
            except ValueError:
                pass

    async def _stream(self, scope, receive, send):
        session = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash") or [""])[0]
        if not session:
            return await self.app(scope, receive, send)
        self.state.streams.opened(session)
        try:
            return await self.app(scope, receive, send)
        finally:
            self.state.streams.closed(session)

    async def _refuse(self, send, status: int, reason: str, client: str, text: str):
        refuse(self.state, reason, client, text)
        body = json.dumps({"detail": text, "error": text}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _QuietTraceback:
    """Gradio's queue and routes call traceback.print_exc() for every failed event. For a
    request refused by Gradio's own checks (a path it did not upload, a payload that fails
    validation) that is one traceback per attack (1,374 of them, 2.3 MB, in issue 25's probe):
    those become one log line; every other failure keeps its traceback."""

    def __getattr__(self, name):
        import traceback

        return getattr(traceback, name)

    def print_exc(self, *args, **kwargs):
        import sys
        import traceback

        e = sys.exc_info()[1]
        if isinstance(e, _refusals()):
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            log.warning("refused request: %s: %s", type(e).__name__, text[:300])
            return None
        return traceback.print_exc(*args, **kwargs)


def _refusals() -> tuple[type, ...]:
    from gradio.exceptions import InvalidPathError
    from pydantic import ValidationError

    return (InvalidPathError, ValidationError)


def quiet_refusals() -> None:
    """One log line, not a traceback, for requests Gradio refuses (see `_QuietTraceback`)."""
    import gradio.queueing
    import gradio.routes

    for module in (gradio.queueing, gradio.routes):
        if not isinstance(module.traceback, _QuietTraceback):
            module.traceback = _QuietTraceback()


async def _read_bounded(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive):
    sent = [False]

    async def again() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
