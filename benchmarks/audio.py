"""Audio separation time and quality: sepkit (domain="tf") vs AuxIVA / ILRMA.

2x2 reverberant speech mixtures (pyroomacoustics shoebox, RT60 ~0.3 s, 30 dB
SNR) of 10 s and 60 s, built from the CMU ARCTIC clips in ../shared/data/audio
(each speaker's clips concatenated and tiled to the duration). Methods, on the
same mixtures in one run: ``IVAESeparator(n_sources=2)`` with its defaults
(fit + transform), pyroomacoustics ``auxiva`` (20 iterations) and ``ilrma``
(100 iterations, 2 bases) on the same STFT as sepkit (Hann, 256 ms, hop 1/4). Scores:
SI-SDRi (mean over sources, vs the images at mic 0), wall-clock seconds.

``--long`` instead measures the streaming path on a 10-minute 2-channel 16 kHz
file (built in a temp folder from tiled clips, deleted afterwards):
``sepkit.tf_separation.separate_file`` time and the process's peak RSS.

Usage:
  python benchmarks/audio.py                    # 10 s and 60 s, 3 rooms each
  python benchmarks/audio.py --durations 10 --seeds 0
  python benchmarks/audio.py --long             # 10-minute file, peak RSS
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sepkit import IVAESeparator, Recording, read_audio
from sepkit import functional_tf as F
from sepkit._recipe import hardware
from sepkit.datasets import make_audio_mixture
from sepkit.metrics import apply_permutation, find_permutation, si_sdr_improvement

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT.parent / "shared" / "data" / "audio"
SPEAKERS = [
    ["cmu_arctic_us_aew_a0001.wav", "cmu_arctic_us_aew_a0002.wav", "cmu_arctic_us_aew_a0003.wav"],
    ["cmu_arctic_us_axb_a0004.wav", "cmu_arctic_us_axb_a0005.wav", "cmu_arctic_us_axb_a0006.wav"],
]
RATE = 16000


def speakers(n_times: int) -> np.ndarray:
    if not AUDIO.is_dir():
        sys.exit(f"skipped: {AUDIO} not found (the CMU ARCTIC clips of ../shared/data/audio)")
    out = []
    for spk in SPEAKERS:
        s = np.concatenate([read_audio(AUDIO / f).data[0] for f in spk])
        out.append(np.tile(s, int(np.ceil(n_times / s.size)))[:n_times])
    return np.stack(out)


def run(method: str, x: np.ndarray) -> np.ndarray:
    if method == "sepkit":
        rec = Recording(x, RATE, ("mic0", "mic1"), "audio")
        return IVAESeparator(n_sources=2, random_state=0).fit(rec).transform(rec).data
    import pyroomacoustics as pra

    n_fft = F.fft_size_for(RATE)
    X = F.stft(torch.from_numpy(x), n_fft, n_fft // 4).permute(2, 0, 1).numpy()
    np.random.seed(0)  # noqa: NPY002 (ILRMA draws its NMF init from the global RNG)
    if method == "auxiva":
        Y = pra.bss.auxiva(X, n_iter=20, proj_back=True)
    else:
        Y = pra.bss.ilrma(X, n_iter=100, n_components=2, proj_back=True)
    Yt = torch.from_numpy(np.ascontiguousarray(Y)).permute(1, 2, 0).contiguous()
    return F.istft(Yt, n_fft, n_fft // 4, x.shape[1]).numpy()


def bench(durations, seeds, methods, rt60):
    print(f"2x2 rooms, target RT60 {rt60} s, SNR 30 dB, 16 kHz. Machine: {hardware()}")
    print("| audio (s) | seed | measured RT60 (s) | method | seconds | SI-SDRi (dB) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for dur in durations:
        S = speakers(int(dur * RATE))
        for seed in seeds:
            m = make_audio_mixture(S, 2, kind="room", rt60=rt60, snr_db=30.0, random_state=seed)
            for method in methods:
                t0 = time.perf_counter()
                est = run(method, m.mixture)
                sec = time.perf_counter() - t0
                est = apply_permutation(est, find_permutation(m.images, est))
                v = float(np.mean(si_sdr_improvement(m.images, est, m.mixture[0])))
                rows.append((dur, method, sec, v))
                print(
                    f"| {dur:g} | {seed} | {m.rt60:.2f} | {method} | {sec:.2f} | {v:.2f} |",
                    flush=True,
                )
    print("\nMedians over seeds:")
    print("| audio (s) | method | seconds | SI-SDRi (dB) |")
    print("|---|---|---|---|")
    for dur in durations:
        for method in methods:
            sel = [r for r in rows if r[0] == dur and r[1] == method]
            print(
                f"| {dur:g} | {method} | {np.median([r[2] for r in sel]):.2f} | "
                f"{np.median([r[3] for r in sel]):.2f} |"
            )


def bench_long(minutes: float):
    import soundfile as sf

    from sepkit.tf_separation import separate_file

    # Build the file in blocks so that building it does not dominate peak RSS.
    S = speakers(60 * RATE)
    m = make_audio_mixture(S, 2, kind="room", rt60=0.3, snr_db=30.0, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long_mix.wav"
        n_blocks = int(round(minutes))
        with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
            peak = np.abs(m.mixture).max()
            for _ in range(n_blocks):
                f.write((0.5 * m.mixture / peak).T)
        del S, m
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        paths = separate_file(path, Path(tmp) / "out", n_sources=2, random_state=0, verbose=True)
        sec = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = sf.info(paths[0]).frames
    print(f"Machine: {hardware()}")
    print("| file | seconds (fit on <= 60 s + stream) | peak RSS (MiB) | peak RSS before (MiB) |")
    print("|---|---|---|---|")
    print(f"| {n / RATE / 60:.1f} min, 2 ch, 16 kHz | {sec:.1f} | {rss:.0f} | {rss0:.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--durations", default="10,60", help="seconds of audio, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="room seeds, comma-separated")
    p.add_argument("--methods", default="sepkit,auxiva,ilrma")
    p.add_argument("--rt60", type=float, default=0.3)
    p.add_argument("--long", action="store_true", help="measure a 10-minute file instead")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the --long file")
    a = p.parse_args(argv)
    if a.long:
        bench_long(a.minutes)
    else:
        bench(
            [float(d) for d in a.durations.split(",")],
            [int(s) for s in a.seeds.split(",")],
            a.methods.split(","),
            a.rt60,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
