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

The fitted model is :class:`LinearFit`, numpy matrices (no torch): the
Gaussian and extended fits are numpy too, so a default EEG fit never imports
torch; the generalised Gaussian and the unwarping are fitted with torch's L-BFGS.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .._check import RowMoments
from .._lazy import torch
from ..functional import sensor_unwarp
from ..preprocessing import CHUNK_SAMPLES, SensorUnwarp, Standardizer, bridge_rejected
from ..windows import UCodec, window_labels
from . import _time
from .base import COMMON_PARAMS, FitInput, Fitted, no_fit_params
from .likelihood import (
    fit_extended_ivae,
    fit_gengauss_ivae,
    fit_linear_ivae,
    fit_post_nonlinear_ivae,
)

NAME = "linear"
# fit honours FitInput.decim: the likelihood is a sum over samples, so every
# decim-th sample estimates it (the protocol of sepkit.methods.base).
DECIM = True
# fit's keywords it honours (the protocol): none of device, resume, callback; the
# estimator reports a GPU asked for (the fit and its sources are numpy on the CPU).
HOOKS = frozenset()
# The estimator settings this family reads (``device``: only to say that a
# GPU asked for is not used; the fit and its sources are numpy on the CPU).
PARAMS = COMMON_PARAMS | {
    "prior",
    "whiten",
    "window",
    "window_samples",
    "window_overlap",
    "highpass",
    "lowpass",
}
# Fitted by exact likelihood: the words of the estimator's error about an option
# that needs the ELBO network (a family fitted by the ELBO has EXACT = None).
# ``priors``: the prior settings it takes.
EXACT = dict(
    priors=("auto", "gauss", *_time.LINEAR_PRIORS),
    prior="the linear model's prior is 'gauss', 'extended' or 'gengauss'",
    decoder_u="a decoder conditioned on u is not linear",
    fit="the linear fit",
    does="fits the linear, noiseless iVAE by maximum likelihood and trains no network",
)


def resolve_prior(prior: str, posterior: str, is_eeg: bool) -> tuple[str, str]:
    """(prior, posterior) of a fit: "auto" resolved for this family.

    The likelihood has a Gaussian, extended or generalised Gaussian prior and an
    exact (point-mass) posterior, stored as a diagonal one. For EEG "auto" is
    "extended": its stationary non-Gaussian sources (ECG, line noise) are not
    identified by their variance alone (benchmarks/README.md).
    """
    return (prior if prior != "auto" else ("extended" if is_eeg else "gauss")), "diag"


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
# mixing="auto" tries the unwarping only within this budget (_unwarp_too_large).
UNWARP_AUTO_MAX_CHANNELS = 64
UNWARP_AUTO_MAX_BYTES = 512 * 2**20


def check_fit_params(fit_params) -> None:
    """This family takes no ``fit_params``."""
    no_fit_params(NAME, fit_params)


def fit(inp: FitInput, opts: dict, *, device="auto", **_) -> LinearFit:
    """Fit ``opts["mixing_"]`` ("linear" or "post-nonlinear") on ``inp``.

    ``opts["try_unwarp"]`` (mixing="auto" on instantaneous audio, or on EEG
    with the fit filter; ``mixing_`` is then "post-nonlinear"): fit the sensor
    unwarping, and fall back to "linear" (on the filtered data, if filtered)
    when it changes no channel by ``UNWARP_KEEP`` of its RMS. ``device``: the
    fit runs in numpy on the CPU whatever it says (a GPU asked for is
    reported, not used).
    """
    prep = _time.prepare(inp, opts)
    opts = dict(opts, n_sources=prep.n_sources)  # None or a share of variance: counted
    mixing = opts["mixing_"]
    n_sources = opts["n_sources"]
    all_codes = _segment_codes(prep)
    good = prep.good
    # The samples the unmixing is fitted on (fit's decim thins them; the
    # whitening and the fit filter see every good sample).
    keep = inp.fitted_samples()
    lin_codes = all_codes if keep is None else all_codes[keep]
    # Drop segments without samples (e.g. wholly under BAD annotations) from the codes.
    _, lin_codes = np.unique(lin_codes, return_inverse=True)
    _check_decimated(inp.decim, lin_codes, prep.codec)
    data, unwarp, nonlinearity, st = prep.data, None, None, None
    if opts["try_unwarp"] and mixing == "post-nonlinear":
        too_large = _unwarp_too_large(prep, all_codes)
        if too_large:
            warnings.warn(too_large, UserWarning, stacklevel=4)
            mixing = "linear"
            data, st = _linear_on_the_fit_band(prep, n_sources)
    if mixing == "post-nonlinear":
        # h becomes part of the standardisation; the sources are then
        # separated as for mixing="linear", on the unwarped signal.
        unwarp, st, nonlinearity = _fit_unwarp(prep, all_codes, n_sources, keep)
        if opts["try_unwarp"] and nonlinearity.max() < UNWARP_KEEP:
            # mixing="auto": the sensors are linear; drop h and fit the
            # filtered recording exactly as mixing="linear" does.
            mixing, unwarp = "linear", None
            data, st = _linear_on_the_fit_band(prep, n_sources)
    elif st is None:
        st = Standardizer.fit(prep.stats, n_sources, scale=prep.scale)
    # float32 as forward gives it (the fits read the sources' rows in float64):
    # a float64 copy of every whitened row would be the fit's largest array.
    Xt = st.forward(data)
    if prep.fit_filter is not None and mixing == "post-nonlinear":
        # The model's sources are those of the filtered h(x).
        Xt = prep.fit_filter(bridge_rejected(Xt.astype(np.float64), good))
    if keep is not None:
        Xt = Xt[:, keep]
    prior = opts["prior_"]
    Y = Xt[:n_sources].astype(np.float64)
    result = _fit_prior(prior, Y, lin_codes)
    fitted = LinearFit(
        **_model_matrices(result["unmixing"], Y, Xt, lin_codes, st.rank, prep.codec),
        standardizer=st,
        codec=prep.codec,
        mixing_kind=mixing,
        prior=prior,
        source_shape=result.get("shape"),
        sensor_nonlinearity=nonlinearity,
        history=[_history_entry(result, unwarp)],
    )
    _warn_not_converged(result, prior)
    fitted.source_mean = _source_mean(fitted, prep)
    return fitted


# The fewest samples per segment of u that decim may leave: each segment's mean
# and variance (eq. 7's conditional prior) are estimated from them.
MIN_SEGMENT_SAMPLES = 8


def _check_decimated(decim: int, codes: np.ndarray, codec) -> None:
    """Refuse a ``decim`` that leaves a segment of u too few samples to estimate its prior.

    Judged on a whole window (windows that BAD spans or rejection cut short
    may hold fewer, with or without decim), or for labelled u on the median
    segment. Audit: ``decim`` of 16000 on 2 s of audio fitted 2 samples and
    wrote the result; larger ones crashed inside the optimiser.
    """
    if decim == 1:
        return
    if codec.classes is None:  # u = the window index
        left = -(-codec.window_samples // decim)
        segments = f"a window of {codec.window_samples} samples (u's segments)"
        largest = max(1, codec.window_samples // MIN_SEGMENT_SAMPLES)
        longer = "longer windows"
    else:
        counts = np.bincount(codes)
        left = int(np.median(counts[counts > 0])) if counts.any() else 0
        segments = "the median segment of u"
        largest = max(1, decim * left // MIN_SEGMENT_SAMPLES)
        longer = "longer segments"
    if left >= MIN_SEGMENT_SAMPLES:
        return
    raise ValueError(
        f"decim={decim} leaves {left} sample(s) in {segments}, {codes.size} in all, and "
        f"the fit estimates each segment's mean and variance from its samples: it needs at "
        f"least {MIN_SEGMENT_SAMPLES}. Pass decim={largest} or less, or {longer}."
    )


def _source_mean(fitted, prep) -> np.ndarray:
    """Mean of the sources over the fitted samples, from the block sums of the data.

    The map from the (unwarped) channels to the sources is affine, so the mean
    of the sources is the map of the channels' mean.
    """
    st = fitted.standardizer
    idx = np.arange(prep.data.shape[1]) if prep.good is None else np.flatnonzero(prep.good)
    total = np.zeros(prep.data.shape[0])
    for start in range(0, idx.size, CHUNK_SAMPLES):
        block = prep.data[:, idx[start : start + CHUNK_SAMPLES]]
        block = block if st.unwarp is None else st.unwarp.forward(block)
        total += block.sum(axis=1, dtype=np.float64)
    mean_in = st.whitening @ (total / max(idx.size, 1) - st.mean)
    return fitted.unmixing @ mean_in + fitted.bias


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


def _model_matrices(W, Y, Xt, codes, rank, codec: UCodec) -> dict:
    """The noiseless linear iVAE of the fitted unmixing ``W`` (whitened, square) and its prior.

    Returns the :class:`LinearFit` fields ``unmixing`` (n_sources, rank),
    ``mixing`` (rank, n_sources), ``noise_var`` (rank,) and the per-segment
    ``segment_mean`` / ``segment_var`` (n_segments, n_sources) of the
    unit-variance sources: the fitted p(z|u) (None when some windows had no
    sample to fit, e.g. wholly under BAD annotations).
    """
    n_sources = W.shape[0]
    S = W @ Y
    counts = np.bincount(codes)
    seg_mean = np.stack([np.bincount(codes, weights=s) / counts for s in S], axis=1)
    seg_sq = np.stack([np.bincount(codes, weights=s * s) / counts for s in S], axis=1)
    seg_var = np.maximum(seg_sq - seg_mean**2, 1e-12)
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
    complete = codec.n_segments is not None and seg_var.shape[0] == codec.n_segments
    return dict(
        unmixing=unmixing,
        mixing=mixing,
        noise_var=np.maximum(residual.var, 1e-6),
        segment_mean=seg_mean if complete else None,
        segment_var=seg_var if complete else None,
    )


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


def _linear_on_the_fit_band(prep, n_sources):
    """(data, Standardizer) of mixing="auto" fitting the linear model where it tried h.

    The recording as mixing="linear" fits it: through the fit filter, if any
    (``prep.data`` is replaced by the filtered copy).
    """
    data, good = prep.data, prep.good
    if prep.fit_filter is not None:
        data = prep.fit_filter(bridge_rejected(data, good))
    prep.data = data
    return data, Standardizer.fit(data if good is None else data[:, good], n_sources)


def _unwarp_too_large(prep, codes) -> str | None:
    """Why mixing="auto" should not try the unwarping on this recording, or None.

    The joint fit of h holds one covariance of the (UNWARP_DEGREE + 1) *
    n_channels odd-power features per window, and every L-BFGS step takes
    their quadratic forms for each source row: its time grows with the cube
    of the channel count (the sources grow with the channels), its memory
    with the square and with the number of windows. Measured on make_eeg
    recordings (5 sources per 16 channels) with the fit's 1 Hz high-pass,
    AMD EPYC, one thread, whole fits: 64 channels x 2 / 10 min 12.6 / 26.8 s
    and 1.1 / 1.8 GB peak; 128 channels x 2 / 10 min 65 / 78 s and 2.2 / 3.0
    GB, where the linear fit takes 4-12 s and about 0.6 GB at 128 x 10 min
    (benchmarks/README.md). The budget admits recipes/eeg_semisynthetic's
    largest case, 64 channels x 10 min (16 sources: 132 windows of the
    default length, 66 MiB), and 64 channels up to about an hour at 256 Hz
    (the default windows grow to 1000 samples).
    """
    n_channels = prep.data.shape[0]
    if codes is None:
        n_segments = 1
    else:
        n_segments = int(np.unique(codes if prep.good is None else codes[prep.good]).size)
    n_bytes = n_segments * ((UNWARP_DEGREE + 1) * n_channels) ** 2 * 8  # float64 covariances
    if n_channels <= UNWARP_AUTO_MAX_CHANNELS and n_bytes <= UNWARP_AUTO_MAX_BYTES:
        return None
    return (
        f"mixing='auto' did not try the sensor unwarping ('post-nonlinear') on {n_channels} "
        f"channels x {n_segments} windows, so it fitted the linear model: the unwarping's "
        "time grows with the cube of the channel count, and 'auto' tries it on at most "
        f"{UNWARP_AUTO_MAX_CHANNELS} channels and {_size(UNWARP_AUTO_MAX_BYTES)} of "
        f"covariances (this fit would hold {_size(n_bytes)}). Pass mixing='post-nonlinear' "
        "to fit it anyway (at 128 channels x 10 min about 80 s and 3 GB on one core, 20 "
        "times the linear fit), or mixing='linear' to silence this."
    )


def _size(n_bytes: int) -> str:
    """``n_bytes`` in MiB or GiB, for messages."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _fit_unwarp(prep, codes, n_sources, keep):
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
    fitted, after the fit filter has filtered the unwarped signal; h is fitted
    on those of ``keep`` (``prep.good`` thinned by fit's decim).
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
        keep=keep,
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


# ------------------------------------------------------------ the fitted model
# Tensors of a saved linear fit (format 3), beside the standardiser's.
_STATE_KEYS = ("unmixing", "bias", "mixing", "decoder_bias", "noise_var")
_SEGMENT_KEYS = ("segment_mean", "segment_var")


@dataclass
class LinearFit(Fitted):
    """The noiseless linear iVAE, in numpy: s = B y + b and y = A s + c.

    y is the standardised (whitened, and for mixing="post-nonlinear"
    unwarped) recording of :class:`~sepkit.preprocessing.Standardizer`.
    Nothing here imports torch: a linear EEG fit and its sources run without it.

    Attributes
    ----------
    unmixing : ndarray, shape (n_sources, rank)
        B, the exact posterior mean of the noiseless model (a point mass).
    bias : ndarray, shape (n_sources,)
        b (zero for a fit; files of the network-layout era may hold one).
    mixing : ndarray, shape (rank, n_sources)
        A, the decoder; ``decoder_bias`` c, shape (rank,).
    noise_var : ndarray, shape (rank,)
        Residual variance of y per whitened dimension (the weaker principal
        components the sources do not explain).
    segment_mean, segment_var : ndarray, shape (n_segments, n_sources), or None
        The fitted prior p(z|u) per segment u of the fit.
    standardizer, codec : Standardizer, UCodec
    mixing_kind, prior : str
        Resolved settings (``mixing_``, ``prior_``).
    source_mean : ndarray, shape (n_sources,)
    source_shape : ndarray or None
        Per source: the generalised Gaussian shape (prior="gengauss") or the
        extended prior's k (prior="extended"); else None.
    sensor_nonlinearity : ndarray or None
        Largest change of each channel by the tried sensor unwarping.
    """

    unmixing: np.ndarray
    mixing: np.ndarray
    noise_var: np.ndarray
    standardizer: Standardizer
    codec: UCodec
    mixing_kind: str = "linear"
    prior: str = "gauss"
    bias: np.ndarray | None = None
    decoder_bias: np.ndarray | None = None
    segment_mean: np.ndarray | None = None
    segment_var: np.ndarray | None = None
    source_mean: np.ndarray | None = None
    source_shape: np.ndarray | None = None
    sensor_nonlinearity: np.ndarray | None = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.bias is None:
            self.bias = np.zeros(self.unmixing.shape[0])
        if self.decoder_bias is None:
            self.decoder_bias = np.zeros(self.mixing.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.unmixing.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.standardizer.mean.shape[0])

    family = NAME
    # The posterior mean B y does not depend on the window, nor on the time of a
    # sample: the rate does not enter.
    needs_u = False
    per_sample = True

    def sources(self, data, u=None):
        # u does not enter a linear unmixing, but a u that does not fit the recording
        # is a mistake that the families which read u refuse: refuse it here too.
        if np.ndim(u) >= 1 and np.shape(u)[-1] != data.shape[1]:
            raise ValueError(
                f"u has {np.shape(u)[-1]} labels but X has {data.shape[1]} samples; pass one "
                "label per time sample, shape (n_times,), or u=None (a linear separator's "
                "sources do not depend on u)."
            )
        y = self.standardizer.forward(data)
        B = self.unmixing.astype(np.float32)
        out = np.empty((self.n_sources, y.shape[1]), np.float32)
        # In blocks, so that no float64 temporary of the recording is made.
        for start in range(0, y.shape[1], _time.INFER_CHUNK_SAMPLES):
            stop = start + _time.INFER_CHUNK_SAMPLES
            np.matmul(B, y[:, start:stop], out=out[:, start:stop])
        out += self.bias.astype(np.float32)[:, None]
        return out

    def reconstruct(self, sources, u=None):
        y = self.mixing @ np.asarray(sources, np.float64) + self.decoder_bias[:, None]
        return self.standardizer.inverse(y).astype(np.float32)

    def components(self):
        st = self.standardizer
        patterns = st.dewhitening @ self.mixing
        if st.unwarp is not None:  # mixing="post-nonlinear"
            # Chain rule through the sensor warp g = h^-1 at the decoded source mean:
            # dx/dz = dy/dz / (dy/dx at y0).
            mean = self.source_mean if self.source_mean is not None else np.zeros(self.n_sources)
            y0 = (self.mixing @ mean + self.decoder_bias)[:, None]
            patterns = patterns / st.unwarp.slope_at(st.dewhitening @ y0 + st.mean[:, None])
        return patterns

    def sensor_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unmixing, bias, mixing) between the standardised channels and the sources.

        sources = unmixing @ (whitening_ @ (x - mean_)) + bias; the
        reconstruction is dewhitening_ @ (mixing @ sources) + mean_ (without
        sensor unwarping). :meth:`sepkit.IVAESeparator.to_mne_ica` exports them.
        """
        return self.unmixing, self.bias, self.mixing

    # ---------------------------------------------------------------- state
    def attributes(self) -> dict:
        unwarp = self.standardizer.unwarp
        return dict(
            _time.fit_attributes(self.standardizer, self.codec, self.source_mean, self.history),
            unmixing_=self.unmixing,
            noise_var_=self.noise_var,
            segment_mean_=self.segment_mean,
            segment_var_=self.segment_var,
            sensor_mean_=None if unwarp is None else unwarp.mean,
            sensor_scale_=None if unwarp is None else unwarp.scale,
            sensor_coefs_=None if unwarp is None else unwarp.coefs,
            sensor_nonlinearity_=self.sensor_nonlinearity,
            source_shape_=self.source_shape,
            data_device_="host",
            mixing_=self.mixing_kind,
            prior_=self.prior,
            posterior_="diag",
        )

    def describe(self) -> dict:
        return dict(
            family=NAME,
            domain="time",
            mixing=self.mixing_kind,
            prior=self.prior,
            unwarped=self.standardizer.unwarp is not None,
        )

    def state(self):
        st = self.standardizer
        arrays = {f"linear.{k}": getattr(self, k) for k in _STATE_KEYS}
        if self.segment_mean is not None:
            arrays.update({f"linear.{k}": getattr(self, k) for k in _SEGMENT_KEYS})
        arrays.update(mean_=st.mean, whitening_=st.whitening, dewhitening_=st.dewhitening)
        if st.unwarp is not None:  # mixing="post-nonlinear"
            arrays.update(
                sensor_mean_=st.unwarp.mean,
                sensor_scale_=st.unwarp.scale,
                sensor_coefs_=st.unwarp.coefs,
            )
        if self.source_shape is not None:  # prior="gengauss" or "extended"
            arrays["source_shape_"] = self.source_shape
        if self.sensor_nonlinearity is not None:
            arrays["sensor_nonlinearity_"] = self.sensor_nonlinearity
        meta = dict(
            prior_=self.prior,
            posterior_="diag",
            mixing_=self.mixing_kind,
            **_time.codec_meta(self.codec, self.source_mean, self.history),
        )
        return arrays, meta


def from_state(tensors: dict, meta: dict, params: dict, device=None) -> LinearFit:
    """Rebuild a :class:`LinearFit` from a saved file.

    Format 3 files hold its matrices (``linear.*``); formats 1 and 2 held the
    linear iVAE as network weights (``model.*``: a kernel-1 layer each way
    plus the linear path), from which the same matrices are read.
    """
    arrays = {
        k: v.double().numpy() if v.is_floating_point() else v.numpy() for k, v in tensors.items()
    }
    unwarp = None
    if "sensor_coefs_" in arrays:
        unwarp = SensorUnwarp(
            *(arrays[k] for k in ("sensor_mean_", "sensor_scale_", "sensor_coefs_"))
        )
    st = Standardizer(*(arrays[k] for k in ("mean_", "whitening_", "dewhitening_")), unwarp=unwarp)
    codec = _time.codec_from_meta(meta, meta["prior_"] != "standard")
    matrices = (
        {
            k: arrays[f"linear.{k}"]
            for k in (*_STATE_KEYS, *_SEGMENT_KEYS)
            if f"linear.{k}" in arrays
        }
        if "linear.unmixing" in arrays
        else _network_layout(arrays, params["n_sources"])
    )
    n_sources = params["n_sources"]
    return LinearFit(
        **matrices,
        standardizer=st,
        codec=codec,
        mixing_kind=meta.get("mixing_", "linear"),
        prior=meta["prior_"],
        source_mean=np.asarray(meta.get("source_mean_", np.zeros(n_sources)), np.float64),
        source_shape=arrays.get("source_shape_"),
        sensor_nonlinearity=arrays.get("sensor_nonlinearity_"),
        history=meta["history_"],
    )


def _network_layout(arrays: dict, n_sources: int) -> dict:
    """The :class:`LinearFit` matrices of a linear fit saved as network weights (format <= 2)."""
    enc, dec = arrays["model.encoder.layers.0.weight"], arrays["model.decoder.layers.0.weight"]
    unmixing = enc[:n_sources, :, 0] + arrays["model.encoder_linear.weight"][:, :, 0]
    mixing = dec[:, :, 0] + arrays["model.decoder_linear.weight"][:, :, 0]
    if unmixing.shape[0] != n_sources or mixing.shape[1] != n_sources:
        raise ValueError(
            f"the linear model's weights have shapes {unmixing.shape} and {mixing.shape}, "
            f"not (n_sources={n_sources}, rank) and (rank, n_sources)"
        )
    table = arrays.get("model.prior_net.table.weight")
    return dict(
        unmixing=unmixing,
        bias=arrays["model.encoder.layers.0.bias"][:n_sources],
        mixing=mixing,
        decoder_bias=arrays["model.decoder.layers.0.bias"],
        noise_var=np.exp(arrays["model.noise_logvar"][:, 0]),
        segment_mean=None if table is None else table[:, :n_sources],
        segment_var=None if table is None else np.exp(table[:, n_sources:]),
    )
