"""Where the page's onnxruntime-web files come from: the local npm install, or else the npm registry.

`npm ci --prefix ivfusion/lab/web` fills `web/node_modules` (tests, offline use, the README's
set-up). A Hugging Face Space runs no npm step, so when those files are missing the Lab fetches
the pinned tarball itself, in the background after start-up (the page never waits for it; its
Fuse runs on the server until the files are here, and it says why): the tarball named by
`web/package-lock.json` (its version and sha512 `integrity` are the one source of truth; npm
writes no `resolved` URL there with `omit-lockfile-registry-resolved`, so the URL is the
registry's standard tarball path), within a total deadline and a size bound, checked against
that integrity before anything is read from it, and only the page's dist files extracted, by
their own names (never the tarball's paths) into the Lab's cache folder.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ivfusion.lab.ortweb")

WEB_DIR = Path(__file__).parent / "web"
LOCK = WEB_DIR / "package-lock.json"
NAME = "onnxruntime-web"
LOCAL = WEB_DIR / "node_modules" / NAME / "dist"
INSTALL = "npm ci --prefix ivfusion/lab/web"
# what web/lab.js loads: the WebAssembly and WebGPU builds and the loader and binary each imports
PAGE_FILES = ("ort.wasm.min.js", "ort.webgpu.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
              "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
REGISTRY_ENV = "IVFUSION_NPM_REGISTRY"
REGISTRY = "https://registry.npmjs.org"
DEADLINE_S = 180.0  # the whole fetch: 35 MB on a Space's network takes seconds
STALL_S = 30.0  # one connect or read
MAX_TARBALL = 128 << 20  # the pinned one is 35 MB
MAX_FILE = 64 << 20  # the largest page file is 29 MB
MAX_UNPACKED = 512 << 20  # every member read through, the page's or not (a gzip bomb stops here)


class FetchError(Exception):
    """Why the files could not be fetched, in one line."""


@dataclass(frozen=True)
class Pin:
    version: str
    integrity: str  # "sha512-<base64>", as npm writes it

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{NAME}/-/{NAME}-{self.version}.tgz"


def pinned(lock: Path = LOCK) -> Pin:
    entry = json.loads(lock.read_text())["packages"][f"node_modules/{NAME}"]
    return Pin(entry["version"], entry["integrity"])


def registry(env: dict[str, str] | None = None) -> str:
    """The npm registry's base URL (`IVFUSION_NPM_REGISTRY`, checked like every setting)."""
    raw = (os.environ if env is None else env).get(REGISTRY_ENV, "").strip()
    if not raw:
        return REGISTRY
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"{REGISTRY_ENV}={raw!r}: expected an http(s) URL of an npm registry (unset: {REGISTRY})")
    return raw


def fetch(pin: Pin, url: str, dest: Path, deadline_s: float = DEADLINE_S, max_tarball: int = MAX_TARBALL) -> Path:
    """Download `url`, check it against `pin.integrity`, and extract the page's files into the
    folder `dest` (made whole or not at all). Raises FetchError."""
    algo, _, want = pin.integrity.partition("-")
    if algo != "sha512":
        raise FetchError(f"the lock's integrity is {algo}, not sha512")
    end = time.monotonic() + deadline_s
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".part-", dir=dest.parent) as part:
        tgz = Path(part) / "package.tgz"
        digest = _download(url, tgz, end, max_tarball)
        if base64.b64encode(digest).decode() != want:
            raise FetchError(f"the tarball from {url} does not match the lock's integrity")
        out = Path(part) / "dist"
        _extract(tgz, out, end)
        try:
            os.replace(out, dest)  # whole or not at all
        except OSError:
            if not _complete(dest):  # not another process that got there first
                raise
    return dest


def _download(url: str, path: Path, end: float, max_bytes: int) -> bytes:
    h = hashlib.sha512()
    size = 0
    try:
        # each connect and read waits at most STALL_S; the deadline is checked between reads
        with urllib.request.urlopen(url, timeout=min(_left(end), STALL_S)) as r, open(path, "wb") as f:
            if int(r.headers.get("Content-Length") or 0) > max_bytes:
                raise FetchError(f"the tarball is larger than {max_bytes >> 20} MB")
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"the tarball is larger than {max_bytes >> 20} MB")
                h.update(chunk)
                f.write(chunk)
                _left(end)
    except FetchError:
        raise
    except OSError as e:  # URLError, HTTPError, timeouts, refused connections
        raise FetchError(f"{url}: {getattr(e, 'reason', None) or e}") from e
    return h.digest()


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise FetchError("the registry did not deliver it within the deadline")
    return left


def _extract(tgz: Path, out: Path, end: float) -> None:
    """The page's files from the tarball's `package/dist/`, each a regular file within bounds,
    written under its own name: a member's path is only compared, never joined."""
    wanted = {f"package/dist/{name}": name for name in PAGE_FILES}
    out.mkdir()
    seen = 0
    try:
        with tarfile.open(tgz, mode="r|gz") as tar:
            for m in tar:
                _left(end)
                seen += max(m.size, 0)
                if seen > MAX_UNPACKED:
                    raise FetchError(f"the tarball unpacks to more than {MAX_UNPACKED >> 20} MB")
                name = wanted.get(m.name)
                if name is None or (out / name).exists():
                    continue
                if not m.isreg() or m.size > MAX_FILE:
                    raise FetchError(f"{m.name} in the tarball is not a regular file within {MAX_FILE >> 20} MB")
                src = tar.extractfile(m)
                with open(out / name, "wb") as f:
                    shutil.copyfileobj(src, f)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise FetchError(f"the tarball cannot be read ({e})") from e
    missing = [n for n in PAGE_FILES if not (out / n).is_file()]
    if missing:
        raise FetchError(f"the tarball lacks {', '.join(missing)}")


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in PAGE_FILES)


class OrtFiles:
    """The page's onnxruntime-web folder: `LOCAL` when installed (nothing is fetched), else
    `<cache>/onnxruntime-web/<version>` once fetched. `start` never waits for the network;
    `ready` is set once `path` is known for good (or None: `reason` says why)."""

    def __init__(self, cache: Path, local: Path = LOCAL, env: dict[str, str] | None = None,
                 deadline_s: float = DEADLINE_S):
        self.local = local
        self.pin = pinned()
        self.registry = registry(env)  # a junk value stops the app at start-up
        self.root = Path(cache) / NAME
        self.deadline_s = deadline_s
        self.path: Path | None = None
        self.reason = f"{NAME} {self.pin.version} is being fetched from the npm registry"
        self.ready = threading.Event()

    def start(self, done=None) -> "OrtFiles":
        """`done(ok)` runs once `path` is known for good (in the fetching thread after a fetch)."""
        cached = self.root / self.pin.version
        if _complete(self.local):
            self._end(self.local, "", done)
        elif _complete(cached):
            self._end(cached, "", done)
        else:
            threading.Thread(target=self._fetch, args=(cached, done), name="ivfusion-lab-ortweb", daemon=True).start()
        return self

    def _fetch(self, dest: Path, done) -> None:
        url = self.pin.tarball_url(self.registry)
        log.info("%s is not installed (%s): fetching %s", NAME, INSTALL, url)
        try:
            fetch(self.pin, url, dest, self.deadline_s)
        except Exception as e:  # noqa: BLE001 - the page then computes on the server, and says so
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("in-browser Fuse off: %s could not be fetched: %s", NAME, first)
            return self._end(None, f"{NAME} is not installed ({INSTALL}) and could not be fetched ({first})", done)
        log.info("%s fetched, checked and extracted to %s", NAME, dest)
        self._end(dest, "", done)

    def _end(self, path: Path | None, reason: str, done) -> None:
        self.path, self.reason = path, reason
        self.ready.set()
        if done is not None:
            done(path is not None)
