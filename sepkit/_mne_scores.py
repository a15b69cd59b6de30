"""More of ``mne.preprocessing.ICA``'s methods for :class:`~sepkit.IVAESeparator`.

MNE's ICA tutorials score components with ``find_bads_muscle``,
``score_sources`` and ``get_explained_variance_ratio``, and show the scores
with ``plot_scores``; these are the separator's, with MNE's arguments and
meanings, computed from the separator's own sources and patterns, so they
work for every family (not only those :meth:`to_mne_ica` can export). The
arithmetic lives in :mod:`sepkit.artifacts` and :mod:`sepkit.viz`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from numbers import Integral

import numpy as np

from . import viz
from ._check import check_float, check_option
from ._mne_mixin import _check_raw_span, _continuous_raw, _good_samples, _shown
from .artifacts import (
    SCORE_FILTER,
    check_references,
    correlations,
    muscle_scores,
    spectral_slopes,
    sphere_projection,
)
from .io.eeg import check_band
from .io.raw import is_epochs_or_evoked


class ScoresMixin:
    """``find_bads_muscle``, ``score_sources``, ``get_explained_variance_ratio``,
    ``plot_scores``, ``copy`` and ``get_channel_types``, as MNE's ICA has them.

    The host class provides ``get_sources``, ``inverse_transform``,
    ``get_components``, ``_check_fitted``, ``_check_exclude``, ``n_sources_``,
    ``ch_names_`` and ``exclude``.
    """

    def find_bads_muscle(
        self,
        inst,
        threshold: float = 0.5,
        *,
        start: float | None = None,
        stop: float | None = None,
        l_freq: float = 7.0,
        h_freq: float = 45.0,
        sphere=None,
        u=None,
    ):
        """Find sources of muscle activity, as ``ICA.find_bads_muscle``.

        Three criteria of Dharmaprani et al. (2016), each a score in [0, 1]
        (:func:`sepkit.artifacts.muscle_scores`): a spectrum that rises with
        frequency from ``l_freq`` to ``h_freq`` (log-log slope), a pattern at
        the edge of the head, and a focal (rough) pattern. Without sensor
        positions only the first is used, with a RuntimeWarning.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the fitted channels (Epochs: end to end).
        threshold : float
            A source is flagged when the product of its scores exceeds
            ``threshold`` to the power of the number of criteria used (3, or
            1 without positions); 0.5 flags sources past the middle of every
            criterion, as MNE's default.
        start, stop : float or None
            Raw only: seconds of ``inst`` to score (as :meth:`get_sources`).
        l_freq, h_freq : float
            Band of the spectral slope, in Hz (Welch's method,
            ``Raw.compute_psd``).
        sphere : None, "auto" or sequence of float
            The head's centre for the map of the electrodes: None the origin
            of the head frame (MNE's default), "auto" a sphere fitted to the
            digitised points (``mne.bem.fit_sphere_to_headshape``), or
            (x, y, z[, radius]) in metres.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        indices : list of int
            Flagged sources, highest score first.
        scores : ndarray, shape (n_sources,)
        """
        raw = _continuous_raw(inst, "find_bads_muscle")
        self._check_fitted()
        _check_raw_span(inst, start, stop, "score")
        threshold = check_float("threshold", threshold, min_value=0.0, strict_min=True)
        l_freq, h_freq = _check_slope_band(l_freq, h_freq, raw.info["sfreq"])
        sources = self.get_sources(raw, start=start, stop=stop, u=u)
        psd, freqs = sources.compute_psd(
            fmin=l_freq, fmax=h_freq, picks="misc", verbose=False
        ).get_data(picks="misc", return_freqs=True)
        slopes = spectral_slopes(psd, freqs)
        locs = _fitted_locations(raw, self.ch_names_)
        if locs is None:
            warnings.warn(
                "No sensor positions in the recording: the muscle scores use the spectral "
                "slope alone. Set a montage (raw.set_montage('standard_1020')) for the "
                "pattern criteria.",
                RuntimeWarning,
                stacklevel=2,
            )
            scores, n_criteria = muscle_scores(slopes), 1
        else:
            pos = sphere_projection(locs, _sphere_origin(sphere, raw.info))
            scores, n_criteria = muscle_scores(slopes, self.get_components(), pos), 3
        order = np.argsort(-scores, kind="stable")
        return [int(k) for k in order if scores[k] > threshold**n_criteria], scores

    def score_sources(
        self,
        inst,
        target=None,
        score_func="pearsonr",
        start: float | None = None,
        stop: float | None = None,
        l_freq: float | None = None,
        h_freq: float | None = None,
        reject_by_annotation: bool = True,
        *,
        u=None,
    ) -> np.ndarray:
        """Score every source against a target channel, or alone, as ``ICA.score_sources``.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the fitted channels (Epochs: end to end).
        target : None, str or ndarray
            A channel of ``inst`` (e.g. "EOG061"), or an array of one value
            per sample of the span scored; None scores each source alone
            (``score_func`` then takes one argument, e.g. "kurtosis").
        score_func : str or callable
            "pearsonr" (the correlation), the name of another function of
            ``scipy.stats`` (e.g. "spearmanr", "kurtosis", "skew"), or a
            callable ``f(source, target)`` (``f(source)`` without a target)
            that returns a number, or a result whose first item is one.
        start, stop : float or None
            Raw only: seconds of ``inst`` to score (as :meth:`get_sources`).
        l_freq, h_freq : float or None
            Band-pass edges in Hz for sources and target; None leaves that
            side unfiltered.
        reject_by_annotation : bool
            Leave samples under bad annotations out (before filtering).
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        scores : ndarray, shape (n_sources,)
        """
        raw = _continuous_raw(inst, "score_sources")
        self._check_fitted()
        _check_raw_span(inst, start, stop, "score")
        check_option("reject_by_annotation", reject_by_annotation, (True, False))
        func = _score_function(score_func, target is not None)
        sfreq = float(raw.info["sfreq"])
        _check_both_edges(l_freq, h_freq, sfreq)
        sources_raw = self.get_sources(raw, start=start, stop=stop, u=u)
        rows = sources_raw.get_data()
        if target is not None:
            rows = np.vstack([rows, _target_row(raw, target, sources_raw)])
        # Bad spans are cut out before filtering (MNE's "omit").
        good = _good_samples(sources_raw, reject_by_annotation)
        if target is not None:  # a flat target would score 0 for every source
            name = target if isinstance(target, str) else "target"
            check_references(rows[-1:, good], [name], "score_sources", _TARGET_FIX)
        rows = _band(rows[:, good].astype(np.float64), sfreq, l_freq, h_freq)
        sources, args = rows[: self.n_sources_], [] if target is None else [rows[-1]]
        if func is None:  # Pearson's r: one product for every source
            return correlations(rows[-1:], sources)[0]
        return np.array([_number(func(row, *args)) for row in sources])

    def get_explained_variance_ratio(self, inst, *, components=None, ch_type=None, u=None):
        """The share of the variance of ``inst`` that ``components`` explain, per channel type.

        As ``ICA.get_explained_variance_ratio`` (EEGLAB's pvaf): the data
        rebuilt from those sources alone (:meth:`inverse_transform` of the
        sources with the others set to zero) are subtracted from the data,
        and the ratio is 1 - (variance of the difference) / (variance of the
        data), each variance taken across the channels at every sample and
        averaged over the samples (for Epochs, over every sample of every
        epoch, where MNE 1.13 takes the variance across the epochs instead;
        for a Raw and an Evoked the two agree). Components need not be orthogonal, so the shares of single
        sources need not add up to the share of all, and one can be negative.

        Parameters
        ----------
        inst : mne.io.Raw, mne.Epochs or mne.Evoked
            Uncleaned data with the fitted channels.
        components : None, int or list of int
            The sources, taken together; None: all of them.
        ch_type : None, str or list of str
            Channel types among the fitted channels; None: each of them.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        ratios : dict of str to float
            Channel type to share.
        """
        self._check_fitted()
        if components is None:
            components = list(range(self.n_sources_))
        elif isinstance(components, Integral) and not isinstance(components, bool):
            components = [components]
        keep = self._check_exclude(components, "components")
        if not keep:
            raise ValueError(
                "'components' is empty: no source explains any variance. Pass the sources "
                "to take together, e.g. components=[0, 3], or None for all of them."
            )
        sources = self.get_sources(inst, u=u)
        dropped = [name for k, name in enumerate(sources.ch_names) if k not in keep]
        if dropped:
            sources.apply_function(_zeros, picks=dropped, channel_wise=False)
        rebuilt = self.inverse_transform(
            sources, u if is_epochs_or_evoked(inst) else self._raw_u(inst, u)
        )
        types = _channel_types(inst, rebuilt.ch_names, ch_type)
        return {
            kind: _explained(inst.get_data(picks=names), rebuilt.get_data(picks=names))
            for kind, names in types.items()
        }

    def plot_scores(
        self,
        scores,
        exclude=None,
        *,
        labels=None,
        axhline=None,
        title=None,
        figsize=None,
        n_cols=None,
        show=False,
    ):
        """A bar per source of ``scores`` (find_bads_*), as ``ICA.plot_scores``.

        Parameters
        ----------
        scores : ndarray, shape (n_sources,) or (n_targets, n_sources)
            One panel per row.
        exclude : None or list of int
            Sources drawn in red; None: ``sep.exclude``.
        labels : None, str or list of str
            The panels' titles (e.g. the reference channels' names).
        axhline : None, float or list of float
            Dashed horizontal lines (e.g. the threshold of find_bads_*).
        title : str or None
        figsize : None or (float, float)
            Inches; None sizes the figure to the sources and panels.
        n_cols : int or None
            Panels per row; None: one column.
        show : bool
            Call ``plt.show()``.

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        self._check_fitted()
        exclude = self._check_exclude(self.exclude if exclude is None else exclude)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[-1:] != (self.n_sources_,) or scores.ndim > 2:
            raise ValueError(
                f"'scores' must have shape (n_sources,) or (n_targets, n_sources) with "
                f"n_sources={self.n_sources_}, got {scores.shape}. Pass the scores of "
                "find_bads_* or score_sources."
            )
        names = [f"IVAE{k:03d}" for k in range(self.n_sources_)]
        fig = viz.plot_scores(
            scores, names, exclude=exclude, labels=labels, title=title, axhline=axhline,
            figsize=figsize, n_cols=n_cols,
        )  # fmt: skip
        return _shown(fig, show)

    def copy(self):
        """A deep copy of the separator (``ICA.copy``)."""
        return copy.deepcopy(self)

    def get_channel_types(self) -> list[str]:
        """The types of the fitted channels ("eeg", ...), as ``ICA.get_channel_types``.

        Known for a fit on an MNE Raw; other fits raise.
        """
        self._check_fitted()
        info = getattr(self, "info_", None)
        if info is None:
            raise ValueError(
                "get_channel_types needs the channel types of the fit, known after fitting an "
                "MNE Raw (or Epochs); this separator was fitted on an array or a Recording, "
                "or loaded. Use raw.get_channel_types(picks=sep.ch_names_)."
            )
        return list(info.get_channel_types())


def _check_slope_band(l_freq, h_freq, sfreq: float) -> tuple[float, float]:
    """``l_freq`` < ``h_freq`` <= Nyquist, both given (a slope needs both ends)."""
    for name, value in (("l_freq", l_freq), ("h_freq", h_freq)):
        check_float(name, value, min_value=0.0, strict_min=True)
    return check_band(float(l_freq), float(h_freq), float(sfreq))


def _fitted_locations(raw, names) -> np.ndarray | None:
    """(n_channels, 3) positions of ``names`` in ``raw``, or None where any is missing."""
    if not names:  # fitted on an array: the channels have no names to look up
        return None
    locs = np.array([raw.info["chs"][raw.ch_names.index(n)]["loc"][:3] for n in names])
    if not np.isfinite(locs).all() or (np.abs(locs).sum(axis=1) == 0).any():
        return None
    return locs


def _sphere_origin(sphere, info) -> np.ndarray:
    """The centre of the head for the electrode map (see ``find_bads_muscle``'s ``sphere``)."""
    if sphere is None:
        return np.zeros(3)
    if isinstance(sphere, str):
        check_option("sphere", sphere, ("auto",))
        import mne

        _, origin, _ = mne.bem.fit_sphere_to_headshape(info, units="m", verbose=False)
        return np.asarray(origin, np.float64)
    values = np.asarray(sphere, dtype=np.float64).ravel()
    if values.size not in (3, 4) or not np.isfinite(values).all():
        raise ValueError(
            f"'sphere' must be None, 'auto' or (x, y, z[, radius]) in metres, got {sphere!r}. "
            "Pass e.g. (0.0, 0.0, 0.04, 0.09)."
        )
    return values[:3]


def _score_function(score_func, with_target: bool) -> Callable | None:
    """``score_func`` as a callable; None for "pearsonr" with a target (the shared path)."""
    if callable(score_func):
        return score_func
    if not isinstance(score_func, str):
        raise TypeError(
            f"'score_func' must be a name such as 'pearsonr' or a callable, got {score_func!r}."
        )
    if score_func == "pearsonr" and with_target:
        return None
    import scipy.stats

    func = getattr(scipy.stats, score_func, None)
    if not callable(func) or score_func.startswith("_"):
        raise ValueError(
            f"score_func={score_func!r} is not a function of scipy.stats. Pass 'pearsonr', "
            "another scipy.stats function such as 'spearmanr' or 'kurtosis', or a callable."
        )
    return func


_TARGET_FIX = "Pass a target channel or array that records the artefact over the span scored."


def _target_row(raw, target, sources_raw) -> np.ndarray:
    """The target of ``score_sources`` on the samples of ``sources_raw``, shape (1, n_times)."""
    n_times = sources_raw.n_times
    if isinstance(target, str):
        if target not in raw.ch_names:
            raise ValueError(
                f"target={target!r} is not a channel of the recording. Pass one of its "
                f"channels (e.g. {raw.ch_names[0]!r}) or an array of {n_times} values."
            )
        start = sources_raw.first_samp - raw.first_samp
        return raw.get_data(picks=[target], start=start, stop=start + n_times)
    row = np.asarray(target, dtype=np.float64).ravel()
    if row.size != n_times:
        raise ValueError(
            f"target has {row.size} values but the span scored has {n_times} samples. Pass "
            "one value per sample of the recording (between start and stop), or a channel name."
        )
    return row[None, :]


def _check_both_edges(l_freq, h_freq, sfreq: float) -> None:
    """score_sources filters with both edges or not at all, as MNE's."""
    if (l_freq is None) != (h_freq is None):
        raise ValueError(
            f"score_sources band-passes sources and target with both edges or none, got "
            f"l_freq={l_freq!r} and h_freq={h_freq!r}. Pass both (e.g. l_freq=1.0, "
            "h_freq=10.0 for blinks) or neither."
        )
    if l_freq is not None:
        check_band(l_freq, h_freq, sfreq)


def _band(rows: np.ndarray, sfreq: float, l_freq, h_freq) -> np.ndarray:
    """``rows`` band-passed with ``SCORE_FILTER``; unfiltered without a band."""
    if l_freq is None:
        return rows
    import mne

    return mne.filter.filter_data(rows, sfreq, l_freq, h_freq, verbose=False, **SCORE_FILTER)


def _number(result) -> float:
    """A score function's result as a float: itself, or its first item (scipy's results)."""
    if np.ndim(result) == 0 and not hasattr(result, "__getitem__"):
        return float(result)
    try:
        return float(result[0])
    except (TypeError, IndexError, KeyError):
        return float(result)


def _zeros(x: np.ndarray) -> np.ndarray:
    """A source set to zero (``apply_function`` needs a Python function)."""
    return np.zeros_like(x)


def _channel_types(inst, names: list[str], ch_type) -> dict[str, list[str]]:
    """The fitted channels ``names`` grouped by type, for the types ``ch_type`` asks."""
    kinds = dict(zip(names, inst.get_channel_types(picks=names), strict=True))
    present = list(dict.fromkeys(kinds.values()))
    wanted = present if ch_type is None else [ch_type] if isinstance(ch_type, str) else ch_type
    for kind in wanted:
        if kind not in present:
            raise ValueError(
                f"ch_type={kind!r} names no fitted channel; the fitted channels' types are "
                f"{present}. Pass one of them, or None for each."
            )
    return {kind: [n for n in names if kinds[n] == kind] for kind in wanted}


def _explained(data: np.ndarray, rebuilt: np.ndarray) -> float:
    """1 - mean variance across channels of ``data - rebuilt`` over that of ``data``."""
    data = np.moveaxis(data, -2, 0).reshape(data.shape[-2], -1)
    rebuilt = np.moveaxis(rebuilt, -2, 0).reshape(rebuilt.shape[-2], -1)
    return float(1.0 - (data - rebuilt).var(axis=0).mean() / data.var(axis=0).mean())
