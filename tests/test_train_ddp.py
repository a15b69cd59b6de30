"""Tests for ``python -m sepkit.train CONFIG``: data-parallel training under torchrun
(2 CPU processes, gloo) and the single-process config runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from sepkit import IVAESeparator
from sepkit.cli.train import main

MODEL = """
[model]
n_sources = 3
n_steps = 20
n_hidden = 8
batch_size = 32
device = "cpu"
random_state = 0
checkpoint_every = 10
"""
SYNTHETIC = """
[data]
synthetic = {n_sources = 3, n_segments = 10, n_per_segment = 100, n_layers = 1, random_state = 0}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, text):
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_two_gloo_ranks_keep_identical_replicas(tmp_path):
    cfg = _config(
        tmp_path, 'out = "model.safetensors"\ncheckpoint_dir = "ckpt"\n' + SYNTHETIC + MODEL
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "sepkit.train",
        str(cfg),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "saved" in res.stdout and "world size 2" in res.stdout

    # Each rank checkpoints its own state at the end (weights_only: plain tensors).
    ranks = [
        torch.load(tmp_path / "ckpt" / f"ivae_checkpoint.rank{r}.pt", weights_only=True)
        for r in range(2)
    ]
    assert ranks[0]["step"] == ranks[1]["step"] == 20 and ranks[0]["done"]
    # The ranks drew different batches ...
    assert not torch.equal(ranks[0]["rng"]["generator"], ranks[1]["rng"]["generator"])
    # ... yet, with the gradients averaged, the replicas are identical,
    for name, value in ranks[0]["model"].items():
        torch.testing.assert_close(value, ranks[1]["model"][name], rtol=0, atol=0)
    # and their all-reduced losses agree.
    assert ranks[0]["history"] == ranks[1]["history"]

    # Rank 0 wrote a separator that IVAESeparator.load reads, with those weights.
    sep = IVAESeparator.load(tmp_path / "model.safetensors", device="cpu")
    for name, value in sep.model_.state_dict().items():
        torch.testing.assert_close(value, ranks[0]["model"][name], rtol=0, atol=0)
    assert sep.n_steps_run_ == 20 and np.isfinite(sep.history_[-1]["loss"])


def test_single_process_corpus_of_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i, n_times in enumerate((600, 900)):
        x = rng.standard_normal((3, n_times)) * rng.uniform(0.5, 2.0, (3, 1))
        np.save(tmp_path / f"rec{i}.npy", x.astype(np.float32))
    text = 'out = "corpus.safetensors"\n[data]\nfiles = ["rec0.npy", "rec1.npy"]\n' + MODEL
    text += "window_samples = 100\n"
    cfg = _config(tmp_path, text)
    assert main([str(cfg)]) == 0
    assert "saved" in capsys.readouterr().out
    sep = IVAESeparator.load(tmp_path / "corpus.safetensors", device="cpu")
    # u is the window index within each file, numbered on: 6 + 9 windows.
    assert sep.n_segments_ == 600 // 100 + 900 // 100
    with pytest.raises(FileExistsError, match="exists. Set overwrite = true"):
        main([str(cfg)])
    _config(tmp_path, text.replace('out = "corpus', 'overwrite = true\nout = "corpus'))
    assert main([str(cfg)]) == 0


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (
            'out = "m.safetensors"\nmdoel = 1\n' + SYNTHETIC + MODEL,
            ValueError,
            r"Unknown key\(s\) \['mdoel'\]",
        ),
        ('out = "m.safetensors"\n' + MODEL, ValueError, "lacks the 'data' entry"),
        (
            'out = "m.safetensors"\n[data]\nfiles = ["a.npy"]\nsynthetic = {}\n' + MODEL,
            ValueError,
            "must give exactly one of 'files'",
        ),
        (
            'out = "m.safetensors"\n' + SYNTHETIC + MODEL + "n_sourcs = 2\n",
            ValueError,
            r"Unknown key\(s\) \['n_sourcs'\] in \[model\]",
        ),
        (
            'out = "m.safetensors"\n[data]\nfiles = ["a.npy", "d.wav"]\n' + MODEL,
            ValueError,
            "The files have different sample rates",
        ),
        (
            'out = "m.safetensors"\n[data]\nfiles = ["a.npy", "b.npy"]\n' + MODEL,
            ValueError,
            "has 2 channels but the first file has 3",
        ),
        (
            'out = "m.safetensors"\n[data]\nfiles = ["c.npy"]\n' + MODEL,
            ValueError,
            r"expected \(n_channels, n_times\)",
        ),
        (
            'out = "m.pt"\n' + SYNTHETIC + MODEL,
            ValueError,
            r"'out' in .*cfg.toml must end in .safetensors .*got '.*m.pt'\. Name it e.g. "
            r"m.safetensors",
        ),
    ],
)
def test_config_errors(tmp_path, text, error, match):
    import soundfile as sf

    sf.write(str(tmp_path / "d.wav"), np.zeros((50, 3)), 8000)
    np.save(tmp_path / "a.npy", np.zeros((3, 50), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((2, 50), np.float32))
    np.save(tmp_path / "c.npy", np.zeros(50, np.float32))
    with pytest.raises(error, match=match):
        main([str(_config(tmp_path, text))])


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="No config file at"):
        main([str(tmp_path / "none.toml")])
