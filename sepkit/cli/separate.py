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
import time
import warnings
from pathlib import Path

from .._recipe import fitted_model
from ._common import (
    add_common,
    add_model_options,
    check_targets,
    input_kind,
    make_output_folder,
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


def run(args) -> int:
    _check_steps(args)
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        input_kind(p)
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist.")
    stems = [stem_of(p) for p in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"inputs share a file name stem ({stems}); their outputs would collide. Rename "
            "them or separate them into different --out folders."
        )
    pretrained = load_model(args.model) if args.model else None
    fits = pretrained is None or args.fine_tune
    n_sources = pretrained.n_sources if pretrained is not None else args.n_sources
    verbose = show_progress(args)

    exclude = parse_exclude(args.exclude, n_sources)
    eog_channels = None if args.eog_channels is None else args.eog_channels.split(",")

    # Everything this run would write, checked before any work.
    loaded = []
    targets = []
    for path, stem in zip(inputs, stems, strict=True):
        say(args, f"reading {path}")
        # Every data channel: the EOG leads for --exclude eog, and all of them in
        # the cleaned recording (the fit and the sources take the EEG only).
        X, kind = read_input(path, eeg_picks=None)
        _check_exclude_input(path, X, kind, exclude, eog_channels)
        eeg_pos = kind == "eeg" and _has_positions(X)
        loaded.append((path, stem, X, kind, eeg_pos))
        targets += _outputs(out, stem, kind, n_sources, args, fits, eeg_pos)
    check_targets(targets, args.force)
    made = make_output_folder(out)
    try:
        _separate_all(
            args, out, loaded, pretrained, fits, n_sources, verbose, (exclude, eog_channels)
        )
    except BaseException:
        remove_empty_folders(made)
        raise
    return 0


def _separate_all(args, out, loaded, pretrained, fits, n_sources, verbose, removal) -> None:
    """Fit (or apply) and write the outputs of every input read by :func:`run`.

    ``removal``: (``--exclude`` parsed, ``--eog-channels`` as a list or None).
    """
    exclude, eog_channels = removal
    from ..io import Recording, write_sources
    from ..separator import IVAESeparator
    from ..viz import plot_sources, plot_topographies, plot_training_curve, save_figure

    for path, stem, X, kind, eeg_pos in loaded:
        t0 = time.perf_counter()
        if pretrained is not None and not args.fine_tune:
            sep = pretrained
        else:
            if pretrained is not None:
                sep = IVAESeparator(**{**pretrained.get_params(), "device": "cpu"})
                init = pretrained
            else:
                sep = IVAESeparator(n_sources, device="cpu", **model_options(args))
                init = None
            params = dict(random_state=args.seed, verbose=verbose, checkpoint_dir=None)
            if args.steps is not None:
                params["n_steps"] = args.steps
            if args.window is not None:
                params["window"] = args.window
            sep.set_params(**params)
            if init is not None and args.resample:
                X = init._match_sample_rate(X, True)
            say(args, f"fitting {n_sources} sources on {path.name}")
            sep.fit(X, init=init)
        with warnings.catch_warnings():
            if args.quiet:
                warnings.simplefilter("ignore")
            S = sep.transform(X, resample=args.resample)
        seconds = time.perf_counter() - t0
        info = dict(
            input=str(path),
            kind=kind,
            model=args.model,
            fine_tuned=bool(args.fine_tune),
            n_sources=n_sources,
            sample_rate=sep.sample_rate_,
            seconds=seconds,
        )
        if fits:
            info["n_steps"] = sep.n_steps_run_
            info.update(fitted_model(sep))
            info["highpass"] = sep.highpass
            info["lowpass"] = sep.lowpass
            info["final_loss"] = sep.history_[-1]["loss"]
            sep.save(out / f"{stem}_model.safetensors", overwrite=args.force)
        if kind == "audio":
            write_sources(S, out, stem=stem, overwrite=args.force)
            rate, data, names = S.sample_rate, S.data, S.ch_names
        else:
            from ..io.eeg import _save_fif_atomic

            # Existing targets were refused above unless --force.
            _save_fif_atomic(S, out / f"{stem}_sources_raw.fif")
            rate, data, names = S.info["sfreq"], S.get_data(), S.ch_names
            if exclude is not None:
                target = out / f"{stem}_cleaned_raw.fif"
                info.update(_write_cleaned(sep, X, exclude, target, eog_channels))
        if args.plots:
            rec = Recording(data, rate, tuple(names), "other")
            save_figure(plot_sources(rec), out / f"{stem}_sources.png", overwrite=args.force)
            losses = [h.get("loss", float("nan")) for h in sep.history_] if fits else []
            if any(math.isfinite(v) for v in losses):
                save_figure(
                    plot_training_curve(sep), out / f"{stem}_training.png", overwrite=args.force
                )
            if eeg_pos:
                fig = plot_topographies(sep, info=X if hasattr(X, "info") else None)
                save_figure(fig, out / f"{stem}_topographies.png", overwrite=args.force)
        write_json(info, out / f"{stem}_metrics.json")
        print(f"{path.name}: {n_sources} sources -> {out}/ ({seconds:.1f} s)")


def _write_cleaned(sep, raw, exclude, path: Path, eog_channels=None) -> dict:
    """Write ``raw`` without the sources ``exclude`` ("eog": find_bads_eog's); say which."""
    import numpy as np

    from ..io.eeg import _save_fif_atomic

    entry = {}
    if exclude == "eog":
        exclude, scores = sep.find_bads_eog(raw, ch_name=eog_channels)
        entry["eog_scores"] = np.round(np.asarray(scores, dtype=float), 4).tolist()
        if not exclude:
            own = sep._excluded(None)
            warnings.warn(
                "no source follows the EOG (find_bads_eog flagged none at |r| >= 0.5), so "
                + (
                    f"{path.name} is the recording unchanged"
                    if not own
                    else f"{path.name} lacks only the model's own exclude {own}"
                )
                + ". Pass --exclude with indices to remove sources anyway.",
                RuntimeWarning,
                stacklevel=2,
            )
    # The model's own sep.exclude (saved with it) is removed too, as apply does.
    entry["excluded"] = sep._excluded(exclude)
    _save_fif_atomic(sep.apply(raw, exclude), path)
    return entry
