"""The synthetic nonlinear ICA data of Khemakhem et al. (2020), Sec. 6."""

from __future__ import annotations

import numpy as np

from .._check import check_int, check_option, check_random_state


def _leaky_relu(x, slope=0.2):
    return np.where(x > 0, x, slope * x)


def _xtanh(x, alpha=0.1):
    return np.tanh(x) + alpha * x


def _well_conditioned(rng, n_out, n_in, unit_norm="inputs", n_trials=2000, quantile=0.25):
    # As in the paper's code: draw random matrices and keep one whose condition
    # number is below the lower quartile of such draws, so that no layer of the
    # mixing MLP is close to singular. unit_norm="outputs" follows the
    # reference code exactly (unit-norm rows, every output a unit-norm
    # combination of the inputs; the quartile taken over normalised draws);
    # "inputs" (unit-norm columns, quartile over raw draws) is this module's
    # original variant, kept so that data drawn with a seed stay the same.
    if unit_norm == "outputs":

        def draw():
            W = rng.uniform(-1, 1, (n_out, n_in))
            return W / np.linalg.norm(W, axis=1, keepdims=True)

        bound = np.quantile([np.linalg.cond(draw()) for _ in range(n_trials)], quantile)
        while True:
            W = draw()
            if np.linalg.cond(W) <= bound:
                return W
    conds = [np.linalg.cond(rng.uniform(-1, 1, (n_out, n_in))) for _ in range(n_trials)]
    bound = np.quantile(conds, quantile)
    while True:
        W = rng.uniform(-1, 1, (n_out, n_in))
        if np.linalg.cond(W) <= bound:
            return W / np.linalg.norm(W, axis=0, keepdims=True)


def _check_range(name: str, value, *, positive: bool) -> tuple[float, float]:
    """``value`` as (low, high): two finite numbers, low <= high (and low > 0 if ``positive``)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    ok = np.isfinite([lo, hi]).all() and lo <= hi and (lo > 0 or not positive)
    if not ok:
        low = "0 < low <= high" if positive else "low <= high"
        raise ValueError(
            f"'{name}' must be two finite numbers (low, high) with {low}, got {value!r}. "
            f"Pass e.g. {name}=({'0.5, 3.0' if positive else '-1.0, 1.0'})."
        )
    return lo, hi


def make_nonlinear_ica(
    n_sources: int = 5,
    n_segments: int = 40,
    n_per_segment: int = 1000,
    n_layers: int = 3,
    *,
    n_obs: int | None = None,
    prior: str = "gauss",
    activation: str = "lrelu",
    std_range: tuple[float, float] = (0.5, 3.0),
    mean_range: tuple[float, float] | None = (-1.0, 1.0),
    repeat_mixing: bool = False,
    unit_norm: str = "inputs",
    random_state=None,
):
    """Non-stationary sources mixed by a random invertible MLP.

    Segment k has its own source means and standard deviations, drawn
    uniformly from ``mean_range`` and ``std_range``; the sources are conditionally independent
    given the segment index u (the paper's model, eq. (7)). The mixing is an
    MLP with ``n_layers`` well-conditioned square weight matrices and an
    invertible activation between layers (``n_layers=1`` is linear mixing).

    Parameters
    ----------
    n_sources : int
        Number of sources.
    n_segments : int
        Number of segments (distinct values of u).
    n_per_segment : int
        Samples per segment.
    n_layers : int
        Depth of the mixing MLP.
    n_obs : int or None
        Observed dimensions; default ``n_sources``. With ``n_obs > n_sources``
        the first layer is tall (still injective).
    prior : {"gauss", "laplace"}
        Conditional distribution of the sources in each segment.
    activation : {"lrelu", "xtanh"}
        Invertible activation between mixing layers: leaky ReLU with slope 0.2,
        or tanh(x) + 0.1 x (the paper's reference code).
    std_range : (float, float)
        Range of the per-segment source standard deviations. The paper's
        reference code calls this range ``var_bounds`` but multiplies
        unit-variance noise by it, so its default (0.5, 3) gives variances in
        [0.25, 9]; we keep that behaviour and name it for what it is.
    mean_range : (float, float) or None
        Range of the per-segment source means; None for zero-mean sources (the
        reference code's default).
    repeat_mixing : bool
        Use one weight matrix for every mixing layer (a tall first one when
        ``n_obs > n_sources``), as the dataset class of the paper's reference
        code does (``repeat_linearity=True``), instead of a new matrix per
        layer. The reference MCC figures quoted in issue #2 were measured on
        data made this way.
    unit_norm : {"inputs", "outputs"}
        How each mixing matrix W (shape (n_out, n_in), applied as W h) is
        scaled: "outputs" gives unit-norm rows, as the reference code does
        (and draws the condition-number bound from normalised matrices);
        "inputs" gives unit-norm columns, this function's original choice,
        kept as the default so that a seed keeps giving the same data (the
        shipped pretrained model ``ivae-synthetic-5src-v1`` documents its
        data that way). ``recipes/synthetic`` uses "outputs".
    random_state : None, int or numpy Generator

    Returns
    -------
    X : ndarray, shape (n_obs, n_times)
        Observations, n_times = n_segments * n_per_segment.
    S : ndarray, shape (n_sources, n_times)
        True sources.
    u : ndarray of int64, shape (n_times,)
        Segment index of every sample.

    Examples
    --------
    >>> X, S, u = make_nonlinear_ica(3, 10, 100, 2, random_state=0)
    >>> X.shape, S.shape, u.shape
    ((3, 1000), (3, 1000), (1000,))
    """
    n_sources = check_int("n_sources", n_sources, min_value=1)
    n_segments = check_int("n_segments", n_segments, min_value=1)
    n_per_segment = check_int("n_per_segment", n_per_segment, min_value=1)
    n_layers = check_int("n_layers", n_layers, min_value=1)
    n_obs = n_sources if n_obs is None else check_int("n_obs", n_obs, min_value=n_sources)
    check_option("prior", prior, ("gauss", "laplace"))
    check_option("activation", activation, ("lrelu", "xtanh"))
    check_option("repeat_mixing", repeat_mixing, (True, False))
    check_option("unit_norm", unit_norm, ("inputs", "outputs"))
    lo, hi = _check_range("std_range", std_range, positive=True)
    if mean_range is not None:
        mean_range = _check_range("mean_range", mean_range, positive=False)
    rng = check_random_state(random_state)

    stds = rng.uniform(lo, hi, (n_segments, n_sources))
    if mean_range is None:
        means = np.zeros((n_segments, n_sources))
    else:
        means = rng.uniform(mean_range[0], mean_range[1], (n_segments, n_sources))
    u = np.repeat(np.arange(n_segments, dtype=np.int64), n_per_segment)
    if prior == "gauss":
        noise = rng.standard_normal((n_segments * n_per_segment, n_sources))
        S = means[u] + noise * stds[u]
    else:
        # Laplace with standard deviation sigma has scale b = sigma / sqrt(2).
        noise = rng.laplace(0.0, 1.0 / np.sqrt(2.0), (n_segments * n_per_segment, n_sources))
        S = means[u] + noise * stds[u]

    act = _leaky_relu if activation == "lrelu" else _xtanh
    if repeat_mixing:
        first = _well_conditioned(rng, n_obs, n_sources, unit_norm)
        later = first if n_obs == n_sources else _well_conditioned(rng, n_obs, n_obs, unit_norm)
    H = S
    for layer in range(n_layers):
        n_in = H.shape[1]
        n_out = n_obs if layer == 0 else n_in
        if repeat_mixing:
            W = first if layer == 0 else later
        else:
            W = _well_conditioned(rng, n_out, n_in, unit_norm)
        H = H @ W.T
        if layer < n_layers - 1:
            H = act(H)
    return H.T.astype(np.float32), S.T.astype(np.float32), u
