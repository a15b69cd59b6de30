"""Training loop of the pretrained speech source prior (:class:`~sepkit.models.SpeechSourcePrior`).

The model learns from clean single-source audio: batches of waveforms (for
example :class:`sepkit.data.WindowCorpus` windows through a DataLoader) are
optionally reverberated with a random room impulse response (so that the
prior also knows the smeared spectra that a demixing of a reverberant room
gives), turned into power spectrograms, and fitted on the negative ELBO of
:meth:`SpeechSourcePrior.loss`. Under an initialised process group the model
is wrapped in DistributedDataParallel: each rank reads its own shard of the
corpus and the gradients are averaged, so the replicas stay identical.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch

from .. import functional_tf as F
from ..models.source_prior import SpeechSourcePrior, segment_index

__all__ = ["reverberate", "train_source_prior"]


def reverberate(
    x: torch.Tensor, rirs: torch.Tensor, p: float, generator: torch.Generator
) -> torch.Tensor:
    """Convolve a random share ``p`` of the rows of ``x`` with random impulse responses.

    Parameters
    ----------
    x : Tensor, shape (batch, n_times)
    rirs : Tensor, shape (n_rirs, n_taps)
        Impulse responses, each scaled to unit energy.
    p : float
        Probability that a row is reverberated.
    generator : torch.Generator

    Returns
    -------
    Tensor, shape (batch, n_times): the reverberant rows keep their length
    (the tail past the window is dropped, as a window cut from a longer
    reverberant recording would).
    """
    if rirs.numel() == 0 or p <= 0:
        return x
    pick = torch.rand(x.shape[0], generator=generator) < p
    if not pick.any():
        return x
    idx = torch.randint(rirs.shape[0], (int(pick.sum()),), generator=generator)
    n = x.shape[1] + rirs.shape[1] - 1
    n_fft = 1 << (n - 1).bit_length()
    wet = torch.fft.irfft(
        torch.fft.rfft(x[pick], n_fft) * torch.fft.rfft(rirs[idx].to(x.dtype), n_fft), n_fft
    )[:, : x.shape[1]]
    out = x.clone()
    out[pick] = wet
    return out


def _power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(batch, n_times) -> (batch, n_freqs, n_frames) power spectrograms."""
    X = F.stft(x, n_fft, hop)  # (F, batch, T)
    return X.abs().square().permute(1, 0, 2).contiguous()


def train_source_prior(
    model: SpeechSourcePrior,
    batches: Iterable[torch.Tensor],
    *,
    n_fft: int,
    hop: int,
    segment_frames: int,
    n_steps: int,
    lr: float = 1e-3,
    rirs: torch.Tensor | None = None,
    p_reverb: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log_every: int = 50,
    callback: Callable[[int, float], None] | None = None,
) -> list[dict]:
    """Fit ``model`` on clean-source waveforms by Adam on the negative ELBO.

    Parameters
    ----------
    model : SpeechSourcePrior
        Trained in place.
    batches : iterable of Tensor, each shape (batch, n_times)
        Waveforms of single sources; iterated until ``n_steps`` batches.
    n_fft, hop : int
        STFT of the model (``model.n_freqs == n_fft // 2 + 1``).
    segment_frames : int
        Frames per segment of u (the iVAE auxiliary variable).
    n_steps : int
        Optimiser steps (cosine-decayed learning rate).
    lr : float
    rirs : Tensor, shape (n_rirs, n_taps), or None
        Impulse responses for :func:`reverberate`.
    p_reverb : float
        Share of the windows reverberated.
    seed : int
        Seeds the reverberation draws (and the reparameterisation noise).
    device : str or torch.device
        "cuda" trains in bf16 autocast.
    log_every : int
        Steps per history entry.
    callback : callable or None
        ``callback(step, loss)`` after every history entry.

    Returns
    -------
    history : list of dict
        ``{"step", "loss", "seconds"}`` every ``log_every`` steps.
    """
    if model.n_freqs != n_fft // 2 + 1:
        raise ValueError(
            f"n_fft={n_fft} gives {n_fft // 2 + 1} bins, but the model has n_freqs="
            f"{model.n_freqs}. Pass n_fft={2 * (model.n_freqs - 1)}."
        )
    device = torch.device(device)
    model.to(device).train()
    net = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    rirs = torch.zeros(0, 1) if rirs is None else rirs
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    history, acc, n_acc, t0 = [], 0.0, 0, time.perf_counter()
    step = 0
    for x in batches:
        if step >= n_steps:
            break
        x = reverberate(x.float(), rirs, p_reverb, gen)
        power = _power(x.to(device), n_fft, hop)
        u = segment_index(power.shape[-1], segment_frames, device)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = net(power, u)  # forward() is the loss, so DDP's hooks run
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        acc, n_acc = acc + float(loss.detach()), n_acc + 1
        if step % log_every == 0 or step == n_steps:
            entry = dict(step=step, loss=acc / n_acc, seconds=time.perf_counter() - t0)
            if not math.isfinite(entry["loss"]):
                raise RuntimeError(
                    f"the source prior's loss became non-finite at step {step}; lower lr "
                    f"(now {lr:g}) or check the corpus for empty or clipped files."
                )
            history.append(entry)
            acc, n_acc = 0.0, 0
            if callback is not None:
                callback(step, entry["loss"])
    model.eval()
    return history
