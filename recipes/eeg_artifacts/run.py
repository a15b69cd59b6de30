"""Artifact removal with known truth: sepkit vs MNE ICA, EOG and ECG leads included.

Semi-synthetic recordings (``sepkit.datasets.make_eeg``: dipoles in MNE's
sphere head model; among the sources one blink, one saccade and one ECG) get
two reference leads, as a real montage has: an EOG lead that records the eye
sources plus some brain activity and noise, and an ECG lead that records the
heart source plus noise. Each method separates the EEG channels, flags
components the way a user would (``find_bads_eog`` against the EOG lead,
``find_bads_ecg`` with cross-trial phase statistics against the ECG lead; the
same thresholds for every method) and removes them. Because the truth is
known, the cleaned EEG is scored against the recording without its artifact
sources (the same sources, mixing and sensor noise): relative RMS error and
correlation per channel, before and after.

Stages:
  1 prepare   simulate the recordings (FIF), their truth and artifact-free EEG (npz)
  2 fit       fit, flag, clean and score each method: EXP/fits/<method>_<cell>.json
  3 report    EXP/results.md and EXP/results.json

Usage:
  python recipes/eeg_artifacts/run.py
  python recipes/eeg_artifacts/run.py --config recipes/eeg_artifacts/conf/tiny.toml
"""

from __future__ import annotations

import json
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
from sepkit.metrics import cc, mcc, rrmse_temporal

HERE = Path(__file__).resolve().parent
EYE_KINDS = ("blink", "saccade")  # what an EOG lead records
HEART_KINDS = ("ecg",)  # what an ECG lead records


def load_config(path: Path, overrides: list[str]) -> dict:
    sepkit_keys = set(IVAESeparator().get_params())
    cfg = _recipe.load_config(path, overrides, extra_keys={"sepkit": sepkit_keys})
    allowed = ("sepkit", "sepkit-gauss", "sepkit-hp", "sepkit-pnl", "sepkit-gg", "picard", "infomax",
               "fastica")  # fmt: skip
    for method in cfg["experiment"]["methods"]:
        if method not in allowed:
            raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(allowed)}")
    for case in cfg["data"]["cases"]:
        if case not in ("linear", "saturation"):
            raise SystemExit(f"unknown case {case!r}; allowed: linear, saturation")
    return cfg


def cells(cfg: dict):
    """(montage, n_sources, case, seed) of every recording of the run."""
    d = cfg["data"]
    for montage, n_sources in zip(d["montages"], d["n_sources"], strict=True):
        for case in d["cases"]:
            for seed in cfg["experiment"]["seeds"]:
                yield montage, n_sources, case, seed


def stem_of(exp: Path, montage: str, case: str, seed: int) -> Path:
    return exp / "data" / f"{montage}_{case}_seed{seed}"


def reference_leads(S: np.ndarray, kinds: list[str], d: dict, seed: int) -> np.ndarray:
    """EOG and ECG lead signals (volts), shape (2, n_times), from the true sources.

    EOG: the eye sources at unit variance each, plus the other (non-heart)
    sources with random weights at ``eog_brain`` of their RMS, plus white
    noise at ``eog_noise`` of the lead's RMS; ECG: the heart source plus
    noise at ``ecg_noise``. Scaled to 100 uV and 1 mV RMS.
    """
    rng = np.random.default_rng(10_000 + seed)
    unit = S / S.std(axis=1, keepdims=True)
    eye = np.isin(kinds, EYE_KINDS)
    heart = np.isin(kinds, HEART_KINDS)
    if not eye.any() or not heart.any():
        raise SystemExit(f"the recording has no eye or no heart source: {kinds}")
    eye_part = unit[eye].sum(axis=0)
    brain = unit[~eye & ~heart]
    brain_part = rng.standard_normal(len(brain)) @ brain
    brain_part *= d["eog_brain"] * eye_part.std() / brain_part.std()
    eog = eye_part + brain_part
    eog += d["eog_noise"] * eog.std() * rng.standard_normal(eog.size)
    ecg = unit[heart].sum(axis=0)
    ecg += d["ecg_noise"] * ecg.std() * rng.standard_normal(ecg.size)
    return np.stack([eog / eog.std() * 100e-6, ecg / ecg.std() * 1e-3])


def stage_prepare(cfg: dict, exp: Path) -> None:
    d = cfg["data"]
    for montage, n_sources, case, seed in cells(cfg):
        stem = stem_of(exp, montage, case, seed)
        if Path(f"{stem}_raw.fif").exists():
            continue
        kwargs = dict(
            montage=montage,
            duration=d["duration"],
            sample_rate=d["sample_rate"],
            snr_db=d["snr_db"],
            random_state=seed,
        )
        linear, S, A = make_eeg(n_sources, **kwargs)
        raw = linear
        if case == "saturation":
            # The same seed draws the same sources, mixing and noise; only the
            # amplifiers differ, so the linear recording gives the truth.
            raw, _, _ = make_eeg(
                n_sources, nonlinearity="saturation", saturation_rms=d["saturation_rms"], **kwargs
            )
        kinds = source_kinds(raw)
        artifact = np.isin(kinds, EYE_KINDS + HEART_KINDS)
        # The EEG a perfect removal leaves: the linear recording without the
        # artifact sources' projections (brain sources and sensor noise kept).
        ideal = linear.get_data() - A[:, artifact] @ S[artifact]
        leads = mne.io.RawArray(
            reference_leads(S, kinds, d, seed),
            mne.create_info(["EOG", "ECG"], raw.info["sfreq"], ["eog", "ecg"]),
            verbose="error",
        )
        raw.add_channels([leads], force_update_info=True)
        stem.parent.mkdir(parents=True, exist_ok=True)
        raw.save(f"{stem}_unfiltered_raw.fif", verbose="error", overwrite=True)
        raw.filter(d["highpass"], None, picks=["eeg", "eog", "ecg"], verbose="error")
        S, ideal = (
            mne.filter.filter_data(x.astype(np.float64), raw.info["sfreq"], d["highpass"], None,
                                   verbose="error")
            for x in (S, ideal)
        )  # fmt: skip
        np.savez(f"{stem}_truth.npz", S=S, A=A, ideal=ideal, kinds=np.array(kinds))
        raw.save(f"{stem}_raw.fif", verbose="error", overwrite=True)  # last: marks it prepared
        print(f"[prepare] {stem.name}: {len(A)} EEG channels, {kinds}", flush=True)


def fit_and_flag(method: str, raws: dict, n_sources: int, seed: int, cfg: dict):
    """(sources, cleaned EEG, flagged, seconds) of one method on one recording.

    ``flagged`` maps "eog" / "ecg" to the flagged component indices. Methods
    in FILTER_INSIDE are fitted on the unfiltered recording (band inside) and
    their sources and cleaned EEG are filtered like the recording afterwards.
    """
    e, d = cfg["experiment"], cfg["data"]
    inside = method in FILTER_INSIDE
    raw = raws["unfiltered" if inside else "filtered"]
    t0 = time.perf_counter()
    if method.startswith("sepkit"):
        kw = dict(cfg["sepkit"], **_recipe.SEPKIT_METHODS[method])
        if inside:
            kw["highpass"] = d["highpass"]
        est = IVAESeparator(n_sources, random_state=seed, **kw).fit(raw, picks="eeg")
    else:
        est = mne_ica(method, n_sources, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ICA's convergence chatter
            est.fit(raw, picks="eeg")
    seconds = time.perf_counter() - t0
    eog, _ = est.find_bads_eog(raw, ch_name="EOG", threshold=e["eog_threshold"],
                               measure="correlation")  # fmt: skip
    ecg, _ = est.find_bads_ecg(raw, ch_name="ECG", threshold=e["ecg_threshold"], method="ctps")
    flagged = dict(eog=[int(k) for k in eog], ecg=[int(k) for k in ecg])
    names = [n for n, t in zip(raw.ch_names, raw.get_channel_types(), strict=True) if t == "eeg"]

    def clean(exclude):
        out = est.apply(raw.copy(), exclude=sorted(exclude))
        if inside:
            out.filter(d["highpass"], None, picks="eeg", verbose="error")
        return out.get_data(picks=names)

    sources = est.get_sources(raw).get_data()
    if inside:
        sources = mne.filter.filter_data(sources, raw.info["sfreq"], d["highpass"], None,
                                         verbose="error")  # fmt: skip
    return sources, clean, flagged, seconds


def stage_fit(cfg: dict, exp: Path) -> None:
    out = exp / "fits"
    out.mkdir(parents=True, exist_ok=True)
    for montage, n_sources, case, seed in cells(cfg):
        stem = stem_of(exp, montage, case, seed)
        raws = None
        for method in cfg["experiment"]["methods"]:
            path = out / f"{method}_{montage}_{case}_seed{seed}.json"
            if path.exists():
                continue
            if raws is None:
                raws = {
                    which: mne.io.read_raw_fif(
                        f"{stem}_{suffix}.fif", preload=True, verbose="error"
                    )  # fmt: skip
                    for which, suffix in (("filtered", "raw"), ("unfiltered", "unfiltered_raw"))
                }
                truth = np.load(f"{stem}_truth.npz")
                kinds = [str(k) for k in truth["kinds"]]
                names = [n for n, t in zip(raws["filtered"].ch_names,
                                           raws["filtered"].get_channel_types(), strict=True)
                         if t == "eeg"]  # fmt: skip
                before = raws["filtered"].get_data(picks=names)
            sources, clean, flagged, seconds = fit_and_flag(method, raws, n_sources, seed, cfg)
            score, perm = mcc(truth["S"], sources, return_permutation=True)
            # perm[k]: the component matched to true source k (one to one).
            wanted = {
                "eog": {int(perm[k]) for k, kind in enumerate(kinds) if kind in EYE_KINDS},
                "ecg": {int(perm[k]) for k, kind in enumerate(kinds) if kind in HEART_KINDS},
            }
            artifact_components = wanted["eog"] | wanted["ecg"]
            chosen = set(flagged["eog"]) | set(flagged["ecg"])
            ideal = truth["ideal"]
            row = dict(
                method=method, montage=montage, n_channels=len(names), n_sources=n_sources,
                case=case, seed=seed, seconds=seconds, mcc=float(score), flagged=flagged,
                # True artifact sources whose matched component the detector flagged.
                eog_found=len(wanted["eog"] & set(flagged["eog"])), n_eog=len(wanted["eog"]),
                ecg_found=len(wanted["ecg"] & set(flagged["ecg"])), n_ecg=len(wanted["ecg"]),
                false_flags=len(chosen - artifact_components),
                # What the wrongly flagged components are: the kind of the true
                # source each is matched to, by detector.
                false_kinds={
                    which: [kinds[int(np.flatnonzero(perm == k)[0])]
                            for k in flagged[which] if k not in artifact_components]
                    for which in ("eog", "ecg")
                },
                hardware=hardware(),
            )  # fmt: skip
            for label, data in (
                ("before", before),
                ("after", clean(chosen)),
                # The matched components of the true artifacts: removal by an
                # oracle detector, to tell detection from separation.
                ("oracle", clean(artifact_components)),
            ):
                row[f"rrmse_{label}"] = float(np.median(rrmse_temporal(ideal, data)))
                row[f"cc_{label}"] = float(np.median(cc(ideal, data)))
            path.write_text(json.dumps(row))
            print(
                f"[fit] {montage:13s} {case:10s} {method:10s} seed={seed} MCC={score:.3f} "
                f"EOG {row['eog_found']}/{row['n_eog']} ECG {row['ecg_found']}/{row['n_ecg']} "
                f"false {row['false_flags']} RRMSE {row['rrmse_before']:.3f} -> "
                f"{row['rrmse_after']:.3f} (oracle {row['rrmse_oracle']:.3f}) ({seconds:.1f} s)",
                flush=True,
            )


def stage_report(cfg: dict, exp: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((exp / "fits").glob("*.json"))]
    if not rows:
        raise SystemExit(f"no fits in {exp / 'fits'}; run stage 2 first")
    lines = [
        "Artifact sources found (matched component flagged), false flags, and the cleaned EEG "
        "against the recording without its artifact sources: median over channels per "
        "recording, then median over recordings (all montages and seeds).",
        "",
        "| case | method | recordings | EOG found | ECG found | false flags | RRMSE before -> "
        "after | RRMSE oracle | CC after | MCC | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for case in cfg["data"]["cases"]:
        for method in cfg["experiment"]["methods"]:
            sel = [r for r in rows if r["case"] == case and r["method"] == method]
            if not sel:
                continue

            def med(key, sel=sel):
                return float(np.median([r[key] for r in sel]))

            item = dict(
                case=case, method=method, n_recordings=len(sel),
                eog_found=sum(r["eog_found"] for r in sel), n_eog=sum(r["n_eog"] for r in sel),
                ecg_found=sum(r["ecg_found"] for r in sel), n_ecg=sum(r["n_ecg"] for r in sel),
                false_flags=sum(r["false_flags"] for r in sel),
                **{k: med(k) for k in ("rrmse_before", "rrmse_after", "rrmse_oracle", "cc_after",
                                       "mcc", "seconds")},
            )  # fmt: skip
            summary.append(item)
            lines.append(
                f"| {case} | {method} | {len(sel)} | {item['eog_found']}/{item['n_eog']} | "
                f"{item['ecg_found']}/{item['n_ecg']} | {item['false_flags']} | "
                f"{item['rrmse_before']:.3f} -> {item['rrmse_after']:.3f} | "
                f"{item['rrmse_oracle']:.3f} | {item['cc_after']:.3f} | {item['mcc']:.3f} | "
                f"{item['seconds']:.1f} |"
            )
    lines += ["", "False flags by the kind of the true source matched to them (all recordings):"]
    for item in summary:
        counts: dict[str, int] = {}
        for r in rows:
            if (r["case"], r["method"]) == (item["case"], item["method"]):
                for which, found in r.get("false_kinds", {}).items():
                    for kind in found:
                        key = f"{kind} ({which.upper()})"
                        counts[key] = counts.get(key, 0) + 1
        item["false_kinds"] = counts
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        lines.append(f"* {item['case']}, {item['method']}: {shown}")
    lines += ["", f"Hardware: {rows[0]['hardware']}"]
    text = "\n".join(lines) + "\n"
    (exp / "results.md").write_text(text)
    (exp / "results.json").write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
    print(text)
    return text


def main(argv=None) -> int:
    mne.set_log_level("error")  # ICA's per-call progress lines
    parser = recipe_parser(__doc__, HERE, n_stages=3)
    stages = {1: stage_prepare, 2: stage_fit, 3: stage_report}
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
