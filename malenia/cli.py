"""The `malenia` command.

Each subcommand lives in its own module under malenia/commands/ and exposes
`register(subparsers)`; the module's `run(args)` does the work and imports heavy
libraries (torch, SimpleITK) only when it runs, so `malenia --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from malenia import __version__
from malenia.errors import EXIT_INTERRUPTED, MaleniaError

import malenia.commands as commands_pkg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malenia", description="Open-set lesion segmentation for CT (Malenia).")
    parser.add_argument("--version", action="version", version=f"malenia {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"malenia.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MaleniaError as err:
        print(f"malenia {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"malenia {args.command}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
