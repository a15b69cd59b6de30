"""Training loop of the flow family: exact maximum likelihood of an invertible g.

Minibatches are stratified: every step draws the same number of samples from
every segment of u, so that each segment's source means and variances (the
prior's parameters, profiled out in :func:`sepkit.functional.flow_ivae_nll`)
are estimated from the batch itself. The per-segment variance of a batch of
m samples is biased by (m - 1) / m, the same factor for every segment and
source, so it shifts the objective by a constant and leaves its gradient
unbiased up to that factor.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..functional import flow_ivae_nll, profiled_gaussian_nll
from ..models.flow import CouplingFlow
from . import MAX_NONFINITE, _lr_factor

# Largest gradient norm of a step (nats per sample per unit of the weights).
_MAX_GRAD_NORM = 5.0
# Samples per forward pass when the objective is evaluated on all the data.
_EVAL_CHUNK_SAMPLES = 1 << 16


def segment_layout(codes: torch.Tensor):
    """(order, starts, counts): the samples sorted by segment, where each starts, how many."""
    order = torch.argsort(codes, stable=True)
    counts = torch.bincount(codes)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts


def stratified_batch(layout, n_per_segment: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (n_segments, n_per_segment): uniform draws with replacement within each segment."""
    order, starts, counts = layout
    draw = torch.rand(
        (counts.shape[0], n_per_segment), generator=generator, device=generator.device
    ).to(counts.device)
    # min(): a draw of exactly 1.0 cannot happen, but float32 rounding can reach count.
    offsets = torch.minimum((draw * counts[:, None]).long(), counts[:, None] - 1)
    return order[starts[:, None] + offsets]


@torch.no_grad()
def flow_nll_all(model: CouplingFlow, x: torch.Tensor, codes: torch.Tensor) -> float:
    """-log p(x|u) in nats per sample over all of ``x`` (n_times, n_dims), chunked."""
    n_seg = int(codes.max()) + 1
    n_dims = x.shape[1]
    sums = torch.zeros(n_seg, n_dims, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(sums)
    logdet = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _EVAL_CHUNK_SAMPLES):
        s, ld = model(x[start : start + _EVAL_CHUNK_SAMPLES])
        c = codes[start : start + _EVAL_CHUNK_SAMPLES]
        s = s.double()
        sums.index_add_(0, c, s)
        squares.index_add_(0, c, s * s)
        logdet += ld.double().sum()
    counts = torch.bincount(codes, minlength=n_seg).double()[:, None]
    var = squares / counts - (sums / counts) ** 2
    weights = counts[:, 0] / counts.sum()
    return float(profiled_gaussian_nll(var, weights) - logdet / x.shape[0])


def train_flow(
    model: CouplingFlow,
    x: torch.Tensor,
    codes: torch.Tensor,
    *,
    n_steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    callback=None,
    log_every: int = 100,
) -> list[dict]:
    """Fit ``model`` to ``x`` (n_times, n_dims) with segment ``codes`` (n_times,) by Adam.

    The learning rate warms up over the first 5 % of the steps and decays on a
    cosine to 5 % (as the network family's). Every ``log_every`` steps the
    mean loss is checked: a non-finite one restores the last good weights and
    halves the rate, at most ``MAX_NONFINITE`` times in a row.

    Returns
    -------
    list of dict
        One entry per ``log_every`` steps: ``step``, ``loss`` (mean minibatch
        -log p(x|u), nats per sample), ``lr``; the last entry also has ``nll``
        over all the data.
    """
    layout = segment_layout(codes)
    counts = layout[2]
    weights = (counts / counts.sum()).to(x.dtype)
    n_per_segment = max(2, batch_size // int(counts.shape[0]))
    generator = torch.Generator(device=x.device if x.device.type == "cuda" else "cpu")
    generator.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    warmup = max(1, n_steps // 20)
    scale, n_bad, history = 1.0, 0, []
    good = copy.deepcopy(model.state_dict())
    running = torch.zeros((), device=x.device)
    model.train()
    for step in range(n_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * scale * _lr_factor(step, n_steps, warmup)
        idx = stratified_batch(layout, n_per_segment, generator)
        s, logdet = model(x[idx])
        loss = flow_ivae_nll(s, logdet, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A step along a huge gradient can make a coupling map its inputs far
        # out, after which tanh-saturated conditioners give no way back.
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM, foreach=True)
        optimizer.step()
        running += loss.detach()
        if (step + 1) % log_every and step + 1 < n_steps:
            continue
        n_run = (step % log_every) + 1
        mean = float(running) / n_run
        running.zero_()
        entry = dict(step=step + 1, loss=mean, lr=optimizer.param_groups[0]["lr"])
        if not np.isfinite(mean):
            n_bad += 1
            if n_bad > MAX_NONFINITE:
                raise RuntimeError(
                    f"The flow's loss stayed non-finite after {MAX_NONFINITE} restarts at a "
                    f"halved learning rate (lr={lr}). Pass a smaller fit_params['lr'], or "
                    "mixing='nonlinear' (the ELBO network) for these data."
                )
            model.load_state_dict(good)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
            scale *= 0.5
            entry["event"] = f"non-finite loss: restored step {step + 1 - n_run}, lr halved"
        else:
            n_bad = 0
            good = copy.deepcopy(model.state_dict())
        history.append(entry)
        if callback is not None and step + 1 < n_steps:
            model.eval()
            stop = bool(callback(step + 1, model))
            model.train()
            if stop:
                break
    model.eval()
    history[-1]["nll"] = flow_nll_all(model, x, codes)
    return history
