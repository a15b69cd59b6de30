"""Semi-synthetic EEG recipe: sepkit vs MNE ICA (picard, extended infomax, FastICA).

Recordings come from ``sepkit.datasets.make_eeg`` (dipoles in MNE's sphere
head model projected to 19, 32 or 64 electrodes, sensor noise, average
reference), in three cases:

* ``linear``: make_eeg's realistic source mix (alpha, blinks, saccades,
  muscle, ECG, line noise, non-stationary Gaussian activity), ``A @ S + noise``:
  ICA's home ground.
* ``nonstationary``: every source is Gaussian activity whose variance changes
  every 1-4 s. Each source is Gaussian within a stretch of constant variance,
  which is what the iVAE uses; but the variance modulation alone makes the
  marginals super-Gaussian, so ICA still has a handle.
* ``saturation``: the linear recording through an amplifier-style soft clip
  ``L tanh(x / L)`` (nonlinear sensors), L = ``data.saturation_rms`` times the
  RMS of the linear recording (make_eeg's default: 3).
* ``strong_saturation``: the same clip at L = ``data.strong_saturation_rms``
  times the RMS (1.5 in the default config): ongoing activity is bent too,
  not only the blinks.
* ``hard_clip``: a hard rail ``clip(x, -L, L)`` at L = ``data.clip_rms`` times
  the RMS (1.5): flat tops, where what lay beyond L is lost.

Every recording is high-pass filtered (``data.highpass``) before MNE ICA and
the linear and network iVAEs see it. ``sepkit-pnl`` (mixing="post-nonlinear")
instead fits the unfiltered recording with ``IVAESeparator(highpass=...)``,
which applies the same filter after its sensor unwarping: the clip acts on
the unfiltered signal, and a filter in front of the model would smear it.
Its sources are filtered the same way before scoring, as the truth is.
``sepkit-hp`` fits the library defaults the same way, on the unfiltered
recording with ``highpass`` set: mixing="auto" then tries the sensor
unwarping and keeps it only where it finds saturating sensors. ``sepkit-gg``
is the linear model with the generalised Gaussian prior
(``prior="gengauss"``), on the high-passed recording as ``sepkit``.

Stages:
  1 prepare   simulate every (montage, case, seed) into EXP/data/ (FIF + truth)
  2 fit       fit every method on every recording; one JSON per fit in EXP/fits/
  3 report    tables of MCC, Amari index (linear case), median per-source |r|,
              fit seconds and per source kind (medians, and sepkit against each
              MNE ICA method paired by recording), and each sepkit method's MCC
              minus picard's per recording, into EXP/results.md

Every stage skips what exists, so a run can be split into pieces
(``--only montage/case``) and resumed.

Usage:
  python recipes/eeg_semisynthetic/run.py                       # conf/default.toml
  python recipes/eeg_semisynthetic/run.py --config recipes/eeg_semisynthetic/conf/tiny.toml
  python recipes/eeg_semisynthetic/run.py --stage 2 --stop-stage 2 --only biosemi64/linear
  python recipes/eeg_semisynthetic/run.py --sepkit.n_steps=2000 --experiment.seeds=[0,1]

Overrides take the form --section.key=value (value parsed as TOML); unknown keys
are errors ([sepkit] takes any IVAESeparator parameter). Only public APIs are used.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import mne
import numpy as np

from sepkit import IVAESeparator, _recipe
from sepkit._recipe import (
    FILTER_INSIDE,
    hardware,
    mne_ica,
    recipe_parser,
    run_stages,
    source_kinds,
)
from sepkit.datasets import make_eeg
from sepkit.metrics import amari_index, correlation_matrix, mcc

HERE = Path(__file__).resolve().parent
CASES = ("linear", "nonstationary", "saturation", "strong_saturation", "hard_clip")
# Cases whose recording went through a sensor nonlinearity (no mixing matrix):
# make_eeg's nonlinearity and the [data] key of the level (x the linear RMS).
NONLINEAR_CASES = {
    "saturation": ("saturation", "saturation_rms"),
    "strong_saturation": ("saturation", "strong_saturation_rms"),
    "hard_clip": ("clip", "clip_rms"),
}
METHODS = (*_recipe.SEPKIT_METHODS, "picard", "infomax", "fastica")


def load_config(path: Path, overrides: list[str]) -> dict:
    sepkit_keys = set(IVAESeparator().get_params())
    cfg = _recipe.load_config(
        path,
        overrides,
        extra_keys={"sepkit": sepkit_keys},
        extra_hint=" (and sepkit.<any IVAESeparator parameter>)",
    )
    for case in cfg["data"]["cases"]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; allowed: {', '.join(CASES)}")
    for method in cfg["experiment"]["methods"]:
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    unknown = set(cfg.get("sepkit", {})) - sepkit_keys
    if unknown:
        raise SystemExit(f"[sepkit] keys {sorted(unknown)} are not IVAESeparator parameters")
    if len(cfg["data"]["n_sources"]) != len(cfg["data"]["montages"]):
        raise SystemExit("data.n_sources needs one entry per montage")
    return cfg


def cells(cfg: dict, only: str | None):
    """(montage, n_sources, case, seed) for every recording of the run."""
    d = cfg["data"]
    for montage, n_sources in zip(d["montages"], d["n_sources"], strict=True):
        for case in d["cases"]:
            if only is not None and not {montage, f"{montage}/{case}"} & set(only.split(",")):
                continue
            for seed in cfg["experiment"]["seeds"]:
                yield montage, n_sources, case, seed


def data_stem(exp: Path, montage: str, case: str, seed: int) -> Path:
    return exp / "data" / f"{montage}_{case}_seed{seed}"


def stage_prepare(cfg: dict, exp: Path, only: str | None) -> None:
    d = cfg["data"]
    for montage, n_sources, case, seed in cells(cfg, only):
        stem = data_stem(exp, montage, case, seed)
        if Path(f"{stem}_raw.fif").exists() and Path(f"{stem}_unfiltered_raw.fif").exists():
            continue
        kwargs = dict(
            montage=montage,
            duration=d["duration"],
            sample_rate=d["sample_rate"],
            snr_db=d["snr_db"],
            source_kinds=["nonstationary"] * n_sources if case == "nonstationary" else None,
            random_state=seed,
        )
        if case in NONLINEAR_CASES:
            # The clip level is a multiple of the linear recording's RMS (the
            # same seed without the clip: the same sources, mixing and noise).
            nonlinearity, level_key = NONLINEAR_CASES[case]
            kwargs.update(nonlinearity=nonlinearity, saturation_rms=d[level_key])
        raw, S, A = make_eeg(n_sources, **kwargs)
        stem.parent.mkdir(parents=True, exist_ok=True)
        raw.save(f"{stem}_unfiltered_raw.fif", verbose="error", overwrite=True)
        raw.filter(d["highpass"], None, verbose="error")
        # The truth is filtered like the recording, so that a perfect
        # separation scores |r| = 1.
        S = mne.filter.filter_data(
            S.astype(np.float64), raw.info["sfreq"], d["highpass"], None, verbose="error"
        )
        np.savez(f"{stem}_truth.npz", S=S, A=A)
        raw.save(f"{stem}_raw.fif", verbose="error", overwrite=True)  # last: marks it prepared
        print(f"[prepare] {stem.name}: {len(raw.ch_names)} ch, {n_sources} sources", flush=True)


def fit_method(method: str, raw, n_sources: int, seed: int, sepkit_cfg: dict, highpass: float):
    """(sources, patterns, seconds, model); patterns has shape (n_channels, n_sources).

    ``model`` says which model a sepkit method fitted: ``mixing_`` and, where
    the sensor unwarping was fitted, the largest ``sensor_nonlinearity_``.

    ``raw`` is the unfiltered recording for the methods in FILTER_INSIDE
    (their sources come back filtered at ``highpass``), else the filtered one.
    """
    t0 = time.perf_counter()
    if method in _recipe.SEPKIT_METHODS:
        cfg = dict(sepkit_cfg, **_recipe.SEPKIT_METHODS[method])
        if method in FILTER_INSIDE:
            cfg["highpass"] = highpass
        sep = IVAESeparator(n_sources, random_state=seed, **cfg).fit(raw, picks="eeg")
        seconds = time.perf_counter() - t0
        sources = sep.get_sources(raw).get_data()
        if method in FILTER_INSIDE:
            sources = mne.filter.filter_data(
                sources, raw.info["sfreq"], highpass, None, verbose="error"
            )
        return sources, sep.get_components(), seconds, _recipe.fitted_model(sep)
    ica = mne_ica(method, n_sources, seed)
    ica.fit(raw, picks="eeg")
    seconds = time.perf_counter() - t0
    return ica.get_sources(raw).get_data(), ica.get_components(), seconds, {}


def stage_fit(cfg: dict, exp: Path, only: str | None) -> None:
    out = exp / "fits"
    out.mkdir(parents=True, exist_ok=True)
    for montage, n_sources, case, seed in cells(cfg, only):
        stem = data_stem(exp, montage, case, seed)
        raws = {}
        for method in cfg["experiment"]["methods"]:
            path = out / f"{method}_{montage}_{case}_seed{seed}.json"
            if path.exists():
                continue
            which = "unfiltered_raw" if method in FILTER_INSIDE else "raw"
            if which not in raws:
                raws[which] = mne.io.read_raw_fif(
                    f"{stem}_{which}.fif", preload=True, verbose="error"
                )
                truth = np.load(f"{stem}_truth.npz")
            raw = raws[which]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # ICA's convergence chatter
                S, patterns, seconds, model = fit_method(
                    method, raw, n_sources, seed, cfg["sepkit"], cfg["data"]["highpass"]
                )
            C = np.abs(correlation_matrix(truth["S"], S))
            score, perm = mcc(truth["S"], S, return_permutation=True)
            per_source = C[np.arange(len(perm)), perm]
            row = dict(
                method=method,
                montage=montage,
                n_channels=len(raw.ch_names),
                n_sources=n_sources,
                case=case,
                seed=seed,
                seconds=seconds,
                mcc=float(score),
                median_abs_r=float(np.median(per_source)),
                # |r| of every true source with its matched estimate, and its kind.
                per_source_abs_r=[float(r) for r in per_source],
                source_kinds=source_kinds(raw),
                # Amari index of pinv(estimated patterns) against the true mixing:
                # meaningful when the recording is linear in the sources.
                # (passed as P = W A against the identity: amari_index wants
                # square inputs in this sepkit version.)
                amari=float(amari_index(np.linalg.pinv(patterns) @ truth["A"], np.eye(n_sources))),
                hardware=hardware(),
                **model,
            )
            path.write_text(json.dumps(row))
            print(
                f"[fit] {montage:13s} {case:13s} {method:8s} seed={seed} MCC={score:.3f} "
                f"median|r|={row['median_abs_r']:.3f} Amari={row['amari']:.3f} "
                f"({seconds:.1f} s)",
                flush=True,
            )


def kind_table(cfg: dict, rows: list[dict]) -> list[str]:
    """Median |r| of the matched estimate per source kind, over montages and seeds.

    For each case and method: the median, over every recording of the run, of
    the |r| of each source of that kind with its matched estimate (blinks:
    how well a method isolates the blink, with the truth known).
    """
    kinds = sorted({k for r in rows for k in r.get("source_kinds", ())})
    if not kinds:
        return []
    lines = [
        "Median abs r of the matched estimate per source kind (all montages and seeds "
        "of the run; n = sources of that kind):",
        "",
        "| case | method | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for case in cfg["data"]["cases"]:
        for method in cfg["experiment"]["methods"]:
            sel = [
                r
                for r in rows
                if (r["case"], r["method"]) == (case, method)
                and r["seed"] in cfg["experiment"]["seeds"]
                and "source_kinds" in r
            ]
            if not sel:
                continue
            cells = []
            for kind in kinds:
                vals = [
                    v
                    for r in sel
                    for k, v in zip(r["source_kinds"], r["per_source_abs_r"], strict=True)
                    if k == kind
                ]
                cells.append(f"{statistics.median(vals):.3f} (n={len(vals)})" if vals else "-")
            lines.append(f"| {case} | {method} | " + " | ".join(cells) + " |")
    return lines


def paired_kind_table(
    cfg: dict, rows: list[dict], ours: str = "sepkit", others: list[str] | None = None
) -> list[str]:
    """Per source kind: ``ours`` against other methods (default: each MNE ICA one) on the same recordings.

    The medians of :func:`kind_table` hide differences smaller than their
    spread across recordings; pairing each true source's |r| under ``ours``
    with its |r| under the other method on the same recording (montage, case,
    seed) shows which method isolates that kind better, and how consistently.
    Cell: median of (|r| ours - |r| other), and on how many sources ours is ahead.
    """
    if others is None:
        others = [m for m in cfg["experiment"]["methods"] if m not in _recipe.SEPKIT_METHODS]
    others = [m for m in others if m in cfg["experiment"]["methods"]]
    if ours not in cfg["experiment"]["methods"] or not others:
        return []
    by_key = {
        (r["method"], r["montage"], r["case"], r["seed"]): r
        for r in rows
        if r["seed"] in cfg["experiment"]["seeds"] and "source_kinds" in r
    }
    kinds = sorted({k for r in by_key.values() for k in r["source_kinds"]})
    lines = []
    for case in cfg["data"]["cases"]:
        for other in others:
            diffs: dict[str, list[float]] = {k: [] for k in kinds}
            for (method, montage, c, seed), r in by_key.items():
                theirs = by_key.get((other, montage, c, seed))
                if method != ours or c != case or theirs is None:
                    continue
                for kind, a, b in zip(
                    r["source_kinds"],
                    r["per_source_abs_r"],
                    theirs["per_source_abs_r"],
                    strict=True,
                ):
                    diffs[kind].append(a - b)
            if not any(diffs.values()):
                continue
            cells = [
                f"{statistics.median(v):+.4f} ({sum(d > 0 for d in v)}/{len(v)})" if v else "-"
                for v in diffs.values()
            ]
            lines.append(f"| {case} | {ours} - {other} | " + " | ".join(cells) + " |")
    return _paired_table(
        f"Paired per source kind: median of abs r under {ours} minus abs r under the other "
        f"method, for the same true source of the same recording; in brackets, on how many "
        f"sources {ours} is ahead:",
        ["case", "methods", *kinds],
        lines,
    )


def _paired_table(caption: str, columns: list[str], lines: list[str]) -> list[str]:
    """A paired table for results.md: blank line, caption, header and rows; [] without rows."""
    if not lines:
        return []
    header = "| " + " | ".join(columns) + " |"
    return ["", caption, "", header, "|" + "---|" * len(columns), *lines]


def paired_mcc_table(cfg: dict, rows: list[dict], reference: str = "picard") -> list[str]:
    """MCC of each sepkit method minus ``reference``'s on the same recording.

    One cell per montage: the differences for the seeds in order, so that a
    median over recordings cannot hide on how many the method is ahead.
    """
    methods = [m for m in cfg["experiment"]["methods"] if m in _recipe.SEPKIT_METHODS]
    if reference not in cfg["experiment"]["methods"] or not methods:
        return []
    mcc_of = {(r["method"], r["montage"], r["case"], r["seed"]): r["mcc"] for r in rows}
    seeds = cfg["experiment"]["seeds"]
    montages = cfg["data"]["montages"]
    lines = []
    for case in cfg["data"]["cases"]:
        for method in methods:
            cells = []
            for montage in montages:
                diffs = [
                    mcc_of[(method, montage, case, seed)] - mcc_of[(reference, montage, case, seed)]
                    for seed in seeds
                    if (method, montage, case, seed) in mcc_of
                    and (reference, montage, case, seed) in mcc_of
                ]
                cells.append(" / ".join(f"{d:+.4f}" for d in diffs) if diffs else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {case} | {method} | " + " | ".join(cells) + " |")
    return _paired_table(
        f"MCC minus {reference}'s on the same recording (per montage, seeds "
        f"{', '.join(map(str, seeds))} in order):",
        ["case", "method", *montages],
        lines,
    )


def auto_table(cfg: dict, rows: list[dict]) -> list[str]:
    """Which model mixing="auto" fitted per case, and the largest channel change of h."""
    lines = []
    for case in cfg["data"]["cases"]:
        sel = [
            r
            for r in rows
            if r["case"] == case
            and r["seed"] in cfg["experiment"]["seeds"]
            and r["method"] in cfg["experiment"]["methods"]
            and r.get("sensor_nonlinearity_max") is not None
            and not _recipe.SEPKIT_METHODS[r["method"]].get("mixing")
        ]
        if not sel:
            continue
        picked = sorted({r["mixing"] for r in sel})
        counts = ", ".join(f"{m} {sum(r['mixing'] == m for r in sel)}" for m in picked)
        change = [r["sensor_nonlinearity_max"] for r in sel]
        lines.append(f"| {case} | {counts} | {min(change):.3f} .. {max(change):.3f} |")
    if not lines:
        return []
    return [
        'Model mixing="auto" fitted with the filter inside (recordings per model), and the '
        "largest channel change of the sensor unwarping it tried (sensor_nonlinearity_; "
        "kept from 0.08):",
        "",
        "| case | fitted | largest sensor_nonlinearity_ |",
        "|---|---|---|",
        *lines,
        "",
    ]


def stage_report(cfg: dict, exp: Path, only: str | None) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((exp / "fits").glob("*.json"))]
    lines = [
        "| case | channels | sources | method | MCC | Amari index | median per-source abs r "
        "| fit s | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cfg["data"]["cases"]:
        for montage, n_sources in zip(
            cfg["data"]["montages"], cfg["data"]["n_sources"], strict=True
        ):
            for method in cfg["experiment"]["methods"]:
                sel = [
                    r
                    for r in rows
                    if (r["case"], r["montage"], r["method"]) == (case, montage, method)
                    and r["seed"] in cfg["experiment"]["seeds"]
                ]
                if not sel:
                    continue
                amari = statistics.median(r["amari"] for r in sel)
                amari_s = f"({amari:.3f})" if case in NONLINEAR_CASES else f"{amari:.3f}"
                lines.append(
                    f"| {case} | {sel[0]['n_channels']} | {n_sources} | {method} | "
                    f"{statistics.median(r['mcc'] for r in sel):.3f} | {amari_s} | "
                    f"{statistics.median(r['median_abs_r'] for r in sel):.3f} | "
                    f"{statistics.median(r['seconds'] for r in sel):.1f} | {len(sel)} |"
                )
    lines += [
        "",
        "Medians over seeds. Amari index in brackets: the recording is not linear in the "
        "sources, so no mixing matrix exists.",
        "",
        *auto_table(cfg, rows),
        *kind_table(cfg, rows),
        *paired_mcc_table(cfg, rows),
        *paired_kind_table(cfg, rows),
        # The generalised Gaussian prior against ICA and against the Gaussian one.
        *paired_kind_table(cfg, rows, "sepkit-gg", ["sepkit", "picard", "fastica"]),
    ]
    hw = sorted({r.get("hardware", "?") for r in rows})
    text = "\n".join(lines) + f"\n\nHardware: {'; '.join(hw)}\n"
    (exp / "results.md").write_text(text)
    print(text)
    return text


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=3)
    parser.add_argument(
        "--only",
        default=None,
        help="restrict stages 1-2 to MONTAGE or MONTAGE/CASE (comma-separated list)",
    )
    stages = {1: stage_prepare, 2: stage_fit, 3: stage_report}
    return run_stages(parser, stages, HERE, argv, load=load_config, extra=lambda args: (args.only,))


if __name__ == "__main__":
    sys.exit(main())
