"""The linear family: the iVAE's noiseless linear limit, fitted by maximum likelihood.

With a linear decoder and no observation noise the ELBO of Khemakhem et al.
(2020) becomes the exact likelihood of x = A s under the conditional prior
p(s|u) per source and segment: a Gaussian
(:func:`sepkit.methods.likelihood.fit_linear_ivae`, L-BFGS on the window
covariances), the extended prior (a Gaussian with a super- or sub-Gaussian
factor per source, ``prior="extended"``, the EEG default;
:func:`~sepkit.methods.likelihood.fit_extended_ivae`) or a generalised
Gaussian (``prior="gengauss"``). ``mixing="post-nonlinear"`` first learns
a per-sensor unwarping h (saturating amplifiers) and separates h(x).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._check import RowMoments
from ..functional import sensor_unwarp
from ..preprocessing import CHUNK_SAMPLES, SensorUnwarp, Standardizer, bridge_rejected
from ..windows import window_labels
from . import _time
from .base import COMMON_PARAMS, FitInput, no_fit_params
from .likelihood import (
    fit_extended_ivae,
    fit_gengauss_ivae,
    fit_linear_ivae,
    fit_post_nonlinear_ivae,
)

NAME = "linear"
# The estimator settings this family reads.
PARAMS = COMMON_PARAMS | {
    "prior",
    "whiten",
    "window",
    "window_samples",
    "window_overlap",
    "highpass",
    "lowpass",
}
# Odd powers in the sensor unwarping of mixing="post-nonlinear" (x^3, x^5, x^7).
UNWARP_DEGREE = 3
# L-BFGS iterations of the joint fit that learns the unwarping h. Only h is
# kept (see _fit_unwarp), and it settles long before the full unmixing
# does: on clipped make_eeg recordings (19/32/64 channels) 100 iterations gave
# MCC within 0.002 of 1000 (0.756/0.860/0.898 vs 0.758/0.861/0.900) in a tenth
# of the time (64 channels: 20 s vs 133 s on one CPU thread).
UNWARP_MAX_ITER = 100
# mixing="auto" keeps the sensor unwarping h it tried (a highpass/lowpass fit
# of EEG) when h changes some channel by this share of its RMS or more
# (``sensor_nonlinearity_``). On recipes/eeg_semisynthetic's unfiltered
# recordings (seeds 0-2, 19/32/64 channels) the largest channel change was at
# most 0.030 on the 18 linear ones and at least 0.216 on the 27 clipped ones;
# EEGLAB's sample recording: 0.009. 0.08 lies between (near their geometric
# mean), a channel that clips alone is enough. Held-out seed 3 (15 recordings):
# linear at most 0.042 (64 channels), clipped at least 0.185.
UNWARP_KEEP = 0.08


def check_fit_params(fit_params) -> None:
    """This family takes no ``fit_params``."""
    no_fit_params(NAME, fit_params)


def fit(inp: FitInput, opts: dict, *, device, **_) -> _time.TimeDomainFit:
    """Fit ``opts["mixing_"]`` ("linear" or "post-nonlinear") on ``inp``.

    ``opts["try_unwarp"]`` (mixing="auto" on instantaneous audio, or on EEG
    with the fit filter; ``mixing_`` is then "post-nonlinear"): fit the sensor
    unwarping, and fall back to "linear" (on the filtered data, if filtered)
    when it changes no channel by ``UNWARP_KEEP`` of its RMS.
    """
    prep = _time.prepare(inp, opts)
    mixing = opts["mixing_"]
    n_sources = opts["n_sources"]
    all_codes = _segment_codes(prep)
    good = prep.good
    lin_codes = all_codes if good is None else all_codes[good]
    # Drop segments without samples (e.g. wholly under BAD annotations) from the codes.
    _, lin_codes = np.unique(lin_codes, return_inverse=True)
    data, unwarp, nonlinearity = prep.data, None, None
    if mixing == "post-nonlinear":
        # h becomes part of the standardisation; the sources are then
        # separated as for mixing="linear", on the unwarped signal.
        unwarp, st, nonlinearity = _fit_unwarp(prep, all_codes, n_sources)
        if opts["try_unwarp"] and nonlinearity.max() < UNWARP_KEEP:
            # mixing="auto": the sensors are linear; drop h and fit the
            # filtered recording exactly as mixing="linear" does.
            mixing, unwarp = "linear", None
            if prep.fit_filter is not None:
                data = prep.fit_filter(bridge_rejected(data, good))
            prep.data = data
            st = Standardizer.fit(data if good is None else data[:, good], n_sources)
    else:
        st = Standardizer.fit(prep.stats, n_sources, scale=prep.scale)
    # float32 as forward gives it (the fits read the sources' rows in float64):
    # a float64 copy of every whitened row would be the fit's largest array.
    Xt = st.forward(data)
    if prep.fit_filter is not None and mixing == "post-nonlinear":
        # The model's sources are those of the filtered h(x).
        Xt = prep.fit_filter(bridge_rejected(Xt.astype(np.float64), good))
    if good is not None:
        Xt = Xt[:, good]
    prior = opts["prior_"]
    Y = Xt[:n_sources].astype(np.float64)
    result = _fit_prior(prior, Y, lin_codes)
    model = _time.build_model(st.rank, prep.codec, opts, linear=True)
    _load_model(model, result["unmixing"], Y, Xt, lin_codes, st.rank)
    fitted = _time.TimeDomainFit(
        model=model.to(device),
        standardizer=st,
        codec=prep.codec,
        family=NAME,
        mixing=mixing,
        prior=prior,
        posterior="diag",
        n_layers=1,
        kernel_size=1,
        source_shape=result.get("shape"),
        sensor_nonlinearity=nonlinearity,
        history=[_history_entry(result, unwarp)],
    )
    _warn_not_converged(result, prior)
    fitted.source_mean = _source_mean(fitted, prep)
    return fitted


def _source_mean(fitted, prep) -> np.ndarray:
    """``fitted.fitted_source_mean(prep)`` without passing the recording through the model.

    The linear model's encoder is affine (kernel 1, no hidden layer), so the
    mean of its outputs over the fitted samples is its output at their mean.
    """
    st = fitted.standardizer
    idx = np.arange(prep.data.shape[1]) if prep.good is None else np.flatnonzero(prep.good)
    total = np.zeros(prep.data.shape[0])
    for start in range(0, idx.size, CHUNK_SAMPLES):
        block = prep.data[:, idx[start : start + CHUNK_SAMPLES]]
        block = block if st.unwarp is None else st.unwarp.forward(block)
        total += block.sum(axis=1, dtype=np.float64)
    mean_in = st.whitening @ (total / max(idx.size, 1) - st.mean)
    with torch.no_grad():
        x = torch.from_numpy(mean_in[None, :, None].astype(np.float32)).to(fitted.device)
        return fitted.model.encode(x, None)[0][0, :, 0].double().cpu().numpy()


def _fit_prior(prior: str, Y, codes) -> dict:
    """The maximum-likelihood fit of ``prior`` (resolved: no "auto") on whitened ``Y``."""
    if prior == "extended":
        return fit_extended_ivae(Y, codes)
    if prior == "gengauss":
        return fit_gengauss_ivae(Y, codes)
    return fit_linear_ivae(Y, codes)


def _segment_codes(prep):
    """One segment code per sample of the recording, for the linear iVAE."""
    if prep.u_layout:
        return window_labels(prep.data.shape[1], prep.codec.window_samples, prep.codec.hop_samples)
    if prep.codes is None or prep.codes.ndim != 1:
        return None
    return prep.codes


def _load_model(model, W, Y, Xt, codes, rank):
    """Write the fitted unmixing ``W`` and its per-segment prior into ``model``."""
    n_sources = W.shape[0]
    # Per-segment means and variances of the unit-variance sources: the fitted prior.
    S = W @ Y
    counts = np.bincount(codes)
    seg_mean = np.stack([np.bincount(codes, weights=s) / counts for s in S], axis=1)
    seg_sq = np.stack([np.bincount(codes, weights=s * s) / counts for s in S], axis=1)
    seg_var = seg_sq - seg_mean**2
    unmixing = np.zeros((n_sources, rank))
    unmixing[:, :n_sources] = W
    mixing = np.zeros((rank, n_sources))
    mixing[:n_sources] = np.linalg.inv(W)
    # Residual of the whitened data, by blocks: the sources' rows up to
    # rounding, the other rows (weaker principal components) as they are.
    residual = RowMoments(rank)
    for start in range(0, Xt.shape[1], CHUNK_SAMPLES):
        block = Xt[:, start : start + CHUNK_SAMPLES].astype(np.float64)
        block[:n_sources] -= mixing[:n_sources] @ S[:, start : start + CHUNK_SAMPLES]
        residual.add(block)
    noise_var = np.maximum(residual.var, 1e-6)
    model.load_noiseless_linear(unmixing, mixing, noise_var, seg_mean, seg_var)


def _history_entry(result, unwarp) -> dict:
    entry = dict(step=0, loss=result["nll"], n_iter=result["n_iter"])
    if "start_nll" in result:
        entry["start_loss"] = result["start_nll"]
    entry["converged"] = result["converged"]
    if "trace" in result:  # the objective per iteration, for the training-curve figure
        entry["trace"] = [float(v) for v in result["trace"]]
        entry["trace_iter"] = [int(i) for i in result.get("trace_iter", range(len(entry["trace"])))]
    if unwarp is not None:
        entry.update(unwarp_loss=unwarp["nll"], unwarp_n_iter=unwarp["n_iter"])
    return entry


def _warn_not_converged(result, prior):
    if not result["converged"]:
        fitted = "linear iVAE" + (f" (prior={prior!r})" if prior != "gauss" else "")
        warnings.warn(
            f"The {fitted} fit stopped after {result['n_iter']} L-BFGS iterations "
            "without converging; the sources may be off. Check the data for outliers "
            "or use longer windows.",
            RuntimeWarning,
            stacklevel=4,
        )


def _fit_unwarp(prep, codes, n_sources):
    """mixing="post-nonlinear": fit h; returns (fit result, Standardizer, nonlinearity).

    h is fitted jointly with a square unmixing by maximum likelihood
    (:func:`sepkit.methods.likelihood.fit_post_nonlinear_ivae`). That unmixing
    is then dropped: its rows beyond the sources model the rest of the signal
    as stationary Gaussian noise, so a source with little non-stationarity
    (ECG, line noise) is as likely a noise row as a source row; the sources
    are instead separated on the unwarped signal as for mixing="linear", from
    its strongest principal components (measured on a clipped 32-channel
    make_eeg recording, seed 2: MCC 0.861 vs 0.804 for the joint unmixing,
    whose ECG source fell to |r| 0.11).

    The Standardizer holds h (on the standardised channels) and the PCA
    whitening of the standardised unwarped data y = h(x); ``prep.data``
    covers the whole recording, ``prep.good`` (or None) marks the samples
    fitted, after the fit filter has filtered the unwarped signal.
    """
    data, good, fit_filter = prep.data, prep.good, prep.fit_filter
    stats = data if good is None else data[:, good]
    sensor_mean = stats.mean(axis=1).astype(np.float64)
    sensor_scale = stats.std(axis=1).astype(np.float64)
    x = (data - sensor_mean[:, None]) / sensor_scale[:, None]
    if fit_filter is not None:
        x = bridge_rejected(x, good)
    result = fit_post_nonlinear_ivae(
        x,
        codes,
        n_sources,
        degree=UNWARP_DEGREE,
        max_iter=UNWARP_MAX_ITER,
        feature_filter=fit_filter,
        keep=good,
    )
    coefs = result["coefs"]
    y, _ = sensor_unwarp(torch.from_numpy(x), torch.from_numpy(coefs))
    change = y - torch.from_numpy(x)
    y_fit = y
    if good is not None:
        change, y_fit = change[:, good], y[:, good]
    nonlinearity = (change.std(dim=1) / y_fit.std(dim=1)).numpy()
    # Back to sensor units before the whitening, so that the strongest
    # components are chosen (and weighed) as for mixing="linear".
    y = y.numpy() * sensor_scale[:, None]
    if fit_filter is not None:
        y = fit_filter(y)
    st = Standardizer.fit(y if good is None else y[:, good], n_sources)
    # Fold the scale in: forward applies the whitening to h(x) itself.
    st.mean = st.mean / sensor_scale
    st.whitening = st.whitening * sensor_scale[None, :]
    st.dewhitening = st.dewhitening / sensor_scale[:, None]
    st.unwarp = SensorUnwarp(sensor_mean, sensor_scale, coefs)
    return result, st, nonlinearity
