"""Shared validators, so that every error names the parameter, what was
allowed, what came, and the fix."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np


class NotFittedError(RuntimeError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before ``fit``.

    It subclasses both RuntimeError and AttributeError, as scikit-learn's does,
    so ``hasattr``-style checks keep working.
    """


def check_option(name: str, value, allowed: Iterable):
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError."""
    allowed = tuple(allowed)
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed[:-1])
        names = f"{names} and {allowed[-1]!r}" if len(allowed) > 1 else repr(allowed[0])
        raise ValueError(
            f"Invalid value for the '{name}' parameter. Allowed values are {names}, "
            f"but got {value!r} instead."
        )
    return value


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
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        n_bad = int((~finite).sum())
        raise ValueError(
            f"{name} contains {n_bad} NaN or Inf values (in channel(s) "
            f"{bad_rows[:10].tolist()}). Remove or interpolate them before fitting."
        )
    return np.ascontiguousarray(X, dtype=np.float32)


def check_device(device):
    """Resolve 'auto' | 'cpu' | 'cuda' | 'cuda:N' | torch.device to a torch.device."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(
            f"'device' must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}."
        )
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
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(
        f"Invalid value for the 'device' parameter. Allowed values are 'auto', 'cpu', 'cuda' and "
        f"'cuda:N', but got {device!r} instead."
    )


# Largest magnitude fit accepts: float32 sums of squares of larger values overflow
# (3.4e38) over long recordings, and every family's statistics start there.
MAX_ABS_VALUE = 1e15


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
            "pass X.T."
        )
    if good is not None and not good.any():
        raise ValueError(
            "Every sample of the recording lies under a BAD annotation, so nothing is left "
            "to fit. Shorten or remove those annotations (raw.annotations), or pass "
            "reject_by_annotation=False."
        )
    stats = data if good is None or good.all() else data[:, good]
    peak = float(np.abs(stats).max()) if stats.size else 0.0
    if peak > MAX_ABS_VALUE:
        raise ValueError(
            f"X holds values up to {peak:.3g}, beyond what the fit computes safely in float32 "
            f"(|x| <= {MAX_ABS_VALUE:g}). Rescale it first, e.g. X / np.abs(X).max(), or "
            "convert it to its physical unit."
        )
    scale = stats.std(axis=1, dtype=np.float64)
    if _flat_rows(scale, peak).size == n_channels:
        raise ValueError(
            "X is silent: every channel is constant (e.g. all zeros), so there is nothing "
            "to separate. Check that the right file or channels were read."
        )
    check_flat_channels(stats, ch_names, scale, peak)


def _flat_rows(scale: np.ndarray, peak: float) -> np.ndarray:
    # Constant up to rounding, relative to the largest value (and absolutely below 1e-12).
    return np.flatnonzero(scale <= 1e-12 * max(1.0, peak))


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


def check_finite_fit(tensors: dict) -> None:
    """Raise RuntimeError when a fit ended with non-finite weights.

    (A family's last logged loss may be NaN while its weights are sound: the
    time-frequency family skips non-finite Adam steps and logs them.)
    """
    bad = sorted(
        name
        for name, t in tensors.items()
        if t.is_floating_point() and not bool(t.isfinite().all())
    )
    if bad:
        raise RuntimeError(
            f"The fit ended with non-finite weights ({', '.join(bad[:4])}), so nothing was "
            "kept and the separator stays "
            "unfitted. Check the recording for outliers or near-constant channels; for the "
            "network family try another random_state or a smaller lr."
        )
