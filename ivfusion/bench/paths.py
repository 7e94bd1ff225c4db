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
    """'640x480' (width x height) -> (height, width); each side at least the network's
    MIN_SIDE, and at most io.MAX_PIXELS in all (the largest image the project reads)."""
    from ..io import MAX_PIXELS
    from ..modeling.isfuse import MIN_SIDE

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if min(w, h) < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be at least {MIN_SIDE} pixels")
    if w * h > MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"size {text!r}: at most {MAX_PIXELS / 1e6:g} megapixels, the largest "
                                         "image ivfusion reads")
    return h, w


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'256x256,640x480' -> [(height, width), ...] (`parse_size` each; at least one)."""
    sizes = [parse_size(s.strip()) for s in text.split(",") if s.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one WIDTHxHEIGHT, e.g. 640x480")
    return sizes
