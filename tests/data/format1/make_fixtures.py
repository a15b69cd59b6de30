"""Write format-1 separator files and their outputs, for tests/test_serialization.py.

Run once with the code before the methods/ refactor (commit ee2b3e8):
    python tests/data/format1/make_fixtures.py
Every later release must load these files and give the same outputs.
"""

from pathlib import Path

import numpy as np

from sepkit import IVAESeparator
from sepkit.io import Recording

HERE = Path(__file__).parent


def _eeg(seed=0, n_channels=6, n_sources=3, sample_rate=128.0, seconds=60, clip=False):
    rng = np.random.default_rng(seed)
    n_times = int(seconds * sample_rate)
    n_win = 30
    scales = rng.uniform(0.2, 2.0, (n_sources, n_win))
    s = rng.laplace(size=(n_sources, n_times)) * np.repeat(scales, n_times // n_win, axis=1)
    A = rng.normal(size=(n_channels, n_sources))
    x = A @ s + 0.01 * rng.normal(size=(n_channels, n_times))
    if clip:
        x = np.tanh(x / x.std(axis=1, keepdims=True)) * x.std(axis=1, keepdims=True)
    names = tuple(f"EEG{i:02d}" for i in range(n_channels))
    return Recording((x * 1e-5).astype(np.float32), sample_rate, names, "eeg")


def _audio(seed=0, sample_rate=8000.0, seconds=3.0, room=False):
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    env = np.repeat(rng.uniform(0.1, 1.0, (2, 30)), n // 30 + 1, axis=1)[:, :n]
    s = rng.laplace(size=(2, n)) * env
    if room:
        x = np.zeros((2, n))
        for i in range(2):
            for j in range(2):
                d = int(rng.integers(0, 12))
                x[i, d:] += (0.4 + 0.6 * (i == j)) * s[j, : n - d]
    else:
        x = np.array([[1.0, 0.6], [0.5, 1.0]]) @ s
    return Recording(x.astype(np.float32), sample_rate, ("mic0", "mic1"), "audio")


def cases():
    eeg = _eeg()
    return {
        "network": (
            IVAESeparator(2, n_steps=30, n_layers=2, kernel_size=3, random_state=0, domain="time"),
            _audio(),
            None,
        ),
        "network_labels": (
            IVAESeparator(
                2, n_steps=30, n_layers=2, random_state=1, domain="time", mixing="nonlinear"
            ),
            _audio(1),
            np.repeat(np.arange(6), 4000),
        ),
        "linear": (IVAESeparator(3, random_state=0), eeg, None),
        "gengauss": (IVAESeparator(3, prior="gengauss", random_state=0), eeg, None),
        "post_nonlinear": (
            IVAESeparator(3, mixing="post-nonlinear", highpass=1.0, random_state=0),
            _eeg(2, clip=True),
            None,
        ),
        "tf": (IVAESeparator(2, domain="tf", random_state=0), _audio(3, room=True), None),
    }


def main():
    for name, (sep, rec, u) in cases().items():
        sep.fit(rec, u)
        path = HERE / f"{name}.safetensors"
        sep.save(path, overwrite=True)
        S = sep.transform(rec, u).data
        # Every 16th sample keeps the files small; any change shows there too.
        out = {"sources": S[:, ::16], "reconstruction": sep.inverse_transform(S, u)[:, ::16]}
        if name != "tf":
            out["components"] = sep.get_components()
        np.savez_compressed(HERE / f"{name}_expected.npz", **out)
        print(name, path.stat().st_size)
    x = np.random.default_rng(0)
    for model in ("ivae-synthetic-5src-v1", "ivae-eeg1020-256hz-v1", "ivae-audio-2mic-16khz-v1"):
        sep = IVAESeparator.from_pretrained(model, device="cpu")
        X = x.normal(size=(sep.n_channels_, 1024)).astype(np.float32)
        if sep.sample_rate_ is not None and sep.n_channels_ > 2:
            X *= 1e-5
        np.savez_compressed(
            HERE / f"{model}_expected.npz",
            X=X,
            sources=sep.transform(X),
            components=sep.get_components(),
        )


if __name__ == "__main__":
    main()
