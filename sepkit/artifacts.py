"""Artefact scoring of separated sources: stateless functions on arrays.

The scores behind :meth:`IVAESeparator.find_bads_eog` and
:meth:`IVAESeparator.find_bads_ecg`, usable on the sources of any method
(an ``(n_sources, n_times)`` array) without an estimator:

- :func:`correlations`, :func:`reference_correlations`: Pearson correlation
  of every source with every reference channel (EOG, ECG), band-passed;
- :func:`zscore_outliers`, :func:`flag_sources`: which scores stand out,
  by a fixed threshold or by MNE's iterated z-scoring;
- :func:`kuiper_index`, :func:`ctps_scores`: cross-trial phase statistics
  (CTPS, Dammers et al. 2008) around heartbeats;
- :func:`ecg_peaks`, :func:`whole_epoch_peaks`: the heartbeats of an ECG
  channel (MNE's QRS detector) and those whose CTPS epoch is usable;
- :func:`muscle_scores` (with :func:`spectral_slopes` and
  :func:`sphere_projection`): muscle sources by spectrum and pattern
  (Dharmaprani et al. 2016).

MNE and SciPy's signal module are imported inside the functions, so
``import sepkit`` stays fast.

References
----------
Dammers, Schiek, Boers, Silex, Zvyagintsev, Pietrzyk, Mathiak (2008).
Integration of amplitude and phase statistics for complete artifact removal in
independent components of neuromagnetic recordings. IEEE Trans. Biomed. Eng.
55(10), 2353-2362.

Dharmaprani, Nguyen, Lewis, Chapman, Willoughby, Pope (2016). A comparison of
independent component analysis algorithms and measures to discriminate between
EEG and artifact components. Proc. 38th IEEE EMBC, 825-828.

Stephens (1970). Use of the Kolmogorov-Smirnov, Cramer-von Mises and related
statistics without extensive tables. J. R. Stat. Soc. B 32(1), 115-122.
"""

from __future__ import annotations

import numpy as np

from ._check import check_float, check_option
from .io.eeg import check_band
from .windows import valid_chunk_starts

__all__ = [
    "check_references",
    "correlations",
    "ctps_scores",
    "ecg_peaks",
    "flag_sources",
    "kuiper_index",
    "muscle_scores",
    "reference_correlations",
    "sphere_projection",
    "spectral_slopes",
    "whole_epoch_peaks",
    "zscore_outliers",
]

# Half-length in seconds of the CTPS epoch around each heartbeat: -0.5 to 0.5 s
# (MNE's find_bads_ecg epochs) holds the QRS complex and the beat's T wave.
CTPS_HALF_WINDOW = 0.5

# The band-pass of the correlation scores, MNE's for ICA.score_sources and so for
# its find_bads_eog and find_bads_ecg(method="correlation"), so that our scores
# agree with MNE's on the same sources: a 10 s FIR (firwin2, Hann) with 0.5 Hz
# transition bands, applied forwards and backwards (zero phase, the response
# squared). Steeper than filter_data's default, whose transition at 1 Hz is 1 Hz
# wide and lets more of the sub-1 Hz drift into a 1-10 Hz score.
SCORE_FILTER = dict(
    phase="zero-double",
    filter_length="10s",
    fir_window="hann",
    l_trans_bandwidth=0.5,
    h_trans_bandwidth=0.5,
    fir_design="firwin2",
)


# --------------------------------------------------------------------------
# Correlation with reference channels
# --------------------------------------------------------------------------


def correlations(ref: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``ref`` with every row of ``sources``.

    Parameters
    ----------
    ref : ndarray, shape (n_ref, n_times)
        Reference channels (e.g. EOG, ECG).
    sources : ndarray, shape (n_sources, n_times)

    Returns
    -------
    r : ndarray, shape (n_ref, n_sources)
        0 where either row is constant (it correlates with nothing), not NaN.

    Examples
    --------
    >>> import numpy as np
    >>> correlations(np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    array([[-1.,  0.]])
    """
    ref = ref - ref.mean(axis=1, keepdims=True)
    sources = sources - sources.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ref, axis=1)[:, None] * np.linalg.norm(sources, axis=1)[None, :]
    # A constant row correlates with nothing; report 0, not NaN.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ref @ sources.T) / norm, 0.0)


def reference_correlations(
    sources: np.ndarray,
    ref: np.ndarray,
    sample_rate: float,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    good: np.ndarray | None = None,
) -> np.ndarray:
    """Correlations of band-passed sources with band-passed reference channels.

    The scores of ``find_bads_eog`` and of ``find_bads_ecg(method="correlation")``.

    Parameters
    ----------
    sources : ndarray, shape (n_sources, n_times)
    ref : ndarray, shape (n_ref, n_times)
        Reference channels (EOG, ECG) on the same samples.
    sample_rate : float
        In Hz.
    l_freq, h_freq : float or None
        Band-pass edges in Hz; None leaves that side unfiltered. The filter is
        MNE's for ``ICA.score_sources`` (``SCORE_FILTER``: a 10 s firwin2 FIR
        with 0.5 Hz transition bands, applied forwards and backwards), so the
        scores are those of MNE's ``find_bads_eog`` on the same sources.
    good : None or ndarray of bool, shape (n_times,)
        Samples to keep; the others are cut out *before* filtering (MNE's
        ``reject_by_annotation="omit"``), so that an artefact in a bad span
        is not smeared over its neighbours. None keeps every sample.

    Returns
    -------
    r : ndarray, shape (n_ref, n_sources)
    """
    import mne

    sources = np.asarray(sources)
    both = np.concatenate([sources, np.asarray(ref)]).astype(np.float64)
    if good is not None:
        both = both[:, np.asarray(good, dtype=bool)]
    l_freq, h_freq = check_band(l_freq, h_freq, sample_rate)
    if l_freq is not None or h_freq is not None:
        both = mne.filter.filter_data(
            both, sample_rate, l_freq, h_freq, verbose="error", **SCORE_FILTER
        )
    return correlations(both[len(sources) :], both[: len(sources)])


def check_references(ref: np.ndarray, names, what: str, fix: str) -> None:
    """Refuse reference rows that are flat or not finite, naming them.

    A disconnected or zeroed lead correlates with nothing: its scores would
    be 0 (or NaN) for every source, which reads as "no source follows it".

    Parameters
    ----------
    ref : ndarray, shape (n_ref, n_times)
        The reference channels on the samples scored.
    names : list of str, length n_ref
    what : str
        The method, to start the message (e.g. ``"find_bads_eog"``).
    fix : str
        The advice that ends the message.
    """
    ref = np.asarray(ref, dtype=np.float64)
    bad = [
        name
        for name, row in zip(names, ref, strict=True)
        if not np.all(np.isfinite(row)) or np.ptp(row) == 0.0
    ]
    if bad:
        raise ValueError(
            f"{what}: the reference channel(s) {bad} are flat or hold NaN/Inf over the "
            f"samples scored, so no source can follow them (a disconnected lead?). {fix}"
        )


def zscore_outliers(scores: np.ndarray, threshold: float, n_rounds: int = 2) -> np.ndarray:
    """Which ``scores`` lie beyond ``threshold`` SDs, by iterated z-scoring.

    Each round z-scores the scores not yet flagged (mean and population SD of
    those alone) and flags the ones whose absolute z-score exceeds
    ``threshold``; it stops when a round flags nothing. This is the rule of
    MNE's ``find_bads_eog(measure="zscore")``.

    Parameters
    ----------
    scores : ndarray, shape (n_sources,)
    threshold : float
        In standard deviations.
    n_rounds : int
        Most rounds (MNE's 2).

    Returns
    -------
    flagged : ndarray of bool, shape (n_sources,)

    Examples
    --------
    >>> import numpy as np
    >>> zscore_outliers(np.array([0.0, 0.1, -0.1, 0.05, -0.05, 0.9]), 2.0)
    array([False, False, False, False, False,  True])
    """
    flagged = np.zeros(len(scores), dtype=bool)
    for _ in range(n_rounds):
        rest = scores[~flagged]
        sd = rest.std()
        if rest.size < 2 or sd == 0:
            break
        new = ~flagged & (np.abs(scores - rest.mean()) > threshold * sd)
        if not new.any():
            break
        flagged |= new
    return flagged


def flag_sources(scores: np.ndarray, threshold: float, measure: str = "correlation") -> list[int]:
    """The sources that correlation ``scores`` flag, highest absolute score first.

    Parameters
    ----------
    scores : ndarray, shape (n_ref, n_sources)
        Correlations with each reference channel (:func:`reference_correlations`).
    threshold : float
        ``measure="correlation"``: the absolute correlation with some
        reference that flags a source. ``measure="zscore"``: the z-score
        beyond which a source's correlation with some reference is an outlier
        (:func:`zscore_outliers`, per reference).
    measure : {"correlation", "zscore"}

    Returns
    -------
    indices : list of int

    Examples
    --------
    >>> import numpy as np
    >>> flag_sources(np.array([[0.1, -0.9, 0.6]]), 0.5)
    [1, 2]
    """
    check_option("measure", measure, ("correlation", "zscore"))
    scores = np.atleast_2d(scores)
    best = np.abs(scores).max(axis=0)
    if measure == "correlation":
        flagged = best >= threshold
    else:
        flagged = np.any([zscore_outliers(row, threshold) for row in scores], axis=0)
    order = np.argsort(-best, kind="stable")
    return [int(k) for k in order if flagged[k]]


# --------------------------------------------------------------------------
# Cross-trial phase statistics (CTPS)
# --------------------------------------------------------------------------


def kuiper_index(samples: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised Kuiper index of ``samples`` in [0, 1) against the uniform law.

    Kuiper's statistic V = max_i (i / n - x_(i)) + max_i (x_(i) - (i - 1) / n)
    of the n sorted samples, its p-value from the asymptotic series
    Q(l) = 2 sum_j (4 j^2 l^2 - 1) exp(-2 j^2 l^2) with
    l = (sqrt(n) + 0.155 + 0.24 / sqrt(n)) V (Stephens 1970), and the index
    -ln(Q) / (2 n), clipped to [0, 1]: 0 for samples spread evenly (taken as
    0 where l < 0.4, below which the series is 1 to many digits), towards 1 for
    samples that all share one value. The score of CTPS (Dammers et al. 2008).

    Parameters
    ----------
    samples : ndarray
        Values in [0, 1) (e.g. phases as fractions of a cycle).
    axis : int
        The axis holding the n samples of each test.

    Returns
    -------
    ndarray
        ``samples``' shape without ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> float(kuiper_index(np.linspace(0.0, 1.0, 50, endpoint=False)))  # evenly spread
    0.0
    """
    from scipy.special import logsumexp

    x = np.sort(np.moveaxis(np.asarray(samples, dtype=np.float64), axis, 0), axis=0)
    n = x.shape[0]
    i = np.arange(1, n + 1, dtype=np.float64).reshape((n,) + (1,) * (x.ndim - 1))
    v = (i / n - x).max(axis=0) + (x - (i - 1) / n).max(axis=0)
    lam = (np.sqrt(n) + 0.155 + 0.24 / np.sqrt(n)) * v
    j2 = (np.arange(1, 101, dtype=np.float64) ** 2).reshape((100,) + (1,) * v.ndim)
    # log Q as one signed log-sum-exp: the terms' signs alternate near l = 0.4.
    log_q = logsumexp(-2.0 * j2 * lam**2, b=2.0 * (4.0 * j2 * lam**2 - 1.0), axis=0)
    return np.where(lam < 0.4, 0.0, np.clip(-log_q / (2.0 * n), 0.0, 1.0))


def _half_samples(half_window: float, sample_rate: float) -> int:
    """Samples on either side of a peak in its CTPS epoch (one rounding rule for all)."""
    return int(round(half_window * sample_rate))


def ecg_peaks(
    raw,
    ch_name: str,
    *,
    l_freq: float = 5.0,
    h_freq: float = 35.0,
    reject_by_annotation: bool = True,
) -> np.ndarray:
    """Heartbeats that MNE's QRS detector finds in the ECG channel ``ch_name``.

    Parameters
    ----------
    raw : mne.io.Raw
    ch_name : str
        The channel that records the heart.
    l_freq, h_freq : float
        The detector's band-pass in Hz (``find_ecg_events``' defaults;
        ``find_bads_ecg`` passes its own 8-16 Hz, as MNE's does).
    reject_by_annotation : bool
        Passed to ``mne.preprocessing.find_ecg_events``.

    Returns
    -------
    peaks : ndarray of int, shape (n_peaks,)
        Sample indices counted from the first sample of ``raw`` (not from
        ``first_samp``); empty when the detector finds none or fails (it does
        on recordings too short for its filters).
    """
    import mne

    try:
        events, _, _ = mne.preprocessing.find_ecg_events(
            raw,
            ch_name=ch_name,
            l_freq=l_freq,
            h_freq=h_freq,
            reject_by_annotation=reject_by_annotation,
            verbose="error",
        )
    except (ValueError, IndexError):
        # MNE's QRS detector fails on recordings too short for its filters.
        events = np.zeros((0, 3), dtype=int)
    return events[:, 0] - raw.first_samp


def whole_epoch_peaks(
    peaks: np.ndarray,
    good: np.ndarray,
    sample_rate: float,
    *,
    half_window: float = CTPS_HALF_WINDOW,
) -> np.ndarray:
    """The ``peaks`` whose epoch lies inside the recording and holds only good samples.

    Parameters
    ----------
    peaks : ndarray of int, shape (n_peaks,)
        Sample indices (e.g. from :func:`ecg_peaks`).
    good : ndarray of bool, shape (n_times,)
        False on samples to avoid (e.g. ``~bad_annotation_mask(raw)``).
    sample_rate : float
        In Hz.
    half_window : float
        The epoch runs from ``-half_window`` to ``half_window`` seconds
        around each peak, both ends included.

    Returns
    -------
    peaks : ndarray of int, shape (n_kept,)
        In their input order.
    """
    half = _half_samples(half_window, sample_rate)
    peaks = np.asarray(peaks)
    return peaks[np.isin(peaks - half, valid_chunk_starts(np.asarray(good, bool), 2 * half + 1))]


def ctps_scores(
    sources: np.ndarray,
    peaks: np.ndarray,
    sample_rate: float,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    half_window: float = CTPS_HALF_WINDOW,
) -> np.ndarray:
    """Cross-trial phase statistics of each source around ``peaks``.

    Each source, band-pass filtered when ``l_freq`` or ``h_freq`` is given
    (Dammers et al. filter to the QRS complex's band; MNE's
    ``ICA.find_bads_ecg`` and so ``IVAESeparator.find_bads_ecg`` score the
    sources unfiltered, the default here), is cut into epochs from
    ``-half_window`` to ``half_window`` seconds around the peaks; at every
    latency, Kuiper's test asks whether
    the source's phase (from the Hilbert transform of each epoch) is uniform
    across the peaks. The score is the largest normalised Kuiper index
    (:func:`kuiper_index`) over the latencies: near 1 for a source that is
    phase-locked to the peaks, whatever its amplitude; near 0 for one that
    is not. As ``mne.preprocessing.ctps_.ctps`` on the same epochs.

    Parameters
    ----------
    sources : ndarray, shape (n_sources, n_times)
    peaks : ndarray of int, shape (n_peaks,)
        Sample indices of the events (heartbeats), n_peaks >= 2, each with a
        whole epoch inside the recording (:func:`whole_epoch_peaks`).
    sample_rate : float
        In Hz.
    l_freq, h_freq : float or None
        Band-pass edges in Hz (zero-phase FIR, ``mne.filter.filter_data``,
        over the whole recording before epoching); None leaves that side
        unfiltered.
    half_window : float
        Half-length of the epochs in seconds.

    Returns
    -------
    scores : ndarray, shape (n_sources,)
        In [0, 1].

    References
    ----------
    Dammers et al. (2008), IEEE Trans. Biomed. Eng. 55(10), 2353-2362.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(640)
    >>> locked = np.cos(2 * np.pi * t / 13)[None]  # period 13 samples
    >>> peaks = 13 * np.arange(3, 12)  # every peak at the same phase
    >>> bool(ctps_scores(locked, peaks, 64.0)[0] > 0.9)
    True
    """
    from scipy.signal import hilbert

    sources = np.asarray(sources, dtype=np.float64)
    if sources.ndim != 2:
        raise ValueError(
            f"'sources' must have shape (n_sources, n_times), got {sources.shape}. "
            "Use sources[None] for one source."
        )
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    half_window = check_float("half_window", half_window, min_value=0.0, strict_min=True)
    half = _half_samples(half_window, sample_rate)
    peaks = _check_peaks(peaks, half, sources.shape[1])
    l_freq, h_freq = check_band(l_freq, h_freq, sample_rate)
    if l_freq is not None or h_freq is not None:
        import mne

        sources = mne.filter.filter_data(sources, sample_rate, l_freq, h_freq, verbose="error")
    epochs = sources[:, peaks[:, None] + np.arange(-half, half + 1)]  # (n_src, n_ep, n_lat)
    # Phase per epoch as a fraction of the cycle, in [0, 1].
    phase = (np.angle(hilbert(epochs, axis=-1)) + np.pi) / (2 * np.pi)
    return kuiper_index(phase, axis=1).max(axis=-1)


def _check_peaks(peaks, half: int, n_times: int) -> np.ndarray:
    """``peaks`` as a 1-D int array with whole epochs of ``half`` samples a side."""
    peaks = np.asarray(peaks)
    if peaks.ndim != 1 or not (peaks.size == 0 or np.issubdtype(peaks.dtype, np.integer)):
        raise ValueError(
            f"'peaks' must be a 1-D array of sample indices (int), got shape {peaks.shape} "
            f"of {peaks.dtype}."
        )
    if len(peaks) < 2:
        raise ValueError(f"CTPS needs at least 2 peaks to compare phases across, got {len(peaks)}.")
    outside = peaks[(peaks < half) | (peaks + half >= n_times)]
    if outside.size:
        raise ValueError(
            f"'peaks' {outside[:5].tolist()} lie less than {half} samples (the half "
            f"window) from an end of the {n_times} samples; keep whole epochs only, e.g. "
            "with whole_epoch_peaks."
        )
    return peaks.astype(np.int64)


# --------------------------------------------------------------------------
# Muscle components (Dharmaprani et al. 2016)
# --------------------------------------------------------------------------

# The three criteria as logistic scores, each 0.5 at its boundary between muscle
# and other components (MNE's ICA.find_bads_muscle uses the same constants):
# the log-log slope of the spectrum, about 0.15 for muscle and negative otherwise
# (0.5 at -0.5, scale 0.25); the pattern's mean distance from the centre of the
# head, about 65 % of the farthest electrode's for a typical head (scale 0.1);
# the smoothness of the pattern, about 150 for muscle and 450 otherwise (0.5 at
# 300, scale 100).
MUSCLE_SLOPE = (-0.5, 0.25)
MUSCLE_FOCUS = (0.65, 0.1)
MUSCLE_SMOOTHNESS = (300.0, 100.0)


def _logistic(x, centre: float, scale: float):
    return 1.0 / (1.0 + np.exp(-(np.asarray(x, np.float64) - centre) / scale))


def spectral_slopes(psd: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Least-squares slope of log10 power against log10 frequency, per row of ``psd``.

    psd : (n_sources, n_freqs), freqs : (n_freqs,) > 0 -> slopes (n_sources,).
    """
    x = np.log10(np.asarray(freqs, np.float64))
    y = np.log10(np.asarray(psd, np.float64))
    x = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ x / (x @ x)


def sphere_projection(locs: np.ndarray, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Electrode positions on the plane of a topographic map (azimuthal equidistant).

    Each position, taken from ``origin``, goes to the point in the direction
    of its azimuth at its angle from the vertical (z) axis times its distance
    from the origin over pi / 2 (the equator of a sphere through it lands at
    its radius): distances from the vertex on the scalp become distances on
    the map, as in MNE's topomaps (``mne.viz.plot_topomap``).

    locs : (n_channels, 3), metres -> (n_channels, 2), metres from ``origin``.
    """
    rel = np.asarray(locs, np.float64) - np.asarray(origin, np.float64)[:3]
    r = np.linalg.norm(rel, axis=1)
    polar = np.arccos(np.clip(rel[:, 2] / np.where(r > 0, r, 1.0), -1.0, 1.0))
    azimuth = np.arctan2(rel[:, 1], rel[:, 0])
    radius = polar * r / (np.pi / 2)
    return radius[:, None] * np.column_stack([np.cos(azimuth), np.sin(azimuth)])


def muscle_scores(
    slopes: np.ndarray, patterns: np.ndarray | None = None, pos: np.ndarray | None = None
) -> np.ndarray:
    """How much each source looks like a muscle artefact, in [0, 1] per criterion used.

    Dharmaprani et al. (2016), from recordings of paralysed subjects: a muscle
    source has (1) a spectrum rising from 7 to 45-75 Hz, (2) its pattern at
    the edge of the head, (3) a single focus, so a rough pattern. Each
    criterion is a logistic score (``MUSCLE_SLOPE``, ``MUSCLE_FOCUS``,
    ``MUSCLE_SMOOTHNESS``); the result is their product, so compare it with a
    threshold to the power of the number of criteria. Without positions only
    (1) is used.

    Parameters
    ----------
    slopes : ndarray, shape (n_sources,)
        :func:`spectral_slopes` of the sources' spectra.
    patterns : ndarray, shape (n_channels, n_sources), or None
        The sources' sensor patterns (``get_components``).
    pos : ndarray, shape (n_channels, 2), or None
        Electrode positions on the map (:func:`sphere_projection`).

    Returns
    -------
    scores : ndarray, shape (n_sources,)
    """
    score = _logistic(slopes, *MUSCLE_SLOPE)
    if patterns is None or pos is None:
        return score
    pos = np.asarray(pos, np.float64)
    pos = pos - pos.mean(axis=0)
    # (2) the mean distance from the centre, weighted by each pattern's |values|
    # scaled to a peak of 1 (the electrodes' distances scaled to a farthest of 1).
    dist = np.linalg.norm(pos, axis=1)
    weights = np.abs(patterns) / np.abs(patterns).max(axis=0)
    score = score * _logistic((dist / dist.max()) @ weights, *MUSCLE_FOCUS)
    # (3) smoothness: near electrodes (closeness 1 - d / d_max) whose values differ
    # (|difference| over its largest) add up; a rough, focal pattern scores low.
    between = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    closeness = 1.0 - between / between.max()
    smooth = np.empty(patterns.shape[1])
    for k, p in enumerate(np.asarray(patterns, np.float64).T):
        diff = np.abs(p[:, None] - p[None])
        smooth[k] = (closeness * diff).sum() / max(diff.max(), 1e-300)
    return score * (1.0 - _logistic(smooth, *MUSCLE_SMOOTHNESS))
