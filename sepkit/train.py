"""The training loop (plain PyTorch), and ``python -m sepkit.train CONFIG``.

Data that fit stay on the model's device for the whole run; each step gathers
a batch of random chunks by indexing, so the loop never copies from the host
and never synchronises with it except every ``log_every`` steps, when the
accumulated loss is read back and checked for NaN/Inf (and at checkpoints,
which copy the state to the host anyway). Data too large for the GPU stay on
the host and stream over batch by batch, gathered into pinned memory and
copied asynchronously (``data_device``; see :func:`resolve_data_device`).

Run as a module, this file trains one separator on a corpus of recordings,
on one process or data-parallel under ``torchrun``::

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

import contextlib
import copy
import functools
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ._atomic import atomic_write
from .models import IVAE

PRECISIONS = ("fp32", "bf16")
DATA_DEVICES = ("auto", "device", "host")
# data_device="auto" keeps the data on the GPU when it takes at most this
# fraction of the free GPU memory; the rest is left for the model, the
# optimiser and the activations of a batch (a few MB for typical sizes), and
# for other processes sharing the card.
_RESIDENT_FRACTION = 0.5
#: Name of the checkpoint file in ``checkpoint_dir`` (one per rank under DDP).
CHECKPOINT_NAME = "ivae_checkpoint"
_CHECKPOINT_FORMAT = 1
# Consecutive non-finite log intervals (each restoring the last good state and
# halving the learning rate) after which training gives up: 5 halvings bring
# the rate to 1/32 of the schedule, where a finite loss should have returned.
MAX_NONFINITE = 5

# Set by main(): when True and a process group is initialised, train_ivae
# trains data-parallel. A flag rather than an IVAESeparator argument keeps the
# estimator's API free of launcher details.
_DISTRIBUTED = False


@contextlib.contextmanager
def distributed_training():
    """Within this block, :func:`train_ivae` trains with DDP over the process group."""
    global _DISTRIBUTED
    old, _DISTRIBUTED = _DISTRIBUTED, True
    try:
        yield
    finally:
        _DISTRIBUTED = old


def _rank_world() -> tuple[int, int]:
    if _DISTRIBUTED and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def checkpoint_path(checkpoint_dir) -> Path:
    """The checkpoint file of this process in ``checkpoint_dir``."""
    rank, world = _rank_world()
    suffix = f".rank{rank}" if world > 1 else ""
    return Path(checkpoint_dir) / f"{CHECKPOINT_NAME}{suffix}.pt"


def check_precision(precision, device: torch.device) -> str:
    """Validate ``precision`` for ``device``: bf16 autocast needs a CUDA device."""
    if precision not in PRECISIONS:
        raise ValueError(
            "Invalid value for the 'precision' parameter. Allowed values are 'fp32' and "
            f"'bf16', but got {precision!r} instead."
        )
    if precision == "bf16":
        # On CPU, bf16 autocast is slower than fp32 for these small layers and
        # gives nothing back, so asking for it is treated as a mistake.
        if device.type != "cuda":
            raise ValueError(
                f"precision='bf16' needs a CUDA device, but training runs on {device}. "
                "Pass precision='fp32' on CPU."
            )
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bf16' needs a GPU with bfloat16 support (Ampere or newer), and "
                f"{torch.cuda.get_device_name(device)} has none. Pass precision='fp32'."
            )
    return precision


def resolve_data_device(data_device, device: torch.device, n_bytes: int) -> str:
    """Where the training data live: ``"device"`` (resident) or ``"host"`` (streamed).

    Parameters
    ----------
    data_device : {"auto", "device", "host"}
        "device" copies the whole recording to ``device`` once; "host" keeps
        it in host memory and copies each batch over (from pinned memory,
        asynchronously, on CUDA); "auto" picks "device" on CPU, and on CUDA
        when ``n_bytes`` is at most half the free memory of the GPU
        (``torch.cuda.mem_get_info``), else "host".
    device : torch.device
        The device the model trains on.
    n_bytes : int
        Size of the data (observations, u and chunk starts) in bytes.

    Returns
    -------
    where : {"device", "host"}
    """
    if data_device not in DATA_DEVICES:
        raise ValueError(
            "Invalid value for the 'data_device' parameter. Allowed values are 'auto', "
            f"'device' and 'host', but got {data_device!r} instead."
        )
    if data_device != "auto":
        return data_device
    if device.type != "cuda":
        return "device"  # host and device memory are the same thing
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if n_bytes <= _RESIDENT_FRACTION * free else "host"


def _lr_factor(step: int, n_steps: int, warmup: int) -> float:
    # Linear warm-up avoids early blow-ups with a large learning rate; the
    # cosine decay to 5% lets the final steps settle the sources.
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, n_steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_at(step: int, n_steps: int, batch_size: int, batch_size_start) -> int:
    # Geometric growth from batch_size_start (first step) to batch_size (last).
    if batch_size_start is None or n_steps == 1:
        return batch_size
    ratio = batch_size / batch_size_start
    return max(1, round(batch_size_start * ratio ** (step / (n_steps - 1))))


def _rng_states(generator: torch.Generator, device: torch.device) -> dict:
    states = dict(generator=generator.get_state(), rng_cpu=torch.get_rng_state())
    if device.type == "cuda":
        states["rng_cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["rng_cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["rng_cuda"], device)


def _write_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _read_checkpoint(path: Path, fingerprint: dict) -> dict:
    # weights_only=True: tensors and plain containers only, never arbitrary pickle.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several error types for a bad file
        raise ValueError(f"{path} is not a readable sepkit checkpoint: {err}") from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a sepkit checkpoint (format {_CHECKPOINT_FORMAT}).")
    saved = state["fingerprint"]
    # Values implied by checkpoints written before a setting existed: data
    # held on the device, a constant batch, no KL warm-up.
    implied = dict(data_on_host=False, kl_warmup=0.0)
    diff = [
        f"{k}={saved.get(k)!r} (now {v!r})"
        for k, v in fingerprint.items()
        if saved.get(k, implied.get(k)) != v
    ]
    if diff:
        raise ValueError(
            f"The checkpoint {path} was written by a run with other settings: "
            f"{', '.join(diff)}. Resume with the same settings, or pass resume=False with "
            "another checkpoint_dir."
        )
    return state


# Adaptive gradient clipping: a step's gradient norm is capped at this many
# times its running average. Adam turns a sudden gradient spike into a step of
# up to lr / sqrt(1 - beta2) (about 30 x lr) per parameter; on 64-channel
# EEG (600 s, 1000-sample windows) one such spike took the loss from 89 to
# 8384 and the fit never recovered (MCC 0.14; 0.92 with clipping). The cap is
# relative, so it needs no tuning to the loss scale, and stays on the device.
_CLIP_FACTOR = 4.0
_CLIP_EMA = 0.98


def _clip_gradients(model, grad_ema):
    """Scale gradients down to at most _CLIP_FACTOR x their running norm; return the new average."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return grad_ema
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    norm = norm.detach().float()
    if grad_ema is None:
        grad_ema = norm
    limit = _CLIP_FACTOR * grad_ema
    scale = torch.clamp(limit / (norm + 1e-12), max=1.0)
    torch._foreach_mul_(grads, scale.to(grads[0].dtype))
    return _CLIP_EMA * grad_ema + (1.0 - _CLIP_EMA) * torch.minimum(norm, limit)


def _take(data: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """``data`` indexed by ``idx`` along ``dim`` (0 or 1), where ``data`` is."""
    return data[idx] if dim == 0 else data[:, idx]


def _gather(data: torch.Tensor, idx: torch.Tensor, dim: int, pin: bool) -> torch.Tensor:
    """As :func:`_take`, into a fresh host buffer, pinned if ``pin`` (streamed batches)."""
    flat = idx.reshape(-1)
    shape = (*data.shape[:dim], flat.numel(), *data.shape[dim + 1 :])
    out = torch.empty(shape, dtype=data.dtype, pin_memory=pin)
    torch.index_select(data, dim, flat, out=out)
    return out.reshape(*data.shape[:dim], *idx.shape, *data.shape[dim + 1 :])


def train_ivae(
    model: IVAE,
    X: torch.Tensor,
    u: torch.Tensor | None,
    *,
    n_steps: int,
    batch_size: int,
    chunk_samples: int,
    lr: float,
    generator: torch.Generator,
    valid_starts: torch.Tensor | None = None,
    log_every: int = 100,
    verbose: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    early_stopping: bool = False,
    patience: int = 5,
    min_delta: float = 1e-3,
    precision: str = "fp32",
    compile: bool = False,
    data_device: str = "device",
    callback=None,
    batch_size_start: int | None = None,
    kl_warmup: float = 0.0,
) -> list[dict]:
    """Fit ``model`` by stochastic maximisation of the ELBO.

    Parameters
    ----------
    model : IVAE
        On the device to train on.
    X : Tensor, shape (n_channels, n_times)
        Standardised observations, on the model's device (resident data) or
        on the CPU (streamed: each step gathers its batch on the host, into
        pinned memory when the model is on CUDA, and copies it over with
        ``non_blocking=True``, so the copy overlaps the previous step's
        kernels). ``u`` and ``valid_starts`` live where ``X`` does.
    u : Tensor or None
        Discrete labels, shape (n_times,) int64, or continuous, shape
        (n_u, n_times); None for the plain-VAE baseline.
    n_steps, batch_size : int
        Optimiser steps and chunks per batch (the last step's batch when
        ``batch_size_start`` is given).
    chunk_samples : int
        Length of each training chunk (1 for the per-sample MLP case).
    lr : float
        Peak learning rate of Adam.
    generator : torch.Generator
        On ``X``'s device; makes the batches reproducible. The
        reparameterisation noise comes from the global torch RNG, which the
        caller seeds (and forks).
    valid_starts : Tensor of int64 or None
        Allowed chunk start indices (e.g. chunks not overlapping BAD
        annotations); default all.
    log_every : int
        Steps between host reads of the loss.
    verbose : bool
        Show a progress bar with the ELBO and steps/s.
    checkpoint_dir : path or None
        Folder for the checkpoint (created if missing), written atomically
        every ``checkpoint_every`` steps and at the end: model, optimiser,
        RNG states (batch generator and global), step, learning-rate scale,
        early-stopping state and history.
    checkpoint_every : int
        Steps between checkpoints; each one also reads the loss back.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` (the result is
        bit-identical to an uninterrupted run); start afresh when there is
        none yet. With ``resume=False`` an existing checkpoint is an error
        rather than overwritten.
    early_stopping : bool
        Stop when the loss (-ELBO, averaged over a log interval) has not
        improved by ``min_delta`` for ``patience`` log intervals.
    patience : int
        Log intervals without improvement before stopping.
    min_delta : float
        Smallest decrease of the -ELBO per sample (nats) that counts.
    precision : {"fp32", "bf16"}
        "bf16" runs the forward pass under bfloat16 autocast (CUDA only);
        autocast keeps exp, log, pow and sums, hence the log-likelihood and KL
        reductions, in float32.
    compile : bool
        Run the model through ``torch.compile``.
    data_device : {"device", "host"}
        "host" streams the batches from ``X`` on the CPU (see ``X``) even
        when the model is on the CPU too; X on the CPU with the model on
        CUDA is always streamed. See :func:`resolve_data_device`.
    callback : callable or None
        ``callback(step, model)``, called under ``torch.no_grad()`` with the
        model in eval mode after every finite log-interval check (every
        ``log_every`` steps); a true return value stops training there
        (recorded as ``stopped_by_callback_at``). For monitoring, e.g. a
        metric against known sources; its time counts in the fit's.
    batch_size_start : int or None
        Batch size of the first step; the batch then grows geometrically to
        ``batch_size`` at the last step. None keeps ``batch_size`` throughout.
        Small early batches give many cheap noisy steps while the sources are
        sorted out, large late ones the precise steps of the final phase.
    kl_warmup : float
        Fraction of ``n_steps`` over which the weight of the KL term in the
        minimised loss rises linearly from 0 to 1 (0: no warm-up). The
        logged loss is the full negative ELBO throughout.

    Returns
    -------
    history : list of dict
        One entry every ``log_every`` steps (and at checkpoints and the last
        step): step, loss (-ELBO per sample), neg_log_lik, kl, lr; ``event``
        when a non-finite loss was caught; ``stopped_early_at`` on the last
        entry when early stopping ended the run (``stopped_by_callback_at``
        when the callback did).

    Raises
    ------
    RuntimeError
        When the loss stays non-finite for ``MAX_NONFINITE`` consecutive log
        intervals despite the rollbacks.

    Warns
    -----
    RuntimeWarning
        Each time a non-finite loss is caught: the state of the last finite
        check is restored and the learning rate halved.
    """
    device = next(model.parameters()).device
    data_at = X.device
    if data_at != device and data_at.type != "cpu":
        raise ValueError(
            f"X is on {data_at} but the model on {device}; pass X on the model's device "
            "(resident data) or on the CPU (streamed batches)."
        )
    # Streamed: batches gathered on the host and copied over, step by step.
    stream = data_at != device or data_device == "host"
    if stream and data_at.type != "cpu":
        raise ValueError(
            f"data_device='host' needs X on the CPU, but X is on {data_at}. Pass "
            "X.cpu(), or data_device='device'."
        )
    # Pinned (page-locked) host buffers make the host-to-GPU copy asynchronous.
    # They come from PyTorch's caching host allocator, which reuses a buffer
    # only once the copy that reads it has finished.
    pin = stream and device.type == "cuda"
    check_precision(precision, device)
    n_times = X.shape[1]
    if valid_starts is None:
        valid_starts = torch.arange(n_times - chunk_samples + 1, device=data_at)
    if valid_starts.numel() == 0:
        raise ValueError(
            f"No training chunk of {chunk_samples} samples fits in the data "
            "(after rejecting bad segments)."
        )
    rank, world = _rank_world()
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = checkpoint_path(checkpoint_dir)
        if ckpt.exists() and not resume:
            raise FileExistsError(
                f"{ckpt} holds a checkpoint of an earlier run. Pass resume=True to continue "
                "it, or delete it / choose another checkpoint_dir to start afresh."
            )
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    elif resume:
        raise ValueError("resume=True needs a checkpoint_dir to resume from; none was given.")
    fingerprint = dict(
        n_steps=n_steps,
        batch_size=batch_size,
        chunk_samples=chunk_samples,
        lr=lr,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        data_shape=list(X.shape),
        world_size=world,
        early_stopping=early_stopping,
        patience=patience,
        min_delta=min_delta,
        precision=precision,
        data_on_host=stream,
        batch_size_start=batch_size_start,
        kl_warmup=kl_warmup,
    )

    offsets = torch.arange(chunk_samples, device=data_at)
    # With a receptive field of one sample (kernel_size=1) the model has no
    # temporal mixing, so a batch of single samples can be laid out as one
    # long sequence (1, n_channels, batch): the same maths as (batch,
    # n_channels, 1), computed as one matrix product per layer (2.3x faster
    # per step on CPU in our measurements).
    flat = model.receptive_field == 1 and chunk_samples == 1
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
    warmup = max(1, n_steps // 20)
    history: list[dict] = []
    lr_scale = 1.0
    start = 0
    best, n_stale = math.inf, 0
    n_bad = 0  # consecutive non-finite checks
    grad_ema = None  # running gradient norm for adaptive clipping (a device tensor)
    good_step = 0
    done = False

    if world > 1:
        # Each rank draws its own batches and noise: seed + rank.
        generator.manual_seed(generator.initial_seed() + rank)
        torch.random.default_generator.manual_seed(torch.initial_seed() + rank)
        if device.type == "cuda":
            torch.cuda.manual_seed(torch.initial_seed() + rank)
    if ckpt is not None and resume and ckpt.exists():
        state = _read_checkpoint(ckpt, fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_states(state["rng"], generator, device)
        start, lr_scale, history = state["step"], state["lr_scale"], state["history"]
        best, n_stale, done = state["best"], state["n_stale"], state["done"]
        n_bad, good_step = state["n_bad"], state["good_step"]
        grad_ema = state.get("grad_norm_ema")
        if grad_ema is not None:
            grad_ema = grad_ema.to(device)

    def snapshot(n_done: int):
        return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), n_done

    # After every check the model and optimiser equal the last good state
    # (kept, or restored by a rollback), so a checkpoint written then resumes
    # exactly where the uninterrupted run goes on.
    def save_checkpoint(n_done: int, finished: bool):
        state = dict(
            format=_CHECKPOINT_FORMAT,
            fingerprint=fingerprint,
            step=n_done,
            done=finished,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=_rng_states(generator, device),
            lr_scale=lr_scale,
            history=history,
            best=best,
            n_stale=n_stale,
            n_bad=n_bad,
            good_step=good[2],
            grad_norm_ema=None if grad_ema is None else grad_ema.detach().cpu(),
        )
        _write_checkpoint(ckpt, state)

    good = snapshot(good_step if n_bad else start)  # the last finite check, for rollbacks
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile:
        forward = torch.compile(forward)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    bar = None
    if verbose and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, initial=start, desc="iVAE fit", unit="step")

    acc = torch.zeros(3, device=device)
    n_acc = 0
    model.train()
    for step in range(start, n_steps if not done else start):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_scale * _lr_factor(step, n_steps, warmup)
        pick = torch.randint(
            valid_starts.numel(),
            (_batch_at(step, n_steps, batch_size, batch_size_start),),
            device=data_at,
            generator=generator,
        )
        idx = valid_starts[pick, None] + offsets  # (batch, chunk)
        if flat:
            idx = idx.reshape(1, -1)  # (1, batch)
        take = functools.partial(_gather, pin=pin) if stream else _take
        xb = take(X, idx, 1)  # (n_channels, batch, chunk)
        ub = None if u is None else take(u, idx, 0 if u.dim() == 1 else 1)
        if stream:
            # Copy the contiguous gathered buffers; transposing first would
            # make the copy go through a pageable temporary, synchronously.
            xb = xb.to(device, non_blocking=pin)
            ub = None if ub is None else ub.to(device, non_blocking=pin)
        xb = xb.transpose(0, 1)  # (batch, n_channels, chunk)
        if ub is not None and u.dim() == 2:
            ub = ub.transpose(0, 1)  # (batch, n_u, chunk)
        try:
            with autocast:
                loss, nll, kl = forward(xb, ub)
            optimizer.zero_grad(set_to_none=True)
            if kl_warmup > 0 and step < kl_warmup * n_steps:
                (nll + kl * ((step + 1) / (kl_warmup * n_steps))).backward()
            else:
                loss.backward()
        except Exception as err:
            if compile and step == start:
                raise RuntimeError(
                    f"torch.compile could not compile the model ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}). It needs a working C++ "
                    "compiler (CPU) or Triton (CUDA); pass compile=False."
                ) from err
            raise
        grad_ema = _clip_gradients(model, grad_ema)
        optimizer.step()
        acc += torch.stack((loss.detach(), nll.detach(), kl.detach())).float()
        n_acc += 1

        at_checkpoint = ckpt is not None and (step + 1) % checkpoint_every == 0
        if not ((step + 1) % log_every == 0 or step + 1 == n_steps or at_checkpoint):
            if bar is not None:
                bar.update(1)
            continue
        means = acc / n_acc
        if world > 1:
            # Every rank must take the same rollback and stopping decisions.
            torch.distributed.all_reduce(means)
            means /= world
        means = means.tolist()  # the only host sync in the loop
        acc.zero_()
        n_acc = 0
        entry = dict(
            step=step + 1,
            loss=means[0],
            neg_log_lik=means[1],
            kl=means[2],
            lr=optimizer.param_groups[0]["lr"],
        )
        stop = False
        if not np.all(np.isfinite(means)):
            # Roll back to the last finite state and halve the learning rate
            # rather than let NaN spread through the weights.
            n_bad += 1
            model_state, optim_state, good_step = good
            if n_bad >= MAX_NONFINITE:
                raise RuntimeError(
                    f"Training diverged: the loss was non-finite at {n_bad} consecutive "
                    f"checks (last at step {step + 1}), although each restored the state of "
                    f"step {good_step} and halved the learning rate. Lower 'lr' (peak "
                    f"{lr:g}) or look for outliers in the data."
                )
            model.load_state_dict(model_state)
            # A copy: load_state_dict keeps the given tensors, and the steps
            # to come would update the snapshot in place.
            optimizer.load_state_dict(copy.deepcopy(optim_state))
            grad_ema = None  # it may hold the non-finite norm
            lr_scale *= 0.5
            entry["event"] = (
                f"non-finite loss at step {step + 1}; restored the state of step {good_step} "
                "and halved the learning rate"
            )
            warnings.warn(entry["event"] + ".", RuntimeWarning, stacklevel=3)
        else:
            n_bad = 0
            good = snapshot(step + 1)
            if means[0] < best - min_delta:
                best, n_stale = means[0], 0
            else:
                n_stale += 1
            if early_stopping and n_stale >= patience:
                entry["stopped_early_at"] = step + 1
                stop = True
        history.append(entry)
        if callback is not None and "event" not in entry and not stop:
            # Between steps and after a finite check: the model holds good
            # weights. Its result decides whether to go on.
            model.eval()
            with torch.no_grad():
                stop = bool(callback(step + 1, model))
            model.train()
            if stop:
                entry["stopped_by_callback_at"] = step + 1
        if bar is not None:
            bar.set_postfix(elbo=f"{-means[0]:.4g}")
            bar.update(1)
        if ckpt is not None and (at_checkpoint or stop or step + 1 == n_steps):
            save_checkpoint(step + 1, finished=stop or step + 1 == n_steps)
        if stop:
            break
    if bar is not None:
        bar.close()
    model.eval()
    return history


def _lbfgs_optimizer(params, max_iter: int, tol: float, tolerance_change: float):
    """The L-BFGS set-up every exact-likelihood fit here uses (strong Wolfe line search)."""
    return torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )


def _unit_variance_rows(unmixing: torch.Tensor, xt: torch.Tensor, nll: float, model: str):
    """``unmixing`` with rows scaled to unit source variance; raise if ``nll`` is not finite."""
    if not np.isfinite(nll):
        raise FloatingPointError(
            f"The {model}'s likelihood is not finite; the data have a dimension with no "
            "variance in some segment. Use longer windows or fewer n_sources."
        )
    with torch.no_grad():
        # Unit variance over all samples (about the overall mean).
        xc = xt - xt.mean(dim=1, keepdim=True)
        W = unmixing.detach()
        return (W / (W @ xc).std(dim=1, correction=0)[:, None]).numpy()


def _lbfgs(params, objective, max_iter: int, tol: float, tolerance_change: float) -> int:
    """Minimise ``objective()`` over ``params`` with L-BFGS; return the iterations run."""
    opt = _lbfgs_optimizer(params, max_iter, tol, tolerance_change)

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    return int(opt.state[params[0]]["n_iter"])


def fit_linear_ivae(
    x: np.ndarray, codes: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-7
) -> dict:
    """Maximum-likelihood fit of the linear, noiseless iVAE (Gaussian prior).

    Minimises :func:`sepkit.functional.linear_ivae_nll` over a square
    unmixing W with L-BFGS (strong Wolfe line search) in float64, starting
    from the identity, i.e. from the whitened data. The per-segment source
    variances are profiled out, so the fit works on the segment covariances
    alone: its cost after one pass over the data does not grow with the
    recording.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
        Centred, whitened data.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1.
    max_iter : int
        L-BFGS iterations at most.
    tol : float
        Stop when the largest gradient entry falls below ``tol``.

    Returns
    -------
    dict
        ``unmixing`` (ndarray, shape (n_dims, n_dims)), rows scaled so that
        every source has unit variance over the fitted samples; ``nll``
        (-log p(x|u) in nats per sample in the whitened space); ``n_iter``;
        ``converged`` (False when ``max_iter`` ran out first).
    """
    from .functional import linear_ivae_nll, segment_covariances

    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    ct = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    n_segments = int(ct.max()) + 1
    covs, _, counts = segment_covariances(xt, ct, n_segments)
    weights = counts / counts.sum()
    unmixing = torch.eye(xt.shape[0], dtype=torch.float64, requires_grad=True)
    n_iter = _lbfgs(
        [unmixing], lambda: linear_ivae_nll(unmixing, covs, weights), max_iter, tol, 1e-12
    )
    with torch.no_grad():
        nll = float(linear_ivae_nll(unmixing, covs, weights))
        grad_max = float(unmixing.grad.abs().max()) if unmixing.grad is not None else 0.0
    return dict(
        unmixing=_unit_variance_rows(unmixing, xt, nll, "linear iVAE"),
        nll=nll,
        n_iter=n_iter,
        converged=n_iter < max_iter or grad_max <= tol,
    )


# Bounds of the generalised Gaussian shape: 0.25 is spikier than any EEG
# source we simulate, 8 flatter than a sinusoid needs to be told from a
# Gaussian (whose 2 sits well inside).
GENGAUSS_SHAPE_BOUNDS = (0.25, 8.0)


def fit_gengauss_ivae(
    x: np.ndarray,
    codes: np.ndarray,
    *,
    max_iter: int = 500,
    tol: float = 1e-7,
    tol_change: float = 1e-6,
    check_every: int = 50,
) -> dict:
    """Maximum-likelihood fit of the linear, noiseless iVAE with a generalised Gaussian prior.

    Minimises :func:`sepkit.functional.gengauss_ivae_nll` over the unmixing W
    and one shape per source with L-BFGS in float64, from the Gaussian fit
    (:func:`fit_linear_ivae`) and shape 2. The shapes stay within
    ``GENGAUSS_SHAPE_BOUNDS`` (a sigmoid maps them there). Each iteration
    passes over all samples, so the fit costs more than the Gaussian one,
    which works on segment covariances.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
        Centred, whitened data.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1, none empty.
    max_iter : int
        L-BFGS iterations at most (after the Gaussian fit).
    tol : float
        Stop when the largest gradient entry falls below ``tol``.
    tol_change : float
        Or when ``check_every`` iterations lower the objective by less than
        ``tol_change`` nats per sample. The gradient of a source with a
        weakly determined shape can stay near 1e-4 long after the sources
        have settled (traced on a 19-channel recording: MCC within 3e-5 of
        its value at 500 iterations from iteration 250 on, when 50
        iterations gained 6e-7 nats).
    check_every : int
        Iterations between those checks (fewer where L-BFGS's budget of
        5/4 as many objective evaluations per call runs out first).

    Returns
    -------
    dict
        ``unmixing`` (ndarray, shape (n_dims, n_dims)), rows scaled so that
        every source has unit variance over the fitted samples; ``shape``
        (ndarray, shape (n_dims,)), beta per source; ``nll`` (nats per sample,
        whitened space) and ``start_nll`` (the objective at the start: the
        Gaussian fit's W, shape 2); ``n_iter``; ``converged`` (True when
        either test stopped the fit before ``max_iter``).
    """
    from .functional import gengauss_ivae_nll_and_grad

    start = fit_linear_ivae(x, codes)
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    ct = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    counts = torch.bincount(ct).to(torch.float64)
    if not bool((counts > 0).all()):
        raise ValueError(
            "fit_gengauss_ivae needs every segment code 0 .. n_segments - 1 to have samples; "
            f"{int((counts == 0).sum())} are empty. Renumber the codes (np.unique(codes, "
            "return_inverse=True))."
        )
    low, high = GENGAUSS_SHAPE_BOUNDS
    unmixing = torch.tensor(start["unmixing"], dtype=torch.float64, requires_grad=True)
    # shape = low + (high - low) sigmoid(theta), theta = logit((2 - low) / (high - low)) at 2.
    theta0 = math.log((2.0 - low) / (high - 2.0))
    theta = torch.full((x.shape[0],), theta0, dtype=torch.float64, requires_grad=True)

    def shape():
        return low + (high - low) * torch.sigmoid(theta)

    def objective():
        # The gradients in closed form: backpropagating through the samples
        # costs several times more (sepkit.functional).
        with torch.no_grad():
            nll, grad_w, grad_shape = gengauss_ivae_nll_and_grad(unmixing, xt, ct, counts, shape())
            sig = torch.sigmoid(theta)
            unmixing.grad = grad_w
            theta.grad = grad_shape * (high - low) * sig * (1 - sig)
        return nll

    start_nll = previous = float(objective())
    opt = _lbfgs_optimizer([unmixing, theta], check_every, tol, 1e-12)

    def closure():
        opt.zero_grad()
        return objective()

    n_iter, converged, nll = 0, False, start_nll
    while n_iter < max_iter:
        opt.param_groups[0]["max_iter"] = min(check_every, max_iter - n_iter)
        opt.step(closure)
        ran = int(opt.state[unmixing]["n_iter"]) - n_iter
        n_iter += ran
        nll = float(objective())  # also sets the gradients at the current point
        grad_max = max(float(unmixing.grad.abs().max()), float(theta.grad.abs().max()))
        if grad_max <= tol or previous - nll < tol_change or ran == 0:
            converged = True
            break
        previous = nll
    return dict(
        unmixing=_unit_variance_rows(unmixing, xt, nll, "generalised Gaussian iVAE"),
        shape=shape().detach().numpy(),
        nll=nll,
        start_nll=start_nll,
        n_iter=n_iter,
        converged=converged,
    )


def fit_post_nonlinear_ivae(
    x: np.ndarray,
    codes: np.ndarray,
    n_sources: int,
    *,
    degree: int = 3,
    max_iter: int = 1000,
    tol: float = 1e-7,
    n_bins: int = 2048,
    feature_filter=None,
    keep: np.ndarray | None = None,
) -> dict:
    """Maximum-likelihood fit of the post-nonlinear linear iVAE.

    Minimises :func:`sepkit.functional.post_nonlinear_ivae_nll` over the
    square unmixing W and the per-channel coefficients of the sensor
    unwarping h (:func:`sepkit.functional.sensor_unwarp`) with L-BFGS in
    float64. h starts near the identity and W at the linear iVAE's solution
    (:func:`fit_linear_ivae` on the ``n_sources`` strongest principal
    components, the other components as noise rows). The data enter through
    the segment covariances of the odd powers of x and the quantiles of x^2,
    so one iteration costs n_segments * ((degree + 1) * n_channels)^2 * n_sources
    operations whatever the recording's length.

    With ``feature_filter`` (a linear, time-invariant filter such as a
    high-pass), the model is that the *filtered* unwarped signal
    F(h(x)) = A s is the linear iVAE's: F acts after the unwarping, where
    the sensors are linear. As h(x) is a linear map of the odd powers of x,
    F(h(x)) is the same map of the filtered powers, so only the segment
    covariances change; the change of variables x -> F(h(x)) over the whole
    recording has log-determinant log|det F| (a constant) plus the per-sample
    sum_c log h_c'(x_c) of the unfiltered x.

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_times)
        Sensor data, each channel centred and scaled to unit variance.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1.
    n_sources : int
    degree : int
        Odd powers x^3 .. x^(2 degree + 1) in h.
    max_iter, tol :
        As for :func:`fit_linear_ivae`.
    n_bins : int
        Equal-count bins of x^2 per channel for the log-Jacobian.
    feature_filter : callable or None
        ``feature_filter(a)`` filters an ndarray of shape (n_rows, n_times)
        along time (float64, same shape), e.g. a high-pass. None: no filter.
    keep : ndarray of bool, shape (n_times,), or None
        Samples that enter the statistics (after filtering, so that the
        filter sees the recording's true time axis); None keeps all.
        ``codes`` of the other samples are ignored.

    Returns
    -------
    dict
        ``unmixing`` (n_channels, n_channels; source rows first, scaled to
        unit-variance sources), ``coefs`` (n_channels, degree), ``nll``,
        ``n_iter``, ``converged``.
    """
    from .functional import (
        odd_power_features,
        pack_covariances,
        post_nonlinear_ivae_nll,
        segment_covariances,
        unwarp_feature_map,
    )

    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    feats = odd_power_features(xt, degree)
    if feature_filter is not None:
        feats = torch.from_numpy(np.ascontiguousarray(feature_filter(feats.numpy())))
    codes = np.asarray(codes)
    if keep is not None:
        keep_t = torch.from_numpy(np.asarray(keep, dtype=bool))
        xt, feats, codes = xt[:, keep_t], feats[:, keep_t], codes[keep]
    # Segments without a kept sample drop out of the codes.
    _, codes = np.unique(codes, return_inverse=True)
    ct = torch.as_tensor(codes, dtype=torch.long)
    n_channels, n_times = xt.shape
    n_segments = int(ct.max()) + 1
    covs, means, counts = segment_covariances(feats, ct, n_segments)
    weights = counts / counts.sum()
    spread = means - (weights[:, None] * means).sum(dim=0)
    total = torch.einsum("k,kab->ab", weights, covs) + torch.einsum(
        "k,ka,kb->ab", weights, spread, spread
    )
    # The first block of the features is x itself (filtered, if asked): the
    # linear iVAE's start below sees what the likelihood sees.
    x_lin = feats[:n_channels].clone()
    del feats
    # Equal-count bins of x^2 (their means) stand for the samples in the log-Jacobian.
    sq = torch.sort(xt**2, dim=1).values
    edges = torch.linspace(0, n_times, min(n_bins, n_times) + 1).long()
    sq_quantiles = torch.stack(
        [
            sq[:, a:b].mean(dim=1)
            for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
        ],
        dim=1,
    )
    del sq

    # Start: PCA whitening; the n_sources strongest components separated by the
    # linear iVAE, the rest kept as noise rows.
    evals, evecs = torch.linalg.eigh(total[:n_channels, :n_channels])
    evals, evecs = evals.flip(0), evecs.flip(1)
    evals = evals.clamp(min=evals[0] * 1e-8)
    pca = evecs.T / torch.sqrt(evals)[:, None]
    top = (pca[:n_sources] @ x_lin).numpy()
    lin = fit_linear_ivae(top, codes, max_iter=max_iter, tol=tol)["unmixing"]
    W0 = torch.cat([torch.from_numpy(lin) @ pca[:n_sources], pca[n_sources:]], dim=0)
    unmixing = W0.clone().requires_grad_(True)
    log_coefs = torch.full((n_channels, degree), -6.0, dtype=torch.float64, requires_grad=True)
    args = (pack_covariances(covs), total, weights, sq_quantiles, n_sources)
    del covs
    # tolerance_change 1e-9, relative to an objective of a few nats: smaller
    # changes do not move the sources (MCC to 3 decimals), and the line search
    # would otherwise use up max_iter on rounding noise.
    n_iter = _lbfgs(
        [unmixing, log_coefs],
        lambda: post_nonlinear_ivae_nll(unmixing, log_coefs, *args),
        max_iter,
        tol,
        1e-9,
    )
    with torch.no_grad():
        nll = float(post_nonlinear_ivae_nll(unmixing, log_coefs, *args))
        coefs = torch.exp(log_coefs)
        M = unmixing @ unwarp_feature_map(coefs)
        std = torch.sqrt(torch.einsum("ia,ab,ib->i", M, total, M))
        W = unmixing / std[:, None]
    if not np.isfinite(nll):
        raise FloatingPointError(
            "The post-nonlinear iVAE's likelihood is not finite. Check the recording for "
            "flat or extreme channels, or use mixing='linear'."
        )
    return dict(
        unmixing=W.numpy(),
        coefs=coefs.numpy(),
        nll=nll,
        n_iter=n_iter,
        converged=n_iter < max_iter,
    )


# --------------------------------------------------------------------------- DDP entry
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
    import tomllib

    if not path.is_file():
        raise FileNotFoundError(f"No config file at {path}.")
    with path.open("rb") as f:
        cfg = tomllib.load(f)
    _unknown(cfg, _CONFIG_KEYS, f"the config {path}")
    for key in ("out", "data", "model"):
        if key not in cfg:
            raise ValueError(f"The config {path} lacks the '{key}' entry; see sepkit/train.py.")
    _unknown(cfg["data"], _DATA_KEYS, f"[data] of {path}")
    if ("files" in cfg["data"]) == ("synthetic" in cfg["data"]):
        raise ValueError(
            f"[data] of {path} must give exactly one of 'files' (a list of recordings) or "
            "'synthetic' (make_nonlinear_ica arguments)."
        )
    return cfg


def _read_recording(path: Path):
    """(data, sample_rate) of one .npy, audio or EEG file; sample_rate None for .npy."""
    from .io import SUPPORTED_EEG_EXTENSIONS, read_audio, read_eeg, to_recording

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
    from .io import Recording
    from .windows import window_labels

    data_cfg = cfg["data"]
    if "synthetic" in data_cfg:
        from .datasets import make_nonlinear_ica

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
        codes = window_labels(data.shape[1], sep._window_samples_for(rate, data.shape[1]))
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
    import argparse

    from .separator import IVAESeparator, check_model_path

    parser = argparse.ArgumentParser(
        prog="python -m sepkit.train",
        description="Train one IVAESeparator on a corpus, data-parallel under torchrun.",
    )
    parser.add_argument("config", help="TOML config (see the sepkit.train docstring)")
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


if __name__ == "__main__":
    # Run the canonical module's main (sepkit.train, already imported by the
    # package) so that the DDP flag it sets is the one train_ivae reads.
    from sepkit.train import main as _main

    sys.exit(_main())
