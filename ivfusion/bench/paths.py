"""Where the benchmarks find the shared data, and how they parse sizes."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def shared_dir() -> Path:
    """The shared folder (data/, paper/): $IVFUSION_SHARED, else ../shared beside the checkout."""
    env = os.environ.get("IVFUSION_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (width x height) -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if min(w, h) < 4:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be at least 4 pixels")
    return h, w
