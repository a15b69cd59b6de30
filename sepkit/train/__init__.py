"""The SGD training loop of the iVAE (plain PyTorch, optionally data-parallel).

Data that fit stay on the model's device for the whole run; each step gathers
a batch of random chunks by indexing, so the loop never copies from the host
and never synchronises with it except every ``log_every`` steps, when the
accumulated loss is read back and checked for NaN/Inf (and at checkpoints,
which copy the state to the host anyway). Data too large for the GPU stay on
the host and stream over batch by batch, gathered into pinned memory and
copied asynchronously (``data_device``; see :func:`resolve_data_device`).

Within :func:`distributed_training` and an initialised process group (as
``python -m sepkit.train CONFIG`` under ``torchrun`` sets up, see
:mod:`sepkit.cli.train`), :func:`train_ivae` trains data-parallel: each rank
holds all the data and draws its own batches (seed + rank), and
DistributedDataParallel averages the gradients, so the replicas stay
identical.

This package knows nothing of the estimator: :class:`sepkit.IVAESeparator`
calls :func:`train_ivae` with tensors and settings.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_write
from .._check import check_precision
from ..models import IVAE

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

# Set by distributed_training() (which sepkit.cli.train's main enters): when
# True and a process group is initialised, train_ivae trains data-parallel. A
# flag rather than an IVAESeparator argument keeps the estimator's API free of
# launcher details.
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


# The data's fingerprint in a checkpoint (see _data_fingerprint): the sums of
# this many contiguous blocks of the data, beside the sha256 of its bytes.
_N_BLOCKS = 256
# Elements copied to the host and hashed at a time (16 MB of float32): the
# hash never needs a second copy of the whole data.
_HASH_CHUNK = 1 << 22
# Relative tolerance of the block sums within which data whose bytes differ
# still count as the same recording: rounding on another machine or BLAS moves
# a float32 sample by about 1e-7 of itself; any other recording, or an edit of
# one sample by about its standard deviation, moves the sums of its block by
# far more (a block of 150 000 samples: 1e-5 of the sum of squares is 1.5).
_BLOCK_RTOL = 1e-5


def _digest(h, tensor: torch.Tensor | None) -> None:
    """Feed ``tensor``'s dtype, shape and bytes (or "None") to the hash ``h``, chunk by chunk."""
    if tensor is None:
        h.update(b"None")
        return
    h.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        chunk = flat[start : start + _HASH_CHUNK].contiguous()
        h.update(chunk.view(torch.uint8).cpu().numpy())


def _data_fingerprint(X: torch.Tensor, u, valid_starts) -> dict:
    """What a checkpoint records of the data it was trained on, to refuse other data.

    ``sha256``: of X's dtype, shape and bytes; ``labels_sha256``: the same of
    u and the allowed chunk starts; ``blocks``: the length, float64 sum and
    sum of squares of ``_N_BLOCKS`` contiguous blocks of X (flattened), which tell
    the same recording with other rounding from other data (see
    :func:`_check_data`). 64 channels x 10 min at 1 kHz (154 MB of float32)
    took 0.35-0.45 s on one CPU core (sha256 0.26 s of it), once per fit.
    """
    h = hashlib.sha256()
    _digest(h, X)
    labels = hashlib.sha256()
    _digest(labels, u)
    _digest(labels, valid_starts)
    sums = []
    for block in torch.tensor_split(X.reshape(-1), _N_BLOCKS):
        n = torch.tensor(float(block.numel()), dtype=torch.float64, device=block.device)
        block = block.double()
        sums.append(torch.stack((n, block.sum(), block.dot(block))))
    return dict(
        sha256=h.hexdigest(),
        labels_sha256=labels.hexdigest(),
        blocks=torch.stack(sums).tolist(),  # one host read
    )


def _same_blocks(saved: list, now: list) -> bool:
    """Whether the block sums agree within ``_BLOCK_RTOL`` (see :func:`_data_fingerprint`)."""
    if len(saved) != len(now):
        return False
    for (n, s0, q0), (m, s1, q1) in zip(saved, now, strict=True):
        # Rounding moves a sum by at most eps * sum |x| <= eps * sqrt(n * sum x^2)
        # (Cauchy-Schwarz), and a sum of squares by at most 2 eps of itself.
        q = max(q0, q1)
        if n != m or abs(q0 - q1) > _BLOCK_RTOL * q or abs(s0 - s1) > _BLOCK_RTOL * (n * q) ** 0.5:
            return False
    return True


def _check_data(path: Path, saved: dict | None, now: dict) -> None:
    """Refuse to resume the checkpoint at ``path`` on other data than it was trained on."""
    if saved is None:
        # Written before checkpoints recorded their data: refusing would throw
        # away the progress of every run under way; the shape and settings
        # are checked as before, and the next checkpoint records the data.
        warnings.warn(
            f"The checkpoint {path} was written by an earlier sepkit that did not record "
            "its training data, so resuming cannot check that the data are the same (only "
            "their shape). Resuming; make sure the data are those the run started with.",
            UserWarning,
            stacklevel=5,
        )
        return
    same_labels = saved["labels_sha256"] == now["labels_sha256"]
    if same_labels and saved["sha256"] == now["sha256"]:
        return
    if not same_labels or not _same_blocks(saved["blocks"], now["blocks"]):
        what = "data" if same_labels else "u labels or usable samples (bad segments)"
        raise ValueError(
            f"The checkpoint {path} was trained on other data: the {what} of this fit "
            "differ from those of the run that wrote it, although the shape is the same. "
            "Resume with the data the run started with, or start afresh: pass "
            f"resume=False with another checkpoint_dir than {str(path.parent)!r} (or delete "
            "the checkpoint there)."
        )
    warnings.warn(
        f"The data differ in their last bits from those the checkpoint {path} was trained "
        "on (the same recording standardised on another machine or library version, "
        f"judged by the sums of {_N_BLOCKS} blocks). Resuming; the result will not be "
        "bit-identical to an uninterrupted fit.",
        RuntimeWarning,
        stacklevel=5,
    )


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


@dataclass(frozen=True)
class _Settings:
    """The settings of a run that a checkpoint must share to resume it (its fingerprint)."""

    n_steps: int
    batch_size: int
    chunk_samples: int
    lr: float
    log_every: int
    checkpoint_every: int
    data_shape: list[int]
    world_size: int
    early_stopping: bool
    patience: int
    min_delta: float
    precision: str
    data_on_host: bool
    batch_size_start: int | None
    kl_warmup: float

    @property
    def warmup(self) -> int:
        """Steps of the linear learning-rate warm-up (5% of the run)."""
        return max(1, self.n_steps // 20)


@dataclass
class _RunState:
    """Where a run stands: what a checkpoint saves beside the model, optimiser and RNGs."""

    start: int = 0  # steps done before this call (after a resume)
    lr_scale: float = 1.0  # halved by each rollback
    history: list[dict] = field(default_factory=list)
    best: float = math.inf  # lowest finite interval loss, for early stopping
    n_stale: int = 0  # log intervals since ``best`` improved by min_delta
    n_bad: int = 0  # consecutive non-finite checks
    done: bool = False  # the checkpoint is of a finished run
    grad_ema: torch.Tensor | None = None  # running gradient norm (a device tensor)
    # (model state, optimiser state, step) of the last finite check, for rollbacks.
    good: tuple | None = None
    data: dict | None = None  # the data's fingerprint (with a checkpoint_dir only)


@dataclass
class _Batches:
    """Draws the batches of random chunks, from resident or streamed data (see ``train_ivae``)."""

    X: torch.Tensor
    u: torch.Tensor | None
    valid_starts: torch.Tensor
    offsets: torch.Tensor  # 0 .. chunk_samples - 1, where X is
    flat: bool  # lay the batch out as one long sequence
    stream: bool  # gather on the host, then copy to ``device``
    pin: bool
    device: torch.device
    generator: torch.Generator

    def draw(self, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``size`` chunks: x of shape (batch, n_channels, chunk), u alike, on ``device``."""
        pick = torch.randint(
            self.valid_starts.numel(), (size,), device=self.X.device, generator=self.generator
        )
        idx = self.valid_starts[pick, None] + self.offsets  # (batch, chunk)
        if self.flat:
            idx = idx.reshape(1, -1)  # (1, batch)
        u = self.u
        take = functools.partial(_gather, pin=self.pin) if self.stream else _take
        xb = take(self.X, idx, 1)  # (n_channels, batch, chunk)
        ub = None if u is None else take(u, idx, 0 if u.dim() == 1 else 1)
        if self.stream:
            # Copy the contiguous gathered buffers; transposing first would
            # make the copy go through a pageable temporary, synchronously.
            xb = xb.to(self.device, non_blocking=self.pin)
            ub = None if ub is None else ub.to(self.device, non_blocking=self.pin)
        xb = xb.transpose(0, 1)  # (batch, n_channels, chunk)
        if ub is not None and u.dim() == 2:
            ub = ub.transpose(0, 1)  # (batch, n_u, chunk)
        return xb, ub


def _data_placement(X: torch.Tensor, device: torch.device, data_device: str) -> tuple[bool, bool]:
    """Whether the batches are streamed from the host, and into pinned memory."""
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
    return stream, pin


def _make_batches(model, X, u, valid_starts, chunk_samples, stream, pin, generator) -> _Batches:
    """The batch sampler of ``train_ivae`` (``valid_starts`` None: every chunk start)."""
    data_at = X.device
    if valid_starts is None:
        valid_starts = torch.arange(X.shape[1] - chunk_samples + 1, device=data_at)
    if valid_starts.numel() == 0:
        raise ValueError(
            f"No training chunk of {chunk_samples} samples fits in the data "
            "(after rejecting bad segments)."
        )
    return _Batches(
        X,
        u,
        valid_starts,
        offsets=torch.arange(chunk_samples, device=data_at),
        # With a receptive field of one sample (kernel_size=1) the model has no
        # temporal mixing, so a batch of single samples can be laid out as one
        # long sequence (1, n_channels, batch): the same maths as (batch,
        # n_channels, 1), computed as one matrix product per layer (2.3x faster
        # per step on CPU in our measurements).
        flat=model.receptive_field == 1 and chunk_samples == 1,
        stream=stream,
        pin=pin,
        device=next(model.parameters()).device,
        generator=generator,
    )


def _progress_bar(n_steps: int, start: int, verbose=True):
    """A tqdm bar over the steps, starting at ``start`` (after a resume).

    ``verbose="auto"``: tqdm's own rule, shown only when stderr is a terminal.
    """
    from tqdm.auto import tqdm

    disable = None if verbose == "auto" else False
    return tqdm(total=n_steps, initial=start, desc="iVAE fit", unit="step", disable=disable)


def _open_checkpoint(checkpoint_dir, resume: bool) -> Path | None:
    """This process's checkpoint file (its folder created), or None without checkpoint_dir."""
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs a checkpoint_dir to resume from; none was given.")
        return None
    ckpt = checkpoint_path(checkpoint_dir)
    others = sorted(
        p.name for p in Path(checkpoint_dir).glob(f"{CHECKPOINT_NAME}*.pt") if p != ckpt
    )
    if resume and not ckpt.exists() and others:
        # Audit: a run resumed with another number of processes started from step 0.
        _, world = _rank_world()
        raise ValueError(
            f"resume=True, but {checkpoint_dir} holds the checkpoints of a run with another "
            f"number of processes ({', '.join(others[:3])}; this run has {world} and looks "
            f"for {ckpt.name}). Resume with the number of processes the run started with, "
            "or choose another checkpoint_dir to start afresh."
        )
    if ckpt.exists() and not resume:
        raise FileExistsError(
            f"{ckpt} holds a checkpoint of an earlier run. Pass resume=True to continue "
            "it, or delete it / choose another checkpoint_dir to start afresh."
        )
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    # Temp files of this checkpoint left by a run killed mid-write (atomic_write
    # names them .NAME.<random>.tmp); the checkpoint itself is whole or absent.
    for debris in ckpt.parent.glob(f".{ckpt.name}.*.tmp"):
        debris.unlink(missing_ok=True)
    return ckpt


def _seed_rank(generator: torch.Generator, device: torch.device, rank: int) -> None:
    """Each rank draws its own batches and noise: seed + rank."""
    generator.manual_seed(generator.initial_seed() + rank)
    torch.random.default_generator.manual_seed(torch.initial_seed() + rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(torch.initial_seed() + rank)


def _snapshot(model, optimizer, n_done: int) -> tuple:
    """A copy of the model and optimiser states after ``n_done`` steps, for rollbacks."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), n_done


def _start_state(ckpt, resume, settings, data, model, optimizer, generator, device) -> _RunState:
    """A fresh run's state, or the one in ``ckpt`` (model, optimiser and RNGs restored).

    ``data``: the fingerprint of this run's data (:func:`_data_fingerprint`),
    which a resumed checkpoint must match, and which checkpoints record.
    """
    run = _RunState()
    good_step = 0
    if ckpt is not None and resume and ckpt.exists():
        state = _read_checkpoint(ckpt, asdict(settings))
        _check_data(ckpt, state.get("data"), data)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_states(state["rng"], generator, device)
        grad_ema = state.get("grad_norm_ema")
        run = _RunState(
            start=state["step"],
            lr_scale=state["lr_scale"],
            history=state["history"],
            best=state["best"],
            n_stale=state["n_stale"],
            n_bad=state["n_bad"],
            done=state["done"],
            grad_ema=None if grad_ema is None else grad_ema.to(device),
        )
        good_step = state["good_step"]
    run.good = _snapshot(model, optimizer, good_step if run.n_bad else run.start)
    run.data = data
    return run


def _save_checkpoint(ckpt, settings, run, model, optimizer, batches, n_done, finished) -> None:
    """Write the run after ``n_done`` steps, at a check (model and optimiser = last good state).

    After every check the model and optimiser equal the last good state
    (kept, or restored by a rollback), so a checkpoint written then resumes
    exactly where the uninterrupted run goes on.
    """
    state = dict(
        format=_CHECKPOINT_FORMAT,
        fingerprint=asdict(settings),
        data=run.data,
        step=n_done,
        done=finished,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        rng=_rng_states(batches.generator, batches.device),
        lr_scale=run.lr_scale,
        history=run.history,
        best=run.best,
        n_stale=run.n_stale,
        n_bad=run.n_bad,
        good_step=run.good[2],
        grad_norm_ema=None if run.grad_ema is None else run.grad_ema.detach().cpu(),
    )
    _write_checkpoint(ckpt, state)


def _wrap_model(model, device: torch.device, world: int, compile: bool):
    """The module the steps call: ``model``, under DDP with several ranks, compiled if asked."""
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile:
        forward = torch.compile(forward)
    return forward


def _backward(forward, optimizer, xb, ub, step: int, settings: _Settings, *, autocast, first):
    """Forward pass and gradients of one batch; return (loss, nll, kl), still on the device."""
    kl_warmup, n_steps = settings.kl_warmup, settings.n_steps
    try:
        with autocast:
            loss, nll, kl = forward(xb, ub)
        optimizer.zero_grad(set_to_none=True)
        if kl_warmup > 0 and step < kl_warmup * n_steps:
            (nll + kl * ((step + 1) / (kl_warmup * n_steps))).backward()
        else:
            loss.backward()
    except Exception as err:
        # torch.compile compiles at the first call, so its failures surface here.
        if first:
            raise RuntimeError(
                f"torch.compile could not compile the model ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). It needs a working C++ "
                "compiler (CPU) or Triton (CUDA); pass compile=False."
            ) from err
        raise
    return loss, nll, kl


def _interval_means(acc: torch.Tensor, n_acc: int, world: int) -> list[float]:
    """Mean loss, nll and kl over the interval (and over the ranks), read back to the host."""
    means = acc / n_acc
    if world > 1:
        # Every rank must take the same rollback and stopping decisions.
        torch.distributed.all_reduce(means)
        means /= world
    return means.tolist()  # the only host sync in the loop


def _roll_back(run: _RunState, step: int, lr: float, model, optimizer) -> str:
    """Restore the last finite state and halve the learning rate; return the history event."""
    run.n_bad += 1
    model_state, optim_state, good_step = run.good
    if run.n_bad >= MAX_NONFINITE:
        raise RuntimeError(
            f"Training diverged: the loss was non-finite at {run.n_bad} consecutive "
            f"checks (last at step {step + 1}), although each restored the state of "
            f"step {good_step} and halved the learning rate. Lower 'lr' (peak "
            f"{lr:g}) or look for outliers in the data."
        )
    model.load_state_dict(model_state)
    # A copy: load_state_dict keeps the given tensors, and the steps
    # to come would update the snapshot in place.
    optimizer.load_state_dict(copy.deepcopy(optim_state))
    run.grad_ema = None  # it may hold the non-finite norm
    run.lr_scale *= 0.5
    return (
        f"non-finite loss at step {step + 1}; restored the state of step {good_step} "
        "and halved the learning rate"
    )


def _check(run: _RunState, means, step: int, settings: _Settings, model, optimizer):
    """The history entry of a log-interval check, and whether early stopping ends the run."""
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
        entry["event"] = _roll_back(run, step, settings.lr, model, optimizer)
        # stacklevel 5: past this function and _run_steps, the frame two
        # above train_ivae (its caller's caller), as the loop has always named.
        warnings.warn(entry["event"] + ".", RuntimeWarning, stacklevel=5)
    else:
        run.n_bad = 0
        run.good = _snapshot(model, optimizer, step + 1)
        if means[0] < run.best - settings.min_delta:
            run.best, run.n_stale = means[0], 0
        else:
            run.n_stale += 1
        if settings.early_stopping and run.n_stale >= settings.patience:
            entry["stopped_early_at"] = step + 1
            stop = True
    run.history.append(entry)
    return entry, stop


def _ask_callback(callback, step: int, model) -> bool:
    """``callback(step + 1, model)`` in eval mode without gradients; True stops training."""
    # Between steps and after a finite check: the model holds good weights.
    model.eval()
    with torch.no_grad():
        stop = bool(callback(step + 1, model))
    model.train()
    return stop


def _run_steps(model, forward, optimizer, batches, run, settings, ckpt, *, compile, callback, bar):
    """Train from ``run.start`` to ``n_steps`` (or an early stop); return the history."""
    n_steps = settings.n_steps
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if settings.precision == "bf16"
        else contextlib.nullcontext()
    )
    acc = torch.zeros(3, device=batches.device)
    n_acc = 0
    model.train()
    for step in range(run.start, n_steps if not run.done else run.start):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * run.lr_scale * _lr_factor(step, n_steps, settings.warmup)
        xb, ub = batches.draw(
            _batch_at(step, n_steps, settings.batch_size, settings.batch_size_start)
        )
        first = compile and step == run.start
        loss, nll, kl = _backward(
            forward, optimizer, xb, ub, step, settings, autocast=autocast, first=first
        )
        run.grad_ema = _clip_gradients(model, run.grad_ema)
        optimizer.step()
        acc += torch.stack((loss.detach(), nll.detach(), kl.detach())).float()
        n_acc += 1

        at_checkpoint = ckpt is not None and (step + 1) % settings.checkpoint_every == 0
        if not ((step + 1) % settings.log_every == 0 or step + 1 == n_steps or at_checkpoint):
            if bar is not None:
                bar.update(1)
            continue
        means = _interval_means(acc, n_acc, settings.world_size)
        acc.zero_()
        n_acc = 0
        entry, stop = _check(run, means, step, settings, model, optimizer)
        if callback is not None and "event" not in entry and not stop:
            stop = _ask_callback(callback, step, model)
            if stop:
                entry["stopped_by_callback_at"] = step + 1
        if bar is not None:
            bar.set_postfix(elbo=f"{-means[0]:.4g}")
            bar.update(1)
        if ckpt is not None and (at_checkpoint or stop or step + 1 == n_steps):
            finished = stop or step + 1 == n_steps
            _save_checkpoint(ckpt, settings, run, model, optimizer, batches, step + 1, finished)
        if stop:
            break
    if bar is not None:
        bar.close()
    model.eval()
    return run.history


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
        early-stopping state, history, and the fingerprint of the data
        (about 0.4 s per 150 MB of data on one CPU core, once per call).
    checkpoint_every : int
        Steps between checkpoints; each one also reads the loss back.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` (the result is
        bit-identical to an uninterrupted run); start afresh when there is
        none yet. With ``resume=False`` an existing checkpoint is an error
        rather than overwritten. The checkpoint must come from a run with the
        same settings and the same ``X``, ``u`` and ``valid_starts``: each
        checkpoint records their sha256 and block sums, and other data of the
        same shape are refused (a ``RuntimeWarning`` where only rounding
        differs, a ``UserWarning`` for a checkpoint from before sepkit
        recorded its data).
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
    ValueError
        When ``resume`` finds a checkpoint of other settings or other data.

    Warns
    -----
    RuntimeWarning
        Each time a non-finite loss is caught: the state of the last finite
        check is restored and the learning rate halved.
    """
    device = next(model.parameters()).device
    stream, pin = _data_placement(X, device, data_device)
    check_precision(precision, device)
    batches = _make_batches(model, X, u, valid_starts, chunk_samples, stream, pin, generator)
    rank, world = _rank_world()
    ckpt = _open_checkpoint(checkpoint_dir, resume)
    settings = _Settings(
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
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")
    if world > 1:
        _seed_rank(generator, device, rank)
    data = None if ckpt is None else _data_fingerprint(X, u, valid_starts)
    run = _start_state(ckpt, resume, settings, data, model, optimizer, generator, device)
    forward = _wrap_model(model, device, world, compile)
    bar = _progress_bar(n_steps, run.start, verbose) if verbose and rank == 0 else None
    return _run_steps(
        model,
        forward,
        optimizer,
        batches,
        run,
        settings,
        ckpt,
        compile=compile,
        callback=callback,
        bar=bar,
    )
