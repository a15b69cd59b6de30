"""The ``sepkit`` command line (also ``python -m sepkit``).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

# Subcommand modules, in the order ``sepkit --help`` lists them.
_SUBCOMMANDS = ("demo", "separate", "fit", "evaluate", "models", "recipes", "fit_batch")

# User errors print one line and exit with this code; tracebacks need --debug.
EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sepkit",
        description="Identifiable VAE (iVAE) source separation for multichannel audio and EEG.",
    )
    parser.add_argument("--version", action="version", version=f"sepkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = module.add_parser(sub)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        if args.debug:
            raise
        print(f"sepkit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("sepkit: interrupted", file=sys.stderr)
        return 130
