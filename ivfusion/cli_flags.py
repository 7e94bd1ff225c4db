"""Command-line conventions shared by the subcommands.

Every subcommand declares its flags with argparse in its own `add_parser`; a flag's help ends
with "(default X)". A user error is one line in argparse's own form, "ivfusion CMD: error:
MESSAGE", with exit code 2 (`user_error`). The flags spell the modalities `--infrared` and
`--visible`, and a device is one of `device.DEVICE_NAMES`, checked when the command line is
parsed (`add_device_flag`). A number with a range is checked when the command line is parsed
too (`whole_number`), and an output folder before any work (`out_folder_problem`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def user_error(command: str, message) -> int:
    """Print a user error in argparse's form on stderr; returns the exit code, 2."""
    print(f"ivfusion {command}: error: {message}", file=sys.stderr)
    return 2


def whole_number(lo: int, hi: int | None = None, why: str = ""):
    """An argparse type: a whole number from `lo` (to `hi`), else a usage error at parse time
    ("argument --seed: must be a whole number >= 0, got -1"); `why` says why the bound is there."""
    def parse(text: str) -> int:
        accepted = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be a whole number {accepted}{why}, got {text!r}")
        return value

    return parse


def out_folder_problem(path) -> str | None:
    """Why `path` cannot be an output folder (a file is in the way, or the first existing
    folder on its way is not writable), or None; checked before any work, so that a long
    run does not fail at its first write."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                return f"{path} is not a folder ({p} is a file); give a folder"
            if not os.access(p, os.W_OK | os.X_OK):
                return f"{path}: cannot write in {p} (permission denied)"
            return None
    return None


def add_device_flag(p: argparse.ArgumentParser, default: str, what: str = "device to run on") -> None:
    """--device NAME, checked against DEVICE_NAMES by argparse (a usage error, exit code 2)."""
    from .device import DEVICE_NAMES, check_device_name

    def name(value: str) -> str:
        try:
            return check_device_name(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    p.add_argument("--device", default=default, type=name, metavar="NAME",
                   help=f"{what}: {DEVICE_NAMES} (default {default})")


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
