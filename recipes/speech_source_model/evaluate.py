"""Stages 3-5 of the speech source-model recipe: rooms, fits, results table."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sepkit import IVAESeparator, Recording, read_audio
from sepkit import functional_tf as F
from sepkit._recipe import hardware, pra_bss, separation_scores
from sepkit.datasets import make_audio_mixture
from sepkit.methods.tf import SPEECH_POSTFILTER

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent.parent


# ------------------------------------------------------------------ speech
def speaker_pool(cfg: dict, rows: list[dict], speech: str) -> dict[str, list[Path]]:
    """{speaker: files} of the validation split ("valid") or the CMU ARCTIC clips ("arctic")."""
    if speech == "valid":
        pool = {}
        for r in rows:
            if r["split"] == "valid":
                pool.setdefault(r["speaker"], []).append(Path(r["path"]))
        # Speakers with enough speech for the longest mixture (no tiling of one prompt).
        longest = max(cfg["eval"]["durations"])
        secs = {s: sum(sf.info(f).duration for f in fs) for s, fs in pool.items()}
        return {s: pool[s] for s in sorted(pool) if secs[s] >= longest}
    folder = Path(cfg["eval"]["arctic_dir"])
    folder = folder if folder.is_absolute() else ROOT / folder
    pool = {}
    for f in sorted(folder.glob("*arctic*.wav")):
        spk = f.stem.split("_")[3] if f.stem.startswith("cmu_arctic_") else "a"
        pool.setdefault(spk, []).append(f)
    return pool


def speaker_signal(files: list[Path], n_times: int, rng) -> np.ndarray:
    """The speaker's prompts in random order, concatenated (tiled if short) to n_times."""
    order = rng.permutation(len(files))
    clips, total = [], 0
    for i in order:
        x = read_audio(files[i], sample_rate=RATE).data.mean(axis=0)
        clips.append(x)
        total += x.size
        if total >= n_times:
            break
    s = np.concatenate(clips)
    return np.tile(s, int(np.ceil(n_times / s.size)))[:n_times]


def conditions(cfg: dict):
    e = cfg["eval"]
    for speech in e["speech"]:
        for n in e["n_sources"]:
            for n_mics in sorted({max(n, m) for m in e["n_mics"]}):
                for spacing in e["mic_spacing"]:
                    for rt60 in e["rt60"]:
                        for duration in e["durations"]:
                            yield speech, n, n_mics, spacing, rt60, duration


def cond_name(speech, n, n_mics, spacing, rt60, duration) -> str:
    return f"{speech}_{n}src_{n_mics}mic_{int(spacing * 100)}cm_rt{rt60:g}_{duration:g}s"


def stage_prepare(cfg: dict, exp: Path, rows: list[dict]) -> None:
    out = exp / "data"
    out.mkdir(parents=True, exist_ok=True)
    pools = {s: speaker_pool(cfg, rows, s) for s in cfg["eval"]["speech"]}
    for cond in conditions(cfg):
        speech, n, n_mics, spacing, rt60, duration = cond
        pool = pools[speech]
        if n > len(pool):
            print(f"[prepare] skip {cond_name(*cond)}: {len(pool)} {speech} speakers", flush=True)
            continue
        for seed in cfg["eval"]["seeds"]:
            path = out / f"{cond_name(*cond)}_seed{seed}.npz"
            if path.exists():
                continue
            rng = np.random.default_rng([seed, n, n_mics, int(rt60 * 100), int(duration)])
            names = sorted(pool)
            chosen = rng.choice(len(names), n, replace=False)
            n_times = int(duration * RATE)
            S = np.stack([speaker_signal(pool[names[i]], n_times, rng) for i in chosen])
            m = make_audio_mixture(
                S,
                n_mics,
                kind="room",
                rt60=rt60,
                sample_rate=RATE,
                mic_spacing=spacing,
                snr_db=cfg["eval"]["snr_db"],
                random_state=seed,
            )
            np.savez(path, mixture=m.mixture, images=m.images, rt60=m.rt60)
            print(f"[prepare] {path.name} rt60={m.rt60:.2f}", flush=True)


# ------------------------------------------------------------------ methods
def run_method(method: str, x: np.ndarray, n: int, cfg: dict, model_dir: Path, seed: int):
    rec = Recording(x.astype(np.float32), RATE, tuple(f"mic{i}" for i in range(len(x))), "audio")
    if method in ("pretrained", "pretrained_amortised"):
        # "pretrained_amortised": the shipped model alone, no weight trained per mixture.
        fit_params = {"n_finetune": 0} if method == "pretrained_amortised" else None
        sep = IVAESeparator(n, source_model=model_dir, random_state=seed, fit_params=fit_params)
        return sep.fit(rec).transform(rec).data
    if method == "tf":
        return IVAESeparator(n, domain="tf", random_state=seed).fit(rec).transform(rec).data
    name, n_fft = method.split("@")
    anchor, plus, post = name.partition("+")
    if plus and post != "pf":
        raise ValueError(
            f"anchor {name!r}: the one variant is ANCHOR+pf (with our post-filter), got "
            f"+{post}. Pass e.g. 'ilrma+pf' in --methods.anchors."
        )
    est = pra_bss(x, n, anchor, int(n_fft), cfg["methods"], seed)
    return postfiltered(est, int(n_fft)) if plus else est


def postfiltered(est: np.ndarray, n_fft: int) -> np.ndarray:
    """An anchor's sources (images at the reference mic) with the source model's post-filter.

    The same blend as ``IVAESeparator(source_model=...)``'s default (share
    SPEECH_POSTFILTER, :func:`sepkit.functional_tf.wiener_blend`), on the
    anchor's own frames: "ANCHOR+pf" rows compare like with like.
    """
    hop = n_fft // 4
    Y = F.stft(torch.from_numpy(np.ascontiguousarray(est, np.float32)), n_fft, hop)
    return F.istft(F.wiener_blend(Y, SPEECH_POSTFILTER), n_fft, hop, est.shape[1]).numpy()


def method_names(cfg: dict) -> list[str]:
    names = list(cfg["methods"]["ours"])
    for anchor in cfg["methods"]["anchors"]:
        names += [f"{anchor}@{n}" for n in cfg["methods"]["anchor_n_fft"]]
    return names


def stage_fit(cfg: dict, exp: Path, model_dir: Path) -> None:
    out = exp / "fits"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch.set_num_threads(int(cfg["run"]["threads"]))
    for path in sorted((exp / "data").glob("*.npz"), key=_seed_first):
        data = None
        for method in method_names(cfg):
            res = out / f"{path.stem}__{method}.json"
            if res.exists():
                continue
            if time.perf_counter() - t_start > cfg["run"]["max_seconds"]:
                print("[fit] time budget reached; rerun stage 4 to continue", flush=True)
                return
            if data is None:
                data = np.load(path)
            x, ref = data["mixture"], data["images"]
            n = ref.shape[0]
            seed = int(path.stem.rsplit("seed", 1)[1])
            t0 = time.perf_counter()
            est = run_method(method, x, n, cfg, model_dir, seed)
            seconds = time.perf_counter() - t0
            row = dict(
                condition=path.stem.rsplit("_seed", 1)[0],
                seed=seed,
                method=method,
                rt60=float(data["rt60"]),
                seconds_per_10s=seconds * 10.0 * RATE / x.shape[1],
                **separation_scores(ref, est, x[0]),
            )
            res.write_text(json.dumps(row))
            print(
                f"[fit] {path.stem} {method:14s} SI-SDRi={row['si_sdri']:6.2f} "
                f"SDR={row['sdr']:6.2f} SIR={row['sir']:6.2f} ({seconds:.1f} s)",
                flush=True,
            )


def _seed_first(path: Path):
    # Seeds outermost: a partial run still covers every condition.
    stem = path.stem
    return int(stem.rsplit("seed", 1)[1]), stem


def stage_report(cfg: dict, exp: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((exp / "fits").glob("*.json"))]
    by = {}
    for r in rows:
        by.setdefault(r["condition"], {}).setdefault(r["method"], []).append(r)
    lines = [
        "| condition | method | SI-SDRi (dB, median) | min to max | SDR | SIR | s per 10 s | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond in sorted(by):
        for method, sel in _best_frames(by[cond]).items():
            v = [r["si_sdri"] for r in sel]
            lines.append(
                f"| {cond} | {method} | {statistics.median(v):.2f} | {min(v):.2f} to {max(v):.2f} "
                f"| {statistics.median(r['sdr'] for r in sel):.2f} "
                f"| {statistics.median(r['sir'] for r in sel):.2f} "
                f"| {statistics.median(r['seconds_per_10s'] for r in sel):.2f} | {len(sel)} |"
            )
    text = "\n".join(lines) + f"\n\nHardware: {hardware()}\n" + _summary(by) + _by_array(by)
    (exp / "results.md").write_text(text)
    print(text)
    return text


def _best_frames(methods: dict) -> dict:
    """Our rows, and each anchor at its best frame length (by median SI-SDRi), named so."""
    out, best = {}, {}
    for method, sel in methods.items():
        if "@" not in method:
            out[method] = sel
            continue
        name = method.split("@")[0]
        med = statistics.median(r["si_sdri"] for r in sel)
        if name not in best or med > best[name][0]:
            best[name] = (med, method, sel)
    for _, method, sel in best.values():
        ms = int(method.split("@")[1]) * 1000 // RATE
        out[f"{method.split('@')[0]} ({ms} ms)"] = sel
    return out


def _pooled(by: dict, group) -> dict:
    """{group(condition): {row family: fits}}, the anchors at their best frame per condition."""
    pooled = {}
    for cond, methods in by.items():
        families = pooled.setdefault(group(cond), {})
        for method, sel in _best_frames(methods).items():
            families.setdefault(method.split(" (")[0], []).extend(sel)
    return pooled


def _summary(by: dict) -> str:
    """Median over all conditions of each row family (anchors at their best frame each)."""
    families = _pooled(by, lambda c: "all").get("all", {})  # none yet: an empty table
    pooled = {k: [r["si_sdri"] for r in sel] for k, sel in families.items()}
    lines = ["", "| method | SI-SDRi median over all conditions | fits |", "|---|---|---|"]
    for key, v in sorted(pooled.items(), key=lambda kv: -statistics.median(kv[1])):
        lines.append(f"| {key} | {statistics.median(v):.2f} | {len(v)} |")
    return "\n".join(lines) + "\n"


def _array_shape(condition: str) -> str:
    """The "2src x 3mic" of a condition name (the issue's targets are per shape: 2x2, 3x3)."""
    parts = condition.split("_")
    return f"{parts[1]} x {parts[2]}"


def _by_array(by: dict) -> str:
    """Per sources x microphones: each row family's median, and ours against the anchors.

    The anchors are pooled at their best frame per condition; "best anchor" is
    the anchor with the highest pooled median of that shape, "tf" sepkit's
    per-mixture model.
    """
    pooled = _pooled(by, _array_shape)
    lines = [
        "",
        "| sources x mics | method | SI-SDRi median | s per 10 s | fits | vs best anchor | vs tf |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, methods in sorted(pooled.items()):
        med = {m: statistics.median(r["si_sdri"] for r in sel) for m, sel in methods.items()}
        anchors = [m for m in med if any("@" in r["method"] for r in methods[m])]
        best = max(anchors, key=med.get, default=None)
        for m in sorted(med, key=lambda m: -med[m]):
            ours = m not in anchors
            vs_best = f"{med[m] - med[best]:+.2f} ({best})" if ours and best else ""
            vs_tf = f"{med[m] - med['tf']:+.2f}" if ours and m != "tf" and "tf" in med else ""
            secs = statistics.median(r["seconds_per_10s"] for r in methods[m])
            lines.append(
                f"| {shape} | {m} | {med[m]:.2f} | {secs:.2f} | {len(methods[m])} "
                f"| {vs_best} | {vs_tf} |"
            )
    return "\n".join(lines) + "\n"
