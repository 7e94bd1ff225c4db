"""onnxruntime-web's files for a Lab without `npm ci` (a Space): fetched from a stand-in npm
registry on 127.0.0.1 (the network boundary; tarballs built from the installed files), checked,
extracted and served; a tampered or unpinned tarball, a path-traversing one, an oversized one
and a silent registry refused without delaying start-up; nothing fetched when installed."""
import base64
import hashlib
import http.server
import io
import tarfile
import threading

import httpx
import pytest

from ivfusion.lab import ortweb
from tests.appserver import free_port

pytestmark = pytest.mark.slow  # 45 MB tarballs and a server

EXTRA = "ort.min.js"  # in the package's dist/, not one the page loads


def build_tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture(scope="module")
def dist():
    assert ortweb._complete(ortweb.LOCAL), f"onnxruntime-web is not installed: {ortweb.INSTALL}"
    return {name: (ortweb.LOCAL / name).read_bytes() for name in (*ortweb.PAGE_FILES, EXTRA)}


@pytest.fixture(scope="module")
def good(dist):
    """The package as npm packs it: package/package.json and package/dist/..."""
    files = {"package/package.json": (ortweb.LOCAL.parent / "package.json").read_bytes()}
    files.update({f"package/dist/{n}": b for n, b in dist.items()})
    return build_tarball(files)


class Registry:
    """A stand-in npm registry: serves `tarballs` by path, records every request, and holds a
    request open without answering when `silent` (until `release`)."""

    def __init__(self, tarballs: dict[str, bytes], silent: bool = False):
        self.tarballs, self.silent, self.requests = tarballs, silent, []
        self.asked, self.release = threading.Event(), threading.Event()
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                reg.requests.append(self.path)
                reg.asked.set()
                if reg.silent:
                    reg.release.wait()
                    return  # closes the connection without a word
                body = reg.tarballs.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry():
    opened = []

    def make(tarballs=None, silent=False):
        opened.append(Registry(tarballs or {}, silent))
        return opened[-1]

    yield make
    for r in opened:
        r.close()


def tgz_path() -> str:
    pin = ortweb.pinned()
    return f"/{ortweb.NAME}/-/{ortweb.NAME}-{pin.version}.tgz"


def test_the_pinned_tarball_is_fetched_checked_and_only_the_page_files_extracted(tmp_path, registry, good, dist):
    reg = registry({tgz_path(): good})
    pin = ortweb.Pin(ortweb.pinned().version, integrity(good))  # the stand-in's tarball, not npm's
    assert pin.tarball_url(reg.url + "/") == reg.url + tgz_path()  # the lock's version, npm's layout
    dest = tmp_path / "onnxruntime-web" / pin.version
    assert ortweb.fetch(pin, pin.tarball_url(reg.url), dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(ortweb.PAGE_FILES)  # no EXTRA, no package.json
    for name in ortweb.PAGE_FILES:
        assert (dest / name).read_bytes() == dist[name], name
    assert sorted(p.name for p in dest.parent.iterdir()) == [pin.version]  # no partial files left


def test_a_tampered_tarball_is_refused_and_nothing_is_extracted(tmp_path, registry, good, dist):
    wasm = "ort-wasm-simd-threaded.wasm"
    files = {f"package/dist/{n}": b for n, b in dist.items()}
    files[f"package/dist/{wasm}"] = dist[wasm][:-1] + bytes([dist[wasm][-1] ^ 1])
    reg = registry({tgz_path(): build_tarball(files)})
    pin = ortweb.Pin(ortweb.pinned().version, integrity(good))
    dest = tmp_path / "ort" / pin.version
    with pytest.raises(ortweb.FetchError, match="does not match the lock's integrity"):
        ortweb.fetch(pin, pin.tarball_url(reg.url), dest)
    assert list((tmp_path / "ort").iterdir()) == []


def test_the_app_refuses_a_tarball_that_is_not_the_locked_one_and_says_why(tmp_path, registry, good):
    """The Lab's own path: the lock's integrity, which the stand-in's repacked tarball lacks."""
    reg = registry({tgz_path(): good})
    files = ortweb.OrtFiles(tmp_path, local=tmp_path / "not-installed", env={ortweb.REGISTRY_ENV: reg.url})
    outcome = []
    files.start(outcome.append)
    assert files.ready.wait(300)
    assert reg.requests == [tgz_path()]
    assert outcome == [False] and files.path is None
    assert "could not be fetched" in files.reason and "integrity" in files.reason and ortweb.INSTALL in files.reason
    assert not (tmp_path / ortweb.NAME / ortweb.pinned().version).exists()


def test_paths_in_the_tarball_are_never_followed(tmp_path, registry, dist):
    files = {f"package/dist/{n}": b for n, b in dist.items()}
    evil = {"../escaped.js": b"x", "/tmp/abs-escaped.js": b"x", "package/dist/../../escaped2.js": b"x"}
    data = build_tarball({**evil, **files})
    reg = registry({tgz_path(): data})
    pin = ortweb.Pin("1", integrity(data))
    out = tmp_path / "deep" / "cache"
    ortweb.fetch(pin, reg.url + tgz_path(), out / "v")
    assert sorted(p.name for p in (out / "v").iterdir()) == sorted(ortweb.PAGE_FILES)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        f"deep/cache/v/{n}" for n in ortweb.PAGE_FILES)


def test_a_link_in_place_of_a_page_file_is_refused(tmp_path, registry, dist):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("package/dist/ort.wasm.min.js")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    data = buf.getvalue()
    reg = registry({tgz_path(): data})
    with pytest.raises(ortweb.FetchError, match="not a regular file"):
        ortweb.fetch(ortweb.Pin("1", integrity(data)), reg.url + tgz_path(), tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_a_tarball_over_the_size_bound_is_refused(tmp_path, registry, good):
    reg = registry({tgz_path(): good})
    with pytest.raises(ortweb.FetchError, match="larger than 1 MB"):
        ortweb.fetch(ortweb.Pin("1", integrity(good)), reg.url + tgz_path(), tmp_path / "v", max_tarball=1 << 20)
    assert not (tmp_path / "v").exists()


def test_a_silent_registry_delays_nothing_and_the_deadline_ends_the_fetch(tmp_path, registry):
    reg = registry(silent=True)
    files = ortweb.OrtFiles(tmp_path, local=tmp_path / "not-installed", env={ortweb.REGISTRY_ENV: reg.url},
                            deadline_s=2)
    files.start()  # returns while the registry holds the request
    assert reg.asked.wait(60)
    assert not files.ready.is_set() and files.path is None
    assert "is being fetched" in files.reason
    assert files.ready.wait(120)  # the deadline, not the registry, ends it
    assert files.path is None and "could not be fetched" in files.reason and "timed out" in files.reason


def test_nothing_is_fetched_when_the_files_are_installed(tmp_path, registry):
    reg = registry(silent=True)
    files = ortweb.OrtFiles(tmp_path, env={ortweb.REGISTRY_ENV: reg.url})
    outcome = []
    files.start(outcome.append)
    assert files.ready.is_set() and outcome == [True] and files.path == ortweb.LOCAL and files.reason == ""
    assert reg.requests == []


def test_a_junk_registry_setting_is_one_line():
    with pytest.raises(ValueError, match=r"^IVFUSION_NPM_REGISTRY='ftp://x': expected an http\(s\) URL"):
        ortweb.registry({ortweb.REGISTRY_ENV: "ftp://x"})


def test_the_lab_serves_the_fetched_files(tmp_path, registry, good, dist):
    """A real Gradio server with the Lab's in-browser hooks: the page's config points at the
    fetched folder in the cache, and the server answers its files with their bytes."""
    import gradio as gr

    from ivfusion.lab import browser, models

    pin = ortweb.pinned()
    reg = registry({tgz_path(): good})
    ortweb.fetch(ortweb.Pin(pin.version, integrity(good)), reg.url + tgz_path(), tmp_path / ortweb.NAME / pin.version)
    bank = models.ModelBank(env={})
    ort = ortweb.OrtFiles(tmp_path, local=tmp_path / "not-installed", env={ortweb.REGISTRY_ENV: reg.url})
    with gr.Blocks() as demo:
        model = browser.BrowserModel(bank, cache=tmp_path, ort=ort).start()
    assert ort.path == tmp_path / ortweb.NAME / pin.version and reg.requests == [tgz_path()]  # the cache, no refetch
    cfg = model.page_config()
    assert cfg["ort"] == browser.file_url(ort.path) + "/" and cfg["ortVersion"] == pin.version
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        for name in ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm"):
            r = httpx.get(demo.local_url.rstrip("/") + cfg["ort"] + name, timeout=60)
            assert r.status_code == 200 and r.content == dist[name], name
    finally:
        demo.close()


def test_while_the_files_are_fetched_the_page_gets_the_server_fuse_and_why(tmp_path, registry):
    import gradio as gr

    from ivfusion.lab import browser, examples, models

    reg = registry(silent=True)
    ort = ortweb.OrtFiles(tmp_path, local=tmp_path / "not-installed", env={ortweb.REGISTRY_ENV: reg.url})
    with gr.Blocks():
        model = browser.BrowserModel(models.ModelBank(env={}), cache=tmp_path, ort=ort).start()
    assert reg.asked.wait(60)  # start-up is over while the registry is silent
    cfg = model.page_config()
    assert cfg["model"] is None and cfg["ort"] is None and "is being fetched from the npm registry" in cfg["why"]
    name = next(iter(examples.EXAMPLES))
    vis, ir = (next(p for p in (examples.EXAMPLES_DIR / d).iterdir() if p.stem == name) for d in ("vi", "ir"))
    assert model.masks(str(vis), str(ir)) == {"compute": "server", "why": cfg["why"]}
    reg.release.set()  # the registry hangs up: the page is told the fetch failed
    assert ort.ready.wait(120) and model.url is None and "could not be fetched" in model.page_config()["why"]
