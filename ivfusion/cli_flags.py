"""Command-line conventions shared by the tools (`ivfusion fuse`, `ivfusion evaluate`).

The flags spell the modalities `--infrared` and `--visible`.
"""
from __future__ import annotations

import argparse


def add_modality_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--infrared/--visible (both required; `missing_modality_flags` says which is missing)."""
    p.add_argument("--infrared", metavar="PATH", help=f"infrared {what}")
    p.add_argument("--visible", metavar="PATH", help=f"visible {what}")


def missing_modality_flags(args) -> str | None:
    """The usage error when --infrared or --visible was not given (None when both were)."""
    missing = [f for f, v in (("--infrared", args.infrared), ("--visible", args.visible)) if not v]
    return f"the following arguments are required: {', '.join(missing)}" if missing else None


def failure_reason(e: BaseException) -> str:
    """One line saying why a pair failed, for the tools' failure summaries: the message of the
    project's own errors (ImageError and other ValueErrors, OSError), the type name otherwise."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else ""
    if isinstance(e, (ValueError, OSError)) and msg:
        return msg
    if isinstance(e, MemoryError):
        return "out of memory (the image is too large for this machine)"
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
