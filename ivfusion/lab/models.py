"""The models the Lab offers (`ModelBank`): the trained default, the authors' released
checkpoint, the untrained network; each loaded once and shared by every session.

Environment variables (read by `ModelBank`):
  IVFUSION_WEIGHTS            weights spec of the default model (a folder, a .safetensors or
                              .pth file, or hf://owner/repo[/file]); if it cannot be loaded,
                              for any reason, the bundled weights are used, with a notice.
  IVFUSION_OFFICIAL_WEIGHTS   the authors' checkpoint (a path to best.pth or an hf:// spec).
                              Unset: it is downloaded on first choice from `OFFICIAL_URL`
                              (SHA-256 checked) into the cache folder, and reused from there.
  IVFUSION_OFFICIAL_URL       where to download it from (default `OFFICIAL_URL`).
  IVFUSION_HUB_DEADLINE_S     seconds a download may take, connect and read together (default 15).
                              Start-up never waits for one: a default model that needs the network
                              (an hf:// IVFUSION_WEIGHTS, the authors' checkpoint not yet cached)
                              downloads in the background while the bundled weights serve, and the
                              page says so; it takes over when the download completes
                              (`ModelBank.default_choice`, `ModelBank.current_default`).
  IVFUSION_CACHE              the cache folder (default $XDG_CACHE_HOME/ivfusion or ~/.cache/ivfusion).
  IVFUSION_MAX_SIDE           images whose longer side exceeds this are downscaled (default 640,
                              `APP_MAX_SIDE`).

Why 640: the Lab's memory is bounded by its working size. A forward pass on the fast path
peaks at about 250 MB over the server's base at 640x480 and 650-700 MB at 1024x1024
(tools/forward_memory.py, keep_features no). With a 49-MP 16-bit grey PNG sent at once
through every image-taking handler and /fuse (tools/fault_probe.py --only e), the server's
peak RSS grew by 918 MiB at 640, 1020 MiB at 768 and 1887 MiB at 1024, against a bar of 1 GB.
640 is also the size of the paper's datasets (RoadScene, MSRS: 640x480), so they run unscaled.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..hub import hub_reachable  # noqa: F401 - re-exported by ivfusion.lab
from ..hub import (DEFAULT_NAME, DEFAULT_WEIGHTS, NAMED_WEIGHTS, UNTRAINED, WeightsError, hub_deadline_s, hub_offline,
                   load_model, named_path, run_with_deadline)
from ..predictor import Fuser
from .settings import env_number

log = logging.getLogger(__name__)

APP_MAX_SIDE = 640  # see the module docstring

DEFAULT_CHOICE = "ISFuse, trained weights (default)"
OFFICIAL_CHOICE = "Authors' checkpoint (best.pth)"
UNTRAINED_CHOICE = "Untrained network (teaching contrast)"


def named_choice(name: str) -> str:
    """The model menu's entry for shipped weights `name` (DEFAULT_CHOICE for the default ones)."""
    return DEFAULT_CHOICE if name == DEFAULT_NAME else f"ISFuse {name}: {NAMED_WEIGHTS[name][1]}"


# the menu's other shipped weights, by their entry
NAMED_CHOICES = {named_choice(n): n for n in NAMED_WEIGHTS if n != DEFAULT_NAME}

# The authors' released checkpoint (../shared/weights/README.md): fetched at run time, never
# shipped, since their repository has no licence.
OFFICIAL_URL = ("https://github.com/wang-x-1997/Multi-Modal-Image-Fusion-via-Intervention-Stable-Feature-Learning"
                "/raw/main/best.pth")
OFFICIAL_SHA256 = "e8830268ad16eee19183360e26fee1480f7494e916b2c327899ae3faa9ff66bc"
OFFICIAL_BYTES = 1_010_976
_DOWNLOAD_LIMIT = 8 * 2**20  # refuse to read more than this from the URL
FAILED_FETCH_TTL_S = 120.0  # a failed download is not tried again for this long (each try may cost a timeout)

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


# The Lab's inference path: "auto" (fp32 fast on CPUs). Not "fast-mixed", though it holds the
# 2/255 bound and its pass is 1.3-2x faster where bf16 is native (tools/pass_contention.py):
# with it, the server's RSS after issue 25's invented-hash attack stayed 207 MiB above its
# baseline (bar: 100), against 54 MiB with fp32 (`python tools/fault_probe.py --only l`,
# 2026-12-08, idle machine; docs/PERFORMANCE.md).
LAB_PATH = "auto"


def make_fuser(spec: str | os.PathLike | None = None, device: str = "auto", max_side: int | None = APP_MAX_SIDE,
               fast: bool = True) -> Fuser:
    """A Fuser for a weights spec (see `ivfusion.load_model`), on the Lab's path (`LAB_PATH`),
    or on the reference path when fast=False. It and its forks keep no encoder features between calls
    (`Fuser(keep_features=False)`): on a shared server a session's or a stability run's cached
    features (about 200 MB at 768x768) would stay allocated while other requests run their
    forward passes."""
    return Fuser(load_model(spec), device=device, max_side=max_side, path=LAB_PATH if fast else "reference",
                 keep_features=False)


def cache_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("IVFUSION_CACHE"):
        return Path(env["IVFUSION_CACHE"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ivfusion"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_official(url: str = OFFICIAL_URL, folder: Path | None = None, progress: Progress | None = None,
                   timeout: float = 15.0) -> Path:
    """The authors' checkpoint in the cache folder, downloaded from `url` the first time.

    The file is checked against OFFICIAL_SHA256 (a cached copy too) and written under a
    temporary name, then renamed, so the cache never holds a partial or wrong file.
    progress(done, total) is called as bytes arrive. Raises WeightsError saying it cannot be
    fetched (offline, refused, wrong file) without naming server paths.
    """
    folder = Path(folder or cache_dir())
    target = folder / "authors-best.pth"
    if target.is_file():
        if sha256_of(target) == OFFICIAL_SHA256:
            return target
        target.unlink(missing_ok=True)  # a damaged copy is fetched again
    tmp = folder / f".authors-best.pth.{os.getpid()}.{threading.get_ident()}.part"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        h, done = hashlib.sha256(), 0
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:  # noqa: S310 - fixed https URL
            total = int(r.headers.get("Content-Length") or OFFICIAL_BYTES)
            while True:
                block = r.read(1 << 16)
                if not block:
                    break
                done += len(block)
                if done > _DOWNLOAD_LIMIT:
                    raise WeightsError(f"the download is larger than the {OFFICIAL_BYTES:,}-byte checkpoint")
                h.update(block)
                f.write(block)
                if progress is not None:
                    progress(done, total)
        if h.hexdigest() != OFFICIAL_SHA256:
            raise WeightsError(f"the downloaded file ({done:,} bytes) is not the authors' checkpoint "
                               "(SHA-256 mismatch)")
        os.replace(tmp, target)
        return target
    except WeightsError as e:
        raise WeightsError(f"the authors' released model cannot be fetched: {e}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError("the authors' released model cannot be fetched (no network connection to GitHub?: "
                           f"{reason}). Set IVFUSION_OFFICIAL_WEIGHTS to a local copy of best.pth.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _public(text: str, *specs) -> str:
    """An error message with the server's folders cut from the paths it names."""
    for spec in specs:
        if spec and not str(spec).startswith("hf://"):
            text = text.replace(str(Path(spec).parent) + os.sep, "")
    return text


class ModelBank:
    """The models the lab offers, each loaded at most once (thread-safe) and then shared.

    Models are read-only at inference, so one instance serves every user; no per-user state
    lives here. Only the names in `choices()` are ever loaded or cached: any other name is
    refused with a WeightsError. `env` defaults to os.environ (see the module docstring).
    """

    def __init__(self, env: dict[str, str] | None = None, device: str = "auto",
                 max_side: int | None = None, fast: bool = True, fetch_timeout: float = 15.0):
        env = dict(os.environ if env is None else env)
        self.env = env
        self.device = device
        self.fast = fast
        self.max_side = max_side if max_side is not None else env_number("IVFUSION_MAX_SIDE", APP_MAX_SIDE, 64, 8192,
                                                                          env=env)
        self.trained_spec = env.get("IVFUSION_WEIGHTS") or None
        self.official_spec = env.get("IVFUSION_OFFICIAL_WEIGHTS") or None
        self.official_url = env.get("IVFUSION_OFFICIAL_URL") or OFFICIAL_URL
        self.fetch_timeout = fetch_timeout
        try:
            hub_deadline_s(env)  # a junk value stops the app at start, in one line
        except WeightsError as e:
            raise ValueError(str(e)) from None
        self._fusers: dict[str, Fuser] = {}
        self._notes: dict[str, list[str]] = {}
        self._errors: dict[str, tuple[str, float | None]] = {}  # message, monotonic time (None: for good)
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._downloads: dict[str, threading.Thread] = {}  # background loads started by default_choice
        self._wanted = "bundled"  # the default model asked for (default_choice)

    def choices(self) -> list[str]:
        return [DEFAULT_CHOICE, *NAMED_CHOICES, OFFICIAL_CHOICE, UNTRAINED_CHOICE]

    def _fuser(self, spec) -> Fuser:
        return make_fuser(spec, self.device, self.max_side, self.fast)

    def _trained_name(self) -> str:
        spec = str(self.trained_spec)
        return spec if spec.startswith("hf://") else Path(spec).name

    def _load_trained(self) -> tuple[Fuser | None, list[str]]:
        """The IVFUSION_WEIGHTS model, or None and a notice saying why it cannot be had."""
        try:
            return self._fuser(self.trained_spec), []
        except Exception as e:  # noqa: BLE001 - any failure of the operator's weights: fall back
            log.warning("IVFUSION_WEIGHTS=%s could not be loaded: %s", self.trained_spec, e)
            return None, [f"The weights set in IVFUSION_WEIGHTS ({self._trained_name()}) could not be loaded "
                          f"({_public(str(e), self.trained_spec)}); using the bundled weights instead."]

    def needs_network(self, choice: str) -> bool:
        """Whether loading `choice` now would use the network: an hf:// spec (not under
        HF_HUB_OFFLINE, which reads the local Hub cache only), or the authors' checkpoint not
        yet in the cache folder."""
        if choice == DEFAULT_CHOICE:
            spec = self.trained_spec
        elif choice == OFFICIAL_CHOICE:
            spec = self.official_spec
            if not spec:
                return not (cache_dir(self.env) / "authors-best.pth").is_file()
        else:
            return False
        return str(spec or "").startswith("hf://") and not hub_offline()

    def _in_background(self, choice: str, load: Callable[[], object]) -> None:
        """Run load() in a daemon thread, once per choice: start-up goes on meanwhile."""
        with self._lock:
            if choice in self._downloads:
                return
            thread = threading.Thread(target=load, name=f"ivfusion-download-{len(self._downloads)}", daemon=True)
            self._downloads[choice] = thread
        thread.start()

    def _download_trained(self) -> None:
        """In the background: the IVFUSION_WEIGHTS model from the network (a total deadline,
        `ivfusion.hub`); it replaces the bundled weights as the default once it has loaded, or
        the page's notice says why it could not."""
        fuser, notes = self._load_trained()
        with self._lock:
            if fuser is not None:
                self._fusers[DEFAULT_CHOICE] = fuser
            self._notes[DEFAULT_CHOICE] = notes

    def _download_official(self) -> None:
        try:
            self.get(OFFICIAL_CHOICE)
        except WeightsError as e:  # remembered by get(); the page says it (current_default)
            log.warning("the authors' checkpoint could not be had: %s", e)

    def downloading(self, choice: str) -> bool:
        """Whether a background download of `choice` is under way."""
        with self._lock:
            thread = self._downloads.get(choice)
        return thread is not None and thread.is_alive()

    def wait_for_downloads(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the background downloads; whether all are over."""
        end = time.monotonic() + timeout
        with self._lock:
            threads = list(self._downloads.values())
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _load(self, choice: str, progress: Progress | None) -> tuple[Fuser, list[str]]:
        notes: list[str] = []
        if choice == DEFAULT_CHOICE:
            fuser = None
            with self._lock:
                started = DEFAULT_CHOICE in self._downloads
            if started:  # the bundled weights serve until it lands (get() keeps what landed first)
                notes.append(f"The weights set in IVFUSION_WEIGHTS ({self._trained_name()}) are downloading in the "
                             f"background (at most {hub_deadline_s(self.env):g} s); the bundled weights serve until "
                             "then.")
            elif self.trained_spec:
                fuser, notes = self._load_trained()
            if fuser is None:
                fuser = self._fuser(DEFAULT_WEIGHTS)
        elif choice == OFFICIAL_CHOICE:
            spec = self.official_spec
            if not spec:  # a total deadline, connect and read: past it the download goes on into the cache
                deadline = hub_deadline_s(self.env)
                spec = run_with_deadline(
                    lambda: fetch_official(self.official_url, cache_dir(self.env), progress, self.fetch_timeout),
                    deadline, f"the authors' released model did not download within {deadline:g} s (it goes on "
                              "in the background; choose it again in a few minutes)")
            try:
                fuser = self._fuser(spec)
            except WeightsError as e:
                raise WeightsError(f"the authors' released model cannot be loaded: {_public(str(e), spec)}") from None
        elif choice in NAMED_CHOICES:
            fuser = self._fuser(named_path(NAMED_CHOICES[choice]))
        else:
            fuser = self._fuser(UNTRAINED)
            notes.append("The untrained network has random weights: its output and gates mean nothing. "
                         "Compare it with the trained model to see what training taught the gates.")
        return fuser, notes

    def check_choice(self, choice: str | None) -> str:
        """The model name, checked (None: the default). Raises WeightsError for a name the Lab
        does not offer; such names are never loaded or remembered."""
        choice = DEFAULT_CHOICE if choice is None or choice == "" else choice
        if not isinstance(choice, str) or choice not in self.choices():
            shown = repr(choice)[:80]
            raise WeightsError(f"unknown model {shown}; choose one of: {', '.join(self.choices())}")
        return choice

    def get(self, choice: str | None = None, progress: Progress | None = None) -> tuple[Fuser, list[str]]:
        """The Fuser for a model choice (None: the default) and notices about it. Raises
        WeightsError with a readable message when it cannot be loaded (the caller stays on its
        current model). progress(done, total): bytes of a first download of the authors' model.

        A load (a download of the authors' checkpoint included) holds only its own choice's
        lock, so a visitor of another model never waits for it; a failed download is
        remembered for FAILED_FETCH_TTL_S, so that an unreachable URL costs one timeout, not
        one per click."""
        choice = self.check_choice(choice)
        with self._lock:
            if choice in self._fusers:
                return self._fusers[choice], list(self._notes[choice])
            load_lock = self._loading.setdefault(choice, threading.Lock())
        with load_lock:
            with self._lock:
                if choice in self._fusers:  # loaded by another request while this one waited
                    return self._fusers[choice], list(self._notes[choice])
                failed = self._errors.get(choice)
                if failed and (failed[1] is None or time.monotonic() - failed[1] < FAILED_FETCH_TTL_S):
                    raise WeightsError(failed[0])
            try:
                fuser, notes = self._load(choice, progress)
            except WeightsError as e:
                permanent = (choice == UNTRAINED_CHOICE or choice in NAMED_CHOICES
                             or (choice == OFFICIAL_CHOICE and self.official_spec))
                with self._lock:  # a bad local file stays bad; a failed download is retried later
                    self._errors[choice] = (str(e), None if permanent else time.monotonic())
                raise
            except Exception as e:  # noqa: BLE001 - e.g. the bundled weights themselves broken
                log.exception("model %r could not be loaded", choice)
                raise WeightsError(f"{choice} cannot be loaded ({type(e).__name__}: {e})") from None
            with self._lock:  # a background download may have landed meanwhile: it wins
                fuser = self._fusers.setdefault(choice, fuser)
                notes = self._notes.setdefault(choice, notes)
                self._errors.pop(choice, None)
            return fuser, list(notes)

    def loaded(self) -> list[str]:
        """The choices loaded so far (never more than `choices()`)."""
        with self._lock:
            return list(self._fusers)

    def default_choice(self) -> tuple[str, list[str]]:
        """At start-up: the choice to preselect and its notices, without waiting on the network.

        IVFUSION_DEFAULT_MODEL picks it: "authors" (the released checkpoint, downloaded and
        SHA-256 checked; the default on a Hugging Face Space, which can reach it, so that
        visitors see the released ISFuse's gates) or "bundled" (the default elsewhere: it
        needs no network). A model that needs the network (`needs_network`) downloads in the
        background while the bundled weights serve, with a notice; `current_default` says
        what a page opened later gets. When no trained weights load, the untrained network."""
        wanted = (self.env.get("IVFUSION_DEFAULT_MODEL") or ("authors" if self.env.get("SPACE_ID") else "bundled"))
        if wanted not in ("authors", "bundled"):
            raise ValueError(f"IVFUSION_DEFAULT_MODEL={wanted!r}: expected 'authors' or 'bundled'")
        self._wanted = wanted
        if self.trained_spec and self.needs_network(DEFAULT_CHOICE):
            self._in_background(DEFAULT_CHOICE, self._download_trained)
        if wanted == "authors":
            if self.needs_network(OFFICIAL_CHOICE):
                self._in_background(OFFICIAL_CHOICE, self._download_official)
            else:
                try:
                    self.get(OFFICIAL_CHOICE)
                except WeightsError:
                    pass  # remembered: current_default says why
        return self.current_default()

    def current_default(self) -> tuple[str, list[str]]:
        """The choice to preselect on a page opened now and its notices: as `default_choice`
        said at start-up, updated as the background downloads complete or fail."""
        notes: list[str] = []
        if self._wanted == "authors":
            with self._lock:
                loaded = OFFICIAL_CHOICE in self._fusers
                failed = self._errors.get(OFFICIAL_CHOICE)
            if loaded:
                _, notes = self.get(OFFICIAL_CHOICE)
                return OFFICIAL_CHOICE, notes
            if self.downloading(OFFICIAL_CHOICE):
                notes = [f"The authors' checkpoint is downloading in the background (at most "
                         f"{hub_deadline_s(self.env):g} s); the bundled weights serve until then. Reload the page "
                         "once it has, or choose it in the Model menu."]
            elif failed:
                notes = [f"The authors' checkpoint could not be had ({failed[0]}); showing the bundled weights."]
        choice, more = self._bundled_choice()
        return choice, notes + more

    def _bundled_choice(self) -> tuple[str, list[str]]:
        """The bundled weights (or IVFUSION_WEIGHTS), else the untrained network with a notice."""
        try:
            _, notes = self.get(DEFAULT_CHOICE)
            return DEFAULT_CHOICE, notes
        except WeightsError as e:
            self.get(UNTRAINED_CHOICE)
            return UNTRAINED_CHOICE, [f"No trained weights could be loaded ({e}). The lab runs the untrained "
                                      "network until trained weights are available."]

    def describe(self, choice: str | None = None) -> str:
        fuser, _ = self.get(choice)
        return f"{choice or DEFAULT_CHOICE}: weights from {fuser.weights_source}, {fuser.path} path, {fuser.device}"
