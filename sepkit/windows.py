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


def window_labels(n_times: int, window_samples: int) -> np.ndarray:
    """One window index per sample.

    Samples ``[k * window_samples, (k + 1) * window_samples)`` get label k. A
    trailing part shorter than one window joins the last full window, so every
    label covers at least ``window_samples`` samples.

    Parameters
    ----------
    n_times : int
        Number of samples.
    window_samples : int
        Window length in samples.

    Returns
    -------
    u : ndarray of int64, shape (n_times,)

    Examples
    --------
    >>> window_labels(7, 3)
    array([0, 0, 0, 1, 1, 1, 1])
    """
    n_times = check_int("n_times", n_times, min_value=1)
    window_samples = check_int("window_samples", window_samples, min_value=1)
    if n_times < window_samples:
        raise ValueError(
            f"The recording has {n_times} samples, fewer than one window "
            f"(window_samples={window_samples}). Use a shorter window or a longer recording."
        )
    n_windows = n_times // window_samples
    return np.minimum(np.arange(n_times) // window_samples, n_windows - 1).astype(np.int64)


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
