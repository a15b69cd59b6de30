"""The ``sepkit`` command line (also ``python -m sepkit``).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``. :mod:`sepkit.cli.train` is not a subcommand: it is
``python -m sepkit.train CONFIG``, the config-file runner for ``torchrun``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import warnings

from .._version import __version__
from ._common import OneLineParser, Terminated, sigterm_unwinds

# Subcommand modules, in the order ``sepkit --help`` lists them.
_SUBCOMMANDS = ("demo", "separate", "fit", "evaluate", "models", "recipes", "fit_batch")

# User errors print one line and exit with this code; tracebacks need --debug.
EXIT_USER_ERROR = 2
# Output piped into a reader that stopped (`| head`): 128 + SIGPIPE, as the shell reports.
EXIT_BROKEN_PIPE = 141
# Stopped by Ctrl-C or by SIGTERM (`kill`, a batch scheduler, `timeout`): 128 + the signal.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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
    "decim": "--decim",
    "tstep": "--tstep",
    "random_state": "--seed",
}
_SWITCHES = {"overwrite": "--force", "resample": "--resample"}  # name=True -> option
_QUOTED = re.compile(r"'(" + "|".join(_OPTIONS) + r")'")
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
    >>> command_line_phrasing("Pass highpass=None and lowpass=None, or domain='time'.")
    'Pass no --highpass and no --lowpass, or --domain time.'
    >>> command_line_phrasing("pass ch_name=['Fp1', 'Fp2'] instead.")
    'pass --eog-channels Fp1,Fp2 instead.'
    """

    def option(match: re.Match) -> str:
        if match.group(4):
            return _SWITCHES[match.group(4)]
        value = match.group(3) if match.group(3) is not None else match.group(2)
        return f"{_OPTIONS[match.group(1)]} {value}"

    # find_bads_eog's reference channels: --eog-channels of ``separate --exclude eog``,
    # which takes comma-separated names.
    message = re.sub(
        r"ch_name=\[([^\]]*)\]",
        lambda m: "--eog-channels " + ",".join(n.strip(" '\"") for n in m.group(1).split(",")),
        message,
    )
    message = message.replace("'ch_name'", "--eog-channels").replace("ch_name= ", "ch_name=")
    message = message.replace("ch_name=", "--eog-channels ")
    for python, command_line in _ADVICE:
        message = message.replace(python, command_line)
    # A family's own settings (fit_params) have no option: say what the command line does.
    message = re.sub(
        r"; the '(\w+)' family's own (.+?) go in fit_params=\{[^}]*\}",
        r"; the command line keeps the '\1' family's own \2 at their defaults (fit_params "
        r"in Python sets them)",
        message,
    )
    message = re.sub(r"\bn_sources <= (\d+)", r"--n-sources \1 or fewer", message)
    # tf_pretrained's resampling note names the estimator's X and source_model.
    message = re.sub(
        r"\bX is at (\S+) Hz and source_model '([^']*)' at (\S+) Hz: X is resampled",
        r"The input is at \1 Hz and --source-model \2 at \3 Hz: it is resampled",
        message,
    )
    message = re.sub(
        r"IVAESeparator\(n_sources=k, source_model='([^']*)'\)\.fit\(recording\)",
        r"--n-sources K --source-model \1 in place of --model",
        message,
    )
    # A setting named in quotes ("'highpass' must be > 0.0") is its option.
    message = _QUOTED.sub(lambda m: _OPTIONS[m.group(1)], message)
    # n_sources=None is --n-sources all on the command line.
    return _KEYWORD.sub(option, message).replace("--n-sources None", "--n-sources all")


# Library advice that has no option of its own, as a command-line user can follow it.
_ADVICE = (
    ("highpass=None", "no --highpass"),
    ("lowpass=None", "no --lowpass"),
    ("source_model=None", "no --source-model"),
    ("decim=None", "no --decim"),
    (
        "For an MNE ICA file of a linear separator, save its export: sep.to_mne_ica().save(path).",
        "For an MNE ICA file, pass sepkit separate ... --save-ica NAME-ica.fif.",
    ),
    (
        "Pass reject=dict(eeg=...) or flat=..., or drop tstep.",
        "Pass --reject eeg=... or --flat ..., or drop --tstep.",
    ),
    (
        "reject and flat need the channel types of an MNE Raw, but X is a Recording. Pass "
        "the Raw, or leave the stretches to reject out yourself (X[:, keep]).",
        "--reject and --flat judge EEG channels by type; this input is audio. Drop them.",
    ),
    (
        "Drop the key, or pick those channels (picks=...).",
        "Drop the key (the command line fits the EEG channels).",
    ),
    (
        "; drop them before fitting.",
        "; leave them out (audio: --channels with the indices of the others; EEG: mark "
        "them bad in the file, raw.info['bads'] with MNE).",
    ),
    ("reject has the key", "--reject has the key"),
    # A file is never transposed; more channels than samples means it is too short.
    (
        "X must be (n_channels, n_times); if yours is (n_times, n_channels), pass X.T (in a "
        "scikit-learn pipeline, use sepkit.dropin_sklearn.IVAETransformer, which takes "
        "(n_samples, n_features)).",
        "The file is too short to separate: give a recording with more samples than channels.",
    ),
    (
        "fewer n_sources, or choose the windows yourself with window= (seconds) or "
        "window_samples=.",
        "fewer --n-sources, or choose the windows yourself with --window (seconds).",
    ),
    ("or window=None for the default.", "or no --window for the default."),
    ("Use longer windows or fewer n_sources.", "Use a longer --window or fewer --n-sources."),
    ("flat has the key", "--flat has the key"),
    # The command line reads every data channel of the file; choosing is done in the file.
    ("(for an MNE Raw, picks=[...] selects them)", "(keep only those channels in the file)"),
    ("(picks=[...] for an MNE Raw)", "(keep only those channels in the file)"),
    (
        "Mark them bad with sepkit.io.mark_bad_channels(raw) (or add them to raw.info['bads']), "
        "then drop them or interpolate with raw.interpolate_bads().",
        "Drop or interpolate those channels in the file (e.g. with MNE: mark them in "
        "raw.info['bads'], then raw.drop_channels or raw.interpolate_bads, and save it).",
    ),
    (
        "Pass resample=True to transform, or resample it first (raw.resample before "
        "get_sources or apply).",
        "Pass --resample, or resample the file first.",
    ),
    (
        "Set a montage (raw.set_montage('standard_1020')) for the pattern criteria.",
        "Save the recording with a montage (with MNE: raw.set_montage('standard_1020'), "
        "then raw.save) for the pattern criteria.",
    ),
    (
        "or mark them bad (raw.info['bads']) to score the frontal channels instead.",
        "or mark them bad in the file (with MNE: raw.info['bads'], then raw.save) to score "
        "the frontal channels instead.",
    ),
)


def _show_warning(command: str):
    """A ``warnings.showwarning`` that prints one line per warning, no source line.

    A warning already printed in this run is not printed again (e.g. MNE's
    file-naming warning, raised each time a file is opened).
    """
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = command_line_phrasing(str(message))
        if text in shown:
            return
        shown.add(text)
        print(f"sepkit {command}: warning: {text}", file=sys.stderr if file is None else file)

    return show


# reST markup of the module docstrings that serve as help text: ``code`` and
# :role:`target`. Help shows both as `code`, the way terminal help quotes code.
_MARKUP = re.compile(r"``(.+?)``|:[a-z]+:`~?([^`]+)`", re.S)


def plain_help(text: str | None) -> str | None:
    """``text`` with its reST inline markup written as plain `code`, for ``--help``.

    >>> plain_help("``sepkit fit``: see :func:`sepkit.io.read_eeg`.")
    '`sepkit fit`: see `sepkit.io.read_eeg`.'
    """
    if text is None:
        return None
    return _MARKUP.sub(lambda m: f"`{m.group(1) or m.group(2)}`", text)


def _plain_parser(parser: argparse.ArgumentParser) -> None:
    """Remove reST markup from a parser's description and help, and its subparsers'."""
    parser.description = plain_help(parser.description)
    parser.epilog = plain_help(parser.epilog)
    for action in parser._actions:
        action.help = plain_help(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the one-line help of each subcommand
                choice.help = plain_help(choice.help)
            for sub in action.choices.values():
                _plain_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``sepkit`` parser with every subcommand.

    The subcommand modules import only the standard library and sepkit's
    light modules at import time (torch, MNE and the estimator inside their
    ``run``), so that ``sepkit --help`` and ``sepkit CMD --help`` start fast.
    """
    parser = OneLineParser(
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
    _plain_parser(parser)
    return parser


def console_main() -> int:
    """The ``sepkit`` command (and ``python -m sepkit``): :func:`main`, whose status stands.

    Once ``main`` returns, its outputs are complete (or untouched); Ctrl-C or
    SIGTERM during the interpreter's teardown (torch's takes up to a second)
    is ignored, so that it cannot turn a finished run's status into 130 / 143
    (audit: a script read 143 and took the old outputs to be still there).
    """
    code = main()
    for received in (signal.SIGINT, signal.SIGTERM):
        signal.signal(received, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        with sigterm_unwinds(), warnings.catch_warnings():
            if not args.debug:  # --debug keeps Python's format, with the source line
                warnings.showwarning = _show_warning(args.command)
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a reader that went away shows here, not at exit
            return code
    except BrokenPipeError:
        # The reader went away (`sepkit models list | head -1`): stop quietly, as Unix
        # tools do, with the shell's status for SIGPIPE; stdout goes to devnull so that
        # Python's flush at exit does not fail on the closed pipe again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no file descriptor (captured output)
            pass
        return EXIT_BROKEN_PIPE
    # OSError covers what a user causes on disk (a full disk, a read-only folder,
    # a folder where a file goes); BrokenPipeError, one of them, is handled above.
    # FloatingPointError: an exact-likelihood fit whose likelihood is not finite
    # (flat or extreme channels).
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as err:
        if args.debug:
            raise
        print(f"sepkit {args.command}: error: {command_line_phrasing(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print("sepkit: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("sepkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
