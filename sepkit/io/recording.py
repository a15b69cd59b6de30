"""The one container every reader returns and every algorithm takes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_KINDS = ("audio", "eeg", "other")


@dataclass(frozen=True)
class Recording:
    """A multichannel recording.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Samples, stored as float32 (copied only when the dtype or layout
        differs).
    sample_rate : float
        Samples per second, in Hz.
    ch_names : tuple of str, length n_channels
        Channel names. Default ``("ch0", "ch1", ...)``.
    kind : {"audio", "eeg", "other"}
        What the data is; loaders and writers use it to choose defaults.

    Examples
    --------
    >>> import numpy as np
    >>> rec = Recording(np.zeros((2, 16000)), sample_rate=16000.0, kind="audio")
    >>> rec.n_channels, rec.duration
    (2, 1.0)
    """

    data: np.ndarray
    sample_rate: float
    ch_names: tuple[str, ...] = field(default=())
    kind: str = "other"

    def __post_init__(self):
        data = np.asarray(self.data)
        if data.ndim != 2:
            raise ValueError(
                f"Recording data must have shape (n_channels, n_times), got {data.shape} "
                "instead. Use data[None] for one channel."
            )
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise TypeError(f"Recording data must be real numbers, got dtype {data.dtype}.")
        data = np.ascontiguousarray(data, dtype=np.float32)
        try:
            sample_rate = float(self.sample_rate)
        except (TypeError, ValueError):
            raise TypeError(
                f"Recording sample_rate must be a number in Hz, got {self.sample_rate!r}."
            ) from None
        if not np.isfinite(sample_rate) or sample_rate <= 0:
            raise ValueError(f"Recording sample_rate must be positive, got {sample_rate} Hz.")
        ch_names = tuple(self.ch_names) or tuple(f"ch{i}" for i in range(data.shape[0]))
        if len(ch_names) != data.shape[0]:
            raise ValueError(
                f"Recording has {data.shape[0]} channels but {len(ch_names)} ch_names; "
                "pass one name per row of data."
            )
        repeated = sorted(n for n, k in Counter(map(str, ch_names)).items() if k > 1)
        if repeated:
            raise ValueError(
                f"Recording ch_names must be distinct (MNE's channels are picked by name), "
                f"but {repeated[:5]} repeat. Pass one distinct name per row of data, e.g. "
                "'Fz', 'Fz-2'."
            )
        if self.kind not in _KINDS:
            raise ValueError(
                f"Invalid value for the 'kind' parameter. Allowed values are {_KINDS}, "
                f"but got {self.kind!r} instead."
            )
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "sample_rate", sample_rate)
        object.__setattr__(self, "ch_names", tuple(str(c) for c in ch_names))

    @property
    def n_channels(self) -> int:
        return self.data.shape[0]

    @property
    def n_times(self) -> int:
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_times / self.sample_rate

    def replace(self, **changes) -> Recording:
        """Return a copy with some fields replaced (the container is frozen)."""
        fields = dict(
            data=self.data, sample_rate=self.sample_rate, ch_names=self.ch_names, kind=self.kind
        )
        fields.update(changes)
        if "data" in changes and "ch_names" not in changes:
            if np.asarray(changes["data"]).shape[0] != self.n_channels:
                fields["ch_names"] = ()
        return Recording(**fields)

    def __repr__(self) -> str:
        return (
            f"<Recording | {self.kind}, {self.n_channels} ch, {self.n_times} samples "
            f"({self.duration:.3g} s) at {self.sample_rate:g} Hz>"
        )


def _default_names(names) -> bool:
    """Whether ``names`` are the ones a Recording made up (ch0, ch1, ...): no real names."""
    return tuple(names) == tuple(f"ch{i}" for i in range(len(names)))


def recording_channels(rec: Recording, picks=None, fitted_names=None) -> Recording:
    """``rec`` with the channels ``picks`` names, or (at inference) those of fit, by name.

    Parameters
    ----------
    rec : Recording
    picks : None, str or list of str
        Channel names to take, in this order (a Recording has no channel
        types, so only names).
    fitted_names : tuple of str or None
        The channels a separator was fitted on. An EEG Recording whose
        (real) names differ from them is matched by name, as a Raw is: the
        fitted channels are taken in the fitted order, and any it lacks is an
        error. Audio channels, and names made up (ch0, ch1, ...), go by
        position.

    Returns
    -------
    rec : Recording
    """
    names = list(rec.ch_names)
    if picks is not None:
        wanted = [picks] if isinstance(picks, str) else list(picks)
        check_names_present(rec, wanted, "'picks' names", "the Recording")
        rec = rec.replace(data=rec.data[[names.index(n) for n in wanted]], ch_names=wanted)
        names = wanted
    by_name = (
        fitted_names is not None
        and rec.kind == "eeg"
        and tuple(names) != tuple(fitted_names)
        and not _default_names(names)
        and not _default_names(fitted_names)
    )
    if not by_name:
        return rec
    check_names_present(
        rec,
        fitted_names,
        "The separator was fitted on",
        "the Recording",
        "Pass a Recording with the fitted channels (by name), or refit.",
    )
    order = [names.index(n) for n in fitted_names]
    return rec.replace(data=rec.data[order], ch_names=tuple(fitted_names))


def check_names_present(container, names, what: str, owner: str, fix: str = "") -> None:
    """Raise a ValueError naming the channels of ``names`` that ``container`` lacks.

    ``container``: anything with ``ch_names`` (a Recording, an MNE Raw). The
    message reads "``what`` channel(s) [...] that ``owner`` lacks; its channels
    are [...]." and then ``fix``.
    """
    have = list(container.ch_names)
    missing = [name for name in names if name not in have]
    if missing:
        more = " ..." if len(have) > 12 else ""
        raise ValueError(
            f"{what} channel(s) {missing} that {owner} lacks; its channels are "
            f"{have[:12]}{more}.{(' ' + fix) if fix else ''}"
        )


def recording_stem(path) -> str:
    """The stem outputs are named after: ``rec`` for rec.wav, rec_raw.fif, rec-epo.fif and rec.fif.gz."""
    name = Path(path).name
    for suffix in (".fif.gz", ".fif"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            return name[:-4] if name.endswith(("_raw", "_epo", "-epo")) else name
    return Path(name).stem
