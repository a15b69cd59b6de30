"""MNE-Python front end of :class:`~sepkit.IVAESeparator`.

The methods here make the separator a drop-in for ``mne.preprocessing.ICA``
on continuous data: ``get_sources`` (a Raw of ``misc`` channels named
``IVAE000``, ``IVAE001``, ...), ``apply`` (a cleaned copy),
``find_bads_eog``, ``find_bads_ecg``, ``plot_components``, ``plot_sources``,
``plot_overlay`` and FIF writers; ``to_mne_ica`` (the linear family as a
fitted ``mne.preprocessing.ICA``, built in :mod:`sepkit.io.mne_ica`) and
``label_components`` (ICLabel, through the optional mne-icalabel).
Turning a Raw into model input and model output back into a Raw lives in
:mod:`sepkit.io.raw`; the scores behind ``find_bads_*`` (correlation, CTPS)
in :mod:`sepkit.artifacts`; the figures in :mod:`sepkit.viz`; the atomic FIF
writer in :mod:`sepkit.io.eeg`.

MNE and matplotlib are imported inside the functions, so ``import sepkit``
stays fast.
"""

from __future__ import annotations

import re
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

from . import viz
from ._check import check_float, check_int, check_option
from .artifacts import (
    check_references,
    ctps_scores,
    ecg_peaks,
    flag_sources,
    reference_correlations,
    whole_epoch_peaks,
)
from .io.eeg import _check_fif_target, _check_raw, check_band, save_fif
from .io.raw import (
    annotation_labels,
    check_time_span,
    epochs_as_raw,
    event_labels,
    is_epochs_or_evoked,
    is_events_array,
    raw_like,
    span_mask,
    with_recording_fields,
)
from .io.recording import check_names_present

# Frontal electrodes that pick up blinks best, used as the EOG reference when a
# recording has no EOG channel, typed or named: Fp1, Fp2, Fpz and the AF row (any case).
_FRONTAL = re.compile(r"^(fp\d+|fpz|af\d+|afz)$", re.IGNORECASE)
# Names that say EOG, for EOG leads typed as EEG (EEGLAB files, BrainVision
# exports): "EOG" not inside a longer word, optionally after H(orizontal),
# V(ertical), L(eft) or R(ight), with anything after it (EOG, EOG1, VEOG, HEOG,
# LEOG, REOG, "EOG left", veog_u), any case.
_EOG_NAME = re.compile(r"(?<![a-z])[hvlr]?eog", re.IGNORECASE)


def _continuous(inst, method: str):
    """The Raw that ``method`` scores: ``inst`` itself, or Epochs end to end (as fit takes them).

    MNE's ICA takes Epochs in ``find_bads_*``; the scores here are those of
    the epochs laid end to end (each filter then runs across the epochs'
    joins, as over the samples of a Raw).
    """
    import mne

    if not is_epochs_or_evoked(inst):
        return inst
    if isinstance(inst, mne.Evoked):
        raise TypeError(
            f"{method} takes an mne.io.Raw or mne.Epochs, got {type(inst).__name__}: an "
            "average, which keeps little of the artefacts it scores. Pass the Raw or the "
            "Epochs it was averaged from."
        )
    return epochs_as_raw(inst)[0]


def _continuous_raw(inst, method: str):
    """:func:`_continuous` of a Raw or Epochs, or the TypeError naming both."""
    return _check_raw_arg(_continuous(inst, method), "an mne.io.Raw or mne.Epochs")


def _check_raw_arg(inst, kinds: str = "an mne.io.Raw"):
    """``inst`` if it is an MNE Raw, else a TypeError saying the ``kinds`` a method takes."""
    hint = "For arrays use transform / inverse_transform."
    return _check_raw(inst, "inst", hint=hint, kinds=kinds)


class MNEMixin:
    """ICA-style methods on MNE Raw data for :class:`~sepkit.IVAESeparator`.

    The host class provides ``transform``, ``inverse_transform``,
    ``get_components``, ``_check_fitted``, ``n_sources_`` and the fitted
    ``ch_names_``.
    """

    # ----------------------------------------------------------- helpers
    def _check_exclude(self, exclude, name: str = "exclude") -> list[int]:
        """``exclude`` as sorted unique ints in range, or an error naming ``name``."""
        if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__iter__"):
            raise TypeError(
                f"{name!r} must be a list of source indices, got {exclude!r}. Pass e.g. "
                "[0] (indices from find_bads_eog), or [] to keep every source."
            )
        out = []
        for k in exclude:
            if isinstance(k, bool) or not isinstance(k, Integral):
                raise TypeError(
                    f"{name!r} must hold integer source indices, got {k!r} ({type(k).__name__})."
                )
            if not 0 <= k < self.n_sources_:
                raise ValueError(
                    f"{name!r} holds source index {int(k)} but the separator has "
                    f"{self.n_sources_} sources; allowed indices are 0 to {self.n_sources_ - 1}."
                )
            out.append(int(k))
        return sorted(set(out))

    def _excluded(self, exclude, include=None) -> list[int]:
        """The sources apply removes: ``exclude``, ``self.exclude`` and all but ``include``, as MNE."""
        chosen = set(self._check_exclude(getattr(self, "exclude", []), "sep.exclude"))
        if exclude is not None:
            chosen |= set(self._check_exclude(exclude))
        if include is not None and len(include) > 0:  # MNE: None or [] keeps every source
            chosen |= set(range(self.n_sources_)) - set(self._check_exclude(include, "include"))
        return sorted(chosen)

    def _raw_u(self, raw, u):
        """u for a Raw at inference: "annotations" / "events" (given, or as in fit) -> labels."""
        from_events = getattr(self, "event_u_", False)
        if u is None and getattr(self, "annotation_u_", False):
            u = "annotations"
        if u is None and from_events:
            u = "events"
        if isinstance(u, str):
            check_option("u", u, ("annotations", "events"))
            fitted = getattr(self, f"{'annotation' if u == 'annotations' else 'event'}_u_", False)
            if not fitted:
                raise ValueError(
                    f"u={u!r} but the separator was not fitted with u={u!r}. Pass the u used "
                    "in fit (or None for the window index)."
                )
            if u == "annotations":
                u, _ = annotation_labels(raw, self.classes_)
            else:
                u = event_labels(raw, None, self.classes_)
        elif from_events and is_events_array(u, raw):
            u = event_labels(raw, u, self.classes_)
        return u

    def _sources_and_data(self, raw, u):
        """(X, S, u): fitted channels in volts (float64), sources, resolved u."""
        _check_raw_arg(raw)
        self._check_fitted()
        u = self._raw_u(raw, u)
        sources = self.transform(raw, u)
        X = raw.get_data(picks=self._fitted_names(raw))
        return X, sources.get_data(), u

    def _fitted_names(self, raw) -> list[str]:
        if self.ch_names_ is None:
            # Fitted on an array: take the EEG channels as transform does.
            from .io.eeg import _eeg_picks

            return [raw.ch_names[i] for i in _eeg_picks(raw, "eeg")]
        return list(self.ch_names_)

    # ---------------------------------------------------------- sources
    def get_sources(
        self,
        inst,
        add_channels=None,
        *,
        start: float | None = None,
        stop: float | None = None,
        u=None,
    ):
        """Source time courses as a Raw, like ``mne.preprocessing.ICA.get_sources``.

        Parameters
        ----------
        inst : mne.io.Raw, mne.Epochs or mne.Evoked
            A recording with the channels the separator was fitted on.
            Epochs and Evoked data need a separator whose encoder ignores u
            (the linear models, the EEG default, or ``encoder_u=False``):
            their samples have no window of the recording.
        add_channels : None or list of str
            Channels of ``inst`` to append to the sources (e.g. the EOG, to
            compare in ``plot`` or ``score_sources``), as ``ICA.get_sources``'.
        start, stop : float or None
            Raw only: time span to return, in seconds from the first sample
            of ``inst``; ``stop`` is exclusive. None: from the start / to the
            end. A whole number other than 0 is refused: ``ICA.get_sources``
            reads an int as a sample index. The whole recording is encoded
            first, because the default u (the window index) counts windows
            from its first sample.
        u : None, "annotations", "events" or ndarray, shape (n_times,)
            Raw only; as in ``transform``; None uses the kind of u of ``fit``.

        Returns
        -------
        sources : mne.io.RawArray, mne.EpochsArray or mne.EvokedArray
            As the input: ``misc`` channels named ``IVAE000``, ``IVAE001``,
            ...; for a Raw, shape (n_sources, n_times), with sample rate,
            ``first_samp``, ``meas_date`` and annotations copied from
            ``inst``; for Epochs, their events, ``event_id``, ``tmin`` and
            metadata; for an Evoked, its ``tmin``, ``nave`` and comment.
        """
        if is_epochs_or_evoked(inst):
            sources = self._segment_sources(inst, start=start, stop=stop, u=u)
            extra = _reference_channels(inst, add_channels)
            return sources if extra is None else sources.add_channels([extra])
        _check_raw_arg(inst, "an mne.io.Raw, mne.Epochs or mne.Evoked")
        self._check_fitted()
        extra = _reference_channels(inst, add_channels)
        tmin, tmax = check_time_span(inst, start, stop)
        duration = inst.n_times / inst.info["sfreq"]
        sources = self.transform(inst, self._raw_u(inst, u))
        if extra is not None:
            sources.add_channels([extra])
        if tmin > 0 or tmax < duration:
            if tmax < duration:
                sources.crop(tmin, tmax, include_tmax=False)
            else:  # MNE's tmax may not pass the last sample: crop to the end
                sources.crop(tmin)
        return sources

    def apply(
        self,
        inst,
        *positional,
        include=None,
        exclude=None,
        n_pca_components=None,
        start: float | None = None,
        stop: float | None = None,
        on_baseline: str = "reapply",
        copy: bool = True,
        u=None,
    ):
        """Remove the sources ``exclude`` from ``inst``, like ``ICA.apply``.

        The cleaned data are ``X - (f(S) - f(S'))`` with ``f`` the decoder,
        ``S`` the sources of ``X`` and ``S'`` a copy of ``S`` whose rows
        ``exclude`` are held at their mean over the recording (zero for the
        zero-mean sources of ICA; holding them at the mean instead leaves the
        channel means untouched). Subtracting the change of the reconstruction,
        rather than replacing ``X`` by ``f(S')``, keeps the part of ``X`` the
        model does not reconstruct (noise, dimensions beyond ``n_sources``)
        exactly, as ICA keeps its PCA residual: with nothing to exclude,
        ``apply`` returns the input unchanged.

        Parameters
        ----------
        inst : mne.io.Raw, mne.Epochs or mne.Evoked
            A recording with the channels the separator was fitted on
            (Epochs and Evoked data as in :meth:`get_sources`; their removed
            sources are held at ``source_mean_``, their mean over the fitted
            samples, since an epoch is too short to stand for the recording,
            and a baseline correction of theirs is re-applied after the
            cleaning, as MNE's ``on_baseline="reapply"``).
        *positional
            Refused: ``include`` and ``exclude`` are passed by name. A second
            positional argument is ``include`` to ``ICA.apply`` and was
            ``exclude`` here, the opposite removal; by name, the same call
            means the same thing to both.
        include : None or list of int
            As ``ICA.apply``'s: the sources to keep; every other one is removed
            too (with ``exclude`` and ``self.exclude``). None or ``[]``: no
            effect, as in MNE.
        exclude : None or list of int
            Indices of the sources to remove (e.g. from :meth:`find_bads_eog`),
            besides those in ``self.exclude``, as ``ICA.apply`` does; None
            removes ``self.exclude`` alone.
        n_pca_components : None
            MNE's default only: the data beyond the sources are kept as they
            are (see above). A number (MNE's reduction of what is kept to
            that many principal components) is refused with the way to it.
        start, stop : float or None
            Raw only: clean this span alone (seconds, as in
            :meth:`get_sources`), the rest unchanged, as ``ICA.apply``'s; the
            sources are computed on the whole recording.
        on_baseline : {"reapply", "warn", "raise"}
            Baseline-corrected Epochs / Evoked: re-apply their baseline after
            the cleaning (default; MNE's default is "warn"), warn and leave it,
            or refuse them, as ``ICA.apply``'s.
        copy : bool
            Return a cleaned copy (default). False cleans ``inst`` in place
            (it must be preloaded) and returns it, as MNE does.
        u : None, "annotations", "events" or ndarray, shape (n_times,)
            As in ``transform``; None uses the kind of u of ``fit``.

        Returns
        -------
        inst : mne.io.Raw, mne.Epochs or mne.Evoked
            As the input: the fitted channels cleaned, every other channel
            unchanged.
        """
        _check_by_name(positional)
        self._check_fitted()
        _check_pca_components(n_pca_components)
        exclude = self._excluded(exclude, include)
        if is_epochs_or_evoked(inst):
            _check_raw_span(inst, start, stop, "clean")
            return self._clean_segments(inst, exclude, copy=copy, u=u, on_baseline=on_baseline)
        _check_raw_arg(inst, "an mne.io.Raw, mne.Epochs or mne.Evoked")
        check_option("copy", copy, (True, False))
        if not copy and not inst.preload:
            raise ValueError(
                "apply(copy=False) cleans raw in place, which needs its data in memory; call "
                "raw.load_data() first, or pass copy=True."
            )
        X, S, u = self._sources_and_data(inst, u)
        cleaned = X
        if exclude:
            cleaned = X + self._removal_change(S, exclude, u)
        if start is not None or stop is not None:
            outside = ~span_mask(inst, start, stop)
            cleaned[:, outside] = X[:, outside]
        out = inst.copy() if copy else inst
        if not out.preload:
            out.load_data(verbose="error")
        idx = [out.ch_names.index(name) for name in self._fitted_names(inst)]
        out[idx, :] = cleaned
        return out

    def _segment_data(self, inst, u):
        """(names, X, S) of Epochs / Evoked: X (n_epochs, n_channels, n_times), S its sources."""
        self._check_fitted()
        what = type(inst).__name__
        _check_segment_rate(self, inst)
        if u is not None:
            raise ValueError(
                f"u is for a Raw; {what} data have no u of their own. Pass u=None (the "
                "separator must ignore u, see get_sources)."
            )
        needs_u = getattr(self.fitted_, "needs_u", False) or self.decoder_u
        if getattr(self, "domain_", "time") == "tf" or needs_u:
            raise ValueError(
                f"{what} data have no window of the recording to stand for u, and this "
                "separator's encoder or decoder takes u. Use a separator that ignores u "
                "(mixing='linear' or 'post-nonlinear', the EEG default, or encoder_u=False "
                "with decoder_u=False), or apply it to the continuous Raw and epoch the "
                "result, e.g. mne.Epochs(sep.apply(raw), events)."
            )
        names = self._fitted_names(inst)
        missing = [name for name in names if name not in inst.ch_names]
        if missing:
            raise ValueError(
                f"The {what} data lack the fitted channel(s) {missing}. Pass data with every "
                f"channel the separator was fitted on ({len(names)}: {names[:5]} ...)."
            )
        X = inst.get_data(picks=names).astype(np.float64)
        if X.ndim == 2:  # Evoked
            X = X[None]
        n_epochs, n_channels, n_times = X.shape
        flat = X.transpose(1, 0, 2).reshape(n_channels, n_epochs * n_times)
        S = self.transform(flat).reshape(self.n_sources_, n_epochs, n_times).transpose(1, 0, 2)
        return names, X, S

    def _segment_sources(self, inst, *, start, stop, u):
        import mne

        _check_raw_span(inst, start, stop, "crop")
        _, _, S = self._segment_data(inst, u)
        names = [f"IVAE{k:03d}" for k in range(self.n_sources_)]
        return like_segments(S, mne.create_info(names, inst.info["sfreq"], "misc"), inst)

    def _clean_segments(self, inst, exclude, *, copy, u, on_baseline="reapply"):
        """:meth:`apply` for Epochs / Evoked; ``exclude`` as apply resolved it (``_excluded``)."""
        import mne

        check_option("copy", copy, (True, False))
        _check_baseline(inst, on_baseline)
        names, X, S = self._segment_data(inst, u)
        cleaned = X
        if exclude:
            held = S.copy()
            held[:, exclude] = np.asarray(self.source_mean_)[exclude][None, :, None]
            cleaned = X + (_segment_inverse(self, held) - _segment_inverse(self, S))
        out = inst.copy() if copy else inst
        idx = np.array([out.ch_names.index(name) for name in names])
        if isinstance(out, mne.Evoked):
            out.data[idx] = cleaned[0]
        else:
            if not out.preload:
                if not copy:
                    raise ValueError(
                        "apply(copy=False) cleans the Epochs in place, which needs their data "
                        "in memory; call epochs.load_data() first, or pass copy=True."
                    )
                out.load_data()
            order = np.argsort(idx)
            # apply_function hands over the picked channels in index order.
            out.apply_function(lambda _: cleaned[:, order], picks=idx[order], channel_wise=False)
        if out.baseline is not None and on_baseline == "reapply":
            # The removed part had a baseline of its own; restore the data's.
            out.apply_baseline(out.baseline, verbose="error")
        return out

    def _removal_change(self, S, exclude, u, decoded=None) -> np.ndarray:
        """f(S') - f(S): the change of the reconstruction when the rows ``exclude``
        of ``S`` are held at their mean (``decoded``: f(S), if already computed)."""
        held = S.copy()
        held[exclude] = S[exclude].mean(axis=1, keepdims=True)
        change = self.inverse_transform(held, u).astype(np.float64)
        change -= self.inverse_transform(S, u) if decoded is None else decoded
        return change

    # -------------------------------------------------------- artefacts
    def find_bads_eog(
        self,
        inst,
        ch_name=None,
        threshold="auto",
        *,
        start: float | None = None,
        stop: float | None = None,
        measure: str = "correlation",
        l_freq: float | None = 1.0,
        h_freq: float | None = 10.0,
        reject_by_annotation: bool = True,
        u=None,
    ):
        """Find sources that follow the EOG (blinks, eye movements).

        Like ``ICA.find_bads_eog``: each source and each reference channel
        are band-pass filtered (``l_freq`` to ``h_freq``, where blinks and
        saccades have their power) and scored by their Pearson correlation;
        ``measure`` says which scores flag a source.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the channels the separator was fitted on (Epochs:
            scored end to end, as ``fit`` takes them).
        ch_name : None, str or list of str
            Reference channel(s). None takes the EOG-typed channels of
            ``inst`` (bad ones excluded); when there are none, the EEG-typed
            channels whose names say EOG (EOG, EOG1, VEOG, HEOG, LEOG, REOG,
            "EOG left", ...: EEGLAB and BrainVision files type their EOG
            leads as EEG); when there are none either, the frontal EEG
            channels Fp1, Fp2, Fpz and AF*. Names are matched ignoring case;
            the last two draw a RuntimeWarning saying which channels and why.
            With channels chosen by their names, the frontal channels are
            scored too, and a RuntimeWarning names the sources they flag that
            the named channels do not: on EEGLAB's sample recording the leads
            named EOG1 and EOG2 follow its blink source at |r| 0.44 and 0.35,
            FPz at 0.87 (fitted on its 30 scalp channels, 1-10 Hz). That
            check's channels, scores (n_frontal, n_sources) and the sources
            only they flag are kept in ``eog_frontal_check_`` (a dict; None
            when the check did not run), and ``sepkit separate --exclude eog``
            writes them to its metrics JSON.
        threshold : "auto" or float
            ``measure="correlation"``: the absolute correlation with some
            reference that flags a source, in (0, 1]; "auto" is 0.5, which
            flags a source sharing at least a quarter of its (filtered)
            variance with a reference (real blink components usually score
            0.7-0.95: recipes/eeg_real's scores 0.876 with FPz, which MNE's
            0.9 would miss). ``measure="zscore"``:
            the z-score, in standard deviations, above which a correlation
            is an outlier among the sources' correlations with that
            reference; "auto" is 3.0, as MNE's.
        start, stop : float or None
            Raw only: the span scored, in seconds, as in :meth:`get_sources`
            (the sources are computed on the whole recording and scored on
            the span; an int, MNE's sample index, is refused).
        measure : {"correlation", "zscore"}
            "correlation" flags absolute correlations of at least
            ``threshold``. "zscore" is MNE's default: per reference, z-score
            the correlations over the sources, flag those beyond
            ``threshold`` (either sign), z-score the rest again without them
            and flag again (two rounds, as MNE). It adapts to how strongly
            the blink shows in the reference, but flags nothing when every
            source correlates alike, and one outlier can hide another. Of n
            values none lies more than (n - 1) / sqrt(n) SDs from their mean
            (2.47 for 8 sources), so a threshold at or above that is refused.
        l_freq, h_freq : float or None
            Band-pass edges in Hz for sources and references; None leaves
            that side unfiltered. The filter is MNE's for ``score_sources``
            (a 10 s FIR with 0.5 Hz transitions, zero phase), so the scores
            are those of ``to_mne_ica().find_bads_eog(raw,
            measure="correlation")``.
        reject_by_annotation : bool
            Leave samples under bad annotations out of the correlations.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        indices : list of int
            Flagged sources, highest absolute correlation first.
        scores : ndarray
            Correlations, shape (n_sources,) for one reference channel,
            (n_channels, n_sources) for several.
        """
        raw = _continuous_raw(inst, "find_bads_eog")
        self._check_fitted()
        good = _scored_samples(inst, raw, reject_by_annotation, start, stop)
        names, named = _eog_choice(raw, ch_name)
        _check_scored_references(raw, names, good, "find_bads_eog")
        frontal = _frontal_channels(raw) if named else []
        # What the last call's frontal cross-check saw (None: it did not run).
        self.eog_frontal_check_ = None
        if not frontal:
            return self._score_references(raw, names, threshold, measure, l_freq, h_freq, good, u)
        # Leads named EOG may record little of the eyes (EEGLAB's sample): score the
        # frontal channels too and say where they flag what the named ones do not.
        threshold = self._check_score_threshold(threshold, measure)
        scores = self._reference_scores(raw, names + frontal, l_freq, h_freq, good, u)
        scores, frontal_scores = scores[: len(names)], scores[len(names) :]
        indices = flag_sources(scores, threshold, measure)
        missed = [k for k in flag_sources(frontal_scores, threshold, measure) if k not in indices]
        self.eog_frontal_check_ = dict(channels=frontal, scores=frontal_scores, missed=missed)
        if missed:
            warnings.warn(
                f"the frontal EEG channel(s) {frontal} flag source(s) {missed} (|r| up to "
                f"{np.abs(frontal_scores[:, missed]).max():.2f}) that the EOG reference "
                f"{names} does not (its best |r| with them "
                f"{np.abs(scores[:, missed]).max():.2f}): leads named EOG can record little "
                "of the blinks. Check those sources (plot_properties) and pass "
                f"ch_name={frontal!r} to score against the frontal channels instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        return indices, (scores[0] if len(names) == 1 else scores)

    def find_bads_ecg(
        self,
        inst,
        ch_name=None,
        threshold="auto",
        *,
        start: float | None = None,
        stop: float | None = None,
        method: str = "ctps",
        measure: str = "correlation",
        l_freq: float | None = 8.0,
        h_freq: float | None = 16.0,
        reject_by_annotation: bool = True,
        u=None,
    ):
        """Find sources that follow the ECG (the heartbeat's field on the scalp).

        Like ``ICA.find_bads_ecg``, with the same scores on the same sources.
        The band ``l_freq`` to ``h_freq`` (8-16 Hz, MNE's, keeps the QRS
        complex and drops the slower T wave and drifts) serves one of two
        methods:

        * ``"ctps"`` (default, as MNE's): cross-trial phase statistics
          (Dammers et al. 2008). The heartbeats are found in the ECG channel
          in that band (``mne.preprocessing.find_ecg_events``) and each
          source, unfiltered as MNE's, is cut into epochs from -0.5 to 0.5 s
          around them; at every latency,
          Kuiper's test asks whether the source's phase (from the Hilbert
          transform) is uniform across the heartbeats, and the score is the
          largest normalised Kuiper index over the latencies, -ln(p) / (2 n)
          for p the test's p-value over n heartbeats, in [0, 1]. A source
          that the heart drives is phase-locked to every beat whatever its
          amplitude, and so is one that carries only a small share of the
          heartbeat: in ``recipes/eeg_artifacts`` CTPS at 0.3 also flags a
          muscle or non-stationary component that holds some ECG in 2 of 9
          recordings (picard's, scored by MNE: 1). Look at what it flags
          (:meth:`plot_properties`) before removing it.
        * ``"correlation"``: Pearson correlation of the band-passed sources
          with the band-passed ECG channel(s), flagged as ``measure`` says (as
          :meth:`find_bads_eog`).

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the channels the separator was fitted on (Epochs:
            scored end to end, as ``fit`` takes them).
        ch_name : None, str or list of str
            Reference channel(s). None takes the ECG-typed channels of
            ``inst`` (bad ones excluded); a recording without one needs
            ``ch_name`` (EEG has no magnetometers to synthesise an ECG from,
            as MNE does for MEG).
        threshold : "auto" or float
            ``method="ctps"``: the normalised Kuiper index that flags a source,
            in (0, 1]; "auto" is MNE's 0.3. ``method="correlation"``: as in
            :meth:`find_bads_eog` ("auto" is 0.5 for ``measure="correlation"``
            and 3.0 for ``measure="zscore"``).
        start, stop : float or None
            Raw only: the span scored, in seconds, as in :meth:`get_sources`
            (the sources are computed on the whole recording and scored on
            the span; an int, MNE's sample index, is refused).
        method : {"ctps", "correlation"}
        measure : {"correlation", "zscore"}
            ``method="correlation"`` only; as in :meth:`find_bads_eog`.
        l_freq, h_freq : float or None
            Band edges in Hz. ``method="ctps"``: the band in which MNE's QRS
            detector finds the heartbeats (both edges needed).
            ``method="correlation"``: the band-pass of sources and ECG
            (MNE's ``score_sources`` filter, as in :meth:`find_bads_eog`);
            None leaves that side unfiltered.
        reject_by_annotation : bool
            Leave samples under bad annotations out of the correlations.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        indices : list of int
            Flagged sources, highest score first.
        scores : ndarray
            ``"ctps"``: the normalised Kuiper index per source, shape
            (n_sources,). ``"correlation"``: correlations, shape (n_sources,)
            for one reference channel, (n_channels, n_sources) for several.

        References
        ----------
        Dammers, Schiek, Boers, Silex, Zvyagintsev, Pietrzyk, Mathiak (2008).
        Integration of amplitude and phase statistics for complete artifact
        removal in independent components of neuromagnetic recordings. IEEE
        Trans. Biomed. Eng. 55(10), 2353-2362.
        """
        raw = _continuous_raw(inst, "find_bads_ecg")
        self._check_fitted()
        check_option("method", method, ("ctps", "correlation"))
        good = _scored_samples(inst, raw, reject_by_annotation, start, stop)
        names = _ecg_reference(raw, ch_name)
        _check_scored_references(raw, names, good, "find_bads_ecg")
        if method == "ctps":
            return self._ctps_scores(
                raw, names[0], threshold, (l_freq, h_freq), (good, reject_by_annotation), u
            )
        return self._score_references(raw, names, threshold, measure, l_freq, h_freq, good, u)

    def _ctps_scores(self, raw, ecg_name, threshold, band, scored, u):
        """(indices, scores) of ``find_bads_ecg(method="ctps")``.

        ``band``: (l_freq, h_freq); ``scored``: (the samples scored, reject_by_annotation).
        """
        (l_freq, h_freq), (good, reject_by_annotation) = band, scored
        if isinstance(threshold, str) and threshold == "auto":
            threshold = 0.3
        threshold = check_float(
            "threshold", threshold, min_value=0.0, max_value=1.0, strict_min=True
        )
        sfreq = float(raw.info["sfreq"])
        peaks = _heartbeats(raw, ecg_name, (l_freq, h_freq), reject_by_annotation)
        # Whole epochs only, and none that touches a bad span or leaves start-stop.
        peaks = whole_epoch_peaks(peaks, good, sfreq)
        if len(peaks) < 2:
            raise ValueError(
                f"find_bads_ecg(method='ctps') found {len(peaks)} heartbeat(s) in {ecg_name!r} "
                "with whole epochs (-0.5 to 0.5 s) outside bad spans, and needs at least 2. "
                "Check that the channel records the heart, or pass method='correlation'."
            )
        # MNE's rule (ICA.find_bads_ecg): the band finds the heartbeats, and the
        # phases are those of the sources as they are.
        sources = self.get_sources(raw, u=u).get_data()
        scores = ctps_scores(sources, peaks, sfreq)
        order = np.argsort(-scores, kind="stable")
        return [int(k) for k in order if scores[k] >= threshold], scores

    def _score_references(self, raw, names, threshold, measure, l_freq, h_freq, good, u):
        """(indices, scores) of :meth:`find_bads_eog` / :meth:`find_bads_ecg` for ``names``."""
        threshold = self._check_score_threshold(threshold, measure)
        scores = self._reference_scores(raw, names, l_freq, h_freq, good, u)
        indices = flag_sources(scores, threshold, measure)
        return indices, (scores[0] if len(names) == 1 else scores)

    def _reference_scores(self, raw, names, l_freq, h_freq, good, u):
        """Correlations of the sources with the channels ``names``, shape (n_names, n_sources).

        ``good``: the samples scored (:func:`_scored_samples`); the others are cut
        out before filtering (MNE's "omit"), in reference_correlations.
        """
        sfreq = float(raw.info["sfreq"])
        l_freq, h_freq = check_band(l_freq, h_freq, sfreq)
        sources = self.get_sources(raw, u=u).get_data()
        return reference_correlations(
            sources, raw.get_data(picks=names), sfreq, l_freq=l_freq, h_freq=h_freq, good=good
        )

    def _check_score_threshold(self, threshold, measure) -> float:
        """``threshold`` of a correlation ``measure``, "auto" resolved, or the error."""
        check_option("measure", measure, ("correlation", "zscore"))
        auto = isinstance(threshold, str) and threshold == "auto"
        if auto:
            threshold = 0.5 if measure == "correlation" else 3.0
        elif measure == "correlation":
            threshold = check_float("threshold", threshold, min_value=0.0, strict_min=True)
            if threshold > 1.0:  # e.g. MNE's z-score threshold of 3.0 in a script of theirs
                raise ValueError(
                    f"threshold={threshold:g} with measure='correlation' (sepkit's default): "
                    "the threshold is then an absolute correlation, in (0, 1]. For MNE's "
                    "z-score threshold pass measure='zscore' (MNE's default measure), or a "
                    "correlation such as threshold=0.5."
                )
        else:
            threshold = check_float("threshold", threshold, min_value=0.0, strict_min=True)
        if measure == "zscore":
            _check_zscore_reach(threshold, self.n_sources_, auto)
        return threshold

    @staticmethod
    def _eog_reference(raw, ch_name) -> list[str]:
        """The reference channels of :meth:`find_bads_eog` (see :func:`_eog_choice`)."""
        return _eog_choice(raw, ch_name, stacklevel=4)[0]

    # ------------------------------------------------------------ plots
    def plot_components(
        self, picks=None, *, info=None, n_cols: int = 5, cmap="RdBu_r", exclude=None, show=False
    ):
        """Topographic maps of the sensor patterns (:meth:`get_components`).

        Excluded sources (``exclude`` and ``self.exclude``, those :meth:`apply`
        removes) are titled "IVAE003 (excluded)" in grey, as MNE's
        ``ICA.plot_components`` greys the titles of ``ica.exclude``.

        Parameters
        ----------
        picks : None or list of int
            Sources to show; default all.
        info : None, mne.Info or mne.io.Raw
            Where the channel positions come from; default the info of the
            Raw given to ``fit``. Needed after ``load`` or a fit on an array.
        n_cols : int
            Maps per row.
        cmap : str
            Matplotlib colormap.
        exclude : None or list of int
            Sources to show as excluded besides ``self.exclude``, as in
            :meth:`apply`.

        show : bool
            Display with ``matplotlib.pyplot.show`` as well. Default False (the
            figure is returned to save or embed; MNE's plots show by default).

        Returns
        -------
        fig : matplotlib.figure.Figure
            One axis per source, titled ``IVAE000``, ...; not shown (call
            ``fig.savefig`` or display it in a notebook).
        """
        self._check_fitted()
        picks = self._check_source_picks(picks)
        excluded = self._excluded(exclude)
        n_cols = check_int("n_cols", n_cols, min_value=1)
        info = self._positions_info(info, "plot_components")
        patterns = self.get_components()[np.ix_(self._info_rows(info), picks)]
        names = [f"IVAE{k:03d}" for k in picks]
        fig = viz.plot_topomaps(
            patterns, info, names=names, n_cols=n_cols, cmap=cmap, caller="plot_components",
            exclude=[i for i, k in enumerate(picks) if k in excluded],
        )  # fmt: skip
        return _shown(fig, show)

    def plot_properties(
        self, inst, picks=None, *, info=None, fmax: float | None = None, u=None, show=False
    ):
        """One figure per source: its map, spectrum and variance over the windows.

        Like ``ICA.plot_properties``, for judging whether a source is an
        artefact: the sensor pattern (topomap), the source's power spectrum
        (Welch, 2 s segments), and its variance in each window of u
        (``window_samples_``): how it changes between windows is what the
        iVAE separates by. Each title gives the share of the fitted
        channels' variance that removing the source (:meth:`apply`) takes.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the channels the separator was fitted on (Epochs:
            end to end, as ``fit`` takes them).
        picks : None or list of int
            Sources to show; default all. An empty list (e.g. ``sep.exclude``
            when nothing was flagged) gives no figures.
        info : None, mne.Info or mne.io.Raw
            Channel positions, as in :meth:`plot_components`; default those
            of ``inst``.
        fmax : float or None
            Highest frequency of the spectrum in Hz; default the Nyquist
            frequency.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        show : bool
            Display with ``matplotlib.pyplot.show`` as well. Default False (the
            figure is returned to save or embed; MNE's plots show by default).

        Returns
        -------
        figs : list of matplotlib.figure.Figure
            One per source in ``picks``; not shown.
        """
        raw = _continuous_raw(inst, "plot_properties")
        self._check_fitted()
        check_option("show", show, (True, False))
        if picks is not None and not isinstance(picks, (str, bytes)) and len(picks) == 0:
            return []
        picks = self._check_source_picks(picks)
        sfreq = float(raw.info["sfreq"])
        fmax = sfreq / 2 if fmax is None else check_float(
            "fmax", fmax, min_value=0.0, max_value=sfreq / 2, strict_min=True
        )  # fmt: skip
        info = self._positions_info(raw if info is None else info, "plot_properties")
        patterns = self.get_components()[self._info_rows(info)]
        X, S, u = self._sources_and_data(raw, u)
        excluded = self._excluded(None)
        total = ((X - X.mean(axis=1, keepdims=True)) ** 2).sum()
        decoded = self.inverse_transform(S, u).astype(np.float64)
        figs = []
        for k in picks:
            change = self._removal_change(S, [k], u, decoded)
            share = (change**2).sum() / total if total > 0 else 0.0
            title = f"IVAE{k:03d}{' (excluded)' if k in excluded else ''}: {100 * share:.1f} % of the fitted channels' variance"
            figs.append(
                viz.plot_source_properties(
                    S[k],
                    patterns[:, k],
                    info,
                    sfreq,
                    window_samples=self.window_samples_,
                    fmax=fmax,
                    title=title,
                    caller="plot_properties",
                )
            )
        return _shown(figs, show)

    def _fitted_names_or_default(self):
        return self.ch_names_ or tuple(f"ch{i}" for i in range(self.n_channels_))

    def _info_rows(self, info) -> list[int]:
        """Rows of ``get_components()`` for the channels of ``info``, in its order."""
        fitted = list(self._fitted_names_or_default())
        return [fitted.index(name) for name in info["ch_names"]]

    def _fitted_info(self, info, no_info: str, *, by_position: bool = False):
        """``info`` (an Info, a Raw's, or ``info_`` for None) holding every fitted channel.

        ``no_info``: the message when None is given and the fit kept no Info.
        ``by_position``: a separator fitted on an array takes the EEG channels of
        ``info`` in order (for the topographies; an export needs its names).
        """
        import mne

        if info is None:
            info = getattr(self, "info_", None)
            if info is None:
                raise ValueError(no_info)
        elif isinstance(info, mne.io.BaseRaw):
            info = info.info
        elif not isinstance(info, mne.Info):
            raise TypeError(
                f"'info' must be None, an mne.Info or an mne.io.Raw, got {type(info).__name__}."
            )
        if by_position and self.ch_names_ is None:  # fitted on an array: info's EEG, in order
            return _array_fit_info(info, self.n_channels_)
        missing = [n for n in self._fitted_names_or_default() if n not in info["ch_names"]]
        if missing:
            raise ValueError(
                f"'info' lacks fitted channel(s) {missing[:12]}; pass the info of a Raw with "
                "the channels the separator was fitted on."
            )
        return info

    def _positions_info(self, info, what: str):
        """Info of the fitted EEG channels that have positions, for the topomaps of ``what``."""
        import mne

        info = self._fitted_info(
            info,
            f"{what} needs channel positions, but the separator was not fitted "
            "on an MNE Raw (or was loaded from a file saved without its info). Pass "
            "info=raw.info of a Raw "
            "with the fitted channels and a montage.",
            by_position=True,
        )
        fitted = self._fitted_names_or_default()
        keep = []
        for name in fitted:
            idx = info["ch_names"].index(name)
            pos = info["chs"][idx]["loc"][:3]
            # Topomaps are of scalp potentials: other types (EOG picked into the
            # fit, misc) and channels without a position are left out.
            if mne.channel_type(info, idx) == "eeg" and np.isfinite(pos).all() and pos.any():
                keep.append(idx)
        if len(keep) < 3:
            n_eeg = sum(mne.channel_type(info, info["ch_names"].index(n)) == "eeg" for n in fitted)
            fix = (
                f"a map needs 3, and the separator was fitted on {n_eeg} EEG channel(s): fit "
                "on more EEG channels to draw topographies"
                if n_eeg < 3
                else "Set a montage first, e.g. raw = sepkit.io.apply_montage(raw, "
                "'standard_1020'), and refit or pass info=raw.info"
            )
            raise ValueError(
                f"{what} needs positions of at least 3 fitted EEG channels, found "
                f"{len(keep)}. {fix[0].upper()}{fix[1:]}."
            )
        return mne.pick_info(info, keep, verbose="error")

    def _check_source_picks(self, picks) -> list[int]:
        if picks is None:
            return list(range(self.n_sources_))
        if isinstance(picks, Integral) and not isinstance(picks, bool):
            picks = [picks]
        if isinstance(picks, (str, bytes)) or not hasattr(picks, "__iter__"):
            raise TypeError(f"'picks' must be None or a list of source indices, got {picks!r}.")
        picks = list(picks)
        for k in picks:
            if isinstance(k, bool) or not isinstance(k, Integral):
                raise TypeError(
                    f"'picks' must hold integer source indices, got {k!r} ({type(k).__name__})."
                )
            if not 0 <= k < self.n_sources_:
                raise ValueError(
                    f"'picks' holds source index {int(k)} but the separator has "
                    f"{self.n_sources_} sources; allowed indices are 0 to {self.n_sources_ - 1}."
                )
        if not picks:
            raise ValueError("'picks' is empty; pass None for every source or a list of indices.")
        return [int(k) for k in picks]

    def plot_sources(
        self,
        inst,
        *,
        picks=None,
        start: float = 0.0,
        duration: float = 10.0,
        u=None,
        exclude=None,
        show=False,
    ):
        """Time courses of the sources, one trace per source.

        Excluded sources (``exclude`` and ``self.exclude``) are traced and
        labelled "(excluded)" in grey, as MNE's ``ICA.plot_sources`` draws
        ``ica.exclude``.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            A recording with the channels the separator was fitted on (Epochs:
            end to end, as ``fit`` takes them).
        picks : None or list of int
            Sources to show; default all.
        start, duration : float
            Time span in seconds from the first sample of ``inst``.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.
        exclude : None or list of int
            Sources to show as excluded besides ``self.exclude``, as in
            :meth:`apply`.

        show : bool
            Display with ``matplotlib.pyplot.show`` as well. Default False (the
            figure is returned to save or embed; MNE's plots show by default).

        Returns
        -------
        fig : matplotlib.figure.Figure
            Traces scaled to unit standard deviation and stacked, bad
            annotations shaded; not shown.
        """
        from .io.eeg import _is_bad_description

        raw = _continuous_raw(inst, "plot_sources")
        self._check_fitted()
        picks = self._check_source_picks(picks)
        excluded = self._excluded(exclude)
        start, stop = _check_span(raw, start, duration)
        sources = self.get_sources(raw, start=start, stop=stop, u=u)
        names = [f"IVAE{k:03d}" for k in picks]
        annotations = sources.annotations
        # Onsets count from the first sample MNE ever recorded; the plot from raw's.
        bad_spans = [
            (onset - raw.first_time, onset - raw.first_time + dur)
            for onset, dur, desc in zip(
                annotations.onset, annotations.duration, annotations.description, strict=True
            )
            if _is_bad_description(desc)
        ]
        fig = viz.plot_source_traces(
            sources.get_data(picks=names), raw.info["sfreq"], names=names, start=start,
            bad_spans=bad_spans, exclude=[i for i, k in enumerate(picks) if k in excluded],
        )  # fmt: skip
        return _shown(fig, show)

    def plot_overlay(
        self,
        inst,
        exclude=None,
        *,
        picks=None,
        n_channels: int = 5,
        start: float = 0.0,
        duration: float = 10.0,
        u=None,
        show=False,
    ):
        """Channels before and after :meth:`apply`, like ``ICA.plot_overlay``.

        Parameters
        ----------
        inst : mne.io.Raw or mne.Evoked
            A recording with the channels the separator was fitted on, or an
            average of its epochs (shown whole, its own times; as MNE's, which
            shows Raw and Evoked).
        exclude : None or list of int
            The sources to remove, as in :meth:`apply` (with ``self.exclude``).
        picks : None or list of str
            Fitted channels to show; default the ``n_channels`` whose variance
            the removal changes most over the shown span (for a blink, the
            frontal ones).
        n_channels : int
            How many channels ``picks=None`` shows.
        start, duration : float
            Time span in seconds from the first sample of a Raw.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        show : bool
            Display with ``matplotlib.pyplot.show`` as well. Default False (the
            figure is returned to save or embed; MNE's plots show by default).

        Returns
        -------
        fig : matplotlib.figure.Figure
            One axis per channel, the recording in red and the cleaned one in
            black over it, in microvolts for EEG; not shown.
        """
        self._check_fitted()
        removed = self._excluded(exclude)
        n_channels = check_int("n_channels", n_channels, min_value=1)
        fitted = self._fitted_names(inst)
        picks = _check_channel_picks(picks, fitted)
        before, after, start = _overlay_data(self, inst, removed, (start, duration), u, fitted)
        sfreq = inst.info["sfreq"]
        if picks is None:
            change = ((before - after) ** 2).sum(axis=1)
            order = np.argsort(-change, kind="stable")[:n_channels]
            picks = [fitted[i] for i in order]
        rows = [fitted.index(name) for name in picks]
        is_eeg = [inst.get_channel_types(picks=[name])[0] == "eeg" for name in picks]
        title = (
            f"Removed IVAE{', IVAE'.join(f'{k:03d}' for k in removed)}"
            if removed
            else "Nothing removed"
        )
        fig = viz.plot_overlay(
            before[rows], after[rows], sfreq, names=picks, start=start, eeg=is_eeg, title=title
        )
        return _shown(fig, show)

    # ------------------------------------------------- MNE's ICA, ICLabel
    def to_mne_ica(self, info=None):
        """The fitted separator as a fitted ``mne.preprocessing.ICA``.

        For the linear family without sensor unwarping (``family_ ==
        "linear"``, ``sensor_coefs_`` None: ``mixing="linear"``, the EEG
        default), whose sources are a matrix times the centred channels,
        ``W @ (x - mean_)`` with ``W`` the encoder's unmixing times
        ``whitening_``. The ICA holds the same model in MNE's terms:
        ``pre_whitener_`` ones (so every matrix is in the data's units, e.g.
        volts), ``pca_mean_ = mean_``, ``pca_components_`` the separator's
        principal directions (its ``whitening_`` rows, normalised, then the
        directions the data do not span), ``unmixing_matrix_`` ``W`` in that
        basis and ``mixing_matrix_`` its inverse. So, to float32 precision
        (sepkit computes in float32, MNE in float64):

        * ``ica.get_sources(raw)`` equals ``sep.get_sources(raw)``;
        * ``ica.get_components()`` equals ``sep.get_components()``;
        * ``ica.apply(raw, exclude=K)`` (``n_pca_components`` = every
          channel, so the part of the data the sources leave unexplained is
          kept, as sepkit keeps it) equals ``sep.apply(raw, exclude=K)`` up
          to a constant per channel: MNE removes ``A_K W_K (x - mean_)``,
          sepkit holds the removed sources at their mean over ``raw``
          instead of at zero, leaving the channel means untouched. They
          agree exactly where the sources have zero mean over ``raw`` (the
          fitted recording, without ``highpass`` and bad spans).

        ``ica.save("...-ica.fif")`` and ``mne.preprocessing.read_ica``
        round-trip it, and MNE's tools (``plot_components``,
        ``find_bads_eog``, ``plot_sources``, ...) work on it.

        Parameters
        ----------
        info : None, mne.Info or mne.io.Raw
            The channels' Info (positions for the topomaps); default the one
            of fit (``info_``, absent when fitted on an array or loaded from
            a file). Its projectors are left out: MNE's ICA applies the
            active ones before unmixing, the separator does not.

        Returns
        -------
        ica : mne.preprocessing.ICA
            ``n_components_ = n_sources_``; ``exclude`` is ``sep.exclude``;
            ``fit_params`` says what was fitted (family, prior, window).
            ``method`` is ``"imported_sepkit"``: MNE fits nothing under that
            name (as its own ``"imported_eeglab"``), no MNE computation on a
            fitted ICA reads it, and ``read_ica`` restores it; the ICA cannot
            be refitted with ``ica.fit``. ``pca_explained_variance_`` is
            exact for the first ``n_sources`` components; beyond them the
            separator keeps only an upper bound (the ``n_sources``-th
            variance), which MNE reads only for a float
            ``n_pca_components``.

        Raises
        ------
        ValueError
            For the network, tf and post-nonlinear (unwarping kept)
            families, whose sources no matrix gives.

        Notes
        -----
        mne-icalabel warns on every such ICA that ICLabel was designed with
        extended infomax decompositions (it checks ``method`` and
        ``fit_params["extended"]``): it was trained on those, and its
        probabilities for any other ICA (picard's, FastICA's, sepkit's) are
        outside its training (it warns for MNE's default picard too, which
        sets neither ``ortho=False`` nor ``extended=True``). See
        :meth:`label_components`.

        Examples
        --------
        >>> sep = IVAESeparator(n_sources=15).fit(raw)  # doctest: +SKIP
        >>> ica = sep.to_mne_ica()  # doctest: +SKIP
        >>> ica.exclude = sep.find_bads_eog(raw)[0]  # doctest: +SKIP
        >>> ica.save("sub-01-ica.fif")  # doctest: +SKIP
        """
        from .io.mne_ica import build_ica, pca_from_whitening

        self._check_fitted()
        unmixing, bias, mixing = self._linear_maps()
        info = self._ica_info(info)
        components, variances = pca_from_whitening(self.whitening_, self.dewhitening_)
        history = self.history_[0] if self.history_ else {}
        fit_params = dict(
            family=self.family_, mixing=self.mixing_, prior=self.prior_,
            window_samples=int(self.window_samples_), hop_samples=int(self.hop_samples_),
        )  # fmt: skip
        return build_ica(
            unmixing,
            # An encoder bias b shifts the centre: W (x - m) + b = W (x - (m - W^+ b)).
            self.mean_ - np.linalg.pinv(unmixing) @ bias,
            info,
            components=components,
            variances=variances,
            mixing=mixing,
            exclude=self._excluded(None),
            fit_params=fit_params,
            n_iter=history.get("n_iter"),
            # Fitted attributes of fit (a file saved before 2026-12-07 keeps neither).
            n_samples=getattr(self, "n_samples_", None),
            reject=getattr(self, "reject_", None),
            epochs=getattr(self, "fitted_on_epochs_", False),
        )

    def _linear_maps(self):
        """(W, b, A): sources W @ (x - mean_) + b and patterns A, in sensor units."""
        # A family exports when its fit is a matrix of the channels (``sensor_maps``)
        # and no per-sensor unwarping comes before it.
        unwarped = getattr(self, "sensor_coefs_", None) is not None
        if not hasattr(self.fitted_, "sensor_maps") or unwarped:
            raise ValueError(_not_exportable(self.family_, unwarped))
        unmixing, bias, mixing = self.fitted_.sensor_maps()
        return unmixing @ self.whitening_, bias, self.dewhitening_ @ mixing

    def _ica_info(self, info):
        """Info of the fitted channels, in their order, from ``info`` (or ``info_``)."""
        import mne

        info = self._fitted_info(
            info,
            "to_mne_ica needs the channels' mne.Info, but the separator was not fitted "
            "on an MNE Raw (or was loaded from a file saved without its info). Pass "
            "info=raw (or raw.info) of a Raw with the fitted channels.",
        )
        idx = [info["ch_names"].index(n) for n in self._fitted_names_or_default()]
        return mne.pick_info(info, idx, verbose="error")

    def label_components(self, inst, *, backend: str | None = None) -> dict:
        """ICLabel's class per source, through mne-icalabel (``pip install sepkit[eeg]``).

        Runs ``mne_icalabel``'s ICLabel network (Pion-Tonachini et al. 2019;
        its weights ship with the package, so this works offline) on
        :meth:`to_mne_ica` and ``inst``. ICLabel was trained on EEG
        band-passed 1-100 Hz and referenced to the common average: where
        ``inst`` is not, a copy of its fitted channels is filtered (1 Hz
        high-pass; 100 Hz low-pass where the sampling allows) and
        re-referenced, the separator's maps are re-referenced with it (as
        EEGLAB's ``pop_reref`` does for ICLabel), and a RuntimeWarning says
        what was done; ``inst`` is not changed. mne-icalabel itself warns
        that ICLabel was designed with extended infomax decompositions,
        which this is not (see :meth:`to_mne_ica`).

        Parameters
        ----------
        inst : mne.io.Raw or mne.Epochs
            The recording (e.g. the one of fit), with the fitted EEG
            channels and their positions (a montage); Epochs are labelled end
            to end, as ``fit`` takes them.
        backend : None, "torch" or "onnx"
            mne-icalabel's backend for the network; None: the first
            installed (torch, which sepkit needs anyway).

        Returns
        -------
        result : dict
            ``labels`` (list of str, one per source: the most probable of
            "brain", "muscle artifact", "eye blink", "heart beat", "line
            noise", "channel noise", "other"), ``y_pred_proba`` (ndarray,
            shape (n_sources,), its probability; these two as
            ``mne_icalabel.label_components``), ``probabilities`` (ndarray,
            shape (n_sources, 7), every class, rows summing to 1) and
            ``classes`` (the columns' names).

        Raises
        ------
        ImportError
            When mne-icalabel is not installed.
        ValueError
            As :meth:`to_mne_ica` for non-linear families; for channels
            without positions; where the average reference would merge
            sources (``n_sources`` equal to the channel count on a recording
            not referenced to the average: fit on average-referenced data).

        Examples
        --------
        >>> result = sep.label_components(raw)  # doctest: +SKIP
        >>> result["labels"][:3], result["y_pred_proba"][:3]  # doctest: +SKIP
        (['brain', 'eye blink', 'brain'], array([0.98, 0.93, 0.87]))
        >>> sep.exclude = [k for k, label in enumerate(result["labels"])
        ...                if label == "eye blink"]  # doctest: +SKIP
        """
        from .io.mne_ica import label_ica

        raw = _continuous_raw(inst, "label_components")
        self._check_fitted()
        return label_ica(raw, self.to_mne_ica(info=raw), backend=backend)

    # ------------------------------------------------------------ files
    def save_sources(self, inst, path, *, overwrite: bool = False, u=None) -> Path:
        """Write :meth:`get_sources` of ``inst`` to a FIF file, atomically.

        Parameters
        ----------
        inst : mne.io.Raw
        path : str or Path
            Ends in ``.fif`` or ``.fif.gz`` (MNE convention: ``..._raw.fif``).
        overwrite : bool
            Replace an existing file; otherwise a FileExistsError is raised
            before anything is computed or written.
        u : None, "annotations", "events" or ndarray
            As in ``transform``.

        Returns
        -------
        path : Path
        """
        # Refuse the target before computing the sources.
        path = _check_fif_target(path, overwrite)
        return save_fif(self.get_sources(inst, u=u), path)

    def save_cleaned(self, inst, path, exclude=None, *, overwrite: bool = False, u=None) -> Path:
        """Write :meth:`apply` of ``inst`` to a FIF file, atomically.

        Parameters are as in :meth:`save_sources` and :meth:`apply`.

        Returns
        -------
        path : Path
        """
        path = _check_fif_target(path, overwrite)
        return save_fif(self.apply(inst, exclude=exclude, u=u), path)


def _check_span(raw, start, duration) -> tuple[float, float]:
    """(start, stop) in seconds of a plot's span inside ``raw``; stop is clipped to its end."""
    start = check_float("start", start, min_value=0.0)
    duration = check_float("duration", duration, min_value=0.0, strict_min=True)
    length = raw.n_times / raw.info["sfreq"]
    if start >= length:
        raise ValueError(f"'start' ({start:g} s) must be before the end of raw ({length:g} s).")
    return start, min(length, start + duration)


def _typed_reference(raw, ch_name, ch_type: str) -> list[str]:
    """``ch_name`` as a checked list of names, or (None) the good channels of ``ch_type``."""
    if ch_name is not None:
        names = [ch_name] if isinstance(ch_name, str) else list(ch_name)
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(
                f"'ch_name' must be None, a channel name or a list of names, got {ch_name!r}."
            )
        check_names_present(raw, names, "'ch_name' names", "raw")
        return names
    return _good_of_type(raw, ch_type)


def _good_of_type(raw, ch_type: str, name=None) -> list[str]:
    """The good channels of ``ch_type`` in ``raw`` whose names ``name`` (a regex) matches."""
    bads = set(raw.info["bads"])
    types = raw.get_channel_types()
    return [
        n
        for n, t in zip(raw.ch_names, types, strict=True)
        if t == ch_type and n not in bads and (name is None or name.search(n))
    ]


def _frontal_channels(raw) -> list[str]:
    return [n for n in _good_of_type(raw, "eeg") if _FRONTAL.match(n)]


# What to do about a flat reference, per method (check_references' advice).
_REFERENCE_FIX = {
    "find_bads_eog": (
        "Pass ch_name=['Fp1', 'Fp2'] or other channels that record the eyes, or mark "
        "them bad (raw.info['bads']) to score the frontal channels instead."
    ),
    "find_bads_ecg": "Pass ch_name naming a channel that records the heart.",
}


def _check_scored_references(raw, names: list[str], good: np.ndarray, what: str) -> None:
    """Refuse reference channels of ``what`` that are flat or not finite on the ``good`` samples."""
    check_references(raw.get_data(picks=names)[:, good], names, what, _REFERENCE_FIX[what])


def _array_fit_info(info, n_channels: int):
    """The EEG channels of ``info`` named as a separator fitted on an array names its rows.

    An array carries no channel names (the fit calls them ch0, ch1, ...); its rows are
    taken to be the EEG channels of ``info`` in their order, as ``transform`` and
    ``apply`` take those of a Raw.
    """
    import mne

    picks = mne.pick_types(info, eeg=True, exclude="bads")  # as _fitted_names picks a Raw's
    if len(picks) != n_channels:
        raise ValueError(
            f"The separator was fitted on an array of {n_channels} channels, whose rows are "
            f"taken to be the EEG channels of 'info' in order, but 'info' has {len(picks)}. "
            "Pass the info of the Raw the array came from (raw.info), or fit on that Raw."
        )
    info = mne.pick_info(info, picks)  # a copy
    mne.rename_channels(info, {n: f"ch{i}" for i, n in enumerate(info.ch_names)})
    return info


def _overlay_data(sep, inst, removed, span, u, fitted):
    """(before, after, start) of ``plot_overlay``: the fitted channels, uncleaned and cleaned.

    A Raw is cleaned whole (u counts windows from its first sample), then cut to
    ``span`` = (start, duration); an Evoked is shown whole, from its first time.
    """
    import mne

    if isinstance(inst, mne.Evoked):
        cleaned = sep.apply(inst, exclude=removed, u=u)
        return inst.get_data(picks=fitted), cleaned.get_data(picks=fitted), float(inst.times[0])
    _check_raw_arg(inst, "an mne.io.Raw or mne.Evoked")
    start, stop = _check_span(inst, *span)
    sfreq = inst.info["sfreq"]
    cleaned = sep.apply(inst, exclude=removed, u=u)
    cut = slice(int(round(start * sfreq)), int(round(stop * sfreq)))
    return inst.get_data(picks=fitted)[:, cut], cleaned.get_data(picks=fitted)[:, cut], start


def _check_segment_rate(sep, inst) -> None:
    """Refuse Epochs / Evoked at another rate than the fit's, as transform refuses a Raw."""
    expected, got = getattr(sep, "sample_rate_", None), float(inst.info["sfreq"])
    if expected is not None and got != float(expected) and not sep.fitted_.per_sample:
        raise ValueError(
            f"The {type(inst).__name__} data are at {got:g} Hz but the model expects "
            f"{float(expected):g} Hz (the '{sep.family_}' family's model reads time, not just "
            f"each sample). Resample them to {float(expected):g} Hz first "
            f"(.resample({float(expected):g})), or fit the separator at their rate."
        )


def _heartbeats(raw, ecg_name: str, band, reject_by_annotation: bool) -> np.ndarray:
    """The heartbeats of ``find_bads_ecg(method="ctps")``: MNE's QRS detector in ``band``."""
    l_freq, h_freq = check_band(*band, float(raw.info["sfreq"]))
    if l_freq is None or h_freq is None:
        raise ValueError(
            f"find_bads_ecg(method='ctps') finds the heartbeats in the band l_freq to "
            f"h_freq and needs both, got l_freq={band[0]!r} and h_freq={band[1]!r}. Pass "
            "both (MNE's 8.0 and 16.0 are the defaults)."
        )
    return ecg_peaks(
        raw, ecg_name, l_freq=l_freq, h_freq=h_freq, reject_by_annotation=reject_by_annotation
    )


def _eog_choice(raw, ch_name, stacklevel: int = 3) -> tuple[list[str], bool]:
    """(reference channels of ``find_bads_eog``, whether they were chosen by their names).

    In this order: ``ch_name``; the good EOG-typed channels; the good
    EEG-typed channels whose names say EOG (``_EOG_NAME``: EEGLAB and
    BrainVision files type their EOG leads as EEG); the frontal EEG channels
    (``_FRONTAL``). The last two draw a RuntimeWarning naming the channels
    and why; none of them is a ValueError.
    """
    eog = _typed_reference(raw, ch_name, "eog")
    if eog:
        return eog, False
    named = _good_of_type(raw, "eeg", _EOG_NAME)
    if named:
        warnings.warn(
            "The recording has no EOG-typed channel; using the EEG-typed channel(s) "
            f"{named}, whose names say EOG, as the EOG reference (typed EEG, they are also "
            "among the channels fitted and cleaned, as in MNE). Set their type with "
            f"raw.set_channel_types({{{named[0]!r}: 'eog'}}) before fitting, or pass "
            "ch_name= to choose others.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        return named, True
    frontal = _frontal_channels(raw)
    if not frontal:
        raise ValueError(
            "The recording has no EOG channel and no frontal EEG channel (Fp1, Fp2, Fpz, "
            "AF*) to use instead. Pass ch_name= naming the channel(s) that record eye "
            "activity, or set "
            "their type with raw.set_channel_types({'name': 'eog'})."
        )
    warnings.warn(
        f"The recording has no EOG channel; using the frontal EEG channel(s) {frontal} as "
        "the EOG reference. Pass ch_name= to choose others.",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return frontal, False


def _ecg_reference(raw, ch_name) -> list[str]:
    """The ECG reference channels of ``find_bads_ecg``, or the error saying there are none."""
    names = _typed_reference(raw, ch_name, "ecg")
    if not names:
        raise ValueError(
            "The recording has no ECG channel to score the sources against. Pass ch_name= "
            "naming the channel that records the heart, or set its type with "
            "raw.set_channel_types({'name': 'ecg'})."
        )
    return names


def _reference_channels(inst, names):
    """The channels ``names`` of ``inst`` (get_sources' add_channels), or None.

    A new Raw / Epochs / Evoked timed like the sources (their info is new too,
    without ``inst``'s filter settings, which MNE would refuse to merge).
    """
    import mne

    if names is None:
        return None
    names = [names] if isinstance(names, str) else list(names)
    check_names_present(
        inst,
        names,
        "add_channels names",
        "the recording",
        "Pass channels of the recording (e.g. its EOG), or None.",
    )
    types = inst.get_channel_types(picks=names)
    data = inst.get_data(picks=names)
    if is_epochs_or_evoked(inst):
        info = mne.create_info(names, inst.info["sfreq"], types)
        return like_segments(data if data.ndim == 3 else data[None], info, inst)
    return raw_like(data, inst, names, types)


def _check_baseline(inst, on_baseline: str) -> None:
    """apply's ``on_baseline`` for baseline-corrected Epochs / Evoked (MNE's three answers)."""
    check_option("on_baseline", on_baseline, ("reapply", "warn", "raise"))
    if inst.baseline is None or on_baseline == "reapply":
        return
    what = f"the {type(inst).__name__} were baseline-corrected ({inst.baseline})"
    if on_baseline == "raise":
        raise ValueError(
            f"{what}, and on_baseline='raise'. Pass on_baseline='reapply' to correct them "
            "again after the cleaning, or 'warn' to leave the baseline as the cleaning leaves it."
        )
    warnings.warn(
        f"{what}; the cleaning moves their baseline, which is left as it is "
        "(on_baseline='warn'). Pass on_baseline='reapply' to correct it again.",
        RuntimeWarning,
        stacklevel=4,
    )


# What each family that to_mne_ica cannot export is, for its error.
_NOT_A_MATRIX = {
    "network": "the 'network' family (mixing_='nonlinear'), a neural network",
    "flow": "the 'flow' family (mixing_='flow'), an invertible neural network",
    "tf": "the 'tf' family (domain_='tf'), a time-frequency model",
    "tf_pretrained": "the 'tf_pretrained' family (a pretrained source model), a "
    "time-frequency model",
}


def _not_exportable(family: str, unwarped: bool) -> str:
    """The error of ``to_mne_ica`` for a separator of ``family`` (``unwarped``: sensor unwarping)."""
    if family == "linear" and unwarped:
        what = "the post-nonlinear model (sensor_coefs_ set): a matrix times per-channel unwarped signals"
        # No Python example in the advice: the command line rewrites mixing='linear'
        # as its option, and an example would read as neither.
        auto = " (mixing='auto' chooses the post-nonlinear model where channels look clipped)"
    else:
        what = _NOT_A_MATRIX.get(
            family, f"the {family!r} family, whose sources are not a matrix times the channels"
        )
        auto = ""
    return (
        "to_mne_ica exports only the family whose sources are a matrix times the "
        "channels, as an ICA's: family_='linear' without sensor unwarping "
        f"(sensor_coefs_ None). This separator is {what}. Refit with mixing='linear'{auto}."
    )


def _check_zscore_reach(threshold: float, n_sources: int, auto: bool) -> None:
    """Refuse (or, for the default threshold, warn about) a z-score no source can reach."""
    reach = (n_sources - 1) / np.sqrt(n_sources)
    if threshold < reach:
        return
    why = (
        f"the z-scores of {n_sources} values never exceed (n - 1) / sqrt(n) = {reach:.2f}. "
        f"Pass a threshold below {reach:.2f}, or measure='correlation'."
    )
    if not auto:
        raise ValueError(
            f"measure='zscore' with threshold={threshold:g} cannot flag any of "
            f"{n_sources} sources: {why}"
        )
    # MNE flags none without a word; the default was not the user's choice, so no error.
    warnings.warn(
        f"measure='zscore' flags none of {n_sources} sources with the default threshold "
        f"({threshold:g}): {why}",
        UserWarning,
        stacklevel=4,
    )


def _check_by_name(positional) -> None:
    """Refuse ``apply(inst, [k])``: MNE reads ``[k]`` as ``include``, sepkit read it as ``exclude``."""
    if positional:
        raise TypeError(
            f"apply takes include and exclude by name, got {len(positional)} more positional "
            f"argument(s) ({positional[0]!r}). Pass exclude={positional[0]!r} to remove those "
            f"sources, or include={positional[0]!r} to keep only them (ICA.apply(inst, "
            f"{positional[0]!r}) means include)."
        )


def _check_pca_components(n_pca_components) -> None:
    """apply's ``n_pca_components``: MNE's default (None) only."""
    if n_pca_components is not None:
        raise ValueError(
            f"n_pca_components={n_pca_components!r}: sepkit's apply keeps the data beyond the "
            "sources as they are (MNE's n_pca_components=None). To keep only some principal "
            "components, apply the exported ICA of a linear separator: "
            "sep.to_mne_ica().apply(raw, n_pca_components=k)."
        )


def _check_raw_span(inst, start, stop, what: str) -> None:
    """``start`` / ``stop`` ``what`` (crop, score, clean) a Raw only: the error for Epochs."""
    if (start is not None or stop is not None) and is_epochs_or_evoked(inst):
        span = "a Raw" if what == "crop" else "a span of a Raw"
        raise ValueError(
            f"'start' and 'stop' {what} {span}; for {type(inst).__name__} data pass None "
            "(crop them with .crop() first)."
        )


def _scored_samples(inst, raw, reject_by_annotation: bool, start, stop) -> np.ndarray:
    """The samples of ``raw`` that find_bads_* score: outside bad spans, within start-stop."""
    check_option("reject_by_annotation", reject_by_annotation, (True, False))
    _check_raw_span(inst, start, stop, "score")
    good = _good_samples(raw, reject_by_annotation)
    if start is None and stop is None:
        return good
    return good & span_mask(raw, start, stop)


def _good_samples(raw, reject_by_annotation: bool) -> np.ndarray:
    """True on the samples of ``raw`` that scoring uses: outside bad spans, or all."""
    from .io.eeg import bad_annotation_mask

    if reject_by_annotation:
        return ~bad_annotation_mask(raw)
    return np.ones(raw.n_times, dtype=bool)


def _check_channel_picks(picks, fitted: list[str]) -> list[str] | None:
    """``plot_overlay``'s ``picks`` as a list of fitted channel names (None stays None)."""
    if picks is None:
        return None
    picks = [picks] if isinstance(picks, str) else list(picks)
    unknown = [name for name in picks if name not in fitted]
    if unknown or not picks:
        raise ValueError(
            f"'picks' must name fitted channels; {unknown or picks} are not among the "
            f"{len(fitted)} the separator was fitted on (e.g. {fitted[:3]})."
        )
    return picks


def _shown(fig, show):
    """``fig`` (a figure or a list of them), displayed first when ``show``."""
    check_option("show", show, (True, False))
    if show:
        import matplotlib.pyplot as plt

        # Our figures are built outside pyplot (no figure left open by a plot that
        # is not shown), and plt.show displays only pyplot's: hand them over first.
        for one in fig if isinstance(fig, list) else [fig]:
            if getattr(one.canvas, "manager", None) is None:
                plt.figure(one)
        plt.show()
    return fig


def segment_transform(sep, inst, u, picks, resample):
    """``transform`` of Epochs / Evoked: their ``get_sources``."""
    if picks is not None or resample:
        raise ValueError(
            f"'picks' and 'resample' apply to a Raw; for {type(inst).__name__} data "
            "pick and resample them first (e.g. .pick(...), .resample(...))."
        )
    return sep.get_sources(inst, u=u)


def segment_sensors(sep, inst, u):
    """``inverse_transform`` of Epochs / Evoked of sources: the same type, fitted channels."""
    import mne

    what = type(inst).__name__
    if u is not None:
        raise ValueError(f"u is for arrays; {what} data have no u of their own. Pass u=None.")
    names = [f"IVAE{k:03d}" for k in range(sep.n_sources_)]
    missing = [name for name in names if name not in inst.ch_names]
    if missing:
        raise ValueError(
            f"The {what} data lack the source channel(s) {missing[:5]}. Pass the output "
            "of get_sources (or transform) of this separator."
        )
    S = inst.get_data(picks=names).astype(np.float64)
    X = _segment_inverse(sep, S[None] if S.ndim == 2 else S)  # an Evoked: one epoch
    info = getattr(sep, "info_", None)
    if info is None:
        ch = sep.ch_names_ or tuple(f"ch{i}" for i in range(sep.n_channels_))
        info = mne.create_info(list(ch), inst.info["sfreq"], "eeg")
    return like_segments(X, info, inst)


def _segment_inverse(sep, S: np.ndarray) -> np.ndarray:
    """The sensors of per-epoch sources, shape (n_epochs, n_channels, n_times).

    ``S`` (n_epochs, n_sources, n_times) goes through ``inverse_transform``
    end to end, as one array.
    """
    n_epochs, n_sources, n_times = S.shape
    flat = S.transpose(1, 0, 2).reshape(n_sources, n_epochs * n_times)
    out = np.asarray(sep.inverse_transform(flat), dtype=np.float64)
    return out.reshape(-1, n_epochs, n_times).transpose(1, 0, 2)


def like_segments(data, info, inst):
    """``data`` (n_epochs, n_rows, n_times) as Epochs / Evoked timed like ``inst``.

    Epochs keep ``inst``'s events, ``event_id``, ``tmin``, metadata, and which
    epochs of the recording they are (``selection``, ``drop_log``), as
    ``ICA.get_sources`` keeps them; an Evoked (``data`` holding one epoch) its
    ``tmin``, ``nave`` and comment.
    """
    import mne

    info = with_recording_fields(info, inst.info)
    if isinstance(inst, mne.Evoked):
        return mne.EvokedArray(
            data[0], info, tmin=inst.times[0], comment=inst.comment, nave=inst.nave,
            verbose="error",
        )  # fmt: skip
    return mne.EpochsArray(
        data, info, events=inst.events, tmin=inst.tmin, event_id=inst.event_id,
        metadata=inst.metadata, selection=inst.selection, drop_log=inst.drop_log,
        verbose="error",
    )  # fmt: skip
