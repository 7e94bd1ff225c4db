"""The `ivfusion` command: one sub-command per module, each registering itself."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Sub-command modules; each has add_parser(subparsers) that sets `func`. Imported lazily so
# that `ivfusion fuse` does not pay for gradio or matplotlib.
COMMANDS = {
    "fuse": "ivfusion.fuse_cli",
    "info": "ivfusion.fuse_cli",
    "train": "ivfusion.train",
    "evaluate": "ivfusion.evaluate",
    "bench": "ivfusion.bench",
    "study": "ivfusion.study",
    "export": "ivfusion.export",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivfusion", description="ISFuse infrared/visible image fusion")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ivfusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for name, module in COMMANDS.items():
        if module in seen or (command and command != name and COMMANDS.get(command) != module):
            continue
        # No ImportError is caught: a broken import must show as itself, not as "invalid choice".
        importlib.import_module(module).add_parser(sub)
        seen.add(module)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
