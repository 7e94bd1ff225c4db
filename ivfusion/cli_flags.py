"""Command-line conventions shared by the subcommands.

Every subcommand declares its flags with argparse in its own `add_parser`; a flag's help ends
with "(default X)". A user error is one line in argparse's own form, "ivfusion CMD: error:
MESSAGE", with exit code 2 (`user_error`). The flags spell the modalities `--infrared` and
`--visible`, and a device is one of `device.DEVICE_NAMES`, checked when the command line is
parsed (`add_device_flag`).
"""
from __future__ import annotations

import argparse
import sys


def user_error(command: str, message) -> int:
    """Print a user error in argparse's form on stderr; returns the exit code, 2."""
    print(f"ivfusion {command}: error: {message}", file=sys.stderr)
    return 2


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
