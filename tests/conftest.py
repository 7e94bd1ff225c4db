"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED

# Tests never reach the network: the Hub fails at once instead of retrying for ~20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Slow tests (a server, a browser, subprocesses, training, or several seconds on 2 cores) are
# marked where they are defined: `pytestmark = pytest.mark.slow` for a whole module, or
# `@pytest.mark.slow` on one test, so that renaming a test keeps its mark.


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (paper notes, data): ``$IVFUSION_SHARED``, else ``<repo>/../shared``.

    Fails (does not skip) when the data folder is missing: the tests need real data.
    """
    path = SHARED
    if not (path / "data").is_dir():
        pytest.fail(
            f"shared data folder not found at {path / 'data'}; "
            "set IVFUSION_SHARED to the folder that holds data/ and paper/",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def lab_trusts_the_test_files(tmp_path_factory, shared_dir):
    """In-process Lab callbacks accept only files from the folders a server serves
    (`ivfusion.lab.uploads.trusted_roots`); the tests hand them their own files directly, as
    if uploaded, so pytest's temporary folders and the shared data are trusted here. The
    trust-boundary tests put the files a client must not reach under other folders."""
    from ivfusion.lab import uploads

    uploads.trust_folder(tmp_path_factory.getbasetemp())
    uploads.trust_folder(shared_dir / "data")


@pytest.fixture(scope="session")
def pairs(shared_dir):
    """A few real registered pairs as (name, visible RGB uint8, infrared grey uint8)."""
    from ivfusion import read_image

    names = [("roadscene/test", "FLIR_00211.jpg"), ("roadscene/test", "FLIR_04269.jpg"), ("msrs/train", "00003N.png")]
    out = []
    for folder, name in names:
        root = shared_dir / "data" / folder
        out.append((name, read_image(root / "vi" / name), read_image(root / "ir" / name)))
    return out


@pytest.fixture(scope="session")
def untrained():
    """The real ISFuse network, seeded random weights (fast to build; no download)."""
    from ivfusion import load_model

    return load_model("untrained")


@pytest.fixture()
def pair_folder(tmp_path, shared_dir):
    """A data folder (ir/, vi/) holding copies of four real pairs."""
    import shutil

    for sub in ("ir", "vi"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for folder in ("roadscene/train", "msrs/train"):
        src = shared_dir / "data" / folder
        for p in sorted((src / "ir").iterdir())[:2]:
            for sub in ("ir", "vi"):
                shutil.copy(src / sub / p.name, tmp_path / "data" / sub / p.name)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium for the browser tests (Playwright's own browser download cannot work
    here). Fails, never skips, when it is missing, like every other missing resource."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is missing: install Debian's chromium package (apt-get install chromium)",
                    pytrace=False)
    return path
