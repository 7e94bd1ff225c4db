"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED

# Tests never reach the network: the Hub fails at once instead of retrying for ~20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Modules whose tests start a server, a browser, subprocesses or train: marked slow (and
# browser / server) here, in one place, so that `pytest -m "not slow"` stays a fast loop.
SLOW_MODULES = {
    "test_browser": ("browser", "server"), "test_app": ("server",), "test_app_load": ("server",),
    "test_app_slot": ("server",), "test_trust_boundary": ("server",), "test_packaging": (), "test_train": (),
    "test_hub": (), "test_evaluate": (),
}


# Single tests of other modules that take several seconds each on 2 cores (see --durations).
SLOW_TESTS = {
    "test_intervene_equals_a_full_forward_of_the_intervened_inputs",
    "test_the_authors_released_checkpoint_matches_their_forward_on_real_pairs",
    "test_run_stability_uses_the_settings_holes_and_seed_and_reports_per_run",
    "test_reuse_skips_encoder_work",
    "test_junk_settings_stop_the_app_with_one_line",
    "test_an_unreachable_checkpoint_url_stalls_no_one_else_and_is_not_retried_at_once",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        marks = SLOW_MODULES.get(item.module.__name__.rsplit(".", 1)[-1])
        if marks is not None:
            for name in ("slow", *marks):
                item.add_marker(getattr(pytest.mark, name))


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
