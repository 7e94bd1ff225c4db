"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (paper notes, data): ``$IVFUSION_SHARED``, else ``<repo>/../shared``.

    Fails (does not skip) when the data folder is missing: the tests need real data.
    """
    env = os.environ.get("IVFUSION_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    if not (path / "data").is_dir():
        pytest.fail(
            f"shared data folder not found at {path / 'data'}; "
            "set IVFUSION_SHARED to the folder that holds data/ and paper/",
            pytrace=False,
        )
    return path
