"""Semi-synthetic EEG: realistic source time courses, random dipoles in a
spherical head, projected to a real montage with MNE's forward model.

The ground truth (sources ``S`` and gain matrix ``A``) is returned with the
recording, so separated components can be scored against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._check import check_float, check_int, check_option, check_random_state

if TYPE_CHECKING:  # pragma: no cover - typing only
    import mne

__all__ = ["EEG_SOURCE_KINDS", "make_eeg"]

#: Source kinds :func:`make_eeg` can simulate.
EEG_SOURCE_KINDS = (
    "alpha",
    "blink",
    "saccade",
    "muscle",
    "ecg",
    "line_noise",
    "nonstationary",
)

# Default mix, taken in this order for n_sources; beyond its length every
# extra source is "nonstationary" (background activity with time-varying
# variance, the case iVAE's segment-wise prior models).
_DEFAULT_KINDS = (
    "alpha",
    "blink",
    "nonstationary",
    "muscle",
    "saccade",
    "ecg",
    "nonstationary",
    "alpha",
    "line_noise",
)

# Amplitude of each kind at the electrode it affects most, in volts, typical
# of scalp EEG: an RMS for ongoing activity, a peak for transients. Each source
# draws a factor in [0.7, 1.3] on top.
_AMPLITUDE_VOLTS = {
    "alpha": 10e-6,  # RMS
    "blink": 100e-6,  # peak
    "saccade": 30e-6,  # peak of the eye-position step
    "muscle": 5e-6,  # RMS inside bursts
    "ecg": 10e-6,  # R-peak
    "line_noise": 5e-6,  # RMS
    "nonstationary": 8e-6,  # RMS
}

# The 19 electrodes of the classic 10-20 system.
_CLASSIC_1020 = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip

# 10 mm grid: about 2000 candidate dipole positions, forward solution in well
# under a second, and finer spacing changes nothing a separation benchmark sees.
_GRID_SPACING_MM = 10.0
# Default amplifier saturation level, in multiples of the RMS of the linear
# recording: blinks (several times the RMS) get clipped hard, ongoing
# activity only mildly.
_SATURATION_RMS_MULTIPLE = 3.0
_MIN_SAMPLE_RATE = 64.0
_MIN_DURATION = 2.0

_FORWARD_CACHE: dict = {}
_FORWARD_CACHE_SIZE = 8


# --------------------------------------------------------------------------
# Forward model
# --------------------------------------------------------------------------


def _montage_and_channels(montage):
    """(DigMontage, channel names, cache key) for a montage argument."""
    import mne

    if isinstance(montage, mne.channels.DigMontage):
        pos = montage.get_positions()["ch_pos"]
        names = tuple(pos)
        key = ("dig", names, np.round(np.array([pos[n] for n in names]), 6).tobytes())
        return montage, names, key
    if not isinstance(montage, str):
        raise TypeError(
            "'montage' must be a built-in montage name such as 'standard_1020' or "
            f"'biosemi64', or an mne.channels.DigMontage, got {type(montage).__name__}."
        )
    from ..io.eeg import _resolve_montage  # one place knows MNE's montage names

    dig = _resolve_montage(montage)
    if montage in ("standard_1020", "colin27_1020"):
        names = _CLASSIC_1020
    else:
        names = tuple(dig.ch_names)
    return dig, names, ("builtin", montage)


def _forward(montage):
    """Cached (montage, channel names, grid positions (n_points, 3),
    free-orientation gain (n_channels, n_points, 3), sphere centre (3,))."""
    import mne

    dig, names, key = _montage_and_channels(montage)
    if key in _FORWARD_CACHE:
        return _FORWARD_CACHE[key]
    info = mne.create_info(list(names), 1000.0, "eeg")
    info.set_montage(dig, verbose="error")
    # A three-layer sphere (brain, skull, scalp) fitted to the electrodes.
    sphere = mne.make_sphere_model("auto", "auto", info, verbose="error")
    src = mne.setup_volume_source_space(pos=_GRID_SPACING_MM, sphere=sphere, verbose="error")
    fwd = mne.make_forward_solution(
        info, trans=None, src=src, bem=sphere, meg=False, eeg=True, verbose="error"
    )
    if list(fwd["info"]["ch_names"]) != list(names):
        raise RuntimeError("MNE's forward solution reordered the channels; please report this.")
    gain = fwd["sol"]["data"].reshape(len(names), -1, 3)
    rr = fwd["source_rr"]
    center = np.asarray(sphere["r0"], dtype=float)
    for arr in (gain, rr):
        arr.setflags(write=False)
    entry = (dig, info["ch_names"], rr, gain, center)
    if len(_FORWARD_CACHE) >= _FORWARD_CACHE_SIZE:
        _FORWARD_CACHE.pop(next(iter(_FORWARD_CACHE)))
    _FORWARD_CACHE[key] = entry
    return entry


def _candidate_points(kind, rr, center):
    """Indices of grid points where a source of ``kind`` may sit.

    All kinds stay in a cortex-like shell (outer half of the radius) above
    ear level; artefacts go where their generators are nearest: eyes in
    front, muscles at the temples, the heart below, alpha at the back.
    """
    rel = rr - center
    radius = np.linalg.norm(rel, axis=1)
    ok = (radius >= 0.5 * radius.max()) & (rel[:, 2] >= -0.02)
    idx = np.flatnonzero(ok)
    rel = rel[idx]
    if kind in ("blink", "saccade"):
        score = rel[:, 1]  # anterior
    elif kind == "muscle":
        score = np.abs(rel[:, 0]) - rel[:, 2]  # lateral and low
    elif kind == "ecg":
        score = -rel[:, 2]  # low
    elif kind == "alpha":
        score = -rel[:, 1]  # posterior
    else:
        return idx
    return idx[score >= np.quantile(score, 0.9)]


def _orientation(kind, rng):
    """Unit dipole orientation (x right, y anterior, z up)."""
    if kind == "blink":
        # The eyelid sliding over the cornea changes a mostly vertical field.
        ori = np.array([0.0, 0.3, 1.0]) + 0.2 * rng.standard_normal(3)
    elif kind == "saccade":
        # Horizontal eye movements rotate the corneo-retinal dipole sideways.
        ori = np.array([1.0, 0.2, 0.0]) + 0.2 * rng.standard_normal(3)
    else:
        ori = rng.standard_normal(3)
    return ori / np.linalg.norm(ori)


# --------------------------------------------------------------------------
# Source time courses, each normalised to unit RMS (ongoing) or peak (transient)
# --------------------------------------------------------------------------


def _sos_filter(x, sample_rate, low=None, high=None, order=4):
    from scipy.signal import butter, sosfiltfilt

    if low is not None and high is not None:
        sos = butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    elif low is not None:
        sos = butter(order, low, btype="highpass", fs=sample_rate, output="sos")
    else:
        sos = butter(order, high, btype="lowpass", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, x)


def _unit_rms(x):
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def _slow_noise(rng, n_times, sample_rate, cutoff):
    x = _sos_filter(rng.standard_normal(n_times), sample_rate, high=cutoff, order=2)
    return x / x.std()


def _intervals(rng, n_times, sample_rate, draw_gap, draw_len):
    """(start, stop) sample pairs of events separated by random gaps."""
    out, t = [], draw_gap()
    while True:
        start, stop = int(t * sample_rate), int((t + draw_len()) * sample_rate)
        if start >= n_times:
            return out
        out.append((start, min(stop, n_times)))
        t = stop / sample_rate + draw_gap()


def _alpha(rng, n_times, sample_rate, line_freq):
    peak = rng.uniform(8.5, 11.5)
    x = _sos_filter(rng.standard_normal(n_times), sample_rate, peak - 1.0, peak + 1.0)
    # Waxing and waning bursts: a slow envelope squashed to (0, 1).
    envelope = 1.0 / (1.0 + np.exp(-2.0 * _slow_noise(rng, n_times, sample_rate, 0.3)))
    return _unit_rms(x * envelope)


def _blink(rng, n_times, sample_rate, line_freq):
    rate = rng.uniform(0.15, 0.35)  # blinks per second (9-21 per minute)
    w = np.zeros(n_times)
    for start, stop in _intervals(
        rng,
        n_times,
        sample_rate,
        lambda: 0.6 + rng.exponential(1.0 / rate),
        lambda: rng.uniform(0.25, 0.45),
    ):
        phase = np.linspace(0.0, 1.0, stop - start, endpoint=False)
        # Lid closes faster than it opens: a skewed raised cosine.
        w[start:stop] += rng.uniform(0.7, 1.3) * np.sin(np.pi * phase**0.7) ** 2
    if not w.any():  # short recordings (the first blink waits 3-7 s): guarantee one
        length = min(n_times, max(1, int(rng.uniform(0.25, 0.45) * sample_rate)))
        start = int(rng.integers(0, n_times - length + 1))
        phase = np.linspace(0.0, 1.0, length, endpoint=False)
        w[start : start + length] = rng.uniform(0.7, 1.3) * np.sin(np.pi * phase**0.7) ** 2
    return w


def _saccade(rng, n_times, sample_rate, line_freq):
    steps = np.zeros(n_times)
    position, t = rng.uniform(-1, 1), 0
    while t < n_times:
        fixation = int((0.3 + rng.exponential(1.2)) * sample_rate)
        steps[t : t + fixation] = position
        position, t = rng.uniform(-1, 1), t + fixation
    # Each jump takes about 40 ms.
    width = max(1, int(0.04 * sample_rate))
    ramp = np.convolve(steps, np.ones(width) / width, mode="same")
    return ramp - ramp.mean()


def _muscle(rng, n_times, sample_rate, line_freq):
    high = min(120.0, 0.45 * sample_rate)
    x = _sos_filter(rng.standard_normal(n_times), sample_rate, 20.0, high)
    gate = np.zeros(n_times)
    for start, stop in _intervals(
        rng,
        n_times,
        sample_rate,
        lambda: rng.exponential(3.0),
        lambda: rng.uniform(0.2, 1.5),
    ):
        gate[start:stop] = 1.0
    if not gate.any():  # short recordings: guarantee one burst
        start = rng.integers(0, max(1, n_times - int(0.5 * sample_rate)))
        gate[start : start + int(0.5 * sample_rate)] = 1.0
    on = gate > 0
    width = max(1, int(0.02 * sample_rate))
    gate = np.convolve(gate, np.ones(width) / width, mode="same")
    return x * gate / np.sqrt(np.mean(x[on] ** 2))


def _ecg(rng, n_times, sample_rate, line_freq):
    beat_s = 60.0 / rng.uniform(55.0, 85.0)
    beats, t = [], rng.uniform(0.0, beat_s)
    while t * sample_rate < n_times:
        beats.append(int(t * sample_rate))
        t += beat_s * (1.0 + 0.03 * rng.standard_normal())
    # P, Q, R, S, T waves as Gaussians: (centre s, width s, amplitude).
    waves = ((-0.2, 0.025, 0.12), (-0.035, 0.01, -0.15), (0.0, 0.012, 1.0),
             (0.035, 0.01, -0.3), (0.25, 0.045, 0.3))  # fmt: skip
    first_lag = int(-0.35 * sample_rate)
    lag = np.arange(first_lag, int(0.45 * sample_rate)) / sample_rate
    template = sum(a * np.exp(-0.5 * ((lag - c) / s) ** 2) for c, s, a in waves)
    train = np.zeros(n_times)
    train[np.asarray(beats, dtype=int)] = 1.0
    # Shift so each R peak (template index -first_lag) lands on its beat sample.
    return np.convolve(train, template)[-first_lag : -first_lag + n_times]


def _line_noise(rng, n_times, sample_rate, line_freq):
    t = np.arange(n_times) / sample_rate
    w = np.sin(2 * np.pi * line_freq * t + rng.uniform(0, 2 * np.pi))
    if 3 * line_freq < 0.45 * sample_rate:  # odd harmonic from non-linear loads
        w += 0.15 * np.sin(2 * np.pi * 3 * line_freq * t + rng.uniform(0, 2 * np.pi))
    # Slow amplitude drift as people and cables move.
    w *= 1.0 + 0.2 * _slow_noise(rng, n_times, sample_rate, 0.1)
    return _unit_rms(w)


def _nonstationary(rng, n_times, sample_rate, line_freq):
    x = _sos_filter(rng.standard_normal(n_times), sample_rate, high=min(30.0, 0.4 * sample_rate))
    std = np.empty(n_times)
    t = 0
    while t < n_times:
        length = int(rng.uniform(1.0, 4.0) * sample_rate)
        std[t : t + length] = np.exp(0.8 * rng.standard_normal())
        t += length
    return _unit_rms(x * std)


_GENERATORS = {
    "alpha": _alpha,
    "blink": _blink,
    "saccade": _saccade,
    "muscle": _muscle,
    "ecg": _ecg,
    "line_noise": _line_noise,
    "nonstationary": _nonstationary,
}


def _check_kinds(source_kinds, n_sources):
    if source_kinds is None:
        return tuple(_DEFAULT_KINDS[:n_sources]) + ("nonstationary",) * max(
            0, n_sources - len(_DEFAULT_KINDS)
        )
    if isinstance(source_kinds, str) or not isinstance(source_kinds, Sequence):
        raise TypeError(
            f"'source_kinds' must be None or a list of kind names, got {source_kinds!r}."
        )
    if len(source_kinds) != n_sources:
        raise ValueError(
            f"'source_kinds' has {len(source_kinds)} entries but n_sources={n_sources}; "
            "give one kind per source."
        )
    for kind in source_kinds:
        check_option("source_kinds", kind, EEG_SOURCE_KINDS)
    return tuple(source_kinds)


def _check_saturation(nonlinearity, saturation_level, saturation_rms):
    """Validate :func:`make_eeg`'s clip level options; return (saturation_level, saturation_rms)."""
    if saturation_level is not None:
        if nonlinearity not in ("saturation", "clip"):
            raise ValueError(
                "'saturation_level' only applies with nonlinearity='saturation' or 'clip', "
                f"got nonlinearity={nonlinearity!r}; drop saturation_level or set the "
                "nonlinearity."
            )
        saturation_level = check_float(
            "saturation_level", saturation_level, min_value=0.0, strict_min=True
        )
    if saturation_rms is not None:
        if nonlinearity not in ("saturation", "clip"):
            raise ValueError(
                "'saturation_rms' only applies with nonlinearity='saturation' or 'clip', "
                f"got nonlinearity={nonlinearity!r}; drop saturation_rms or set the "
                "nonlinearity."
            )
        if saturation_level is not None:
            raise ValueError(
                f"saturation_level={saturation_level:g} and saturation_rms={saturation_rms!r} "
                "both set the clip level; pass one of them."
            )
        saturation_rms = check_float(
            "saturation_rms", saturation_rms, min_value=0.0, strict_min=True
        )
    return saturation_level, saturation_rms


def _check_line_freq(line_freq, sample_rate, by_default: bool = False):
    """Validate ``line_freq`` for a ``"line_noise"`` source; return it as a float.

    ``by_default``: the source is one of the default kinds (the 9th), not the user's.
    """
    line_freq = check_float("line_freq", line_freq, min_value=0.0, strict_min=True)
    if line_freq >= 0.45 * sample_rate:
        fix = (
            "pass source_kinds without 'line_noise' (the default kinds hold one from 9 "
            "sources on), or fewer than 9 sources"
            if by_default
            else "drop 'line_noise' from source_kinds"
        )
        raise ValueError(
            f"'line_freq' ({line_freq:g} Hz) must be below 0.45 * sample_rate "
            f"({0.45 * sample_rate:g} Hz) to simulate line noise; raise sample_rate, pass "
            f"a lower line_freq, or {fix}."
        )
    return line_freq


def _place_dipoles(kinds, rr, gain, center, rng):
    """Gain matrix (n_channels, n_sources) of dipoles at distinct grid points, one per kind."""
    used: set[int] = set()
    A = np.empty((gain.shape[0], len(kinds)))
    for k, kind in enumerate(kinds):
        candidates = [i for i in _candidate_points(kind, rr, center) if i not in used]
        if not candidates:  # a small region exhausted: fall back to anywhere
            candidates = [i for i in range(len(rr)) if i not in used]
        point = int(rng.choice(candidates))
        used.add(point)
        A[:, k] = gain[:, point, :] @ _orientation(kind, rng)
    return A


def _time_courses(kinds, A, rng, n_times, sample_rate, line_freq):
    """Source time courses (n_sources, n_times) in A*m.

    Each is scaled so that the source reaches its typical scalp amplitude at the
    electrode where column ``A[:, k]`` is largest.
    """
    S = np.empty((len(kinds), n_times))
    for k, kind in enumerate(kinds):
        waveform = _GENERATORS[kind](rng, n_times, sample_rate, line_freq)
        volts = _AMPLITUDE_VOLTS[kind] * rng.uniform(0.7, 1.3)
        S[k] = waveform * (volts / np.abs(A[:, k]).max())
    return S


def _add_noise(X, snr_db, rng):
    """``X`` plus white Gaussian sensor noise at ``snr_db`` (None: ``X`` unchanged)."""
    if snr_db is None:
        return X
    noise_std = np.sqrt(np.mean(X**2) / 10.0 ** (snr_db / 10.0))
    return X + noise_std * rng.standard_normal(X.shape)


def _saturate(X, nonlinearity, saturation_level, saturation_rms):
    """Soft (``"saturation"``) or hard (``"clip"``) amplifier clipping of ``X``."""
    level = saturation_level
    if level is None:
        # The level is relative to the RMS of this recording, noise included.
        multiple = _SATURATION_RMS_MULTIPLE if saturation_rms is None else saturation_rms
        level = multiple * float(np.sqrt(np.mean(X**2)))
    return level * np.tanh(X / level) if nonlinearity == "saturation" else np.clip(X, -level, level)


def _raw_array(X, ch_names, sample_rate, dig, description):
    """An EEG RawArray of ``X`` in volts with the montage set."""
    import mne

    info = mne.create_info(list(ch_names), sample_rate, "eeg")
    info.set_montage(dig, verbose="error")
    info["description"] = description
    return mne.io.RawArray(X, info, verbose="error")


def make_eeg(
    n_sources: int,
    *,
    montage="standard_1020",
    duration: float = 60.0,
    sample_rate: float = 256.0,
    nonlinearity: str | None = None,
    snr_db: float | None = 20.0,
    source_kinds: Sequence[str] | None = None,
    line_freq: float = 50.0,
    saturation_level: float | None = None,
    saturation_rms: float | None = None,
    reference: str | None = "average",
    random_state=None,
) -> tuple[mne.io.RawArray, np.ndarray, np.ndarray]:
    """Semi-synthetic EEG from realistic sources placed as dipoles in a spherical head.

    Each source is a current dipole at a random position (on a 10 mm grid in
    the brain layer of a three-shell sphere fitted to the montage) with a
    random orientation; MNE's forward model gives its potential at every
    electrode. Sources of each kind sit where their generator is nearest
    (eye sources in front, muscle at the temples, ECG low, alpha at the back;
    the others anywhere in the outer half of the brain sphere). Sensor noise
    is white Gaussian, independent per channel.

    Parameters
    ----------
    n_sources : int
        Number of sources, at most the number of channels.
    montage : str or mne.channels.DigMontage
        ``"standard_1020"`` (the 19 classic 10-20 electrodes), ``"biosemi32"``,
        ``"biosemi64"``, any other name from
        ``mne.channels.get_builtin_montages()`` (all its electrodes), or a
        DigMontage (all its electrodes). The forward model is cached per
        montage within the process.
    duration : float
        Length in seconds, at least 2.
    sample_rate : float
        Hz, at least 64.
    nonlinearity : None, "saturation" or "clip"
        None: the recording is ``A @ S + noise``. ``"saturation"``: an
        amplifier-style soft clip ``L * tanh(x / L)`` of every sample after
        the noise is added, so ``|raw| < L``. ``"clip"``: a hard rail,
        ``clip(x, -L, L)``, as an amplifier driven past its input range
        (flat tops: what lies beyond L is lost, where the soft clip can be
        inverted).
    snr_db : float or None
        Ratio of the power of ``A @ S`` (mean over channels and time) to the
        sensor noise power, in dB. None adds no noise.
    source_kinds : sequence of str or None
        One kind per source from :data:`EEG_SOURCE_KINDS`:

        - ``"alpha"``: 8.5-11.5 Hz rhythm in waxing and waning bursts;
        - ``"blink"``: 250-450 ms positive bumps, 9-21 per minute;
        - ``"saccade"``: eye-position steps (40 ms jumps, fixations ~1.5 s);
        - ``"muscle"``: 20-120 Hz noise in bursts of 0.2-1.5 s;
        - ``"ecg"``: P-QRS-T complexes at 55-85 beats per minute;
        - ``"line_noise"``: ``line_freq`` sine (plus third harmonic) with a
          slow amplitude drift;
        - ``"nonstationary"``: Gaussian activity below 30 Hz whose variance
          changes every 1-4 s (log-normal standard deviations).

        None takes, in order, alpha, blink, nonstationary, muscle, saccade,
        ecg, nonstationary, alpha, line_noise, then nonstationary for any
        further source.
    line_freq : float
        Power-line frequency in Hz for ``"line_noise"`` (50 or 60).
    saturation_level : float or None
        ``L`` in volts for ``nonlinearity="saturation"`` or ``"clip"``; None uses
        ``saturation_rms`` times the RMS of the linear recording.
    saturation_rms : float or None
        ``L`` as a multiple of the RMS of the linear recording (the same
        seed without the nonlinearity), instead of ``saturation_level``. None
        (and no ``saturation_level``): 3 (blinks clip hard, ongoing activity
        bends slightly).
    reference : "average" or None
        ``"average"``: ``A`` is re-referenced to the common average, as EEG
        usually is before separation. The sensor noise is added after that,
        so the data stay full rank (the Raw is not marked as re-referenced,
        and ``n_sources`` up to the channel count is allowed). None:
        potentials against infinity, as MNE's forward model gives them.
    random_state : None, int or numpy.random.Generator
        Seed for positions, orientations, time courses and noise.

    Returns
    -------
    raw : mne.io.RawArray
        Shape (n_channels, n_times), EEG channels in volts with the montage
        set; ``raw.info["description"]`` lists the source kinds.
    S : ndarray, shape (n_sources, n_times)
        Source time courses: dipole moments in A*m, in the order of
        ``source_kinds``.
    A : ndarray, shape (n_channels, n_sources)
        Gain (mixing) matrix in V/(A*m): column k is the scalp potential of a
        unit dipole k. With ``nonlinearity=None``,
        ``raw.get_data() - A @ S`` is the sensor noise.

    Examples
    --------
    >>> raw, S, A = make_eeg(4, duration=10.0, random_state=0)
    >>> raw.get_data().shape, S.shape, A.shape
    ((19, 2560), (4, 2560), (19, 4))
    """
    n_sources = check_int("n_sources", n_sources, min_value=1)
    duration = check_float("duration", duration, min_value=_MIN_DURATION)
    sample_rate = check_float("sample_rate", sample_rate, min_value=_MIN_SAMPLE_RATE)
    check_option("nonlinearity", nonlinearity, (None, "saturation", "clip"))
    check_option("reference", reference, ("average", None))
    if snr_db is not None:
        snr_db = check_float("snr_db", snr_db)
    saturation_level, saturation_rms = _check_saturation(
        nonlinearity, saturation_level, saturation_rms
    )
    kinds = _check_kinds(source_kinds, n_sources)
    if "line_noise" in kinds:
        line_freq = _check_line_freq(line_freq, sample_rate, by_default=source_kinds is None)
    rng = check_random_state(random_state)

    dig, ch_names, rr, gain, center = _forward(montage)
    n_channels = len(ch_names)
    if n_sources > n_channels:
        raise ValueError(
            f"'n_sources' ({n_sources}) must not exceed the montage's {n_channels} channels; "
            "use a denser montage such as 'biosemi64' or fewer sources."
        )
    n_times = int(round(duration * sample_rate))

    # The rng is drawn from in this order (dipoles, time courses, noise) so that a
    # seed keeps giving the same recording.
    A = _place_dipoles(kinds, rr, gain, center, rng)
    if reference == "average":
        A -= A.mean(axis=0, keepdims=True)
    S = _time_courses(kinds, A, rng, n_times, sample_rate, line_freq)
    X = _add_noise(A @ S, snr_db, rng)
    if nonlinearity is not None:
        X = _saturate(X, nonlinearity, saturation_level, saturation_rms)

    description = (
        f"sepkit.datasets.make_eeg: sources={list(kinds)}, snr_db={snr_db}, "
        f"nonlinearity={nonlinearity}, reference={reference}"
    )
    return _raw_array(X, ch_names, sample_rate, dig, description), S, A
