"""EEG fit time and separation quality: sepkit vs MNE ICA on the same data.

Semi-synthetic recordings from ``sepkit.datasets.make_eeg`` (dipoles in MNE's
sphere model, 10 min at 256 Hz by default), 19 (10-20) and 64 (BioSemi)
channels, fitted by IVAESeparator (defaults) and by mne.preprocessing.ICA
with picard and extended infomax, all with n_components = n_sources. Scores:
MCC (mean |r| after Hungarian matching) and the median per-source |r|
against the true sources; wall-clock fit seconds.

Usage:
  python benchmarks/eeg.py                    # the full benchmark
  python benchmarks/eeg.py --duration 60 --methods sepkit,picard   # quicker
  python benchmarks/eeg.py --methods sepkit,sepkit-nonlinear,picard   # with the network
  python benchmarks/eeg.py --methods sepkit-nonlinear,sepkit-picard,picard   # ICA warm start
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from sepkit import IVAESeparator
from sepkit._recipe import SEPKIT_METHODS, hardware, mne_ica
from sepkit.datasets import make_eeg
from sepkit.metrics import correlation_matrix, mcc


def fit_sources(method: str, raw, n_sources: int, seed: int):

    t0 = time.perf_counter()
    if method in SEPKIT_METHODS:
        sep = IVAESeparator(n_sources, random_state=seed, **SEPKIT_METHODS[method]).fit(
            raw, picks="eeg"
        )
        S = sep.get_sources(raw).get_data()
    else:
        ica = mne_ica(method, n_sources, seed)
        ica.fit(raw, picks="eeg")
        S = ica.get_sources(raw).get_data()
    return S, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default: 600)")
    p.add_argument("--sample-rate", type=float, default=256.0)
    p.add_argument("--n-sources", type=int, default=16)
    p.add_argument("--montages", default="standard_1020,biosemi64")
    p.add_argument("--methods", default="sepkit,picard,infomax")
    p.add_argument("--nonlinearity", default=None, choices=[None, "saturation"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the rows as JSON")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # make_eeg is not high-passed

    rows = []
    for montage in args.montages.split(","):
        raw, S_true, _ = make_eeg(
            args.n_sources,
            montage=montage,
            duration=args.duration,
            sample_rate=args.sample_rate,
            nonlinearity=args.nonlinearity,
            random_state=args.seed,
        )
        n_channels = len(raw.ch_names)
        for method in args.methods.split(","):
            S, seconds = fit_sources(method, raw, args.n_sources, args.seed)
            C = np.abs(correlation_matrix(S_true, S))
            score, perm = mcc(S_true, S, return_permutation=True)
            per_source = C[np.arange(len(perm)), perm]
            rows.append(
                dict(
                    montage=montage,
                    n_channels=n_channels,
                    method=method,
                    seconds=seconds,
                    mcc=score,
                    median_abs_r=float(np.median(per_source)),
                )
            )
            print(
                f"{montage:14s} {n_channels:3d} ch  {method:8s} MCC {score:.3f}  "
                f"median |r| {rows[-1]['median_abs_r']:.3f}  {seconds:6.1f} s",
                flush=True,
            )

    print(
        f"\nMachine: {hardware()}; "
        f"{args.duration:g} s at {args.sample_rate:g} Hz, {args.n_sources} sources, "
        f"nonlinearity={args.nonlinearity}"
    )
    print("| montage | channels | method | MCC | median per-source abs r | fit s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['montage']} | {r['n_channels']} | {r['method']} | {r['mcc']:.3f} | "
            f"{r['median_abs_r']:.3f} | {r['seconds']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
