"""MNE Raw as model input and output: channel picking, BAD samples, u from annotations/events.

The estimator's one normalisation of its input (:mod:`sepkit.separator`)
calls these for an ``mne.io.BaseRaw``; the sources and reconstructions it
returns for a Raw are built here, aligned in time with the input (as
``mne.preprocessing.ICA.get_sources``). MNE is imported inside the functions
so that ``import sepkit`` stays fast.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from .._check import check_float, check_option

# Label given, with u="annotations", to samples that no (non-bad) annotation
# covers, so that every sample has a u and the whole recording can be separated.
UNLABELLED = "<unlabelled>"


@dataclass(frozen=True)
class RawInput:
    """What ``IVAESeparator._unpack`` keeps of a Raw to build outputs.

    Duck-types the attributes of :class:`Recording` that the estimator reads
    (``ch_names``, ``sample_rate``, ``kind``).
    """

    raw: object  # the mne.io.BaseRaw the data came from
    ch_names: tuple[str, ...]
    sample_rate: float
    kind: str = "eeg"


def is_epochs_or_evoked(obj) -> bool:
    """Whether ``obj`` is an mne.Epochs or mne.Evoked (by class, without importing MNE)."""
    return any(c.__name__ in ("BaseEpochs", "Evoked") for c in type(obj).__mro__)


def epochs_as_raw(epochs, u=None):
    """(Raw, u) to fit on ``epochs``: the epochs end to end, as ``ICA.fit(epochs)`` takes them.

    Parameters
    ----------
    epochs : mne.Epochs
        Their good epochs (after ``drop_bad``) are used.
    u : None, "events" or ndarray, shape (n_epochs * n_times,)
        None: the default u of fit, windows of the epochs laid end to end.
        ``"events"``: each sample labelled with its epoch's event name (the
        condition, e.g. ``"auditory/left"``), so that the prior changes with
        the condition. An array: one label per sample of the epochs end to end.

    Returns
    -------
    raw : mne.io.RawArray
        Shape (n_channels, n_epochs * n_times), the epochs' info.
    u : None or ndarray
    """
    import mne

    if isinstance(epochs, mne.Evoked):
        raise TypeError(
            "fit takes an ndarray, a Recording, an mne.io.Raw or mne.Epochs, got Evoked: an "
            "average, whose samples are not observations of the sources. Fit on the Raw or "
            "the Epochs it was averaged from; get_sources and apply take an Evoked."
        )
    data = epochs.get_data()  # (n_epochs, n_channels, n_times)
    n_epochs, n_channels, n_times = data.shape
    if n_epochs == 0:
        raise ValueError("The Epochs hold no epochs (all dropped?); pass Epochs with data.")
    flat = data.transpose(1, 0, 2).reshape(n_channels, n_epochs * n_times)
    raw = mne.io.RawArray(flat, epochs.info, verbose="error")
    if isinstance(u, str):
        if u != "events":
            raise ValueError(
                f"u={u!r} reads a Raw's annotations; for Epochs pass None (windows of the "
                "epochs end to end), 'events' (each epoch's event) or one label per sample "
                f"of the epochs end to end ({n_epochs * n_times})."
            )
        names = {code: name for name, code in epochs.event_id.items()}
        u = np.repeat([names.get(code, f"event {code}") for code in epochs.events[:, 2]], n_times)
    return raw, u


def raw_to_data(raw, picks=None, fitted_names=None):
    """(data, sample_rate, "raw", RawInput) for an MNE Raw.

    Parameters
    ----------
    raw : mne.io.BaseRaw
    picks : str, list of str or None
        As in :func:`sepkit.io.to_recording`; None means ``"eeg"`` (bad
        channels and EOG/ECG-typed channels are left out).
    fitted_names : tuple of str or None
        The channels a fitted separator was trained on. With ``picks=None``
        exactly these are taken, in this order (also if they are now marked
        bad, so the data match the model); a Raw lacking any of them is an
        error that names them.

    Returns
    -------
    data : ndarray, shape (n_channels, n_times), float32
    sample_rate : float
    kind : str
        ``"raw"``.
    container : RawInput
    """
    from .eeg import to_recording

    if picks is None and fitted_names is not None:
        missing = [name for name in fitted_names if name not in raw.ch_names]
        if missing:
            raise ValueError(
                f"The Raw lacks channel(s) {missing} that the separator was fitted on. Pass a "
                "recording with the same channels (rename them with raw.rename_channels, or "
                "interpolate missing ones), or refit."
            )
        names = tuple(fitted_names)
        data = raw.get_data(picks=list(names)).astype(np.float32)
    else:
        rec = to_recording(raw, picks="eeg" if picks is None else picks)
        names, data = rec.ch_names, rec.data
        types = raw.get_channel_types(picks=list(names))
        triggers = [n for n, kind in zip(names, types, strict=True) if kind == "stim"]
        if triggers:  # as ICA.fit, which takes data channels (and EOG) only
            raise ValueError(
                f"picks={picks!r} takes the trigger (stim) channel(s) {triggers[:5]}, whose "
                "values are event codes, not signals. Pick the signal channels: picks='eeg' "
                "or 'data', or a list of names without them."
            )
        if fitted_names is not None and tuple(names) != tuple(fitted_names):
            raise ValueError(
                f"picks={picks!r} selects channels {list(names)[:12]} but the separator was "
                f"fitted on {list(fitted_names)[:12]}. Pass picks=None to take the fitted "
                "channels."
            )
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero(~finite)]
        marked = [name for name in bad if name in raw.info["bads"]]
        if fitted_names is not None and marked:
            # Marking does not help here: the separator's unmixing reads these channels.
            raise ValueError(
                f"Raw channel(s) {marked} contain NaN or Inf values and are marked bad, but "
                "the separator was fitted on them, so its sources need them. Interpolate "
                "them (raw.interpolate_bads(reset_bads=False)), or refit without them."
            )
        raise ValueError(
            f"Raw channel(s) {bad} contain NaN or Inf values. Mark them bad (add them to "
            "raw.info['bads'], e.g. with sepkit.io.mark_bad_channels) or interpolate them "
            "with raw.interpolate_bads()."
        )
    container = RawInput(raw, tuple(names), float(raw.info["sfreq"]))
    return np.ascontiguousarray(data), container.sample_rate, "raw", container


def check_flat_eeg(container: RawInput) -> None:
    """Raise a ValueError naming picked EEG channels that are flat (in volts)."""
    from .eeg import check_eeg_channels

    raw = container.raw
    types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    eeg = [name for name in container.ch_names if types[name] == "eeg"]
    if eeg:
        check_eeg_channels(raw, picks=eeg)


def sources_to_raw(out: np.ndarray, raw, names):
    """A RawArray of ``misc`` channels that lines up with ``raw`` in time.

    Sample rate, ``first_samp``, ``meas_date`` and annotations are copied, as
    ``mne.preprocessing.ICA.get_sources`` does, so events and annotations of
    the input keep pointing at the same samples.
    """
    return _like_raw(out, raw, mne_info=None, names=names, ch_types="misc")


def raw_like(data: np.ndarray, raw, names, ch_types):
    """A RawArray of ``data`` with channels ``names`` of ``ch_types``, lined up with ``raw``.

    As :func:`sources_to_raw` (rate, ``first_samp``, ``meas_date``, annotations).
    """
    return _like_raw(data, raw, mne_info=None, names=names, ch_types=ch_types)


def sensors_to_raw(out: np.ndarray, raw, names, info=None):
    """A RawArray of sensor data (``inverse_transform`` of a Raw of sources).

    ``info`` (the fitted channels' info, with positions) is used when given;
    otherwise the channels are typed ``eeg`` without positions.
    """
    return _like_raw(out, raw, mne_info=info, names=names, ch_types="eeg")


def picked_info(container: RawInput):
    """The ``mne.Info`` of the picked channels (positions, filter settings)."""
    import mne

    raw = container.raw
    idx = [raw.ch_names.index(name) for name in container.ch_names]
    return mne.pick_info(raw.info, idx, verbose="error")


def info_to_dict(info) -> dict:
    """What a saved separator keeps of the fitted channels' ``mne.Info``, as JSON values.

    The rate, the channels' names and types, the filter edges and the montage
    (channel positions and fiducials, with their coordinate frame): what
    ``to_mne_ica``, the topographies and ICLabel read. :func:`info_from_dict`
    rebuilds an Info from it.
    """
    montage = info.get_montage()
    positions = None
    if montage is not None:
        pos = montage.get_positions()

        def point(value):
            return None if value is None else [float(v) for v in value]

        positions = {
            "ch_pos": {
                name: point(xyz) for name, xyz in pos["ch_pos"].items() if np.isfinite(xyz).all()
            },
            "coord_frame": str(pos["coord_frame"]),
            **{key: point(pos[key]) for key in ("nasion", "lpa", "rpa")},
        }
    return {
        "sfreq": float(info["sfreq"]),
        "ch_names": list(info["ch_names"]),
        "ch_types": list(info.get_channel_types()),
        "highpass": float(info["highpass"]),
        "lowpass": float(info["lowpass"]),
        "montage": positions,
    }


def info_from_dict(values: dict):
    """The ``mne.Info`` that :func:`info_to_dict` described."""
    import mne

    info = mne.create_info(values["ch_names"], values["sfreq"], values["ch_types"])
    with info._unlock():
        info["highpass"], info["lowpass"] = values["highpass"], values["lowpass"]
    positions = values["montage"]
    if positions is not None:
        fiducials = {k: positions[k] for k in ("nasion", "lpa", "rpa") if positions[k] is not None}
        montage = mne.channels.make_dig_montage(
            ch_pos={name: np.asarray(xyz) for name, xyz in positions["ch_pos"].items()},
            coord_frame=positions["coord_frame"],
            **{k: np.asarray(v) for k, v in fiducials.items()},
        )
        info.set_montage(montage, on_missing="ignore", verbose="error")
    return info


def _like_raw(out, raw, *, mne_info, names, ch_types):
    import mne

    if mne_info is None:
        mne_info = mne.create_info(list(names), raw.info["sfreq"], ch_types)
        # Sources of a filtered recording are filtered alike (as ICA.get_sources
        # keeps them): tools that read info["highpass"], is_highpassed among
        # them, must not take them for unfiltered data.
        with mne_info._unlock():
            mne_info["highpass"] = raw.info["highpass"]
            mne_info["lowpass"] = raw.info["lowpass"]
    mne_info = with_recording_fields(mne_info, raw.info)
    result = mne.io.RawArray(
        np.asarray(out, dtype=np.float64), mne_info, first_samp=raw.first_samp, verbose="error"
    )
    return align_in_time(result, raw)


def with_recording_fields(info, source):
    """A copy of ``info`` with what ``source`` (an Info) says of the recording as a whole.

    The description, experimenter, subject, device, line frequency and
    project (:data:`_RECORDING_INFO`): an output built from a recording keeps
    them, as ``ICA.get_sources`` and ``ICA.apply`` keep the input's info.
    """
    info = info.copy()
    with info._unlock():
        for key in _RECORDING_INFO:
            if source.get(key) is not None:
                info[key] = deepcopy(source[key])
    return info


# The fields of an mne.Info about the recording as a whole (not its channels).
_RECORDING_INFO = (
    "description",
    "experimenter",
    "subject_info",
    "device_info",
    "line_freq",
    "proj_id",
    "proj_name",
)


def align_in_time(result, raw):
    """``result`` (a Raw of the same samples as ``raw``) with its date and annotations."""
    result.set_meas_date(raw.info["meas_date"])
    annotations = raw.annotations.copy()
    if annotations.orig_time is None:
        # Without a meas_date, a Raw reports onsets from its first sample ever
        # recorded but set_annotations reads them from the first sample it
        # holds; undo the shift so annotations stay on the same samples.
        annotations.onset = annotations.onset - raw.first_time
    result.set_annotations(annotations, verbose="error")
    return result


def annotation_labels(raw, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Labels u from the annotations of ``raw`` (``u="annotations"``).

    Parameters
    ----------
    raw : mne.io.BaseRaw
    classes : ndarray of str or None
        The labels seen in fit; None (in fit) takes every non-bad description.

    Returns
    -------
    u : ndarray of str, shape (n_times,)
        The description of the annotation over each sample (the later one
        where they overlap); :data:`UNLABELLED` where none is.
    bad : ndarray of bool, shape (n_times,)
        True under bad annotations (:func:`sepkit.io.bad_annotation_mask`).
    """
    from .eeg import _is_label_description, bad_annotation_mask, labels_from_annotations

    if classes is None:
        descs = sorted(
            {str(d) for d in raw.annotations.description if _is_label_description(d)} - {UNLABELLED}
        )
    else:
        descs = [str(c) for c in classes if str(c) != UNLABELLED]
    mapping = {d: i for i, d in enumerate(descs)}
    codes, _ = labels_from_annotations(
        raw, mapping=mapping, reject_by_annotation=False, unlabelled="own"
    )
    names = np.asarray([*descs, UNLABELLED])
    u = names[codes]
    if classes is None and (u != UNLABELLED).sum() == 0:
        raise ValueError(
            "u='annotations' but no annotation of the Raw covers any sample (found "
            f"{sorted(set(map(str, raw.annotations.description)))[:10]}; bad ones and "
            "zero-duration markers label nothing). Give the annotations durations, or pass "
            "u=sepkit.io.labels_from_events(raw, *mne.events_from_annotations(raw))[0]."
        )
    return u, bad_annotation_mask(raw)


def is_events_array(u, raw) -> bool:
    """True when ``u`` is an MNE events array (n_events, 3) rather than per-sample u."""
    return (
        isinstance(u, np.ndarray)
        and u.ndim == 2
        and u.shape[1] == 3
        and np.issubdtype(u.dtype, np.integer)
        and raw.n_times != 3
    )


def event_labels(raw, events=None, classes=None) -> np.ndarray:
    """Labels u from events (``u="events"`` or ``u=events``).

    Each event labels the samples from it to the next event as
    ``"event <code>"`` (events mark state changes: block or stage starts);
    samples before the first event get :data:`UNLABELLED`.

    Parameters
    ----------
    raw : mne.io.BaseRaw
    events : ndarray of int, shape (n_events, 3) or None
        MNE events; None reads them from the stim channel(s) of ``raw``
        with ``mne.find_events``.
    classes : ndarray of str or None
        The labels seen in fit; None (in fit) takes every event code.

    Returns
    -------
    u : ndarray of str, shape (n_times,)
    """
    import mne

    from .eeg import labels_from_events

    if events is None:
        if not any(t == "stim" for t in raw.get_channel_types()):
            raise ValueError(
                "u='events' reads events from a stim channel, but the Raw has none. Pass the "
                "events array instead, u=events (shape (n_events, 3), e.g. from "
                "mne.events_from_annotations(raw)[0]), or u='annotations'."
            )
        events = mne.find_events(raw, verbose="error")
    events = np.asarray(events)
    if classes is None:
        codes = np.unique(events[:, 2]) if events.size else np.zeros(0, dtype=np.int64)
    else:
        codes = np.asarray([int(c.split()[-1]) for c in classes if str(c) != UNLABELLED])
    if codes.size == 0:
        raise ValueError(
            "u='events' but no event was found, so every sample would get the same u. Check "
            "the stim channel (mne.find_events(raw)) or pass u=events."
        )
    names = np.asarray([*(f"event {int(c)}" for c in codes), UNLABELLED])
    event_id = {str(int(c)): int(c) for c in codes}
    idx, _ = labels_from_events(raw, events, event_id, reject_by_annotation=False, unlabelled="own")
    return names[idx]


def resolve_raw_u(raw, u, reject_by_annotation):
    """u and the mask of samples to fit on, for a Raw given to ``fit``.

    Returns
    -------
    u : None or ndarray
        ``"annotations"``, ``"events"`` or an events array resolved to
        per-sample labels; other values as given.
    good : ndarray of bool, shape (n_times,)
        False under bad annotations when ``reject_by_annotation``.
    source : False, "annotations" or "events"
        Where the labels came from (False: u as given, or the window index).
    """
    from .eeg import bad_annotation_mask

    source = False
    bad = bad_annotation_mask(raw)
    if isinstance(u, str):
        check_option("u", u, ("annotations", "events"))
        source = u
        if u == "annotations":
            u, bad = annotation_labels(raw)
        else:
            u = event_labels(raw)
    elif is_events_array(u, raw):
        source = "events"
        u = event_labels(raw, u)
    good = ~bad if reject_by_annotation else np.ones(raw.n_times, dtype=bool)
    if not good.any():
        raise ValueError(
            "Every sample of the Raw lies under a bad annotation (descriptions starting with "
            "'bad', any case), so nothing is left to fit. Remove or shorten those annotations, "
            "or pass reject_by_annotation=False."
        )
    return u, good, source


def ptp_reject_mask(
    data: np.ndarray,
    ch_types,
    sample_rate: float,
    *,
    reject=None,
    flat=None,
    tstep: float = 2.0,
    good=None,
) -> np.ndarray:
    """False over the ``tstep``-second stretches whose peak-to-peak is out of bounds.

    ``mne.preprocessing.ICA.fit``'s ``reject`` / ``flat`` for a Raw: a
    stretch is left out of the fit where some channel of a type in
    ``reject`` spans more than its threshold (peak to peak), or one of a
    type in ``flat`` less. The stretches are cut from the recording's first
    sample; unlike MNE, a last, shorter stretch is judged too (MNE leaves it
    out whatever it holds), and samples outside ``good`` (BAD annotations)
    are not measured, so an artefact already under an annotation rejects
    nothing more.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        The fitted channels, in their units (volts for EEG).
    ch_types : sequence of str, length n_channels
        MNE channel type of each row.
    sample_rate : float
    reject, flat : dict or None
        Channel type -> peak-to-peak threshold (checked by :func:`check_ptp_thresholds`).
    tstep : float
        Seconds per stretch.
    good : ndarray of bool, shape (n_times,), or None
        Samples that may be fitted (None: all).

    Returns
    -------
    keep : ndarray of bool, shape (n_times,)
        ``good`` with the rejected stretches set to False.
    """
    n_times = data.shape[1]
    keep = np.ones(n_times, dtype=bool) if good is None else good.copy()
    step_samples = max(int(np.ceil(tstep * sample_rate)), 1)
    types = np.asarray(ch_types)
    rules = [(reject or {}, np.greater), (flat or {}, np.less)]
    for first in range(0, n_times, step_samples):
        span = keep[first : first + step_samples]
        if not span.any():
            continue
        block = data[:, first : first + step_samples][:, span]
        ptp = block.max(axis=1) - block.min(axis=1)
        if any(
            compare(ptp[types == kind], threshold).any()
            for thresholds, compare in rules
            for kind, threshold in thresholds.items()
        ):
            keep[first : first + step_samples] = False
    return keep


def check_ptp_thresholds(reject, flat, tstep, ch_types) -> None:
    """``reject``, ``flat`` and ``tstep`` of fit, or a ValueError / TypeError that says the fix.

    Each key must be the type of some fitted channel: a threshold for
    channels the fit does not take would be silently ignored.
    """
    present = sorted(set(ch_types))
    for name, thresholds in (("reject", reject), ("flat", flat)):
        if thresholds is None:
            continue
        if not isinstance(thresholds, dict):
            raise TypeError(
                f"{name} must be a dict of channel type -> peak-to-peak threshold (e.g. "
                f"{name}=dict(eeg={'150e-6' if name == 'reject' else '1e-6'})) or None, got "
                f"{type(thresholds).__name__}."
            )
        for kind, value in thresholds.items():
            if kind not in present:
                raise ValueError(
                    f"{name} has the key {kind!r}, but no fitted channel is of that type (the "
                    f"fitted channels are of type(s) {present}). Drop the key, or pick those "
                    "channels (picks=...)."
                )
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise TypeError(
                    f"{name}[{kind!r}] must be a number (a peak-to-peak amplitude in the "
                    f"channels' unit, volts for EEG), got {value!r}."
                )
            if not np.isfinite(value) or value <= 0:
                raise ValueError(
                    f"{name}[{kind!r}] must be a positive, finite peak-to-peak amplitude "
                    f"(volts for EEG, e.g. 150e-6), got {value!r}."
                )
    if isinstance(tstep, bool) or not isinstance(tstep, (int, float, np.floating)):
        raise TypeError(f"tstep must be a number of seconds, got {tstep!r}.")
    if not np.isfinite(tstep) or tstep <= 0:
        raise ValueError(
            f"tstep must be a positive number of seconds (the stretches reject and flat "
            f"judge; MNE's default 2.0), got {tstep!r}."
        )


def check_seconds(name: str, value, raw) -> float:
    """``start`` / ``stop`` (get_sources, fit) in seconds; a non-zero int is refused.

    MNE's ``ICA.get_sources`` and ``ICA.fit`` read an int as a sample index
    and a float as seconds; taking an MNE script's ``start=1000`` as 1000 s
    would choose the wrong span without a word.
    """
    if isinstance(value, Integral) and not isinstance(value, bool) and value != 0:
        rate = raw.info["sfreq"]
        raise TypeError(
            f"{name}={value} is a whole number: sepkit takes {name} in seconds, where "
            f"MNE's ICA reads an int as a sample index. Pass seconds as a float: "
            f"{float(value)} for {value} s, or {_as_float_text(value / rate)} for sample {value} at "
            f"{rate:g} Hz."
        )
    return check_float(name, value, min_value=0.0)


def _as_float_text(seconds: float) -> str:
    """``seconds`` as a float literal: 10.0, not 10 (an int is what the error refuses)."""
    text = f"{seconds:g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def check_time_span(raw, start, stop) -> tuple[float, float]:
    """(start, stop) in seconds of a span of ``raw`` (None: its start / end), or the error.

    The ``start`` / ``stop`` of ``get_sources`` and ``fit``, each through
    :func:`check_seconds`; ``stop`` is exclusive.
    """
    duration = raw.n_times / raw.info["sfreq"]
    tmin = 0.0 if start is None else check_seconds("start", start, raw)
    tmax = duration if stop is None else check_seconds("stop", stop, raw)
    if not tmin < tmax <= duration:
        raise ValueError(
            f"'start' ({tmin:g} s) and 'stop' ({tmax:g} s) must satisfy "
            f"0 <= start < stop <= {duration:g} s (the length of raw)."
        )
    return tmin, tmax


def span_mask(raw, start, stop) -> np.ndarray:
    """True from ``start`` to ``stop`` (seconds, exclusive; :func:`check_time_span`) of ``raw``."""
    tmin, tmax = check_time_span(raw, start, stop)
    mask = np.zeros(raw.n_times, dtype=bool)
    rate = raw.info["sfreq"]
    mask[int(round(tmin * rate)) : int(round(tmax * rate))] = True
    return mask
