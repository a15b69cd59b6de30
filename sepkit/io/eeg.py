"""EEG loading, conversion to :class:`Recording`, labels from annotations, and
thin preprocessing helpers on top of MNE-Python.

MNE is imported inside the functions, so ``import sepkit`` stays fast.
Every helper that changes data returns a modified copy and leaves its input
untouched (MNE's own methods work in place).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._atomic import atomic_split_write
from .._check import RowMoments, check_float, check_option
from .recording import Recording, check_names_present

if TYPE_CHECKING:  # pragma: no cover - typing only
    import mne

__all__ = [
    "SUPPORTED_EEG_EXTENSIONS",
    "apply_montage",
    "bad_annotation_mask",
    "bad_annotation_spans",
    "edge_samples",
    "check_eeg_channels",
    "filter_eeg",
    "find_bad_channels",
    "from_recording",
    "highpass",
    "is_epochs_file",
    "is_highpassed",
    "labels_from_annotations",
    "labels_from_events",
    "mark_bad_channels",
    "notch",
    "read_eeg",
    "read_epochs",
    "resample",
    "set_reference",
    "to_recording",
    "warn_if_not_highpassed",
    "write_epochs_fif",
    "write_raw_fif",
]

# Extension -> name of the MNE reader. Only formats that carry EEG are listed;
# MEG-only and fNIRS formats are left to MNE itself. ".cnt" is Neuroscan (the
# far more common CNT flavour); ANT Neuro ".cnt" needs mne.io.read_raw_ant.
_READERS = {
    ".ahdr": "read_raw_brainvision",
    ".bdf": "read_raw_bdf",
    ".cdt": "read_raw_curry",
    ".cnt": "read_raw_cnt",
    ".edf": "read_raw_edf",
    ".fif": "read_raw_fif",
    ".fif.gz": "read_raw_fif",
    ".gdf": "read_raw_gdf",
    ".lay": "read_raw_persyst",
    ".mff": "read_raw_egi",
    ".nedf": "read_raw_nedf",
    ".nxe": "read_raw_eximia",
    ".set": "read_raw_eeglab",
    ".vhdr": "read_raw_brainvision",
}
#: File extensions :func:`read_eeg` understands, sorted.
SUPPORTED_EEG_EXTENSIONS = tuple(sorted(_READERS))

# Side files of multi-file formats: the user most likely meant the header.
_COMPANIONS = {
    ".eeg": (".vhdr", ".ahdr"),
    ".vmrk": (".vhdr",),
    ".amrk": (".ahdr",),
    ".fdt": (".set",),
}

# MNE's reject_by_annotation treats descriptions starting with "bad" (any case) as
# bad; we use the same rule so masks agree with MNE's epoching and ICA.fit. ("EDGE"
# belongs to filter's skip_by_annotation; concatenate_raws marks a join with both.)
_BAD_PREFIXES = ("bad",)

# Below any real EEG amplifier noise floor (roughly 0.1-1 uV RMS), so a channel
# this quiet is disconnected or saturated rather than just clean.
_FLAT_STD_VOLTS = 1e-7

# Channel types MNE knows that an EEG recording may carry.
_CHANNEL_TYPES = ("eeg", "eog", "ecg", "emg", "misc", "stim", "resp", "bio", "seeg", "ecog")
# The channel types of MNE's picks="data" (its _DATA_CH_TYPES_SPLIT, MNE 1.13).
_DATA_TYPES = ("mag", "grad", "eeg", "csd", "seeg", "ecog", "dbs", "hbo", "hbr", "fnirs_od")
_DATA_TYPES += tuple(f"fnirs_{kind}" for kind in ("cw_amplitude", "fd_ac_amplitude"))
_DATA_TYPES += tuple(f"fnirs_{kind}" for kind in ("fd_phase", "td_gated_amplitude"))
_DATA_TYPES += tuple(f"fnirs_td_moments_{kind}" for kind in ("intensity", "mean", "variance"))


def _extension(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".fif.gz"):
        return ".fif.gz"
    return path.suffix.lower()


def _reads_as(reader, path) -> bool:
    """Whether ``reader(path)`` (an MNE FIF reader) reads the file without an error.

    A probe: its warnings (e.g. MNE's file-naming one) are not news, and any
    failure only means "not this kind"; the caller's own error stands.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader(path)
    except Exception:  # noqa: BLE001
        return False
    return True


def _holds_epochs(path) -> bool:
    """Whether the FIF file at ``path`` reads as MNE Epochs."""
    import mne

    return _reads_as(lambda p: mne.read_epochs(p, preload=False, verbose="error"), path)


def _holds_evoked(path) -> bool:
    """Whether the FIF file at ``path`` reads as MNE Evoked (averages)."""
    import mne

    # read_evokeds gives [] for a FIF file without averages (a Raw, or a truncated
    # one, which a corrupt Raw must not be taken for): only averages make it Evoked.
    found = []
    _reads_as(lambda p: found.extend(mne.read_evokeds(p, verbose="error")), path)
    return bool(found)


def is_epochs_file(path) -> bool:
    """Whether ``path`` is a FIF file of MNE Epochs (:func:`read_epochs` reads it).

    A ``.fif`` or ``.fif.gz`` file that ``mne.read_epochs`` opens (its header
    only); any other path, or a FIF file of a continuous recording, is not.
    """
    path = Path(path).expanduser()
    return _extension(path) in (".fif", ".fif.gz") and path.is_file() and _holds_epochs(path)


def read_epochs(path, *, preload: bool = True) -> mne.BaseEpochs:
    """Read MNE Epochs from a FIF file (``...-epo.fif``), as ``mne.read_epochs`` does.

    The counterpart of :func:`read_eeg` for epoched data, with its checks:
    an error names the file and what is wrong with it.

    Parameters
    ----------
    path : str or Path
        A ``.fif`` or ``.fif.gz`` file written by ``Epochs.save``.
    preload : bool
        Load the samples into memory.

    Returns
    -------
    epochs : mne.Epochs
        Data in volts, shape (n_epochs, n_channels, n_times).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For another extension, an empty file, or a FIF file that holds no
        Epochs (e.g. a continuous recording: read it with :func:`read_eeg`).
    """
    import mne

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be a str or pathlib.Path, got {type(path).__name__}.")
    path = Path(path).expanduser()
    if _extension(path) not in (".fif", ".fif.gz"):
        raise ValueError(
            f"read_epochs reads MNE Epochs from FIF files (.fif or .fif.gz), got {path.name!r}. "
            "Read a continuous recording with read_eeg, and epoch it with mne.Epochs."
        )
    if not path.is_file():
        raise FileNotFoundError(f"No Epochs file at 'path' ({path}); check the name and folder.")
    if path.stat().st_size == 0:
        raise ValueError(
            f"Epochs file '{path}' is empty (0 bytes). It was probably not written completely; "
            "re-export or re-copy it."
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            epochs = mne.read_epochs(path, preload=preload, verbose="warning")
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError) as err:
        # MNE's warnings (e.g. on the file's name) would only precede this error.
        raise ValueError(
            f"Could not read '{path}' as MNE Epochs: {type(err).__name__}: {err}. A continuous "
            "recording is read with read_eeg; otherwise check that the file is complete."
        ) from err
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return epochs


def _check_raw(raw, name: str = "raw", hint: str = "", kinds: str = "an mne.io.Raw"):
    """Return ``raw`` if it is an MNE Raw, else a TypeError (``hint`` ends the message).

    ``kinds``: what the caller takes, for the message (e.g. "an mne.io.Raw or
    mne.Epochs", where Epochs were turned into a Raw before this check).
    """
    import mne

    if not isinstance(raw, mne.io.BaseRaw):
        raise TypeError(
            f"'{name}' must be {kinds} (e.g. from sepkit.io.read_eeg), got "
            f"{type(raw).__name__}.{(' ' + hint) if hint else ''}"
        )
    return raw


def _eeg_picks(raw, picks, *, exclude_bads: bool = True) -> np.ndarray:
    """Indices of ``picks`` in ``raw``, with a clear error when none remain.

    ``picks`` is a channel type (``"eeg"``, ``"eog"``, ...), one channel name,
    a list of channel names, a list of channel types (as MNE takes them:
    ``["eeg", "eog"]``, in the recording's order), ``"data"`` (MNE's data
    channels), or ``"all"`` / None for every channel. ``exclude_bads`` leaves
    out the channels in ``info["bads"]`` that a type or ``"data"`` / ``"all"``
    selects; channels named are kept, bad or not (MNE's rule for picks).
    """
    types = raw.get_channel_types()
    if picks is None or (isinstance(picks, str) and picks == "all" and picks not in raw.ch_names):
        idx = list(range(len(raw.ch_names)))
    elif isinstance(picks, str) and picks == "data" and picks not in raw.ch_names:
        # MNE's "data" channels: the brain's (EEG, MEG, sEEG, ECoG, ...), no EOG, ECG or stim.
        idx = [i for i, kind in enumerate(types) if kind in _DATA_TYPES]
    elif isinstance(picks, str) and picks not in raw.ch_names:
        known_types = sorted(set(types))
        if picks not in _CHANNEL_TYPES and picks not in known_types:
            raise ValueError(
                f"Invalid 'picks' ({picks!r}): neither a channel name nor a channel type. "
                f"This recording has channel types {known_types}; pass one of them, a list "
                "of channel names, 'data' (its EEG, MEG, sEEG, ECoG channels) or 'all', as "
                "MNE's picks."
            )
        idx = [i for i, kind in enumerate(types) if kind == picks]
    else:
        names = [picks] if isinstance(picks, str) else list(picks)
        if not all(isinstance(name, str) for name in names):
            raise TypeError(
                f"'picks' must be a channel type, a list of channel names or None, got {picks!r}."
            )
        kinds = [n for n in names if n in _CHANNEL_TYPES and n not in raw.ch_names]
        if kinds and len(kinds) == len(names):
            idx = [i for i, kind in enumerate(types) if kind in names]  # MNE's list of types
        elif kinds:
            raise ValueError(
                f"'picks' mixes channel types {kinds} with channel names "
                f"{[n for n in names if n not in kinds]}; pass a list of types or a list of "
                "names, as MNE takes them."
            )
        else:
            check_names_present(raw, names, "'picks' names", "the recording")
            idx = [raw.ch_names.index(name) for name in names]
            exclude_bads = False  # named: kept though bad, as MNE's picks by name
    if exclude_bads:
        idx = [i for i in idx if raw.ch_names[i] not in raw.info["bads"]]
    if not idx:
        raise ValueError(
            f"No channels left after picks={picks!r} (bad channels excluded: "
            f"{raw.info['bads'] if exclude_bads else []}). The recording has channel types "
            f"{sorted(set(types))}. Pass other 'picks', or set the types with "
            "raw.set_channel_types({'name': 'eeg'})."
        )
    return np.asarray(idx, dtype=int)


def _resolve_montage(montage):
    """A DigMontage from a built-in name or a DigMontage; None stays None."""
    import mne

    if montage is None or isinstance(montage, mne.channels.DigMontage):
        return montage
    if not isinstance(montage, str):
        raise TypeError(
            "'montage' must be None, a built-in montage name such as 'standard_1020' or "
            f"'biosemi64', or an mne.channels.DigMontage, got {type(montage).__name__}."
        )
    builtin = mne.channels.get_builtin_montages()
    # MNE 1.13 renamed standard_10xx to colin27_10xx (the old names warn and
    # will go); accept both so user code works across MNE versions.
    renamed = {"standard_1005": "colin27_1005", "standard_1020": "colin27_1020"}
    for name in (montage, renamed.get(montage)):
        if name is not None and name in builtin:
            return mne.channels.make_standard_montage(name)
    allowed = sorted(set(builtin) | {k for k, v in renamed.items() if v in builtin})
    check_option("montage", montage, allowed)
    return None  # unreachable: check_option raised


def apply_montage(raw, montage, *, on_missing: str = "raise"):
    """Set electrode positions on a copy of ``raw``.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording.
    montage : str or mne.channels.DigMontage
        A built-in montage name (``mne.channels.get_builtin_montages()``;
        ``"standard_1020"`` and ``"standard_1005"`` work on every MNE version)
        or a montage. Channel names are matched ignoring case.
    on_missing : {"raise", "warn", "ignore"}
        What to do when some EEG channels have no position in the montage.

    Returns
    -------
    raw : mne.io.Raw
        A copy with positions set.
    """
    _check_raw(raw)
    check_option("on_missing", on_missing, ("raise", "warn", "ignore"))
    dig = _resolve_montage(montage)
    known = {name.lower() for name in dig.ch_names}
    eeg_names = [raw.ch_names[i] for i in _eeg_types_idx(raw)]
    missing = [name for name in eeg_names if name.lower() not in known]
    if missing and on_missing != "ignore":
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        msg = (
            f"The montage {_montage_name(montage)} has no position for {len(missing)} EEG "
            f"channel(s): {shown}. Rename them to match the montage "
            "(raw.rename_channels), mark non-EEG ones with raw.set_channel_types, or pass "
            "on_missing='warn' or 'ignore' to leave them without positions."
        )
        if on_missing == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    raw = raw.copy()
    raw.set_montage(dig, match_case=False, on_missing="ignore", verbose="error")
    return raw


def _montage_name(montage) -> str:
    return repr(montage) if isinstance(montage, str) else "given"


def _eeg_types_idx(raw) -> list[int]:
    return [i for i, kind in enumerate(raw.get_channel_types()) if kind == "eeg"]


def read_eeg(
    path,
    *,
    picks="eeg",
    preload: bool = True,
    montage=None,
    on_missing: str = "raise",
) -> mne.io.BaseRaw:
    """Read an EEG recording in any format MNE reads, chosen by extension.

    Parameters
    ----------
    path : str or Path
        The file (for BrainVision the ``.vhdr`` header, for EEGLAB the ``.set``
        file, for EGI MFF the ``.mff`` folder). Supported extensions are
        :data:`SUPPORTED_EEG_EXTENSIONS`.
    picks : str, list of str or None
        Channels to keep: a channel type (default ``"eeg"``: EOG, ECG and
        stim channels are dropped), a list of names or types, ``"data"``
        (MNE's data channels), or ``"all"`` / None for every channel (for
        ``mne.find_events`` on the stim channel, or the EOG channels of
        ``find_bads_eog``). Channels marked bad in the file are kept in
        ``raw.info["bads"]`` but not dropped.
    preload : bool
        Load the samples into memory (needed to filter).
    montage : None, str or mne.channels.DigMontage
        Electrode positions to set, e.g. ``"standard_1020"`` or
        ``"biosemi64"``; None keeps what the file has.
    on_missing : {"raise", "warn", "ignore"}
        What to do when ``montage`` has no position for some EEG channels.

    Returns
    -------
    raw : mne.io.Raw
        The recording, data in volts.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unsupported extension, when no EEG channel remains after
        ``picks``, or when the montage lacks some channels and
        ``on_missing="raise"``.
    """
    import mne

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be a str or pathlib.Path, got {type(path).__name__}.")
    path = Path(path).expanduser()
    ext = _extension(path)
    if ext not in _READERS:
        hint = ""
        for other in _COMPANIONS.get(ext, ()):
            if path.with_suffix(other).exists():
                hint = f" It looks like a data side file; pass {path.with_suffix(other)} instead."
                break
        raise ValueError(
            f"Unsupported file extension '{ext}' for 'path' ({path}). Supported extensions "
            f"are: {', '.join(SUPPORTED_EEG_EXTENSIONS)}.{hint}"
        )
    if not path.exists():
        raise FileNotFoundError(f"No EEG file at 'path' ({path}); check the name and folder.")
    check_option("on_missing", on_missing, ("raise", "warn", "ignore"))
    reader = getattr(mne.io, _READERS[ext])
    if path.is_dir() and ext != ".mff":  # an EGI MFF recording is a folder
        raise ValueError(f"'{path}' is a folder, not an EEG file; pass the file in it.")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(
            f"EEG file '{path}' is empty (0 bytes). It was probably not written completely; "
            "re-export or re-copy it."
        )
    raw = _read_raw_file(reader, path, ext, preload)
    if raw.n_times == 0:
        raise ValueError(
            f"'{path}' holds no samples (a header without data). It was probably not written "
            "completely; re-export or re-copy it."
        )
    types = raw.get_channel_types()
    if "eeg" not in types and picks == "eeg":
        idx = np.array([], dtype=int)
    else:
        idx = _eeg_picks(raw, picks, exclude_bads=False)
    if not any(types[i] == "eeg" for i in idx):
        raise ValueError(
            f"No EEG channels in {path.name} after picks={picks!r}; its channel types are "
            f"{sorted(set(types))}. Pass picks naming EEG channels, or read it with "
            "mne.io.read_raw and set types with raw.set_channel_types({'name': 'eeg'})."
        )
    if len(idx) < len(raw.ch_names):
        raw.pick([raw.ch_names[i] for i in idx])
    if montage is not None:
        raw = apply_montage(raw, montage, on_missing=on_missing)
    return raw


def _read_raw_file(reader, path: Path, ext: str, preload: bool):
    """``reader(path)``, its failures turned into errors that name the file and the fix."""
    try:
        # Only MNE warnings (not info chatter) reach the user, and only once the file
        # is read: on an Epochs file MNE's naming warning would come before our error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = reader(path, preload=preload, verbose="warning")
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError) as err:
        if ext == ".fif" and _holds_epochs(path):
            raise ValueError(
                f"'{path}' holds MNE Epochs, not a continuous recording: read_eeg reads "
                "continuous ones (Raw). Read it with sepkit.io.read_epochs (IVAESeparator's "
                "fit, transform and apply take mne.Epochs, as MNE's ICA does; sepkit "
                "separate and sepkit fit take the file as it is)."
            ) from err
        if ext == ".fif" and _holds_evoked(path):
            raise ValueError(
                f"'{path}' holds MNE Evoked data (averages over epochs), not a recording to "
                "separate: an average keeps too few samples to fit on. Fit the Epochs or the "
                "Raw it was averaged from; a fitted separator's transform and apply take the "
                "Evoked (mne.read_evokeds reads it)."
            ) from err
        if "could not be imported" in str(err):  # MNE's message for an optional reader
            raise ImportError(
                f"MNE needs an optional package to read '{path}' ({ext}): "
                f"{str(err).splitlines()[0]} Install sepkit's EEG extra, pip install "
                "'sepkit[eeg]' (mffpy for EGI MFF, pymatreader for EEGLAB v7.3 files), or that "
                "package."
            ) from err
        # MNE's and scipy's reader errors rarely name the file (e.g. "Could not find
        # measurement info" for a truncated FIF, MatReadError for a corrupt .set).
        raise ValueError(
            f"Could not read '{path}' as {ext} EEG: {type(err).__name__}: {err}. Check that "
            "the file is complete and of the format its name says."
        ) from err
    return raw


def to_recording(raw, picks="eeg") -> Recording:
    """Convert an MNE Raw to a :class:`Recording` (``kind="eeg"``, volts, float32).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording.
    picks : str, list of str or None
        Channels to take (default the EEG channels, bad ones excluded). A
        channel named in a list is taken even if bad, as MNE's picks.

    Returns
    -------
    rec : Recording
        ``data`` has shape (n_channels, n_times) in volts; the sample rate and
        channel names come from ``raw``. Annotations are not carried; keep
        ``raw`` to build labels (:func:`labels_from_annotations`).
    """
    _check_raw(raw)
    idx = _eeg_picks(raw, picks)
    return Recording(
        data=_get_data_float32(raw, idx),
        sample_rate=float(raw.info["sfreq"]),
        ch_names=tuple(raw.ch_names[i] for i in idx),
        kind="eeg",
    )


def from_recording(rec: Recording, info=None, *, ch_types: str = "eeg") -> mne.io.RawArray:
    """Build an MNE RawArray from a :class:`Recording`.

    Parameters
    ----------
    rec : Recording
        The data, in volts for EEG.
    info : mne.Info or None
        Measurement info to reuse (e.g. the ``raw.info`` that
        :func:`to_recording` read from, so positions and filter settings
        carry over). It may hold more channels than ``rec``; those named in
        ``rec.ch_names`` are taken, in ``rec``'s order. None builds a fresh
        info with ``ch_types``.
    ch_types : str
        Channel type when ``info`` is None (use ``"misc"`` for separated
        sources, which are not scalp potentials).

    Returns
    -------
    raw : mne.io.RawArray
        Shape (n_channels, n_times), float64.
    """
    import mne

    if not isinstance(rec, Recording):
        raise TypeError(f"'rec' must be a sepkit.Recording, got {type(rec).__name__}.")
    if info is None:
        info = mne.create_info(list(rec.ch_names), rec.sample_rate, ch_types)
    else:
        if not isinstance(info, mne.Info):
            raise TypeError(f"'info' must be an mne.Info or None, got {type(info).__name__}.")
        missing = [name for name in rec.ch_names if name not in info["ch_names"]]
        if missing:
            raise ValueError(
                f"'info' has no channel(s) {missing[:20]} that 'rec' holds. Pass the info of "
                "the recording the data came from, or info=None for a fresh one."
            )
        if not np.isclose(info["sfreq"], rec.sample_rate):
            raise ValueError(
                f"'info' has sample rate {info['sfreq']} Hz but 'rec' has "
                f"{rec.sample_rate} Hz; resample first or pass info=None."
            )
        order = [info["ch_names"].index(name) for name in rec.ch_names]
        info = mne.pick_info(info, order, verbose="error")
    return mne.io.RawArray(rec.data.astype(np.float64), info, verbose="error")


# The file-name endings MNE expects of a Raw FIF file; the temp file written
# before the atomic rename ends like this so that MNE does not warn about it.
_FIF_ENDINGS = (".fif", ".fif.gz")


def _check_fif_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be a str or pathlib.Path, got {type(path).__name__}.")
    path = Path(path)
    if not path.name.lower().endswith(_FIF_ENDINGS):
        raise ValueError(
            f"'path' must name a FIF file ending in .fif or .fif.gz, got {path.name!r}. Use "
            "MNE's naming convention, e.g. 'sub-01_ivae_raw.fif'."
        )
    return path


def _check_fif_target(path, overwrite) -> Path:
    """``path`` as a Path to a FIF file that may be written, or the error that says why not.

    The checks of :func:`write_raw_fif`, for callers that refuse a target
    before computing what to write into it.
    """
    path = _check_fif_path(path)
    check_option("overwrite", overwrite, (True, False))
    if path.is_dir():
        raise IsADirectoryError(
            f"'path' ({path}) is a folder; a FIF file cannot replace it. Pass a file name, "
            f"e.g. {str(path / 'sub-01_raw.fif')!r}."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists. Pass overwrite=True to replace it.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"The folder of 'path' ({path.parent}) does not exist.")
    return path


# MNE splits a FIF file larger than this into parts (x_raw.fif, x_raw-1.fif, ...),
# the first naming the next; a module constant so that tests can split small files.
FIF_SPLIT_SIZE = "2GB"


def fif_part_name(path: Path):
    """``part_name(k)``: MNE's name of part k of the split FIF file ``path``.

    MNE's default ("neuromag") naming puts ``-k`` before the last suffix:
    ``x_raw-1.fif``, ``y-epo-1.fif``, ``x_raw.fif-1.gz``.
    """
    stem, suffix = os.path.splitext(Path(path).name)
    return lambda k: f"{stem}-{k}{suffix}"


@contextmanager
def staged_fif(inst, path: Path) -> Iterator[Path]:
    """Save a Raw or Epochs for ``path`` now; move it into place when the block ends.

    All its parts or none (:func:`sepkit._atomic.atomic_split_write`): beyond
    :data:`FIF_SPLIT_SIZE` MNE writes the file in parts, written under their
    final names in a hidden folder beside ``path``, then moved into place,
    ``path`` last. Several files staged in one ``ExitStack`` are all moved or,
    if any save fails, none.
    """
    odd = [name for name in inst.ch_names if not name.isascii()]
    if odd:  # MNE's FIF writer encodes names as ASCII and fails without naming either
        raise ValueError(
            f"Cannot write {path}: a FIF file stores channel names in ASCII, and {odd[:5]} "
            f"are not. Rename them first, e.g. inst.rename_channels({{{odd[0]!r}: "
            f"{odd[0].encode('ascii', 'replace').decode().replace('?', '_')!r}}})."
        )
    with atomic_split_write(path, fif_part_name(path)) as tmp:
        inst.save(tmp, overwrite=True, split_size=FIF_SPLIT_SIZE, verbose="error")
        yield path


def save_fif(inst, path: Path) -> Path:
    """Save a Raw or Epochs to ``path``, all its parts or none (:func:`staged_fif`)."""
    with staged_fif(inst, path):
        pass
    return path


def write_raw_fif(raw, path, *, overwrite: bool = False) -> Path:
    """Write an MNE Raw to a FIF file, atomically (temp file, then rename).

    Parameters
    ----------
    raw : mne.io.Raw
        E.g. the sources of ``IVAESeparator.get_sources`` or a cleaned
        recording. Beyond 2 GB MNE writes it in parts (``x_raw.fif``,
        ``x_raw-1.fif``, ...; ``mne.io.read_raw_fif`` of the first reads them
        all); every part is written under its final name, and the first
        moved into place last.
    path : str or Path
        Ends in ``.fif`` or ``.fif.gz`` (MNE convention: ``..._raw.fif``), in
        an existing folder.
    overwrite : bool
        Replace an existing file; otherwise a FileExistsError is raised and
        nothing is written.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> write_raw_fif(raw, "sub-01_clean_raw.fif")  # doctest: +SKIP
    PosixPath('sub-01_clean_raw.fif')
    """
    _check_raw(raw)
    return save_fif(raw, _check_fif_target(path, overwrite))


def write_epochs_fif(epochs, path, *, overwrite: bool = False) -> Path:
    """Write MNE Epochs to a FIF file, atomically (temp file, then rename).

    Parameters
    ----------
    epochs : mne.Epochs
        E.g. the sources of ``IVAESeparator.get_sources(epochs)`` or cleaned
        epochs. Beyond 2 GB in parts, as :func:`write_raw_fif` writes them.
    path : str or Path
        Ends in ``-epo.fif`` or ``_epo.fif`` (``.gz``), MNE's naming rule for
        Epochs, in an existing folder.
    overwrite : bool
        As in :func:`write_raw_fif`: without it an existing file is an error.

    Returns
    -------
    path : Path
    """
    if not any(c.__name__ == "BaseEpochs" for c in type(epochs).__mro__):
        raise TypeError(
            f"'epochs' must be mne.Epochs, got {type(epochs).__name__}. Write a continuous "
            "recording with write_raw_fif."
        )
    path = _check_fif_target(path, overwrite)
    name = path.name.lower()
    if not name.endswith(("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")):
        raise ValueError(
            f"'path' names an Epochs file, whose name ends in -epo.fif or _epo.fif (.gz) as "
            f"mne.read_epochs expects, got {path.name!r}. Pass e.g. 'sub-01_clean_epo.fif'."
        )
    return save_fif(epochs, path)


# --------------------------------------------------------------------------
# Channel checks
# --------------------------------------------------------------------------


def find_bad_channels(raw, *, picks="eeg", flat_threshold: float = _FLAT_STD_VOLTS) -> dict:
    """Names of flat and NaN/Inf channels.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording.
    picks : str, list of str or None
        Channels to check (bad ones already in ``raw.info["bads"]`` are skipped).
    flat_threshold : float
        A channel whose standard deviation is below this many volts is flat.
        The default, 1e-7 V, is under any real EEG noise floor.

    Returns
    -------
    bads : dict
        ``{"flat": [names], "nonfinite": [names]}``.
    """
    _check_raw(raw)
    flat_threshold = check_float("flat_threshold", flat_threshold, min_value=0.0)
    idx = _eeg_picks(raw, picks)
    finite, std = _channel_std(raw, idx)
    names = [raw.ch_names[i] for i in idx]
    return {
        "flat": [n for n, s in zip(names, std, strict=True) if s <= flat_threshold],
        "nonfinite": [n for n, ok in zip(names, finite, strict=True) if not ok],
    }


# Samples per block read by _channel_std and _get_data_float32: memory beyond
# their result is bounded by the block, not the recording.
_STD_CHUNK_SAMPLES = 1 << 16


def _get_data_float32(raw, idx) -> np.ndarray:
    """``raw.get_data(picks=idx)`` as float32, read in blocks (no float64 copy of it all)."""
    out = np.empty((len(idx), raw.n_times), dtype=np.float32)
    for start in range(0, raw.n_times, _STD_CHUNK_SAMPLES):
        stop = min(start + _STD_CHUNK_SAMPLES, raw.n_times)
        out[:, start:stop] = raw.get_data(picks=idx, start=start, stop=stop)
    return out


def _channel_std(raw, idx) -> tuple[np.ndarray, np.ndarray]:
    """(all finite, standard deviation; inf where not finite) per channel in ``idx``.

    Read in blocks of ``_STD_CHUNK_SAMPLES`` (:class:`sepkit._check.RowMoments`).
    """
    finite = np.ones(len(idx), dtype=bool)
    moments = RowMoments(len(idx))
    for start in range(0, raw.n_times, _STD_CHUNK_SAMPLES):
        block = raw.get_data(picks=idx, start=start, stop=start + _STD_CHUNK_SAMPLES)
        finite &= np.isfinite(block).all(axis=1)
        with np.errstate(invalid="ignore"):
            moments.add(block)
    with np.errstate(invalid="ignore"):
        return finite, np.where(finite, np.sqrt(moments.var), np.inf)


def check_eeg_channels(raw, *, picks="eeg", flat_threshold: float = _FLAT_STD_VOLTS) -> None:
    """Raise a ValueError naming flat or NaN/Inf channels; return None if all are usable.

    Parameters are as in :func:`find_bad_channels`. Channels already listed in
    ``raw.info["bads"]`` are not checked (they are excluded downstream).
    """
    bads = find_bad_channels(raw, picks=picks, flat_threshold=flat_threshold)
    problems = []
    if bads["nonfinite"]:
        problems.append(f"NaN or Inf values in {', '.join(bads['nonfinite'])}")
    if bads["flat"]:
        problems.append(f"flat signal (std <= {flat_threshold:g} V) in {', '.join(bads['flat'])}")
    if problems:
        raise ValueError(
            "Unusable EEG channels: "
            + "; ".join(problems)
            + ". Mark them bad with sepkit.io.mark_bad_channels(raw) (or add them to "
            "raw.info['bads']), then drop them or interpolate with raw.interpolate_bads()."
        )


def mark_bad_channels(raw, *, picks="eeg", flat_threshold: float = _FLAT_STD_VOLTS):
    """Return a copy of ``raw`` with flat and NaN/Inf channels added to ``info["bads"]``.

    Parameters are as in :func:`find_bad_channels`. The newly marked names are
    ``set(out.info["bads"]) - set(raw.info["bads"])``.
    """
    bads = find_bad_channels(raw, picks=picks, flat_threshold=flat_threshold)
    out = raw.copy()
    new = [n for n in bads["nonfinite"] + bads["flat"] if n not in out.info["bads"]]
    out.info["bads"] = list(out.info["bads"]) + new
    return out


# --------------------------------------------------------------------------
# Preprocessing helpers (thin wrappers that validate, copy, and keep MNE quiet)
# --------------------------------------------------------------------------


def _loaded_copy(raw):
    _check_raw(raw)
    out = raw.copy()
    if not out.preload:
        out.load_data(verbose="error")
    return out


def check_band(l_freq, h_freq, sample_rate: float, *, names=("l_freq", "h_freq")):
    """Validate filter edges in Hz (either may be None); return them as floats.

    Shared by every function that filters, so that the messages agree.

    Parameters
    ----------
    l_freq, h_freq : float or None
        High-pass and low-pass edges in Hz.
    sample_rate : float
        Of the recording to filter, in Hz: both edges must lie below its
        Nyquist frequency.
    names : (str, str)
        The caller's names of the two edges, for the messages (e.g.
        ``("highpass", "lowpass")`` for IVAESeparator).
    """
    nyquist = sample_rate / 2.0
    low_name, high_name = names
    edges = []
    for name, edge in ((low_name, l_freq), (high_name, h_freq)):
        if edge is not None:
            edge = check_float(name, edge, min_value=0.0, strict_min=True)
            if edge >= nyquist:
                raise ValueError(
                    f"{name}={edge:g} Hz must be below the Nyquist frequency ({nyquist:g} Hz) "
                    f"of the recording. Lower it or pass {name}=None."
                )
        edges.append(edge)
    l_freq, h_freq = edges
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        raise ValueError(
            f"{low_name}={l_freq:g} Hz must be below {high_name}={h_freq:g} Hz for a "
            f"band-pass; pass {low_name}=None or {high_name}=None for a one-sided filter."
        )
    return l_freq, h_freq


def filter_eeg(raw, l_freq: float | None, h_freq: float | None, *, picks="eeg"):
    """Band-, high- or low-pass filter the EEG channels (zero-phase FIR).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (not modified).
    l_freq : float or None
        High-pass edge in Hz; None for a low-pass only.
    h_freq : float or None
        Low-pass edge in Hz, below Nyquist; None for a high-pass only.
    picks : str, list of str or None
        Channels to filter, those marked bad included (as ``raw.filter``
        does), so that filtering every EEG channel updates the edges in
        ``info``.

    Returns
    -------
    raw : mne.io.Raw
        A filtered copy; ``info["highpass"]``/``info["lowpass"]`` updated
        when every data channel was filtered (MNE's rule).
    """
    _check_raw(raw)
    if l_freq is None and h_freq is None:
        raise ValueError("'l_freq' and 'h_freq' are both None; give at least one edge in Hz.")
    l_freq, h_freq = check_band(l_freq, h_freq, raw.info["sfreq"])
    out = _loaded_copy(raw)
    out.filter(l_freq, h_freq, picks=_eeg_picks(out, picks, exclude_bads=False), verbose="error")
    return out


def highpass(raw, cutoff: float = 1.0, *, picks="eeg"):
    """High-pass filter (default 1 Hz, the usual choice before ICA-like separation).

    See :func:`filter_eeg`.
    """
    return filter_eeg(raw, cutoff, None, picks=picks)


def notch(raw, freqs: float | Sequence[float] = 50.0, *, harmonics: bool = True, picks="eeg"):
    """Remove power-line noise with notch filters.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (not modified).
    freqs : float or sequence of float
        Line frequency in Hz (50 in Europe/Asia, 60 in the Americas) or the
        exact frequencies to notch.
    harmonics : bool
        Also notch the harmonics of each frequency below Nyquist.
    picks : str, list of str or None
        Channels to filter, those marked bad included (as ``raw.notch_filter``).

    Returns
    -------
    raw : mne.io.Raw
        A filtered copy.
    """
    _check_raw(raw)
    nyquist = raw.info["sfreq"] / 2.0
    base = np.atleast_1d(np.asarray(freqs, dtype=float))
    if base.size == 0 or not np.all(np.isfinite(base)) or np.any(base <= 0):
        raise ValueError(f"'freqs' must be positive frequencies in Hz, got {freqs!r}.")
    if np.any(base >= nyquist):
        raise ValueError(
            f"'freqs' must be below the Nyquist frequency ({nyquist:g} Hz), got {freqs!r}."
        )
    if harmonics:
        base = np.concatenate([np.arange(f, nyquist, f) for f in base])
    out = _loaded_copy(raw)
    picks = _eeg_picks(out, picks, exclude_bads=False)
    out.notch_filter(np.unique(base), picks=picks, verbose="error")
    return out


def set_reference(raw, ref: str | Sequence[str] = "average"):
    """Re-reference the EEG channels (applied to the data, not as a projector).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (not modified).
    ref : "average" or list of str
        ``"average"`` for the common average, or channel name(s) whose mean
        becomes the new reference (e.g. ``["M1", "M2"]`` for linked mastoids).

    Returns
    -------
    raw : mne.io.Raw
        A re-referenced copy.
    """
    _check_raw(raw)
    if isinstance(ref, str) and ref != "average":
        ref = [ref]
    if not isinstance(ref, str):
        ref = list(ref)
        missing = [name for name in ref if name not in raw.ch_names]
        if not ref or missing:
            raise ValueError(
                f"'ref' must be 'average' or existing channel names; {missing or ref} not "
                f"found among {raw.ch_names[:10]}{' ...' if len(raw.ch_names) > 10 else ''}."
            )
    out = _loaded_copy(raw)
    out.set_eeg_reference(ref, projection=False, verbose="error")
    return out


def resample(raw, sample_rate: float):
    """Resample to ``sample_rate`` Hz (anti-aliased; annotations keep their times).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (not modified).
    sample_rate : float
        The new rate in Hz.

    Returns
    -------
    raw : mne.io.Raw
        A resampled copy.
    """
    _check_raw(raw)
    sample_rate = check_float("sample_rate", sample_rate, min_value=0.0, strict_min=True)
    out = _loaded_copy(raw)
    out.resample(sample_rate, verbose="error")
    return out


def is_highpassed(raw, min_freq: float = 0.5) -> bool:
    """Whether ``raw`` was high-pass filtered at ``min_freq`` Hz or above.

    Reads ``raw.info["highpass"]``, which MNE's filters and most file headers
    set. Slow drifts dominate the variance of unfiltered EEG and break
    separation methods that assume stationary mixing (ICA, iVAE).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording.
    min_freq : float
        Required high-pass edge in Hz.

    Returns
    -------
    bool
    """
    _check_raw(raw)
    min_freq = check_float("min_freq", min_freq, min_value=0.0)
    return float(raw.info["highpass"]) >= min_freq


def warn_if_not_highpassed(
    raw, min_freq: float = 0.5, *, stacklevel: int = 2, fix: str = ""
) -> bool:
    """Emit a RuntimeWarning when ``raw`` is not high-passed at ``min_freq`` Hz.

    Estimators call this before fitting, with ``fix`` naming their own remedy
    (appended to the message). Returns :func:`is_highpassed`'s answer.
    """
    ok = is_highpassed(raw, min_freq)
    if not ok:
        warnings.warn(
            f"The EEG has a high-pass edge of {raw.info['highpass']:g} Hz, below "
            f"{min_freq:g} Hz. Slow drifts will dominate the separation; high-pass "
            f"filter first, e.g. sepkit.io.highpass(raw, 1.0){fix}.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
    return ok


# --------------------------------------------------------------------------
# Per-sample labels (the auxiliary variable u) from annotations and events
# --------------------------------------------------------------------------


def _is_bad_description(desc: str) -> bool:
    return desc.lower().startswith(_BAD_PREFIXES)


def _is_label_description(desc: str) -> bool:
    """Whether an annotation may name a condition: not bad, and not an ``EDGE`` join marker."""
    return not desc.lower().startswith((*_BAD_PREFIXES, "edge"))


def _annotation_spans(raw, keep) -> list[tuple[str, int, int]]:
    """(description, start, stop) in samples of ``raw``, stop exclusive, clipped."""
    sfreq = raw.info["sfreq"]
    spans = []
    for onset, duration, desc in zip(
        raw.annotations.onset,
        raw.annotations.duration,
        raw.annotations.description,
        strict=True,
    ):
        if not keep(desc):
            continue
        # Annotation onsets count from the first sample MNE ever recorded, so
        # a cropped raw (first_samp > 0) must subtract its first_time.
        start = int(np.round((onset - raw.first_time) * sfreq))
        stop = int(np.round((onset + duration - raw.first_time) * sfreq))
        start, stop = max(start, 0), min(stop, raw.n_times)
        spans.append((str(desc), start, stop))
    return spans


def bad_annotation_mask(raw) -> np.ndarray:
    """True where a bad annotation covers the sample.

    An annotation is bad when its description starts with ``"bad"`` in any
    case (``BAD_blink``, ``bad segment``, ``BAD boundary``), the rule MNE's
    ``reject_by_annotation`` uses (``EDGE boundary`` alone is not bad).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording.

    Returns
    -------
    mask : ndarray of bool, shape (n_times,)
    """
    mask = np.zeros(raw.n_times, dtype=bool)
    for start, stop in bad_annotation_spans(raw):
        mask[start:stop] = True
    return mask


def bad_annotation_spans(raw) -> list[tuple[int, int]]:
    """(start, stop) in samples of ``raw``, stop exclusive, of each bad annotation.

    The spans :func:`bad_annotation_mask` marks, without a mask as long as the
    recording (an unloaded Raw's annotations suffice): for windowing long files.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (its samples need not be loaded).

    Returns
    -------
    spans : list of (int, int)
        Clipped to the recording; empty spans (zero duration) left out.
    """
    _check_raw(raw)
    spans = _annotation_spans(raw, _is_bad_description)
    return [(start, stop) for _, start, stop in spans if stop > start]


def edge_samples(raw) -> tuple[int, ...]:
    """The samples where ``raw`` joins recordings: its ``EDGE`` annotations' onsets.

    ``mne.concatenate_raws`` marks each join with "EDGE boundary"; filters must
    not run across them (MNE's ``raw.filter`` skips them by default).

    Returns
    -------
    starts : tuple of int
        Sorted sample indices inside the recording (0 and its end left out).
    """
    _check_raw(raw)
    spans = _annotation_spans(raw, lambda desc: desc.lower().startswith("edge"))
    return tuple(sorted({start for _, start, _ in spans if 0 < start < raw.n_times}))


def _finish_labels(u, labelled, raw, reject_by_annotation, unlabelled, n_labels):
    check_option("unlabelled", unlabelled, ("drop", "own"))
    keep = np.ones(raw.n_times, dtype=bool)
    if unlabelled == "drop":
        u[~labelled] = -1
        keep &= labelled
    else:
        u[~labelled] = n_labels
    if reject_by_annotation:
        keep &= ~bad_annotation_mask(raw)
    return u, keep


def labels_from_annotations(
    raw,
    *,
    mapping: Mapping[str, int] | None = None,
    reject_by_annotation: bool = True,
    unlabelled: str = "drop",
) -> tuple[np.ndarray, np.ndarray]:
    """One integer label per sample from annotations (task blocks, sleep stages).

    Each non-bad annotation labels the samples it covers,
    ``[onset, onset + duration)``. Where annotations overlap, the one that
    starts later wins. Zero-duration annotations cover no sample; for point
    markers use ``labels_from_events(raw, *mne.events_from_annotations(raw))``.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording with annotations.
    mapping : dict of str to int or None
        Description -> label. Descriptions not in it are ignored. None maps the
        sorted distinct descriptions to 0, 1, ..., bad and ``EDGE`` ones left out.
    reject_by_annotation : bool
        Set ``keep_mask`` False under bad annotations (:func:`bad_annotation_mask`).
    unlabelled : {"drop", "own"}
        Samples under no label annotation: ``"drop"`` gives them label -1 and
        ``keep_mask`` False; ``"own"`` gives them one extra label (one more
        than the largest label) and keeps them.

    Returns
    -------
    u : ndarray of int64, shape (n_times,)
        Label of each sample.
    keep_mask : ndarray of bool, shape (n_times,)
        Samples to use.
    """
    _check_raw(raw)
    if mapping is None:
        descs = sorted({str(d) for d in raw.annotations.description if _is_label_description(d)})
        mapping = {d: i for i, d in enumerate(descs)}
    else:
        mapping = _check_mapping(mapping)
    u = np.zeros(raw.n_times, dtype=np.int64)
    labelled = np.zeros(raw.n_times, dtype=bool)
    spans = _annotation_spans(raw, lambda d: d in mapping)
    # Stable sort on start so "the later start wins" holds on overlaps.
    for desc, start, stop in sorted(spans, key=lambda s: s[1]):
        u[start:stop] = mapping[desc]
        labelled[start:stop] = True
    n_labels = max(mapping.values(), default=-1) + 1
    return _finish_labels(u, labelled, raw, reject_by_annotation, unlabelled, n_labels)


def _check_mapping(mapping) -> dict:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"'mapping' must be a dict or None, got {type(mapping).__name__}.")
    bad = {k: v for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int)}
    negative = {k: v for k, v in mapping.items() if k not in bad and v < 0}
    if bad or negative:
        raise ValueError(
            f"'mapping' values must be non-negative integer labels, got {bad or negative}."
        )
    return dict(mapping)


def labels_from_events(
    raw,
    events,
    event_id: Mapping[str, int] | None = None,
    *,
    duration: float | None = None,
    reject_by_annotation: bool = True,
    unlabelled: str = "drop",
) -> tuple[np.ndarray, np.ndarray]:
    """One integer label per sample from an MNE events array.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording the events belong to.
    events : ndarray of int, shape (n_events, 3)
        MNE events (sample including ``raw.first_samp``, previous value, code),
        e.g. from ``mne.find_events`` or ``mne.events_from_annotations``.
    event_id : dict of str to int or None
        Event name -> code; only these codes label samples. None uses every
        code in ``events``. Labels are 0, 1, ... in increasing code order.
    duration : float or None
        Seconds each event labels. None holds each label until the next event
        with a code in ``event_id`` (events mark state changes, e.g. block
        starts), the last one until the end.
    reject_by_annotation, unlabelled
        As in :func:`labels_from_annotations`.

    Returns
    -------
    u : ndarray of int64, shape (n_times,)
    keep_mask : ndarray of bool, shape (n_times,)
    """
    _check_raw(raw)
    events = np.asarray(events)
    if events.ndim != 2 or events.shape[1] != 3 or not np.issubdtype(events.dtype, np.integer):
        raise ValueError(
            "'events' must be an integer array of shape (n_events, 3) as from "
            f"mne.find_events, got shape {events.shape} and dtype {events.dtype}."
        )
    if event_id is None:
        codes = np.unique(events[:, 2])
    else:
        if not isinstance(event_id, Mapping):
            raise TypeError(f"'event_id' must be a dict or None, got {type(event_id).__name__}.")
        codes = np.unique(np.asarray(list(event_id.values()), dtype=np.int64))
    if duration is not None:
        duration = check_float("duration", duration, min_value=0.0, strict_min=True)
    label_of = {int(c): i for i, c in enumerate(codes)}
    # Events with other codes neither label nor end a held label.
    events = events[np.isin(events[:, 2], codes)]
    events = events[np.argsort(events[:, 0], kind="stable")]
    starts = events[:, 0] - raw.first_samp
    u = np.zeros(raw.n_times, dtype=np.int64)
    labelled = np.zeros(raw.n_times, dtype=bool)
    for k, (start, code) in enumerate(zip(starts, events[:, 2], strict=True)):
        if duration is None:
            stop = starts[k + 1] if k + 1 < len(starts) else raw.n_times
        else:
            stop = start + int(np.round(duration * raw.info["sfreq"]))
        start, stop = max(int(start), 0), min(int(stop), raw.n_times)
        u[start:stop] = label_of[int(code)]
        labelled[start:stop] = True
    return _finish_labels(u, labelled, raw, reject_by_annotation, unlabelled, len(codes))
