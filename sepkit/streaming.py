"""Separate long recordings, audio and EEG, in memory bounded by a chunk, not by the recording.

A recording of any length is separated in three steps, none of which holds it whole:

1. :func:`open_recording` reads the file's header (length, sample rate, channels);
2. :func:`fit_excerpt` reads at most ``max_fit_seconds`` of it, in blocks
   spread over the file, as one recording to fit a separator on;
3. :func:`write_audio_sources` (one audio file per source),
   :func:`write_fif_sources` and :func:`write_fif_cleaned` (EEG, FIF files)
   read, separate and write it ``chunk_seconds`` at a time.

:func:`separate_long` runs the three for one file; ``sepkit separate`` runs
them for every input longer than the fit budget. Chunk by chunk, the sources
are those of separating the recording in one piece (up to float rounding) for
every model whose sources of a sample do not read u, the window index: the
linear and post-nonlinear models, the time-frequency family (chunks with STFT
context, ``TFDemixer._chunks``) and the network with ``encoder_u=False``
(chunks read with its receptive field as margin, as
``TimeDomainFit.run_chunked`` does). :func:`check_streamable` refuses the others.

Examples
--------
>>> from sepkit.streaming import separate_long
>>> sep, paths = separate_long("meeting_2h.wav", "out", n_sources=2)  # doctest: +SKIP
>>> [p.name for p in paths]  # doctest: +SKIP
['meeting_2h_s1.wav', 'meeting_2h_s2.wav']
"""

from __future__ import annotations

import functools
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ._check import check_float, check_option
from .io import AUDIO_EXTENSIONS
from .io import audio as aio
from .io.audio import read_audio
from .io.eeg import _check_fif_target, read_eeg, staged_fif
from .io.raw import align_in_time
from .io.recording import Recording, recording_stem
from .separator import IVAESeparator
from .windows import STREAM_CHUNK_SECONDS, TF_MAX_FIT_SECONDS, fit_blocks

__all__ = [
    "CHUNK_SECONDS",
    "MAX_FIT_SECONDS",
    "LongRecording",
    "StreamSummary",
    "check_streamable",
    "fit_excerpt",
    "iter_sources",
    "open_recording",
    "separate_long",
    "write_audio_sources",
    "write_fif_cleaned",
    "write_fif_sources",
]

# Most of a long recording the fit sees, in seconds, per kind. Audio: the
# time-frequency family's own budget (sepkit.methods.tf); the demixing of a
# fixed mix needs far less, and `sepkit separate` on 60 s of 2-channel 16 kHz
# audio peaked at 1.1 GB RSS. EEG: 10 min, which gives a 64-channel linear fit
# 150k samples at 256 Hz (37 n^2; ICA practice asks for 20-30 n^2) and peaked
# at 1.3 GB RSS for 64 channels at 256 Hz.
MAX_FIT_SECONDS = {"audio": TF_MAX_FIT_SECONDS, "eeg": 600.0}
# Seconds separated at a time: the time-frequency family's chunk. A chunk is a
# few MB (2 channels at 16 kHz: 3.8 MB; 64 at 256 Hz: 3.9 MB in float64),
# small beside the fit, and long enough that the per-chunk overhead is nil.
CHUNK_SECONDS = STREAM_CHUNK_SECONDS


@dataclass(frozen=True)
class LongRecording:
    """A recording file opened for streaming: its header, and reads of sample ranges.

    Made by :func:`open_recording`; no sample is held.

    Attributes
    ----------
    path : Path
    kind : {"audio", "eeg"}
    sample_rate : float
        The file's, in Hz.
    n_times : int
        Samples per channel.
    ch_names : tuple of str
        Audio: ``ch<i>`` of the channels read, ``i`` the index in the file, as
        :func:`sepkit.read_audio` names them; EEG: every data channel
        (:func:`sepkit.io.read_eeg` with ``picks=None``).
    raw : mne.io.BaseRaw or None
        EEG: the file's Raw, not preloaded.
    channels : tuple of int or None
        Audio: the indices of the channels read (``open_recording``'s
        ``channels``); None for all.
    """

    path: Path
    kind: str
    sample_rate: float
    n_times: int
    ch_names: tuple
    raw: object = field(default=None, repr=False)
    channels: tuple | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_times / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of every channel, shape (n_channels, stop - start).

        Audio: float32 in [-1, 1] for integer files; EEG: volts, float64.
        """
        if self.kind == "audio":
            rate = self.sample_rate
            return read_audio(
                self.path, channels=self.channels, start=start / rate, stop=stop / rate
            ).data
        return self.raw.get_data(start=start, stop=stop)


@dataclass
class StreamSummary:
    """What one streamed pass saw of the sources.

    Attributes
    ----------
    n_times : int
        Samples per source (at the model's sample rate).
    sample_rate : float
    head : ndarray, shape (n_sources, n_head)
        The first samples of the sources (``head_seconds``), e.g. to plot.
    mean : ndarray, shape (n_sources,)
        Mean of each source over the whole recording (float64).
    """

    n_times: int
    sample_rate: float
    head: np.ndarray
    mean: np.ndarray


def open_recording(path, kind: str | None = None, *, channels=None) -> LongRecording:
    """Open an audio or EEG file for streaming, reading its header only.

    Parameters
    ----------
    path : str or path-like
        Audio in a format libsndfile reads in parts (WAV, FLAC, OGG, ...), or
        EEG in any format :func:`sepkit.io.read_eeg` reads.
    kind : {"audio", "eeg"} or None
        None: from the suffix (:data:`sepkit.io.AUDIO_EXTENSIONS` are audio).
    channels : int or sequence of int or None
        Audio: the channels to read, as :func:`sepkit.read_audio` takes them
        (e.g. to leave out a dead microphone). None: all. EEG: give None and
        mark channels bad in the file (``info["bads"]``), as MNE does.

    Returns
    -------
    LongRecording

    Raises
    ------
    ValueError
        An empty, truncated or corrupt audio file (its first and last sample
        are read), or an audio format that cannot be read in parts.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be a str or os.PathLike, got {type(path).__name__}.")
    kind = _kind(path, kind)
    if kind == "eeg":
        if channels is not None:
            raise ValueError(
                f"'channels' picks audio channels by index, but {Path(path).name} is EEG. "
                "Pass channels=None and mark the channels to leave out as bad "
                "(raw.info['bads']), as MNE does."
            )
        path = Path(path).expanduser()
        raw = read_eeg(path, picks=None, preload=False)
        rate = float(raw.info["sfreq"])
        return LongRecording(path, "eeg", rate, int(raw.n_times), tuple(raw.ch_names), raw)
    path = aio._check_read_path(path)
    try:
        n_channels = sf.info(str(path)).channels
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(
            f"'{path}' cannot be read in parts: libsndfile does not read its format ({err}). "
            "Convert it to WAV or FLAC first (e.g. ffmpeg -i IN OUT.flac)."
        ) from err
    n_times, rate = aio.probe(path)
    picked = tuple(aio._check_channels(channels, n_channels, path))
    names = tuple(f"ch{i}" for i in picked)
    return LongRecording(
        path, "audio", rate, n_times, names, channels=None if channels is None else picked
    )


def _kind(path, kind) -> str:
    if kind is not None:
        return check_option("kind", kind, ("audio", "eeg"))
    return "audio" if Path(path).suffix.lower() in AUDIO_EXTENSIONS else "eeg"


def fit_excerpt(rec: LongRecording, max_fit_seconds: float | None = None):
    """At most ``max_fit_seconds`` of ``rec``, in blocks spread over it, as one recording.

    The whole recording when it is that short; otherwise six blocks
    (:func:`sepkit.windows.fit_blocks`), joined.

    Parameters
    ----------
    rec : LongRecording
    max_fit_seconds : float or None
        None: :data:`MAX_FIT_SECONDS` of ``rec.kind``.

    Returns
    -------
    Recording (audio) or mne.io.Raw (EEG, preloaded, every data channel)
        For EEG the annotations of each block are kept, and MNE marks each
        join with "BAD boundary" and "EDGE boundary" annotations
        (``mne.concatenate_raws``).

    Notes
    -----
    The blocks are fitted as one recording, so u, the window index, numbers
    the windows of the excerpt, not of the file, and a window that straddles
    a join (one per join at most) mixes two distant stretches of it. Neither
    matters once fitted: a streamed separator reads no u
    (:func:`check_streamable`), so the windows only give the fit its
    segments of changing source statistics.
    """
    budget = MAX_FIT_SECONDS[rec.kind] if max_fit_seconds is None else max_fit_seconds
    budget = check_float("max_fit_seconds", budget, min_value=0.0, strict_min=True)
    ranges = fit_blocks(rec.n_times, rec.sample_rate, budget)
    if rec.kind == "audio":
        data = np.concatenate([rec.read(a, b) for a, b in ranges], axis=1)
        return Recording(data, rec.sample_rate, rec.ch_names, "audio")
    import mne

    rate = rec.sample_rate
    parts = [
        rec.raw.copy().crop(a / rate, (b - 1) / rate).load_data(verbose="error") for a, b in ranges
    ]
    return parts[0] if len(parts) == 1 else mne.concatenate_raws(parts, verbose="error")


def check_streamable(sep, what: str = "the separator") -> None:
    """Raise a ValueError when ``sep`` cannot separate a recording chunk by chunk.

    A model whose encoder (or decoder, or posterior refinement) reads u, the
    index of the windows of the recording it was fitted on, has no u for a
    chunk of another recording.
    """
    sep._check_fitted()
    fitted = sep.fitted_
    decoder_u = getattr(getattr(fitted, "model", None), "decoder_u", False)
    if getattr(fitted, "needs_u", False) or decoder_u:
        raise ValueError(
            f"{what} reads u (the index of the windows of the recording it was fitted on) to "
            "separate, so it cannot separate a recording chunk by chunk. Use a separator that "
            "does not: mixing='linear' (or 'post-nonlinear'), domain='tf' for rooms, or a "
            "network fitted with encoder_u=False, decoder_u=False and refine_steps=0."
        )


def _model_margin(sep) -> int:
    """Samples of context a time-domain model's source at t reads on each side."""
    fitted = sep.fitted_
    return getattr(fitted, "n_layers", 1) * (getattr(fitted, "kernel_size", 1) // 2)


def _reader(sep, rec: LongRecording, resample: bool, work_rate=None):
    """(read(lo, hi), n_times): the fitted channels at the model's rate, float32, checked.

    ``work_rate``: read audio at this rate instead (a source model's own).
    """
    rate = sep.sample_rate_ if sep.sample_rate_ is not None else rec.sample_rate
    rate = float(rate)
    if rate != rec.sample_rate and not resample:
        raise ValueError(
            f"{rec.path.name} has sample_rate {rec.sample_rate:g} Hz but the model expects "
            f"{rate:g} Hz. Pass resample=True to resample it, or resample it yourself first."
        )
    if rec.kind == "audio":
        rate = rate if work_rate is None else float(work_rate)
        n_times = rec.n_times
        if rate != rec.sample_rate:  # as many samples as sepkit.io.audio.resample gives
            n_times = -(-rec.n_times * int(rate) // int(rec.sample_rate))
        return aio.chunk_reader(
            rec.path, rec.n_times, rec.sample_rate, rate, sep.n_channels_, rec.channels
        ), n_times
    if rate != rec.sample_rate:
        raise ValueError(
            f"{rec.path.name} is streamed, and EEG is resampled only in one piece (MNE's "
            f"resample), so resample=True does not apply to it. Resample it to {rate:g} Hz "
            "first (raw.resample, then raw.save), or separate a shorter recording."
        )
    names = sep._fitted_names(rec.raw)
    missing = [name for name in names if name not in rec.ch_names]
    if missing:
        raise ValueError(
            f"{rec.path.name} lacks channel(s) {missing} that the separator was fitted on. Pass "
            "a recording with the same channels (rename them with raw.rename_channels, or "
            "interpolate missing ones), or refit."
        )

    def read(lo, hi):
        return _checked_eeg(rec, names, lo, rec.raw.get_data(picks=names, start=lo, stop=hi))

    return read, rec.n_times


def _checked_eeg(rec: LongRecording, names, lo: int, data) -> np.ndarray:
    """``data`` (the channels ``names`` from sample ``lo``) as float32, or the error for NaN."""
    x = data.astype(np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero(~finite)]
        # Where exactly, in the file's seconds (audit: the chunk's sample range was given).
        at = np.flatnonzero(~np.isfinite(x).all(axis=0))
        first, last = (lo + at[0]) / rec.sample_rate, (lo + at[-1] + 1) / rec.sample_rate
        raise ValueError(
            f"{rec.path.name}: channel(s) {bad} contain NaN or Inf values from {first:.3f} s "
            f"to {last:.3f} s (at least; read in chunks). Mark them bad (add them to "
            "raw.info['bads']) or interpolate them with raw.interpolate_bads(), and save the "
            "recording again."
        )
    return x


def _time_chunks(sep, read, n_times: int, chunk: int):
    """(start, stop, sources) of a time-domain model, each from one read with margin."""
    margin = _model_margin(sep)
    for start in range(0, n_times, chunk):
        stop = min(n_times, start + chunk)
        lo, hi = max(0, start - margin), min(n_times, stop + margin)
        S = sep.transform(np.ascontiguousarray(read(lo, hi)))
        yield start, stop, S[:, start - lo : stop - lo]


def _source_chunks(sep, rec, chunk_seconds, resample):
    """(chunks, n_times, sample rate) of the sources of ``rec``, computed as iterated.

    A source model separates at its own rate (``fitted_.work_rate``, 16 kHz): the
    recording is read, and its sources come, at that rate.
    """
    check_streamable(sep)
    chunk_seconds = CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
    chunk_seconds = check_float("chunk_seconds", chunk_seconds, min_value=0.0, strict_min=True)
    check_option("resample", resample, (True, False))
    work = sep.fitted_.work_rate
    read, n_times = _reader(sep, rec, resample, work)
    rate = float(work or sep.sample_rate_ or rec.sample_rate)
    if getattr(sep, "domain_", "time") == "tf":
        chunks = sep.fitted_.demixer._chunks(read, n_times, chunk_seconds)
    else:
        chunks = _time_chunks(sep, read, n_times, max(1, int(round(chunk_seconds * rate))))
    return _finite(chunks), n_times, rate


def _finite(chunks):
    for start, stop, block in chunks:
        if not np.isfinite(block).all():
            raise RuntimeError(
                "The model gave NaN or Inf sources for this recording (the recording itself "
                "is finite): the model is broken or the input far outside what it was fitted "
                "on. Refit it, or check that the recording matches the one of fit."
            )
        yield start, stop, np.asarray(block, dtype=np.float32)


def iter_sources(sep, rec: LongRecording, *, chunk_seconds=None, resample: bool = False):
    """Yield the sources of ``rec``, chunk by chunk, in order.

    Parameters
    ----------
    sep : IVAESeparator
        Fitted; :func:`check_streamable` must pass.
    rec : LongRecording
    chunk_seconds : float or None
        Seconds per chunk; None: :data:`CHUNK_SECONDS`. The time-frequency
        families read at least four STFT frames per chunk (``4 n_fft``
        samples, about 1 s at 16 kHz) and whole hops, so their chunks may be
        longer than asked; the sources are the same either way.
        A source model's chunks (``fitted_.work_rate``) come at its own
        rate, 16 kHz; :func:`write_audio_sources` writes them at the fit's.
    resample : bool
        Audio at a rate other than the model's: resample each chunk (with
        context, as resampling in one piece). False raises.

    Yields
    ------
    start, stop : int
        The chunk's samples, at the model's sample rate.
    sources : ndarray, shape (n_sources, stop - start), float32

    Notes
    -----
    Each read spans one chunk plus the model's context on each side: for a
    time-domain model ``n_layers * (kernel_size // 2)`` samples (0 for the
    linear models), for the time-frequency family one STFT frame, and the
    resampler's reach when resampling.
    """
    chunks, _, _ = _source_chunks(sep, rec, chunk_seconds, resample)
    yield from chunks


class _Tap:
    """Pass chunks through, keeping the first ``head`` samples and per-chunk sums."""

    def __init__(self, n_sources: int, head: int):
        self.n_sources, self.n_head = n_sources, head
        self.head = np.zeros((n_sources, 0), np.float32)
        self.sums: dict[int, tuple[int, np.ndarray]] = {}  # start -> (length, sum)

    def __call__(self, chunks):
        for start, stop, block in chunks:
            # Keyed by start: a chunk computed twice is counted once.
            self.sums[start] = (stop - start, block.sum(axis=1, dtype=np.float64))
            if start == self.head.shape[1] and start < self.n_head:
                self.head = np.concatenate([self.head, block[:, : self.n_head - start]], axis=1)
            yield start, stop, block

    def summary(self, n_times: int, rate: float) -> StreamSummary:
        seen = sum(n for n, _ in self.sums.values())
        if seen != n_times:  # never for a complete pass; a guard, not a branch taken
            raise RuntimeError(f"the sources pass saw {seen} of {n_times} samples.")
        total = sum((s for _, s in self.sums.values()), np.zeros(self.n_sources))
        return StreamSummary(n_times, rate, self.head, total / max(n_times, 1))


def write_audio_sources(
    sep,
    rec: LongRecording,
    out_dir,
    stem: str,
    *,
    format: str = "wav",
    subtype: str | None = None,
    overwrite: bool = False,
    chunk_seconds: float | None = None,
    resample: bool = False,
    head_seconds: float = 0.0,
    verbose: bool = False,
) -> tuple[list[Path], StreamSummary]:
    """Separate an audio recording chunk by chunk into ``<stem>_s1.<format>``, ...

    The files are those :func:`sepkit.io.write_sources` writes for the
    sources of the whole recording (``normalize="peak_safe"``: one common
    gain ``0.99 / peak`` where a saturating subtype would clip): the sources
    go to 32-bit float temp files while the peak is tracked, and are encoded
    in a second pass; the files are renamed into place only when all are
    complete.

    Parameters
    ----------
    sep : IVAESeparator
        Fitted.
    rec : LongRecording
        Audio.
    out_dir : str or path-like
        Created if missing.
    stem : str
        File name prefix.
    format, subtype, overwrite
        As in :func:`sepkit.io.write_sources`.
    chunk_seconds, resample
        As in :func:`iter_sources`.
    head_seconds : float
        Keep this much of the start of the sources in the summary.
    verbose : bool
        Progress bar.

    Returns
    -------
    paths : list of Path
    summary : StreamSummary
    """
    if rec.kind != "audio":
        raise ValueError(f"write_audio_sources writes audio, but {rec.path.name} is EEG.")
    format = check_option("format", format, aio._SOURCE_FORMATS)
    fmt = format.upper()
    subtype = aio._check_subtype(subtype, fmt)
    check_float("head_seconds", head_seconds, min_value=0.0)
    chunks, n_times, rate = _source_chunks(sep, rec, chunk_seconds, resample)
    # The files are at the model's rate, as transform's sources (a source model's
    # chunks come at its own rate and are resampled back as they are encoded).
    out_rate = float(sep.sample_rate_ or rec.sample_rate)
    out_dir = Path(out_dir).expanduser()
    paths = [out_dir / f"{stem}_s{i + 1}.{format}" for i in range(sep.n_sources_)]
    aio._check_targets(paths, overwrite=overwrite, folder=out_dir, create_folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tap = _Tap(sep.n_sources_, int(head_seconds * rate))
    chunk_seconds = CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
    aio.write_streamed(
        tap(chunks), rate, n_times, paths, fmt, subtype, chunk_seconds, rec.path.name, verbose,
        out_rate,
    )  # fmt: skip
    return paths, tap.summary(n_times, rate)


# ----------------------------------------------------------------------- EEG
@functools.cache
def _computed_raw_class():
    """An MNE Raw whose samples are computed as MNE reads them (made once, on first use)."""
    from mne.io import BaseRaw

    class ComputedRaw(BaseRaw):
        """Samples ``[start, stop)`` are ``compute(start, stop)``: volts, every channel.

        ``raw.save`` reads them buffer by buffer, so a FIF file of any length
        is written holding one chunk. Every channel's ``cal`` and ``range``
        are 1: what ``compute`` returns is what the file holds.
        """

        def __init__(self, info, n_times, first_samp, compute):
            with info._unlock():
                for ch in info["chs"]:
                    ch["cal"], ch["range"] = 1.0, 1.0
            super().__init__(
                info,
                preload=False,
                first_samps=(first_samp,),
                last_samps=(first_samp + n_times - 1,),
                raw_extras=[{"compute": compute, "first_samp": first_samp}],
                verbose="error",
            )

        def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
            extra = self._raw_extras[fi]
            block = extra["compute"](start - extra["first_samp"], stop - extra["first_samp"])
            data[:] = block[idx] if mult is None else mult @ block[idx]

    return ComputedRaw


class _Cursor:
    """``get(start, stop)`` over a stream of consecutive chunks, read in order.

    MNE writes a Raw buffer after buffer, so each chunk is computed once; a
    read before the current chunk starts the stream again.
    """

    def __init__(self, make_chunks):
        self._make, self._it = make_chunks, None
        self._start, self._stop, self._block = 0, 0, None

    def get(self, start: int, stop: int) -> np.ndarray:
        parts, pos = [], start
        while pos < stop:
            if not self._start <= pos < self._stop:
                if self._it is None or pos < self._start:
                    self._it = iter(self._make())
                while True:
                    self._start, self._stop, self._block = next(self._it)
                    if pos < self._stop:
                        break
            end = min(stop, self._stop)
            parts.append(self._block[:, pos - self._start : end - self._start])
            pos = end
        return np.concatenate(parts, axis=1).astype(np.float64)


def _like(rec: LongRecording, info, n_times: int, compute):
    """A ComputedRaw aligned with ``rec.raw`` in time (first sample, date, annotations)."""
    raw = rec.raw
    out = _computed_raw_class()(info, n_times, raw.first_samp, compute)
    return align_in_time(out, raw)


def _save_fifs(items, overwrite: bool) -> None:
    """Save every (Raw, path) under a hidden name, then move them all into place (none on failure).

    A long recording may pass MNE's 2 GB split: its parts are written under
    their final names (:func:`sepkit.io.eeg.staged_fif`).
    """
    for _, path in items:
        _check_fif_target(path, overwrite)
    with ExitStack() as stack:
        for raw, path in items:
            stack.enter_context(staged_fif(raw, path))


def _sources_raw(sep, rec: LongRecording, chunk_seconds, head_seconds):
    """(ComputedRaw of the sources of ``rec``, its _Tap, n_times)."""
    import mne

    if rec.kind != "eeg":
        raise ValueError(f"{rec.path.name} is audio; write its sources with write_audio_sources.")
    check_float("head_seconds", head_seconds, min_value=0.0)
    chunks, n_times, rate = _source_chunks(sep, rec, chunk_seconds, False)
    del chunks  # a fresh stream per pass of the cursor
    tap = _Tap(sep.n_sources_, int(head_seconds * rate))
    cursor = _Cursor(lambda: tap(_source_chunks(sep, rec, chunk_seconds, False)[0]))
    names = [f"IVAE{i:03d}" for i in range(sep.n_sources_)]
    info = mne.create_info(names, rate, "misc")
    with info._unlock():
        # Sources of a filtered recording are filtered alike, as sources_to_raw says.
        info["highpass"], info["lowpass"] = rec.raw.info["highpass"], rec.raw.info["lowpass"]
    return _like(rec, info, n_times, cursor.get), tap, n_times


def write_fif_sources(
    sep,
    rec: LongRecording,
    path,
    *,
    overwrite: bool = False,
    chunk_seconds: float | None = None,
    head_seconds: float = 0.0,
) -> tuple[Path, StreamSummary]:
    """Separate an EEG recording chunk by chunk into a FIF file of sources.

    The file holds what ``sep.get_sources(raw)`` gives for the whole
    recording: ``misc`` channels IVAE000, IVAE001, ..., with the recording's
    first sample, measurement date, annotations and filter settings. It is
    written atomically.

    Parameters
    ----------
    sep : IVAESeparator
        Fitted; :func:`check_streamable` must pass.
    rec : LongRecording
        EEG.
    path : str or path-like
        Ends in ``.fif`` or ``.fif.gz``, in an existing folder.
    overwrite : bool
    chunk_seconds : float or None
        As in :func:`iter_sources`.
    head_seconds : float
        Keep this much of the start of the sources in the summary.

    Returns
    -------
    path : Path
    summary : StreamSummary
        With each source's mean, which :func:`write_fif_cleaned` needs.
    """
    path = Path(path)
    raw, tap, n_times = _sources_raw(sep, rec, chunk_seconds, head_seconds)
    _save_fifs([(raw, path)], overwrite)
    return path, tap.summary(n_times, raw.info["sfreq"])


def _cleaned_raw(sep, rec: LongRecording, exclude, mean, chunk_seconds):
    """A ComputedRaw of ``rec`` with the sources ``exclude`` removed, as ``sep.apply``."""
    check_streamable(sep)
    exclude = sep._excluded(exclude)
    if exclude and mean is None:
        raise ValueError(
            "'mean' is needed to remove sources: pass the summary.mean of write_fif_sources."
        )
    held_at = []  # the means, read on the first chunk (``mean`` may be a callable)
    chunk_seconds = CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
    chunk_seconds = check_float("chunk_seconds", chunk_seconds, min_value=0.0, strict_min=True)
    _, n_times = _reader(sep, rec, False)  # checks the channels and the rate
    names = sep._fitted_names(rec.raw)
    idx = [rec.ch_names.index(name) for name in names]
    # The change of the reconstruction at t reads the sources around t, which
    # read the recording around them: twice the model's context.
    margin = 2 * _model_margin(sep)
    chunk = max(1, int(round(chunk_seconds * rec.sample_rate)))

    def chunks():
        for start in range(0, n_times, chunk):
            stop = min(n_times, start + chunk)
            lo, hi = max(0, start - margin), min(n_times, stop + margin)
            X = rec.raw.get_data(start=lo, stop=hi)
            if exclude:
                # sep.apply's change, _removal_change: rows `exclude` held at their mean.
                S = sep.transform(_checked_eeg(rec, names, lo, X[idx])).astype(np.float64)
                if not held_at:
                    held_at.append(np.asarray(mean() if callable(mean) else mean, np.float64))
                held = S.copy()
                held[exclude] = held_at[0][exclude][:, None]
                change = sep.inverse_transform(held).astype(np.float64)
                change -= sep.inverse_transform(S)
                X[idx] += change
            yield start, stop, X[:, start - lo : stop - lo]

    return _like(rec, rec.raw.info.copy(), n_times, _Cursor(chunks).get)


def write_fif_cleaned(
    sep,
    rec: LongRecording,
    path,
    exclude,
    mean,
    *,
    overwrite: bool = False,
    chunk_seconds: float | None = None,
) -> Path:
    """Write ``rec`` without the sources ``exclude``, chunk by chunk, as ``sep.apply`` does.

    Parameters
    ----------
    sep : IVAESeparator
        Fitted.
    rec : LongRecording
        EEG; every data channel is written, the fitted ones cleaned.
    path : str or path-like
        Ends in ``.fif`` or ``.fif.gz``, in an existing folder.
    exclude : list of int or None
        Sources to remove, besides ``sep.exclude``.
    mean : ndarray, shape (n_sources,), callable or None
        Each source's mean over the recording (``summary.mean`` of
        :func:`write_fif_sources`, or a function that returns it when the
        first chunk is cleaned): the removed sources are held there, as
        ``sep.apply`` holds them. None only where nothing is removed.
    overwrite : bool
    chunk_seconds : float or None

    Returns
    -------
    path : Path
    """
    path = Path(path)
    _save_fifs([(_cleaned_raw(sep, rec, exclude, mean, chunk_seconds), path)], overwrite)
    return path


# ------------------------------------------------------------------ one call
def separate_long(
    path,
    out_dir,
    *,
    separator=None,
    n_sources: int = 2,
    stem: str | None = None,
    exclude=None,
    max_fit_seconds: float | None = None,
    chunk_seconds: float | None = None,
    resample: bool = False,
    overwrite: bool = False,
    random_state: int | None = None,
    verbose: bool = False,
):
    """Separate an audio or EEG file of any length in bounded memory.

    A new separator (or ``separator``, if not yet fitted) is fitted on
    :func:`fit_excerpt` of the file; the sources are then written chunk by
    chunk: ``<stem>_s1.wav``, ... for audio; ``<stem>_sources_raw.fif`` for
    EEG, and with ``exclude`` also ``<stem>_cleaned_raw.fif``. The files are
    written together or not at all; existing ones are refused unless
    ``overwrite=True``.

    Parameters
    ----------
    path : str or path-like
    out_dir : str or path-like
        Created if missing.
    separator : IVAESeparator or None
        Fitted: applied as it is. Not fitted: fitted on the excerpt first.
        None: ``IVAESeparator(n_sources, random_state=random_state)``.
        It must not read u when separating (:func:`check_streamable`).
    n_sources : int
        Used when ``separator`` is None.
    stem : str or None
        File name prefix; default the file's stem (without ``_raw``).
    exclude : list of int or None
        EEG: sources to remove in the cleaned file (besides
        ``separator.exclude``); None writes no cleaned file.
    max_fit_seconds, chunk_seconds : float or None
        See :data:`MAX_FIT_SECONDS` and :data:`CHUNK_SECONDS`.
    resample : bool
        Audio at another rate than a fitted separator's: resample it.
    overwrite : bool
    random_state : int or None
        Seed of a new separator.
    verbose : bool
        Progress bar (audio).

    Returns
    -------
    separator : IVAESeparator
    paths : list of Path
    """
    rec = open_recording(path)
    if rec.kind == "audio" and exclude is not None:  # before a fit of up to a minute
        raise ValueError(
            f"'exclude' removes sources from EEG recordings, but {rec.path.name} is audio. "
            "Pass exclude=None."
        )
    sep = IVAESeparator(n_sources, random_state=random_state) if separator is None else separator
    if not hasattr(sep, "fitted_"):
        if sep.mixing == "nonlinear" and sep.encoder_u:
            raise ValueError(
                "mixing='nonlinear' with encoder_u=True fits an encoder that reads u (the "
                "window index), which a chunk of a long recording does not have. Pass "
                "encoder_u=False, or mixing='auto'."
            )
        sep.fit(fit_excerpt(rec, max_fit_seconds))
    check_streamable(sep)
    out_dir = Path(out_dir).expanduser()
    if stem is None:
        stem = recording_stem(rec.path)
    if rec.kind == "audio":
        paths, _ = write_audio_sources(
            sep, rec, out_dir, stem, overwrite=overwrite, chunk_seconds=chunk_seconds,
            resample=resample, verbose=verbose,
        )  # fmt: skip
        return sep, paths
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}_sources_raw.fif"]
    if exclude is not None:
        sep._check_exclude(exclude)
        paths.append(out_dir / f"{stem}_cleaned_raw.fif")
    for p in paths:
        _check_fif_target(p, overwrite)
    sources, tap, n_times = _sources_raw(sep, rec, chunk_seconds, 0.0)
    items = [(sources, paths[0])]
    if exclude is not None:
        # Saved after the sources, whose pass gives the means it needs.
        mean = lambda: tap.summary(n_times, rec.sample_rate).mean  # noqa: E731
        items.append((_cleaned_raw(sep, rec, exclude, mean, chunk_seconds), paths[1]))
    _save_fifs(items, overwrite)
    return sep, paths
