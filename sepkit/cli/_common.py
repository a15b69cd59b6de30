"""Helpers shared by the subcommands: inputs, output targets, messages."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .._atomic import atomic_write
from .._check import MAX_SEED
from ..methods import MIXINGS

# The user errors that name no file (the estimator's checks say "X ..."), which
# :func:`naming_input` prefixes with the input's name.
_UNNAMED_ERRORS = (ValueError, TypeError, RuntimeError, FloatingPointError)


@contextmanager
def naming_input(path: Path):
    """Prefix a user error raised inside with ``path``'s name, so a run of many inputs says which.

    The estimator words its checks for Python (``X is silent ...``,
    ``Recording data contains ...``, ``The Raw lacks ...``); a command-line
    user gave a file, so the message names it and says "the recording". An
    error that already names the file, and an exception type of its own
    (whose constructor may take other arguments), pass unchanged.
    """
    try:
        yield
    except _UNNAMED_ERRORS as err:
        message = str(err)
        if type(err) not in _UNNAMED_ERRORS or path.name in message:
            raise
        message = re.sub(r"^(X|Recording data|The Raw) ", "the recording ", message)
        message = re.sub(r"\b(of|in) X\b", r"\1 the recording", message)
        raise type(err)(f"{path.name}: {message}") from err


def add_common(p) -> None:
    """--quiet and --force, which every writing subcommand takes."""
    p.add_argument("--quiet", action="store_true", help="print only results and errors")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_model_options(p, *, tf_note: str = "") -> None:
    """--domain, --mixing, --highpass, --lowpass, --prior: the separator's options of those names.

    Used by fit, separate and fit-batch.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    tf_note : str, default ""
        Said in the help after "rooms" for tf (fit-batch: "--steps does not apply").
    """
    rooms = f"rooms; {tf_note}" if tf_note else "rooms"
    p.add_argument(
        "--domain",
        choices=("auto", "time", "tf"),
        default="auto",
        help="time: iVAE on samples (instantaneous mixing, EEG); tf: convolutive audio "
        f"({rooms}); auto: for audio files tf when the channels' cross-spectra show "
        "delays (a room), time when they are real (an instantaneous mix); time "
        "otherwise (default: %(default)s)",
    )
    p.add_argument(
        "--mixing",
        choices=("auto", *MIXINGS),
        default="auto",
        help="linear: the linear iVAE fitted by exact maximum likelihood (seconds, no "
        "network; --steps does not apply); post-nonlinear: the same behind a learned "
        "per-sensor nonlinearity (saturating amplifiers); nonlinear: the convolutional "
        "network (ELBO); flow: an invertible network fitted by exact maximum likelihood "
        "(as many sources as channels; --steps does not apply); auto: linear for EEG and "
        "for audio without a room (post-nonlinear where the sensors clip: EEG with "
        "--highpass/--lowpass, or such audio), the tf domain for audio in a room, and "
        "for other data flow (as many sources as channels) or nonlinear (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--highpass",
        type=float,
        default=None,
        metavar="HZ",
        help="fit on a copy high-passed at HZ (separation then applies to the file as it "
        "is, as MNE's ICA); with --mixing post-nonlinear (or auto on clipping EEG) the "
        "filter acts after the learned unwarping, so give it the unfiltered recording "
        "(default: no filter)",
    )
    p.add_argument(
        "--lowpass",
        type=float,
        default=None,
        metavar="HZ",
        help="low-pass edge of the same fit filter (with --highpass: a band-pass)",
    )
    p.add_argument(
        "--prior",
        choices=("auto", "gauss", "laplace", "extended", "gengauss"),
        default="auto",
        help="p(z|u): extended and gengauss give the linear models a non-Gaussian shape "
        "per source, which also separates sources whose variance hardly changes (ECG, "
        "line noise); extended (super- or sub-Gaussian per source) costs about as much "
        "as gauss, gengauss (a learned shape) about a minute per 10 min recording; "
        "laplace is for the network; auto: extended for EEG and gauss otherwise with "
        "the linear models, Laplace (EEG) or Gaussian for the network "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--source-model",
        default=None,
        metavar="NAME",
        help="separate reverberant audio with a pretrained speech source model (a name "
        "from `sepkit models list` of kind source_model, e.g. ivae-speech-16k-v1, or its "
        "folder); only the demixing is fitted. Other sample rates are resampled to the "
        "model's and back (default: none)",
    )


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), like the
    command's other user errors, instead of the whole usage block before the line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def n_sources_arg(text: str):
    """``--n-sources``: a count (int >= 1), a share of variance in (0, 1), or "all" (MNE's None).

    The share and "all" are MNE's ICA(n_components=0.99 / None); the count they
    stand for is taken at fit (``IVAESeparator.n_sources_``).
    """
    value = text.strip().lower()
    try:
        if value == "all":
            return value
        if value.isdigit() and int(value) >= 1:
            return int(value)
        share = float(value)
        if 0.0 < share < 1.0:
            return share
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"takes a number of sources (e.g. 15), a share of the variance between 0 and 1 (e.g. "
        f"0.99: the principal components that hold it, as MNE's n_components) or 'all' (every "
        f"dimension the data hold), got {text!r}"
    )


def n_sources_value(arg):
    """``--n-sources`` as IVAESeparator's ``n_sources``: "all" is None."""
    return None if arg == "all" else arg


def n_sources_phrase(arg) -> str:
    """``--n-sources`` for a progress line: "15 sources", "the sources of 99 % of the variance"."""
    if arg == "all":
        return "a source per dimension of the data"
    if isinstance(arg, float):
        return f"the sources of {100 * arg:g} % of the variance"
    return f"{arg} sources"


def add_sample_options(p) -> None:
    """--decim, --reject, --flat, --tstep: ``IVAESeparator.fit``'s (and ``ICA.fit``'s) arguments."""
    p.add_argument(
        "--decim",
        type=int,
        default=None,
        metavar="N",
        help="fit the unmixing on every N-th sample only, as MNE's ICA.fit(decim=N) (the "
        "linear families, the EEG default; the whitening sees every sample)",
    )
    p.add_argument(
        "--reject",
        default=None,
        metavar="TYPE=V,...",
        help="EEG: leave out of the fit each --tstep stretch where a channel of TYPE spans "
        "more than V peak to peak (volts: eeg=150e-6), as ICA.fit(reject=...); a file of "
        "Epochs: each such epoch, as epochs.drop_bad(reject=...)",
    )
    p.add_argument(
        "--flat",
        default=None,
        metavar="TYPE=V,...",
        help="EEG: likewise each stretch where a channel of TYPE spans less than V",
    )
    p.add_argument(
        "--tstep",
        type=float,
        default=TSTEP_DEFAULT,
        metavar="S",
        help="seconds per stretch that --reject and --flat judge (default: %(default)s)",
    )


# --tstep's default, as fit's (MNE's ICA.fit's) tstep.
TSTEP_DEFAULT = 2.0


def parse_thresholds(text: str | None, option: str) -> dict | None:
    """``--reject`` / ``--flat``: ``"eeg=150e-6,eog=250e-6"`` -> ``{"eeg": 1.5e-4, "eog": 2.5e-4}``."""
    if text is None:
        return None
    thresholds = {}
    for item in text.split(","):
        kind, _, value = item.partition("=")
        try:
            thresholds[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(
                f"{option} takes TYPE=VOLTS pairs separated by commas (e.g. {option} "
                f"eeg=150e-6,eog=250e-6), got {text!r}."
            ) from None
    return thresholds


def fit_sample_kwargs(args) -> dict:
    """The keyword arguments of ``fit`` from :func:`add_sample_options`' options.

    Called once before any input is read, so that a malformed option stops
    the run before any work.
    """
    if args.decim is not None and args.decim < 1:
        raise ValueError(f"--decim must be >= 1 (fit on every N-th sample), got {args.decim}.")
    return dict(
        decim=args.decim,
        reject=parse_thresholds(args.reject, "--reject"),
        flat=parse_thresholds(args.flat, "--flat"),
        tstep=args.tstep,
    )


def sample_line(name: str, info: dict, args, X) -> str | None:
    """``NAME: fitted on N of M samples (--decim 3, --reject eeg=0.00015)``, or None.

    Said when --decim, --reject or --flat was given: how much of the
    recording the fit kept (``X``: what was fitted; a streamed input's excerpt).
    """
    given = [
        f"--{key} {getattr(args, key)}"
        for key in ("decim", "reject", "flat")
        if getattr(args, key, None) is not None
    ]
    n_fitted = info.get("n_samples_fitted")
    if not given or n_fitted is None:
        return None
    if hasattr(X, "n_times"):  # a Raw
        total = X.n_times
    elif hasattr(X, "get_data"):  # Epochs, fitted end to end
        total = len(X) * len(X.times)
    else:  # a Recording
        total = X.data.shape[1]
    return f"{name}: fitted on {n_fitted} of {total} samples ({', '.join(given)})"


def drop_bad_epochs(args, name: str, X, sample_kwargs: dict) -> tuple:
    """(what to fit, fit's keyword arguments): for Epochs, --reject / --flat drop whole epochs.

    fit's own ``reject`` / ``flat`` judge stretches of a Raw; for Epochs the
    command line drops the epochs ``drop_bad`` refuses, as MNE users do, and
    fits the rest without them. The sources and cleaned epochs are still
    written for every epoch. Any other input comes back as it is.
    """
    from ..io.raw import is_epochs_or_evoked

    reject, flat = sample_kwargs["reject"], sample_kwargs["flat"]
    if not is_epochs_or_evoked(X) or (reject is None and flat is None):
        return X, sample_kwargs
    if sample_kwargs.get("tstep", TSTEP_DEFAULT) != TSTEP_DEFAULT:
        # Audit: the library's error then said that neither --reject nor --flat was given.
        raise ValueError(
            f"--tstep sets the stretches of a continuous recording that --reject / --flat "
            f"judge, but {name} holds Epochs, each judged whole. Drop --tstep."
        )
    kept = X.copy().drop_bad(reject=reject, flat=flat, verbose="error")
    if len(kept) == 0:
        raise ValueError(
            f"--reject / --flat dropped every one of the {len(X)} epochs, so nothing is "
            "left to fit. Check the thresholds' unit (volts for EEG: 150e-6 is 150 uV)."
        )
    say(args, f"{name}: fitting on {len(kept)} of {len(X)} epochs (--reject/--flat)")
    return kept, dict(sample_kwargs, reject=None, flat=None)


def warn_given_unused(args, sep) -> None:
    """Say that --steps / --window / --lr, given, are unused by the family that was fitted.

    The estimator reports a setting changed from its default that the family
    ignores; one given at its default value (``--steps 5000``) it cannot tell
    from none (audit: dropped without a word).
    """
    import warnings

    from ..methods import load_family
    from ..separator import _constructor_defaults

    reads = load_family(sep.family_).PARAMS
    defaults = _constructor_defaults()
    for option, name in (("steps", "n_steps"), ("window", "window"), ("lr", "lr")):
        value = getattr(args, option, None)
        if value is not None and name not in reads and value == defaults[name]:
            warnings.warn(
                f"--{option} {value:g}: not used by the {sep.family_!r} model family that "
                "this fit chose; it is ignored.",
                UserWarning,
                stacklevel=2,
            )


# The options of add_model_options: the model a new fit builds. A model given to
# start from (--model, --init) keeps its own, so they are refused beside it.
MODEL_OPTIONS = ("domain", "mixing", "highpass", "lowpass", "prior", "source_model")


def remember_defaults(p, dests) -> None:
    """Keep the parser's defaults of ``dests`` on the parsed args (see :func:`given_options`)."""
    p.set_defaults(option_defaults={dest: p.get_default(dest) for dest in dests})


def given_options(args, dests) -> list[str]:
    """The options among ``dests`` given on the command line (set off their defaults)."""
    return [
        "--" + dest.replace("_", "-")
        for dest in dests
        if getattr(args, dest) != args.option_defaults[dest]
    ]


def check_kept_model(args, option: str, model: str) -> None:
    """Refuse model options beside ``option`` (--model, --init), whose model keeps its own."""
    given = given_options(args, MODEL_OPTIONS)
    if given:
        raise ValueError(
            f"{', '.join(given)} {'choose' if len(given) > 1 else 'chooses'} the model a new "
            f"fit builds, but {option} {model} keeps its own settings. Drop "
            f"{'them' if len(given) > 1 else 'it'}, or fit a new separator with "
            "--n-sources K."
        )


def load_model(spec: str, device: str = "cpu"):
    """A pretrained name/folder, or a .safetensors file written by save/``sepkit fit``."""
    from ..separator import IVAESeparator

    path = Path(spec)
    if path.suffix == ".safetensors":
        return IVAESeparator.load(path, device=device)
    return IVAESeparator.from_pretrained(spec, device=device)


def model_options(args) -> dict:
    """IVAESeparator keyword arguments from the options of :func:`add_model_options`."""
    return dict(
        domain=args.domain,
        mixing=args.mixing,
        highpass=args.highpass,
        lowpass=args.lowpass,
        prior=args.prior,
        source_model=args.source_model,
    )


def say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def show_progress(args) -> bool:
    """Progress bars only on an interactive terminal and without --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def check_targets(paths, force: bool, reads=()) -> None:
    """Refuse, before any work, to overwrite existing outputs without --force.

    A folder where an output file goes is refused with or without --force, and
    so is an output that is one of the files this run reads (``reads``: its
    inputs, a --model file): --force replaces outputs, never an input.
    """
    read = {os.path.realpath(p): p for p in reads}
    clash = [(p, read[os.path.realpath(p)]) for p in paths if os.path.realpath(p) in read]
    if clash:
        target, source = clash[0]
        raise ValueError(
            f"the output {target} would replace {source}, which this run reads. Choose "
            "another output folder (-o), or rename that file."
        )
    folders = [str(p) for p in paths if Path(p).is_dir()]
    if folders:
        raise ValueError(
            f"{folders[0]} is a folder, but the output file of that name goes there. Remove or "
            "rename the folder, or choose another output name."
        )
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"output(s) exist: {', '.join(existing[:3])}{more}. Pass --force to overwrite "
            "them, or choose another output folder."
        )


def make_output_folder(path) -> list[Path]:
    """Make ``path`` and its missing parents; return the folders made, deepest first.

    Pass the list to :func:`remove_empty_folders` when a run fails before it
    writes anything, so that it leaves no empty folder behind.
    """
    path = Path(path)
    made = []
    folder = path
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        remove_empty_folders(made)
        raise RuntimeError(
            f"cannot create the output folder {path}: {err.strerror or err}. Choose a folder "
            "you can write to."
        ) from err
    return made


def check_writable(folder, what: str = "-o", *, shown=None) -> None:
    """Refuse, before any work, an output folder that cannot be written.

    ``folder`` need not exist yet: then its nearest existing parent is tried
    (where it would be made). The check makes and removes an empty hidden
    folder there, the one test that also holds for read-only file systems,
    ACLs and root. The message names ``what`` (the option, ``"-o"``) and
    ``shown`` (its value; default ``folder``).
    """
    folder = Path(folder)
    said = f"{what} {folder if shown is None else shown}"
    probe = folder
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{said}: {probe} is a file, not a folder. Choose another output folder.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sepkit-write-check.", dir=probe))
    except OSError as err:
        raise RuntimeError(
            f"cannot write into {probe} ({said}): {err.strerror or err}. Choose a "
            "folder you can write to, or make it writable; nothing was done."
        ) from err


def remove_empty_folders(made: list[Path]) -> None:
    """Remove the folders :func:`make_output_folder` made, as far as they are empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (a run wrote there), or already gone
            return


def write_json(obj, path: Path) -> Path:
    """Atomic JSON write (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=float)
        f.write("\n")
    return path


def check_input_file(path) -> str:
    """Refuse a missing, folder or empty input before any work; return its kind."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"input {path} is a folder, not a recording file. Pass the recording file(s) in "
            f"it, e.g. {path}/*.wav."
        )
    kind = input_kind(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist.")
    if not path.is_file():
        raise ValueError(
            f"input {path} is not a regular file (a FIFO, socket or device); recordings are "
            "read from files. Save the stream to a file first."
        )
    if path.stat().st_size == 0:
        raise ValueError(
            f"input {path} is empty (0 bytes). It was probably not written completely; "
            "re-export or re-copy it."
        )
    return kind


def input_kind(path: Path) -> str:
    """'audio' or 'eeg' from the suffix; a clear error otherwise."""
    from ..io import AUDIO_EXTENSIONS, SUPPORTED_EEG_EXTENSIONS

    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in SUPPORTED_EEG_EXTENSIONS or path.name.lower().endswith(".fif.gz"):
        return "eeg"
    raise ValueError(
        f"{path}: unknown file type {suffix!r}. Audio: {', '.join(AUDIO_EXTENSIONS)}; EEG: "
        f"{', '.join(SUPPORTED_EEG_EXTENSIONS)}."
    )


def add_channels_option(p) -> None:
    """--channels: the audio channels (microphones) to read."""
    p.add_argument(
        "--channels",
        type=channels_arg,
        default=None,
        metavar="I,I",
        help="audio: read only these channels, by index from 0 in the file's order (e.g. "
        "0,2,3 to leave out a dead microphone); EEG: mark channels bad in the file instead "
        "(info['bads']), as MNE does (default: every channel)",
    )


def seed_arg(text: str) -> int:
    """--seed: a whole number from 0 to 2**63 - 1 (torch's seeds are signed 64-bit)."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"takes a seed, a whole number from 0 to 2**63 - 1, got {text!r}"
        )
    return seed


def channels_arg(text: str) -> list[int]:
    """--channels I,I,...: channel indices from 0."""
    try:
        indices = [int(k) for k in text.split(",")]
    except ValueError:
        indices = []
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(
            f"takes audio channel indices from 0, separated by commas (e.g. 0,2), got {text!r}"
        )
    return indices


def check_channels_input(path, kind: str, channels) -> None:
    """Refuse --channels for an EEG input."""
    if channels is not None and kind != "audio":
        raise ValueError(
            f"--channels picks audio channels by index, but {Path(path).name} is EEG. Drop "
            "--channels, and mark the channels to leave out as bad in the file "
            "(raw.info['bads'] = [...]; raw.save), as MNE does."
        )


def read_input(
    path, *, eeg_picks="eeg", epochs: bool = False, audio_channels=None
) -> tuple[object, str]:
    """(Recording, Raw or Epochs, kind) for an audio or EEG file.

    ``eeg_picks``: the channels of an EEG file to read (``read_eeg``'s picks;
    None for every data channel, e.g. to keep the EOG leads beside the EEG).
    ``epochs``: the file holds MNE Epochs (the caller asked
    :func:`sepkit.io.is_epochs_file`), read as Epochs with every channel.
    ``audio_channels``: --channels, the indices of an audio file's channels to
    read (None: all); refused for EEG.
    """
    path = Path(path)
    kind = check_input_file(path)
    check_channels_input(path, kind, audio_channels)
    from ..io import read_audio, read_eeg, read_epochs

    try:
        if kind == "audio":
            return read_audio(path, channels=audio_channels), kind
        if epochs:
            return read_epochs(path), kind
        return read_eeg(path, picks=eeg_picks), kind
    except (ValueError, TypeError, FileNotFoundError, RuntimeError):
        raise  # sepkit's, MNE's and libsndfile's messages, one line each
    except OSError as err:  # permissions, an unreadable disk
        raise RuntimeError(
            f"cannot read input {path}: {err.strerror or err}. Check the file and its permissions."
        ) from err
    except Exception as err:  # a reader's own error types (scipy's MatReadError, ...)
        raise ValueError(
            f"cannot read {path} as {'an audio' if kind == 'audio' else 'an EEG'} recording "
            f"({type(err).__name__}: {err}). Check that the file is complete and in the "
            "format its suffix says; re-export or re-copy it."
        ) from err


def stem_of(path) -> str:
    """The stem outputs are named after (:func:`sepkit.io.recording.recording_stem`)."""
    # Imported here: sepkit.io loads soundfile and MNE, which `sepkit --help` must not.
    from ..io.recording import recording_stem

    return recording_stem(path)


def describe_model(sep) -> dict:
    """Which model ran, for the metrics JSON: ``fitted_.describe()`` and the unwarping score.

    ``family``, ``domain``, ``mixing``, ``prior``, ``unwarped`` (the sensor
    unwarping kept); ``sensor_nonlinearity_max``: the largest
    ``sensor_nonlinearity_`` where the unwarping was fitted (why
    ``mixing="auto"`` kept or dropped it), else None; ``n_samples_fitted``
    (``n_samples_``: after BAD annotations, --reject / --flat and --decim;
    None for a model fitted on an array, or loaded from a file saved before it
    was kept) and ``reject``.
    """
    values = getattr(sep, "sensor_nonlinearity_", None)
    n_samples = getattr(sep, "n_samples_", None)
    return dict(
        sep.fitted_.describe(),
        sensor_nonlinearity_max=None if values is None else float(values.max()),
        n_samples_fitted=None if n_samples is None else int(n_samples),
        reject=getattr(sep, "reject_", None),
    )


def model_line(name: str, described: dict) -> str:
    """One console line saying which model ran on ``name``."""
    kept = "kept" if described["unwarped"] else "not kept"
    line = (
        f"{name}: {described['family']} family, {described['domain']} domain, mixing "
        f"{described['mixing']}, prior {described['prior']}, sensor unwarping {kept}"
    )
    # domain="auto" may pick a pretrained source model for a room: say which one ran.
    if described.get("source_model"):
        line += f", source model {described['source_model']}"
    if described.get("postfilter"):  # the time-frequency families' soft-mask blend
        line += f", post-filter {described['postfilter']:g}"
    return line


# --------------------------------------------------------------- output sets
# The output set of one input (model, sources, metrics, figures, cleaned data)
# is written into a hidden staging folder beside its targets,
# ".STEM.<pid>-<token>.partial", and moved into place only once complete. A
# failure, Ctrl-C or full disk before that leaves the earlier outputs as they
# were; a SIGKILL leaves only the staging folder, which the next run removes.
_STAGING = re.compile(r"\.(?P<stem>.+)\.(?P<pid>\d+)-[0-9a-f]+\.partial")
# sepkit._atomic.atomic_write's temp names: ".TARGET.<random>SUFFIX".
_TEMP = r"\.(?P<target>{names})\.[A-Za-z0-9_]+(\.tmp|_raw\.fif|_raw\.fif\.gz|\.png)"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():  # a staging folder never outlives its run: ours are gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def remove_debris(folder, stem: str, names: re.Pattern) -> list[str]:
    """Remove what killed runs left in ``folder`` for ``stem``; return the names removed.

    That is staging folders of ``stem`` whose process is gone, and the temp
    files of :func:`sepkit._atomic.atomic_write` for outputs whose names
    ``names`` matches (earlier versions wrote beside the targets).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    temp = re.compile(_TEMP.format(names=names.pattern))
    removed = []
    for entry in os.scandir(folder):
        staging = _STAGING.fullmatch(entry.name)
        if staging and staging["stem"] == stem and entry.is_dir(follow_symlinks=False):
            if not _pid_alive(int(staging["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        elif temp.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.remove(entry.path)
            removed.append(entry.name)
    return removed


def existing_outputs(folder, names: re.Pattern, keep=()) -> list[Path]:
    """The files in ``folder`` whose names ``names`` matches (an earlier set), less ``keep``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    keep = {os.path.realpath(p) for p in keep}
    return sorted(
        folder / e.name
        for e in os.scandir(folder)
        if names.fullmatch(e.name) and os.path.realpath(e.path) not in keep
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as after Ctrl-C.

    A subclass of :class:`KeyboardInterrupt`: every ``except KeyboardInterrupt``
    and ``finally`` that removes a half-written output set (:class:`OutputSet`)
    runs for it too. Python's default for SIGTERM (`kill`, `timeout`, a batch
    scheduler) is to die at once, which left a new output folder behind, empty.
    """


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def sigterm_unwinds():
    """While inside, SIGTERM raises :class:`Terminated` (main thread, default handler only)."""
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if install:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _signals_deferred():
    """Hold Ctrl-C and SIGTERM back for the few renames of a commit, then deliver them.

    SIGTERM is held only where :func:`sigterm_unwinds` made it an exception;
    otherwise it keeps its handler (a default SIGTERM ends the process anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can hold signals
        return
    # A handler set outside Python (not callable) stays as it is.
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if callable(signal.getsignal(s))]
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if signal.SIGTERM in caught:
        raise Terminated
    if caught:
        raise KeyboardInterrupt


class OutputSet:
    """The output files of one input, written together or not at all.

    Write every file of the set into :attr:`path` (a hidden staging folder in
    ``folder``). When the ``with`` block ends normally, each file is moved
    into ``folder`` with one rename (new files first, then the ones it
    replaces), the files of the earlier set that this one does not write are
    removed, and the staging folder goes. When the block raises (a failed fit
    or write, Ctrl-C, a full disk), the staging folder is removed and nothing
    in ``folder`` has changed.

    Parameters
    ----------
    folder : Path
        Where the outputs go; it must exist.
    stem : str
        Names the staging folder (``.STEM.<pid>-<token>.partial``).
    names : re.Pattern
        Matches the file names of a whole output set of ``stem`` (this run's
        and any earlier run's): the earlier set's files, and atomic-write
        temp files of those names left by killed runs, are recognised by it.
    keep : sequence of path-like
        Files never removed as part of the earlier set (this run's inputs).
    what : str
        Names the set in an error message ("the outputs of rec.wav").
    """

    def __init__(self, folder, stem: str, names: re.Pattern, *, keep=(), what: str = ""):
        self.folder, self.stem, self.names = Path(folder), stem, names
        self.keep, self.what = tuple(keep), what or f"the outputs of {stem}"
        self.path = self.folder / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        self.replaced: list[Path] = []
        self.moved = 0

    def __enter__(self) -> OutputSet:
        remove_debris(self.folder, self.stem, self.names)
        try:
            self.path.mkdir()
        except OSError as err:
            raise self._write_error(err) from err
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            try:
                self._commit()
            except BaseException as failed:
                shutil.rmtree(self.path, ignore_errors=True)
                if isinstance(failed, OSError):
                    raise self._write_error(failed) from failed
                raise
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if isinstance(err, OSError) or _is_sndfile_error(err):  # the block only writes
            raise self._write_error(err) from err

    def _write_error(self, err: Exception) -> RuntimeError:
        full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some space" if full else "check the folder and its permissions"
        if _is_sndfile_error(err):  # libsndfile says only "System error."
            fix = "check the free space, any file-size limit (ulimit -f) and the permissions"
        said = str(getattr(err, "strerror", None) or err).rstrip(".")
        if self.moved:  # a rename failed half-way through the commit (rare)
            done = f"{self.moved} of its files were already moved into place"
            return RuntimeError(
                f"could not move {self.what} into {self.folder}: {said}; "
                f"{done}. {fix.capitalize()}, then run the command again with --force."
            )
        return RuntimeError(
            f"could not write {self.what} in {self.folder}: {said}. No output "
            f"was changed; {fix}, then run the command again."
        )

    def _commit(self) -> None:
        staged = sorted(Path(e.path) for e in os.scandir(self.path) if e.is_file())
        new = [p for p in staged if not os.path.lexists(self.folder / p.name)]
        written = {p.name for p in staged}
        earlier = [
            p for p in existing_outputs(self.folder, self.names, self.keep) if p.name not in written
        ]
        with _signals_deferred():
            for p in new + [p for p in staged if p not in new]:
                _move_into_place(p, self.folder / p.name)
                self.moved += 1
            for p in earlier:
                p.unlink(missing_ok=True)
            self.path.rmdir()
        self.replaced = earlier


def _is_sndfile_error(err) -> bool:
    """An error of libsndfile's writer (soundfile is not imported here: --help stays light)."""
    return type(err).__name__ == "LibsndfileError"


def _move_into_place(staged: Path, target: Path) -> None:
    """Rename ``staged`` over ``target``: the target's mode kept, a symlink followed."""
    if target.is_symlink():  # replace what it points to, as atomic_write does
        with atomic_write(target) as tmp:
            shutil.copyfile(staged, tmp)
        staged.unlink()
        return
    if target.is_file():
        os.chmod(staged, stat.S_IMODE(target.stat().st_mode))
    os.replace(staged, target)


def check_fine_tune(path, X, init, name: str, option: str) -> None:
    """Refuse, before the fit, a fine-tuning that cannot run, in command-line terms.

    Fine-tuning continues the training of a network model and keeps its
    channels and its number of sources. Without these checks the library
    stops on its own ``init=``/``n_sources`` checks, whose advice (``--mixing
    nonlinear``, ``--n-sources``) cannot be taken together with ``option``.

    Parameters
    ----------
    path : path-like
        The recording, for the message.
    X : Recording or mne.io.Raw
        The recording as read.
    init : IVAESeparator
        The fitted model to fine-tune.
    name : str
        The model as the user named it (``--model``/``--init`` value).
    option : str
        ``"--model"`` (``separate --fine-tune``) or ``"--init"`` (``fit``).
    """
    from ..separator import IVAESeparator

    path = Path(path)
    family = getattr(init, "family_", "network")
    if family != "network":
        mixing = init.fitted_.describe()["mixing"]
        raise ValueError(
            f"{option} {name} is a {family}-family model (mixing {mixing}), which has no "
            "network to fine-tune. Fit a new separator on the recording instead: "
            f"--n-sources {init.n_sources_} in place of {option}"
            + (" and --fine-tune." if option == "--model" else ".")
        )
    if hasattr(X, "info") and init.ch_names_:  # a Raw: the model's channels by name
        IVAESeparator._unpack(X, None, init.ch_names_)
    n_channels = IVAESeparator._unpack(X)[0].shape[0]
    if n_channels != init.n_channels_:
        raise ValueError(
            f"{path.name} has {n_channels} channel(s) but the model {name} was fitted on "
            f"{init.n_channels_}; fine-tuning keeps its channels and its {init.n_sources_} "
            f"sources. Pass a recording with the model's channels, or fit a new separator "
            f"with --n-sources K (K <= {n_channels}) instead of {option}."
        )
