"""``sepkit evaluate``: score separated files against references.

Each side (``--ref``, ``--est``) is either one directory (its audio files, sorted by name)
or a list of files. With several files, every file is one source; with a single file,
every channel of it is one source. Multichannel files per source are treated as source
*images* (BSS Eval ``images`` mode, ISR available; SDR-type scores are averaged over
channels). The estimates are matched to the references first (Hungarian algorithm, on
SIR when a BSS Eval metric is asked for, else on SI-SDR), then a table per source and the
mean are printed, and optionally written as JSON and CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from .. import metrics as M

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")
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
    p.add_argument("--json", metavar="FILE", help="write the scores as JSON")
    p.add_argument("--csv", metavar="FILE", help="write the scores as CSV")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _collect(items: list[str], option: str) -> list[Path]:
    """Expand ``--ref``/``--est`` values into a list of files."""
    if len(items) == 1 and Path(items[0]).is_dir():
        folder = Path(items[0])
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"{option} {folder}: the directory holds no audio files "
                f"({', '.join(AUDIO_SUFFIXES)})."
            )
        return files
    files = [Path(x) for x in items]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{option}: {f} does not exist or is not a file.")
    return files


def _read(path: Path) -> tuple[np.ndarray, int]:
    """Read one file as (n_channels, n_times) float64 and its sample rate."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises its own error types
        raise ValueError(f"Cannot read {path} as audio: {exc}") from exc
    return np.ascontiguousarray(data.T), int(rate)


def _load_side(files: list[Path], option: str):
    """Return (signals (n_sources, n_channels, n_times) list form, names, rates)."""
    loaded = [(f, *_read(f)) for f in files]
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


def run(args) -> int:
    """Run ``sepkit evaluate``; returns the exit code."""
    metrics = _parse_metrics(args.metrics)
    if "si_sdri" in metrics and not args.mix:
        raise ValueError("--metrics si_sdri needs the mixture: pass --mix FILE.")
    if args.filter_length < 1:
        raise ValueError(f"--filter-length must be >= 1, got {args.filter_length}.")

    ref_files, est_files = _collect(args.ref, "--ref"), _collect(args.est, "--est")
    ref, ref_names, ref_rates = _load_side(ref_files, "--ref")
    est, est_names, est_rates = _load_side(est_files, "--est")
    mix = None
    rates = ref_rates + est_rates
    if args.mix:
        mix_path = Path(args.mix)
        if not mix_path.is_file():
            raise FileNotFoundError(f"--mix: {mix_path} does not exist or is not a file.")
        mix, mix_rate = _read(mix_path)
        rates.append((mix_path, mix_rate))

    by_rate: dict[int, list[str]] = {}
    for f, r in rates:
        by_rate.setdefault(r, [])
        if str(f) not in by_rate[r]:
            by_rate[r].append(str(f))
    if len(by_rate) > 1:
        detail = "; ".join(f"{r} Hz: {', '.join(fs)}" for r, fs in sorted(by_rate.items()))
        raise ValueError(f"The files have different sample rates ({detail}). Resample them.")
    rate = next(iter(by_rate))

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

    lengths = [x.shape[-1] for x in ref + est] + ([mix.shape[-1]] if mix is not None else [])
    n = min(lengths)
    if max(lengths) != n:
        print(f"note: signals trimmed to the shortest, {n} samples.", file=sys.stderr)
    R = np.stack([x[:, :n] for x in ref])  # (n_ref, C, T)
    E = np.stack([x[:, :n] for x in est])  # (n_est, C, T)
    if mix is not None:
        mix = mix[:, :n] if images else mix[args.mix_channel : args.mix_channel + 1, :n]

    criterion = args.match
    if criterion == "auto":
        criterion = "sir" if any(m in BSS for m in metrics) else "si_sdr"

    def bss_eval(estimates, permute: bool):
        return M.bss_eval(
            R if images else R[:, 0],
            estimates if images else estimates[:, 0],
            filter_length=args.filter_length,
            compute_permutation=permute,
            images=images,
        )

    bss = None
    if criterion == "sir":
        # Matching on SIR, as mir_eval and fast_bss_eval do; scores are in reference order.
        bss = bss_eval(E, permute=True)
        perm = np.asarray(bss.perm)
    elif criterion == "none":
        perm = np.arange(n_ref)
    elif criterion == "si_sdr":
        # Pairwise SI-SDR (n_ref, n_est), averaged over channels for images.
        perm = M.solve_permutation(M.si_sdr(R[:, None], E[None, :]).mean(-1))
    else:
        score = np.abs(M.correlation_matrix(R.reshape(n_ref, -1), E.reshape(n_est, -1)))
        perm = M.solve_permutation(np.nan_to_num(score, nan=-1.0))
    Em = E[perm]
    if bss is None and any(m in BSS for m in metrics):
        bss = bss_eval(Em, permute=False)

    table: dict[str, np.ndarray] = {}
    for m in metrics:
        if m in BSS:
            table[m] = np.asarray(getattr(bss, m), dtype=np.float64)
        elif m == "si_sdri":
            table[m] = M.si_sdr_improvement(R, Em, mix[None]).mean(-1)
        else:
            table[m] = getattr(M, m)(R, Em).mean(-1)

    matched_names = [est_names[i] for i in perm]
    means = {
        m: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for m, v in table.items()
    }
    _print_table(ref_names, matched_names, metrics, table, means)

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
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["reference", "estimate", *metrics])
            for i, name in enumerate(ref_names):
                w.writerow([name, matched_names[i], *(repr(float(table[m][i])) for m in metrics)])
            w.writerow(["mean", "", *(repr(means[m]) for m in metrics)])
    return 0


def _print_table(ref_names, est_names, metrics, table, means) -> None:
    label = {"si_sdr": "SI-SDR", "sd_sdr": "SD-SDR", "si_sdri": "SI-SDRi"}
    head = ["reference", "estimate", *(label.get(m, m.upper()) + " dB" for m in metrics)]
    rows = [
        [r, e, *(_fmt(float(table[m][i])) for m in metrics)]
        for i, (r, e) in enumerate(zip(ref_names, est_names, strict=True))
    ]
    rows.append(["mean", "", *(_fmt(means[m]) for m in metrics)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join((f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}") for i, w in enumerate(widths))
    print(line.format(*head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line.format(*r))
