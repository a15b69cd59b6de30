"""Multichannel audio mixtures with known sources, for training and scoring separation.

Two mixing models:

- ``"instantaneous"``: every microphone hears a weighted sum of the sources,
  ``x = A s`` (optionally passed through a saturating tanh, as a cheap
  nonlinear-mixing test for the iVAE).
- ``"room"``: a shoebox room simulated with the image source method
  (pyroomacoustics), so every microphone hears each source convolved with its
  own room impulse response (RIR).

Both add white Gaussian sensor noise at a requested SNR and return each
source's image at the reference microphone (mic 0), the usual target for
scoring a separation (SI-SDR, BSS Eval).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._check import check_float, check_int, check_option, check_random_state
from ..io.recording import Recording

__all__ = ["AudioMixture", "make_audio_mixture"]

# Rate used when the sources are plain arrays and sample_rate is None: speech
# corpora (CMU ARCTIC, WSJ0, LibriSpeech) are 16 kHz.
_DEFAULT_SAMPLE_RATE = 16000.0

# Largest condition number allowed for the instantaneous mixing matrix: above
# it the mixture is close to rank-deficient and noise is amplified by up to
# that factor when unmixing.
_MAX_CONDITION = 10.0

# tanh saturation y = (r / g) tanh(g x / r), with r the channel's RMS before
# the nonlinearity: slope 1 near zero and |y| < r / g = 2 RMS, so speech peaks
# (crest factor ~10) are strongly compressed while quiet parts stay linear.
_TANH_GAIN = 0.5

# Random room size (metres, uniform per axis) when room_dim is None: ordinary
# offices and living rooms, where inverse Sabine reaches RT60s of ~0.15-1 s.
_ROOM_BOUNDS = ((4.0, 8.0), (3.0, 6.0), (2.5, 3.5))

# Placement rules (metres): sources and microphones keep clear of the walls,
# sources are in the far field of the array and not on top of each other.
_WALL_MARGIN = 0.5
_MIN_ARRAY_DISTANCE = 1.0
_MIN_SOURCE_SPACING = 0.5
_MAX_PLACEMENT_TRIES = 1000

# RT60 is measured as T30: Schroeder's backward-integrated energy decay is fit
# between -5 and -35 dB and extrapolated to -60 dB (ISO 3382), because short
# or low-order RIRs rarely show a clean 60 dB decay.
_RT60_DECAY_DB = 30.0


@dataclass(frozen=True)
class AudioMixture:
    """A simulated multichannel mixture with its ground truth.

    Attributes
    ----------
    mixture : ndarray, shape (n_mics, n_times)
        What the microphones record (float32), noise included.
    images : ndarray, shape (n_sources, n_times)
        Each source as heard at the reference microphone (mic 0), without noise
        or nonlinearity: ``A[0, j] * s_j`` (instantaneous) or ``s_j``
        convolved with the RIR from source j to mic 0 (room). Float32.
    sources : ndarray, shape (n_sources, n_times)
        The dry sources after trimming/padding (and resampling), float32.
    mixing : ndarray, shape (n_mics, n_sources) | None
        The mixing matrix ``A`` (instantaneous); None for rooms.
    rt60 : float | None
        Reverberation time measured on the simulated RIRs, in seconds (median
        T30 over all microphone-source pairs); None for instantaneous mixing.
    sample_rate : float
        Samples per second, in Hz.
    """

    mixture: np.ndarray
    images: np.ndarray
    sources: np.ndarray
    mixing: np.ndarray | None
    rt60: float | None
    sample_rate: float

    def to_recording(self) -> Recording:
        """The mixture as a ``Recording`` (kind ``"audio"``, channels ``"mic0"``, ...)."""
        n_mics = self.mixture.shape[0]
        return Recording(
            self.mixture,
            sample_rate=self.sample_rate,
            ch_names=tuple(f"mic{i}" for i in range(n_mics)),
            kind="audio",
        )


def make_audio_mixture(
    sources,
    n_mics: int,
    *,
    kind: str = "instantaneous",
    rt60: float = 0.3,
    snr_db: float | None = 30.0,
    nonlinearity: str | None = None,
    room_dim: Sequence[float] | None = None,
    sample_rate: float | None = None,
    duration: float | None = None,
    array_geometry: str = "linear",
    mic_spacing: float = 0.05,
    max_order: int | None = None,
    random_state=None,
) -> AudioMixture:
    """Mix known sources into a multichannel recording.

    Parameters
    ----------
    sources : ndarray, shape (n_sources, n_times) | Recording | list
        The dry sources: an array with one source per row, a Recording with
        one source per channel, or a list of mono Recordings and/or 1-D arrays
        (e.g. ``[read_audio(f) for f in files]``). Sources of different
        lengths are all trimmed to the shortest, unless ``duration`` is given.
    n_mics : int
        Number of microphones (mixture channels).
    kind : {"instantaneous", "room"}
        ``"instantaneous"``: ``x = A s`` with a random Gaussian ``A`` whose
        singular values are floored at ``max / 10`` so its condition number is
        at most 10, scaled so ``sum(A**2) == n_mics`` (each microphone about
        as loud as one source). ``"room"``: a pyroomacoustics ShoeBox (see
        Notes).
    rt60 : float
        Target reverberation time in seconds for ``kind="room"``. The walls'
        absorption and the image-source order come from Sabine's formula
        (``pra.inverse_sabine``); the RT60 actually achieved is measured on
        the simulated RIRs and returned as ``AudioMixture.rt60``.
    snr_db : float | None
        Signal-to-noise ratio of the added white Gaussian sensor noise, in dB,
        per microphone: the noise is scaled so that each channel's clean power
        over its noise power equals ``snr_db`` exactly. None adds no noise.
    nonlinearity : {None, "tanh"}
        Memoryless saturation applied to each clean microphone signal before
        the noise: ``y = (r / 0.5) * tanh(0.5 * x / r)`` with ``r`` that
        channel's RMS, i.e. linear (slope 1) near zero and bounded by
        ``|y| < 2 r``.
    room_dim : sequence of 3 floats | None
        Room size in metres (length, width, height). Default None draws each
        side uniformly in [4, 8] x [3, 6] x [2.5, 3.5] m.
    sample_rate : float | None
        Rate in Hz. Recordings at another rate are resampled to it (with
        :func:`sepkit.io.audio.resample`). Default None takes the Recordings' common
        rate, or 16000 Hz for plain arrays.
    duration : float | None
        Length of the mixture in seconds: longer sources are trimmed and
        shorter ones zero-padded at the end. Default None trims all sources to
        the shortest one.
    array_geometry : {"linear", "circular"}
        Microphone array layout for ``kind="room"``.
    mic_spacing : float
        Distance between neighbouring microphones, in metres (5 cm default: a
        typical small array, no spatial aliasing below ~3.4 kHz).
    max_order : int | None
        Image-source reflection order for ``kind="room"``. Default None uses
        the order inverse Sabine says the target RT60 needs; a lower order
        simulates faster but truncates the reverberant tail, so the measured
        RT60 comes out shorter.
    random_state : None | int | numpy.random.Generator
        Seed for the mixing matrix, room, positions and noise.

    Returns
    -------
    mix : AudioMixture
        ``mixture`` (n_mics, n_times), ``images`` (n_sources, n_times),
        ``sources`` (n_sources, n_times), ``mixing``, ``rt60`` and
        ``sample_rate``; ``mix.to_recording()`` gives the mixture as a
        Recording.

    Notes
    -----
    Room simulation (needs ``pip install pyroomacoustics``, or
    ``pip install sepkit[audio]``): the microphones form a linear or circular
    array with ``mic_spacing`` between neighbours, centred at a random point at
    least 0.5 m from every wall and rotated by a random azimuth. Each source is
    placed uniformly at random at least 0.5 m from the walls, at least 1 m
    from every microphone and at least 0.5 m from the other sources. Walls
    share one energy absorption coefficient; there is no air absorption. Each
    microphone signal is the sum of the sources convolved with their RIRs,
    keeping the first n_times samples so it stays aligned with ``sources`` (the
    RIRs include the propagation delay and pyroomacoustics' 40-sample
    fractional-delay filter; the reverberant tail past the end is cut).

    The measured RT60 differs from the target because Sabine's formula is
    only approximate for the image-source model, and by how much depends on
    the room's shape. Over 30 random default rooms (8 kHz), measured / target
    was 0.64-1.01 (median 0.78) for 0.15 s, 0.91-1.36 (1.12) for 0.3 s,
    0.95-1.43 (1.17) for 0.35 s and 1.03-1.60 (1.27) for 0.6 s. So expect the
    achieved RT60 within -10% / +40% of a 0.3 s target, and use the returned
    ``rt60`` (not the target) when reporting results.

    References
    ----------
    R. Scheibler, E. Bezzam, I. Dokmanic, "Pyroomacoustics: A Python package
    for audio room simulations and array processing algorithms", ICASSP 2018.
    J. B. Allen, D. A. Berkley, "Image method for efficiently simulating
    small-room acoustics", JASA 65(4), 1979.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.random.default_rng(0).laplace(size=(2, 8000))
    >>> mix = make_audio_mixture(s, n_mics=3, snr_db=20.0, random_state=0)
    >>> mix.mixture.shape, mix.images.shape, mix.mixing.shape
    ((3, 8000), (2, 8000), (3, 2))
    """
    n_mics = check_int("n_mics", n_mics, min_value=1)
    kind = check_option("kind", kind, ("instantaneous", "room"))
    nonlinearity = check_option("nonlinearity", nonlinearity, (None, "tanh"))
    if snr_db is not None:
        snr_db = check_float("snr_db", snr_db)
    if sample_rate is not None:
        sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    if duration is not None:
        duration = check_float("duration", duration, min_value=0.0, strict_min=True)
    rng = check_random_state(random_state)
    dry, rate = _collect_sources(sources, sample_rate, duration)

    if kind == "instantaneous":
        # The room's settings, given (not None, or off their defaults), are refused: a
        # typo there (array_geometry="spiral", rt60=-1) would pass unseen.
        room = (
            ("room_dim", room_dim, None),
            ("max_order", max_order, None),
            ("rt60", rt60, 0.3),
            ("array_geometry", array_geometry, "linear"),
            ("mic_spacing", mic_spacing, 0.05),
        )
        for name, value, default in room:
            if value is not None and value != default:
                raise ValueError(
                    f"'{name}' only applies to kind='room', but kind='instantaneous' was "
                    f"given with {name}={value!r}. Pass kind='room' or drop {name}."
                )
        mixing = _random_mixing_matrix(n_mics, dry.shape[0], rng)
        clean = mixing @ dry
        images = mixing[0][:, None] * dry
        measured_rt60 = None
    else:
        rt60 = check_float("rt60", rt60, min_value=0.0, strict_min=True)
        array_geometry = check_option("array_geometry", array_geometry, ("linear", "circular"))
        mic_spacing = check_float("mic_spacing", mic_spacing, min_value=0.0, strict_min=True)
        if max_order is not None:
            max_order = check_int("max_order", max_order, min_value=0)
        images_all, measured_rt60 = _simulate_room(
            dry, n_mics, rate, rt60, room_dim, array_geometry, mic_spacing, max_order, rng
        )
        clean = images_all.sum(axis=0)
        images = images_all[:, 0]
        mixing = None

    if nonlinearity == "tanh":
        clean = _tanh_saturation(clean)
    mixture = clean if snr_db is None else clean + _sensor_noise(clean, snr_db, rng)
    return AudioMixture(
        mixture=mixture.astype(np.float32),
        images=images.astype(np.float32),
        sources=dry.astype(np.float32),
        mixing=mixing,
        rt60=measured_rt60,
        sample_rate=rate,
    )


def _collect_sources(sources, sample_rate, duration) -> tuple[np.ndarray, float]:
    """Turn the accepted inputs into a float64 (n_sources, n_times) array and its rate."""
    from ..io.audio import resample

    if isinstance(sources, Recording):
        items = [sources]
    elif isinstance(sources, (list, tuple)):
        if not sources:
            raise ValueError("'sources' is empty; pass at least one source.")
        items = list(sources)
    else:
        array = np.asarray(sources)
        if array.ndim != 2:
            hint = " Use sources[None] for one source." if array.ndim == 1 else ""
            raise ValueError(
                f"'sources' must have shape (n_sources, n_times), got {array.shape} instead.{hint}"
            )
        items = [array]

    rec_rates = {item.sample_rate for item in items if isinstance(item, Recording)}
    if sample_rate is None:
        if len(rec_rates) > 1:
            raise ValueError(
                f"The source Recordings have different sample rates {sorted(rec_rates)} Hz. "
                "Pass sample_rate=... to resample them all to one rate."
            )
        rate = rec_rates.pop() if rec_rates else _DEFAULT_SAMPLE_RATE
    else:
        rate = sample_rate

    rows = []
    for i, item in enumerate(items):
        if isinstance(item, Recording):
            if len(items) > 1 and item.n_channels != 1:
                raise ValueError(
                    f"Source {i} is a Recording with {item.n_channels} channels; each Recording "
                    f"in the list must be mono. Pick one channel, e.g. "
                    f"read_audio(path, channels=0)."
                )
            if item.sample_rate != rate:
                item = resample(item, rate)
            rows.extend(item.data.astype(np.float64))
            continue
        array = np.asarray(item)
        if array.ndim == 2 and len(items) > 1 and array.shape[0] == 1:
            array = array[0]
        if len(items) > 1 and array.ndim != 1:
            raise ValueError(
                f"Source {i} has shape {array.shape}; each array in the list must be 1-D "
                "(n_times,). Pass one source per list item."
            )
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise TypeError(f"'sources' must hold real numbers, got dtype {array.dtype}.")
        rows.extend(np.atleast_2d(array).astype(np.float64))

    if not rows:  # e.g. an array of shape (0, n_times)
        raise ValueError("'sources' is empty; pass at least one source.")
    for i, row in enumerate(rows):
        if not np.isfinite(row).all():
            raise ValueError(
                f"Source {i} contains NaN or Inf values. Remove or interpolate them first."
            )
    if duration is None:
        n_times = min(len(row) for row in rows)
    else:
        n_times = int(round(duration * rate))
    if n_times == 0:
        raise ValueError(
            "The sources have no samples in common (the shortest is empty, or duration "
            "rounds to 0 samples). Pass non-empty sources or a longer duration."
        )
    dry = np.zeros((len(rows), n_times))
    for i, row in enumerate(rows):
        dry[i, : min(n_times, len(row))] = row[:n_times]
    return dry, float(rate)


def _random_mixing_matrix(n_mics: int, n_sources: int, rng) -> np.ndarray:
    """Gaussian matrix with its condition number capped at _MAX_CONDITION."""
    mixing = rng.standard_normal((n_mics, n_sources))
    u, singular, vt = np.linalg.svd(mixing, full_matrices=False)
    # Flooring the small singular values keeps the random (Haar) singular
    # vectors, unlike redrawing, which rarely succeeds for large square matrices.
    singular = np.maximum(singular, singular[0] / _MAX_CONDITION)
    mixing = (u * singular) @ vt
    return mixing * np.sqrt(n_mics / np.sum(mixing**2))


def _tanh_saturation(clean: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(clean**2, axis=1, keepdims=True))
    rms[rms == 0] = 1.0  # a silent channel stays silent
    return rms / _TANH_GAIN * np.tanh(_TANH_GAIN * clean / rms)


def _sensor_noise(clean: np.ndarray, snr_db: float, rng) -> np.ndarray:
    noise = rng.standard_normal(clean.shape)
    signal_power = np.mean(clean**2, axis=1, keepdims=True)
    noise_power = np.mean(noise**2, axis=1, keepdims=True)
    # Scale the realised noise (not just its variance) so the SNR is exact.
    return noise * np.sqrt(signal_power / 10 ** (snr_db / 10) / noise_power)


def _import_pyroomacoustics():
    try:
        import pyroomacoustics
    except ImportError as exc:
        raise ImportError(
            "kind='room' simulates the room with pyroomacoustics, which is not installed. "
            "Install it with 'pip install pyroomacoustics' (or 'pip install sepkit[audio]'), "
            "or use kind='instantaneous'."
        ) from exc
    return pyroomacoustics


def _check_room_dim(room_dim, rng) -> np.ndarray:
    if room_dim is None:
        return np.array([rng.uniform(low, high) for low, high in _ROOM_BOUNDS])
    if isinstance(room_dim, (str, bytes)) or not isinstance(room_dim, Sequence | np.ndarray):
        raise TypeError(
            f"'room_dim' must be None or 3 numbers (length, width, height in metres), got "
            f"{room_dim!r}."
        )
    if len(room_dim) != 3 or not all(
        isinstance(d, numbers.Real) and not isinstance(d, bool) for d in room_dim
    ):
        raise ValueError(
            f"'room_dim' must be 3 numbers (length, width, height in metres), got "
            f"{list(room_dim)!r}."
        )
    dims = np.asarray(room_dim, dtype=float)
    smallest = 2 * _WALL_MARGIN
    if not np.isfinite(dims).all() or (dims <= smallest).any():
        raise ValueError(
            f"Every side of 'room_dim' must be more than {smallest} m (sources and "
            f"microphones keep {_WALL_MARGIN} m from the walls), got {dims.tolist()}."
        )
    return dims


def _array_layout(n_mics: int, geometry: str, spacing: float, azimuth: float) -> np.ndarray:
    """Microphone offsets from the array centre, shape (3, n_mics), in a horizontal plane."""
    if geometry == "circular" and n_mics >= 3:
        # Chord between neighbours on the circle equals the spacing.
        radius = spacing / (2 * np.sin(np.pi / n_mics))
        angles = 2 * np.pi * np.arange(n_mics) / n_mics
        planar = radius * np.stack([np.cos(angles), np.sin(angles)])
    else:  # linear, and circular arrays of 1 or 2 microphones
        planar = np.stack([spacing * (np.arange(n_mics) - (n_mics - 1) / 2), np.zeros(n_mics)])
    rotation = np.array([[np.cos(azimuth), -np.sin(azimuth)], [np.sin(azimuth), np.cos(azimuth)]])
    return np.vstack([rotation @ planar, np.zeros(n_mics)])


def _place(room_dims, n_mics, n_sources, geometry, spacing, rng):
    # The array's orientation is drawn; where it leaves the array too close to a
    # wall, the next orientations in 1-degree steps are tried, so that whether
    # the array fits does not depend on the draw (a drawn orientation that fits
    # is kept, and with it the random stream of earlier versions).
    drawn = rng.uniform(0, 2 * np.pi)
    for step in range(360):
        offsets = _array_layout(n_mics, geometry, spacing, drawn + np.deg2rad(step))
        extent = np.max(np.abs(offsets), axis=1)
        low, high = _WALL_MARGIN + extent, room_dims - _WALL_MARGIN - extent
        if (low < high).all():
            break
    else:
        width = np.max(np.linalg.norm(offsets[:, :, None] - offsets[:, None, :], axis=0))
        raise ValueError(
            f"The {n_mics}-microphone array ({width:.2f} m wide) does "
            f"not fit in a room of {room_dims.round(2).tolist()} m with {_WALL_MARGIN} m to the "
            "walls, in any orientation. Pass a larger room_dim or a smaller mic_spacing."
        )
    mics = rng.uniform(low, high)[:, None] + offsets
    placed = []
    for _ in range(_MAX_PLACEMENT_TRIES * n_sources):
        candidate = rng.uniform(_WALL_MARGIN, room_dims - _WALL_MARGIN)
        if np.min(np.linalg.norm(mics - candidate[:, None], axis=0)) < _MIN_ARRAY_DISTANCE:
            continue
        if any(np.linalg.norm(candidate - p) < _MIN_SOURCE_SPACING for p in placed):
            continue
        placed.append(candidate)
        if len(placed) == n_sources:
            return mics, np.stack(placed, axis=1)
    raise ValueError(
        f"Could not place {n_sources} sources in a room of {room_dims.round(2).tolist()} m at "
        f"least {_MIN_ARRAY_DISTANCE} m from the array, {_WALL_MARGIN} m from the walls and "
        f"{_MIN_SOURCE_SPACING} m apart. Pass a larger room_dim or fewer sources."
    )


def _simulate_room(dry, n_mics, rate, rt60, room_dim, geometry, spacing, max_order, rng):
    """Return the images at every microphone (n_sources, n_mics, n_times) and the measured RT60."""
    pra = _import_pyroomacoustics()
    from scipy.signal import oaconvolve

    dims = _check_room_dim(room_dim, rng)
    try:
        absorption, sabine_order = pra.inverse_sabine(rt60, dims)
    except ValueError as exc:
        raise ValueError(
            f"rt60={rt60} s is too short for a room of {dims.round(2).tolist()} m: Sabine's "
            f"formula needs walls absorbing more than all incident energy ({exc}). Pass a "
            "longer rt60 or a smaller room_dim."
        ) from exc
    order = sabine_order if max_order is None else max_order
    n_sources, n_times = dry.shape
    mics, source_positions = _place(dims, n_mics, n_sources, geometry, spacing, rng)

    room = pra.ShoeBox(
        dims, fs=int(round(rate)), materials=pra.Material(absorption), max_order=order
    )
    room.add_microphone_array(mics)
    for j in range(n_sources):
        room.add_source(source_positions[:, j])
    room.compute_rir()

    images = np.empty((n_sources, n_mics, n_times))
    rt60s = []
    for m in range(n_mics):
        for j in range(n_sources):
            rir = np.asarray(room.rir[m][j], dtype=float)
            images[j, m] = oaconvolve(dry[j], rir)[:n_times]
            rt60s.append(pra.experimental.measure_rt60(rir, fs=rate, decay_db=_RT60_DECAY_DB))
    return images, float(np.median(rt60s))
