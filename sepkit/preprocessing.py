"""Small stateful transforms with a forward and an inverse, torchaudio-style.

Every time-domain family fits its sources on ``Standardizer.forward(x)``
(channel means removed, PCA whitening, and, for saturating sensors, a learned
per-channel unwarping first) and maps them back with ``Standardizer.inverse``.
``FitFilter`` is the ``highpass``/``lowpass`` filter of fit and
``bridge_rejected`` keeps rejected (BAD) samples from spreading through it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ._lazy import torch
from .functional import sensor_unwarp, sensor_warp
from .io.eeg import check_band


def bridge_rejected(a: np.ndarray, good) -> np.ndarray:
    """``a`` with the samples outside ``good`` replaced by straight lines.

    Before the fit filter: rejected (BAD) samples stay out of the statistics,
    but a filter would spread an artefact under them over its impulse
    response into the good samples, and the odd powers of the post-nonlinear
    model blow it up (a 5 s artefact of 50x the signal under a BAD
    annotation took a clipped 4-source fit from MCC 0.994 to 0.953; bridged:
    0.9935, tests/test_linear_ivae.py). A line between the neighbouring good
    samples of each channel has no step, so it adds no filter transient.

    Parameters
    ----------
    a : ndarray, shape (n_rows, n_times)
    good : ndarray of bool, shape (n_times,), or None (nothing rejected)

    Returns
    -------
    ndarray, shape (n_rows, n_times)
        A new array when samples were replaced, else ``a`` itself.
    """
    if good is None or good.all():
        return a
    t = np.arange(a.shape[1])
    out = np.array(a, dtype=np.float64, copy=True)
    for row in out:
        row[~good] = np.interp(t[~good], t[good], row[good])
    return out


def band_text(highpass, lowpass) -> str:
    """ "highpass=1 Hz, lowpass=40 Hz" for the filter options that are set ("" if none)."""
    return ", ".join(
        f"{name}={value:g} Hz"
        for name, value in (("highpass", highpass), ("lowpass", lowpass))
        if value is not None
    )


@dataclass(frozen=True)
class FitFilter:
    """The ``highpass``/``lowpass`` filter of fit: ``filt(a)`` on (n_rows, n_times).

    Build it with :meth:`create`, which checks the band against the rate.
    """

    highpass: float | None
    lowpass: float | None
    sample_rate: float
    # Samples where the data join separate recordings (a Raw's EDGE annotations):
    # each piece is filtered on its own, as MNE's raw.filter skips them (audit: a
    # streamed fit's six blocks, joined, were filtered across their jumps).
    edges: tuple = ()

    @classmethod
    def create(cls, highpass, lowpass, sample_rate, edges=()) -> FitFilter | None:
        """The filter, or None when neither edge is set."""
        if highpass is None and lowpass is None:
            return None
        if sample_rate is None:
            raise ValueError(
                f"{band_text(highpass, lowpass)} needs a sample rate, but X is a plain array. "
                "Pass a Recording or an MNE Raw, or highpass=None and lowpass=None."
            )
        check_band(highpass, lowpass, sample_rate, names=("highpass", "lowpass"))
        return cls(highpass, lowpass, float(sample_rate), tuple(int(e) for e in edges))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        import mne

        a = np.asarray(a, dtype=np.float64)
        bounds = [0, *(e for e in self.edges if 0 < e < a.shape[-1]), a.shape[-1]]
        out = np.empty_like(a)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            out[..., start:stop] = mne.filter.filter_data(
                a[..., start:stop], self.sample_rate, self.highpass, self.lowpass,
                verbose="error",
            )  # fmt: skip
        return out


@dataclass
class SensorUnwarp:
    """Per-channel unwarping y = h((x - mean) / scale) of saturating sensors.

    ``coefs`` (n_channels, degree) are h's odd-power coefficients
    (:func:`sepkit.functional.sensor_unwarp`); the inverse is Newton's root
    (:func:`sepkit.functional.sensor_warp`).
    """

    mean: np.ndarray
    scale: np.ndarray
    coefs: np.ndarray

    def forward(self, data: np.ndarray) -> np.ndarray:
        x = (data - self.mean[:, None]) / self.scale[:, None]
        y, _ = sensor_unwarp(torch.from_numpy(x), torch.from_numpy(self.coefs))
        return y.numpy()

    def inverse(self, y: np.ndarray) -> np.ndarray:
        x = sensor_warp(torch.from_numpy(y), torch.from_numpy(self.coefs)).numpy()
        return x * self.scale[:, None] + self.mean[:, None]

    def slope_at(self, y: np.ndarray) -> np.ndarray:
        """dy/dx, in sensor units, where the unwarped signal is ``y`` (n_channels, n_points)."""
        coefs = torch.from_numpy(self.coefs)
        _, dh = sensor_unwarp(sensor_warp(torch.from_numpy(y), coefs), coefs)
        return dh.numpy() / self.scale[:, None]


# Samples per block of the passes below: their float64 temporaries stay at one
# block (128 channels: 16 MiB), not a float64 copy of the recording.
CHUNK_SAMPLES = 1 << 14


def row_covariance(a: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Covariance of the rows of ``a`` (n_rows, n_times) about ``mean``, float64, by blocks."""
    cov = np.zeros((a.shape[0], a.shape[0]))
    for start in range(0, a.shape[1], CHUNK_SAMPLES):
        centred = a[:, start : start + CHUNK_SAMPLES].astype(np.float64) - mean[:, None]
        cov += centred @ centred.T
    return cov / a.shape[1]


# MNE's ICA(n_components=None) keeps this share of the variance: the PCA
# components beyond it are numerical zeros (a rank-deficient recording).
ALL_VARIANCE = 0.999999


def count_components(cov: np.ndarray, n_sources) -> int:
    """The number of sources ``n_sources`` stands for, from the data's covariance.

    An int is itself. As MNE's ``ICA(n_components=...)``: a float in (0, 1)
    is the smallest number of principal components whose cumulative share of
    the variance reaches it (MNE's ``_exp_var_ncomp``: the components whose
    cumulative share is at most the float, plus one), and None the count at
    a share of ``ALL_VARIANCE``, which leaves out the null dimensions of a
    rank-deficient recording. Never above the rank :func:`whitening` keeps.

    Parameters
    ----------
    cov : ndarray, shape (n_channels, n_channels)
        Covariance of the data as fitted.
    n_sources : int, float or None

    Returns
    -------
    n : int
    """
    if isinstance(n_sources, numbers.Integral):
        return int(n_sources)
    evals = np.linalg.eigvalsh(cov)[::-1]
    evals = evals[evals > evals[0] * RANK_TOL]
    share = np.cumsum(evals) / evals.sum()
    wanted = ALL_VARIANCE if n_sources is None else float(n_sources)
    n = int(min((share <= wanted).sum() + 1, len(share)))
    if n_sources is not None and n == 1:
        raise ValueError(
            f"n_sources={n_sources} gives 1 source: the strongest principal component alone "
            f"holds {100 * share[0]:.1f} % of the variance. Pass a larger share (e.g. "
            f"{min(0.999, share[0] + (1 - share[0]) / 2):.3g}) or the number of sources."
        )
    return n


# Dimensions whose variance is this far below the largest are numerical zeros
# (e.g. the one an average reference removes).
RANK_TOL = 1e-10
# Channels whose standard deviations differ by more than this factor (variances by
# its square, beyond RANK_TOL's reach) are whitened from their correlations.
UNIT_SPREAD = 1e4


def whitening(cov, n_sources: int, whiten: bool, scale):
    """(whitening, dewhitening, rank) from the channels' covariance ``cov`` (n_channels, n_channels).

    ``whiten=False`` only scales each channel by ``scale`` (its std); ``cov``
    may then be None.
    """
    if not whiten:
        return (
            np.diag(1.0 / scale).astype(np.float64),
            np.diag(scale).astype(np.float64),
            len(scale),
        )
    std = np.sqrt(np.diag(cov))
    if std.max() > UNIT_SPREAD * std.min() > 0:
        # Channels in units far apart (tabular features: an income beside a ratio):
        # standardised first, so that neither the rank nor the components depend on
        # the units (audit: a full-rank X read as rank 2, its small column a zero).
        w, dw, rank = whitening(cov / np.outer(std, std), n_sources, True, None)
        return w / std[None, :], std[:, None] * dw, rank
    evals, evecs = np.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    keep = evals > evals[0] * RANK_TOL
    rank = int(keep.sum())
    if n_sources > rank:
        raise ValueError(
            f"n_sources={n_sources} is above the rank of the data ({rank} of "
            f"{cov.shape[0]} channels; re-referencing, e.g. to the average, removes one "
            f"dimension per reference). Pass n_sources <= {rank}."
        )
    evals, evecs = evals[:rank], evecs[:, :rank]
    # Whiten the n_sources strongest components only; weaker ones are scaled
    # like the n_sources-th, so they stay below unit variance. Whitening all
    # of them would lift pure sensor noise to the level of the sources and
    # hide which directions carry signal (MCC 0.25 vs 0.94 for FastICA on
    # 19-channel, 8-source EEG in our runs).
    scales = np.sqrt(np.maximum(evals, evals[n_sources - 1]))
    return (evecs / scales).T, evecs * scales, rank


@dataclass
class Standardizer:
    """x -> whitening @ (unwarp(x) - mean), float32, and back.

    Attributes
    ----------
    mean : ndarray, shape (n_channels,)
    whitening : ndarray, shape (rank, n_channels)
    dewhitening : ndarray, shape (n_channels, rank)
    unwarp : SensorUnwarp or None
        Applied first (mixing="post-nonlinear").
    """

    mean: np.ndarray
    whitening: np.ndarray
    dewhitening: np.ndarray
    unwarp: SensorUnwarp | None = None

    @property
    def rank(self) -> int:
        return int(self.whitening.shape[0])

    @classmethod
    def fit(cls, stats: np.ndarray, n_sources: int, whiten: bool = True, scale=None):
        """From the fitted samples ``stats`` (n_channels, n_good); ``scale``: their std."""
        mean = stats.mean(axis=1, dtype=np.float64)
        # One pass for the covariance, which gives the scale too.
        cov = row_covariance(stats, mean) if whiten or scale is None else None
        scale = np.sqrt(np.diag(cov)) if scale is None else scale
        w, dw, _ = whitening(cov, n_sources, whiten, scale)
        return cls(mean, w, dw)

    def forward(self, data: np.ndarray) -> np.ndarray:
        """whitening @ (unwarp(data) - mean), shape (rank, n_times), float32, by blocks."""
        out = np.empty((self.rank, data.shape[1]), dtype=np.float32)
        for start in range(0, data.shape[1], CHUNK_SAMPLES):
            block = data[:, start : start + CHUNK_SAMPLES]
            if self.unwarp is not None:
                block = self.unwarp.forward(block)
            out[:, start : start + block.shape[1]] = self.whitening @ (block - self.mean[:, None])
        return out

    def inverse(self, out: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`forward`, shape (n_channels, n_times), float64."""
        out = self.dewhitening @ out + self.mean[:, None]
        if self.unwarp is not None:
            out = self.unwarp.inverse(out)
        return out
