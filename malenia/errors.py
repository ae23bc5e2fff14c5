"""User-facing errors: one clear line and a documented exit code, never a traceback."""

from __future__ import annotations

# Exit codes of the `malenia` command (documented in the README).
EXIT_OK = 0
EXIT_FAILURE = 1  # unexpected internal error (a bug): traceback printed
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_BAD_INPUT = 3  # input image/dataset/workbook refused
EXIT_BAD_MODEL = 4  # model folder missing, manifest or sha256 mismatch, incompatible weights
EXIT_OUTPUT = 5  # output folder not writable, or outputs exist without --overwrite
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: nothing was written
EXIT_PIPE = 141  # standard output closed by its reader (128 + SIGPIPE, as a Unix tool killed by it)


class MaleniaError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = EXIT_FAILURE


class InputError(MaleniaError):
    exit_code = EXIT_BAD_INPUT


class ModelError(MaleniaError):
    exit_code = EXIT_BAD_MODEL


class OutputError(MaleniaError):
    exit_code = EXIT_OUTPUT
