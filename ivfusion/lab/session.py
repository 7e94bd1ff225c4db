"""Per-session state and per-request files.

A session's state is a plain dict held by Gradio's `gr.State` (one per browser tab or
gradio_client), never shared between users and dropped after `SESSION_TTL_S` seconds idle.
Files written for one request live in a fresh folder from `request_dir`.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

SESSION_TTL_S = 3600  # an idle session's state is dropped after this many seconds


def request_dir(root: Path | None = None, max_age_s: float = 3600.0) -> Path:
    """A fresh temporary folder for one request's files; folders older than max_age_s from
    earlier requests are removed."""
    root = Path(root or Path(tempfile.gettempdir()) / "ivfusion-lab")
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder
