"""Blink removal on a real recording: sepkit vs MNE ICA (picard), side by side.

EEGLAB's sample recording (32 channels at 128 Hz, 238 s, with blinks) is
band-passed 1-40 Hz; EOG1/EOG2 are typed EOG so that only the 30 scalp
channels are fitted. Each method separates 15 components; the blink
component is the one whose band-passed (1-10 Hz) time course correlates most
with FPz (``find_bads_eog(raw, ch_name="FPz")`` for both), and it is removed
(``apply(raw, exclude=[k])``).

Reported per method: |r| of the blink component with FPz and with EOG2; |r|
of each frontal channel with EOG2 and with the removed blink component before
and after removal; the share of variance removed from frontal and from
posterior channels (non-blink signal kept = 1 - removed share far from the
eyes); fit seconds. Figures (PNG): the blink topographies and FPz/EOG2 before
and after.

Stages:
  1 fit       fit every method; sepkit saved as .safetensors, ICA as -ica.fif
  2 evaluate  find and remove the blink, write EXP/results.json, EXP/results.md, figures
  3 dipolar   the measures of Delorme et al. 2012 without ground truth (config [dipolar]):
              share of maps one dipole explains (RV < 5 %, < 10 %), mutual information
              reduction, fit time, over component counts, seeds and block-bootstrap
              resamples; ICLabel's class counts; EXP/dipolar.json, EXP/dipolar.md

The recording is read from ../shared/data beside the project; when it is
absent the script says so and exits with status 0 (nothing to do).

Usage:
  python recipes/eeg_real/run.py
  python recipes/eeg_real/run.py --config recipes/eeg_real/conf/tiny.toml   # smoke run
  python recipes/eeg_real/run.py --sepkit.n_steps=2000 --exp recipes/eeg_real/exp/2000steps
  python recipes/eeg_real/run.py --stage 3             # the dipolarity / MIR stage only
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402
from scipy.signal import find_peaks  # noqa: E402

from sepkit import IVAESeparator, _recipe  # noqa: E402
from sepkit._recipe import FILTER_INSIDE, hardware, recipe_parser, run_stages  # noqa: E402
from sepkit.io import filter_eeg, read_eeg  # noqa: E402
from sepkit.metrics import dipolarity, mutual_information_reduction  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def load_config(path: Path, overrides: list[str]) -> dict:
    sepkit_keys = set(IVAESeparator().get_params())
    cfg = _recipe.load_config(path, overrides, extra_keys={"sepkit": sepkit_keys})
    unknown = set(cfg["sepkit"]) - sepkit_keys
    if unknown:
        raise SystemExit(f"[sepkit] keys {sorted(unknown)} are not IVAESeparator parameters")
    allowed = (*_recipe.SEPKIT_METHODS, "picard", "infomax", "fastica")
    for method in cfg["experiment"]["methods"]:
        if method not in allowed:
            raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(allowed)}")
    for method in cfg["dipolar"]["methods"]:
        if method not in DIPOLAR_METHODS:
            raise SystemExit(
                f"unknown [dipolar] method {method!r}; allowed: {', '.join(DIPOLAR_METHODS)}"
            )
    return cfg


def load_raw(cfg: dict, *, unfiltered: bool = False):
    """The recording band-passed (or as read, with ``unfiltered``), EOG leads typed EOG."""
    d = cfg["data"]
    path = (ROOT / d["path"]).resolve()
    if not path.exists():
        print(f"[skip] {path} is absent: this recipe needs ../shared/data beside the project.")
        return None
    # Every channel of the file is typed EEG: filter them all (EOG1/EOG2 too),
    # then type the EOG leads so that they are not fitted.
    raw = read_eeg(path, picks="eeg")
    if not unfiltered:
        raw = filter_eeg(raw, d["l_freq"], d["h_freq"])
    raw.set_channel_types({name: "eog" for name in d["eog"]}, verbose="error")
    return raw


def band(raw_like, cfg: dict, sfreq: float | None = None):
    """An array (at ``sfreq`` Hz) or a Raw filtered to the recipe's band, as the recording is."""
    d = cfg["data"]
    if isinstance(raw_like, np.ndarray):
        return mne.filter.filter_data(raw_like, sfreq, d["l_freq"], d["h_freq"], verbose="error")
    return filter_eeg(raw_like, d["l_freq"], d["h_freq"], picks=None)


def stage_fit(cfg: dict, exp: Path) -> None:
    raw = load_raw(cfg)
    if raw is None:
        return
    e = cfg["experiment"]
    exp.mkdir(parents=True, exist_ok=True)
    timing_path = exp / "fit_seconds.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    # Read once, and outside the timed fits.
    unfiltered = load_raw(cfg, unfiltered=True) if FILTER_INSIDE & set(e["methods"]) else None
    for method in e["methods"]:
        target = exp / (
            f"{method}.safetensors" if method.startswith("sepkit") else f"{method}-ica.fif"
        )
        if target.exists():
            continue
        t0 = time.perf_counter()
        if method.startswith("sepkit"):
            kw = dict(cfg["sepkit"], **_recipe.SEPKIT_METHODS[method])
            fit_raw = raw
            if method in FILTER_INSIDE:
                kw.update(highpass=cfg["data"]["l_freq"], lowpass=cfg["data"]["h_freq"])
                fit_raw = unfiltered
            sep = IVAESeparator(e["n_sources"], random_state=e["seed"], **kw)
            sep.fit(fit_raw, picks="eeg")
            timing[method] = time.perf_counter() - t0
            sep.save(target)
        else:
            ica = mne.preprocessing.ICA(
                e["n_sources"], method=method, random_state=e["seed"], max_iter="auto"
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ica.fit(raw, picks="eeg", verbose="error")
            timing[method] = time.perf_counter() - t0
            ica.save(target, verbose="error")
        timing["hardware"] = hardware()
        timing_path.write_text(json.dumps(timing, indent=2))
        print(f"[fit] {method}: {timing[method]:.1f} s", flush=True)


def _bandpass(x, sfreq):
    return mne.filter.filter_data(np.asarray(x, np.float64), sfreq, 1.0, 10.0, verbose="error")


def _abs_r(a, b) -> float:
    return float(abs(np.corrcoef(a, b)[0, 1]))


def evaluate_method(method: str, raw, cfg: dict, exp: Path, unfiltered=None) -> dict:
    """Find, score and remove one method's blink component.

    ``unfiltered`` is the recording as read (``load_raw(cfg, unfiltered=True)``),
    needed by the methods in FILTER_INSIDE.
    """
    d = cfg["data"]
    if method in FILTER_INSIDE:
        # Sources of the unfiltered recording, then the recording's band. Not
        # find_bads_eog(unfiltered): its 1-10 Hz filter lets sub-1 Hz drift of
        # the unfiltered sources through and lowers every score.
        est = IVAESeparator.load(exp / f"{method}.safetensors", device="cpu")
        sources = band(est.get_sources(unfiltered).get_data(), cfg, raw.info["sfreq"])
        ref = _bandpass(raw.get_data(picks=[d["blink_ref"]])[0], raw.info["sfreq"])
        scores = [_abs_r(_bandpass(c, raw.info["sfreq"]), ref) for c in sources]
    elif method.startswith("sepkit"):
        est = IVAESeparator.load(exp / f"{method}.safetensors", device="cpu")
        _, scores = est.find_bads_eog(raw, ch_name=d["blink_ref"])
        sources = est.get_sources(raw).get_data()
    else:
        est = mne.preprocessing.read_ica(exp / f"{method}-ica.fif", verbose="error")
        _, scores = est.find_bads_eog(
            raw, ch_name=d["blink_ref"], measure="correlation", threshold=0.5, verbose="error"
        )
        sources = est.get_sources(raw).get_data()
    scores = np.asarray(scores)
    blink = int(np.argmax(np.abs(scores)))
    if method in FILTER_INSIDE:
        cleaned = band(est.apply(unfiltered, exclude=[blink]), cfg)
    elif method.startswith("sepkit"):
        cleaned = est.apply(raw, exclude=[blink])
    else:
        cleaned = est.apply(raw.copy(), exclude=[blink], verbose="error")
    sfreq = raw.info["sfreq"]
    eog2 = _bandpass(raw.get_data(picks=["EOG2"])[0], sfreq)
    comp = _bandpass(sources[blink], sfreq)
    row = dict(
        method=method,
        blink_component=blink,
        abs_r_blink_vs_blink_ref=float(abs(scores[blink])),
        abs_r_blink_vs_eog2=_abs_r(comp, eog2),
        # The same in the fitted band (the issue's and ../shared/data's anchors).
        abs_r_blink_vs_blink_ref_fitted_band=_abs_r(
            sources[blink], raw.get_data(picks=[d["blink_ref"]])[0]
        ),
        abs_r_blink_vs_eog2_fitted_band=_abs_r(sources[blink], raw.get_data(picks=["EOG2"])[0]),
        frontal={},
    )
    for name in d["frontal"]:
        before = _bandpass(raw.get_data(picks=[name])[0], sfreq)
        after = _bandpass(cleaned.get_data(picks=[name])[0], sfreq)
        row["frontal"][name] = dict(
            abs_r_eog2_before=_abs_r(before, eog2),
            abs_r_eog2_after=_abs_r(after, eog2),
            abs_r_blink_before=_abs_r(before, comp),
            abs_r_blink_after=_abs_r(after, comp),
        )

    def removed_share(names):
        x = raw.get_data(picks=names)
        y = cleaned.get_data(picks=names)
        return float(np.median(((x - y) ** 2).sum(axis=1) / (x**2).sum(axis=1)))

    row["variance_removed_frontal"] = removed_share(d["frontal"])
    row["variance_removed_posterior"] = removed_share(d["posterior"])
    if method.startswith("sepkit"):
        # The model the separator fitted (mixing="auto" may try the unwarping).
        row.update(_recipe.fitted_model(est))
    row["_cleaned"] = cleaned
    row["_sources"] = sources
    row["_estimator"] = est
    return row


def blink_agreement(rows: list[dict], raw, cfg: dict) -> dict:
    """Each method's blink component against the first method's.

    The abs r of the two components, and the difference of their abs r with
    the blink reference with a 95 % interval from a moving-block bootstrap
    (``experiment.bootstrap_block`` seconds, ``bootstrap_n`` resamples): on a
    real recording there is no true blink to score against, and the channel
    it is judged by also carries other frontal activity, so a difference is
    only a finding when it is larger than its resampling spread.
    """
    e = cfg["experiment"]
    if len(rows) < 2:
        return {}
    sfreq = raw.info["sfreq"]
    ref = _bandpass(raw.get_data(picks=[cfg["data"]["blink_ref"]])[0], sfreq)
    comps = [_bandpass(r["_sources"][r["blink_component"]], sfreq) for r in rows]
    block = int(round(e["bootstrap_block"] * sfreq))
    n_blocks = len(ref) // block
    rng = np.random.default_rng(e["seed"])
    draws = rng.integers(0, n_blocks, size=(e["bootstrap_n"], n_blocks))
    idx = (draws[:, :, None] * block + np.arange(block)).reshape(e["bootstrap_n"], -1)

    def boot_abs_r(c):
        a, b = c[idx], ref[idx]
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        return np.abs((a * b).sum(1) / np.sqrt((a**2).sum(1) * (b**2).sum(1)))

    base = boot_abs_r(comps[0])
    out = []
    for row, comp in zip(rows[1:], comps[1:], strict=True):
        diff = boot_abs_r(comp) - base
        out.append(
            dict(
                method=row["method"],
                abs_r_components=_abs_r(comp, comps[0]),
                abs_r_difference=_abs_r(comp, ref) - _abs_r(comps[0], ref),
                ci95=[float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))],
            )
        )
    return dict(reference=rows[0]["method"], methods=out)


def blink_locked(rows: list[dict], raw, cfg: dict) -> dict:
    """What each removal does at the blinks and away from them.

    The blinks are the peaks of the band-passed (1-10 Hz) blink reference
    above ``experiment.blink_threshold`` robust standard deviations (median
    absolute value / 0.6745), at least 0.5 s apart, on the side of its largest
    excursion. (MNE's ``find_eog_events`` also returns the near-zero crests
    between the filter's undershoots on either side of each blink.) Per
    method: over the frontal channels (median), the share of the variance
    changed in blink-free samples (farther than
    ``experiment.blink_free_margin`` seconds from every peak: the non-blink
    signal a removal should keep, so lower is better) and the share of the
    variance left in the blinks (``experiment.blink_window`` seconds around
    each peak: lower is better, though brain activity during a blink keeps it
    above 0); and the peak-to-peak of the blink reference averaged over the
    blinks, after / before removal. Each method against the first, with a
    95 % interval from resampling blink-free blocks (``bootstrap_block``
    seconds) and blinks (``bootstrap_n`` times).
    """
    e = cfg["experiment"]
    d = cfg["data"]
    sfreq = raw.info["sfreq"]
    ref = _bandpass(raw.get_data(picks=[d["blink_ref"]])[0], sfreq)
    ref = ref * np.sign(ref[np.argmax(np.abs(ref))])
    robust_sd = np.median(np.abs(ref)) / 0.6745
    peaks, _ = find_peaks(
        ref, height=e["blink_threshold"] * robust_sd, distance=max(1, int(0.5 * sfreq))
    )
    lo, hi = (int(round(t * sfreq)) for t in e["blink_window"])
    peaks = peaks[(peaks + lo >= 0) & (peaks + hi < raw.n_times)]
    if len(peaks) < 2:
        return dict(n_blinks=int(len(peaks)))
    in_blink = peaks[:, None] + np.arange(lo, hi + 1)  # (n_blinks, n_offsets)
    margin = int(round(e["blink_free_margin"] * sfreq))
    free = np.ones(raw.n_times, bool)
    for p in peaks:
        free[max(0, p - margin) : p + margin + 1] = False
    block = int(round(e["bootstrap_block"] * sfreq))
    n_blocks = raw.n_times // block
    block_of = np.minimum(np.arange(raw.n_times) // block, n_blocks - 1)[free]

    def units(data):
        # Per bootstrap unit (blink-free block, or blink), so that a resample
        # is a sum of rows: frontal (changed, total) per block, frontal (left,
        # before) per blink, and the blink reference's epochs.
        x, y = raw.get_data(picks=d["frontal"]), data.get_data(picks=d["frontal"])

        def per_block(w):
            return np.stack([np.bincount(block_of, c[free], n_blocks) for c in w], 1)

        return (
            per_block((x - y) ** 2),
            per_block(x**2),
            (y[:, in_blink] ** 2).sum(-1).T,
            (x[:, in_blink] ** 2).sum(-1).T,
            data.get_data(picks=[d["blink_ref"]])[0][in_blink],
        )

    before_ptp = np.ptp(raw.get_data(picks=[d["blink_ref"]])[0][in_blink].mean(0))

    def scores(u, blocks=slice(None), blinks=slice(None)):
        changed, total, left, before, epochs = u
        return np.array(
            [
                np.median(changed[blocks].sum(0) / total[blocks].sum(0)),
                np.median(left[blinks].sum(0) / before[blinks].sum(0)),
                np.ptp(epochs[blinks].mean(0)) / before_ptp,
            ]
        )

    keys = [
        "blink_free_variance_changed_frontal",
        "blink_variance_left_frontal",
        "blink_average_left",
    ]
    rng = np.random.default_rng(e["seed"])
    draws = list(
        zip(
            rng.integers(0, n_blocks, size=(e["bootstrap_n"], n_blocks)),
            rng.integers(0, len(peaks), size=(e["bootstrap_n"], len(peaks))),
            strict=True,
        )
    )
    per_method = [units(r["_cleaned"]) for r in rows]
    out = dict(n_blinks=int(len(peaks)), blink_free_share=float(free.mean()), methods=[])
    for row, u in zip(rows, per_method, strict=True):
        item = dict(method=row["method"], **dict(zip(keys, map(float, scores(u)), strict=True)))
        if u is not per_method[0]:
            diff = np.array([scores(u, b, k) - scores(per_method[0], b, k) for b, k in draws])
            item["ci95_vs_first"] = {
                key: [float(np.quantile(diff[:, j], 0.025)), float(np.quantile(diff[:, j], 0.975))]
                for j, key in enumerate(keys)
            }
        out["methods"].append(item)
    return out


def ica_seed_spread(raw, cfg: dict) -> dict:
    """abs r of MNE ICA's blink component with the blink reference over seeds.

    ICA starts at random; the linear iVAE does not. The fitted estimators are
    not saved (stage 1 keeps the one of ``experiment.seed``).
    """
    e = cfg["experiment"]
    out = {}
    for method in e["methods"]:
        if method.startswith("sepkit") or not e["ica_seeds"]:
            continue
        values = []
        for seed in e["ica_seeds"]:
            ica = mne.preprocessing.ICA(
                e["n_sources"], method=method, random_state=seed, max_iter="auto"
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ica.fit(raw, picks="eeg", verbose="error")
            _, scores = ica.find_bads_eog(
                raw,
                ch_name=cfg["data"]["blink_ref"],
                measure="correlation",
                threshold=0.5,
                verbose="error",
            )
            values.append(float(np.max(np.abs(scores))))
        out[method] = dict(seeds=list(e["ica_seeds"]), abs_r=values)
        print(f"[evaluate] {method} seeds {e['ica_seeds']}: {np.round(values, 3).tolist()}")
    return out


def figures(rows: list[dict], raw, cfg: dict, exp: Path) -> None:
    # Blink topographies, one per method.
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), layout="constrained")
    axes = np.atleast_1d(axes)
    info = mne.pick_info(raw.info, mne.pick_types(raw.info, eeg=True))
    for ax, row in zip(axes, rows, strict=True):
        est = row["_estimator"]
        pattern = est.get_components()[:, row["blink_component"]]
        if row["method"].startswith("sepkit"):
            order = [list(est.ch_names_).index(n) for n in info["ch_names"]]
            pattern = pattern[order]
        mne.viz.plot_topomap(pattern, info, axes=ax, show=False)
        ax.set_title(
            f"{row['method']}: component {row['blink_component']}\n"
            f"|r| {row['abs_r_blink_vs_blink_ref']:.2f} with {cfg['data']['blink_ref']}"
        )
    fig.savefig(exp / "blink_topographies.png", dpi=120)
    plt.close(fig)
    # FPz before / after, with EOG2, over 20 s.
    sfreq = raw.info["sfreq"]
    sl = slice(int(10 * sfreq), int(30 * sfreq))
    t = np.arange(raw.n_times)[sl] / sfreq
    fig, axes = plt.subplots(
        len(rows) + 1, 1, figsize=(10, 2.2 * (len(rows) + 1)), sharex=True, layout="constrained"
    )
    ref = cfg["data"]["blink_ref"]
    axes[0].plot(t, raw.get_data(picks=["EOG2"])[0, sl] * 1e6, lw=0.7, color="tab:gray")
    axes[0].set_ylabel("EOG2 (uV)")
    for ax, row in zip(axes[1:], rows, strict=True):
        ax.plot(t, raw.get_data(picks=[ref])[0, sl] * 1e6, lw=0.7, color="k", label="before")
        ax.plot(
            t,
            row["_cleaned"].get_data(picks=[ref])[0, sl] * 1e6,
            lw=0.7,
            color="tab:red",
            label="after",
        )
        ax.set_ylabel(f"{ref} (uV)")
        ax.set_title(f"{row['method']}: blink component {row['blink_component']} removed")
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("Time (s)")
    fig.savefig(exp / "fpz_before_after.png", dpi=120)
    plt.close(fig)
    # The first sepkit method's blink component as a user inspects it.
    for row in rows:
        if row["method"].startswith("sepkit") and row["method"] not in _recipe.FILTER_INSIDE:
            (fig,) = row["_estimator"].plot_properties(
                raw, picks=[row["blink_component"]], fmax=cfg["data"]["h_freq"]
            )
            fig.savefig(exp / f"{row['method']}_blink_properties.png", dpi=120)
            break


def stage_evaluate(cfg: dict, exp: Path) -> None:
    raw = load_raw(cfg)
    if raw is None:
        return
    timing = json.loads((exp / "fit_seconds.json").read_text())
    methods = cfg["experiment"]["methods"]
    unfiltered = load_raw(cfg, unfiltered=True) if FILTER_INSIDE & set(methods) else None
    rows = [evaluate_method(m, raw, cfg, exp, unfiltered) for m in methods]
    figures(rows, raw, cfg, exp)
    sfreq = raw.info["sfreq"]
    eog2 = _bandpass(raw.get_data(picks=["EOG2"])[0], sfreq)
    ref = cfg["data"]["blink_ref"]
    base = dict(
        abs_r_eog2_vs_blink_ref=_abs_r(_bandpass(raw.get_data(picks=[ref])[0], sfreq), eog2)
    )
    agreement = blink_agreement(rows, raw, cfg)
    locked = blink_locked(rows, raw, cfg)
    spread = ica_seed_spread(raw, cfg)
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    for r in clean_rows:
        r["fit_seconds"] = timing[r["method"]]
    (exp / "results.json").write_text(
        json.dumps(
            dict(
                recording=base,
                methods=clean_rows,
                agreement=agreement,
                blink_locked=locked,
                ica_seed_spread=spread,
                hardware=timing["hardware"],
            ),
            indent=2,
        )
    )
    lines = [
        f"Band 1-10 Hz for all correlations; |r|(EOG2, {ref}) in the recording: "
        f"{base['abs_r_eog2_vs_blink_ref']:.2f}.",
        "",
        f"| method | blink comp. | abs r with {ref} | abs r with EOG2 | frontal abs r with EOG2 "
        "before -> after (median) | frontal abs r with blink comp. before -> after (median) | "
        "variance removed, frontal | variance removed, posterior | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def med(r, key):
        return float(np.median([f[key] for f in r["frontal"].values()]))

    for r in clean_rows:
        lines.append(
            f"| {r['method']} | {r['blink_component']} | {r['abs_r_blink_vs_blink_ref']:.3f} | "
            f"{r['abs_r_blink_vs_eog2']:.3f} | {med(r, 'abs_r_eog2_before'):.3f} -> "
            f"{med(r, 'abs_r_eog2_after'):.3f} | {med(r, 'abs_r_blink_before'):.3f} -> "
            f"{med(r, 'abs_r_blink_after'):.3f} | {r['variance_removed_frontal']:.1%} | "
            f"{r['variance_removed_posterior']:.1%} | {r['fit_seconds']:.1f} |"
        )
    fitted = [
        f"{r['method']} {r['mixing']}"
        + (
            ""
            if r["sensor_nonlinearity_max"] is None
            else f" (largest sensor_nonlinearity_ {r['sensor_nonlinearity_max']:.3f})"
        )
        for r in clean_rows
        if "mixing" in r
    ]
    if fitted:
        lines += ["", "Model fitted (mixing_): " + "; ".join(fitted)]
    if agreement:
        lines += [
            "",
            f"Blink components against {agreement['reference']}'s (1-10 Hz): "
            + "; ".join(
                f"{a['method']}: abs r {a['abs_r_components']:.3f}, abs r with {ref} "
                f"{a['abs_r_difference']:+.4f} (95 % block bootstrap "
                f"{a['ci95'][0]:+.4f} .. {a['ci95'][1]:+.4f})"
                for a in agreement["methods"]
            ),
        ]
    if "methods" in locked:
        first = locked["methods"][0]["method"]
        lines += [
            "",
            f"At the blinks ({locked['n_blinks']} peaks of {ref} above "
            f"{cfg['experiment']['blink_threshold']:g} robust SD) and away "
            f"from them ({locked['blink_free_share']:.0%} of the samples), frontal channels "
            f"(median); 95 % interval of the difference from {first}'s:",
            "",
            "| method | variance changed, blink-free | variance left in the blinks | "
            f"{ref} blink average left (peak-to-peak) |",
            "|---|---|---|---|",
        ]
        for m in locked["methods"]:
            ci = m.get("ci95_vs_first")
            cells = [
                f"{m[key]:.2%}"
                + ("" if ci is None else f" ({ci[key][0]:+.2%} .. {ci[key][1]:+.2%})")
                for key in (
                    "blink_free_variance_changed_frontal",
                    "blink_variance_left_frontal",
                    "blink_average_left",
                )
            ]
            lines.append(f"| {m['method']} | " + " | ".join(cells) + " |")
    for method, values in spread.items():
        lines += [
            "",
            f"{method} over seeds {values['seeds'][0]}-{values['seeds'][-1]}: blink abs r with "
            f"{ref} {min(values['abs_r']):.3f} .. {max(values['abs_r']):.3f} "
            f"(median {np.median(values['abs_r']):.3f})",
        ]
    lines += [
        "",
        f"In the fitted band ({cfg['data']['l_freq']:g}-{cfg['data']['h_freq']:g} Hz), "
        f"blink component abs r with {ref} / EOG2: "
        + "; ".join(
            f"{r['method']} {r['abs_r_blink_vs_blink_ref_fitted_band']:.3f} / "
            f"{r['abs_r_blink_vs_eog2_fitted_band']:.3f}"
            for r in clean_rows
        ),
    ]
    lines += ["", f"Hardware: {timing['hardware']}"]
    text = "\n".join(lines) + "\n"
    (exp / "results.md").write_text(text)
    print(text)


# ----------------------------------------------------------------------------- stage 3
# Real-data measures without ground truth (Delorme et al. 2012, issue #21 part 2).

# The methods of stage 3: sepkit variants (IVAESeparator arguments), MNE's ICA
# baselines (_recipe.mne_ica), AMICA (amica-python, `pip install sepkit[bench]`)
# and PCA. "amica-500" is AMICA at its own default of 500 iterations.
DIPOLAR_METHODS = ("sepkit", "sepkit-gauss", "sepkit-gg", "picard", "infomax", "fastica",
                   "amica", "amica-500", "pca")  # fmt: skip


def load_dipolar_raw(cfg: dict):
    """The recording high-passed, EOG leads typed EOG, EEG average-referenced; None if absent."""
    d = cfg["data"]
    path = (ROOT / d["path"]).resolve()
    if not path.exists():
        print(f"[skip] {path} is absent: this recipe needs ../shared/data beside the project.")
        return None
    raw = filter_eeg(read_eeg(path, picks="eeg"), cfg["dipolar"]["l_freq"], None)
    raw.set_channel_types({name: "eog" for name in d["eog"]}, verbose="error")
    crop = cfg["dipolar"]["crop"]
    if crop:
        raw.crop(0.0, crop)
    return raw.set_eeg_reference("average", verbose="error")


def block_resample(raw, block_s: float, rng):
    """A moving-block bootstrap copy of ``raw``: blocks of ``block_s`` s drawn with replacement."""
    block = int(round(block_s * raw.info["sfreq"]))
    n_blocks = raw.n_times // block
    starts = rng.integers(0, raw.n_times - block + 1, size=n_blocks)
    data = raw.get_data()
    resampled = np.concatenate([data[:, s : s + block] for s in starts], axis=1)
    return mne.io.RawArray(resampled, raw.info.copy(), verbose="error")


def _ica_unmixing(ica) -> np.ndarray:
    """An MNE ICA's unmixing in sensor units: sources = W @ (x - pca_mean_)."""
    n = ica.n_components_
    return ica.unmixing_matrix_ @ ica.pca_components_[:n] / ica.pre_whitener_[:, 0]


def fit_unmixing(method: str, raw, n_components: int, seed: int, cfg: dict):
    """Fit one method on the EEG channels of ``raw``.

    Returns (W, seconds, fitted): the unmixing (n_components, n_channels) in
    sensor units, so that the sources are ``W @ (x - mean)``, the fit time,
    and the fitted object as an ``mne.preprocessing.ICA`` (sepkit's via
    ``to_mne_ica``) or None.
    """
    dp = cfg["dipolar"]
    X = raw.get_data(picks="eeg")
    t0 = time.perf_counter()
    fitted = None
    if method.startswith("sepkit"):
        kw = dict(cfg["sepkit"], **_recipe.SEPKIT_METHODS[method])
        sep = IVAESeparator(n_components, random_state=seed, **kw).fit(raw, picks="eeg")
        seconds = time.perf_counter() - t0
        fitted = sep
        W = _ica_unmixing(sep.to_mne_ica())
    elif method in ("picard", "infomax", "fastica"):
        fitted = _recipe.mne_ica(method, n_components, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fitted.fit(raw, picks="eeg", verbose="error")
        seconds = time.perf_counter() - t0
        W = _ica_unmixing(fitted)
    elif method.startswith("amica"):
        import torch
        from amica import AMICA

        max_iter = 500 if method == "amica-500" else dp["amica_max_iter"]
        est = AMICA(n_components, whiten="pca", max_iter=max_iter, random_state=seed, verbose=0)
        default_dtype = torch.get_default_dtype()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
                est.fit(X.T)
        finally:
            # amica-python 0.1.2 sets torch's global default dtype to float64
            # in fit, which breaks the float32 torch models fitted after it.
            torch.set_default_dtype(default_dtype)
        seconds = time.perf_counter() - t0
        W = est.components_
    else:  # PCA: the principal directions (unwhitened principal components)
        evals, evecs = np.linalg.eigh(np.cov(X))
        W = evecs[:, np.argsort(evals)[::-1][:n_components]].T
        seconds = time.perf_counter() - t0
    return np.asarray(W, np.float64), seconds, fitted


def mir_baseline(X: np.ndarray, n_components: int, rank: int) -> np.ndarray:
    """The basis B whose rows ``B @ X`` every decomposition's MIR is measured against.

    At full rank the channels less the last one (after the average reference
    the last is minus the sum of the others, so nothing is lost): MIR against
    the channels, as Delorme et al. Below full rank the data's first
    ``n_components`` principal components, whitened (as their code does for
    a reduced decomposition): PCA's own MIR is then 0 by construction.
    """
    if n_components == rank:
        return np.eye(X.shape[0])[: X.shape[0] - 1]
    evals, evecs = np.linalg.eigh(np.cov(X))
    top = np.argsort(evals)[::-1][:n_components]
    return evecs[:, top].T / np.sqrt(evals[top])[:, None]


def score_unmixing(W: np.ndarray, raw, baseline: np.ndarray, sphere) -> dict:
    """RV of each map (``pinv(W)``'s columns), MIR in kbit/s and the subspace check."""
    X = raw.get_data(picks="eeg")
    X = X - X.mean(axis=1, keepdims=True)
    info = mne.pick_info(raw.info, mne.pick_types(raw.info, eeg=True))
    rv = dipolarity(np.linalg.pinv(W), info, sphere=sphere)
    # W in the baseline's coordinates: the least-squares map from B X to W X
    # (exact when W's rows lie in the span of B's, as for every method here
    # at full rank; below it the residual says how far a method's subspace is
    # from the data's principal one).
    Y, S = baseline @ X, W @ X
    W_b = np.linalg.lstsq(Y.T, S.T, rcond=None)[0].T
    residual = float(np.linalg.norm(S - W_b @ Y) / np.linalg.norm(S))
    mir = mutual_information_reduction(Y, W_b) * raw.info["sfreq"] / 1000.0
    return dict(
        rv=rv.tolist(),
        share_rv_below_5=float((rv < 0.05).mean()),
        share_rv_below_10=float((rv < 0.10).mean()),
        mir_kbit_s=mir,
        subspace_residual=residual,
    )


def iclabel_counts(fitted: dict, raw) -> dict:
    """ICLabel's class counts per (method, n_components) for the seed-0 fits on the recording."""
    from mne_icalabel import label_components

    out = {}
    for (method, n), obj in fitted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ICLabel's "designed for extended infomax"
            if isinstance(obj, IVAESeparator):
                labels = obj.label_components(raw)["labels"]
            else:
                labels = label_components(raw, obj, method="iclabel")["labels"]
        out[f"{method}/{n}"] = dict(Counter(labels).most_common())
        print(f"[dipolar] ICLabel {method} {n} components: {out[f'{method}/{n}']}", flush=True)
    return out


def _replicates(method: str, dp: dict) -> list[tuple[int, int | None]]:
    """(seed, resample) pairs: each seed on the recording, then the resamples at the first seed."""
    first = [(dp["seeds"][0], None)]
    if method in dp["single_fit_methods"]:
        return first
    return [(s, None) for s in dp["seeds"]] + [
        (dp["seeds"][0], r) for r in range(dp["n_resamples"])
    ]


def stage_dipolar(cfg: dict, exp: Path) -> None:
    raw = load_dipolar_raw(cfg)
    if raw is None:
        return
    dp = cfg["dipolar"]
    exp.mkdir(parents=True, exist_ok=True)
    X = raw.get_data(picks="eeg")
    rank = int(np.linalg.matrix_rank(X))
    counts = [rank if n == "rank" else int(n) for n in dp["n_components"]]
    info = mne.pick_info(raw.info, mne.pick_types(raw.info, eeg=True))
    sphere = mne.make_sphere_model("auto", "auto", info, verbose="error")
    resamples = [
        block_resample(raw, dp["bootstrap_block"], np.random.default_rng([dp["resample_seed"], r]))
        for r in range(dp["n_resamples"])
    ]
    # One untimed fit per torch / AMICA method first, so that no timed fit pays
    # for first-call set-up (imports, kernels).
    warm = raw
    for method in {m for m in dp["methods"] if m.startswith(("sepkit", "amica"))}:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_unmixing(
                method, warm, 2, dp["seeds"][0], dict(cfg, dipolar=dict(dp, amica_max_iter=2))
            )
    rows, keep = [], {}
    for n in counts:
        baselines = {None: mir_baseline(X, n, rank)}
        baselines.update(
            {r: mir_baseline(b.get_data(picks="eeg"), n, rank) for r, b in enumerate(resamples)}
        )
        for method in dp["methods"]:
            for seed, r in _replicates(method, dp):
                data = raw if r is None else resamples[r]
                W, seconds, fitted = fit_unmixing(method, data, n, seed, cfg)
                row = dict(method=method, n_components=n, seed=seed, resample=r,
                           fit_seconds=seconds, **score_unmixing(W, data, baselines[r], sphere))  # fmt: skip
                rows.append(row)
                if r is None and seed == dp["seeds"][0] and method in dp["iclabel_methods"]:
                    keep[(method, n)] = fitted
                print(
                    f"[dipolar] {method} n={n} seed={seed} resample={r}: "
                    f"RV<5% {row['share_rv_below_5']:.1%}, RV<10% {row['share_rv_below_10']:.1%}, "
                    f"MIR {row['mir_kbit_s']:.3f} kbit/s, {seconds:.1f} s",
                    flush=True,
                )
    labels = iclabel_counts(keep, raw) if keep else {}
    result = dict(rank=rank, n_times=int(raw.n_times), sample_rate=float(raw.info["sfreq"]),
                  rows=rows, iclabel=labels, summary=summarise(rows),
                  hardware=hardware())  # fmt: skip
    (exp / "dipolar.json").write_text(json.dumps(result, indent=2))
    text = dipolar_markdown(result, dp)
    (exp / "dipolar.md").write_text(text)
    print(text)


def summarise(rows: list[dict]) -> list[dict]:
    """Per (method, n_components): median, min and max of each measure over the fits."""
    keys = ["share_rv_below_5", "share_rv_below_10", "mir_kbit_s", "fit_seconds"]
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["n_components"]), []).append(row)
    out = []
    for (method, n), group in groups.items():
        item = dict(method=method, n_components=n, n_fits=len(group))
        first = group[0]  # the first seed on the recording itself
        for key in keys:
            values = np.array([g[key] for g in group])
            item[key] = dict(median=float(np.median(values)), min=float(values.min()),
                             max=float(values.max()), first=float(first[key]))  # fmt: skip
        item["subspace_residual_max"] = max(g["subspace_residual"] for g in group)
        out.append(item)
    return out


def dipolar_markdown(result: dict, dp: dict) -> str:
    """The stage's tables: median [min - max] over the fits, and the first seed alone."""

    def cell(stat, fmt):
        if stat["min"] == stat["max"]:
            return fmt(stat["median"])
        return f"{fmt(stat['median'])} [{fmt(stat['min'])} - {fmt(stat['max'])}]"

    def pct(v):
        return f"{v:.1%}"

    def mir(v):
        return f"{v:.3f}"

    def sec(v):
        return f"{v:.1f}"

    lines = [
        f"EEG rank after the average reference: {result['rank']}; {result['n_times']} samples "
        f"at {result['sample_rate']:g} Hz. Fits per row: seeds {dp['seeds']} on the recording "
        f"and {dp['n_resamples']} block-bootstrap resamples ({dp['bootstrap_block']:g} s blocks) "
        f"at seed {dp['seeds'][0]}; cells: median [min - max].",
        "",
        "| method | n_components | fits | RV < 5 % | RV < 10 % | MIR (kbit/s) | fit s | "
        "first fit: RV < 5 % / < 10 % / MIR / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        first = (f"{pct(s['share_rv_below_5']['first'])} / {pct(s['share_rv_below_10']['first'])}"
                 f" / {mir(s['mir_kbit_s']['first'])} / {sec(s['fit_seconds']['first'])}")  # fmt: skip
        lines.append(
            f"| {s['method']} | {s['n_components']} | {s['n_fits']} | "
            f"{cell(s['share_rv_below_5'], pct)} | {cell(s['share_rv_below_10'], pct)} | "
            f"{cell(s['mir_kbit_s'], mir)} | {cell(s['fit_seconds'], sec)} | {first} |"
        )
    worst = max(s["subspace_residual_max"] for s in result["summary"])
    lines += ["", f"Largest relative residual of W X in the MIR baseline's span: {worst:.1e}"]
    if result["iclabel"]:
        lines += ["", "ICLabel classes (seed 0, on the recording):", ""]
        lines += [f"- {key}: {value}" for key, value in result["iclabel"].items()]
    lines += ["", f"Hardware: {result['hardware']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=3)
    stages = {1: stage_fit, 2: stage_evaluate, 3: stage_dipolar}
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
