"""Corpus loaders: torch datasets of windows over many recordings, read from disk.

A corpus is a list of files: audio that libsndfile reads (WAV, FLAC, OGG, ...),
EEG in any format of :func:`sepkit.io.read_eeg` (opened with
``preload=False``), and ``.npy`` arrays of shape (n_channels, n_times) (opened
memory-mapped). Each recording is cut into windows of ``window_seconds``
starting every ``hop_seconds``, and each window comes with its u, the index of
the window within its recording (the iVAE's auxiliary variable, as
:mod:`sepkit.windows` defines it for one recording).

- :class:`WindowDataset` is map-style (``len``, ``ds[i]``): random access, as
  braindecode's windows datasets.
- :class:`WindowCorpus` is an :class:`~torch.utils.data.IterableDataset` over
  the same windows: shuffled per epoch, sharded across ``torchrun`` ranks and
  DataLoader workers, deterministic given the seed, and resumable from
  :meth:`WindowCorpus.state_dict`.

Both stream: file lengths are probed once at construction (the audio header,
the EEG header, the ``.npy`` header) and only the window being returned is
read, so memory is bounded by the window size, not by the corpus size.

Each item is a dict::

    {"window": Tensor (n_channels, window_samples) float32,
     "u": int,          # window index within its recording
     "recording": int,  # index of the file in `files`
     "start": int}      # first sample of the window, at the file's own rate

Examples
--------
EEG users window their recordings as with braindecode, with random access:

>>> from sepkit.data import WindowDataset
>>> ds = WindowDataset(["s01.fif", "s02.fif"], window_seconds=2.0)  # doctest: +SKIP
>>> item = ds[0]  # doctest: +SKIP
>>> item["window"].shape, item["u"], item["recording"]  # doctest: +SKIP
(torch.Size([64, 512]), 0, 0)

A shuffled, sharded stream for training, here mono 16 kHz windows of 1 s from
files at several rates; under ``torchrun`` each rank reads its own part:

>>> import torch
>>> from sepkit.data import WindowCorpus
>>> corpus = WindowCorpus(
...     ["a.wav", "b.flac", "c.ogg"], 1.0, sample_rate=16000, channels="mean", n_epochs=None
... )  # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(corpus, batch_size=32, num_workers=2)  # doctest: +SKIP
>>> batch = next(iter(loader))  # doctest: +SKIP
>>> batch["window"].shape, batch["u"].shape  # doctest: +SKIP
(torch.Size([32, 1, 16000]), torch.Size([32]))

Resuming (iterated in the main process, ``num_workers=0``): the next iteration
continues with the window after the last one yielded before ``state_dict()``.

>>> state = corpus.state_dict()  # doctest: +SKIP
>>> corpus = WindowCorpus(["a.wav", "b.flac", "c.ogg"], 1.0, sample_rate=16000,
...                       channels="mean", n_epochs=None)  # doctest: +SKIP
>>> corpus.load_state_dict(state)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ._check import check_float, check_int, check_option
from .io import AUDIO_EXTENSIONS, SUPPORTED_EEG_EXTENSIONS, bad_annotation_spans, read_eeg

__all__ = ["WindowCorpus", "WindowDataset", "open_npy"]

CHANNELS = (None, "mean")
# Resampling ratios are rounded to a fraction with at most this denominator:
# exact for the usual rates (44100 -> 16000 is 160/441, 512 -> 250 is 125/256).
_MAX_DENOMINATOR = 1000


@dataclass(frozen=True)
class _Source:
    """One file of the corpus, as probed from its header."""

    index: int  # position in `files`
    path: Path
    kind: str  # "audio", "eeg" or "npy"
    n_times: int
    sample_rate: float | None  # None for .npy
    n_channels: int
    # EEG only (audio and .npy channels have no names): the channels a window holds by
    # default (the good EEG ones), their positions in the file, and every channel's name
    # (a channel named in `channels` is read even when bad or not EEG, as MNE's picks).
    ch_names: tuple | None = None
    picks: tuple | None = None
    all_names: tuple | None = None
    bad_spans: tuple = ()  # (start, stop) samples under bad annotations (EEG)


@dataclass(frozen=True)
class _Plan:
    """How the windows of one kept recording are read."""

    source: _Source
    up: int  # resampling ratio up / down
    down: int
    read_samples: int  # samples read per window, at the file's rate
    hop_samples: int  # at the file's rate
    kept: np.ndarray  # u (index in time) of each window kept, ascending
    n_total: int  # windows before those over bad annotations were left out

    @property
    def n_windows(self) -> int:
        return len(self.kept)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".npy"):
        return "npy"
    if any(name.endswith(ext) for ext in SUPPORTED_EEG_EXTENSIONS):
        return "eeg"
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return "audio"
    return None


def _check_files(files) -> list[Path]:
    if isinstance(files, (str, os.PathLike)) or not isinstance(files, Sequence):
        raise TypeError(
            f"'files' must be a list of paths, got {type(files).__name__} ({files!r}). "
            "Pass e.g. files=['s01.fif'] for one recording."
        )
    if not files:
        raise ValueError(
            "'files' is empty; pass at least one recording (.npy, audio or EEG), "
            "e.g. files=['s01.fif']."
        )
    paths = [Path(name).expanduser() for name in files]
    for i, path in enumerate(paths):
        if not path.exists():
            raise FileNotFoundError(
                f"files[{i}] ({path}) does not exist; check the name and folder."
            )
        if _kind(path) is None:
            raise ValueError(
                f"Unsupported file extension '{path.suffix}' of files[{i}] ({path}). Supported "
                "are .npy (n_channels, n_times), audio that soundfile reads (.wav, .flac, .ogg, "
                f"...) and EEG ({', '.join(SUPPORTED_EEG_EXTENSIONS)}); convert the file to one."
            )
    return paths


def open_npy(path: Path, *, mmap: bool = True) -> np.ndarray:
    """A ``.npy`` recording of shape (n_channels, n_times), memory-mapped by default.

    Raises ValueError naming the file and the fix where it is not a 2-D array
    of real numbers.
    """
    try:
        data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a readable .npy array (numpy said: {err}). Save it with "
            "np.save(path, data) from an array of shape (n_channels, n_times)."
        ) from None
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise ValueError(
            f"{path} holds an array of shape {data.shape} and dtype {data.dtype}; expected "
            "real numbers of shape (n_channels, n_times)."
        )
    return data


def _probe_npy(path: Path):
    data = open_npy(path)
    return data, data.shape[1], None, data.shape[0]


def _probe(index: int, path: Path):
    """(the file's header as a _Source, an open handle or None); reads no samples."""
    kind = _kind(path)
    if kind == "npy":
        handle, n_times, rate, n_channels = _probe_npy(path)
    elif kind == "eeg":
        handle = read_eeg(path, picks="all", preload=False)
        types, bads = handle.get_channel_types(), set(handle.info["bads"])
        good = tuple(
            i for i, name in enumerate(handle.ch_names) if types[i] == "eeg" and name not in bads
        )
        source = _Source(
            index,
            path,
            kind,
            int(handle.n_times),
            float(handle.info["sfreq"]),
            len(good),
            tuple(handle.ch_names[i] for i in good),
            picks=good,
            all_names=tuple(handle.ch_names),
            bad_spans=tuple(bad_annotation_spans(handle)),
        )
        return source, handle
    else:
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError) as err:
            raise ValueError(
                f"Could not open {path} with soundfile ({err}). Corpora stream only audio that "
                "libsndfile reads (WAV, FLAC, OGG, ...); convert it, e.g. to FLAC."
            ) from None
        handle, n_times, rate, n_channels = None, info.frames, float(info.samplerate), info.channels
    return _Source(index, path, kind, int(n_times), rate, int(n_channels)), handle


def _common_rate(sources: list[_Source], sample_rate: float | None) -> float:
    if sample_rate is not None:
        return sample_rate
    npy = [s.path.name for s in sources if s.sample_rate is None]
    if npy:
        raise ValueError(
            f".npy files carry no sample rate ({', '.join(npy)}); pass sample_rate (in Hz), "
            "the rate they were recorded at."
        )
    rates = sorted({s.sample_rate for s in sources})
    if len(rates) > 1:
        raise ValueError(
            f"The files have different sample rates {rates} Hz and sample_rate is None. Pass "
            f"sample_rate (e.g. sample_rate={rates[0]:g}, the lowest of them) to resample every "
            "window to one rate."
        )
    return rates[0]


def _check_channels(channels):
    """None, "mean", or a tuple of channel names (EEG)."""
    if isinstance(channels, str) and channels not in CHANNELS:
        # Audit: channels="Fz" listed only None and 'mean', not the list it meant.
        raise ValueError(
            f"'channels' must be None, 'mean' or a list of channel names, got {channels!r}. "
            f"For that one channel pass channels=[{channels!r}]."
        )
    if channels is None or isinstance(channels, str):
        return check_option("channels", channels, CHANNELS)
    names = tuple(channels) if isinstance(channels, (list, tuple)) else None
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise ValueError(
            f"'channels' must be None, 'mean' or a list of distinct channel names (EEG "
            f"files), got {channels!r}. Pass e.g. channels=['Fz', 'Cz', 'Pz']."
        )
    return names


def _name_picks(sources: list[_Source], names: tuple) -> dict:
    """{file index: positions of ``names`` in that file}; every file must hold them all."""
    unnamed = [s.path.name for s in sources if s.ch_names is None]
    if unnamed:
        raise ValueError(
            f"'channels' lists channel names, but {', '.join(unnamed[:3])} names none (only "
            "EEG files name their channels). Pass channels=None or 'mean' for audio and .npy "
            "files."
        )
    picks = {}
    for s in sources:
        missing = [n for n in names if n not in s.all_names]
        if missing:
            raise ValueError(
                f"{s.path.name} lacks channel(s) {missing} of 'channels'. Pass only channels "
                f"that every file has: {_shared(sources, every=True)}."
            )
        picks[s.index] = [s.all_names.index(n) for n in names]
    return picks


def _shared(sources: list[_Source], every: bool = False) -> str:
    """The channel names of the first file that every file holds, in its order (as text).

    ``every``: among all their channels; else among the good EEG ones (the default windows').
    """
    lists = [s.all_names if every else s.ch_names for s in sources]
    common = set.intersection(*(set(names) for names in lists))
    names = [n for n in lists[0] if n in common]
    if not names:
        return "they share none"
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"the {len(names)} they share are {names[:10]}{more}"


def _common_channels(sources: list[_Source], channels) -> int:
    if isinstance(channels, tuple):
        return len(channels)
    empty = next((s for s in sources if s.n_channels == 0), None)
    if empty is not None:
        raise ValueError(
            f"{empty.path.name} has no good EEG channel (every EEG channel is in info['bads']). "
            "Mark fewer channels bad, or pass channels=[names] to window named channels, bad "
            "ones included."
        )
    if channels == "mean":
        return 1
    named = [s for s in sources if s.ch_names is not None]
    other = next((s for s in named if s.ch_names != named[0].ch_names), None)
    if other is not None and other.n_channels == named[0].n_channels:
        # As many channels, other names or order: stacking them by position would mix
        # electrodes across recordings without a word.
        raise ValueError(
            f"{other.path.name} and {named[0].path.name} have other channel names or orders, "
            "and channels is None. Pass channels=[names] (each file's are picked by name, "
            f"in that order); {_shared(named)}."
        )
    counts = sorted({s.n_channels for s in sources})
    if len(counts) > 1:
        first = sources[0]
        other = next(s for s in sources if s.n_channels != first.n_channels)
        raise ValueError(
            f"{other.path.name} has {other.n_channels} channels but {first.path.name} has "
            f"{first.n_channels}, and channels is None. Pass channels='mean' for mono windows, "
            "channels=[names] to pick EEG channels by name, or list files with the same "
            "channels."
        )
    return counts[0]


def _common_kind(sources: list[_Source], channels, n_channels: int) -> tuple:
    """(kind, ch_names) of the windows (see WindowDataset's attributes)."""
    kinds = {s.kind for s in sources}
    if {"eeg", "audio"} <= kinds:
        eeg = next(s for s in sources if s.kind == "eeg")
        audio = next(s for s in sources if s.kind == "audio")
        warnings.warn(
            f"'files' mixes EEG ({eeg.path.name}, in volts) and audio ({audio.path.name}, "
            "in full scale): their windows are signals of units about 1e5 apart, and a "
            "model fitted on them sees two kinds of data. Scale them yourself, or make a "
            "corpus of one kind.",
            UserWarning,
            stacklevel=4,
        )
    kind = kinds.pop() if len(kinds) == 1 and kinds != {"npy"} else "other"
    if channels == "mean":
        return kind, ("mean",)
    if isinstance(channels, tuple):
        return kind, channels
    if kind == "eeg":
        return kind, tuple(sources[0].ch_names)
    if kind == "audio":
        return kind, tuple(f"ch{i}" for i in range(n_channels))
    return kind, None


def _n_samples(name: str, seconds: float, rate: float) -> int:
    n = round(seconds * rate)
    if n < 1:
        raise ValueError(
            f"'{name}' ({seconds} s) is shorter than one sample at {rate} Hz; pass at least "
            f"{1 / rate} s."
        )
    return n


def _plan(
    source: _Source, rate: float, window_samples: int, hop_seconds: float, reject: bool
) -> _Plan:
    native = rate if source.sample_rate is None else source.sample_rate
    ratio = Fraction(rate / native).limit_denominator(_MAX_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    if abs(native * up / down - rate) > 1e-9 * rate:
        raise ValueError(
            f"sample_rate={rate:g} Hz is no ratio of whole numbers up to {_MAX_DENOMINATOR} "
            f"to the {native:g} Hz of {source.path.name}: windows would come at "
            f"{native * up / down:.6g} Hz ({up}/{down}), not {rate:g}. Pass that rate, or one "
            "the files' rates divide evenly."
        )
    # Enough input that the resampled window has window_samples samples.
    read_samples = window_samples if up == down else math.ceil(window_samples * down / up)
    hop_samples = _n_samples("hop_seconds", hop_seconds, native)
    n_total = 0
    if source.n_times >= read_samples:  # as sepkit.windows.n_windows_for
        n_total = (source.n_times - read_samples) // hop_samples + 1
    bad = np.zeros(n_total, dtype=bool)
    for start, stop in source.bad_spans if reject else ():
        # Window k covers [k hop, k hop + read): it overlaps [start, stop) when
        # k hop < stop and k hop + read > start (the windows make_fixed_length_epochs drops).
        first = max((start - read_samples) // hop_samples + 1, 0)
        bad[first : -(-stop // hop_samples)] = True
    return _Plan(source, up, down, read_samples, hop_samples, np.flatnonzero(~bad), n_total)


class WindowDataset(torch.utils.data.Dataset):
    """Windows of many recordings, map-style: ``len(ds)`` and ``ds[i]``.

    Window ``i`` counts through the recordings in the order of ``files`` and,
    within each, in time. Nothing but headers is read at construction;
    ``ds[i]`` reads its window from disk.

    Parameters
    ----------
    files : list of str or path-like
        The recordings: ``.npy`` arrays of shape (n_channels, n_times) (opened
        memory-mapped), audio that soundfile reads (WAV, FLAC, OGG, ...) and
        EEG files that :func:`sepkit.io.read_eeg` reads (EEG channels, volts,
        opened with ``preload=False``). Recordings shorter than one window are
        skipped with one warning that names them.
    window_seconds : float
        Window length in seconds, > 0.
    hop_seconds : float or None
        Step between window starts in seconds, in (0, window_seconds]. Default
        None: ``window_seconds`` (disjoint windows). Samples after the last
        full window are left out.
    sample_rate : float or None
        Rate of the windows in Hz. Default None: the files' own rate, which
        they must share. A number: every window is resampled to it
        (:func:`scipy.signal.resample_poly`, window by window, each read with
        the filter's reach of the file on both sides, so that it equals the file
        resampled in one piece; only at the file's first and last samples does
        the filter meet an edge, extended linearly there). ``.npy`` files
        carry no rate: they are taken to be at ``sample_rate``, which they need.
    channels : {None, "mean"} or list of str
        None (default): all channels, and every file must have as many (EEG
        files: the same names in the same order).
        ``"mean"``: the mean over channels (mono downmix), one channel.
        A list of channel names (EEG files): those channels, picked by name
        from every file, in this order (each file must hold them all).
        EEG files: None and ``"mean"`` take the EEG channels not in
        ``info["bads"]`` (as :func:`sepkit.io.to_recording` and fit do); a
        channel named in the list is read whatever its type, bad or not (as
        MNE's picks by name).
    reject_by_annotation : bool
        EEG files: leave out the windows that overlap a bad annotation (a
        description starting with ``"bad"``, any case), as
        :func:`mne.make_fixed_length_epochs` does (default True). The windows
        kept keep their u, the index in time within the recording, so the u
        of those left out are missing.

    Attributes
    ----------
    sample_rate : float
        Rate of the windows in Hz.
    window_samples : int
        Samples per window, at ``sample_rate``.
    n_channels : int
        Channels per window.
    ch_names : tuple of str or None
        Their names: the EEG channels read (those of ``channels``, or the good EEG
        channels every file shares), ``("ch0", "ch1", ...)`` for audio (as
        :func:`sepkit.read_audio` names them), ``("mean",)`` for the downmix, None
        for ``.npy`` files.
    kind : {"eeg", "audio", "other"}
        What the files hold ("other": ``.npy``, or ``.npy`` beside either); a
        :class:`sepkit.io.Recording` of the windows takes it. EEG beside audio
        files is "other", with a warning (volts against full scale).
    recordings : tuple of int
        Indices in ``files`` of the recordings kept (with a window clear of
        bad annotations).
    n_windows : tuple of int
        Windows of each kept recording, aligned with ``recordings``.
    n_rejected : tuple of int
        Windows of each kept recording left out for a bad annotation.

    Examples
    --------
    >>> ds = WindowDataset(["s01.fif", "s02.fif"], 2.0, hop_seconds=1.0)  # doctest: +SKIP
    >>> ds[3]["u"], ds[3]["recording"], ds[3]["start"]  # doctest: +SKIP
    (3, 0, 768)
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        window_seconds: float,
        *,
        hop_seconds: float | None = None,
        sample_rate: float | None = None,
        channels: str | Sequence[str] | None = None,
        reject_by_annotation: bool = True,
    ):
        window_seconds = check_float(
            "window_seconds", window_seconds, min_value=0.0, strict_min=True
        )
        if hop_seconds is None:
            hop_seconds = window_seconds
        hop_seconds = check_float("hop_seconds", hop_seconds, min_value=0.0, strict_min=True)
        if hop_seconds > window_seconds:
            raise ValueError(
                f"'hop_seconds' must be at most window_seconds ({window_seconds}) so that the "
                f"windows cover every sample, got {hop_seconds}. Pass a smaller hop_seconds."
            )
        if sample_rate is not None:
            sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
        self.channels = _check_channels(channels)
        reject = check_option("reject_by_annotation", reject_by_annotation, (True, False))
        self.reject_by_annotation = reject
        paths = _check_files(files)
        probed = [_probe(i, path) for i, path in enumerate(paths)]
        sources = [source for source, _ in probed]
        self.sample_rate = float(_common_rate(sources, sample_rate))
        self.n_channels = _common_channels(sources, self.channels)
        self.kind, self.ch_names = _common_kind(sources, self.channels, self.n_channels)
        named = isinstance(self.channels, tuple)
        self._picks = _name_picks(sources, self.channels) if named else {}
        self.window_samples = _n_samples("window_seconds", window_seconds, self.sample_rate)
        plans = [
            _plan(s, self.sample_rate, self.window_samples, hop_seconds, reject) for s in sources
        ]
        self._plans = [p for p in plans if p.n_windows > 0]
        if not self._plans and any(p.n_total for p in plans):
            raise ValueError(
                "Every window of every recording in 'files' overlaps a bad annotation. Pass "
                "reject_by_annotation=False to window them anyway, or shorter windows."
            )
        if not self._plans:
            longest = max(s.n_times / (s.sample_rate or self.sample_rate) for s in sources)
            raise ValueError(
                f"No recording in 'files' is as long as one window (window_seconds="
                f"{window_seconds}); the longest lasts {longest:.3g} s. Pass a shorter "
                "window_seconds."
            )
        _warn_skipped(plans, window_seconds)
        # Open handles (EEG Raw, .npy memmaps) of the kept recordings, by file index.
        self._handles = {s.index: h for s, h in probed if h is not None}
        self.recordings = tuple(p.source.index for p in self._plans)
        self.n_windows = tuple(p.n_windows for p in self._plans)
        self.n_rejected = tuple(p.n_total - p.n_windows for p in self._plans)
        self._offsets = np.cumsum([0, *self.n_windows])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self):
        # Workers (and pickles) reopen the files: a memmap would pickle its whole array.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _handle(self, source: _Source):
        if source.index not in self._handles:
            if source.kind == "npy":
                self._handles[source.index] = np.load(source.path, mmap_mode="r")
            else:
                self._handles[source.index] = read_eeg(source.path, picks="all", preload=False)
        return self._handles[source.index]

    def _read(self, source: _Source, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of one file, shape (n_channels, stop - start)."""
        if source.kind == "audio":
            data, _ = sf.read(
                str(source.path), start=start, stop=stop, dtype="float32", always_2d=True
            )
            return data.T
        if source.kind == "eeg":
            picks = list(self._picks.get(source.index, source.picks))
            return self._handle(source).get_data(picks=picks, start=start, stop=stop)
        return np.asarray(self._handle(source)[:, start:stop])

    def _resampled(self, plan: _Plan, start: int) -> np.ndarray:
        """The window at file sample ``start``, resampled with context on both sides.

        The polyphase filter reaches ``10 max(up, down)`` samples at the upsampled
        rate (scipy's default Kaiser window) to each side; that much of the file
        is read around the window (where the file has it; a whole number of
        ``down`` samples before it, so that the window's first output sample is one
        of the block's), so that the window equals the file resampled in one piece
        away from the file's ends. Audit: resampled alone, a window of unfiltered
        EEG with a DC offset was off by 25 % at its first sample.
        """
        from scipy.signal import resample_poly

        up, down = plan.up, plan.down
        reach = -(-10 * max(up, down) // up) + 1  # input samples the filter spans
        before = min(start, -(-reach // down) * down) // down * down
        stop = min(plan.source.n_times, start + plan.read_samples + reach)
        x = self._read(plan.source, start - before, stop)
        if self.channels == "mean":
            x = x.mean(axis=0, keepdims=True)
        # At the file's ends, extend by a line rather than zeros (offsets, drifts).
        y = resample_poly(x, up, down, axis=1, padtype="line")
        first = before * up // down
        return y[:, first : first + self.window_samples]

    def __getitem__(self, index: int) -> dict:
        """Window ``index``: {"window", "u", "recording", "start"} (see the module docstring)."""
        n = len(self)
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"Window index {index} is out of range for {n} windows.")
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        plan = self._plans[k]
        u = int(plan.kept[i - int(self._offsets[k])])
        start = u * plan.hop_samples
        if plan.up == plan.down:
            x = self._read(plan.source, start, start + plan.read_samples)
            if self.channels == "mean":
                x = x.mean(axis=0, keepdims=True)
        else:
            x = self._resampled(plan, start)
        window = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return {"window": window, "u": u, "recording": plan.source.index, "start": start}


def _warn_skipped(plans: list[_Plan], window_seconds: float) -> None:
    """One warning naming the recordings that give no window (a large corpus: a few, counted)."""
    short = [p.source.path.name for p in plans if p.n_total == 0]
    covered = [p.source.path.name for p in plans if p.n_total > 0 and p.n_windows == 0]
    for names, why in (
        (short, f"shorter than one window ({window_seconds} s)"),
        (covered, "whose every window overlaps a bad annotation"),
    ):
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            warnings.warn(
                f"Skipped {len(names)} recording(s) {why}: {', '.join(names[:5])}{more}.",
                UserWarning,
                stacklevel=3,
            )


def _rank_world(rank, world_size) -> tuple[int, int]:
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError(
            f"Pass both 'rank' and 'world_size', or neither (then they are read from "
            f"torch.distributed); got rank={rank!r} and world_size={world_size!r}."
        )
    world_size = check_int("world_size", world_size, min_value=1)
    rank = check_int("rank", rank, min_value=0)
    if rank >= world_size:
        raise ValueError(
            f"'rank' must be in [0, world_size) = [0, {world_size}), got {rank}. Pass this "
            "process's rank, e.g. int(os.environ['RANK']) under torchrun."
        )
    return rank, world_size


class WindowCorpus(torch.utils.data.IterableDataset):
    """A shuffled stream of windows over many recordings, sharded across ranks and workers.

    The windows are those of :class:`WindowDataset` (same parameters), read
    one at a time from disk. Each epoch draws a permutation of all windows
    from ``np.random.default_rng([seed, epoch])``; rank r takes every
    ``world_size``-th window of it from position r, and DataLoader worker w
    of that rank every ``num_workers``-th of the rank's windows from position
    w, so with ``num_workers > 0`` each window still comes once.

    Every rank gets the same number of windows per epoch, as DDP needs:
    ``ceil(n / world_size)`` by default, where the permutation is padded with
    its own first windows (as :class:`torch.utils.data.DistributedSampler`
    does), so those few come twice in that epoch; with ``drop_last=True``,
    ``n // world_size``, the last ``n % world_size`` windows of each epoch's
    permutation being left out. Either way the ranks' windows are disjoint
    (but for the padding) and together all the windows (but for the dropped).

    Parameters
    ----------
    files, window_seconds, hop_seconds, sample_rate, channels, reject_by_annotation
        As in :class:`WindowDataset`.
    shuffle : bool
        Permute the windows each epoch (default). False: in the order of
        :class:`WindowDataset`, the same every epoch.
    seed : int
        Seed of the permutations, >= 0; the same on every rank.
    rank, world_size : int or None
        This process's part. Default None for both: from
        :mod:`torch.distributed` when its process group is initialised (read
        at construction, so build the corpus after ``init_process_group``),
        else 0 and 1.
    n_epochs : int or None
        Passes over the corpus in one iteration, >= 1 (default 1); None loops
        forever.
    drop_last : bool
        Drop, rather than pad, to give the ranks equal counts (see above).

    Attributes
    ----------
    dataset : WindowDataset
        The windows, with ``sample_rate``, ``window_samples`` and ``n_channels``.
    rank, world_size : int
        This process's part.

    Notes
    -----
    Iteration starts at the state (:meth:`state_dict`), which advances with
    every window yielded in this process, so a corpus iterated in the main
    process (``num_workers=0``) resumes exactly after
    :meth:`load_state_dict`. A DataLoader's workers iterate copies: count the
    windows you consumed and load ``{"epoch": e, "position": p}`` yourself
    (exact with ``batch_size=1``, which the workers serve round-robin). An
    iteration that runs to its end leaves the state at the start again, so
    iterating twice gives the same windows twice; use ``n_epochs`` for fresh
    permutations.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        window_seconds: float,
        *,
        hop_seconds: float | None = None,
        sample_rate: float | None = None,
        channels: str | Sequence[str] | None = None,
        reject_by_annotation: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        n_epochs: int | None = 1,
        drop_last: bool = False,
    ):
        super().__init__()
        self.seed = check_int("seed", seed, min_value=0)
        self.n_epochs = None if n_epochs is None else check_int("n_epochs", n_epochs, min_value=1)
        # check_option: True / False only ("no" would read as True).
        self.shuffle = check_option("shuffle", shuffle, (True, False))
        self.drop_last = check_option("drop_last", drop_last, (True, False))
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.dataset = WindowDataset(
            files,
            window_seconds,
            hop_seconds=hop_seconds,
            sample_rate=sample_rate,
            channels=channels,
            reject_by_annotation=reject_by_annotation,
        )
        if self.drop_last and len(self.dataset) < self.world_size:
            raise ValueError(
                f"drop_last=True leaves no window for any rank: the corpus has "
                f"{len(self.dataset)} windows for world_size {self.world_size}. Pass "
                "drop_last=False, or shorter windows."
            )
        self._epoch, self._position = 0, 0

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Indices into :attr:`dataset` of this rank's windows in ``epoch``, in order."""
        n = len(self.dataset)
        order = (
            np.random.default_rng([self.seed, epoch]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        if self.drop_last:
            order = order[: n - n % self.world_size]
        else:  # pad cyclically, as DistributedSampler does
            order = np.resize(order, n + (-n) % self.world_size)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Windows one iteration yields on this rank (all its workers together)."""
        if self.n_epochs is None:
            raise TypeError("This WindowCorpus loops forever (n_epochs=None); it has no length.")
        n = len(self.dataset)
        per_rank = n // self.world_size if self.drop_last else -(-n // self.world_size)
        return per_rank * self.n_epochs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch, position = self._epoch, self._position
        while self.n_epochs is None or epoch < self.n_epochs:
            items = self.epoch_indices(epoch)
            for p in range(position + worker, len(items), n_workers):
                # Advanced before the yield: the state counts what the caller holds.
                self._epoch, self._position = epoch, p + 1
                yield self.dataset[int(items[p])]
            epoch, position = epoch + 1, 0
        self._epoch, self._position = 0, 0

    def state_dict(self) -> dict:
        """Where the next iteration starts, and the stream it belongs to.

        ``{"epoch", "position"}`` and what fixes the stream's order (``seed``,
        ``shuffle``, ``world_size``, ``rank``, ``drop_last``, ``n_windows``), which
        :meth:`load_state_dict` checks: a position in another order would skip
        or repeat windows without a word.
        """
        return {"epoch": self._epoch, "position": self._position, **self._stream()}

    def _stream(self) -> dict:
        return dict(
            seed=self.seed, shuffle=self.shuffle, world_size=self.world_size, rank=self.rank,
            drop_last=self.drop_last, n_windows=len(self.dataset),
        )  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (of :meth:`state_dict`) at the next iteration.

        Refused where ``state`` comes from a stream of another order (another
        seed, rank, world size or corpus) or points past its end (audit: such
        states were taken, and the iteration yielded nothing).
        """
        stream = self._stream()
        if not isinstance(state, dict) or set(state) != {"epoch", "position", *stream}:
            raise ValueError(
                f"'state' must be a dict with the keys {['epoch', 'position', *stream]}, as "
                f"state_dict() returns, got {state!r}."
            )
        other = {k: (state[k], v) for k, v in stream.items() if state[k] != v}
        if other:
            said = ", ".join(f"{k} {a!r} (this corpus: {b!r})" for k, (a, b) in other.items())
            raise ValueError(
                f"'state' is the position of another stream of windows: {said}. Load it into "
                "a WindowCorpus made as the one that saved it."
            )
        epoch = check_int("epoch", state["epoch"], min_value=0)
        position = check_int("position", state["position"], min_value=0)
        n_epochs = self.n_epochs
        last = len(self.epoch_indices(0))
        if (n_epochs is not None and epoch >= n_epochs) or position > last:
            raise ValueError(
                f"'state' points past the end of the stream: epoch {epoch}, position "
                f"{position}, where it has {n_epochs or 'endless'} epoch(s) of {last} windows "
                "on this rank. Pass a state of this stream."
            )
        self._epoch, self._position = epoch, position
