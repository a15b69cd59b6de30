"""``sepkit evaluate``: score separated files against references.

Each side (``--ref``, ``--est``) is either one directory (its audio files, sorted by name)
or a list of files. With several files, every file is one source; with a single file,
every channel of it is one source. Multichannel files per source are treated as source
*images* (BSS Eval ``images`` mode, ISR available; SDR-type scores are averaged over
channels). The estimates are matched to the references first (Hungarian algorithm, on
SIR when a BSS Eval metric is asked for, else on SI-SDR), then a table per source and the
mean are printed, and optionally written as JSON and CSV.

Files are read with :func:`sepkit.io.read_audio` (float32 samples: exact for 8/16/24-bit
PCM and 32-bit float files; a truncated, empty or corrupt file is an error) and scored in
float64.

Scores that are not finite are reported as they are: ``inf`` for a perfect estimate
(zero error), ``nan`` where a signal is silent (with one warning naming it). The mean is
taken over the defined (non-NaN) scores, so it is ``inf`` when one of them is ``inf``, and
``nan`` only when none is defined. The JSON file is strict JSON (RFC 8259, which has no
NaN or Infinity): such values are written as the strings ``"inf"``, ``"-inf"`` and
``"nan"``; the CSV file writes them as ``inf``/``nan``, which ``float()`` and pandas read.

``--json`` and ``--csv`` are checked before anything is read: an existing file is
refused without ``--force``, an input file is never written over (not even with
``--force``), and a folder, a missing or read-only folder is an error. Both files are
written atomically (a temp file, then a rename), so an interrupted run leaves the
earlier files as they were.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from ._common import add_common, check_targets, say

PER_SOURCE = ("si_sdr", "sd_sdr", "snr", "si_sdri")
BSS = ("sdr", "sir", "sar", "isr")
ALL_METRICS = PER_SOURCE + BSS
MATCH_CHOICES = ("auto", "sir", "si_sdr", "correlation", "none")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "evaluate",
        help="score separated sources against references (SI-SDR, BSS Eval SDR/SIR/SAR)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ref", nargs="+", required=True, metavar="DIR_OR_FILES", help="reference sources"
    )
    p.add_argument(
        "--est", nargs="+", required=True, metavar="DIR_OR_FILES", help="estimated sources"
    )
    p.add_argument(
        "--mix", metavar="FILE", help="the mixture, needed for si_sdri (SI-SDR improvement)"
    )
    p.add_argument(
        "--metrics",
        default="si_sdr,sdr,sir,sar",
        help=f"comma-separated list among {','.join(ALL_METRICS)} (default: %(default)s)",
    )
    p.add_argument(
        "--match",
        default="auto",
        choices=MATCH_CHOICES,
        help="criterion for matching estimates to references; auto = sir when a BSS Eval "
        "metric is asked for, else si_sdr; none keeps the given order (default: auto)",
    )
    p.add_argument(
        "--filter-length",
        type=int,
        default=512,
        help="BSS Eval distortion filter taps (default: %(default)s)",
    )
    p.add_argument(
        "--mix-channel",
        type=int,
        default=0,
        help="channel of a multichannel mixture used as reference channel for mono "
        "sources (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help='write the scores as JSON (strict JSON: inf and nan are the strings "inf", "nan")',
    )
    p.add_argument("--csv", metavar="FILE", help="write the scores as CSV")
    add_common(p)
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _collect(items: list[str], option: str) -> list[Path]:
    """Expand ``--ref``/``--est`` values into a list of files."""
    if len(items) == 1 and Path(items[0]).is_dir():
        # Every suffix read_audio reads (audit: MP3 files were read one by one, but a
        # folder of them "held no audio files"). Imported here: soundfile, not for --help.
        from ..io import AUDIO_EXTENSIONS

        folder = Path(items[0])
        files = sorted(
            f for f in folder.iterdir() if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file()
        )
        if not files:
            raise FileNotFoundError(
                f"{option} {folder}: the directory holds no audio files "
                f"({', '.join(AUDIO_EXTENSIONS)})."
            )
        return files
    files = [Path(x) for x in items]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{option}: {f} does not exist or is not a file.")
    seen = {}
    for f in files:  # the same file twice is a typo, and its matches would be ambiguous
        first = seen.setdefault(f.resolve(), f)
        if first is not f:
            raise ValueError(
                f"{option} names {first} twice (as {first} and {f}). Pass each file once."
            )
    return files


def _read(path: Path, option: str) -> tuple[np.ndarray, int | float]:
    """Read one file as (n_channels, n_times) float64 and its sample rate.

    Goes through :func:`sepkit.io.read_audio`, so a truncated, empty or corrupt file is
    a clear error (naming ``option`` and the file) rather than a shorter signal.
    """
    from ..io import SUPPORTED_EEG_EXTENSIONS, read_audio

    if any(path.name.lower().endswith(ext) for ext in SUPPORTED_EEG_EXTENSIONS):
        raise ValueError(
            f"{option}: {path} is an EEG file; sepkit evaluate scores audio (SI-SDR, BSS "
            "Eval). For EEG without ground truth use the recipes' dipolarity and MIR "
            "(recipes/eeg_real), or sepkit.metrics.mcc against known sources."
        )
    try:
        rec = read_audio(path)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from exc
    rate = rec.sample_rate
    return rec.data.astype(np.float64), int(rate) if float(rate).is_integer() else rate


def _load_side(files: list[Path], option: str):
    """Return (signals (n_sources, n_channels, n_times) list form, names, rates)."""
    loaded = [(f, *_read(f, option)) for f in files]
    if len(loaded) == 1 and loaded[0][1].shape[0] > 1:
        f, x, rate = loaded[0]
        names = [f"{f.name}[ch{c}]" for c in range(x.shape[0])]
        return [x[c : c + 1] for c in range(x.shape[0])], names, [(f, rate)] * len(names)
    channels = {f: x.shape[0] for f, x, _ in loaded}
    if len(set(channels.values())) > 1:
        detail = ", ".join(f"{f} ({c} ch)" for f, c in channels.items())
        raise ValueError(
            f"{option} files have different channel counts: {detail}. Every source "
            "file must have the same number of channels."
        )
    return [x for _, x, _ in loaded], [f.name for f, _, _ in loaded], [(f, r) for f, _, r in loaded]


def _parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--metrics is empty; pass some of {','.join(ALL_METRICS)}.")
    bad = [m for m in names if m not in ALL_METRICS]
    if bad:
        raise ValueError(
            f"--metrics: unknown metric(s) {', '.join(bad)}; allowed are {','.join(ALL_METRICS)}."
        )
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else str(v)


def _jsonable(v: float):
    # Strict JSON has no NaN/Infinity; keep them readable as strings.
    return float(v) if math.isfinite(v) else str(v)


def _mean(v: np.ndarray) -> float:
    """Mean of the defined (non-NaN) scores: inf when one is inf, NaN when none is defined."""
    defined = v[~np.isnan(v)]
    if not defined.size:
        return math.nan
    with np.errstate(invalid="ignore"):  # inf and -inf together: NaN, said as such
        return float(defined.mean())


def _load_mix(path: str | None):
    """Read ``--mix``; return (mixture (n_channels, n_times) or None, its [(path, rate)])."""
    if not path:
        return None, []
    mix_path = Path(path)
    if not mix_path.is_file():
        raise FileNotFoundError(f"--mix: {mix_path} does not exist or is not a file.")
    mix, mix_rate = _read(mix_path, "--mix")
    return mix, [(mix_path, mix_rate)]


def _common_rate(rates: list[tuple[Path, int]]) -> int:
    """The one sample rate of all files; refuse mixed rates, naming the files at each."""
    by_rate: dict[int, list[str]] = {}
    for f, r in rates:
        by_rate.setdefault(r, [])
        if str(f) not in by_rate[r]:
            by_rate[r].append(str(f))
    if len(by_rate) > 1:
        detail = "; ".join(f"{r} Hz: {', '.join(fs)}" for r, fs in sorted(by_rate.items()))
        raise ValueError(f"The files have different sample rates ({detail}). Resample them.")
    return next(iter(by_rate))


def _check_sources(args, metrics, ref, est, mix, names, files) -> bool:
    """Check that references, estimates and mixture fit together; return ``images``.

    ``names`` and ``files`` are the (reference, estimate) names and file lists, for the
    messages. ``images`` is True for multichannel sources (BSS Eval images mode).
    """
    (ref_names, est_names), (ref_files, est_files) = names, files
    n_ch_ref, n_ch_est = ref[0].shape[0], est[0].shape[0]
    if n_ch_ref != n_ch_est:
        raise ValueError(
            f"The references have {n_ch_ref} channel(s) per source ({ref_files[0]}) but the "
            f"estimates have {n_ch_est} ({est_files[0]}); they must match."
        )
    n_ref, n_est = len(ref), len(est)
    if n_est < n_ref or (args.match == "none" and n_est != n_ref):
        raise ValueError(
            f"Got {n_ref} reference source(s) ({', '.join(ref_names)}) but {n_est} "
            f"estimate(s) ({', '.join(est_names)}); give one estimate per reference"
            + (" (extra estimates are allowed unless --match none)." if n_est >= n_ref else ".")
        )
    images = n_ch_ref > 1
    if "isr" in metrics and not images:
        raise ValueError(
            "--metrics isr needs multichannel source images; the sources are mono. "
            "Drop isr or pass one multichannel file per source."
        )
    if mix is not None and images and mix.shape[0] != n_ch_ref:
        raise ValueError(
            f"--mix {args.mix} has {mix.shape[0]} channel(s) but the sources have "
            f"{n_ch_ref}; they must match."
        )
    if mix is not None and not images and not 0 <= args.mix_channel < mix.shape[0]:
        raise ValueError(
            f"--mix-channel {args.mix_channel} is out of range for {args.mix} with "
            f"{mix.shape[0]} channel(s)."
        )
    return images


def _check_outputs(args, inputs: list[Path]) -> None:
    """Check ``--json``/``--csv`` before anything is read or computed.

    Refuses a folder, a missing or unwritable folder, a special file, one of the
    ``inputs`` (even with ``--force``), both options naming one file, and (without
    ``--force``) an existing file.
    """
    outputs = [(opt, Path(p)) for opt, p in (("--json", args.json), ("--csv", args.csv)) if p]
    if len(outputs) == 2 and os.path.realpath(args.json) == os.path.realpath(args.csv):
        raise ValueError(
            f"--json {args.json} and --csv {args.csv} name the same file; give each its own."
        )
    for opt, path in outputs:
        ext = opt.lstrip("-")
        if path.is_dir():
            raise ValueError(
                f"{opt} {path} is a folder; pass a file path, e.g. {path / ('scores.' + ext)}."
            )
        if path.exists() and not path.is_file():
            raise ValueError(
                f"{opt} {path} exists and is not a regular file (a device, FIFO or socket); "
                f"pass the path of a .{ext} file."
            )
        if path.exists() and any(f.exists() and os.path.samefile(path, f) for f in inputs):
            raise ValueError(
                f"{opt} {path} is one of the input files; sepkit evaluate never writes over "
                "its inputs, not even with --force. Pass another file name."
            )
        _check_folder(opt, path)
    check_targets([p for _, p in outputs], args.force)


def _check_folder(opt: str, path: Path) -> None:
    """The folder ``atomic_write`` would write ``path`` in exists and takes a new file."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{opt} {path}: the folder {folder} does not exist. Create it first, or pass a "
            "path in an existing folder."
        )
    try:  # a real probe: os.access is wrong for root and read-only file systems
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ValueError(
            f"{opt} {path}: cannot write in the folder {folder} ({exc.strerror or exc}). "
            "Pass a path in a writable folder."
        ) from exc
    os.close(fd)
    os.remove(probe)


def _trim(args, ref, est, mix, images: bool):
    """Stack the sources trimmed to the shortest signal; return (R, E, mix, n_samples).

    ``R`` is (n_ref, C, T) and ``E`` (n_est, C, T); a mixture for mono sources keeps
    only ``args.mix_channel``, the reference channel.
    """
    mix_channel = args.mix_channel
    lengths = [x.shape[-1] for x in ref + est] + ([mix.shape[-1]] if mix is not None else [])
    n = min(lengths)
    if max(lengths) != n:
        say(args, f"note: signals trimmed to the shortest, {n} samples.")
    R = np.stack([x[:, :n] for x in ref])  # (n_ref, C, T)
    E = np.stack([x[:, :n] for x in est])  # (n_est, C, T)
    if mix is not None:
        mix = mix[:, :n] if images else mix[mix_channel : mix_channel + 1, :n]
    return R, E, mix, n


def _bss_eval(R, estimates, images: bool, filter_length: int, permute: bool):
    """BSS Eval of ``estimates`` against ``R`` (mono sources drop their channel axis)."""
    from .. import metrics as M  # torch: imported when scoring, not for --help

    return M.bss_eval(
        R if images else R[:, 0],
        estimates if images else estimates[:, 0],
        filter_length=filter_length,
        compute_permutation=permute,
        images=images,
    )


def _match(R, E, criterion: str, images: bool, filter_length: int):
    """Match estimates to references; return (perm, BSS Eval result or None).

    The BSS Eval result comes with ``criterion="sir"`` only, already in reference order.
    """
    from .. import metrics as M  # torch: imported when scoring, not for --help

    bss = None
    if criterion == "sir":
        # Matching on SIR, as mir_eval and fast_bss_eval do; scores are in reference order.
        bss = _bss_eval(R, E, images, filter_length, permute=True)
        perm = np.asarray(bss.perm)
    elif criterion == "none":
        perm = np.arange(len(R))
    elif criterion == "si_sdr":
        # Pairwise SI-SDR (n_ref, n_est), averaged over channels for images.
        perm = M.solve_permutation(M.si_sdr(R[:, None], E[None, :]).mean(-1))
    else:
        score = np.abs(M.correlation_matrix(R.reshape(len(R), -1), E.reshape(len(E), -1)))
        perm = M.solve_permutation(np.nan_to_num(score, nan=-1.0))
    return perm, bss


def _score(metrics, R, Em, mix, bss) -> dict[str, np.ndarray]:
    """Per-source scores ``{metric: (n_ref,)}`` of the matched estimates ``Em``."""
    from .. import metrics as M  # torch: imported when scoring, not for --help

    table: dict[str, np.ndarray] = {}
    for m in metrics:
        if m in BSS:
            table[m] = np.asarray(getattr(bss, m), dtype=np.float64)
        elif m == "si_sdri":
            table[m] = M.si_sdr_improvement(R, Em, mix[None]).mean(-1)
        else:
            table[m] = getattr(M, m)(R, Em).mean(-1)
    return table


def _silent_names(R, E, mix, ref_names, est_names) -> list[str]:
    """The signals (any channel, mean removed) below the metrics' silence threshold."""
    from .. import metrics as M  # torch: imported when scoring, not for --help

    def silent(X):  # (n, C, T) -> (n,): all zero or constant, as sepkit.metrics judges
        rms = np.sqrt(np.mean((X - X.mean(-1, keepdims=True)) ** 2, axis=-1))
        return (rms <= M._SILENT_REL * np.abs(X).max(-1)).any(-1)

    names = [f"--ref {n}" for n, s in zip(ref_names, silent(R), strict=True) if s]
    names += [f"--est {n}" for n, s in zip(est_names, silent(E), strict=True) if s]
    if mix is not None and silent(mix[None])[0]:
        names.append("--mix")
    return names


def _compute(args, metrics, R, E, mix, images: bool, names):
    """Match and score; return (criterion, perm, table), each warning said once.

    The metrics warn about a silent signal at every call (matching, then scoring, and
    once per pair when matching), so their warnings are collected here and said once:
    the silent signals by name, any other warning once per distinct message.
    """
    criterion = args.match
    if criterion == "auto":
        criterion = "sir" if any(m in BSS for m in metrics) else "si_sdr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        perm, bss = _match(R, E, criterion, images, args.filter_length)
        Em = E[perm]
        if bss is None and any(m in BSS for m in metrics):
            bss = _bss_eval(R, Em, images, args.filter_length, permute=False)
        table = _score(metrics, R, Em, mix, bss)
    _warn_once(caught, _silent_names(R, E, mix if "si_sdri" in metrics else None, *names))
    return criterion, perm, table


def _warn_once(caught, silent: list[str]) -> None:
    """Say the ``caught`` warnings again, each distinct one once; silence by ``silent`` names."""
    from .. import metrics as M  # torch: imported when scoring, not for --help

    seen = set()
    for w in caught:
        key = (w.category, str(w.message))
        if issubclass(w.category, M.SilentSignalWarning) and silent:
            key = M.SilentSignalWarning  # one warning names every silent signal
            if key not in seen:
                warnings.warn(
                    f"silent signal(s) (all zero or constant): {', '.join(silent)}; the "
                    "scores that involve them are NaN and the mean leaves them out.",
                    M.SilentSignalWarning,
                    stacklevel=3,
                )
        elif key not in seen:  # includes a silence the name check misses: its own words
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        seen.add(key)


def _write_csv(path, ref_names, matched_names, metrics, table, means) -> None:
    """One row per reference, then the mean; values as Python's ``repr`` of floats."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "estimate", *metrics])
        for i, name in enumerate(ref_names):
            w.writerow([name, matched_names[i], *(repr(float(table[m][i])) for m in metrics)])
        w.writerow(["mean", "", *(repr(means[m]) for m in metrics)])


def run(args) -> int:
    """Run ``sepkit evaluate``; returns the exit code."""
    metrics = _parse_metrics(args.metrics)
    if "si_sdri" in metrics and not args.mix:
        raise ValueError("--metrics si_sdri needs the mixture: pass --mix FILE.")
    if args.filter_length < 1:
        raise ValueError(f"--filter-length must be >= 1, got {args.filter_length}.")

    ref_files, est_files = _collect(args.ref, "--ref"), _collect(args.est, "--est")
    _check_outputs(args, ref_files + est_files + ([Path(args.mix)] if args.mix else []))
    ref, ref_names, ref_rates = _load_side(ref_files, "--ref")
    est, est_names, est_rates = _load_side(est_files, "--est")
    mix, mix_rates = _load_mix(args.mix)
    rate = _common_rate(ref_rates + est_rates + mix_rates)
    images = _check_sources(
        args, metrics, ref, est, mix, (ref_names, est_names), (ref_files, est_files)
    )
    R, E, mix, n = _trim(args, ref, est, mix, images)
    criterion, perm, table = _compute(args, metrics, R, E, mix, images, (ref_names, est_names))

    matched_names = [est_names[i] for i in perm]
    means = {m: _mean(v) for m, v in table.items()}
    _print_table(ref_names, matched_names, metrics, table, means)

    payload = None
    if args.json:
        payload = {
            "sample_rate": rate,
            "n_samples": n,
            "reference": ref_names,
            "matched_estimate": matched_names,
            "reference_files": [str(f) for f in ref_files],
            "estimate_files": [str(f) for f in est_files],
            "permutation": [int(i) for i in perm],
            "match_criterion": criterion,
            "per_source": {m: [_jsonable(v) for v in table[m]] for m in metrics},
            "mean": {m: _jsonable(v) for m, v in means.items()},
        }
    # Both files or neither: each goes to a temp file, renamed only when both are written.
    with ExitStack() as stack:
        if payload is not None:
            with open(stack.enter_context(atomic_write(args.json)), "w") as fh:
                fh.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        if args.csv:
            tmp = stack.enter_context(atomic_write(args.csv))
            _write_csv(tmp, ref_names, matched_names, metrics, table, means)
    return 0


def _print_table(ref_names, est_names, metrics, table, means) -> None:
    label = {"si_sdr": "SI-SDR", "sd_sdr": "SD-SDR", "si_sdri": "SI-SDRi"}
    head = ["reference", "estimate", *(label.get(m, m.upper()) + " dB" for m in metrics)]
    rows = [
        [r, e, *(_fmt(float(table[m][i])) for m in metrics)]
        for i, (r, e) in enumerate(zip(ref_names, est_names, strict=True))
    ]
    # A silent (failed) estimate is NaN and left out of the mean: say over how many
    # (audit: a failed source's absence read as a better mean).
    n = len(ref_names)
    defined = min(int(np.sum(~np.isnan(np.asarray(table[m], float)))) for m in metrics)
    rows.append(["mean", "" if defined == n else f"(over {defined} of {n})",
                 *(_fmt(means[m]) for m in metrics)])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join((f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}") for i, w in enumerate(widths))
    print(line.format(*head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line.format(*r))
