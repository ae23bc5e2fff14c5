"""The `malenia` command.

Each subcommand lives in its own module under malenia/commands/ and exposes
`register(subparsers)`; the module's `run(args)` does the work and imports heavy
libraries (torch, SimpleITK) only when it runs, so `malenia --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys

from malenia import __version__
from malenia.errors import EXIT_INTERRUPTED, EXIT_PIPE, MaleniaError

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


# Options whose value is a list of numbers that may start with a negative one (a box in RAS mm).
NUMBER_LIST_OPTIONS = ("--roi",)
_NEGATIVE_LIST = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?,")


def join_negative_lists(argv: list[str]) -> list[str]:
    """`--roi -30,5,90,10,35,110` as `--roi=-30,5,90,10,35,110`: argparse takes a separate value that starts with
    '-' for an option (it knows single negative numbers, not lists of them) and would refuse the box."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + argv[i:]
        if out and out[-1] in NUMBER_LIST_OPTIONS and _NEGATIVE_LIST.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_lists(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _warn_missing_profile_folders(args)
    try:
        # This process's own command: SIGTERM (a server's cancel, `kill`) unwinds as Ctrl-C does; `serve` is left
        # to uvicorn, whose own handlers shut the server down gracefully.
        if argv is None and args.command != "serve":
            from malenia.commands._runtime import terminate_as_interrupt

            with terminate_as_interrupt():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except MaleniaError as err:
        print(f"malenia {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        note = getattr(args, "interrupted_note", None) or "nothing was written"
        print(f"malenia {args.command}: interrupted; {note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _output_closed(args.command)
    finally:
        if argv is None:  # this process's own command (not a call from Python code, e.g. a test)
            _ignore_late_signals()


def _warn_missing_profile_folders(args) -> None:
    """A site profile folder that does not exist holds no profiles; a mistyped one would silently change which
    diseases can be named, so a command that reads profiles says so (`knowledge add|edit` create theirs)."""
    if not hasattr(args, "knowledge") or getattr(args, "action", None) in ("add", "edit", "remove"):
        return
    from malenia.knowledge.site import missing_dirs

    for folder in missing_dirs(args.knowledge):
        print(f"malenia {args.command}: warning: site profile folder {folder} does not exist; no profiles are read "
              "from it", file=sys.stderr)


def _output_closed(command: str) -> int:
    """The reader of standard output went away (`malenia ... | head`): a writer killed by SIGPIPE, as Unix tools
    are, without a traceback; staged outputs were removed on the way out, as for Ctrl-C."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush of stdout must not raise again
    print(f"malenia {command}: standard output was closed; stopped", file=sys.stderr)
    return EXIT_PIPE


def _ignore_late_signals() -> None:
    """Everything is written or cleaned up: a Ctrl-C or SIGTERM in the second of interpreter shutdown that follows
    (torch's teardown) would only replace the command's exit status by the signal's."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
