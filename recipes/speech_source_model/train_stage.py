"""Stage 2 of the speech source-model recipe: train the source prior on the corpus."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sepkit.data import WindowCorpus
from sepkit.models import SpeechSourcePrior
from sepkit.pretrained import export_source_model
from sepkit.train.source_prior import train_source_prior

RATE = 16000


def simulate_rirs(n_rirs: int, rt60: tuple[float, float], seed: int) -> torch.Tensor:
    """(n_rirs, n_taps) unit-energy impulse responses of random shoebox rooms (1 s at most)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(n_rirs):
        dims = rng.uniform([4.0, 4.0, 2.5], [9.0, 8.0, 3.5])
        absorption, max_order = pra.inverse_sabine(rng.uniform(*rt60), dims)
        room = pra.ShoeBox(
            dims, fs=RATE, materials=pra.Material(absorption), max_order=min(max_order, 20)
        )
        room.add_source(rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 1.0]))
        room.add_microphone(rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 1.0]))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float32)[:RATE]
        rirs.append(h / np.linalg.norm(h))
    out = torch.zeros(n_rirs, max(len(h) for h in rirs))
    for i, h in enumerate(rirs):
        out[i, : len(h)] = torch.from_numpy(h)
    return out


def _batches(corpus: WindowCorpus, batch_size: int):
    loader = torch.utils.data.DataLoader(corpus, batch_size=batch_size, num_workers=0)
    for batch in loader:
        yield batch["window"][:, 0, :]


def train(cfg: dict, files: list[str], exp: Path, card: str, config: dict) -> Path:
    """Train on ``files`` (the train split), export to EXP/models/<name>; returns the folder."""
    t = cfg["train"]
    out = exp / "models" / t["name"]
    if out.exists():
        print(f"[train] {out} exists; delete it to retrain")
        return out
    torch.manual_seed(t["seed"])
    corpus = WindowCorpus(
        files,
        t["window_seconds"],
        hop_seconds=t["hop_seconds"],
        sample_rate=RATE,
        channels="mean",
        seed=t["seed"],
        n_epochs=None,
    )
    hop = int(t["hop"])
    segment_frames = max(1, round(t["segment_seconds"] * RATE / hop))
    model = SpeechSourcePrior(
        int(t["n_fft"]) // 2 + 1, t["n_latent"], t["n_hidden"], t["kernel_size"]
    )
    rirs = simulate_rirs(t["n_rirs"], tuple(t["rt60"]), t["seed"])
    t0 = time.perf_counter()

    def say(step, loss):
        print(
            f"[train] step {step}/{t['n_steps']} loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    history = train_source_prior(
        model,
        _batches(corpus, t["batch_size"]),
        n_fft=int(t["n_fft"]),
        hop=hop,
        segment_frames=segment_frames,
        n_steps=t["n_steps"],
        lr=t["lr"],
        rirs=rirs,
        p_reverb=t["p_reverb"],
        seed=t["seed"],
        log_every=50,
        callback=say,
    )
    seconds = time.perf_counter() - t0
    (exp / "train_history.json").parent.mkdir(parents=True, exist_ok=True)
    (exp / "train_history.json").write_text(json.dumps(history))
    return export_source_model(
        model,
        t["name"],
        root=exp / "models",
        sample_rate=RATE,
        n_fft=int(t["n_fft"]),
        hop=hop,
        segment_frames=segment_frames,
        config={**config, "train_seconds": round(seconds, 1), "n_steps": t["n_steps"]},
        card=card,
    )
