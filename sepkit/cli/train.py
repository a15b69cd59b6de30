"""``python -m sepkit.train CONFIG``: train one separator on a corpus.

Trains one separator on a corpus of recordings, on one process or
data-parallel under ``torchrun``::

    torchrun --nproc_per_node=2 -m sepkit.train config.toml

Each rank holds all the data and draws its own batches (seed + rank);
DistributedDataParallel averages the gradients, so the replicas stay
identical. gloo is the backend on CPU, nccl on CUDA. Rank 0 writes the
separator, readable with :meth:`sepkit.IVAESeparator.load`. The config
(TOML; paths relative to its folder)::

    out = "corpus.safetensors"   # the fitted separator
    overwrite = false            # replace an existing `out`
    checkpoint_dir = "ckpt"      # optional: checkpoints, one file per rank
    resume = false               # continue from the checkpoints in checkpoint_dir

    [data]
    files = ["s01.fif", "s02.fif"]  # .npy (n_channels, n_times), audio or EEG
    # or, instead of files, a make_nonlinear_ica dataset:
    # synthetic = {n_sources = 3, n_segments = 10, n_per_segment = 200, n_layers = 1}

    [model]                      # IVAESeparator keyword arguments
    n_sources = 3
    n_steps = 2000
    random_state = 0

With files, u is the window index within each file (windows never span two
files); with ``synthetic``, the dataset's segment labels. Recordings are
concatenated in time, so a training chunk longer than one sample
(``kernel_size > 1``) may straddle the junction of two files.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import numpy as np
import torch

from ..datasets import make_nonlinear_ica
from ..io import SUPPORTED_EEG_EXTENSIONS, Recording, read_audio, read_eeg, to_recording
from ..separator import IVAESeparator, check_model_path
from ..train import distributed_training
from ..windows import resolve_window_samples, window_labels

_CONFIG_KEYS = {"out", "overwrite", "checkpoint_dir", "resume", "data", "model"}
_DATA_KEYS = {"files", "synthetic"}


def _unknown(found, allowed, where: str) -> None:
    extra = sorted(set(found) - set(allowed))
    if extra:
        raise ValueError(
            f"Unknown key(s) {extra} in {where}. Allowed keys are {sorted(allowed)}; "
            "check the spelling."
        )


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"No config file at {path}.")
    with path.open("rb") as f:
        cfg = tomllib.load(f)
    _unknown(cfg, _CONFIG_KEYS, f"the config {path}")
    for key in ("out", "data", "model"):
        if key not in cfg:
            raise ValueError(
                f"The config {path} lacks the '{key}' entry; see the sepkit.cli.train docstring."
            )
    _unknown(cfg["data"], _DATA_KEYS, f"[data] of {path}")
    if ("files" in cfg["data"]) == ("synthetic" in cfg["data"]):
        raise ValueError(
            f"[data] of {path} must give exactly one of 'files' (a list of recordings) or "
            "'synthetic' (make_nonlinear_ica arguments)."
        )
    return cfg


def _read_recording(path: Path):
    """(data, sample_rate) of one .npy, audio or EEG file; sample_rate None for .npy."""
    name = path.name.lower()
    if name.endswith(".npy"):
        data = np.load(path, allow_pickle=False)
        if data.ndim != 2:
            raise ValueError(
                f"{path} holds an array of shape {data.shape}; expected (n_channels, n_times)."
            )
        return data.astype(np.float32), None
    if any(name.endswith(ext) for ext in SUPPORTED_EEG_EXTENSIONS):
        rec = to_recording(read_eeg(path))
    else:
        rec = read_audio(path)
    return rec.data, rec.sample_rate


def _corpus(cfg: dict, base: Path, sep):
    """Concatenated data (Recording or array) and per-sample window labels."""
    data_cfg = cfg["data"]
    if "synthetic" in data_cfg:
        X, _, u = make_nonlinear_ica(**data_cfg["synthetic"])
        return X, u
    parts, labels, rates, offset = [], [], set(), 0
    for name in data_cfg["files"]:
        data, rate = _read_recording(base / name)
        if parts and data.shape[0] != parts[0].shape[0]:
            raise ValueError(
                f"{name} has {data.shape[0]} channels but the first file has "
                f"{parts[0].shape[0]}; a corpus needs the same channels in every file."
            )
        rates.add(rate)
        # u = window index within each file, numbered on across files, so no
        # window mixes two recordings.
        window_samples = resolve_window_samples(
            sep.window, sep.window_samples, rate, data.shape[1], sep.n_sources
        )
        codes = window_labels(data.shape[1], window_samples)
        parts.append(data)
        labels.append(codes + offset)
        offset += int(codes.max()) + 1
    if len(rates) > 1:
        raise ValueError(
            f"The files have different sample rates {sorted(map(str, rates))}; resample "
            "them to one rate first."
        )
    X = np.concatenate(parts, axis=1)
    rate = rates.pop()
    if rate is not None:
        X = Recording(X, rate)
    return X, np.concatenate(labels)


def main(argv: list[str] | None = None) -> int:
    """Train one separator on the corpus of a TOML config (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m sepkit.train",
        description="Train one IVAESeparator on a corpus, data-parallel under torchrun.",
    )
    parser.add_argument("config", help="TOML config (see the sepkit.cli.train docstring)")
    args = parser.parse_args(argv)
    config = Path(args.config)
    cfg = _read_config(config)
    base = config.parent
    # Checked before training, not when the trained model is saved.
    out = check_model_path(base / cfg["out"], f"'out' in {config}")
    if out.exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{out} exists. Set overwrite = true in the config to replace it.")
    model_cfg = dict(cfg["model"])
    _unknown(model_cfg, IVAESeparator().get_params(), f"[model] of {config}")
    if "checkpoint_dir" in cfg:
        model_cfg["checkpoint_dir"] = str(base / cfg["checkpoint_dir"])

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = model_cfg.get("device", "auto")
    use_cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    if world > 1:
        if use_cuda:
            model_cfg["device"] = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        if world > 1 and model_cfg.get("random_state") is None:
            # Same seed everywhere: rank r then draws its batches from seed + r.
            seed = torch.randint(2**31 - 1, (1,), device="cuda" if use_cuda else "cpu")
            torch.distributed.broadcast(seed, src=0)
            model_cfg["random_state"] = int(seed.item())
        model_cfg["verbose"] = bool(model_cfg.get("verbose", False)) and rank == 0
        sep = IVAESeparator(**model_cfg)
        X, u = _corpus(cfg, base, sep)
        with distributed_training():
            sep.fit(X, u, resume=bool(cfg.get("resume", False)))
        if rank == 0:
            sep.save(out, overwrite=bool(cfg.get("overwrite", False)))
            print(f"saved {out} ({sep.n_steps_run_} steps, world size {world})")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return 0
