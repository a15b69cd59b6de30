"""Audio blind source separation recipe: sepkit vs FastICA, AuxIVA, ILRMA.

Stages:
  1 prepare   mix the speakers for every (n_sources, condition, seed) into EXP/data/
  2 fit       run every method on every mixture; one JSON per fit in EXP/fits/
              (resumable: stops after run.max_seconds, rerun to continue)
  3 report    aggregate SI-SDRi, SDR, SIR and seconds per 10 s into EXP/results.md

Usage (from the repository root):
  python recipes/audio_bss/run.py --config recipes/audio_bss/conf/default.toml
  python recipes/audio_bss/run.py --config recipes/audio_bss/conf/tiny.toml --stage 2 \\
      --data.seeds=[0,1]

Overrides take the form --section.key=value (value parsed as TOML); unknown keys
are errors. Without the CMU ARCTIC clips (data.audio_dir) the recipe exits with a
message saying how to point it at your own mono speech files.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import FastICA

from sepkit import IVAESeparator, read_audio
from sepkit._recipe import (
    hardware,
    load_config,
    pra_bss,
    recipe_parser,
    run_stages,
    separation_scores,
)
from sepkit.datasets import make_audio_mixture

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INSTANTANEOUS = ("inst", "tanh")


def audio_dir(cfg: dict) -> Path:
    d = Path(cfg["data"]["audio_dir"])
    return d if d.is_absolute() else ROOT / d


def load_speakers(cfg: dict) -> list[np.ndarray]:
    folder = audio_dir(cfg)
    missing = [f for spk in cfg["data"]["speakers"] for f in spk if not (folder / f).is_file()]
    if missing:
        raise SystemExit(
            f"[prepare] skipped: {len(missing)} speech file(s) missing in {folder} (e.g. "
            f"{missing[0]}). This recipe uses the CMU ARCTIC clips of ../shared/data/audio; to "
            "use your own mono recordings, pass --data.audio_dir='\"/your/folder\"' and "
            '--data.speakers=\'[["a1.wav", "a2.wav"], ["b1.wav"], ["c1.wav"]]\' (one '
            "list of files per speaker)."
        )
    rate = float(cfg["data"]["sample_rate"])
    n = int(round(cfg["data"]["duration"] * rate))
    out = []
    for spk in cfg["data"]["speakers"]:
        clips = [read_audio(folder / f, sample_rate=rate).data[0] for f in spk]
        s = np.concatenate(clips)
        out.append(np.tile(s, int(np.ceil(n / s.size)))[:n])
    return out


def data_path(exp: Path, n: int, cond: str, seed: int) -> Path:
    return exp / "data" / f"{n}x{n}_{cond}_seed{seed}.npz"


def stage_prepare(cfg: dict, exp: Path) -> None:
    d = cfg["data"]
    speakers = load_speakers(cfg)
    for n in d["n_sources"]:
        if n > len(speakers):
            raise SystemExit(f"n_sources={n} needs {n} speakers in data.speakers")
        for cond in d["conditions"]:
            for seed in d["seeds"]:
                path = data_path(exp, n, cond, seed)
                if path.exists():
                    continue
                kw = dict(snr_db=d["snr_db"], sample_rate=d["sample_rate"], random_state=seed)
                if cond in INSTANTANEOUS:
                    kw.update(kind="instantaneous", nonlinearity="tanh" if cond == "tanh" else None)
                elif cond.startswith("room"):
                    kw.update(kind="room", rt60=float(cond[4:]))
                else:
                    raise SystemExit(f"unknown condition {cond!r}")
                m = make_audio_mixture(np.stack(speakers[:n]), n, **kw)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(
                    path,
                    mixture=m.mixture,
                    images=m.images,
                    rt60=np.nan if m.rt60 is None else m.rt60,
                    sample_rate=m.sample_rate,
                )
                print(f"[prepare] {path.name} rt60={m.rt60}", flush=True)
    print(f"[prepare] data in {exp / 'data'}")


def run_method(method: str, x: np.ndarray, n: int, rate: float, mcfg: dict, seed: int):
    from sepkit import Recording

    if method == "ivae":
        rec = Recording(x, rate, tuple(f"mic{i}" for i in range(n)), "audio")
        return IVAESeparator(n_sources=n, random_state=seed).fit(rec).transform(rec).data
    if method == "ivae_ext":
        # The linear models with the extended prior (the EEG default; on audio
        # "auto" keeps the Gaussian prior), instantaneous conditions only.
        rec = Recording(x, rate, tuple(f"mic{i}" for i in range(n)), "audio")
        sep = IVAESeparator(n_sources=n, prior="extended", random_state=seed)
        return sep.fit(rec).transform(rec).data
    if method == "ivae_flow":
        # The exact-likelihood flow family (sepkit.methods.flow): one invertible
        # nonlinear g for all microphones, instantaneous conditions only.
        rec = Recording(x, rate, tuple(f"mic{i}" for i in range(n)), "audio")
        sep = IVAESeparator(n_sources=n, mixing="flow", random_state=seed)
        return sep.fit(rec).transform(rec).data
    if method == "ivae_time":
        sep = IVAESeparator(
            n_sources=n, domain="time", n_steps=mcfg["ivae_time_n_steps"], random_state=seed
        )
        return sep.fit(x).transform(x)
    if method == "fastica":
        est = FastICA(n, whiten="unit-variance", max_iter=1000, random_state=seed)
        return est.fit_transform(x.T.astype(np.float64)).T.astype(np.float32)
    from sepkit import functional_tf as F

    # Each anchor on the frames sepkit's tf family uses at this rate.
    return pra_bss(x, n, method, F.fft_size_for(rate), mcfg, seed)


def applies(method: str, cond: str) -> bool:
    return cond in INSTANTANEOUS or method not in ("ivae_time", "ivae_flow", "ivae_ext", "fastica")


def stage_fit(cfg: dict, exp: Path) -> None:
    d, mcfg = cfg["data"], cfg["methods"]
    out = exp / "fits"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    # Seeds outermost: a partial run still covers every condition.
    for seed in d["seeds"]:
        for n in d["n_sources"]:
            for cond in d["conditions"]:
                data = None
                for method in mcfg["names"]:
                    if not applies(method, cond):
                        continue
                    path = out / f"{method}_{n}x{n}_{cond}_seed{seed}.json"
                    if path.exists():
                        continue
                    if time.perf_counter() - t_start > cfg["run"]["max_seconds"]:
                        print("[fit] time budget reached; rerun stage 2 to continue", flush=True)
                        return
                    if data is None:
                        data = np.load(data_path(exp, n, cond, seed))
                    x, ref = data["mixture"], data["images"]
                    rate = float(data["sample_rate"])
                    torch.manual_seed(seed)
                    t0 = time.perf_counter()
                    est = run_method(method, x, n, rate, mcfg, seed)
                    seconds = time.perf_counter() - t0
                    row = dict(
                        method=method,
                        n_sources=n,
                        condition=cond,
                        seed=seed,
                        rt60=float(data["rt60"]),
                        seconds=seconds,
                        seconds_per_10s=seconds * 10.0 * rate / x.shape[1],
                        **separation_scores(ref, est, x[0]),
                    )
                    path.write_text(json.dumps(row))
                    print(
                        f"[fit] {method:9s} {n}x{n} {cond:8s} seed={seed} "
                        f"SI-SDRi={row['si_sdri']:6.2f} SDR={row['sdr']:6.2f} "
                        f"SIR={row['sir']:6.2f} ({seconds:.1f} s)",
                        flush=True,
                    )


def stage_report(cfg: dict, exp: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((exp / "fits").glob("*.json"))]
    lines = [
        "| mix | condition | measured RT60 (s, median) | method | SI-SDRi (dB, median) "
        "| SI-SDRi min-max | SDR | SIR | s per 10 s audio | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in cfg["data"]["n_sources"]:
        for cond in cfg["data"]["conditions"]:
            for method in cfg["methods"]["names"]:
                sel = [
                    r
                    for r in rows
                    if r["n_sources"] == n and r["condition"] == cond and r["method"] == method
                ]
                if not sel:
                    continue
                v = [r["si_sdri"] for r in sel]
                rt = [r["rt60"] for r in sel if r["rt60"] == r["rt60"]]
                rt60 = f"{statistics.median(rt):.2f}" if rt else "-"
                lines.append(
                    f"| {n}x{n} | {cond} | {rt60} | {method} | {statistics.median(v):.2f} | "
                    f"{min(v):.2f} to {max(v):.2f} | "
                    f"{statistics.median(r['sdr'] for r in sel):.2f} | "
                    f"{statistics.median(r['sir'] for r in sel):.2f} | "
                    f"{statistics.median(r['seconds_per_10s'] for r in sel):.2f} | {len(sel)} |"
                )
    text = "\n".join(lines) + f"\n\nHardware: {hardware()}\n"
    (exp / "results.md").write_text(text)
    print(text)
    return text


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=3)
    stages = {1: stage_prepare, 2: stage_fit, 3: stage_report}
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
