"""``sepkit separate``: recordings in, separated sources (and figures) out.

Each input (audio: WAV/FLAC/OGG/...; EEG: any format MNE reads, e.g. .fif,
.edf, .set, .vhdr) is separated on its own, either by a pretrained model
(--model NAME, see ``sepkit models list``, or a .safetensors file written by
``sepkit fit``) or by fitting a new separator with --n-sources K. With
--model and --fine-tune the pretrained model is fine-tuned on each input first.

Outputs in OUTDIR, per input STEM: audio sources as STEM_s1.wav, ...;
EEG sources as STEM_sources_raw.fif; STEM_metrics.json (model, steps, times,
final -ELBO); a fitted model as STEM_model.safetensors; with --plots
STEM_sources.png, STEM_training.png and, for EEG with a montage,
STEM_topographies.png. Existing outputs are never overwritten without --force.
Each input's outputs are written together or not at all: they are made in a
hidden folder in OUTDIR and moved into place once all are complete, so a
failed or interrupted run changes nothing. With --force they replace the
earlier outputs of that input as a set: files of the earlier run that this one
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
STEM_metrics.json.
"""

from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._common import (
    OutputSet,
    add_common,
    add_model_options,
    check_fine_tune,
    check_input_file,
    check_targets,
    check_writable,
    describe_model,
    existing_outputs,
    make_output_folder,
    model_line,
    model_options,
    read_input,
    remove_empty_folders,
    say,
    show_progress,
    stem_of,
    write_json,
)


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
        "--n-sources", type=int, metavar="K", help="fit a new separator with K sources"
    )
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument(
        "--resample",
        action="store_true",
        help="resample inputs to the model's sample rate (else a mismatch is an error)",
    )
    p.add_argument(
        "--fine-tune", action="store_true", help="with --model: fine-tune it on each input first"
    )
    p.add_argument("--plots", action="store_true", help="also save figures (PNG)")
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
        metavar="K,K|eog",
        default=None,
        help="EEG: remove these sources (comma-separated indices from 0, or 'eog' for the "
        "ones that follow the EOG) and write STEM_cleaned_raw.fif",
    )
    p.add_argument(
        "--eog-channels",
        metavar="NAME,NAME",
        default=None,
        help="with --exclude eog: the channel(s) that record the eyes (default: the "
        "EOG-typed channels, else Fp1/Fp2/Fpz/AF*)",
    )
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_common(p)
    return p


def load_model(spec: str, device: str = "cpu"):
    """A pretrained name/folder, or a .safetensors file written by save/``sepkit fit``."""
    from ..separator import IVAESeparator

    path = Path(spec)
    if path.suffix == ".safetensors":
        return IVAESeparator.load(path, device=device)
    return IVAESeparator.from_pretrained(spec, device=device)


def _outputs(out: Path, stem: str, kind: str, n_sources: int, args, fits: bool, eeg_pos):
    files = [out / f"{stem}_metrics.json"]
    if kind == "audio":
        files += [out / f"{stem}_s{i + 1}.wav" for i in range(n_sources)]
    else:
        files.append(out / f"{stem}_sources_raw.fif")
        if args.exclude is not None:
            files.append(out / f"{stem}_cleaned_raw.fif")
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


def _has_positions(raw) -> bool:
    import numpy as np

    locs = [ch["loc"][:3] for ch in raw.info["chs"]]
    return sum(bool(np.isfinite(p).all() and np.any(p)) for p in locs) >= 3


def parse_exclude(text: str | None, n_sources: int):
    """None, "eog" or a sorted list of source indices from ``--exclude``."""
    if text is None or text.strip().lower() == "eog":
        return None if text is None else "eog"
    try:
        indices = sorted({int(k) for k in text.split(",")})
    except ValueError:
        raise ValueError(
            f"--exclude takes comma-separated source indices (e.g. 0,3) or 'eog', got {text!r}."
        ) from None
    wrong = [k for k in indices if not 0 <= k < n_sources]
    if wrong:
        raise ValueError(
            f"--exclude names source(s) {wrong}, but there are {n_sources} sources (indices 0 "
            f"to {n_sources - 1}). Pass indices in that range."
        )
    return indices


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


def _check_steps(args) -> None:
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}.")
    if args.n_sources is not None and args.n_sources < 1:
        raise ValueError(f"--n-sources must be >= 1, got {args.n_sources}.")
    if args.fine_tune and args.model is None:
        raise ValueError("--fine-tune needs --model NAME (the model to start from).")
    if args.window is not None and args.window <= 0:
        raise ValueError(f"--window must be > 0 seconds, got {args.window}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}.")


def output_names(stem: str) -> re.Pattern:
    """Matches the file names of a whole output set of ``stem``, this run's or an earlier one's."""
    return re.compile(
        re.escape(stem) + r"_(metrics\.json|model\.safetensors|s\d+\.wav|sources_raw\.fif"
        r"|cleaned_raw\.fif|sources\.png|training\.png|topographies\.png)"
    )


@dataclass
class _Input:
    """One recording as :func:`_read_one` read it."""

    path: Path
    stem: str
    X: object  # Recording (audio) or mne.io.Raw (EEG, every data channel)
    kind: str
    eeg_pos: bool  # EEG with sensor positions: topographies can be drawn


@dataclass
class _Result:
    """What :func:`_apply_one` made of one input, for :func:`_write_one`."""

    sources: object  # Recording (audio) or mne.io.Raw (EEG)
    info: dict  # STEM_metrics.json
    cleaned: object = None  # the Raw without the excluded sources (--exclude)
    figures: dict = field(default_factory=dict)


def run(args) -> int:
    _check_steps(args)
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
    pretrained = load_model(args.model) if args.model else None
    fits = pretrained is None or args.fine_tune
    n_sources = pretrained.n_sources if pretrained is not None else args.n_sources
    exclude = parse_exclude(args.exclude, n_sources)
    eog_channels = None if args.eog_channels is None else args.eog_channels.split(",")
    # Never removed as files of an earlier output set: what this run reads.
    keep = [*inputs, *([args.model] if args.model and Path(args.model).is_file() else [])]

    # Everything this run would write or replace, checked before any work.
    loaded, targets = [], []
    for path, stem in zip(inputs, stems, strict=True):
        item = _read_one(args, path, stem, pretrained, (exclude, eog_channels))
        loaded.append(item)
        targets += _outputs(out, stem, item.kind, n_sources, args, fits, item.eeg_pos)
        targets += existing_outputs(out, output_names(stem), keep)
    check_targets(list(dict.fromkeys(targets)), args.force)
    made = make_output_folder(out)
    try:
        for item in loaded:
            t0 = time.perf_counter()
            sep = _fit_one(args, item, pretrained, n_sources)
            result = _apply_one(args, item, sep, fits, (exclude, eog_channels))
            result.info["seconds"] = seconds = time.perf_counter() - t0
            _write_one(args, out, item, sep if fits else None, result, keep)
            say(args, model_line(item.path.name, result.info))
            print(f"{item.path.name}: {n_sources} sources -> {out}/ ({seconds:.1f} s)")
    except BaseException:
        remove_empty_folders(made)
        raise
    return 0


def _read_one(args, path: Path, stem: str, pretrained, removal) -> _Input:
    """Read one input and refuse, before any fit, what cannot apply to it."""
    exclude, eog_channels = removal
    say(args, f"reading {path}")
    # Every data channel: the EOG leads for --exclude eog, and all of them in
    # the cleaned recording (the fit and the sources take the EEG only).
    X, kind = read_input(path, eeg_picks=None)
    _check_exclude_input(path, X, kind, exclude, eog_channels)
    if pretrained is not None and args.fine_tune:
        check_fine_tune(path, X, pretrained, args.model, "--model")
    return _Input(path, stem, X, kind, kind == "eeg" and _has_positions(X))


def _fit_one(args, item: _Input, pretrained, n_sources: int):
    """The separator for ``item``: ``pretrained`` as it is, fine-tuned, or a new fit."""
    from ..separator import IVAESeparator

    if pretrained is not None and not args.fine_tune:
        return pretrained
    if pretrained is not None:
        sep = IVAESeparator(**{**pretrained.get_params(), "device": "cpu"})
    else:
        sep = IVAESeparator(n_sources, device="cpu", **model_options(args))
    params = dict(random_state=args.seed, verbose=show_progress(args), checkpoint_dir=None)
    if args.steps is not None:
        params["n_steps"] = args.steps
    if args.window is not None:
        params["window"] = args.window
    sep.set_params(**params)
    X = item.X
    if pretrained is not None and args.resample:
        X = pretrained._match_sample_rate(X, True)
    say(args, f"fitting {n_sources} sources on {item.path.name}")
    return sep.fit(X, init=pretrained)


def _apply_one(args, item: _Input, sep, fits: bool, removal) -> _Result:
    """Sources, cleaned recording and metrics of ``item``; nothing is written here.

    Raises RuntimeError where the sources or the final loss are not finite,
    so that a diverged fit never replaces a good earlier result.
    """
    import numpy as np

    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        S = sep.transform(item.X, resample=args.resample)
    data = S.data if item.kind == "audio" else S.get_data()
    loss = sep.history_[-1].get("loss") if fits and sep.history_ else None
    if loss is not None and not math.isfinite(loss):
        what = f"the fit on {item.path.name} ended with a non-finite loss ({loss})"
    elif not np.isfinite(data).all():
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
        n_sources=sep.n_sources,
        sample_rate=sep.sample_rate_,
        **describe_model(sep),
    )
    if fits:
        info.update(n_steps=sep.n_steps_run_, highpass=sep.highpass, lowpass=sep.lowpass)
        info["final_loss"] = loss
    result = _Result(S, info)
    exclude, eog_channels = removal
    if exclude is not None:
        result.cleaned, entry = _cleaned(sep, item.X, exclude, item.stem, eog_channels)
        info.update(entry)
    if args.plots:
        result.figures = _figures(item, sep, S, data, fits)
    return result


def _figures(item: _Input, sep, S, data, fits: bool) -> dict:
    """{file name: matplotlib figure} of ``--plots``."""
    from ..io import Recording
    from ..viz import plot_sources, plot_topographies, plot_training_curve

    rate = S.sample_rate if item.kind == "audio" else S.info["sfreq"]
    rec = Recording(data, rate, tuple(S.ch_names), "other")
    figures = {f"{item.stem}_sources.png": plot_sources(rec)}
    losses = [h.get("loss", float("nan")) for h in sep.history_] if fits else []
    if any(math.isfinite(v) for v in losses):
        figures[f"{item.stem}_training.png"] = plot_training_curve(sep)
    if item.eeg_pos:
        fig = plot_topographies(sep, info=item.X if hasattr(item.X, "info") else None)
        figures[f"{item.stem}_topographies.png"] = fig
    return figures


def _write_one(args, out: Path, item: _Input, model, result: _Result, keep) -> None:
    """Write the output set of ``item`` into ``out`` together (see :class:`OutputSet`).

    ``model``: the separator fitted (or fine-tuned) on ``item``, saved as
    STEM_model.safetensors; None where a given model was applied as it is.
    """
    import matplotlib.pyplot as plt

    from ..io import write_raw_fif, write_sources
    from ..viz import save_figure

    stem = item.stem
    what = f"the outputs of {item.path.name}"
    try:
        with OutputSet(out, stem, output_names(stem), keep=keep, what=what) as staged:
            folder = staged.path
            if model is not None:
                model.save(folder / f"{stem}_model.safetensors")
            if item.kind == "audio":
                write_sources(result.sources, folder, stem=stem)
            else:
                write_raw_fif(result.sources, folder / f"{stem}_sources_raw.fif")
                if result.cleaned is not None:
                    write_raw_fif(result.cleaned, folder / f"{stem}_cleaned_raw.fif")
            for name, fig in result.figures.items():
                save_figure(fig, folder / name)
            write_json(result.info, folder / f"{stem}_metrics.json")
    finally:
        for fig in result.figures.values():
            plt.close(fig)
    if staged.replaced:
        names = ", ".join(p.name for p in staged.replaced)
        say(args, f"{item.path.name}: removed {names} of an earlier run (not written by this one)")


def _cleaned(sep, raw, exclude, stem: str, eog_channels=None):
    """(``raw`` without the sources ``exclude`` ("eog": find_bads_eog's), metrics entry)."""
    import numpy as np

    name = f"{stem}_cleaned_raw.fif"
    entry = {}
    if exclude == "eog":
        exclude, scores = sep.find_bads_eog(raw, ch_name=eog_channels)
        entry["eog_scores"] = np.round(np.asarray(scores, dtype=float), 4).tolist()
        if not exclude:
            own = sep._excluded(None)
            warnings.warn(
                "no source follows the EOG (find_bads_eog flagged none at |r| >= 0.5), so "
                + (
                    f"{name} is the recording unchanged"
                    if not own
                    else f"{name} lacks only the model's own exclude {own}"
                )
                + ". Pass --exclude with indices to remove sources anyway.",
                RuntimeWarning,
                stacklevel=2,
            )
    # The model's own sep.exclude (saved with it) is removed too, as apply does.
    entry["excluded"] = sep._excluded(exclude)
    return sep.apply(raw, exclude), entry
