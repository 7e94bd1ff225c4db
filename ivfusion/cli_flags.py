"""Command-line conventions shared by the tools (`ivfusion fuse`, `ivfusion evaluate`).

The public flags spell the modalities `--infrared` and `--visible`; the older `--ir` and
`--vis` stay as deprecated aliases that still work and say which flag to use.
"""
from __future__ import annotations

import argparse
import sys


class _DeprecatedAlias(argparse.Action):
    """An old flag spelling: stores into the new flag's dest and says which flag to use."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"ivfusion: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_modality_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--infrared/--visible (required), with --ir/--vis as deprecated aliases."""
    p.add_argument("--infrared", metavar="PATH", help=f"infrared {what}")
    p.add_argument("--visible", metavar="PATH", help=f"visible {what}")
    p.add_argument("--ir", dest="infrared", action=_DeprecatedAlias, new_flag="--infrared")
    p.add_argument("--vis", dest="visible", action=_DeprecatedAlias, new_flag="--visible")


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
