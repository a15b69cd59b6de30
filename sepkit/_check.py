"""Shared validators, so that every error names the parameter, what was
allowed, what came, and the fix."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

# The option values the estimator checks and the network family's modules take.
ACTIVATIONS = ("lrelu", "xtanh", "elu")
PRIORS = ("gauss", "laplace", "standard")
POSTERIORS = ("diag", "full")
PRECISIONS = ("fp32", "bf16")

# The largest seed torch's generators take (a signed 64-bit integer); the estimator's
# random_state and the command line's --seed share it.
MAX_SEED = 2**63 - 1


def check_option(name: str, value, allowed: Iterable):
    """Return the entry of ``allowed`` that ``value`` is, else raise a ValueError.

    True and False match only booleans (numpy's too): ``1 == True`` in Python, but
    ``show=1`` or ``shuffle=0`` is a slip, not a choice.
    """
    allowed = tuple(allowed)
    for option in allowed:
        if _same_option(value, option):
            return option
    names = ", ".join(repr(a) for a in allowed[:-1])
    names = f"{names} and {allowed[-1]!r}" if len(allowed) > 1 else repr(allowed[0])
    raise ValueError(
        f"Invalid value for the '{name}' parameter. Allowed values are {names}, "
        f"but got {value!r} instead."
    )


def _same_option(value, option) -> bool:
    flags = (bool, np.bool_)
    if isinstance(option, bool) or isinstance(value, flags):
        return isinstance(option, bool) and isinstance(value, flags) and bool(value) is option
    try:
        return bool(value == option)
    except (TypeError, ValueError):  # an array, or a type that does not compare
        return False


def check_int(name: str, value, *, min_value: int | None = None, max_value: int | None = None):
    """Return ``value`` as int, checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"'{name}' must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"'{name}' must be >= {min_value}, got {value}.")
    if max_value is not None and value > max_value:
        raise ValueError(f"'{name}' must be <= {max_value}, got {value}.")
    return value


def check_float(
    name: str,
    value,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    strict_min: bool = False,
):
    """Return ``value`` as float, checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"'{name}' must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"'{name}' must be finite, got {value}.")
    if min_value is not None and (value <= min_value if strict_min else value < min_value):
        op = ">" if strict_min else ">="
        raise ValueError(f"'{name}' must be {op} {min_value}, got {value}.")
    if max_value is not None and value > max_value:
        raise ValueError(f"'{name}' must be <= {max_value}, got {value}.")
    return value


def check_random_state(seed) -> np.random.Generator:
    """Turn None, an int or a Generator into a numpy Generator."""
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(
        f"'random_state' must be None, an int or a numpy Generator, got {type(seed).__name__}."
    )


def check_data_2d(X, name: str = "X") -> np.ndarray:
    """Validate a (n_channels, n_times) array of finite real numbers; return float32."""
    X = np.asarray(X)
    if X.ndim != 2:
        hint = f" Use {name}[None] for one channel." if X.ndim == 1 else ""
        raise ValueError(
            f"{name} must have shape (n_channels, n_times), got {X.shape} instead.{hint}"
        )
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    if X.shape[0] == 0:
        raise ValueError(
            f"{name} has no channels (shape {X.shape}); pass shape (n_channels, n_times) with "
            "at least one channel."
        )
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        n_bad = int((~finite).sum())
        raise ValueError(
            f"{name} contains {n_bad} NaN or Inf values (in channel(s) "
            f"{bad_rows[:10].tolist()}). Remove or interpolate them first."
        )
    return np.ascontiguousarray(X, dtype=np.float32)


def check_precision(precision, device) -> str:
    """Validate ``precision`` for ``device``: bf16 autocast needs a CUDA device.

    ``device`` is a torch.device or a setting :func:`check_device` resolves;
    torch is imported only for ``precision="bf16"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            "Invalid value for the 'precision' parameter. Allowed values are 'fp32' and "
            f"'bf16', but got {precision!r} instead."
        )
    if precision == "bf16":
        import torch

        device = check_device(device)
        # On CPU, bf16 autocast is slower than fp32 for these small layers and
        # gives nothing back, so asking for it is treated as a mistake.
        if device.type != "cuda":
            raise ValueError(
                f"precision='bf16' needs a CUDA device, but training runs on {device}. "
                "Pass precision='fp32' on CPU."
            )
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bf16' needs a GPU with bfloat16 support (Ampere or newer), and "
                f"{torch.cuda.get_device_name(device)} has none. Pass precision='fp32'."
            )
    return precision


def check_device_setting(device):
    """``device`` checked as a setting, without importing torch (:func:`check_device` resolves it).

    Returns ``device`` unchanged: 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device.
    """
    if type(device).__module__ == "torch" and type(device).__name__ == "device":
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"'device' must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}."
        )
    name, _, index = device.partition(":")
    if device in ("auto", "cpu", "cuda") or (name == "cuda" and index.isdigit()):
        return device
    raise ValueError(
        f"Invalid value for the 'device' parameter. Allowed values are 'auto', 'cpu', 'cuda' and "
        f"'cuda:N', but got {device!r} instead."
    )


def check_device(device):
    """Resolve 'auto' | 'cpu' | 'cuda' | 'cuda:N' | torch.device to a torch.device."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not (isinstance(device, str) and device.startswith("cuda")):
        check_device_setting(device)  # the type, and 'auto' or 'cpu' (or its error)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} was requested but CUDA is not available on this machine. "
                "Pass device='cpu' or device='auto'."
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist."
            )
        return dev
    return torch.device("cpu")


# Largest magnitude fit accepts: float32 sums of squares of larger values overflow
# (3.4e38) over long recordings, and every family's statistics start there.
MAX_ABS_VALUE = 1e15
# Smallest peak fit accepts: squares of smaller values fall below float32's normal
# range (1.2e-38) within a few orders of magnitude. MEG in tesla (1e-13 to 1e-11)
# and EEG in volts are far above it.
MIN_ABS_PEAK = 1e-15


def check_fit_data(data: np.ndarray, ch_names=None, good=None) -> None:
    """The input checks every model family shares, before any family is chosen.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Finite (``check_data_2d`` ran).
    ch_names : sequence of str or None
        Named in the messages.
    good : ndarray of bool, shape (n_times,), or None
        Samples not under a BAD annotation.
    """
    n_channels, n_times = data.shape
    if n_channels > n_times:
        raise ValueError(
            f"X has shape {data.shape}: more channels ({n_channels}) than time samples "
            f"({n_times}). X must be (n_channels, n_times); if yours is (n_times, n_channels), "
            "pass X.T (in a scikit-learn pipeline, use sepkit.dropin_sklearn.IVAETransformer, "
            "which takes (n_samples, n_features))."
        )
    if good is not None and not good.any():
        raise ValueError(
            "Every sample of the recording lies under a BAD annotation, so nothing is left "
            "to fit. Shorten or remove those annotations (raw.annotations), or pass "
            "reject_by_annotation=False."
        )
    peak, scale = _row_peak_and_std(data, None if good is None or good.all() else good)
    if peak > MAX_ABS_VALUE:
        raise ValueError(
            f"X holds values up to {peak:.3g}, beyond what the fit computes safely in float32 "
            f"(|x| <= {MAX_ABS_VALUE:g}). Rescale it first, e.g. X / np.abs(X).max(), or "
            "convert it to its physical unit."
        )
    if 0 < peak < MIN_ABS_PEAK:
        raise ValueError(
            f"X holds values of at most {peak:.3g}, below what the fit computes safely in "
            f"float32 (a peak of at least {MIN_ABS_PEAK:g}). Rescale it first, e.g. "
            "X / np.abs(X).max(), or convert it to its physical unit."
        )
    if _flat_rows(scale, peak).size == n_channels:
        raise ValueError(
            "X is silent: every channel is constant (e.g. all zeros), so there is nothing "
            "to separate. Check that the right file or channels were read."
        )
    check_flat_channels(data, ch_names, scale, peak)


class RowMoments:
    """Per-row mean and variance of a stream of sample blocks, in float64.

    The blocks' means and sums of squared deviations pool exactly (Chan,
    Golub & LeVeque 1979), so a recording is summarised block by block,
    without a float64 copy of it.
    """

    def __init__(self, n_rows: int):
        self.count = 0
        self.mean = np.zeros(n_rows)
        self.m2 = np.zeros(n_rows)

    def add(self, block: np.ndarray) -> None:
        """Add the samples of ``block`` (n_rows, k)."""
        x = np.asarray(block, dtype=np.float64)
        k = x.shape[1]
        if k == 0:
            return
        block_mean = x.mean(axis=1)
        centred = x - block_mean[:, None]
        block_m2 = np.einsum("ij,ij->i", centred, centred)
        delta = block_mean - self.mean
        total = self.count + k
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + block_m2 + delta**2 * self.count * k / total
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Variance per row (divided by the count), shape (n_rows,)."""
        return self.m2 / max(self.count, 1)


def _row_peak_and_std(data: np.ndarray, good) -> tuple[float, np.ndarray]:
    """Largest magnitude and per-row standard deviation (float64) of the ``good`` samples."""
    idx = np.arange(data.shape[1]) if good is None else np.flatnonzero(good)
    whole = idx.size == data.shape[1]
    peak, moments = 0.0, RowMoments(data.shape[0])
    for start in range(0, idx.size, RANK_CHUNK_SAMPLES):
        block = idx[start : start + RANK_CHUNK_SAMPLES]
        x = data[:, block[0] : block[-1] + 1] if whole else data[:, block]
        peak = max(peak, float(np.abs(x).max()))
        moments.add(x)
    return peak, np.sqrt(moments.var)


# Samples of one float64 block of the rank's covariance (64 channels: 33 MB).
RANK_CHUNK_SAMPLES = 65536
# At most this many samples (evenly strided) enter the rank: a linear relation
# between channels (a reference, an interpolation) holds at every sample, so a
# subsample keeps it, and the cost stops growing with the recording's length.
RANK_MAX_SAMPLES = 2**18


def data_rank(data: np.ndarray, good=None) -> int:
    """The numerical rank of ``data`` (n_channels, n_times), as ``mne.compute_rank``.

    Each channel is centred and scaled to unit variance (MNE normalises the
    rows too, so that independent channels have singular values near one);
    a singular value counts when above ``n_channels * eps * s_max`` with
    ``eps`` float32's machine epsilon: MNE's ``tol="float32"`` (scipy's
    ``linalg.orth`` threshold, for the float32 data that sepkit fits), with
    each channel first divided by the ratio of its RMS to its standard
    deviation (1 without offsets), since float32 rounds a value relative to
    its magnitude. An average reference leaves its null dimension at float32
    rounding (3e-8 of the largest singular value for 30 channels without
    offsets), below the 3.6e-6 that 30 channels allow; a real dimension of
    EEG lies far above it. The singular values
    are the square roots of the eigenvalues of the channels' correlation
    matrix, accumulated in float64 over blocks of samples.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
    good : ndarray of bool, shape (n_times,), or None
        Samples to use (those not under a BAD annotation); None: all.

    Returns
    -------
    rank : int
    """
    n_channels, n_times = data.shape
    idx = np.arange(n_times) if good is None else np.flatnonzero(good)
    if idx.size > RANK_MAX_SAMPLES:
        idx = idx[:: -(-idx.size // RANK_MAX_SAMPLES)]
    whole = idx.size == n_times
    mean = (data if whole else data[:, idx]).mean(axis=1, dtype=np.float64)
    cov = np.zeros((n_channels, n_channels))
    for start in range(0, idx.size, RANK_CHUNK_SAMPLES):
        block = idx[start : start + RANK_CHUNK_SAMPLES]
        x = data[:, block[0] : block[-1] + 1] if whole else data[:, block]
        # Centred before the products: EEG offsets can be 1000 times its signal.
        x = x.astype(np.float64) - mean[:, None]
        cov += x @ x.T
    scale = np.sqrt(np.diag(cov))
    corr = cov / np.outer(scale, scale).clip(min=np.finfo(np.float64).tiny)
    s_max = np.sqrt(max(np.linalg.eigvalsh(corr)[-1], 0.0))
    # float32 rounds a value to a share of its magnitude, offset included: a
    # channel whose offset is 1000 times its standard deviation carries 1000
    # times more rounding relative to its signal, which no reference cancels.
    # Each channel is divided by that factor, so that every channel's rounding
    # is the same eps: one channel with an offset of 1e5 times its signal (a
    # BioSemi electrode off the head) then costs at most its own dimension,
    # not, through one tolerance for all, every dimension of the recording.
    std = scale / np.sqrt(idx.size)
    offset = np.sqrt(1.0 + (mean / std.clip(min=np.finfo(np.float64).tiny)) ** 2)
    s = np.sqrt(np.linalg.eigvalsh(corr / np.outer(offset, offset)).clip(min=0.0))
    tol = n_channels * np.finfo(np.float32).eps * s_max
    return int((s > tol).sum())


def check_rank(data: np.ndarray, n_sources: int, good=None, kind: str = "eeg") -> int:
    """The rank of ``data`` (:func:`data_rank`), or a ValueError where ``n_sources`` exceeds it.

    After an average reference, interpolated channels or an ICA-style PCA
    reduction, the channels span fewer dimensions than there are channels,
    and no model separates more sources than that.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        As fitted: finite, no flat channel (``check_fit_data`` ran).
    n_sources : int
    good : ndarray of bool, shape (n_times,), or None
        Samples not under a BAD annotation.
    kind : str
        The recording's kind: the message of "audio" speaks of microphones,
        the others of references and interpolation.

    Returns
    -------
    rank : int
        ``n_channels`` where ``n_sources`` exceeds it, unchecked (each family
        refuses more sources than channels with its own message).
    """
    n_channels = data.shape[0]
    if n_sources > n_channels:  # each family says so in its own words
        return n_channels
    rank = data_rank(data, good)
    if n_sources > rank and kind == "audio":
        raise ValueError(
            f"n_sources={n_sources} is above the rank of the data ({rank} of {n_channels} "
            "channels): some channels are copies or mixes of others (e.g. a stereo file "
            "whose two channels are the same), and no model separates more sources than "
            f"the channels span. Pass n_sources <= {rank}, or a recording whose microphones "
            "hear the sources differently."
        )
    if n_sources > rank:
        missing = n_channels - rank
        what = (
            "One dimension is missing, as after an average reference"
            if missing == 1
            else f"{missing} dimensions are missing, as after interpolating {missing} channels "
            "(or a reference and interpolations)"
        )
        raise ValueError(
            f"n_sources={n_sources} is above the rank of the data ({rank} of {n_channels} "
            "channels; re-referencing, e.g. to the average, removes one dimension per "
            "reference, and so does each interpolated channel or dimension a PCA reduction "
            f"dropped). {what}: n_sources can be at most {rank}. Pass n_sources <= {rank}, "
            f"or drop {missing} channel(s) (after an average reference any one, after an "
            "interpolation the interpolated ones) or fit the data before the reference."
        )
    return rank


def _flat_rows(scale: np.ndarray, peak: float) -> np.ndarray:
    # Constant up to rounding, relative to the largest value: MEG in tesla (1e-13)
    # varies as much as audio does (audit: an absolute 1e-12 called it silent).
    return np.flatnonzero(scale <= 1e-12 * peak)


def check_flat_channels(stats: np.ndarray, ch_names=None, scale=None, peak=None) -> None:
    """Raise a ValueError naming the constant channels of ``stats`` (n_channels, n_samples).

    ``scale`` (per-channel std) and ``peak`` (largest magnitude) where the caller has them.
    """
    scale = stats.std(axis=1) if scale is None else scale
    peak = float(np.abs(stats).max()) if peak is None else peak
    flat = _flat_rows(scale, peak)
    if flat.size:
        names = [ch_names[i] for i in flat] if ch_names is not None else flat.tolist()
        raise ValueError(f"X has flat (constant) channel(s) {names}; drop them before fitting.")


def nonfinite_count(t) -> int:
    """NaN or Inf entries of a real or complex array (numpy, or torch without importing it).

    Integer and boolean arrays have none.
    """
    if isinstance(t, np.ndarray):
        return int((~np.isfinite(t)).sum()) if np.issubdtype(t.dtype, np.inexact) else 0
    return int((~t.isfinite()).sum()) if t.is_floating_point() or t.is_complex() else 0


def check_finite_fit(tensors: dict) -> None:
    """Raise RuntimeError when a fit ended with non-finite weights (torch or numpy arrays).

    (A family's last logged loss may be NaN while its weights are sound: the
    time-frequency family skips non-finite Adam steps and logs them.)
    """
    bad = sorted(name for name, t in tensors.items() if nonfinite_count(t))
    if bad:
        raise RuntimeError(
            f"The fit ended with non-finite weights ({', '.join(bad[:4])}), so nothing was "
            "kept and the separator stays "
            "unfitted. Check the recording for outliers or near-constant channels; for the "
            "network family try another random_state or a smaller lr."
        )
