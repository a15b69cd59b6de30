"""Cut a recording into time windows and build the auxiliary variable u.

The iVAE needs an observed u under which the sources are conditionally
independent and whose changes modulate the source distributions (Khemakhem
et al. 2020, Thm. 1). For a recording, the simplest such u is the index of
the time window a sample falls in: the sources' variances drift over windows
(non-stationarity), which is what makes them identifiable.
"""

from __future__ import annotations

import numpy as np

from ._check import check_int
from .io.raw import UNLABELLED

# Most audio the time-frequency fits use, in seconds: the demixing of a static
# room needs far less than a long file holds; fitting cost and memory grow with it.
TF_MAX_FIT_SECONDS = 60.0
# Blocks the fitting audio is cut into when a file is longer than that
# (spread evenly, so the fit sees the whole file).
FIT_BLOCKS = 6
# Audio separated at a time when streaming (bounded memory), in seconds.
STREAM_CHUNK_SECONDS = 30.0


def _check_window_hop(n_times, window_samples, hop_samples):
    n_times = check_int("n_times", n_times, min_value=1)
    window_samples = check_int("window_samples", window_samples, min_value=1)
    hop_samples = window_samples if hop_samples is None else hop_samples
    hop_samples = check_int("hop_samples", hop_samples, min_value=1)
    if hop_samples > window_samples:
        raise ValueError(
            f"'hop_samples' must be <= window_samples ({window_samples}) so that windows "
            f"cover every sample, got {hop_samples}. Use an overlap of 0 or more."
        )
    if n_times < window_samples:
        raise ValueError(
            f"The recording has {n_times} samples, fewer than one window "
            f"(window_samples={window_samples}). Use a shorter window or a longer recording."
        )
    return n_times, window_samples, hop_samples


def n_windows_for(n_times: int, window_samples: int, hop_samples: int | None = None) -> int:
    """Number of windows of ``window_samples`` starting every ``hop_samples`` that fit.

    Window k starts at ``k * hop_samples``; the last one ends at or before
    ``n_times`` (the rest of the recording joins it, see :func:`window_spans`).

    Examples
    --------
    >>> n_windows_for(10, 4, 2)
    4
    """
    n_times, window_samples, hop_samples = _check_window_hop(n_times, window_samples, hop_samples)
    return (n_times - window_samples) // hop_samples + 1


def window_labels(n_times: int, window_samples: int, hop_samples: int | None = None) -> np.ndarray:
    """One window index per sample.

    Without overlap (``hop_samples`` None or equal to ``window_samples``),
    samples ``[k * window_samples, (k + 1) * window_samples)`` get label k. A
    trailing part shorter than one window joins the last full window, so every
    label covers at least ``window_samples`` samples.

    With overlap (``hop_samples < window_samples``) a sample lies in several
    windows; it gets the window whose centre is nearest (ties to the earlier
    one), which is how a model fitted on overlapping windows labels samples at
    inference. Samples past the last window's centre get the last window.

    Parameters
    ----------
    n_times : int
        Number of samples.
    window_samples : int
        Window length in samples.
    hop_samples : int or None
        Step between window starts, at most ``window_samples``; default
        ``window_samples`` (no overlap).

    Returns
    -------
    u : ndarray of int64, shape (n_times,)

    Examples
    --------
    >>> window_labels(7, 3)
    array([0, 0, 0, 1, 1, 1, 1])
    >>> window_labels(8, 4, 2)
    array([0, 0, 0, 1, 1, 2, 2, 2])
    """
    n_times, window_samples, hop_samples = _check_window_hop(n_times, window_samples, hop_samples)
    n_windows = (n_times - window_samples) // hop_samples + 1
    t = np.arange(n_times)
    if hop_samples == window_samples:
        return np.minimum(t // window_samples, n_windows - 1).astype(np.int64)
    # Nearest centre k * hop + (window - 1) / 2, in integer arithmetic:
    # k = round((t - (window - 1) / 2) / hop), ties rounded down.
    k = -((-(2 * t - (window_samples - 1) - hop_samples)) // (2 * hop_samples))
    return np.clip(k, 0, n_windows - 1).astype(np.int64)


def window_spans(n_times: int, window_samples: int, hop_samples: int | None = None) -> np.ndarray:
    """Start and stop sample of every (possibly overlapping) window used for fitting.

    Window k is ``[k * hop_samples, k * hop_samples + window_samples)``; the
    last one extends to ``n_times`` so that no sample is left out (as in
    :func:`window_labels` without overlap).

    Parameters
    ----------
    n_times, window_samples, hop_samples : int
        As in :func:`window_labels`.

    Returns
    -------
    spans : ndarray of int64, shape (n_windows, 2)
        ``[start, stop)`` of each window.

    Examples
    --------
    >>> window_spans(9, 4, 2).tolist()
    [[0, 4], [2, 6], [4, 9]]
    """
    n_times, window_samples, hop_samples = _check_window_hop(n_times, window_samples, hop_samples)
    n_windows = (n_times - window_samples) // hop_samples + 1
    starts = np.arange(n_windows, dtype=np.int64) * hop_samples
    stops = starts + window_samples
    stops[-1] = n_times
    return np.stack([starts, stops], axis=1)


def overlapping_training_set(
    n_times: int,
    window_samples: int,
    hop_samples: int,
    chunk_samples: int,
    good: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample indices, labels and chunk starts to fit on overlapping windows.

    Each window is laid out on its own, one after the other, so that a sample
    in two windows is seen under both labels; chunks never cross from one
    window into the next, and (with ``good``) never touch a bad sample.

    Parameters
    ----------
    n_times, window_samples, hop_samples : int
        As in :func:`window_spans`.
    chunk_samples : int
        Length of a training chunk.
    good : ndarray of bool, shape (n_times,) or None
        Samples that chunks may use (False under bad annotations); None: all.

    Returns
    -------
    index : ndarray of int64, shape (n_train,)
        Sample of the recording at each position of the training layout
        (``n_train`` is about ``n_times * window_samples / hop_samples``).
    labels : ndarray of int64, shape (n_train,)
        Window index at each position.
    starts : ndarray of int64, shape (n_chunks,)
        Positions where a training chunk may start.
    """
    spans = window_spans(n_times, window_samples, hop_samples)
    chunk_samples = check_int("chunk_samples", chunk_samples, min_value=1)
    index = np.concatenate([np.arange(a, b) for a, b in spans]).astype(np.int64)
    lengths = spans[:, 1] - spans[:, 0]
    labels = np.repeat(np.arange(len(spans), dtype=np.int64), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # A chunk may start at position p when p .. p + chunk - 1 lie in one window
    # and are all good: count bad (or boundary-crossing) positions by a running sum.
    ok = np.ones(index.size, dtype=bool) if good is None else np.asarray(good, bool)[index]
    n_bad = np.concatenate([[0], np.cumsum(~ok)])
    starts = []
    for off, length in zip(offsets, lengths, strict=True):
        if length < chunk_samples:
            continue
        s = np.arange(off, off + length - chunk_samples + 1)
        starts.append(s[n_bad[s + chunk_samples] - n_bad[s] == 0])
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    return index, labels, starts.astype(np.int64)


def make_windows(
    X: np.ndarray, window_samples: int, hop_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``X`` into (possibly overlapping) windows, for training on corpora.

    Parameters
    ----------
    X : ndarray, shape (n_channels, n_times)
    window_samples : int
        Window length in samples.
    hop_samples : int or None
        Step between window starts; default ``window_samples`` (no overlap).

    Returns
    -------
    windows : ndarray, shape (n_windows, n_channels, window_samples)
        A read-only strided view when possible (no copy).
    u : ndarray of int64, shape (n_windows,)
        The window index, the default auxiliary variable.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n_channels, n_times), got {X.shape} instead.")
    window_samples = check_int("window_samples", window_samples, min_value=1)
    hop_samples = window_samples if hop_samples is None else hop_samples
    hop_samples = check_int("hop_samples", hop_samples, min_value=1)
    if X.shape[1] < window_samples:
        raise ValueError(
            f"X has {X.shape[1]} samples, fewer than one window "
            f"(window_samples={window_samples}). Use a shorter window or a longer recording."
        )
    view = np.lib.stride_tricks.sliding_window_view(X, window_samples, axis=1)[:, ::hop_samples]
    windows = view.transpose(1, 0, 2)
    return windows, np.arange(windows.shape[0], dtype=np.int64)


def valid_chunk_starts(good: np.ndarray, chunk_samples: int) -> np.ndarray:
    """Start indices of every chunk of ``chunk_samples`` that holds only good samples.

    Parameters
    ----------
    good : ndarray of bool, shape (n_times,)
    chunk_samples : int

    Returns
    -------
    starts : ndarray of int64, shape (n_valid,)
    """
    # Number of bad samples in [s, s + chunk) for every s, by a running sum.
    n_bad = np.concatenate([[0], np.cumsum(~good)])
    per_chunk = n_bad[chunk_samples:] - n_bad[:-chunk_samples]
    return np.flatnonzero(per_chunk == 0).astype(np.int64)


# Shortest window the default u may cut (samples): a variance from fewer samples
# is mostly noise (relative standard error sqrt(2 / n) = 0.45 at 10).
MIN_AUTO_WINDOW_SAMPLES = 10


def resolve_window_samples(
    window, window_samples, sample_rate, n_times: int, n_sources: int, *, default_u: bool = False
) -> int:
    """Window length in samples: ``window`` (seconds), ``window_samples``, or the default rule.

    The default cuts ``4 (2 n_sources + 1)`` windows of at most 1000 samples:
    Thm. 1 of Khemakhem et al. (2020) needs ``2 n_sources + 1`` distinct u,
    and four times that leaves each segment's variance room to differ.

    Parameters
    ----------
    window : float or None
        Seconds; needs ``sample_rate``.
    window_samples : int or None
        Used when ``window`` is None.
    sample_rate : float or None
    n_times : int
    n_sources : int
    default_u : bool
        The windows are fit's u (u=None, a prior that uses u), so the default
        rule must not cut them below ``MIN_AUTO_WINDOW_SAMPLES``.

    Returns
    -------
    window_samples : int
    """
    if window is None:
        if window_samples is not None:
            return int(window_samples)
        n_windows = 4 * (2 * n_sources + 1)
        length = int(min(1000, max(1, n_times // n_windows)))
        if default_u and length < MIN_AUTO_WINDOW_SAMPLES:
            # Below a few samples a window's variance, what u is meant to
            # expose, is noise, and the fit would still "succeed".
            raise ValueError(
                f"X has {n_times} samples, too few for the default u of {n_windows} "
                f"windows (4 (2 n_sources + 1) for n_sources={n_sources}) of at least "
                f"{MIN_AUTO_WINDOW_SAMPLES} samples each "
                f"({n_windows * MIN_AUTO_WINDOW_SAMPLES} samples). Pass a longer "
                "recording, fewer n_sources, or choose the windows yourself with window= "
                "(seconds) or window_samples=."
            )
        return length
    if sample_rate is None:
        raise ValueError(
            f"window={window} s needs a sample rate, but X is a plain array. Pass a "
            "Recording, or give the window in samples with window_samples=."
        )
    n = int(round(window * sample_rate))
    if n < 1:
        raise ValueError(
            f"window={window} s is shorter than one sample at {sample_rate:g} Hz. Pass "
            f"window >= {1 / sample_rate:.3g} s (windows of about 1-2 s suit EEG), or "
            "window=None for the default."
        )
    return n


class UCodec:
    """u as the model takes it: window index, label codes, or continuous values.

    ``fit_codes`` learns the encoding from fit's u; ``encode`` applies it at
    inference with the errors that say what was fitted. The fitted state
    (``classes``, ``n_u``, ``n_segments``) is what ``IVAESeparator`` exposes
    as ``classes_``, ``n_u_`` and ``n_segments_``.

    Parameters
    ----------
    window_samples, hop_samples : int
        The windows of the default u (the window index).
    uses_u : bool
        False for a prior that ignores u (``prior="standard"``): no codes.
    """

    def __init__(self, window_samples: int, hop_samples: int, uses_u: bool = True):
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.uses_u = uses_u
        self.classes = None
        self.n_u = None
        self.n_segments = None

    def fit_codes(self, u, n_times: int):
        """Codes of fit's u; learns the label classes (``n_segments`` is set by the caller)."""
        if not self.uses_u:
            return None
        if u is None:
            return window_labels(n_times, self.window_samples, self.hop_samples)
        u = np.asarray(u)
        if u.ndim == 1:
            self._check_length(u, n_times)
            _check_finite_labels(u)
            classes, codes = np.unique(u, return_inverse=True)
            self.classes = classes
            return codes.astype(np.int64)
        codes = self._continuous(u, n_times)
        self.n_u = codes.shape[0]
        return codes

    def encode(self, u, n_times: int):
        """Codes of u at inference, from the encoding learnt in fit."""
        if not self.uses_u:
            return None
        if u is None:
            return self._default_codes(n_times)
        u = np.asarray(u)
        if u.ndim == 1:
            self._check_length(u, n_times)
            _check_finite_labels(u)
            return self._label_codes(u)
        codes = self._continuous(u, n_times)
        if self.n_u != codes.shape[0]:
            raise ValueError(
                f"u has {codes.shape[0]} dimensions but the model was fitted with n_u={self.n_u}."
            )
        return codes

    def _default_codes(self, n_times):
        codes = window_labels(n_times, self.window_samples, self.hop_samples)
        if self.n_u is not None:
            raise ValueError(
                "This separator was fitted with a continuous u; pass u of shape "
                f"({self.n_u}, n_times) to transform."
            )
        if self.classes is not None:
            # Window indices would silently stand in for the labels of fit.
            raise ValueError(
                f"This separator was fitted with labels u ({len(self.classes)} values), "
                "so u=None (the window index) does not apply; pass u with one label per "
                "sample, shape (n_times,), from the labels seen in fit."
            )
        if codes.max() >= self.n_segments:
            raise ValueError(
                f"X has {codes.max() + 1} windows of {self.window_samples} samples but the "
                f"model was fitted on {self.n_segments}, so the later windows have no "
                "learnt u. Pass u with labels seen in fit, or fit with encoder_u=False "
                "to separate recordings of any length."
            )
        return codes

    @staticmethod
    def _check_length(u, n_times):
        if u.shape[0] != n_times:
            raise ValueError(
                f"u has {u.shape[0]} labels but X has {n_times} samples; pass one label "
                "per time sample, shape (n_times,)."
            )

    def _label_codes(self, u):
        if self.classes is None and self.n_u is None:
            raise ValueError(
                "This separator was fitted with u=None (the index of windows of "
                f"{self.window_samples} samples), so it takes no labels; pass u=None, or refit "
                "with these labels: fit(X, u)."
            )
        if self.classes is None:
            raise ValueError(
                "This separator was fitted with a continuous u; pass u of shape "
                f"({self.n_u}, n_times), got labels of shape {u.shape}."
            )
        codes = np.searchsorted(self.classes, u)
        codes = np.clip(codes, 0, len(self.classes) - 1)
        unseen = self.classes[codes] != u
        if unseen.any():
            shown = self.classes[:10].tolist()  # with their types: 0 and '0' differ
            new = np.unique(u[unseen]).tolist()
            hint = ""
            if {str(c) for c in new} <= {str(c) for c in self.classes.tolist()}:
                hint = (
                    " They are fit's labels as another type (e.g. text for numbers); pass u "
                    "of the type fit had."
                )
            if UNLABELLED in set(map(str, u[unseen])):
                # u="annotations"/"events" name the samples outside every
                # label seen in fit UNLABELLED; say what that means.
                hint += (
                    f" {UNLABELLED!r} marks samples that no annotation or event seen in "
                    "fit covers (new or missing descriptions, or gaps between them)."
                )
            raise ValueError(
                f"u holds labels not seen in fit: {new[:10]}. "
                f"Allowed labels are those of fit ({len(self.classes)} values: {shown})."
                f"{hint} Label every sample with one of them, or refit on this u."
            )
        return codes.astype(np.int64)

    @staticmethod
    def _continuous(u, n_times):
        if u.ndim != 2:
            raise ValueError(
                f"u must have shape (n_times,) for labels or (n_u, n_times) for a continuous "
                f"variable, got {u.shape}."
            )
        if u.shape[1] != n_times:
            raise ValueError(
                f"u has shape {u.shape} but X has {n_times} samples; a continuous u must "
                "have shape (n_u, n_times)."
            )
        if not np.isfinite(u).all():
            raise ValueError("u contains NaN or Inf values.")
        return u.astype(np.float32)


def _check_finite_labels(u: np.ndarray) -> None:
    """Labels u must all be finite: NaN would become a class of its own."""
    if np.issubdtype(u.dtype, np.number) and not np.isfinite(u).all():
        n_bad = int((~np.isfinite(u)).sum())
        raise ValueError(
            f"u holds {n_bad} NaN or Inf label(s) of {u.size}; every sample needs a real "
            "label. Label those samples (e.g. with the neighbouring block's label), or cut "
            "them out of X and u."
        )


def fit_blocks(n_times: int, sample_rate: float, max_fit_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges to fit on: all of it, or ``FIT_BLOCKS`` blocks spread evenly.

    Returns a list of (start, stop) sample indices whose total length is at
    most ``max_fit_seconds`` (or the whole recording if shorter).
    """
    budget = int(max_fit_seconds * sample_rate)
    if n_times <= budget:
        return [(0, n_times)]
    block = budget // FIT_BLOCKS
    starts = np.linspace(0, n_times - block, FIT_BLOCKS).astype(np.int64)
    return [(int(s), int(s) + block) for s in starts]


def check_fit_blocks(ranges, n_fft: int, max_fit_seconds: float, sample_rate: float) -> None:
    """Refuse a ``max_fit_seconds`` whose blocks (:func:`fit_blocks`) are shorter than a frame.

    Audit: the error blamed the recording ("X has 2666 samples ... Pass a longer
    recording") for blocks that ``max_fit_seconds`` had made short.
    """
    shortest = min(b - a for a, b in ranges)
    if len(ranges) > 1 and shortest < n_fft:
        least = FIT_BLOCKS * n_fft / sample_rate
        raise ValueError(
            f"max_fit_seconds={max_fit_seconds:g} spreads the fit over {len(ranges)} blocks of "
            f"{shortest} samples, shorter than one STFT frame ({n_fft} samples). Pass "
            f"max_fit_seconds >= {least:.3g} in fit_params, or leave it at its default."
        )
