"""The ``sepkit`` command line (also ``python -m sepkit``).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``. :mod:`sepkit.cli.train` is not a subcommand: it is
``python -m sepkit.train CONFIG``, the config-file runner for ``torchrun``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings

from .._version import __version__

# Subcommand modules, in the order ``sepkit --help`` lists them.
_SUBCOMMANDS = ("demo", "separate", "fit", "evaluate", "models", "recipes", "fit_batch")

# User errors print one line and exit with this code; tracebacks need --debug.
EXIT_USER_ERROR = 2


# Library messages give their advice as Python keyword arguments; on the
# command line the same advice is an option. name -> option.
_OPTIONS = {
    "highpass": "--highpass",
    "lowpass": "--lowpass",
    "mixing": "--mixing",
    "prior": "--prior",
    "domain": "--domain",
    "window": "--window",
    "n_steps": "--steps",
    "n_sources": "--n-sources",
}
_SWITCHES = {"overwrite": "--force", "resample": "--resample"}  # name=True -> option
_KEYWORD = re.compile(
    r"\b(" + "|".join(_OPTIONS) + r")=('([^']*)'|-?\w+(?:\.\w+)?)"
    r"|\b(" + "|".join(_SWITCHES) + r")=True\b"
)


def command_line_phrasing(message: str) -> str:
    """``message`` with each ``name=value`` of a command-line option written as the option.

    >>> command_line_phrasing("Fit it with highpass=1 and mixing='linear'.")
    'Fit it with --highpass 1 and --mixing linear.'
    >>> command_line_phrasing("x exists. Pass overwrite=True to replace it.")
    'x exists. Pass --force to replace it.'
    """

    def option(match: re.Match) -> str:
        if match.group(4):
            return _SWITCHES[match.group(4)]
        value = match.group(3) if match.group(3) is not None else match.group(2)
        return f"{_OPTIONS[match.group(1)]} {value}"

    # find_bads_eog's reference channels: --eog-channels of ``separate --exclude eog``.
    message = message.replace("'ch_name'", "--eog-channels").replace("ch_name=", "--eog-channels")
    return _KEYWORD.sub(option, message)


def _show_warning(command: str):
    """A ``warnings.showwarning`` that prints one line per warning, no source line."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = command_line_phrasing(str(message))
        print(f"sepkit {command}: warning: {text}", file=sys.stderr if file is None else file)

    return show


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
        with warnings.catch_warnings():
            if not args.debug:  # --debug keeps Python's format, with the source line
                warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        if args.debug:
            raise
        print(f"sepkit {args.command}: error: {command_line_phrasing(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("sepkit: interrupted", file=sys.stderr)
        return 130
