"""Separate long multichannel audio files in bounded memory (the time-frequency family).

:func:`separate_file` fits the time-frequency separation
(:mod:`sepkit.methods.tf`) on at most ``max_fit_seconds`` of a file, read in
blocks spread over it, then reads, separates and writes it chunk by chunk.
The family's names stay importable from here for code written against
earlier releases.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._check import check_float, check_int, check_option
from .functional_tf import fft_size_for
from .io import audio as aio
from .io.audio import read_audio
from .methods.tf import (
    _CHUNK_SECONDS,
    TFConfig,
    TFDemixer,
    check_audio_input,
    fit_blocks,
    fit_tf,
)

__all__ = ["TFConfig", "TFDemixer", "check_audio_input", "fit_blocks", "fit_tf", "separate_file"]


def separate_file(
    path,
    out_dir,
    *,
    n_sources: int = 2,
    separator=None,
    stem: str | None = None,
    format: str = "wav",
    subtype: str | None = None,
    overwrite: bool = False,
    resample: bool = False,
    chunk_seconds: float = _CHUNK_SECONDS,
    random_state: int | None = None,
    verbose: bool = True,
):
    """Separate a (long) multichannel audio file into one file per source.

    Memory stays bounded by the chunk size, whatever the file's length: the
    separator is fitted on at most ``max_fit_seconds`` of audio read in blocks
    spread over the file (60 s by default), then the file is read, separated
    and written ``chunk_seconds`` at a time.

    Parameters
    ----------
    path : str or path-like
        The mixture (any format :func:`sepkit.read_audio` reads; slices are
        read without decoding the whole file for WAV/FLAC/OGG).
    out_dir : str or path-like
        Folder for ``<stem>_s1.<format>``, ... (created if missing).
    n_sources : int
        Used when ``separator`` is None.
    separator : IVAESeparator or None
        A fitted separator (``domain_ == "tf"``) to apply, e.g. from
        :meth:`IVAESeparator.load`. None fits a new one (``domain="tf"``) on
        the file.
    stem : str or None
        File name prefix; default the input file's stem.
    format, subtype, overwrite
        As in :func:`sepkit.io.write_sources`: files are written to temporary
        names and renamed only when all are complete; existing outputs are
        never touched unless ``overwrite=True``, and on any failure nothing is
        left behind.
    resample : bool
        When the file's sample rate differs from a given separator's, resample
        each chunk to the separator's rate (default False raises).
    chunk_seconds : float
        Audio separated at a time.
    random_state : int or None
        Seed of a new fit.
    verbose : bool
        Progress bar over the file.

    Returns
    -------
    paths : list of Path
        The files written, in source order.

    Notes
    -----
    Peak-safe scaling as in ``write_sources``: the sources are projected back
    onto the reference microphone (physical scale). They are first written as
    32-bit float temp files while the peak is tracked; if the requested
    subtype saturates at full scale and the peak exceeds 1, every source is
    multiplied by the same gain ``0.99 / peak`` in the second pass that
    encodes the final files.
    """
    path = aio._check_read_path(path)
    check_float("chunk_seconds", chunk_seconds, min_value=0.0, strict_min=True)
    check_option("resample", resample, (True, False))
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"'out_dir' must be a str or os.PathLike, got {type(out_dir).__name__}.")
    out_dir = Path(out_dir).expanduser()
    stem = path.stem if stem is None else stem
    format = check_option("format", format, aio._SOURCE_FORMATS)
    fmt = format.upper()
    subtype = aio._check_subtype(subtype, fmt)

    n_times_file, file_rate = aio.probe(path)

    if separator is None:
        demixer = _fit_file(path, n_times_file, file_rate, n_sources, random_state)
    elif getattr(separator, "domain_", None) != "tf":
        raise ValueError(
            "separate_file needs a separator fitted with domain='tf' (audio); got one fitted "
            f"with domain={getattr(separator, 'domain_', None)!r}."
        )
    else:
        demixer = separator.tf_
    rate = demixer.sample_rate
    if file_rate != rate and not resample:
        raise ValueError(
            f"'{path}' has sample_rate {file_rate:g} Hz but the model expects {rate:g} Hz. "
            "Pass resample=True."
        )
    n_times = n_times_file if file_rate == rate else int(round(n_times_file * rate / file_rate))

    read = aio.chunk_reader(path, n_times_file, file_rate, rate, demixer.n_channels)
    paths = [out_dir / f"{stem}_s{i + 1}.{format}" for i in range(demixer.n_sources)]
    aio._check_targets(paths, overwrite=overwrite, folder=out_dir, create_folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = demixer._chunks(read, n_times, chunk_seconds)
    aio.write_streamed(
        chunks, rate, n_times, paths, fmt, subtype, chunk_seconds, path.name, verbose
    )
    return paths


def _fit_file(path, n_times, file_rate, n_sources, random_state) -> TFDemixer:
    """Fit the time-frequency separation on blocks spread over the file."""
    check_int("n_sources", n_sources, min_value=1)
    cfg = TFConfig()
    ranges = fit_blocks(n_times, file_rate, cfg.max_fit_seconds)
    blocks = [read_audio(path, start=a / file_rate, stop=b / file_rate).data for a, b in ranges]
    for b in blocks:
        check_audio_input(b, n_sources, fft_size_for(file_rate))
    # The fit's own progress bar stays off; the file's bar shows the separation.
    return fit_tf(blocks, file_rate, n_sources, random_state=random_state, verbose=False)
