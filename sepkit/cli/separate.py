"""``sepkit separate``: recordings in, separated sources (and figures) out.

Each input (audio: WAV/FLAC/OGG/...; EEG: any format MNE reads, e.g. .fif,
.edf, .set, .vhdr) is separated on its own, either by a pretrained model
(--model NAME, see ``sepkit models list``, or a .safetensors file written by
``sepkit fit``) or by fitting a new separator with --n-sources K. With
--model and --fine-tune the pretrained model is fine-tuned on each input first.

Outputs in OUTDIR, per input STEM: audio sources as STEM_s1.wav, ... (16-bit
PCM, or the --subtype given);
EEG sources as STEM_sources_raw.fif (for a FIF file of MNE Epochs, fitted on
the epochs end to end as ICA.fit(epochs) does, read whole, not streamed:
STEM_sources_epo.fif, and --exclude writes STEM_cleaned_epo.fif);
STEM_metrics.json (model, steps, times, final -ELBO); a fitted model as
STEM_model.safetensors; with --plots STEM_sources.png, STEM_training.png and,
for EEG with a montage, STEM_topographies.png. Existing outputs are never overwritten without --force.
Each input's outputs are written together or not at all: they are made in a
hidden folder in OUTDIR and moved into place once all are complete, so a
failed or interrupted run changes nothing. Every input is first read and
checked (a file that cannot be read, or holds NaN or silence, stops the run
before any fit; of a streamed input only its first second is read then, and a
fault later in it stops the run when it is reached, with that input's outputs
not made); then the inputs are separated one after the other, each read
again in its turn (one recording in memory at a time), and the first that
fails stops the run (exit 2): the output sets of the inputs before it stay
written, those after it are not made. With --force the
outputs replace the earlier outputs of that input as a set: files of the earlier run that this one
does not write (e.g. STEM_s3.wav of a 3-source run) are removed, so that no
file of an older run sits beside the new ones (the inputs and the --model file
are never removed). Each run says which model ran (family, domain, mixing,
prior, and whether the sensor unwarping was kept) on the console and in
STEM_metrics.json.

EEG artefact removal: --exclude K,K,... (source indices, e.g. read off the
topographies of an earlier run, then given with --model STEM_model.safetensors)
or --exclude eog (the sources find_bads_eog flags against the EOG channels, or
the frontal ones when there are none, or those --eog-channels names) also writes
STEM_cleaned_raw.fif, the recording with those sources removed, and lists them in
STEM_metrics.json. --exclude iclabel removes the sources that ICLabel (the
optional mne-icalabel: pip install sepkit[eeg]) puts in --iclabel-classes with a
probability of at least --iclabel-threshold, and lists every source's label in
STEM_metrics.json; it needs electrode positions. --exclude muscle removes the
sources find_bads_muscle flags (a spectrum rising from 7 to 45 Hz, a peripheral and
focal map; the spectrum alone without electrode positions).

--save-ica also writes the separator as an MNE ICA file (STEM_ica.fif, or the
NAME-ica.fif given, in OUTDIR; mne.preprocessing.read_ica reads it), for the
linear family (--mixing linear, the EEG default; with --highpass or --lowpass,
where --mixing auto could choose the post-nonlinear model, it then fits the
linear one, and so does --exclude iclabel).

Long inputs (longer than the fit would see: 60 s of audio, 10 min of EEG) are
streamed (sepkit.streaming), in memory bounded by a chunk, not by the
recording: the fit sees that much of the recording, in six blocks spread over
it; then it is read, separated and written 30 s at a time into the same files.
Such a run says so on the console and in STEM_metrics.json ("streamed": true);
--exclude then chooses the sources to remove on the fit's blocks, and
--resample applies to audio only.
"""

from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..methods import ICA_MIXINGS
from ._common import (
    MODEL_OPTIONS,
    OutputSet,
    add_channels_option,
    add_common,
    add_model_options,
    add_sample_options,
    check_channels_input,
    check_fine_tune,
    check_input_file,
    check_kept_model,
    check_targets,
    check_writable,
    describe_model,
    drop_bad_epochs,
    existing_outputs,
    fit_sample_kwargs,
    given_options,
    input_kind,
    load_model,
    make_output_folder,
    model_line,
    model_options,
    n_sources_arg,
    n_sources_phrase,
    n_sources_value,
    naming_input,
    read_input,
    remember_defaults,
    remove_empty_folders,
    sample_line,
    say,
    seed_arg,
    show_progress,
    stem_of,
    warn_given_unused,
    write_json,
)

# Inputs longer than this (seconds, per kind) are streamed. None: the fit's
# budget, sepkit.streaming.MAX_FIT_SECONDS (audio 60 s, EEG 10 min), so that a
# recording is held whole only where the fit would see all of it anyway (held
# whole, 10 min of 2-channel 16 kHz audio peaked at 2.4 GB RSS, 60 s at 1.1 GB).
STREAM_SECONDS = None
# Seconds of a streamed input's sources kept for STEM_sources.png: what
# viz.plot_sources shows of them (its max_seconds).
PLOT_SECONDS = 10.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "separate",
        help="separate audio or EEG recordings into sources (pretrained or fitted)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="recording file(s)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--model", metavar="NAME", help="pretrained model name, folder or .safetensors"
    )
    how.add_argument(
        "--n-sources",
        type=n_sources_arg,
        metavar="K",
        help="fit a new separator with K sources; as MNE's n_components, a share of the "
        "variance (e.g. 0.99: the principal components that hold it) or 'all' (every "
        "dimension the data hold) is counted at fit (time-domain models)",
    )
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument(
        "--resample",
        action="store_true",
        help="resample inputs to the model's sample rate (else a mismatch is an error); "
        "the sources are then written at the model's rate, and the run says so",
    )
    p.add_argument(
        "--fine-tune", action="store_true", help="with --model: fine-tune it on each input first"
    )
    p.add_argument("--plots", action="store_true", help="also save figures (PNG)")
    add_channels_option(p)
    p.add_argument(
        "--subtype",
        type=str.upper,
        choices=SUBTYPES,
        default=None,
        help="audio: the sample format of the source WAV files (default: PCM_16; FLOAT "
        "and DOUBLE are never rescaled, the PCM formats get one common gain where the "
        "loudest source would clip). The time-frequency models' sources are their images "
        "at the first microphone, in the input's scale; the time-domain models' (--domain "
        "time: linear, network, flow) are latent sources of unit variance, so a float "
        "file then holds samples beyond 1",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps, domain time (default: the estimator's)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="window length in seconds for u (default: the estimator's choice)",
    )
    p.add_argument(
        "--exclude",
        metavar="K,K|eog|muscle|iclabel",
        default=None,
        help="EEG: remove these sources (comma-separated indices from 0, 'eog' for the "
        "ones that follow the EOG, 'muscle' for muscle activity, or 'iclabel' for those "
        "ICLabel labels as artefacts) and write STEM_cleaned_raw.fif",
    )
    p.add_argument(
        "--eog-channels",
        metavar="NAME,NAME",
        default=None,
        help="with --exclude eog: the channel(s) that record the eyes (default: the "
        "EOG-typed channels, else Fp1/Fp2/Fpz/AF*)",
    )
    _add_ica_options(p)
    add_model_options(p)
    add_sample_options(p)
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    add_common(p)
    # What the options are when not given, to tell the ones given (_check_unused).
    remember_defaults(p, MODEL_OPTIONS + _FIT_ONLY)
    return p


def _add_ica_options(p) -> None:
    """--iclabel-classes, --iclabel-threshold (--exclude iclabel) and --save-ica."""
    p.add_argument(
        "--iclabel-classes",
        metavar="CLASS,CLASS",
        default=None,
        help="with --exclude iclabel: the ICLabel classes to remove (default: eye blink, "
        "heart beat, muscle artifact, line noise, channel noise; the others are brain "
        "and other)",
    )
    p.add_argument(
        "--iclabel-threshold",
        type=float,
        metavar="P",
        default=None,
        help="with --exclude iclabel: the least probability of one of those classes that "
        "removes a source (default: 0.8)",
    )
    p.add_argument(
        "--save-ica",
        nargs="?",
        const="",
        default=None,
        metavar="NAME-ica.fif",
        help="also write the separator as an MNE ICA file in OUTDIR (linear family; "
        "default name STEM_ica.fif)",
    )


# The options that shape how a model is fitted; with --model and no --fine-tune
# nothing is fitted.
_FIT_ONLY = ("steps", "window", "seed", "decim", "reject", "flat", "tstep")


def _check_unused(args) -> None:
    """Refuse options that this run would not use (nothing is silently ignored)."""
    if args.model is None:
        if args.resample and getattr(args, "source_model", None):
            raise ValueError(
                "--resample resamples each input to --model's sample rate; with "
                "--source-model the input is resampled to the source model's rate by itself "
                "(and the sources back to the input's). Drop --resample."
            )
        if args.resample:
            raise ValueError(
                "--resample resamples each input to --model's sample rate, and a new fit "
                "(--n-sources) has none: it is fitted at the input's own rate. Drop --resample."
            )
        return
    check_kept_model(args, "--model", args.model)
    if args.fine_tune:
        return
    given = given_options(args, _FIT_ONLY)
    if given:
        verb = "shape" if len(given) > 1 else "shapes"
        raise ValueError(
            f"{', '.join(given)} {verb} a fit, but --model {args.model} separates with the "
            "saved model as it is, without fitting. Drop them, or pass --fine-tune to fit "
            "the model further on each input first."
        )


def _outputs(out: Path, item: _Input, n_sources: int, args, fits: bool):
    stem, eeg_pos = item.stem, item.eeg_pos
    files = [out / f"{stem}_metrics.json"]
    if item.kind == "audio":
        # A share or "all" is counted at fit: the set's existing files are found by name.
        files += [out / f"{stem}_s{i + 1}.wav" for i in range(_count(n_sources))]
    else:
        files.append(out / eeg_name(stem, "sources", item.epochs))
        if args.exclude is not None:
            files.append(out / eeg_name(stem, "cleaned", item.epochs))
        if args.save_ica is not None:
            files.append(out / ica_name(args.save_ica, stem))
    plots = args.plots
    if fits:
        files.append(out / f"{stem}_model.safetensors")
    if plots:
        files.append(out / f"{stem}_sources.png")
        if fits:
            files.append(out / f"{stem}_training.png")
        if eeg_pos:
            files.append(out / f"{stem}_topographies.png")
    return files


def _count(n_sources) -> int:
    """The files per source to list before a fit: none for a share or "all" (counted at fit)."""
    return n_sources if isinstance(n_sources, int) else 0


def eeg_name(stem: str, what: str, epochs: bool) -> str:
    """The FIF file of an EEG output: STEM_sources_raw.fif, or STEM_sources_epo.fif for Epochs."""
    return f"{stem}_{what}_{'epo' if epochs else 'raw'}.fif"


def _has_positions(raw) -> bool:
    import numpy as np

    locs = [ch["loc"][:3] for ch in raw.info["chs"]]
    return sum(bool(np.isfinite(p).all() and np.any(p)) for p in locs) >= 3


def parse_exclude(text: str | None, n_sources: int):
    """None, "eog", "muscle", "iclabel" or a sorted list of source indices from ``--exclude``."""
    if text is None or text.strip().lower() in ("eog", "muscle", "iclabel"):
        return None if text is None else text.strip().lower()
    try:
        indices = sorted({int(k) for k in text.split(",")})
    except ValueError:
        # (tests/cli/test_cli_main.py checks this text.)
        raise ValueError(
            "--exclude takes comma-separated source indices (e.g. 0,3), or one of 'eog', "
            f"'muscle' and 'iclabel' (EEG), got {text!r}."
        ) from None
    return check_exclude_range(indices, n_sources)


def check_exclude_range(indices, n_sources):
    """``indices`` of ``--exclude``, or the error where one is not a source of ``n_sources``.

    A share of variance or "all" (not counted yet) passes; the count fitted is
    checked again after the fit.
    """
    if not isinstance(indices, list) or not isinstance(n_sources, int):
        return indices
    wrong = [k for k in indices if not 0 <= k < n_sources]
    if wrong:
        raise ValueError(
            f"--exclude names source(s) {wrong}, but there are {n_sources} sources (indices 0 "
            f"to {n_sources - 1}). Pass indices in that range."
        )
    return indices


# --subtype: the WAV sample formats libsndfile writes.
SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


def _check_subtype_input(path: Path, kind: str, subtype) -> None:
    """Refuse --subtype for an EEG input, whose sources are written as FIF."""
    if subtype is not None and kind != "audio":
        raise ValueError(
            f"--subtype sets the sample format of the source WAV files of audio inputs, but "
            f"{path.name} is EEG (its sources are written as FIF, in float). Drop --subtype."
        )


def _check_exclude_input(path: Path, X, kind: str, exclude, eog_channels) -> None:
    """Refuse --exclude where it cannot apply, before any fit."""
    if eog_channels is not None and exclude != "eog":
        raise ValueError(
            "--eog-channels names the EOG reference of --exclude eog, which is not given. "
            "Pass --exclude eog too, or drop --eog-channels."
        )
    if exclude is None:
        return
    if kind != "eeg":
        raise ValueError(
            f"--exclude removes sources from EEG recordings, but {path.name} is audio. Drop "
            "--exclude for audio inputs (their sources are written one file each)."
        )
    if exclude == "eog":
        from ..separator import IVAESeparator

        with warnings.catch_warnings():
            # find_bads_eog warns about a frontal fallback itself, later.
            warnings.simplefilter("ignore", RuntimeWarning)
            IVAESeparator._eog_reference(X, eog_channels)
    if isinstance(exclude, _ICLabelRule) and not _has_positions(X):
        raise ValueError(
            f"--exclude iclabel needs electrode positions, which {path.name} lacks (ICLabel "
            "reads each source's map off them). Use a recording with a montage, or pass "
            "--exclude with source indices."
        )


@dataclass(frozen=True)
class _ICLabelRule:
    """--exclude iclabel: remove the sources ICLabel puts in ``classes`` with p >= ``threshold``."""

    classes: tuple
    threshold: float


def iclabel_rule(args, exclude):
    """``exclude``, with "iclabel" made an :class:`_ICLabelRule` of the --iclabel-* options."""
    given = [
        flag
        for flag, value in (
            ("--iclabel-classes", args.iclabel_classes),
            ("--iclabel-threshold", args.iclabel_threshold),
        )
        if value is not None
    ]
    if exclude != "iclabel":
        if given:
            raise ValueError(
                f"{given[0]} sets which sources --exclude iclabel removes, but --exclude "
                f"iclabel is not given. Pass --exclude iclabel too, or drop {given[0]}."
            )
        return exclude
    from ..io.mne_ica import (
        ICLABEL_EXCLUDE,
        ICLABEL_THRESHOLD,
        check_iclabel_classes,
        require_icalabel,
    )

    try:
        require_icalabel()
    except ImportError as err:  # one line and exit 2, as every user error
        raise RuntimeError(f"--exclude iclabel: {err}") from None
    classes = ICLABEL_EXCLUDE
    if args.iclabel_classes is not None:
        try:
            classes = check_iclabel_classes(args.iclabel_classes)
        except ValueError as err:
            raise ValueError(f"--iclabel-classes: {err}") from None
    threshold = ICLABEL_THRESHOLD if args.iclabel_threshold is None else args.iclabel_threshold
    if not 0 < threshold <= 1:
        raise ValueError(
            f"--iclabel-threshold is a probability, 0 < P <= 1, got {threshold:g}. Pass e.g. "
            f"{ICLABEL_THRESHOLD:g}."
        )
    return _ICLabelRule(classes, float(threshold))


def ica_name(value: str, stem: str) -> str:
    """The file name of --save-ica (``value``; "" for the default STEM_ica.fif)."""
    return Path(value).name if value else f"{stem}_ica.fif"


def _check_save_ica(args, out: Path, n_inputs: int) -> None:
    """Refuse a --save-ica name that MNE or the output set would not take, before any work."""
    value = args.save_ica
    if not value:
        return
    path = Path(value)
    if not path.name.lower().endswith(("-ica.fif", "_ica.fif", "-ica.fif.gz", "_ica.fif.gz")):
        raise ValueError(
            f"--save-ica names an MNE ICA file, whose name ends in -ica.fif or _ica.fif (.gz) "
            f"as read_ica expects, got {value!r}. Pass e.g. sub-01-ica.fif."
        )
    if str(path.parent) not in ("", ".") and path.parent.resolve() != out.resolve():
        raise ValueError(
            f"--save-ica writes into the output folder {out}, but {value!r} names another "
            f"folder. Pass the file name alone ({path.name})."
        )
    if n_inputs > 1:
        raise ValueError(
            f"--save-ica {value} names one file, but {n_inputs} inputs were given. Pass "
            "--save-ica without a name (each input then gets its STEM_ica.fif)."
        )


def _check_linear(args, path: Path, kind: str, exclude, pretrained) -> None:
    """Refuse --save-ica / --exclude iclabel where no MNE ICA can be exported, before any fit."""
    what = [
        flag
        for flag, on in (
            ("--save-ica", args.save_ica is not None),
            ("--exclude iclabel", isinstance(exclude, _ICLabelRule)),
        )
        if on
    ]
    if not what:
        return
    if kind != "eeg":
        raise ValueError(
            f"{what[0]} exports an EEG decomposition as MNE's ICA, but {path.name} is audio. "
            f"Drop {what[0]} for audio inputs."
        )
    if pretrained is not None:
        pretrained._linear_maps()  # the error names the families that can
    elif args.mixing == "auto" and args.domain != "tf" and (args.highpass or args.lowpass):
        # With a filter, auto may choose the post-nonlinear model (sensors that
        # clip), which no ICA file holds: found out after the fit, that cost the
        # whole fit and wrote nothing. An ICA was asked for, so fit the linear family.
        args.mixing = "linear"
        say(
            args,
            f"{path.name}: {what[0]} fits --mixing linear (MNE's ICA holds only the linear "
            "family; --mixing auto could choose the post-nonlinear model)",
        )
    elif (args.mixing != "auto" and args.mixing not in ICA_MIXINGS) or args.domain == "tf":
        option = "--domain tf" if args.domain == "tf" else f"--mixing {args.mixing}"
        raise ValueError(
            f"{what[0]} needs a separator whose sources are a matrix times the channels (the "
            f"linear family), but {option} fits another. Pass --mixing linear (or auto, the "
            "EEG default)."
        )


def _check_steps(args) -> None:
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    if args.fine_tune and args.model is None:
        raise ValueError("--fine-tune needs --model NAME (the model to start from).")
    if args.window is not None and args.window <= 0:
        raise ValueError(f"--window must be > 0 seconds, got {args.window}.")


def output_names(stem: str) -> re.Pattern:
    """Matches the file names of a whole output set of ``stem``, this run's or an earlier one's."""
    return re.compile(
        re.escape(stem) + r"_(metrics\.json|model\.safetensors|s\d+\.wav"
        # A FIF output beyond 2 GB comes in parts: STEM_sources_raw.fif, ..._raw-1.fif, ...
        r"|sources_(raw|epo)(-\d+)?\.fif|cleaned_(raw|epo)(-\d+)?\.fif"
        r"|ica\.fif|sources\.png|training\.png|topographies\.png)"
    )


@dataclass
class _Input:
    """One recording as :func:`_read_one` read it."""

    path: Path
    stem: str
    X: object  # Recording (audio), or mne.io.Raw or mne.Epochs (EEG, every data channel)
    kind: str
    eeg_pos: bool  # EEG with sensor positions: topographies can be drawn
    # A streamed input (sepkit.streaming.LongRecording); X is then its Raw, not
    # preloaded (EEG), or None (audio).
    long: object = None
    excerpt: object = None  # what the fit of a streamed input saw
    epochs: bool = False  # X is mne.Epochs (a FIF file of epochs), separated end to end


@dataclass
class _Result:
    """What :func:`_apply_one` made of one input, for :func:`_write_one`."""

    sources: object  # Recording (audio), or mne.io.Raw or mne.Epochs (EEG)
    info: dict  # STEM_metrics.json
    cleaned: object = None  # the Raw / Epochs without the excluded sources (--exclude)
    ica: object = None  # the separator as mne.preprocessing.ICA (--save-ica)
    figures: dict = field(default_factory=dict)
    # A streamed input: stream(folder) writes its sources (and cleaned recording)
    # there and returns the figures; sources and cleaned are None.
    stream: object = None
    t0: float = 0.0  # when its work began (a streamed input is timed after stream)


def run(args) -> int:
    _check_steps(args)
    _check_unused(args)
    sample_kwargs = fit_sample_kwargs(args)
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        check_input_file(p)
    stems = [stem_of(p) for p in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"inputs share a file name stem ({stems}); their outputs would collide. Rename "
            "them or separate them into different --out folders."
        )
    check_writable(out)
    _check_save_ica(args, out, len(inputs))
    pretrained = load_model(args.model) if args.model else None
    fits = pretrained is None or args.fine_tune
    n_sources = pretrained.n_sources_ if pretrained is not None else args.n_sources
    exclude = iclabel_rule(args, parse_exclude(args.exclude, n_sources))
    eog_channels = None if args.eog_channels is None else args.eog_channels.split(",")
    # Never removed as files of an earlier output set: what this run reads.
    keep = [*inputs, *([args.model] if args.model and Path(args.model).is_file() else [])]

    # Everything this run would write or replace, checked before any work.
    loaded, targets = [], []
    for path, stem in zip(inputs, stems, strict=True):
        with naming_input(path):
            item = _read_one(args, path, stem, pretrained, (exclude, eog_channels))
        # One recording in memory at a time: with several inputs each is read
        # again when its turn comes (memory bounded by an input, not by the run).
        loaded.append(item if len(inputs) == 1 or item.long is not None else replace(item, X=None))
        targets += _outputs(out, item, n_sources, args, fits)
        targets += existing_outputs(out, output_names(stem), keep)
    del item  # the last one read: its copy in loaded holds what is kept
    check_targets(list(dict.fromkeys(targets)), args.force, reads=keep)
    made = make_output_folder(out)
    try:
        for item in loaded:
            # In a function of its own: its recording, model and sources go when it returns.
            _separate_one(args, out, item, pretrained, (n_sources, sample_kwargs, fits, keep),
                          (exclude, eog_channels))  # fmt: skip
    except BaseException:
        remove_empty_folders(made)
        raise
    return 0


def _separate_one(args, out: Path, item: _Input, pretrained, plan, removal) -> None:
    """Fit (or apply) and write one input; ``plan``: (n_sources, sample_kwargs, fits, keep)."""
    n_sources, sample_kwargs, fits, keep = plan
    exclude = removal[0]
    t0 = time.perf_counter()
    with naming_input(item.path):
        if item.X is None and item.long is None:  # released after its checks
            item = _read_one(args, item.path, item.stem, pretrained, removal, quiet=True)
        sep = _fit_one(args, item, pretrained, n_sources, sample_kwargs)
        check_exclude_range(exclude, sep.n_sources_)
        result = _apply_one(args, item, sep, fits, removal)
    result.info["seconds"] = time.perf_counter() - t0
    result.t0 = t0
    _write_one(args, out, item, sep if fits else None, result, keep)
    say(args, model_line(item.path.name, result.info))
    rates = result.info["input_sample_rate"], result.info["sample_rate"]
    if None not in rates and rates[0] != rates[1]:  # --model ... --resample
        say(args, f"{item.path.name}: resampled from {rates[0]:g} Hz to the model's "
                  f"{rates[1]:g} Hz; its sources are written at {rates[1]:g} Hz")  # fmt: skip
    fitted_on = item.excerpt if item.excerpt is not None else item.X
    if fits and (line := sample_line(item.path.name, result.info, args, fitted_on)):
        say(args, line)
    if "excluded" in result.info:
        say(args, removal_line(item.path.name, result.info))
    seconds = result.info["seconds"]
    print(f"{item.path.name}: {sep.n_sources_} sources -> {out}/ ({seconds:.1f} s)")


def _read_one(args, path: Path, stem: str, pretrained, removal, quiet=False) -> _Input:
    """Read one input and refuse, before any fit, what cannot apply to it.

    ``quiet``: the second read of an input of several (no "reading" line).
    """
    from ..io import is_epochs_file

    exclude, eog_channels = removal
    if not quiet:
        say(args, f"reading {path}")
    # A FIF file of Epochs is fitted and separated end to end (as ICA.fit(epochs)
    # does), whole: its epochs are in memory anyway.
    epochs = is_epochs_file(path)
    if epochs and pretrained is not None and args.fine_tune:
        raise ValueError(
            f"{path.name} holds MNE Epochs, and --fine-tune continues a network's training "
            "on a continuous recording. Apply the model as it is (drop --fine-tune), or "
            "fine-tune it on the recording the epochs were cut from."
        )
    # Every data channel: the EOG leads for --exclude eog, and all of them in
    # the cleaned recording (the fit and the sources take the EEG only).
    long = None if epochs else _open_long(args, path, pretrained)
    if long is None:
        X, kind = read_input(path, eeg_picks=None, epochs=epochs, audio_channels=args.channels)
    else:
        X, kind = long.raw, long.kind
    head = X if long is None else _head(long)  # a second of a streamed input, for the checks
    if long is None and not epochs:
        _check_values(X, fits=pretrained is None or args.fine_tune)
    _check_exclude_input(path, X, kind, exclude, eog_channels)
    _check_subtype_input(path, kind, args.subtype)
    _check_linear(args, path, kind, exclude, pretrained)
    if pretrained is not None and args.fine_tune:
        check_fine_tune(path, head, pretrained, args.model, "--model")
    eeg_pos = kind == "eeg" and _has_positions(head)
    return _Input(path, stem, X, kind, eeg_pos, long, epochs=epochs)


def _check_values(X, fits: bool) -> None:
    """The estimator's checks of the values, before any input is fitted.

    So that a bad file late in a run (NaN, silence, a flat channel) stops it
    before the earlier inputs are fitted and written, not after. Finite values
    for every input, as the estimator takes it (a Raw: its EEG channels);
    the checks of a fit (:func:`sepkit._check.check_fit_data`) for audio, which
    has no BAD annotations to leave samples out (a Raw's are the fit's own
    business).
    """
    from .._check import check_data_2d, check_fit_data
    from ..io import Recording
    from ..io.raw import raw_to_data

    if isinstance(X, Recording):
        data = check_data_2d(X.data, "Recording data")
        if fits:
            check_fit_data(data, X.ch_names)
    elif fits:  # a pretrained model takes its own channels, by name
        raw_to_data(X)


def _fit_one(args, item: _Input, pretrained, n_sources: int, sample_kwargs: dict):
    """The separator for ``item``: ``pretrained`` as it is, fine-tuned, or a new fit.

    ``sample_kwargs``: fit's decim, reject, flat and tstep (:func:`fit_sample_kwargs`).
    """
    from ..separator import IVAESeparator

    if pretrained is not None and not args.fine_tune:
        return pretrained
    if pretrained is not None:
        sep = IVAESeparator(**{**pretrained.get_params(), "device": "cpu"})
    else:
        sep = IVAESeparator(n_sources_value(n_sources), device="cpu", **model_options(args))
    params = dict(random_state=args.seed, verbose=show_progress(args), checkpoint_dir=None)
    if args.steps is not None:
        params["n_steps"] = args.steps
    if args.window is not None:
        params["window"] = args.window
    sep.set_params(**params)
    X = item.X
    if item.long is not None:
        item.excerpt = X = _fit_excerpt(args, item, sep, pretrained)
    if pretrained is not None and args.resample:
        X = pretrained._match_sample_rate(X, True)
    X, fit_kwargs = drop_bad_epochs(args, item.path.name, X, sample_kwargs)
    say(args, f"fitting {n_sources_phrase(n_sources)} on {item.path.name}")
    with warnings.catch_warnings():
        # _fit_excerpt's encoder_u=False, where the tf family was chosen after all.
        warnings.filterwarnings("ignore", "encoder_u=False: not used by", UserWarning)
        sep.fit(X, init=pretrained, **fit_kwargs)
        warn_given_unused(args, sep)
    sep.reject_ = sample_kwargs["reject"]  # as ICA.reject_, also for epochs dropped with it
    return sep


def _apply_one(args, item: _Input, sep, fits: bool, removal) -> _Result:
    """Sources, cleaned recording and metrics of ``item``; nothing is written here.

    Raises RuntimeError where the sources or the final loss are not finite,
    so that a diverged fit never replaces a good earlier result.
    """
    if item.long is not None:
        return _apply_streamed(args, item, sep, fits, removal)
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        S = sep.transform(item.X, resample=args.resample)
    data = S.data if item.kind == "audio" else S.get_data()
    if item.epochs:  # (n_epochs, n_sources, n_times): the epochs end to end
        data = data.transpose(1, 0, 2).reshape(data.shape[1], -1)
    info = _model_info(args, item, sep, fits, data)
    result = _Result(S, info)
    if args.save_ica is not None:
        result.ica = sep.to_mne_ica(info=item.X.info if item.epochs else item.X)
        info["ica_file"] = ica_name(args.save_ica, item.stem)
    exclude, eog_channels = removal
    if exclude is not None:
        result.cleaned, entry = _cleaned(sep, item.X, exclude, item.stem, eog_channels)
        info.update(entry)
        if result.ica is not None:  # ica.apply(raw) then removes what this run removed
            result.ica.exclude = list(entry["excluded"])
    if args.plots:
        result.figures = _figures(item, sep, S, data, fits, info.get("excluded", ()))
    return result


def _model_info(args, item: _Input, sep, fits: bool, data=None) -> dict:
    """The model's entries of STEM_metrics.json.

    Raises RuntimeError where the final loss or the sources ``data`` (None:
    not computed yet, as for a streamed input) are not finite.
    """
    import numpy as np

    loss = sep.history_[-1].get("loss") if fits and sep.history_ else None
    if loss is not None and not math.isfinite(loss):
        what = f"the fit on {item.path.name} ended with a non-finite loss ({loss})"
    elif data is not None and not np.isfinite(data).all():
        what = f"the sources of {item.path.name} contain NaN or Inf values"
    else:
        what = None
    if what is not None:
        raise RuntimeError(
            f"{what}, so nothing was written. Check the recording for silent or flat "
            "channels and extreme values, or choose the model yourself (--domain, --mixing)."
        )
    info = dict(
        input=str(item.path),
        kind=item.kind,
        model=args.model,
        fine_tuned=bool(args.fine_tune),
        streamed=item.long is not None,
        n_sources=sep.n_sources_,
        sample_rate=sep.sample_rate_,
        # Where they differ, the input was resampled (--resample, or a source model's
        # own rate; the sources are written at sample_rate).
        input_sample_rate=_input_rate(item),
        separation_sample_rate=sep.fitted_.work_rate or sep.sample_rate_,
        **describe_model(sep),
    )
    if fits:
        info.update(n_steps=sep.n_steps_run_, highpass=sep.highpass, lowpass=sep.lowpass)
        info["final_loss"] = loss
    return info


def _input_rate(item: _Input) -> float | None:
    """The input file's own sample rate (Recording, Raw, Epochs or a streamed file)."""
    return _rate_of(item.long if item.long is not None else item.X)


def _rate_of(x) -> float | None:
    """The sample rate of a Recording or streamed file (``sample_rate``) or of MNE data."""
    rate = getattr(x, "sample_rate", None)
    if rate is None and hasattr(x, "info"):
        rate = x.info["sfreq"]
    return None if rate is None else float(rate)


def _figures(item: _Input, sep, S, data, fits: bool, excluded=()) -> dict:
    """{file name: matplotlib figure} of ``--plots``; ``excluded``: the sources removed."""
    from ..io import Recording
    from ..viz import plot_sources, plot_topographies, plot_training_curve

    rate = _rate_of(S)
    names = tuple(S.ch_names)
    if item.kind == "audio":  # label the traces as their files: STEM_s1.wav -> s1
        names = tuple(f"s{i + 1}" for i in range(len(names)))
    rec = Recording(data, rate, names, "other")
    # The sources this run removed (--exclude) are drawn as excluded, in grey.
    figures = {f"{item.stem}_sources.png": plot_sources(rec, exclude=excluded)}
    losses = [h.get("loss", float("nan")) for h in sep.history_] if fits else []
    if any(math.isfinite(v) for v in losses):
        figures[f"{item.stem}_training.png"] = plot_training_curve(sep)
    if item.eeg_pos:
        info = item.X.info if hasattr(item.X, "info") else None
        fig = plot_topographies(sep, info=info, exclude=excluded)
        figures[f"{item.stem}_topographies.png"] = fig
    return figures


def _write_one(args, out: Path, item: _Input, model, result: _Result, keep) -> None:
    """Write the output set of ``item`` into ``out`` together (see :class:`OutputSet`).

    ``model``: the separator fitted (or fine-tuned) on ``item``, saved as
    STEM_model.safetensors; None where a given model was applied as it is.
    """
    import matplotlib.pyplot as plt

    from ..io import write_epochs_fif, write_raw_fif, write_sources
    from ..viz import save_figure

    stem = item.stem
    what = f"the outputs of {item.path.name}"
    try:
        with OutputSet(out, stem, output_names(stem), keep=keep, what=what) as staged:
            folder = staged.path
            if model is not None:
                # The model file removes what this run removed, as the --save-ica file
                # does (audit: load(model).apply(raw) removed nothing).
                model.exclude = list(result.info.get("excluded", ()))
                model.save(folder / f"{stem}_model.safetensors")
            if result.stream is not None:  # a streamed input: read, separated, written now
                result.figures = result.stream(folder)
                result.info["seconds"] = time.perf_counter() - result.t0
                if result.ica is not None:
                    result.ica.save(folder / ica_name(args.save_ica, stem), verbose="error")
            elif item.kind == "audio":
                write_sources(result.sources, folder, stem=stem, subtype=args.subtype)
            else:
                write = write_epochs_fif if item.epochs else write_raw_fif
                write(result.sources, folder / eeg_name(stem, "sources", item.epochs))
                if result.cleaned is not None:
                    write(result.cleaned, folder / eeg_name(stem, "cleaned", item.epochs))
                if result.ica is not None:
                    result.ica.save(folder / ica_name(args.save_ica, stem), verbose="error")
            for name, fig in result.figures.items():
                save_figure(fig, folder / name)
            write_json(result.info, folder / f"{stem}_metrics.json")
    finally:
        for fig in result.figures.values():
            plt.close(fig)
    if staged.replaced:
        names = ", ".join(p.name for p in staged.replaced)
        say(args, f"{item.path.name}: removed {names} of an earlier run (not written by this one)")


def _cleaned(sep, raw, exclude, stem: str, eog_channels=None, *, apply: bool = True):
    """(``raw`` without the sources ``exclude`` ("eog", "muscle": find_bads_*'s), metrics entry).

    ``apply=False``: the sources are only chosen (the cleaned Raw is None) and the
    share of variance removed is measured on ``raw`` (a streamed input's fit excerpt).
    """
    import numpy as np

    from ..io.raw import is_epochs_or_evoked

    name = eeg_name(stem, "cleaned", is_epochs_or_evoked(raw))
    entry = {}
    eog_mode = exclude == "eog"
    if isinstance(exclude, _ICLabelRule):
        exclude, entry = _iclabel_exclude(sep, raw, exclude, name)
    if exclude == "muscle":
        exclude, entry = _muscle_exclude(sep, raw, name)
    if exclude == "eog":
        exclude, scores = sep.find_bads_eog(raw, ch_name=eog_channels)
        entry["eog_scores"] = np.round(np.asarray(scores, dtype=float), 4).tolist()
        check = sep.eog_frontal_check_
        if check is not None:  # the reference was chosen by its names: frontal cross-check
            entry["eog_frontal_check"] = dict(
                channels=list(check["channels"]),
                scores=np.round(np.asarray(check["scores"], dtype=float), 4).tolist(),
                flagged_only_by_frontal=[int(k) for k in check["missed"]],
            )
        if not exclude:
            _warn_none_flagged(
                sep, name, "no source follows the EOG (find_bads_eog flagged none at |r| >= 0.5)"
            )
    # The model's own sep.exclude (saved with it) is removed too, as apply does.
    entry["excluded"] = sep._excluded(exclude)
    if eog_mode:
        with warnings.catch_warnings():  # find_bads_eog has said which channels it took
            warnings.simplefilter("ignore")
            entry["eog_reference"] = list(sep._eog_reference(raw, eog_channels))
    if not apply:
        # Streamed: raw is the fit's excerpt, and the share is measured there, chunk
        # by chunk (audit: the whole excerpt cleaned at once, per source too, peaked at
        # 9 GB for 256 channels at 1 kHz, most of a streamed run's memory).
        entry.update(_streamed_removed_variance(sep, raw, exclude, entry["excluded"]))
        return None, entry
    cleaned = sep.apply(raw, exclude=exclude)
    entry.update(_removed_variance(sep, raw, cleaned, exclude, entry["excluded"]))
    return cleaned, entry


def _muscle_exclude(sep, raw, name: str) -> tuple[list, dict]:
    """(sources find_bads_muscle flags, metrics entry) for ``--exclude muscle``."""
    import numpy as np

    exclude, scores = sep.find_bads_muscle(raw)
    if not exclude:
        _warn_none_flagged(
            sep,
            name,
            "no source looks like muscle activity (find_bads_muscle flagged none above 0.5)",
        )
    return exclude, {"muscle_scores": np.round(np.asarray(scores, float), 4).tolist()}


def _warn_none_flagged(sep, name: str, finding: str) -> None:
    """``--exclude eog`` / ``muscle`` flagged nothing: say what the cleaned file then is."""
    own = sep._excluded(None)
    left = (
        f"{name} is the recording unchanged"
        if not own
        else f"{name} lacks only the model's own exclude {own}"
    )
    warnings.warn(
        f"{finding}, so {left}. Pass --exclude with indices to remove sources anyway.",
        RuntimeWarning,
        stacklevel=3,
    )


# A removal that takes more than this share of the fitted channels' variance
# is more likely a wrong choice (or a wrong reference) than an artefact.
_REMOVAL_WARN_SHARE = 0.5


def _removed_variance(sep, raw, cleaned, exclude, excluded) -> dict:
    """Share of the fitted channels' variance the removal takes, in all and per source."""
    import numpy as np

    def variance(a):
        # Each channel about its own mean: an unfiltered file's DC offsets differ by
        # channel (BioSemi's by tens of mV), and over the pooled samples they would be
        # most of the "variance" (a removal of 59.5 % read as 0.0 %).
        return float(np.var(a, axis=1).sum())

    names = list(sep.ch_names_)
    before = raw.get_data(picks=names)
    whole = variance(before)
    total = variance(before - cleaned.get_data(picks=names)) / whole
    shares = {}
    if not sep.exclude:  # per source only where no model-owned exclude is mixed in
        for k in excluded:
            one = sep.apply(raw, exclude=[k]).get_data(picks=names)
            shares[str(k)] = round(variance(before - one) / whole, 4)
    _warn_large_removal(excluded, total)
    return dict(removed_variance_share=round(total, 4), removed_variance_per_source=shares)


def _streamed_removed_variance(sep, raw, exclude, excluded) -> dict:
    """:func:`_removed_variance` of a streamed input's excerpt, a chunk at a time.

    What a removal takes is ``f(S) - f(S')``, ``S'`` the sources with the removed
    rows held at their mean over the excerpt (as :meth:`apply` holds them over
    the recording it is given): a first pass finds those means, a second sums,
    per channel, the recording and each removal's change, whose variances about
    the channel's own mean give the shares. Each chunk is read with the model's
    context on both sides, as :mod:`sepkit.streaming` reads it.
    """
    import mne
    import numpy as np

    from ..streaming import CHUNK_SECONDS, _model_margin

    names = list(sep.ch_names_)
    removals = {"all": sep._excluded(exclude)}
    if not sep.exclude:  # per source only where no model-owned exclude is mixed in
        removals.update({str(k): [k] for k in excluded})
    info = mne.pick_info(raw.info, [raw.ch_names.index(n) for n in names], verbose="error")
    n_times, margin = raw.n_times, 2 * _model_margin(sep)
    step = max(1, int(CHUNK_SECONDS * raw.info["sfreq"]))

    def chunks():  # (x, S) of each chunk, without its margins
        for start in range(0, n_times, step):
            stop = min(n_times, start + step)
            lo, hi = max(0, start - margin), min(n_times, stop + margin)
            x = raw.get_data(picks=names, start=lo, stop=hi)
            S = sep.transform(mne.io.RawArray(x, info, verbose="error")).get_data()
            yield x[:, start - lo : stop - lo], S, slice(start - lo, stop - lo)

    mean = sum(S[:, keep].sum(axis=1) for _, S, keep in chunks()) / n_times
    sums = {key: np.zeros((2, len(names))) for key in ("before", *removals)}
    for x, S, keep in chunks():
        sums["before"] += (x.sum(axis=1), (x * x).sum(axis=1))
        whole = sep.inverse_transform(S).astype(np.float64)
        for key, rows in removals.items():
            held = S.copy()
            held[rows] = mean[rows][:, None]
            d = (whole - sep.inverse_transform(held))[:, keep]
            sums[key] += (d.sum(axis=1), (d * d).sum(axis=1))

    def variance(key):
        total, squares = sums[key]
        return float((squares / n_times - (total / n_times) ** 2).sum())

    share = variance("all") / variance("before")
    per = {k: round(variance(k) / variance("before"), 4) for k in removals if k != "all"}
    _warn_large_removal(excluded, share)
    return dict(removed_variance_share=round(share, 4), removed_variance_per_source=per)


def _warn_large_removal(excluded, total: float) -> None:
    if total > _REMOVAL_WARN_SHARE:
        warnings.warn(
            f"removing source(s) {excluded} takes {100 * total:.1f} % of the variance of the "
            "fitted channels: more than half, more like brain activity than an artefact. "
            "Check the components (--plots) before using the cleaned recording.",
            RuntimeWarning,
            stacklevel=4,
        )


def removal_line(name: str, info: dict) -> str:
    """One line saying what --exclude removed (sources, share of variance, reference)."""
    excluded = info["excluded"]
    if not excluded:
        return f"{name}: removed no source"
    per = info.get("removed_variance_per_source") or {}
    detail = ", ".join(f"{k}: {100 * v:.1f} %" for k, v in per.items())
    share = info.get("removed_variance_share")
    text = f"{name}: removed source(s) {excluded}"
    if share is not None:
        # Audit: read beside get_explained_variance_ratio (MNE's measure of what the
        # sources explain), the share needs its definition on the line.
        text += (
            f", {100 * share:.1f} % of the fitted channels' variance taken away (var(before "
            "- after) / var(before), summed over channels"
        )
        text += f"; per source {detail})" if detail else ")"
    if info.get("eog_reference"):
        text += f"; EOG reference {', '.join(info['eog_reference'])}"
    return text


def _iclabel_exclude(sep, raw, rule: _ICLabelRule, name: str):
    """(sources ICLabel puts in ``rule.classes`` with p >= ``rule.threshold``, metrics entry)."""
    import numpy as np

    from ..io.mne_ica import select_sources

    labelled = sep.label_components(raw)
    chosen = select_sources(labelled["probabilities"], rule.classes, rule.threshold)
    entry = dict(
        iclabel_labels=labelled["labels"],
        iclabel_proba=np.round(labelled["y_pred_proba"], 4).tolist(),
        iclabel_classes=list(rule.classes),
        iclabel_threshold=rule.threshold,
    )
    if not chosen:
        warnings.warn(
            f"ICLabel gave no source a probability of {rule.threshold:g} or more for "
            f"{', '.join(rule.classes)} (its labels: {', '.join(labelled['labels'])}), so "
            f"{name} lacks only the model's own exclude, if any. Lower --iclabel-threshold, "
            "or pass --exclude with indices.",
            RuntimeWarning,
            stacklevel=3,
        )
    return chosen, entry


# ------------------------------------------------------------ long inputs, streamed
def _open_long(args, path: Path, pretrained):
    """``path`` opened for streaming (:mod:`sepkit.streaming`) where it is long, else None."""
    from .. import streaming

    kind = input_kind(path)
    check_channels_input(path, kind, args.channels)
    try:
        long = streaming.open_recording(path, kind, channels=args.channels)
    except Exception:
        # Not readable in parts (M4A & co., which only audioread decodes) or not at all:
        # read whole, where the reader reports any fault of the file in its own words.
        return None
    limit = (STREAM_SECONDS or streaming.MAX_FIT_SECONDS)[kind]
    if long.duration <= limit:
        return None
    if pretrained is not None:
        if not _streamable(pretrained):
            _check_window_u(path, long, pretrained, args)
            return None  # a model that reads u separates only what it can hold whole
        _check_model_rate(path, long, pretrained, args)
    budget = streaming.MAX_FIT_SECONDS[kind]
    fit = f"{budget:g} s of it, in blocks spread over it" if long.duration > budget else "all of it"
    if pretrained is None or args.fine_tune:
        seen = f"the fit{' and --exclude see' if args.exclude else ' sees'} {fit}; "
        if _fits_network(args, pretrained):
            seen += "a network fitted here reads no u (encoder_u=False: a chunk has no window u); "
    else:
        seen = f"--exclude scores the sources on {fit}; " if args.exclude else ""
    say(
        args,
        f"{path.name}: {_duration(long.duration)}, longer than {limit:g} s, is streamed: {seen}"
        f"its sources are written {streaming.CHUNK_SECONDS:g} s at a time",
    )
    return long


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _streamable(sep) -> bool:
    from ..streaming import check_streamable

    try:
        check_streamable(sep)
    except ValueError:
        return False
    return True


def _check_window_u(path: Path, long, model, args) -> None:
    """Refuse, before reading it, a recording with more windows than ``model`` has learnt u for."""
    if getattr(model, "classes_", None) is not None or getattr(model, "n_u_", None) is not None:
        return  # fitted on labels: transform says what it needs
    window, hop = model.window_samples_, model.hop_samples_
    rate = float(model.sample_rate_ or long.sample_rate)
    n_times = int(round(long.n_times * rate / long.sample_rate))
    n_windows = 1 if n_times < window else (n_times - window) // hop + 1
    if not args.fine_tune and n_windows > model.n_segments_:
        raise ValueError(
            f"{path.name} has {n_windows} windows of {window} samples but the model "
            f"{args.model} was fitted on {model.n_segments_}, and its encoder reads the window "
            "index u, so it separates only recordings as long as the one it was fitted on. "
            f"Fit a new separator instead: --n-sources {model.n_sources_} in place of --model."
        )


def _check_model_rate(path: Path, long, model, args) -> None:
    """Refuse, before any work, a streamed input at a rate other than ``model``'s."""
    expected = model.sample_rate_
    if expected is None or float(expected) == long.sample_rate:
        return
    got, expected = long.sample_rate, float(expected)
    if long.kind == "eeg":
        raise ValueError(
            f"{path.name} has sample_rate {got:g} Hz but the model expects {expected:g} Hz, and "
            f"it is streamed ({_duration(long.duration)}): EEG is resampled only in one piece. "
            f"Resample it first (raw.resample({expected:g}), then raw.save), then separate it."
        )
    if not args.resample:
        raise ValueError(
            f"{path.name} has sample_rate {got:g} Hz but the model expects {expected:g} Hz. "
            "Pass resample=True to resample it, or resample it yourself first."
        )


def _fit_excerpt(args, item: _Input, sep, pretrained):
    """What the fit of a streamed input sees; a network to fit gets an encoder without u.

    A chunk of the recording has no window index u to give the encoder, so a
    network fitted here for streaming takes ``encoder_u=False`` (the prior
    p(z|u) still reads u in the fit, which the identifiability rests on).
    """
    from ..streaming import fit_excerpt

    if _fits_network(args, pretrained):
        sep.set_params(encoder_u=False)
    return fit_excerpt(item.long)


def _fits_network(args, pretrained) -> bool:
    """Whether the options make a new fit the network (the others read no u)."""
    network = args.mixing == "nonlinear" or args.prior == "laplace"
    return pretrained is None and network and args.domain != "tf"


def _head(long):
    """The first second of a streamed input, for the checks that read samples."""
    stop = min(long.n_times, max(1, int(long.sample_rate)))
    if long.kind == "eeg":
        return long.raw.copy().crop(0.0, (stop - 1) / long.sample_rate).load_data(verbose="error")
    from ..io import Recording

    return Recording(long.read(0, stop), long.sample_rate, long.ch_names, "audio")


def _apply_streamed(args, item: _Input, sep, fits: bool, removal) -> _Result:
    """Metrics of a streamed input, and the writer of its sources (:attr:`_Result.stream`).

    The sources that --exclude removes are chosen on the fit's excerpt (the
    whole recording is never in memory to score), then removed from all of it.
    """
    import functools

    from .. import streaming

    streaming.check_streamable(sep, f"the model for {item.path.name}")
    result = _Result(None, _model_info(args, item, sep, fits))
    if getattr(args, "save_ica", None) is not None:  # as _apply_one
        result.ica = sep.to_mne_ica(info=item.X)
        result.info["ica_file"] = ica_name(args.save_ica, item.stem)
    exclude, eog_channels = removal
    if exclude is not None:
        excerpt = item.excerpt if item.excerpt is not None else streaming.fit_excerpt(item.long)
        _, entry = _cleaned(sep, excerpt, exclude, item.stem, eog_channels, apply=False)
        result.info.update(entry)
        exclude = entry["excluded"]
        if result.ica is not None:
            result.ica.exclude = list(exclude)
    item.excerpt = None  # free it before the sources are streamed
    result.stream = functools.partial(_stream_outputs, args, item, sep, fits, exclude)
    return result


def _stream_outputs(args, item: _Input, sep, fits: bool, exclude, folder: Path) -> dict:
    """Read, separate and write a streamed input into ``folder``; return the figures."""
    from .. import streaming
    from ..io import Recording

    head = PLOT_SECONDS if args.plots else 0.0
    long, stem = item.long, item.stem
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        if item.kind == "audio":
            _, summary = streaming.write_audio_sources(
                sep, long, folder, stem, subtype=args.subtype, resample=args.resample,
                head_seconds=head, verbose=show_progress(args),
            )  # fmt: skip
        else:
            path = folder / f"{stem}_sources_raw.fif"
            _, summary = streaming.write_fif_sources(sep, long, path, head_seconds=head)
            if exclude is not None:
                path = folder / f"{stem}_cleaned_raw.fif"
                streaming.write_fif_cleaned(sep, long, path, exclude, summary.mean)
    if not args.plots:
        return {}
    names = tuple(f"IVAE{i:03d}" for i in range(sep.n_sources_))
    S = Recording(summary.head, summary.sample_rate, names, "other")
    return _figures(item, sep, S, S.data, fits, exclude or ())
