"""Read and write multichannel audio files as :class:`~sepkit.io.Recording`.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF,
...) and falls back to librosa's audioread loader for what libsndfile cannot
open (M4A/AAC and friends, which need ffmpeg on the system). Writing always
goes through soundfile, atomically: each file is written to a temporary name in
the destination folder and then renamed over the target with ``os.replace``,
so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import secrets
import struct
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from .._atomic import atomic_write
from .._check import check_float, check_option
from .recording import Recording

logger = logging.getLogger(__name__)

__all__ = ["AUDIO_EXTENSIONS", "read_audio", "resample", "write_audio", "write_sources"]

# Subtypes that store floating point samples; every other subtype (PCM_*, ULAW,
# VORBIS, MPEG_LAYER_III, ...) saturates at full scale, i.e. |x| = 1.0.
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")

# Where the loudest sample lands after scaling down (-0.09 dBFS): PCM_16 holds
# at most 32767/32768 and lossy codecs overshoot slightly on decode, so aiming
# exactly at 1.0 would still clip a little.
_PEAK_TARGET = 0.99

# Suffixes whose libsndfile format name is not simply the upper-cased suffix.
_SUFFIX_ALIASES = {"aif": "AIFF", "oga": "OGG"}

# Containers libsndfile does not open but read_audio's audioread (ffmpeg)
# fallback usually decodes.
_AUDIOREAD_SUFFIXES = (".aac", ".m4a", ".mp3", ".mp4", ".opus", ".wma")

#: File suffixes read_audio is meant to read: libsndfile's formats (as
#: write_audio names them) and the audioread containers above.
AUDIO_EXTENSIONS = tuple(
    sorted(
        {"." + f.lower() for f in sf.available_formats() if f != "RAW"}
        | {"." + s for s in _SUFFIX_ALIASES}
        | set(_AUDIOREAD_SUFFIXES)
    )
)

# Formats write_sources offers (one mono file per source).
_SOURCE_FORMATS = ("wav", "flac", "ogg")

# WAVE format tags with one frame per block, so data-chunk bytes / block_align
# is the frame count: PCM, IEEE float, A-law, mu-law, WAVE_FORMAT_EXTENSIBLE.
_WAV_FRAME_TAGS = (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE)


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #
def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: float | None = None,
    channels: int | Sequence[int] | None = None,
    start: float | None = None,
    stop: float | None = None,
) -> Recording:
    """Read an audio file into a :class:`~sepkit.io.Recording`.

    Parameters
    ----------
    path : str or path-like
        The file. WAV, FLAC, OGG/Vorbis, MP3, AIFF and the other formats
        libsndfile knows are read with soundfile; anything else (M4A, AAC,
        WMA, ...) is handed to librosa's audioread loader, which needs ffmpeg
        (or GStreamer / Core Audio) installed on the system.
    sample_rate : float | None
        Resample to this rate in Hz after reading (see :func:`resample` for the
        filter). Default None keeps the file's own rate.
    channels : int | sequence of int | None
        Indices of the channels to keep, in the order given (negative indices
        count from the end). Default None keeps all channels.
    start, stop : float | None
        Read only the part between ``start`` and ``stop`` seconds (rounded to
        the nearest sample). With soundfile only that part is decoded (the file
        is seeked, not loaded whole). Default None: from the beginning / to the
        end.

    Returns
    -------
    rec : Recording
        ``rec.data`` has shape (n_channels, n_times), float32 in [-1, 1] for
        integer files; ``kind="audio"``; ``ch_names`` are ``"ch<i>"`` with
        ``i`` the channel's index in the file (so ``channels=[2, 0]`` gives
        ``("ch2", "ch0")``).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is empty, truncated, corrupt or in an unsupported format; a
        channel index is out of range or repeated; ``start``/``stop`` are out
        of order or past the end of the file.

    Examples
    --------
    >>> rec = read_audio("mix.wav", start=1.0, stop=3.5, channels=[0, 1])  # doctest: +SKIP
    >>> rec.data.shape  # doctest: +SKIP
    (2, 40000)
    """
    path = _check_read_path(path)
    if start is not None:
        start = check_float("start", start, min_value=0.0)
    if stop is not None:
        stop = check_float("stop", stop, min_value=0.0, strict_min=True)
    if start is not None and stop is not None and start >= stop:
        raise ValueError(
            f"'start' must be before 'stop', got start={start} s and stop={stop} s for "
            f"'{path}'. Pass start < stop (both in seconds)."
        )
    if sample_rate is not None:
        sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)

    try:
        sound_file = sf.SoundFile(str(path))
    except sf.SoundFileError as sf_error:
        # libsndfile does not know the container; audioread may (via ffmpeg).
        data, native_rate, indices = _read_with_audioread(path, channels, start, stop, sf_error)
    else:
        with sound_file:
            data, native_rate, indices = _read_with_soundfile(
                sound_file, path, channels, start, stop
            )

    rec = Recording(
        data, sample_rate=native_rate, ch_names=tuple(f"ch{i}" for i in indices), kind="audio"
    )
    if sample_rate is not None and sample_rate != rec.sample_rate:
        rec = resample(rec, sample_rate)
    return rec


def _check_read_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"'path' must be a str or os.PathLike pointing to an audio file, got "
            f"{type(path).__name__}."
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Audio file '{path}' does not exist. Check the path (relative paths are "
            f"resolved from the working directory, {os.getcwd()})."
        )
    if path.is_dir():
        raise IsADirectoryError(
            f"'{path}' is a folder, not an audio file. Pass the path of one file in it."
        )
    if not path.is_file():
        raise ValueError(
            f"'{path}' is not a regular file (a FIFO, socket or device); audio is read from "
            "files. Save the stream to a file first."
        )
    if path.stat().st_size == 0:
        raise ValueError(
            f"Audio file '{path}' is empty (0 bytes). It was probably not written completely; "
            "re-export or re-copy it."
        )
    return path


def _check_channels(channels, n_channels: int, path: Path) -> list[int]:
    """Return the list of (non-negative) channel indices to keep."""
    if channels is None:
        return list(range(n_channels))
    if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        channels = [channels]
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence | np.ndarray):
        raise TypeError(
            f"'channels' must be None, an int or a sequence of ints, got {channels!r} "
            f"({type(channels).__name__})."
        )
    indices = []
    for ch in channels:
        if isinstance(ch, bool) or not isinstance(ch, numbers.Integral):
            raise TypeError(
                f"'channels' must hold integer channel indices, got {ch!r} "
                f"({type(ch).__name__}) in {list(channels)!r}."
            )
        if not -n_channels <= ch < n_channels:
            raise ValueError(
                f"Channel index {int(ch)} in channels={list(channels)!r} is out of range: "
                f"'{path}' has {n_channels} channel(s), so valid indices are 0 to "
                f"{n_channels - 1} (or -{n_channels} to -1)."
            )
        indices.append(int(ch) % n_channels)
    if not indices:
        raise ValueError(
            f"'channels' is empty; pass at least one channel index (0 to {n_channels - 1}) "
            "or channels=None for all."
        )
    if len(set(indices)) != len(indices):
        raise ValueError(
            f"channels={list(channels)!r} selects the same channel more than once; a "
            "duplicated channel makes the mixture rank-deficient. Pass each index once."
        )
    return indices


def _slice_frames(start, stop, n_frames: int, rate: float, path: Path) -> tuple[int, int]:
    """Turn start/stop seconds into [first, last) frame indices, checked against the file."""
    duration = n_frames / rate
    first = 0 if start is None else int(round(start * rate))
    last = n_frames if stop is None else int(round(stop * rate))
    if first >= n_frames:
        raise ValueError(
            f"start={start} s is at or past the end of '{path}', which lasts {duration:.6g} s "
            f"({n_frames} frames at {rate:g} Hz; a start rounds to the nearest frame). Pass a "
            f"start of at most {(n_frames - 1) / rate:.6g} s (the last frame)."
        )
    if last > n_frames:
        raise ValueError(
            f"stop={stop} s is past the end of '{path}', which lasts {duration:.6g} s "
            f"({n_frames} frames at {rate:g} Hz). Pass stop=None to read to the end."
        )
    if last <= first:
        raise ValueError(
            f"start={start} s and stop={stop} s select no whole sample of '{path}' at "
            f"{rate:g} Hz. Pass a stop at least {1 / rate:.3g} s after start."
        )
    return first, last


def _read_with_soundfile(sound_file, path, channels, start, stop):
    n_frames = sound_file.frames
    rate = float(sound_file.samplerate)
    if n_frames <= 0:
        raise ValueError(
            f"Audio file '{path}' ({sound_file.format}/{sound_file.subtype}) holds no audio "
            "frames (0 frames): it is empty or was cut off before its first sample. "
            "Re-export or re-copy it."
        )
    declared = _wav_declared_frames(path) if sound_file.format in ("WAV", "WAVEX") else None
    if declared is not None and declared > n_frames:
        # libsndfile silently shortens a WAV whose data chunk is cut off; a file
        # interrupted while copying should not pass for a shorter recording.
        raise ValueError(
            f"Audio file '{path}' is truncated: its header declares {declared} frames but only "
            f"{n_frames} are present. It was probably cut off while being written or copied; "
            "re-export or re-copy it."
        )
    indices = _check_channels(channels, sound_file.channels, path)
    first, last = _slice_frames(start, stop, n_frames, rate, path)
    try:
        if first:
            sound_file.seek(first)
        data = sound_file.read(last - first, dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:
        raise ValueError(
            f"Could not decode audio file '{path}' ({sound_file.format}/{sound_file.subtype}): "
            f"{exc}. The file is corrupt or truncated; re-export or re-copy it."
        ) from exc
    if data.shape[0] < last - first:
        raise ValueError(
            f"Audio file '{path}' is truncated: its header declares {n_frames} frames but "
            f"decoding stopped at frame {first + data.shape[0]}. Re-export or re-copy it."
        )
    return data.T[indices], rate, indices


def _wav_declared_frames(path: Path) -> int | None:
    """Frame count a RIFF/WAVE header declares, or None when it cannot say."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64 / Wave64 keep their sizes elsewhere
        block_align = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fh.read(size)
                if len(fmt) < 14:
                    return None
                format_tag, block_align = struct.unpack("<H", fmt[:2])[0], fmt[12:14]
                block_align = struct.unpack("<H", block_align)[0]
                if format_tag not in _WAV_FRAME_TAGS or block_align == 0:
                    return None  # ADPCM & co. pack many frames per block
                if size & 1:
                    fh.seek(1, os.SEEK_CUR)
            elif chunk_id == b"data":
                # 0 and 0xFFFFFFFF mark a WAV streamed to a pipe: length unknown.
                if block_align is None or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_with_audioread(path, channels, start, stop, sf_error):
    unsupported = (
        f"Could not read '{path}': its format is not supported or the file is corrupt. "
        f"soundfile (libsndfile {sf.__libsndfile_version__}) said: {_describe(sf_error)}; "
    )
    advice = (
        " sepkit reads WAV, FLAC, OGG/Vorbis, MP3, AIFF and the other libsndfile formats "
        "directly; M4A/AAC and other compressed formats need ffmpeg installed so that "
        "librosa's audioread fallback can decode them. Or convert the file to WAV or FLAC."
    )
    try:
        import audioread
        import librosa
    except ImportError as exc:
        raise ValueError(
            unsupported + f"the audioread fallback is not installed ({exc})." + advice
        ) from exc
    try:
        with warnings.catch_warnings():
            # audioread's raw backend imports the deprecated aifc/sunau modules.
            warnings.simplefilter("ignore", DeprecationWarning)
            reader = audioread.audio_open(str(path))
    except (audioread.DecodeError, OSError, EOFError) as exc:
        raise ValueError(
            unsupported + f"the audioread fallback said: {_describe(exc)}." + advice
        ) from exc
    with reader:
        rate = float(reader.samplerate)
        # Compressed containers report an approximate duration; it is only used
        # to validate the request before decoding.
        n_frames = int(round(reader.duration * rate))
        if n_frames <= 0:
            raise ValueError(
                f"Audio file '{path}' holds no audio frames (0 frames): it is empty or was cut "
                "off before its first sample. Re-export or re-copy it."
            )
        indices = _check_channels(channels, reader.channels, path)
        first, last = _slice_frames(start, stop, n_frames, rate, path)
        with warnings.catch_warnings():
            # librosa flags audioread as deprecated; it is only our fallback.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                y, _ = librosa.load(
                    reader,
                    sr=None,
                    mono=False,
                    offset=first / rate,
                    duration=None if stop is None else (last - first) / rate,
                    dtype=np.float32,
                )
            except Exception as exc:  # audioread backends raise assorted types
                raise ValueError(
                    f"Could not decode audio file '{path}' with audioread: "
                    f"{_describe(exc)}. The file is corrupt or truncated."
                ) from exc
    y = np.atleast_2d(y)
    if y.shape[1] == 0:
        raise ValueError(
            f"Audio file '{path}' decoded to 0 frames between {first / rate:g} s and "
            f"{last / rate:g} s: it is empty or truncated. Re-export or re-copy it."
        )
    return y[indices], rate, indices


# --------------------------------------------------------------------------- #
# Resampling
# --------------------------------------------------------------------------- #
def resample(rec: Recording, sample_rate: float) -> Recording:
    """Resample a recording to ``sample_rate`` Hz.

    Uses :func:`torchaudio.functional.resample` (which runs just as well on CUDA
    tensors, for callers that keep their data on the GPU): a polyphase
    windowed-sinc filter with a Hann window, 6 zero crossings on each side
    (``lowpass_filter_width=6``) and its cutoff at 0.99 x the lower Nyquist
    frequency (``rolloff=0.99``), so content above ``0.99 * min(old, new) / 2``
    is removed instead of aliasing. The output has
    ``ceil(n_times * sample_rate / rec.sample_rate)`` samples and keeps
    its scale (a sine's amplitude and frequency are preserved).

    Parameters
    ----------
    rec : Recording
        The recording, data shape (n_channels, n_times).
    sample_rate : float
        The new rate in Hz. Both rates must be whole numbers of Hz (the filter
        works on their integer ratio).

    Returns
    -------
    rec : Recording
        Data shape (n_channels, n_times_new); same ch_names and kind. ``rec``
        itself when the rates already match.

    Examples
    --------
    >>> import numpy as np
    >>> rec = Recording(np.zeros((2, 16000)), sample_rate=16000, kind="audio")
    >>> resample(rec, 8000).data.shape
    (2, 8000)
    """
    rec = _check_recording(rec, "rec")
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    if sample_rate == rec.sample_rate:
        return rec
    for name, rate in (("sample_rate", sample_rate), ("rec.sample_rate", rec.sample_rate)):
        if not rate.is_integer():
            raise ValueError(
                f"'{name}' must be a whole number of Hz for resampling, got {rate:g} Hz. "
                f"Round it (e.g. {round(rate)})."
            )
    import torch
    import torchaudio.functional as taf

    with torch.no_grad():
        out = taf.resample(
            torch.from_numpy(rec.data),
            orig_freq=int(rec.sample_rate),
            new_freq=int(sample_rate),
            lowpass_filter_width=6,
            rolloff=0.99,
            resampling_method="sinc_interp_hann",
        )
    return rec.replace(data=out.numpy(), sample_rate=sample_rate)


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #
def write_audio(
    rec: Recording,
    path: str | os.PathLike,
    *,
    subtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a recording to one (multichannel) audio file, atomically.

    The data are written as they are: nothing is rescaled. For subtypes that
    saturate at full scale (PCM_16, PCM_24, VORBIS, ...) a recording whose peak
    exceeds 1.0 is refused rather than clipped; use ``subtype="FLOAT"`` or
    :func:`write_sources`, which can scale down safely.

    Parameters
    ----------
    rec : Recording
        Data shape (n_channels, n_times); ``rec.sample_rate`` must be a whole
        number of Hz (file headers store an integer rate).
    path : str or path-like
        Target file; its suffix picks the format (``.wav``, ``.flac``,
        ``.ogg``, ``.aiff``, ``.mp3``, ... as libsndfile can write). The folder
        must exist.
    subtype : str | None
        libsndfile subtype such as ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``,
        ``"VORBIS"``. Default None uses the format's default (PCM_16 for WAV
        and FLAC, VORBIS for OGG).
    overwrite : bool
        Replace an existing file. Default False raises FileExistsError.

    Returns
    -------
    path : Path
        The file written.

    Examples
    --------
    >>> write_audio(rec, "out.flac", subtype="PCM_24")  # doctest: +SKIP
    """
    rec = _check_recording(rec, "rec")
    path = Path(path).expanduser()
    fmt = _format_from_suffix(path)
    subtype = _check_subtype(subtype, fmt)
    sample_rate = _file_sample_rate(rec)
    _check_finite(rec)
    peak = float(np.max(np.abs(rec.data))) if rec.n_times else 0.0
    if subtype not in _FLOAT_SUBTYPES and peak > 1.0:
        raise ValueError(
            f"The recording's peak is {peak:.4g}, above full scale (1.0), so writing it to "
            f"'{path}' as {subtype} would clip. Pass subtype='FLOAT', scale the data down "
            f"(e.g. rec.replace(data=rec.data * {_PEAK_TARGET / peak:.4g})), or use "
            "write_sources(..., normalize='peak_safe')."
        )
    _check_targets([path], overwrite=overwrite, folder=path.parent, create_folder=False)
    _write_atomic([(path, rec.data)], sample_rate=sample_rate, fmt=fmt, subtype=subtype)
    return path


def write_sources(
    rec: Recording,
    out_dir: str | os.PathLike,
    *,
    stem: str | None = None,
    format: str = "wav",
    subtype: str | None = None,
    overwrite: bool = False,
    normalize: str | None = "peak_safe",
    return_gains: bool = False,
) -> list[Path] | tuple[list[Path], np.ndarray]:
    """Write each channel of ``rec`` (one separated source each) to its own mono file.

    Files are named ``<stem>_s1.<format>``, ``<stem>_s2.<format>``, ... in
    channel order. All targets are checked before anything is written: with
    ``overwrite=False``, if any of them exists a FileExistsError lists them and
    NO file is written. Each file is written to a temporary name in ``out_dir``
    and renamed into place only once every file has been encoded.

    Parameters
    ----------
    rec : Recording
        Sources, data shape (n_sources, n_times); ``rec.sample_rate`` must be a
        whole number of Hz.
    out_dir : str or path-like
        Folder for the files; created (with parents) if missing.
    stem : str | None
        File name prefix, without folder. Default None uses ``"source"``.
    format : {"wav", "flac", "ogg"}
        Container, also the file suffix.
    subtype : str | None
        libsndfile subtype: ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"`` (WAV only),
        ``"VORBIS"`` (OGG), ... Default None uses the format's default: PCM_16
        for WAV and FLAC, VORBIS for OGG.
    overwrite : bool
        Replace existing files. Default False.
    normalize : {"peak_safe", "peak", None}
        How samples are scaled before writing:

        - ``"peak_safe"`` (default): for subtypes that saturate at full scale
          (everything except FLOAT/DOUBLE), if the loudest sample of ALL
          sources exceeds 1.0, every source is multiplied by the same gain
          ``0.99 / peak`` (no clipping, relative levels kept); otherwise the
          data are written unscaled, so sources projected back onto a
          reference channel keep their physical scale. Float subtypes are
          never scaled.
        - ``"peak"``: each source is scaled on its own so that its peak is
          0.99, for sources whose scale is arbitrary (e.g. latent sources that
          were not projected back). Silent sources are left as they are.
        - None: written unscaled; raises ValueError if that would clip.
    return_gains : bool
        Also return the gains applied. Default False returns only the paths.

    Returns
    -------
    paths : list of Path
        The files written, in source order.
    gains : ndarray, shape (n_sources,)
        Only with ``return_gains=True``: the factor each source was multiplied
        by (all 1.0 when nothing was scaled). Any gain other than 1 is also
        logged at INFO level on the ``sepkit.io.audio`` logger.

    Examples
    --------
    >>> paths = write_sources(est, "out", stem="mix01")  # doctest: +SKIP
    >>> [p.name for p in paths]  # doctest: +SKIP
    ['mix01_s1.wav', 'mix01_s2.wav']
    """
    rec = _check_recording(rec, "rec")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"'out_dir' must be a str or os.PathLike, got {type(out_dir).__name__}.")
    out_dir = Path(out_dir).expanduser()
    stem = "source" if stem is None else stem
    if not isinstance(stem, str):
        raise TypeError(f"'stem' must be a str (a file name prefix), got {type(stem).__name__}.")
    if not stem or stem != Path(stem).name or stem in (".", ".."):
        raise ValueError(
            f"'stem' must be a plain file name prefix without folders, got {stem!r}. Put the "
            "folder in 'out_dir' instead."
        )
    format = check_option("format", format, _SOURCE_FORMATS)
    fmt = format.upper()
    subtype = _check_subtype(subtype, fmt)
    check_option("normalize", normalize, ("peak_safe", "peak", None))
    sample_rate = _file_sample_rate(rec)
    _check_finite(rec)

    data = rec.data
    peaks = np.max(np.abs(data), axis=1) if rec.n_times else np.zeros(rec.n_channels)
    gains = np.ones(rec.n_channels)
    bounded = subtype not in _FLOAT_SUBTYPES
    if normalize == "peak_safe" and bounded and peaks.max() > 1.0:
        gains[:] = _PEAK_TARGET / peaks.max()
    elif normalize == "peak":
        loud = peaks > 0
        gains[loud] = _PEAK_TARGET / peaks[loud]
    elif normalize is None and bounded and peaks.max() > 1.0:
        raise ValueError(
            f"Source {int(np.argmax(peaks)) + 1} peaks at {peaks.max():.4g}, above full scale "
            f"(1.0), so writing it as {subtype} with normalize=None would clip. Pass "
            "normalize='peak_safe' (one common gain, relative levels kept) or subtype='FLOAT'."
        )

    paths = [out_dir / f"{stem}_s{i + 1}.{format}" for i in range(rec.n_channels)]
    _check_targets(paths, overwrite=overwrite, folder=out_dir, create_folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [(p, (data[i] * np.float32(gains[i]))[None]) for i, p in enumerate(paths)]
    _write_atomic(items, sample_rate=sample_rate, fmt=fmt, subtype=subtype)
    if np.any(gains != 1.0):
        logger.info(
            "write_sources scaled the sources by %s (normalize=%r, peaks %s) before writing to %s.",
            np.array2string(gains, precision=4),
            normalize,
            np.array2string(peaks, precision=4),
            out_dir,
        )
    return (paths, gains) if return_gains else paths


def _check_recording(rec, name: str) -> Recording:
    if not isinstance(rec, Recording):
        raise TypeError(
            f"'{name}' must be a Recording, got {type(rec).__name__}. Wrap an array as "
            "Recording(data, sample_rate=16000, kind='audio')."
        )
    return rec


def _check_finite(rec: Recording) -> None:
    finite = np.isfinite(rec.data)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"The recording contains {int((~finite).sum())} NaN or Inf values (in channel(s) "
            f"{bad_rows[:10].tolist()}); audio files cannot store them. Remove or replace "
            "them (e.g. np.nan_to_num) before writing."
        )


def _file_sample_rate(rec: Recording) -> int:
    if not float(rec.sample_rate).is_integer():
        raise ValueError(
            f"Audio files store a whole number of Hz, but the recording's sample_rate is "
            f"{rec.sample_rate:g} Hz. Resample it first: resample(rec, {round(rec.sample_rate)})."
        )
    return int(rec.sample_rate)


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = _SUFFIX_ALIASES.get(suffix, suffix.upper())
    # RAW has no header to describe the data, so it cannot be read back by name.
    if not suffix or fmt == "RAW" or fmt not in sf.available_formats():
        writable = sorted(
            {s.lower() for s in sf.available_formats() if s != "RAW"} | set(_SUFFIX_ALIASES)
        )
        raise ValueError(
            f"Cannot tell the audio format from the suffix of '{path}' (got "
            f"{path.suffix!r}). Allowed suffixes are {', '.join('.' + s for s in writable)}; "
            "use e.g. '.wav' or '.flac'."
        )
    return fmt


def _check_subtype(subtype, fmt: str) -> str:
    if subtype is None:
        return sf.default_subtype(fmt)
    if not isinstance(subtype, str):
        raise TypeError(f"'subtype' must be a str such as 'PCM_16', got {type(subtype).__name__}.")
    subtype = subtype.upper()
    if not sf.check_format(fmt, subtype):
        allowed = ", ".join(repr(s) for s in sf.available_subtypes(fmt))
        raise ValueError(
            f"Invalid value for the 'subtype' parameter with format {fmt}. Allowed values are "
            f"{allowed}, but got {subtype!r} instead."
        )
    return subtype


def _check_targets(
    paths: list[Path], *, overwrite: bool, folder: Path, create_folder: bool
) -> None:
    """Refuse before writing anything: folder must be usable, targets new unless overwrite."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"'{folder}' exists but is a file, not a folder to write into.")
    if not folder.exists() and not create_folder:
        raise FileNotFoundError(
            f"Cannot write '{paths[0]}': the folder '{folder}' does not exist. Create it first."
        )
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(f"Cannot write '{path}': a folder of that name exists.")
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        names = ", ".join(f"'{p.name}'" for p in existing)
        raise FileExistsError(
            f"{len(existing)} of the {len(paths)} target file(s) already exist in '{folder}': "
            f"{names}. Nothing was written. Pass overwrite=True to replace them, or choose "
            "another folder or stem."
        )


def _write_atomic(items, *, sample_rate: int, fmt: str, subtype: str) -> None:
    """Encode every (path, data) to a temp file beside its target, then rename all.

    One :func:`sepkit._atomic.atomic_write` per file, entered together: the
    renames happen only once every file has been encoded, so if encoding any
    file fails, all temp files are removed and no target is touched. Each file
    gets the mode and symlink handling of every other writer in sepkit.
    """
    with ExitStack() as stack:
        for path, data in items:
            tmp = stack.enter_context(atomic_write(path))
            sf.write(str(tmp), data.T, sample_rate, format=fmt, subtype=subtype)


# ------------------------------------------------ streaming a long file
def probe(path) -> tuple[int, float]:
    """(n_times, sample_rate) of an audio file; a truncated or corrupt file fails here."""
    try:
        info = sf.info(str(path))
        n_times_file, file_rate = int(info.frames), float(info.samplerate)
    except Exception:  # not libsndfile-readable: read it once to learn its length
        head = read_audio(path)
        n_times_file, file_rate = head.n_times, head.sample_rate
    if n_times_file == 0:
        raise ValueError(f"'{path}' holds no audio samples (empty file).")
    # Read the first and the last sample now, so that a truncated or corrupt
    # file fails before anything is fitted or any output folder is made.
    read_audio(path, stop=1 / file_rate)
    read_audio(path, start=(n_times_file - 1) / file_rate)
    return n_times_file, file_rate


def chunk_reader(path, n_times_file, file_rate, rate, n_channels, channels=None):
    """``read(lo, hi)``: samples [lo, hi) of the file at ``rate``, checked, float32.

    ``channels``: the indices of the file's channels to read (None: all).

    At a rate other than the file's, each range is read with context on both
    sides from a start on the resampler's phase grid (a whole number of its
    periods), so that the samples kept are those of resampling the file in one
    piece with :func:`sepkit.io.audio.resample` (up to float rounding), and a
    read never spans more than ``hi - lo`` plus that context.
    """
    if file_rate == rate:
        up, down, context = 1, 1, 0
    else:
        # One period of the polyphase resampler: `up` output samples from `down` input samples.
        g = math.gcd(int(file_rate), int(rate))
        up, down = int(rate) // g, int(file_rate) // g
        # torchaudio's kernel reaches ceil(6 * down / (0.99 * min(up, down))) input
        # samples to each side (lowpass_filter_width=6, rolloff=0.99 as in resample).
        reach = math.ceil(6 * down / (0.99 * min(up, down)))
        context = -(-(reach + down) // down) + 1  # periods

    def read(lo, hi):
        first = max(0, lo // up - context)  # in periods
        last = -(-hi // up) + context
        a, b = first * down, min(last * down, n_times_file)
        rec = read_audio(path, channels=channels, start=a / file_rate, stop=b / file_rate)
        if rec.sample_rate != rate:
            rec = resample(rec, rate)
        x = rec.data[:, lo - first * up : hi - first * up]
        if x.shape[0] != n_channels:
            raise ValueError(
                f"'{path}' has {x.shape[0]} channel{'s' * (x.shape[0] != 1)} but the separator was fitted on "
                f"{n_channels}. Pass a file with the same channels."
            )
        if not np.isfinite(x).all():
            raise ValueError(f"'{path}' contains NaN or Inf samples; cannot separate it.")
        n = hi - lo
        if x.shape[1] < n:
            x = np.pad(x, ((0, 0), (0, n - x.shape[1])))
        return x

    return read


def _encoded_blocks(src, n_times: int, rate: float, out_rate: float, block_frames: int):
    """Blocks of the float temp file ``src`` (``n_times`` at ``rate``), at ``out_rate``."""
    if out_rate == rate:
        with sf.SoundFile(str(src)) as r:
            yield from r.blocks(blocksize=block_frames, dtype="float32")
        return
    n_out = -(-n_times * int(out_rate) // int(rate))  # as many as resample gives
    read = chunk_reader(src, n_times, rate, out_rate, 1)
    for lo in range(0, n_out, block_frames):
        yield read(lo, min(lo + block_frames, n_out))[0]


def write_streamed(
    chunks, rate, n_times, paths, fmt, subtype, chunk_seconds, name, verbose, out_rate=None
):
    """Write the sources ``chunks`` into float temp files, then encode ``paths`` all or nothing.

    ``chunks`` yields (start, stop, sources) over [0, ``n_times``), sources of
    shape (n_sources, stop - start) at ``rate`` (e.g. ``sepkit.methods.tf.TFDemixer._chunks``).
    ``out_rate`` (default ``rate``): the rate of ``paths``; the encoding pass then
    reads the temp files through :func:`chunk_reader`, so the written sources are
    those of resampling them in one piece.
    """
    out_rate = rate if out_rate is None else out_rate
    token = secrets.token_hex(6)
    raw_tmp = [p.with_name(f".{p.name}.{token}.f32.tmp") for p in paths]
    fin_tmp = [p.with_name(f".{p.name}.{token}.tmp") for p in paths]
    rate_int = _file_sample_rate(Recording(np.zeros((1, 0), np.float32), rate))
    out_rate_int = _file_sample_rate(Recording(np.zeros((1, 0), np.float32), out_rate))
    try:
        peak = 0.0
        writers = [
            sf.SoundFile(str(t), "w", rate_int, 1, format="WAV", subtype="FLOAT") for t in raw_tmp
        ]
        try:
            with tqdm(
                total=n_times, unit="sample", unit_scale=True, desc=name, disable=not verbose
            ) as bar:
                for start, stop, block in chunks:
                    peak = max(peak, float(np.abs(block).max(initial=0.0)))
                    for w, row in zip(writers, block, strict=True):
                        w.write(row)
                    bar.update(stop - start)
        finally:
            for w in writers:
                w.close()
        gain = 1.0
        if subtype not in _FLOAT_SUBTYPES and peak > 1.0:
            gain = _PEAK_TARGET / peak
        block_frames = int(chunk_seconds * out_rate) or 1
        for src, dst in zip(raw_tmp, fin_tmp, strict=True):
            with sf.SoundFile(str(dst), "w", out_rate_int, 1, format=fmt, subtype=subtype) as w:
                for buf in _encoded_blocks(src, n_times, rate, out_rate, block_frames):
                    buf = buf * np.float32(gain)
                    if subtype not in _FLOAT_SUBTYPES:  # resampling may overshoot the peak
                        buf = np.clip(buf, -1.0, 1.0)
                    w.write(buf)
        for dst, p in zip(fin_tmp, paths, strict=True):
            os.replace(dst, p)
    finally:
        for t in raw_tmp + fin_tmp:
            try:
                os.unlink(t)
            except FileNotFoundError:
                pass
