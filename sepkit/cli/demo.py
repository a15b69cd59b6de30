"""``sepkit demo``: separate a built-in audio mixture and a semi-synthetic EEG
recording, no files or downloads needed.

Audio: two sources synthesised at run time (a harmonic voice-like tone with a
gliding pitch and syllable-rate envelope, and band-limited noise bursts) are
mixed into 2 microphones at 16 kHz (instantaneous mixing, 30 dB SNR).
EEG: a 19-channel 10-20 recording at 256 Hz from sepkit.datasets.make_eeg
(dipoles in a spherical head: alpha, blinks, muscle, ...).

Both are separated with IVAESeparator and scored against the known sources.
Written to --out (default ./sepkit-demo/): the separated sources (WAV, FIF),
metrics.json, and figures (PNG): waveforms and spectrograms, training curves,
true-vs-estimated correlation matrices, EEG topographies. They are written together
or not at all (a failed or interrupted run changes nothing), and with --force they
replace an earlier run's files as a whole (figures it does not draw are removed).
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path

import numpy as np

from ._common import (
    OutputSet,
    add_common,
    check_targets,
    check_writable,
    make_output_folder,
    remove_empty_folders,
    say,
    seed_arg,
    show_progress,
    write_json,
)

AUDIO_RATE = 16000.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="separate a built-in audio mixture and EEG recording; write sources, "
        "metrics and figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default="sepkit-demo",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    p.add_argument(
        "--fast", action="store_true", help="tiny problem (a few seconds), for smoke tests"
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    add_common(p)
    return p


def synthesize_sources(duration: float, sample_rate: float, random_state=0) -> np.ndarray:
    """Two audio-like sources with different non-stationarity, unit variance.

    Parameters
    ----------
    duration : float
        Seconds.
    sample_rate : float
        Hz (at least 8000: the noise band is 1.5-3.5 kHz).
    random_state : int or None

    Returns
    -------
    S : ndarray, shape (2, n_times), float32
        Row 0: a harmonic tone (8 partials, pitch gliding around 140 Hz) with
        a syllable-rate (2.5-3.5 Hz) envelope; row 1: band-limited noise in
        on/off bursts of 200 ms. Their loudness changes at different times,
        which is what the iVAE's window-indexed prior exploits.
    """
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(random_state)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    rate = rng.uniform(2.5, 3.5)
    voice *= np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 2
    sos = butter(4, [1500.0, 3500.0], "bandpass", fs=sample_rate, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    block = int(0.2 * sample_rate)
    gates = (rng.uniform(size=n // block + 1) > 0.5).repeat(block)[:n].astype(float)
    noise *= uniform_filter1d(gates, max(1, block // 8))
    S = np.stack([voice, noise])
    return (S / S.std(axis=1, keepdims=True)).astype(np.float32)


def _settings(fast: bool) -> dict:
    if fast:
        return dict(
            audio_seconds=1.0,
            eeg_sources=4,
            eeg_seconds=10.0,
        )
    # Full demo: about 20 s of fitting on one CPU core; enough for MCC > 0.9.
    return dict(
        audio_seconds=4.0,
        eeg_sources=6,
        eeg_seconds=60.0,
    )


def _targets(out: Path, cfg: dict, plots: bool) -> dict:
    t = dict(
        audio_mix=out / "audio_mixture.wav",
        audio_sources=[out / f"audio_source_s{i + 1}.wav" for i in range(2)],
        eeg_sources=out / "eeg_sources_raw.fif",
        metrics=out / "metrics.json",
    )
    if plots:
        for name in (
            "audio_sources",
            "audio_training",
            "audio_correlation",
            "eeg_sources",
            "eeg_training",
            "eeg_correlation",
            "eeg_topographies",
        ):
            t[f"png_{name}"] = out / f"{name}.png"
    return t


def _flat(targets: dict) -> list[Path]:
    out = []
    for v in targets.values():
        out.extend(v if isinstance(v, list) else [v])
    return out


def _match_and_scale(images: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Estimates reordered and rescaled to match the source images, float32."""
    from ..metrics import find_permutation

    perm = np.asarray(find_permutation(images, est, criterion="correlation"))
    Z = est[perm]
    # The iVAE recovers sources up to scale and sign: fix both against the
    # reference microphone by least squares, so the WAVs sound like the images.
    gains = np.sum(Z * images, axis=1) / np.sum(Z * Z, axis=1)
    return (Z * gains[:, None]).astype(np.float32)


def _plot_audio(sep, images, est, Z, targets: dict, force: bool) -> None:
    """Save the audio figures: sources, training curve, correlation matrix."""
    from ..io import Recording
    from ..viz import plot_correlation_matrix, plot_sources, plot_training_curve, save_figure

    z_rec = Recording(Z, AUDIO_RATE, ("IVAE s1", "IVAE s2"), "audio")
    save_figure(plot_sources(z_rec), targets["png_audio_sources"], overwrite=force)
    save_figure(
        plot_training_curve(sep, title="audio fit"),
        targets["png_audio_training"],
        overwrite=force,
    )
    save_figure(
        plot_correlation_matrix(images, est),
        targets["png_audio_correlation"],
        overwrite=force,
    )


def _audio_demo(args, cfg: dict, targets: dict, out: Path, plots: bool, verbose: bool) -> dict:
    """Separate the synthetic 2-microphone mixture, write its files; return its metrics."""
    from ..datasets import make_audio_mixture
    from ..io import Recording, write_audio, write_sources
    from ..metrics import mcc, si_sdr
    from ..separator import IVAESeparator

    say(args, f"[1/2] audio: 2 sources, 2 microphones, {cfg['audio_seconds']:g} s at 16 kHz")
    S = synthesize_sources(cfg["audio_seconds"], AUDIO_RATE, args.seed)
    mix = make_audio_mixture(S, 2, sample_rate=AUDIO_RATE, snr_db=30.0, random_state=args.seed)
    # Scale to a peak of 0.5 so that the WAV files hold the mixture unclipped.
    gain = 0.5 / float(np.abs(mix.mixture).max())
    images = (mix.images * gain).astype(np.float32)
    rec = Recording(mix.mixture * gain, AUDIO_RATE, ("mic0", "mic1"), "audio")
    # Windows of 0.1 s: short enough for the sources' loudness to differ
    # between windows (the non-stationarity identifiability rests on).
    # domain="time": the mixing is instantaneous (and saturating); mixing="auto"
    # then fits the linear family with the microphones' unwarping where it finds
    # saturation ("tf" is for convolutive rooms).
    sep_a = IVAESeparator(
        2,
        domain="time",
        window=0.1,
        random_state=args.seed,
        device="cpu",
        verbose=verbose,
    )
    t0 = time.perf_counter()
    est = sep_a.fit(rec).transform(rec)
    fit_s = time.perf_counter() - t0
    Z = _match_and_scale(images, est.data)
    sdr = np.asarray(si_sdr(images, Z), dtype=float)
    sdr_mix = np.asarray(si_sdr(images, np.repeat(rec.data[:1], 2, axis=0)), dtype=float)
    result = dict(
        n_sources=2,
        seconds=cfg["audio_seconds"],
        sample_rate=AUDIO_RATE,
        mcc=float(mcc(images, est.data)),
        si_sdr_db=sdr.tolist(),
        si_sdr_mixture_db=sdr_mix.tolist(),
        si_sdri_db=float(np.mean(sdr - sdr_mix)),
        fit_seconds=fit_s,
        n_steps=sep_a.n_steps_run_,
    )
    write_audio(rec, targets["audio_mix"], overwrite=args.force)
    write_sources(
        Recording(Z, AUDIO_RATE, ("s1", "s2"), "audio"),
        out,
        stem="audio_source",
        overwrite=args.force,
    )
    if plots:
        _plot_audio(sep_a, images, est.data, Z, targets, args.force)
    return result


def _plot_eeg(sep, S_eeg, Z_eeg, targets: dict, force: bool) -> None:
    """Save the EEG figures: sources, training curve, correlation matrix, topographies."""
    from ..viz import (
        plot_correlation_matrix,
        plot_sources,
        plot_topographies,
        plot_training_curve,
        save_figure,
    )

    names = [f"IVAE{k:03d}" for k in range(len(Z_eeg))]
    save_figure(
        plot_sources(Z_eeg, 256.0, names=names), targets["png_eeg_sources"], overwrite=force
    )
    save_figure(
        plot_training_curve(sep, title="EEG fit"),
        targets["png_eeg_training"],
        overwrite=force,
    )
    save_figure(
        plot_correlation_matrix(S_eeg, Z_eeg),
        targets["png_eeg_correlation"],
        overwrite=force,
    )
    save_figure(plot_topographies(sep), targets["png_eeg_topographies"], overwrite=force)


def _eeg_demo(args, cfg: dict, targets: dict, plots: bool, verbose: bool) -> dict:
    """Separate the semi-synthetic EEG, write its sources; return its metrics."""
    from ..datasets import make_eeg
    from ..metrics import mcc
    from ..separator import IVAESeparator

    n_eeg = cfg["eeg_sources"]
    say(
        args, f"[2/2] EEG: {n_eeg} sources, 19 channels (10-20), {cfg['eeg_seconds']:g} s at 256 Hz"
    )
    raw, S_eeg, _ = make_eeg(
        n_eeg, duration=cfg["eeg_seconds"], sample_rate=256.0, random_state=args.seed
    )
    sep_e = IVAESeparator(
        n_eeg,
        window=1.0,
        random_state=args.seed,
        device="cpu",
        verbose=verbose,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # make_eeg has no slow drifts, so the high-pass warning does not apply.
        warnings.filterwarnings("ignore", message="The EEG has a high-pass edge")
        sep_e.fit(raw)
        Z_eeg = sep_e.transform(raw).get_data()
    fit_s = time.perf_counter() - t0
    result = dict(
        n_sources=n_eeg,
        n_channels=len(raw.ch_names),
        seconds=cfg["eeg_seconds"],
        sample_rate=256.0,
        source_kinds=raw.info["description"],
        mcc=float(mcc(S_eeg, Z_eeg)),
        fit_seconds=fit_s,
        n_steps=sep_e.n_steps_run_,
        mixing=sep_e.mixing_,  # "linear": the EEG default (no network training)
    )
    sep_e.save_sources(raw, targets["eeg_sources"], overwrite=args.force)
    if plots:
        _plot_eeg(sep_e, S_eeg, Z_eeg, targets, args.force)
    return result


def _print_summary(args, results: dict, out: Path) -> None:
    """Print the results table (stdout, even with --quiet: it is the result)."""
    a, e = results["audio"], results["eeg"]
    n_eeg = e["n_sources"]
    print(f"sepkit demo results (seed {args.seed}{', fast' if args.fast else ''}):")
    print(f"  {'task':<28} {'MCC':>6} {'SI-SDR dB':>10} {'SI-SDRi dB':>11} {'fit s':>6}")
    print(
        f"  {'audio, 2 src, 2 mics':<28} {a['mcc']:>6.3f} {np.mean(a['si_sdr_db']):>10.1f} "
        f"{a['si_sdri_db']:>11.1f} {a['fit_seconds']:>6.1f}"
    )
    print(
        f"  {f'EEG, {n_eeg} src, 19 ch':<28} {e['mcc']:>6.3f} {'-':>10} {'-':>11} "
        f"{e['fit_seconds']:>6.1f}"
    )
    print(f"  outputs in {out}/ ({results['total_seconds']:.0f} s in all)")


def run(args) -> int:
    """Run ``sepkit demo``; returns the exit code."""
    cfg = _settings(args.fast)
    out = Path(args.out)
    plots = not args.no_plots
    check_targets(_flat(_targets(out, cfg, plots)), args.force)
    check_writable(out)
    verbose = show_progress(args)
    results = dict(seed=args.seed, fast=bool(args.fast))
    t_all = time.perf_counter()
    made = make_output_folder(out)
    try:
        # One output set, written together or not at all (audit: an interrupted --force
        # run left new WAVs beside the earlier run's metrics and figures, and a run
        # without --plots left the earlier run's figures).
        with OutputSet(out, "demo", _DEMO_NAMES, what="the demo's outputs") as staged:
            targets = _targets(staged.path, cfg, plots)
            results["audio"] = _audio_demo(args, cfg, targets, staged.path, plots, verbose)
            results["eeg"] = _eeg_demo(args, cfg, targets, plots, verbose)
            results["total_seconds"] = time.perf_counter() - t_all
            write_json(results, targets["metrics"])
    except BaseException:
        remove_empty_folders(made)
        raise
    _print_summary(args, results, out)
    return 0


# Every file a demo run writes (with or without figures): an earlier run's set.
_DEMO_NAMES = re.compile(
    r"audio_mixture\.wav|audio_source_s\d+\.wav|eeg_sources_raw\.fif|metrics\.json|"
    r"(audio|eeg)_(sources|training|correlation|topographies)\.png"
)
