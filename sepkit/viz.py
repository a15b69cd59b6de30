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

The figures of the separator's MNE methods, on arrays (and an ``mne.Info``
for channel positions):

- :func:`plot_topomaps`: scalp maps of sensor patterns
  (:meth:`IVAESeparator.plot_components`);
- :func:`plot_source_properties`: one source's map, spectrum and variance
  per window (:meth:`IVAESeparator.plot_properties`);
- :func:`plot_source_traces`: sources stacked, bad spans shaded
  (:meth:`IVAESeparator.plot_sources`);
- :func:`plot_overlay`: channels before and after cleaning
  (:meth:`IVAESeparator.plot_overlay`);
- :func:`plot_scores`: a bar per source of find_bads_* scores
  (:meth:`IVAESeparator.plot_scores`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._check import check_float, check_int

__all__ = [
    "plot_correlation_matrix",
    "plot_overlay",
    "plot_scores",
    "plot_source_properties",
    "plot_source_traces",
    "plot_sources",
    "plot_topographies",
    "plot_topomaps",
    "plot_training_curve",
    "save_figure",
]


# Excluded components are drawn in this colour, as MNE's ICA.plot_components
# titles and plot_sources traces of ``ica.exclude``.
EXCLUDED_COLOR = "gray"


def _check_exclude(exclude, n: int, what: str) -> set[int]:
    """``exclude`` as a set of row indices below ``n``, or an error naming it."""
    if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__iter__"):
        raise TypeError(f"'exclude' must be a sequence of indices of the {what}, got {exclude!r}.")
    out = set()
    for k in exclude:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"'exclude' must hold integer indices, got {k!r}.")
        if not 0 <= k < n:
            raise ValueError(
                f"'exclude' holds index {int(k)}, but there are {n} {what} (indices 0 to {n - 1})."
            )
        out.add(int(k))
    return out


def _label(name: str, excluded: bool, sep: str = " ") -> str:
    return f"{name}{sep}(excluded)" if excluded else name


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
    exclude=(),
):
    """Waveform and spectrogram of every source, one row each.

    Excluded sources are drawn as MNE's ICA plots draw them: their waveform
    and label in grey, the label saying "(excluded)".

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
    exclude : sequence of int
        Rows removed from the recording (e.g. ``sep.exclude``), shown as such.

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
    excluded = _check_exclude(exclude, n_sources, "sources")
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
        out = i in excluded
        ax_w.plot(times, row, lw=0.5, color=EXCLUDED_COLOR if out else "k")
        ax_w.set_xlim(times[0], times[-1])
        ax_w.set_ylabel(_label(name, out, "\n"), color=EXCLUDED_COLOR if out else "k")
        ax_s.specgram(row, NFFT=n_fft, Fs=sample_rate, noverlap=n_fft // 2,
                      cmap="gray_r" if out else "magma")  # fmt: skip
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
    if len(history) == 1 and isinstance(history[0], dict) and history[0].get("trace"):
        return _plot_lbfgs_trace(history[0], title)
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


def _plot_lbfgs_trace(entry: dict, title):
    """The linear family's fit: its -log-likelihood per L-BFGS iteration."""
    trace = np.asarray(entry["trace"], dtype=np.float64)
    iters = np.asarray(entry.get("trace_iter", np.arange(trace.size)), dtype=np.float64)
    fig = _figure(figsize=(6.0, 3.5))
    ax = fig.add_subplot()
    ax.plot(iters, trace, marker="o" if trace.size < 20 else None, ms=3, lw=1.2)
    ax.set_xlabel("L-BFGS iteration")
    ax.set_ylabel("-log-likelihood per sample (nats)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Linear iVAE: exact maximum likelihood")
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


def plot_topographies(separator, info=None, *, n_cols: int = 5, exclude=None):
    """Scalp maps of an EEG separator's sensor patterns.

    A thin wrapper of :meth:`IVAESeparator.plot_components`; ``info`` (an
    ``mne.Info`` or Raw with a montage) is needed when the separator was not
    fitted on a Raw (e.g. after ``from_pretrained``). The sources in
    ``exclude`` and ``separator.exclude`` are titled "(excluded)" in grey.
    """
    return separator.plot_components(info=info, n_cols=n_cols, exclude=exclude)


# --------------------------------------------------------------------------
# Figures of the separator's MNE methods, on arrays
# --------------------------------------------------------------------------


def _topomap(ax, values, info, cmap, caller: str) -> None:
    """``mne.viz.plot_topomap`` on ``ax``, with a clear error where it cannot interpolate."""
    import mne
    from scipy.spatial import QhullError

    try:
        mne.viz.plot_topomap(values, info, axes=ax, cmap=cmap, show=False)
    except QhullError as err:
        # MNE interpolates over a Delaunay triangulation of the positions
        # projected to 2-D, which needs them spread over an area.
        raise ValueError(
            f"{caller} cannot interpolate a topomap over the positions of the "
            f"fitted EEG channels {info['ch_names'][:12]}: after MNE's projection to 2-D "
            "they lie on one line or circle (Qhull). Topomaps need channels spread "
            "over the scalp; set the montage that matches the cap "
            "(sepkit.io.apply_montage) or plot the patterns of get_components() "
            "another way."
        ) from err


def _rows(name: str, x, shape: str = "(n_rows, n_times)") -> np.ndarray:
    """``x`` as a 2-D array (dtype kept), or an error naming ``name`` and ``shape``."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"'{name}' must have shape {shape}, got {x.shape}.")
    return x


def _check_names(names, n: int, what: str) -> list[str]:
    names = [str(name) for name in names]
    if len(names) != n:
        raise ValueError(f"'names' has {len(names)} entries for {n} {what}.")
    return names


def plot_topomaps(
    patterns,
    info,
    *,
    names=None,
    n_cols: int = 5,
    cmap="RdBu_r",
    caller: str = "plot_topomaps",
    exclude=(),
):
    """Scalp maps of sensor patterns, one axis per map, ``n_cols`` to a row.

    The drawing of :meth:`IVAESeparator.plot_components`.

    Parameters
    ----------
    patterns : ndarray, shape (n_channels, n_maps)
        One column per map, rows in the order of ``info["ch_names"]``.
    info : mne.Info
        The ``n_channels`` EEG channels, with positions (a montage).
    names : sequence of str or None
        Map titles; default ``IVAE000``, ``IVAE001``, ...
    n_cols : int
        Maps per row.
    cmap : str
        Matplotlib colormap.
    caller : str
        Named in the error raised when MNE cannot interpolate the positions.
    exclude : sequence of int
        Maps (column indices) of excluded components: titled "(excluded)",
        in grey, as MNE's ``ICA.plot_components``.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    patterns = _rows("patterns", patterns, "(n_channels, n_maps)")
    if patterns.shape[0] != len(info["ch_names"]):
        raise ValueError(
            f"'patterns' must have shape (n_channels, n_maps) with n_channels = "
            f"{len(info['ch_names'])} (the channels of info), got {patterns.shape}."
        )
    n_maps = patterns.shape[1]
    names = [f"IVAE{k:03d}" for k in range(n_maps)] if names is None else names
    names = _check_names(names, n_maps, "maps")
    excluded = _check_exclude(exclude, n_maps, "maps")
    n_cols = check_int("n_cols", n_cols, min_value=1)
    n_rows = -(-n_maps // n_cols)
    n_cols = min(n_cols, n_maps)
    fig = _figure(figsize=(2.0 * n_cols, 2.0 * n_rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        _topomap(ax, patterns[:, i], info, cmap, caller)
        out = i in excluded
        ax.set_title(_label(name, out), color=EXCLUDED_COLOR if out else "k")
    return fig


def plot_source_properties(
    source,
    pattern,
    info,
    sample_rate: float,
    *,
    window_samples: int,
    fmax: float | None = None,
    title: str | None = None,
    cmap="RdBu_r",
    caller: str = "plot_source_properties",
):
    """One source's sensor pattern, power spectrum and variance per window.

    The drawing of :meth:`IVAESeparator.plot_properties`: a topomap, the
    Welch spectrum (2 s segments, fewer samples for a shorter source) up to
    ``fmax`` and the variance in each window of ``window_samples`` (a
    trailing part shorter than a window is left out), on log scales.

    Parameters
    ----------
    source : ndarray, shape (n_times,)
    pattern : ndarray, shape (n_channels,)
        Its sensor pattern, in the order of ``info["ch_names"]``.
    info : mne.Info
        The ``n_channels`` EEG channels, with positions.
    sample_rate : float
        In Hz.
    window_samples : int
        Length of the windows whose variances are shown.
    fmax : float or None
        Highest frequency shown in Hz; default the Nyquist frequency.
    title : str or None
        The figure's title.
    cmap : str
        Matplotlib colormap of the topomap.
    caller : str
        Named in the error raised when MNE cannot interpolate the positions.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Three axes: topomap, spectrum, variance per window.
    """
    from scipy.signal import welch

    source = np.asarray(source, dtype=np.float64)
    if source.ndim != 1:
        raise ValueError(
            f"'source' must have shape (n_times,), got {source.shape}. Pass one row of the "
            "sources, e.g. S[k]."
        )
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    win = check_int("window_samples", window_samples, min_value=1)
    fmax = sample_rate / 2 if fmax is None else check_float(
        "fmax", fmax, min_value=0.0, strict_min=True
    )  # fmt: skip
    freqs, power = welch(
        source, fs=sample_rate, nperseg=min(len(source), int(round(2 * sample_rate)))
    )
    shown = freqs <= fmax
    n_windows = len(source) // win
    variances = source[: n_windows * win].reshape(n_windows, win).var(axis=1)
    centres = (np.arange(n_windows) + 0.5) * win / sample_rate
    fig = _figure(figsize=(10.0, 3.0))
    top, spec, var = fig.subplots(1, 3, width_ratios=[1.0, 1.4, 1.4])
    _topomap(top, np.asarray(pattern), info, cmap, caller)
    spec.semilogy(freqs[shown], power[shown], color="k", lw=0.8)
    spec.set_xlabel("Frequency (Hz)")
    spec.set_ylabel("Power (a.u./Hz)")
    var.semilogy(centres, variances, color="k", lw=0.8)
    var.set_xlabel("Time (s)")
    var.set_ylabel(f"Variance per {win / sample_rate:.3g} s window")
    if title:
        fig.suptitle(title)
    return fig


def plot_source_traces(
    sources, sample_rate: float, *, names=None, start: float = 0.0, bad_spans=(), exclude=()
):
    """Sources stacked one above the other, each scaled to unit standard deviation.

    The drawing of :meth:`IVAESeparator.plot_sources`.

    Parameters
    ----------
    sources : ndarray, shape (n_sources, n_times)
    sample_rate : float
        In Hz.
    names : sequence of str or None
        Row labels; default ``IVAE000``, ``IVAE001``, ...
    start : float
        Time of the first sample in seconds (the x axis).
    bad_spans : sequence of (float, float)
        (start, stop) in seconds, on the same time axis, shaded red.
    exclude : sequence of int
        Rows of excluded sources: traced and labelled "(excluded)" in grey,
        as MNE's ``ICA.plot_sources`` draws ``ica.exclude``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis; a constant row is shown unscaled.
    """
    data = _rows("sources", sources, "(n_sources, n_times)")
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    names = [f"IVAE{k:03d}" for k in range(len(data))] if names is None else names
    names = _check_names(names, len(data), "sources")
    excluded = _check_exclude(exclude, len(data), "sources")
    scale = data.std(axis=1, keepdims=True)
    data = data / np.where(scale > 0, scale, 1.0)
    times = start + np.arange(data.shape[1]) / sample_rate
    fig = _figure(figsize=(10.0, 1.0 + 0.5 * len(data)))
    ax = fig.add_subplot()
    offsets = -6.0 * np.arange(len(data))
    colors = [EXCLUDED_COLOR if i in excluded else "k" for i in range(len(data))]
    for row, offset, color in zip(data, offsets, colors, strict=True):
        ax.plot(times, row + offset, lw=0.6, color=color)
    for t0, t1 in bad_spans:
        ax.axvspan(t0, t1, color="r", alpha=0.15, lw=0)
    ax.set_yticks(offsets, [_label(n, i in excluded) for i, n in enumerate(names)])
    for tick, color in zip(ax.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    ax.set_xlim(times[0], times[-1])
    ax.set_xlabel("Time (s)")
    return fig


def plot_overlay(
    before, after, sample_rate: float, *, names, start: float = 0.0, eeg=None, title=None
):
    """Channels before (red) and after (black, over it) cleaning, one axis each.

    The drawing of :meth:`IVAESeparator.plot_overlay`.

    Parameters
    ----------
    before, after : ndarray, shape (n_channels, n_times)
        The channels to show, in volts for EEG.
    sample_rate : float
        In Hz.
    names : sequence of str
        The channels' names (y labels).
    start : float
        Time of the first sample in seconds (the x axis).
    eeg : None or sequence of bool, shape (n_channels,)
        Rows shown in microvolts (labelled ``(uV)``); default none.
    title : str or None
        Title of the top axis.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    shape = "(n_channels, n_times)"
    before, after = _rows("before", before, shape), _rows("after", after, shape)
    if before.shape != after.shape:
        raise ValueError(
            f"'before' and 'after' must have the same shape, got {before.shape} and {after.shape}."
        )
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    names = _check_names(names, len(before), "channels")
    eeg = [False] * len(before) if eeg is None else [bool(e) for e in eeg]
    times = start + np.arange(before.shape[1]) / sample_rate
    fig = _figure(figsize=(10.0, 0.6 + 1.2 * len(before)))
    axes = fig.subplots(len(before), 1, sharex=True, squeeze=False)[:, 0]
    for ax, b, a, name, volts in zip(axes, before, after, names, eeg, strict=True):
        scale = 1e6 if volts else 1.0
        ax.plot(times, b * scale, lw=0.7, color="tab:red", label="before")
        ax.plot(times, a * scale, lw=0.7, color="k", label="cleaned")
        ax.set_ylabel(f"{name}\n(uV)" if volts else name)
    if title is not None:
        axes[0].set_title(title)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlim(times[0], times[-1])
    axes[-1].set_xlabel("Time (s)")
    return fig


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
    # The format by the suffix, PNG without one (the temp file's own name would
    # otherwise decide it).
    fmt = path.suffix[1:].lower() or "png"
    with atomic_write(path, suffix=path.suffix) as tmp:
        # "tight": the saved image grows to hold every label (a long axis label of
        # the correlation matrix was cut at the figure's edge).
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
    return path


def plot_scores(
    scores,
    names,
    *,
    exclude=(),
    labels=None,
    title: str | None = None,
    axhline=None,
    figsize=None,
    n_cols: int | None = None,
):
    """A bar per source and a panel per row of ``scores`` (``ICA.plot_scores``' figure).

    Parameters
    ----------
    scores : ndarray, shape (n_sources,) or (n_rows, n_sources)
        E.g. the correlations of ``find_bads_eog`` with each reference.
    names : list of str
        The sources' names, one per column.
    exclude : collection of int
        Sources drawn in red and marked "(excluded)" on the axis.
    labels : None, str or list of str
        One title per panel.
    title : str or None
    axhline : None, float or list of float
        Dashed horizontal lines in every panel (e.g. the threshold).
    figsize : None or (float, float)
        Inches; None sizes the figure to the number of sources and panels.
    n_cols : int or None
        Panels per row; None: one column.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n_rows, n = scores.shape
    names = _check_names(names, n, "sources")
    exclude = _check_exclude(exclude, n, "sources")
    labels = [labels] if isinstance(labels, str) else labels
    if labels is not None and len(labels) != n_rows:
        raise ValueError(
            f"'labels' must hold one title per row of scores ({n_rows}), got {labels!r}."
        )
    lines = [] if axhline is None else np.atleast_1d(np.asarray(axhline, dtype=np.float64))
    n_cols = 1 if n_cols is None else check_int("n_cols", n_cols, min_value=1)
    n_cols = min(n_cols, n_rows)
    n_grid = -(-n_rows // n_cols)
    if figsize is None:
        figsize = (max(4.0, 0.35 * n + 1.5) * n_cols, 2.4 * n_grid)
    fig = _figure(figsize=figsize)
    axes = fig.subplots(n_grid, n_cols, squeeze=False).ravel()
    colors = ["tab:red" if k in exclude else "tab:gray" for k in range(n)]
    for i, ax in enumerate(axes):
        if i >= n_rows:
            ax.set_visible(False)
            continue
        ax.bar(np.arange(n), scores[i], color=colors)
        ax.axhline(0.0, color="black", linewidth=0.5)
        for y in lines:
            ax.axhline(y, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(n), [_label(m, k in exclude, "\n") for k, m in enumerate(names)])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("score")
        if labels is not None:
            ax.set_title(labels[i])
    if title is not None:
        fig.suptitle(title)
    return fig
