"""Subcommands of `malenia`; each module defines register(subparsers) (see malenia/cli.py)."""
