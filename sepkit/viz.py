"""Figures for separation results (matplotlib, no display needed).

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing opens a window and nothing depends on the backend; save
it with :func:`save_figure` (atomic, refuses to overwrite) or ``fig.savefig``.

- :func:`plot_sources`: each separated source as a waveform and a spectrogram;
- :func:`plot_training_curve`: the -ELBO per sample of ``history_``;
- :func:`plot_correlation_matrix`: |correlation| between true and estimated
  sources, matched (as :func:`sepkit.metrics.mcc` does) and annotated;
- :func:`plot_topographies`: EEG sensor patterns (wraps
  :meth:`IVAESeparator.plot_components`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._check import check_float, check_int

__all__ = [
    "plot_correlation_matrix",
    "plot_sources",
    "plot_topographies",
    "plot_training_curve",
    "save_figure",
]


def _figure(**kw):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(getattr(x, "data", x), dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(
            f"'{name}' must have shape (n_sources, n_times) with n_times >= 2, got {x.shape}."
        )
    return x


def plot_sources(
    sources,
    sample_rate: float | None = None,
    *,
    names=None,
    max_seconds: float | None = 10.0,
    n_fft: int = 512,
):
    """Waveform and spectrogram of every source, one row each.

    Parameters
    ----------
    sources : ndarray, shape (n_sources, n_times), or Recording
        The separated sources (a Recording brings its sample rate and names).
    sample_rate : float or None
        Hz; taken from a Recording when None. Required for arrays.
    names : sequence of str or None
        Row labels; default the Recording's ch_names or ``s1, s2, ...``.
    max_seconds : float or None
        Show at most the first ``max_seconds`` (None: all).
    n_fft : int
        Spectrogram window in samples (shortened for short or slow signals).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    if sample_rate is None:
        sample_rate = getattr(sources, "sample_rate", None)
        if sample_rate is None:
            raise ValueError("plot_sources needs sample_rate= for an array of sources.")
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    if names is None:
        names = getattr(sources, "ch_names", None)
    data = _as_2d("sources", sources)
    n_sources = data.shape[0]
    names = list(names) if names is not None else [f"s{i + 1}" for i in range(n_sources)]
    if len(names) != n_sources:
        raise ValueError(f"'names' has {len(names)} entries for {n_sources} sources.")
    if max_seconds is not None:
        max_seconds = check_float("max_seconds", max_seconds, min_value=0.0, strict_min=True)
        data = data[:, : max(2, int(max_seconds * sample_rate))]
    n_fft = check_int("n_fft", n_fft, min_value=8)
    n_fft = int(min(n_fft, max(8, data.shape[1] // 4)))
    times = np.arange(data.shape[1]) / sample_rate
    fig = _figure(figsize=(11.0, 1.0 + 1.8 * n_sources))
    axes = fig.subplots(n_sources, 2, squeeze=False, width_ratios=[1, 1.3])
    for i, (row, name) in enumerate(zip(data, names, strict=True)):
        ax_w, ax_s = axes[i]
        ax_w.plot(times, row, lw=0.5, color="k")
        ax_w.set_xlim(times[0], times[-1])
        ax_w.set_ylabel(name)
        ax_s.specgram(row, NFFT=n_fft, Fs=sample_rate, noverlap=n_fft // 2, cmap="magma")
        ax_s.set_ylabel("Hz")
        if i == n_sources - 1:
            ax_w.set_xlabel("Time (s)")
            ax_s.set_xlabel("Time (s)")
    axes[0, 0].set_title("Waveform")
    axes[0, 1].set_title("Spectrogram")
    return fig


def plot_training_curve(history, *, title: str | None = None):
    """The training curve of a fitted separator.

    Parameters
    ----------
    history : list of dict or IVAESeparator
        ``history_`` (entries with ``step`` and ``loss``, the -ELBO per
        sample; or ``iter`` and ``loss`` for ``domain="tf"``) or a fitted
        separator.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    history = getattr(history, "history_", history)
    if not isinstance(history, (list, tuple)):
        raise TypeError(
            f"'history' must be a list of dicts (history_) or a fitted separator, got "
            f"{type(history).__name__}."
        )
    # Time-domain fits log "step" (optimiser steps), domain="tf" fits "iter".
    key = "iter" if history and isinstance(history[0], dict) and "iter" in history[0] else "step"
    points = [
        (h[key], h["loss"])
        for h in history
        if isinstance(h, dict) and key in h and np.isfinite(h.get("loss", np.nan))
    ]
    if not points:
        raise ValueError("'history' holds no entries with a finite 'loss'; nothing to plot.")
    steps, loss = np.array(points, dtype=np.float64).T
    fig = _figure(figsize=(6.0, 3.5))
    ax = fig.add_subplot()
    ax.plot(steps, loss, marker="o", ms=3, lw=1.2)
    ax.set_xlabel("Optimiser step" if key == "step" else "Iteration")
    ax.set_ylabel("-ELBO per sample (nats)" if key == "step" else "loss")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def plot_correlation_matrix(S_true, S_est, *, method: str = "pearson", title: str | None = None):
    """|correlation| between true (rows) and estimated (columns) sources.

    Estimates are reordered by the matching that :func:`sepkit.metrics.mcc`
    finds, so a good separation shows a bright diagonal; the MCC is in the
    title.

    Parameters
    ----------
    S_true : ndarray, shape (n_sources, n_times)
    S_est : ndarray, shape (n_estimates, n_times), n_estimates >= n_sources
    method : {"pearson", "spearman"}

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from .metrics import correlation_matrix, mcc

    S_true, S_est = _as_2d("S_true", S_true), _as_2d("S_est", S_est)
    value, perm = mcc(S_true, S_est, method=method, return_permutation=True)
    rest = [j for j in range(S_est.shape[0]) if j not in set(perm.tolist())]
    order = list(perm.tolist()) + rest
    C = np.abs(np.nan_to_num(correlation_matrix(S_true, S_est[order], method=method)))
    fig = _figure(figsize=(1.2 + 0.6 * C.shape[1], 1.0 + 0.6 * C.shape[0]))
    ax = fig.add_subplot()
    im = ax.imshow(C, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            ax.text(j, i, f"{C[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="k" if C[i, j] > 0.6 else "w")  # fmt: skip
    ax.set_xticks(range(C.shape[1]), [str(j) for j in order])
    ax.set_yticks(range(C.shape[0]))
    ax.set_xlabel("Estimated source (matched order)")
    ax.set_ylabel("True source")
    ax.set_title(title or f"|{method} r|, MCC = {value:.3f}")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_topographies(separator, info=None, *, n_cols: int = 5):
    """Scalp maps of an EEG separator's sensor patterns.

    A thin wrapper of :meth:`IVAESeparator.plot_components`; ``info`` (an
    ``mne.Info`` or Raw with a montage) is needed when the separator was not
    fitted on a Raw (e.g. after ``from_pretrained``).
    """
    return separator.plot_components(info=info, n_cols=n_cols)


def save_figure(fig, path, *, overwrite: bool = False, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (or the format of the suffix), atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or path
    overwrite : bool
        Replace an existing file. Default False (FileExistsError).
    dpi : int

    Returns
    -------
    path : Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists. Pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path
