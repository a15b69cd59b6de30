"""What the time-domain families (network, flow, linear) share: preparation and u.

Each fits on standardised sensor data (:class:`~sepkit.preprocessing.Standardizer`)
with u from a :class:`~sepkit.windows.UCodec`: :func:`prepare` filters, checks and
cuts the recording into windows, and :func:`fit_attributes` / :func:`codec_meta`
give what every time-domain fit sets and saves about them. Nothing here imports
torch: the linear family (numpy) shares it with the torch families.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .._check import check_flat_channels
from ..preprocessing import (
    FitFilter,
    Standardizer,
    bridge_rejected,
    count_components,
    row_covariance,
)
from ..windows import (
    UCodec,
    overlapping_training_set,
    resolve_window_samples,
)
from .base import FitInput

# Samples per forward pass at inference: bounds memory for long recordings.
INFER_CHUNK_SAMPLES = 1 << 16
# mixing values fitted by maximum likelihood without a network.
LINEAR_MIXINGS = ("linear", "post-nonlinear")
# Priors only the linear models have (beside "gauss"); the model's prior table
# holds their segment means and variances, the rest is in source_shape.
LINEAR_PRIORS = ("extended", "gengauss")


@dataclass
class Prepared:
    """The time-domain families' view of a :class:`FitInput`.

    ``data`` is filtered by the fit filter unless ``mixing`` is
    "post-nonlinear" (which filters after its unwarping); ``stats`` are its
    good samples, ``scale`` their per-channel std; ``codes`` fit's u codes
    (in the overlapping-window layout when ``u_layout``); ``n_sources`` the
    count ``opts["n_sources"]`` resolved to (None or a share of variance:
    :func:`sepkit.preprocessing.count_components` on the fit band).
    """

    data: np.ndarray
    stats: np.ndarray
    scale: np.ndarray
    good: np.ndarray | None
    codes: np.ndarray | None
    u_layout: bool
    codec: UCodec
    fit_filter: FitFilter | None
    n_sources: int


def prepare(inp: FitInput, opts: dict) -> Prepared:
    """Filter, check and cut ``inp`` into windows for a time-domain family.

    The windows are ``window`` seconds (or ``window_samples``, or the default
    rule of :func:`sepkit.windows.resolve_window_samples`) every ``window -
    window_overlap`` seconds; their index is u unless ``inp.u`` is given.
    """
    data, good = inp.data, inp.good
    fit_filter = opts["fit_filter"]
    if fit_filter is not None and opts["mixing_"] != "post-nonlinear":
        # The post-nonlinear fit filters after its unwarping (methods/linear.py).
        data = fit_filter(bridge_rejected(data, good))
    stats = data if good is None else data[:, good]
    n_sources = _count_sources(opts, data, good, fit_filter)
    if n_sources > inp.n_channels:
        raise ValueError(
            f"n_sources={n_sources} is more than the {inp.n_channels} channels of X. "
            f"Pass n_sources <= {inp.n_channels}, or record more channels."
        )
    scale = stats.std(axis=1)
    # Checked again after the fit filter: a channel of drift alone is flat once filtered.
    check_flat_channels(stats, inp.ch_names, scale)
    uses_u = opts["prior_"] != "standard"
    if inp.u is not None and uses_u:
        _warn_window_unused(opts)
    window = resolve_window_samples(
        opts["window"],
        opts["window_samples"],
        inp.sample_rate,
        inp.n_times,
        n_sources,
        default_u=inp.u is None and uses_u,
    )
    codec = UCodec(window, hop_samples(opts["window_overlap"], inp.sample_rate, window), uses_u)
    # Overlapping windows are laid out one after the other for training (see
    # methods/network.py), so the default u of fit is the window index in that layout.
    u_layout = inp.u is None and codec.hop_samples < codec.window_samples and codec.uses_u
    if u_layout:
        _, codes, _ = overlapping_training_set(
            inp.n_times, codec.window_samples, codec.hop_samples, 1
        )
    else:
        codes = codec.fit_codes(inp.u, inp.n_times)
    if codes is not None and codes.ndim == 1:
        codec.n_segments = _check_segments(codes, n_sources, codec, inp.n_times)
    return Prepared(data, stats, scale, good, codes, u_layout, codec, fit_filter, n_sources)


def _warn_window_unused(opts: dict) -> None:
    """The windows cut the default u only: with u given, a window set is not used."""
    given = {k: opts[k] for k in ("window", "window_samples") if opts.get(k) is not None}
    if opts.get("window_overlap"):
        given["window_overlap"] = opts["window_overlap"]
    if given:
        settings = ", ".join(f"{k}={v!r}" for k, v in given.items())
        warnings.warn(
            f"{settings}: the windows cut the default u (the window index), but u was given, "
            "so they are not used. Pass u=None to fit on windows, or leave them unset.",
            UserWarning,
            stacklevel=6,
        )


def _count_sources(opts: dict, data: np.ndarray, good, fit_filter) -> int:
    """``opts["n_sources"]`` as a count: None or a share of variance counted on the fit band.

    The post-nonlinear fit filters after its unwarping, so its count is taken
    on a filtered copy (one more copy of the recording, for None or a share only).
    """
    n_sources = opts["n_sources"]
    if isinstance(n_sources, numbers.Integral):
        return int(n_sources)
    if fit_filter is not None and opts["mixing_"] == "post-nonlinear":
        data = fit_filter(bridge_rejected(data, good))
    stats = data if good is None else data[:, good]
    return count_components(row_covariance(stats, stats.mean(axis=1, dtype=np.float64)), n_sources)


def hop_samples(window_overlap, sample_rate, window_samples) -> int:
    """Step between window starts, from ``window_overlap`` (seconds)."""
    if window_overlap == 0:
        return window_samples
    if sample_rate is None:
        raise ValueError(
            f"window_overlap={window_overlap} s needs a sample rate, but X is a plain "
            "array. Pass a Recording or an MNE Raw, or window_overlap=0."
        )
    overlap = int(round(window_overlap * sample_rate))
    if overlap >= window_samples:
        raise ValueError(
            f"Invalid value for the 'window_overlap' parameter: it must be shorter than "
            f"the window ({window_samples / sample_rate:g} s), got {window_overlap:g} "
            "s. Pass 0 <= window_overlap < window, e.g. half the window."
        )
    return window_samples - overlap


def _check_segments(codes, n_sources, codec, n_times) -> int:
    n_seg = int(codes.max()) + 1
    if n_seg < 2:
        raise ValueError(
            "u takes a single value, so the sources are not identifiable (the iVAE "
            "needs the source distribution to change with u). Pass a u with at least "
            f"2 values, or a shorter window (window_samples={codec.window_samples}, "
            f"n_times={n_times})."
        )
    # Thm. 1 needs n*k + 1 distinct u for n sources with k = 2 sufficient
    # statistics (mean and variance) each.
    need = 2 * n_sources + 1
    if n_seg < need:
        warnings.warn(
            f"u takes {n_seg} distinct values; identifiability of {n_sources} "
            f"sources needs at least {need} (2 * n_sources + 1, Thm. 1 of "
            "Khemakhem et al. 2020). Use shorter windows or more data.",
            UserWarning,
            stacklevel=5,
        )
    return n_seg


def fit_attributes(st: Standardizer, codec: UCodec, source_mean, history: list) -> dict:
    """The estimator attributes every time-domain fit sets from its standardiser and u."""
    return dict(
        mean_=st.mean,
        whitening_=st.whitening,
        dewhitening_=st.dewhitening,
        rank_=st.rank,
        source_mean_=source_mean,
        history_=history,
        n_steps_run_=history[-1]["step"] if history else 0,
        domain_="time",
        classes_=codec.classes,
        n_u_=codec.n_u,
        n_segments_=codec.n_segments,
        window_samples_=codec.window_samples,
        hop_samples_=codec.hop_samples,
    )


def codec_meta(codec: UCodec, source_mean, history: list) -> dict:
    """The saved metadata of a time-domain fit's u, source mean and history."""
    return dict(
        n_segments_=codec.n_segments,
        n_u_=codec.n_u,
        classes_=None if codec.classes is None else codec.classes.tolist(),
        window_samples_=codec.window_samples,
        hop_samples_=codec.hop_samples,
        source_mean_=np.asarray(source_mean if source_mean is not None else np.zeros(0)).tolist(),
        history_=history,
    )


def codec_from_meta(meta: dict, uses_u: bool) -> UCodec:
    """The :class:`UCodec` that :func:`codec_meta` saved."""
    window = meta["window_samples_"]
    codec = UCodec(window, meta.get("hop_samples_", window), uses_u)
    codec.n_segments = meta["n_segments_"]
    codec.n_u = meta["n_u_"]
    codec.classes = None if meta["classes_"] is None else np.asarray(meta["classes_"])
    return codec
