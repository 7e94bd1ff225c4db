"""What the Lab shares between visitors: results and clean passes, keyed on content.

A class of 30 runs the same lesson on the same example: without sharing, each student pays
for the same clean pass and the same intervened pass. Two bounded, least-recently-used caches
hold what does not depend on who asked:

* `PAIRS`: per (model, pair content), the pair's clean pass and clean encoder features
  (`runs.SharedPair`), so a second student on the same example pays only for the intervened
  pass (about 100 MB at 640x480: the features are most of it).
* `RESULTS`: per (model, pair content, every setting, seed included, gate scale), one
  request's finished result: the run, its encoded page images and captions, and its metrics
  table once computed. A request with the same key is answered without the compute slot.
* `FLIGHTS`: the results being computed now. A request whose key is in flight waits for that
  computation instead of queueing its own (30 students pressing Fuse on the same lesson step
  cost one pass), and the computation's place in the compute slot weighs the number of
  requests waiting for it (`slot.ComputeSlot`).

Session isolation: a cache is only ever asked *for a key*, and a key is built from the
request's own images and settings, so a visitor gets back only what their own request would
have computed; nothing lists, enumerates or exposes the keys or the entries of others.
Values are shared read-only (a `LabRun` is never modified after it is made).

Sizes: IVFUSION_PAIR_CACHE_MB (default 512) and IVFUSION_RESULT_CACHE_MB (default 256).
"""
from __future__ import annotations

import collections
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from .settings import env_number
from .uploads import source_path

PAIR_CACHE_MB = 512  # about five 640x480 pairs with their clean features
RESULT_CACHE_MB = 256  # about twenty 640x480 results (the intervened pass and the encoded images each)


class LRUCache:
    """A thread-safe least-recently-used map bounded by the bytes of its values.

    sizeof(value) gives a value's bytes; a value larger than the whole bound is not kept.
    Only `get(key)` reads it: there is no way to list what others stored."""

    def __init__(self, max_bytes: int, sizeof: Callable[[Any], int]):
        self.max_bytes, self._sizeof = int(max_bytes), sizeof
        self._items: collections.OrderedDict[Hashable, tuple[Any, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = int(self._sizeof(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, s) = self._items.popitem(last=False)
                self.bytes -= s
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def _array_bytes(value: Any, seen: set | None = None, depth: int = 0) -> int:
    """Bytes held by the arrays and tensors inside a value (the rest is small)."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 6:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if hasattr(value, "forward") and hasattr(value, "parameters"):
        return 0  # a shared network
    inner = lambda v: _array_bytes(v, seen, depth + 1)  # noqa: E731
    if isinstance(value, dict):
        return sum(inner(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(inner(v) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(inner(v) for v in vars(value).values())
    return 0


@dataclass
class CachedResult:
    """One finished /fuse: the run (for metrics, downloads and re-rendering), the page images
    as encoded bytes {name: (bytes, suffix)}, the captions, the notices of the computation,
    and the metrics table once someone asked for it."""

    run: Any
    images: dict[str, tuple[bytes, str]]
    captions: dict[str, str]
    notices: list[str]
    seconds: float
    metrics: list[list] | None = None
    metric_sources: dict[str, np.ndarray] = field(default_factory=dict)


_file_keys: collections.OrderedDict[tuple, str] = collections.OrderedDict()
_file_keys_lock = threading.Lock()


def content_key(source: Any, name: str = "image") -> str:
    """A hash of an input's content: a trusted file's bytes, or an array's bytes and shape.
    A file's hash is remembered by (path, size, mtime), so an example is hashed once."""
    if isinstance(source, np.ndarray):
        h = hashlib.sha1(f"{source.shape}|{source.dtype}".encode())
        h.update(np.ascontiguousarray(source).tobytes())
        return h.hexdigest()
    path = source_path(source, name)
    if path is None:
        return ""
    try:
        st = os.stat(path)
    except OSError:  # missing or unreadable: no key, and the guarded decode names the problem
        return ""
    memo = (path, st.st_size, st.st_mtime_ns)
    with _file_keys_lock:
        known = _file_keys.get(memo)
    if known:
        return known
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    key = "file:" + h.hexdigest()
    with _file_keys_lock:
        _file_keys[memo] = key
        while len(_file_keys) > 4096:
            _file_keys.popitem(last=False)
    return key


def result_key(model_id: str, pair: str, settings: Any, gate_scale: str) -> tuple:
    """The key of one request's result: the model (its choice and weights), the pair's
    content, every setting (the seed included) and the gate colour scale."""
    return ("result", model_id, pair, settings, gate_scale)


def pair_cache_key(model_id: str, pair: str) -> tuple:
    return ("pair", model_id, pair)


PAIRS = LRUCache(PAIR_CACHE_MB * 2**20, _array_bytes)
RESULTS = LRUCache(RESULT_CACHE_MB * 2**20, lambda e: _array_bytes((e.run.intervened, e.images, e.metric_sources)))
# a result's clean pass is its pair's (counted by PAIRS); what it adds is the intervened pass and the images


class Flight:
    """One result being computed: its owner computes it, the others `wait` for it."""

    def __init__(self):
        self.done = threading.Event()
        self.result: Any = None  # set by the owner; None if the computation failed
        self.waiters = 1  # the owner and every request waiting for the result

    def wait(self) -> Any | None:
        """The result, or None when the owner failed: then compute it."""
        self.done.wait()
        return self.result


class Flights:
    """Single flight per result key: `join(key)` gives (flight, True) to the first request,
    which must `finish` it, and (flight, False) to the requests that come while it runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight] = {}

    def join(self, key: Hashable) -> tuple[Flight, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.waiters += 1
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def finish(self, key: Hashable, flight: Flight, result: Any | None) -> None:
        """The owner's result (None: it failed, and each waiter computes its own)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.result = result
        flight.done.set()

    def __len__(self) -> int:
        return len(self._flights)


FLIGHTS = Flights()


def configure(env: dict[str, str] | None = None) -> None:
    """Set the caches' bounds from IVFUSION_PAIR_CACHE_MB and IVFUSION_RESULT_CACHE_MB (0: no
    cache); a junk value raises ValueError naming it (the app prints one line)."""
    PAIRS.max_bytes = int(env_number("IVFUSION_PAIR_CACHE_MB", PAIR_CACHE_MB, 0, 1 << 20, env=env)) * 2**20
    RESULTS.max_bytes = int(env_number("IVFUSION_RESULT_CACHE_MB", RESULT_CACHE_MB, 0, 1 << 20, env=env)) * 2**20
