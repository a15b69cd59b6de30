"""Exact maximum-likelihood fits of the linear iVAE families, with L-BFGS.

The linear, noiseless iVAE (Gaussian, extended or generalised Gaussian prior)
and its post-nonlinear variant have a tractable likelihood, so they are fitted
by L-BFGS on their exact negative log-likelihood rather than by the SGD loop of
:mod:`sepkit.train`: for the Gaussian and extended priors, picard's
preconditioned L-BFGS in numpy on :mod:`sepkit.functional_ica` (no torch); for
the generalised Gaussian prior and the post-nonlinear model, torch's L-BFGS in
float64 on :mod:`sepkit.functional`.
These functions take and return ndarrays; the estimator turns their result
into a fitted model.
"""

from __future__ import annotations

import math

import numpy as np

from .._lazy import torch
from ..functional import (
    gengauss_ivae_nll_and_grad,
    odd_power_features,
    pack_covariances,
    post_nonlinear_ivae_nll,
    segment_covariances,
    unwarp_feature_map,
)
from ..functional_ica import extended_ivae_terms, group_segments, log_normalizer


def _lbfgs_optimizer(params, max_iter: int, tol: float, tolerance_change: float):
    """The L-BFGS set-up every exact-likelihood fit here uses (strong Wolfe line search)."""
    return torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )


def _check_finite_nll(nll: float, model: str) -> None:
    """Raise when the fitted ``model``'s -log-likelihood is not finite."""
    if not np.isfinite(nll):
        raise FloatingPointError(
            f"The {model}'s likelihood is not finite; the data have a dimension with no "
            "variance in some segment. Use longer windows or fewer n_sources."
        )


def _unit_variance_rows(unmixing: torch.Tensor, xt: torch.Tensor, nll: float, model: str):
    """``unmixing`` with rows scaled to unit source variance; raise if ``nll`` is not finite."""
    _check_finite_nll(nll, model)
    with torch.no_grad():
        # Unit variance over all samples (about the overall mean).
        xc = xt - xt.mean(dim=1, keepdim=True)
        W = unmixing.detach()
        return (W / (W @ xc).std(dim=1, correction=0)[:, None]).numpy()


def _unit_variance_unmixing(W: np.ndarray, data, nll: float, model: str) -> np.ndarray:
    """:func:`_unit_variance_rows` of the numpy fits: the variance from ``data``'s moments."""
    _check_finite_nll(nll, model)
    return W / np.sqrt(np.einsum("ia,ab,ib->i", W, data.total(), W))[:, None]


def _lbfgs(
    params, objective, max_iter: int, tol: float, tolerance_change: float, trace=None
) -> int:
    """Minimise ``objective()`` over ``params`` with L-BFGS; return the iterations run.

    ``trace`` (a list, optional) receives the objective per iteration: the lowest
    value evaluated in it (its line search's best point), the start value first.
    Reading the values does not change the optimisation.

    Where the run ends at a point whose objective is not finite, the
    parameters are set back to the best finite point it evaluated. (Seen with
    the post-nonlinear fit on audio clipped on one side, with an offset: the
    objective flattened along a warping coefficient of the clipped channel,
    the line search stepped to 1e30 and ended at NaN.)
    """
    opt = _lbfgs_optimizer(params, max_iter, tol, tolerance_change)
    evaluations = []  # (iteration, objective) of every evaluation
    best = [np.inf, None]  # the lowest finite objective and its parameters

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        value = float(loss.detach())
        if trace is not None:
            evaluations.append((opt.state[params[0]].get("n_iter", 0), value))
        if value < best[0]:
            best[:] = value, [p.detach().clone() for p in params]
        return loss

    opt.step(closure)
    if best[1] is not None:
        with torch.no_grad():
            if not torch.isfinite(objective()):
                for p, saved in zip(params, best[1], strict=True):
                    p.copy_(saved)
    if trace is not None:
        lowest = {}
        for it, value in evaluations:
            lowest[it] = min(value, lowest.get(it, np.inf))
        trace.extend(lowest[it] for it in sorted(lowest))
    return int(opt.state[params[0]]["n_iter"])


def fit_linear_ivae(
    x: np.ndarray, codes: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-7
) -> dict:
    """Maximum-likelihood fit of the linear, noiseless iVAE (Gaussian prior).

    Minimises the Gaussian linear iVAE's -log p(x|u) (every k = 0 in
    :func:`sepkit.functional_ica.extended_ivae_terms`, equal to
    :func:`sepkit.functional.linear_ivae_nll`) over a square unmixing W by
    picard's preconditioned L-BFGS in the relative parametrisation
    (:func:`_relative_lbfgs`), in numpy float64, starting from the identity,
    i.e. from the whitened data. The per-segment source variances are
    profiled out, so the fit works on the segment covariances alone: its cost
    after one pass over the data does not grow with the recording. (On
    make_eeg recordings of 64 and 128 channels it reached torch's L-BFGS
    optimum, the objective within 2e-9, in 28 and 121 iterations against 354
    and 1000, 30-70x faster.)

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
        Centred, whitened data.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample (any integers: segments without samples
        do not enter the objective).
    max_iter : int
        Iterations at most.
    tol : float
        Stop when the largest entry of the relative gradient falls below ``tol``.

    Returns
    -------
    dict
        ``unmixing`` (ndarray, shape (n_dims, n_dims)), rows scaled so that
        every source has unit variance over the fitted samples; ``nll``
        (-log p(x|u) in nats per sample in the whitened space); ``n_iter``;
        ``converged`` (False when ``max_iter`` ran out first); ``trace`` (the
        objective at the start and after every iteration).
    """
    _, codes = np.unique(np.asarray(codes), return_inverse=True)
    data = group_segments(
        np.asarray(x, dtype=np.float64), codes, int(codes.max()) + 1, keep_samples=False
    )
    n = x.shape[0]
    values = []
    W, terms, n_iter, converged = _relative_lbfgs(
        lambda W: extended_ivae_terms(W, data, np.zeros(n)),
        np.eye(n),
        max_iter=max_iter,
        tol=tol,
        trace=values,
    )
    constant = n * (0.5 + log_normalizer(0))
    nll = terms["loss"] + constant
    return dict(
        unmixing=_unit_variance_unmixing(W, data, nll, "linear iVAE"),
        nll=float(nll),
        n_iter=int(n_iter),
        converged=bool(converged),
        trace=[float(v + constant) for v in values],
    )


def _segment_counts(fit: str, codes) -> np.ndarray:
    """Samples per segment code; a ValueError naming ``fit`` where a code has none."""
    counts = np.bincount(np.asarray(codes))
    if not (counts > 0).all():
        raise ValueError(
            f"{fit} needs every segment code 0 .. n_segments - 1 to have samples; "
            f"{int((counts == 0).sum())} are empty. Renumber the codes (np.unique(codes, "
            "return_inverse=True))."
        )
    return counts


# Bounds of the generalised Gaussian shape: 0.25 is spikier than any EEG
# source we simulate, 8 flatter than a sinusoid needs to be told from a
# Gaussian (whose 2 sits well inside).
GENGAUSS_SHAPE_BOUNDS = (0.25, 8.0)


def fit_gengauss_ivae(
    x: np.ndarray,
    codes: np.ndarray,
    *,
    max_iter: int = 500,
    tol: float = 1e-7,
    tol_change: float = 1e-6,
    check_every: int = 50,
) -> dict:
    """Maximum-likelihood fit of the linear, noiseless iVAE with a generalised Gaussian prior.

    Minimises :func:`sepkit.functional.gengauss_ivae_nll` over the unmixing W
    and one shape per source with L-BFGS in float64, from the Gaussian fit
    (:func:`fit_linear_ivae`) and shape 2. The shapes stay within
    ``GENGAUSS_SHAPE_BOUNDS`` (a sigmoid maps them there). Each iteration
    passes over all samples, so the fit costs more than the Gaussian one,
    which works on segment covariances.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
        Centred, whitened data.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1, none empty.
    max_iter : int
        L-BFGS iterations at most (after the Gaussian fit).
    tol : float
        Stop when the largest gradient entry falls below ``tol``.
    tol_change : float
        Or when ``check_every`` iterations lower the objective by less than
        ``tol_change`` nats per sample. The gradient of a source with a
        weakly determined shape can stay near 1e-4 long after the sources
        have settled (traced on a 19-channel recording: MCC within 3e-5 of
        its value at 500 iterations from iteration 250 on, when 50
        iterations gained 6e-7 nats).
    check_every : int
        Iterations between those checks (fewer where L-BFGS's budget of
        5/4 as many objective evaluations per call runs out first).

    Returns
    -------
    dict
        ``unmixing`` (ndarray, shape (n_dims, n_dims)), rows scaled so that
        every source has unit variance over the fitted samples; ``shape``
        (ndarray, shape (n_dims,)), beta per source; ``nll`` (nats per sample,
        whitened space) and ``start_nll`` (the objective at the start: the
        Gaussian fit's W, shape 2); ``n_iter``; ``converged`` (True when
        either test stopped the fit before ``max_iter``).
    """
    start = fit_linear_ivae(x, codes)
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    ct = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    counts = torch.from_numpy(_segment_counts("fit_gengauss_ivae", codes)).to(torch.float64)
    low, high = GENGAUSS_SHAPE_BOUNDS
    unmixing = torch.tensor(start["unmixing"], dtype=torch.float64, requires_grad=True)
    # shape = low + (high - low) sigmoid(theta), theta = logit((2 - low) / (high - low)) at 2.
    theta0 = math.log((2.0 - low) / (high - 2.0))
    theta = torch.full((x.shape[0],), theta0, dtype=torch.float64, requires_grad=True)

    def shape():
        return low + (high - low) * torch.sigmoid(theta)

    def objective():
        # The gradients in closed form: backpropagating through the samples
        # costs several times more (sepkit.functional).
        with torch.no_grad():
            nll, grad_w, grad_shape = gengauss_ivae_nll_and_grad(unmixing, xt, ct, counts, shape())
            sig = torch.sigmoid(theta)
            unmixing.grad = grad_w
            theta.grad = grad_shape * (high - low) * sig * (1 - sig)
        return nll

    start_nll = previous = float(objective())
    opt = _lbfgs_optimizer([unmixing, theta], check_every, tol, 1e-12)

    def closure():
        opt.zero_grad()
        return objective()

    n_iter, converged, nll = 0, False, start_nll
    # The objective after every block of L-BFGS iterations, and the iterations run.
    trace, trace_iter = [start_nll], [0]
    while n_iter < max_iter:
        opt.param_groups[0]["max_iter"] = min(check_every, max_iter - n_iter)
        opt.step(closure)
        ran = int(opt.state[unmixing]["n_iter"]) - n_iter
        n_iter += ran
        nll = float(objective())  # also sets the gradients at the current point
        trace.append(nll)
        trace_iter.append(n_iter)
        grad_max = max(float(unmixing.grad.abs().max()), float(theta.grad.abs().max()))
        if grad_max <= tol or previous - nll < tol_change or ran == 0:
            converged = True
            break
        previous = nll
    return dict(
        unmixing=_unit_variance_rows(unmixing, xt, nll, "generalised Gaussian iVAE"),
        shape=shape().detach().numpy(),
        nll=nll,
        start_nll=start_nll,
        n_iter=n_iter,
        converged=converged,
        trace=trace,
        trace_iter=trace_iter,
    )


def fit_post_nonlinear_ivae(
    x: np.ndarray,
    codes: np.ndarray,
    n_sources: int,
    *,
    degree: int = 3,
    max_iter: int = 1000,
    tol: float = 1e-7,
    n_bins: int = 2048,
    feature_filter=None,
    keep: np.ndarray | None = None,
) -> dict:
    """Maximum-likelihood fit of the post-nonlinear linear iVAE.

    Minimises :func:`sepkit.functional.post_nonlinear_ivae_nll` over the
    square unmixing W and the per-channel coefficients of the sensor
    unwarping h (:func:`sepkit.functional.sensor_unwarp`) with L-BFGS in
    float64. h starts near the identity and W at the linear iVAE's solution
    (:func:`fit_linear_ivae` on the ``n_sources`` strongest principal
    components, the other components as noise rows). The data enter through
    the segment covariances of the odd powers of x and the quantiles of x^2,
    so one iteration costs n_segments * ((degree + 1) * n_channels)^2 * n_sources
    operations whatever the recording's length.

    With ``feature_filter`` (a linear, time-invariant filter such as a
    high-pass), the model is that the *filtered* unwarped signal
    F(h(x)) = A s is the linear iVAE's: F acts after the unwarping, where
    the sensors are linear. As h(x) is a linear map of the odd powers of x,
    F(h(x)) is the same map of the filtered powers, so only the segment
    covariances change; the change of variables x -> F(h(x)) over the whole
    recording has log-determinant log|det F| (a constant) plus the per-sample
    sum_c log h_c'(x_c) of the unfiltered x.

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_times)
        Sensor data, each channel centred and scaled to unit variance.
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1.
    n_sources : int
    degree : int
        Odd powers x^3 .. x^(2 degree + 1) in h.
    max_iter, tol :
        As for :func:`fit_linear_ivae`.
    n_bins : int
        Equal-count bins of x^2 per channel for the log-Jacobian.
    feature_filter : callable or None
        ``feature_filter(a)`` filters an ndarray of shape (n_rows, n_times)
        along time (float64, same shape), e.g. a high-pass. None: no filter.
    keep : ndarray of bool, shape (n_times,), or None
        Samples that enter the statistics (after filtering, so that the
        filter sees the recording's true time axis); None keeps all.
        ``codes`` of the other samples are ignored.

    Returns
    -------
    dict
        ``unmixing`` (n_channels, n_channels; source rows first, scaled to
        unit-variance sources), ``coefs`` (n_channels, degree), ``nll``,
        ``n_iter``, ``converged``.
    """
    codes, covs, total, weights, sq_quantiles, x_lin = _post_nonlinear_statistics(
        x, codes, degree, n_bins, feature_filter, keep
    )
    n_channels = x_lin.shape[0]
    W0 = _post_nonlinear_start(total, x_lin, codes, n_sources, max_iter, tol)
    unmixing = W0.clone().requires_grad_(True)
    log_coefs = torch.full((n_channels, degree), -6.0, dtype=torch.float64, requires_grad=True)
    args = (pack_covariances(covs), total, weights, sq_quantiles, n_sources)
    del covs
    # tolerance_change 1e-9, relative to an objective of a few nats: smaller
    # changes do not move the sources (MCC to 3 decimals), and the line search
    # would otherwise use up max_iter on rounding noise.
    n_iter = _lbfgs(
        [unmixing, log_coefs],
        lambda: post_nonlinear_ivae_nll(unmixing, log_coefs, *args),
        max_iter,
        tol,
        1e-9,
    )
    with torch.no_grad():
        nll = float(post_nonlinear_ivae_nll(unmixing, log_coefs, *args))
        coefs = torch.exp(log_coefs)
        M = unmixing @ unwarp_feature_map(coefs)
        std = torch.sqrt(torch.einsum("ia,ab,ib->i", M, total, M))
        W = unmixing / std[:, None]
    if not np.isfinite(nll):
        raise FloatingPointError(
            "The post-nonlinear iVAE's likelihood is not finite. Check the recording for "
            "flat or extreme channels, or use mixing='linear'."
        )
    return dict(
        unmixing=W.numpy(),
        coefs=coefs.numpy(),
        nll=nll,
        n_iter=n_iter,
        converged=n_iter < max_iter,
    )


def _post_nonlinear_statistics(x, codes, degree: int, n_bins: int, feature_filter, keep):
    """The data as :func:`fit_post_nonlinear_ivae` sees them, in statistics of fixed size.

    Returns
    -------
    codes : ndarray of int, shape (n_kept,)
        The kept samples' segments, renumbered 0 .. n_segments - 1.
    covs, total, weights :
        Segment covariances of the odd-power features, their overall
        covariance (within plus between segments) and the segment weights.
    sq_quantiles : Tensor, shape (n_channels, n_bins)
        Means of equal-count bins of x^2 per channel.
    x_lin : Tensor, shape (n_channels, n_kept)
        x as the likelihood sees it (filtered, if asked; kept samples).
    """
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    feats = odd_power_features(xt, degree)
    if feature_filter is not None:
        feats = torch.from_numpy(np.ascontiguousarray(feature_filter(feats.numpy())))
    codes = np.asarray(codes)
    if keep is not None:
        keep_t = torch.from_numpy(np.asarray(keep, dtype=bool))
        xt, feats, codes = xt[:, keep_t], feats[:, keep_t], codes[keep]
    # Segments without a kept sample drop out of the codes.
    _, codes = np.unique(codes, return_inverse=True)
    ct = torch.as_tensor(codes, dtype=torch.long)
    n_channels, n_times = xt.shape
    n_segments = int(ct.max()) + 1
    covs, means, counts = segment_covariances(feats, ct, n_segments)
    weights = counts / counts.sum()
    spread = means - (weights[:, None] * means).sum(dim=0)
    total = torch.einsum("k,kab->ab", weights, covs) + torch.einsum(
        "k,ka,kb->ab", weights, spread, spread
    )
    # The first block of the features is x itself (filtered, if asked): the
    # linear iVAE's start sees what the likelihood sees.
    x_lin = feats[:n_channels].clone()
    del feats
    # Equal-count bins of x^2 (their means) stand for the samples in the log-Jacobian.
    sq = torch.sort(xt**2, dim=1).values
    edges = torch.linspace(0, n_times, min(n_bins, n_times) + 1).long()
    sq_quantiles = torch.stack(
        [
            sq[:, a:b].mean(dim=1)
            for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
        ],
        dim=1,
    )
    return codes, covs, total, weights, sq_quantiles, x_lin


def _post_nonlinear_start(total, x_lin, codes, n_sources: int, max_iter: int, tol: float):
    """The starting unmixing of the post-nonlinear fit, shape (n_channels, n_channels).

    PCA whitening; the ``n_sources`` strongest components separated by the
    linear iVAE (:func:`fit_linear_ivae`), the rest kept as noise rows.
    """
    n_channels = x_lin.shape[0]
    evals, evecs = torch.linalg.eigh(total[:n_channels, :n_channels])
    evals, evecs = evals.flip(0), evecs.flip(1)
    evals = evals.clamp(min=evals[0] * 1e-8)
    pca = evecs.T / torch.sqrt(evals)[:, None]
    top = (pca[:n_sources] @ x_lin).numpy()
    lin = fit_linear_ivae(top, codes, max_iter=max_iter, tol=tol)["unmixing"]
    return torch.cat([torch.from_numpy(lin) @ pca[:n_sources], pca[n_sources:]], dim=0)


def _pair_newton(grad: np.ndarray, hess: np.ndarray, lambda_min: float) -> np.ndarray:
    """Solve H d = g in the block-diagonal Hessian approximation of picard.

    The relative Hessian of L couples E_ij with E_ji only (the log-determinant
    gives the off-diagonal 1): each pair solves [[H_ij, 1], [1, H_ji]] d = g,
    with the block's eigenvalues raised to ``lambda_min`` so that the result is
    a descent direction. The diagonal (the scale, profiled out) stays 0.
    """
    ht = hess.T
    # Smallest eigenvalue of each block; shift both diagonal entries to lift it.
    low = 0.5 * (hess + ht) - np.sqrt(0.25 * (hess - ht) ** 2 + 1.0)
    shift = np.maximum(lambda_min - low, 0.0)
    h, h_t = hess + shift, ht + shift
    d = (h_t * grad - grad.T) / (h * h_t - 1.0)
    np.fill_diagonal(d, 0.0)
    return d


def _line_search(evaluate, unmixing, terms, direction, tries: int = 10):
    """Backtracking (Armijo) from the unit step along ``direction`` in W <- (I + E) W.

    Returns (W, its terms, step, direction), or None when none of ``tries``
    steps (each at most half the one before) lowers the objective enough, or
    the direction does not descend.
    """
    slope = float(np.sum(direction * terms["grad"]))
    if slope >= 0:
        return None
    step, eye = 1.0, np.eye(len(unmixing))
    for _ in range(tries):
        candidate = (eye + step * direction) @ unmixing
        new = evaluate(candidate)
        rise = new["loss"] - terms["loss"]
        if rise <= 1e-4 * step * slope:
            return candidate, new, step, direction
        # The minimum of the parabola through the loss at 0 and at step with
        # the slope at 0 (Nocedal & Wright 2006, Eq. 3.57), kept within
        # [0.1, 0.5] of the step: one or two tries where halving needs many.
        curvature = rise - step * slope
        guess = -slope * step * step / (2.0 * curvature) if np.isfinite(rise) else 0.0
        step = min(max(guess, 0.1 * step), 0.5 * step)
    return None


# A run whose last five iterations lowered the objective by less than this
# (relative) has stalled at the rounding of the float32 pass, though its gradient
# may stay above ``tol``. Traced (make_eeg, AMD EPYC, one thread): 64 channels x
# 10 min high-passed inside fit, iterations 22-55 changed the objective (28.15)
# by 1e-15 to 3e-8 each, 13 s against 1 s for the same data high-passed before
# fit (18 iterations, the gradient met ``tol``); 128 channels x 60 min
# high-passed, iterations 64-80 by 1e-14 to 3e-9 each (90 s). At 1e-10 those fits
# take 2.7 s and 34 s, and the high-density benchmark's sources are the same to
# 1e-4 in MCC on every recording tried (benchmarks/README.md).
STALL_TOL = 1e-10


def _settled(losses, window: int = 5, tol: float = 1e-8) -> bool:
    """Whether the last ``window`` iterations lowered the objective by less than ``tol``.

    Relative to max(1, |objective|). A line search that finds no lower point
    after that has met the rounding of the objective (the float32 pass, or the
    steep walls where a noise-free source's variance in a segment is floored),
    not a bad direction: traced on the noise-free make_eeg recording of
    tests/test_separator_mne.py, the last five iterations before the failed
    search changed the objective by 5e-12 to 5e-10 each.
    """
    if len(losses) <= window:
        return False
    return losses[-window - 1] - losses[-1] < tol * max(1.0, abs(losses[-1]))


def _relative_lbfgs(evaluate, unmixing, *, max_iter, tol, memory=7, lambda_min=1e-2, trace=None):
    """Minimise L over W <- (I + E) W by L-BFGS preconditioned with :func:`_pair_newton`.

    Picard's scheme (Ablin, Cardoso & Gramfort 2018, Algorithm 2; our code) with
    a backtracking line search from the unit step (:func:`_line_search`).
    ``evaluate(W)`` returns the dict of
    :func:`sepkit.functional_ica.extended_ivae_terms`.

    Returns
    -------
    W, terms (at W), n_iter, converged
    """
    terms = evaluate(unmixing)
    losses = [] if trace is None else trace  # the objective at the start and per iteration
    losses.append(terms["loss"])
    steps, changes = [], []
    if terms["grad"] is not None and np.abs(terms["grad"]).max() < tol:
        return unmixing, terms, 0, True  # e.g. one source: only its scale, profiled out
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is returned)
        grad = terms["grad"]
        # Two-loop recursion with the pair-wise Newton step as the initial inverse Hessian.
        q, alphas = grad.copy(), []
        for s, y in zip(reversed(steps), reversed(changes), strict=True):
            alpha = np.sum(s * q) / np.sum(s * y)
            alphas.append(alpha)
            q -= alpha * y
        r = _pair_newton(q, terms["hess"], lambda_min)
        for s, y, alpha in zip(steps, changes, reversed(alphas), strict=True):
            r += s * (alpha - np.sum(y * r) / np.sum(s * y))
        found = _line_search(evaluate, unmixing, terms, -r)
        if found is None and steps:  # the memory misleads: retry without it
            steps, changes = [], []
            found = _line_search(
                evaluate, unmixing, terms, -_pair_newton(grad, terms["hess"], lambda_min)
            )
        if found is None:  # no step lowers the objective: settled, or stuck?
            # A gradient within ten times tol is the float32 pass's rounding (its
            # gradient is only good to about 1e-5): traced on a 6-channel recording
            # in microvolts stored as volts, the search failed at 1.2e-4 (tol 1e-4)
            # with the objective within 3e-8 of the same data's fit in volts.
            near = np.abs(grad).max() < 10.0 * tol
            return unmixing, terms, n_iter, near or _settled(losses)
        candidate, new, step, direction = found
        s, y = step * direction, new["grad"] - grad
        if np.sum(s * y) > 1e-12:
            steps.append(s)
            changes.append(y)
            if len(steps) > memory:
                steps.pop(0)
                changes.pop(0)
        unmixing, terms = candidate, new
        losses.append(terms["loss"])
        if np.abs(terms["grad"]).max() < tol or _settled(losses, tol=STALL_TOL):
            return unmixing, terms, n_iter, True
    return unmixing, terms, n_iter, False


# k of the extended prior's two densities, those of extended infomax (Lee,
# Girolami & Sejnowski 1999): N(0, 1) sech^2(z) for super-Gaussian sources,
# the mixture of N(+-1, 1) for sub-Gaussian ones (sepkit.functional_ica).
SUPER_GAUSSIAN_K = 2.0
SUB_GAUSSIAN_K = -1.0


def fit_extended_ivae(
    x: np.ndarray,
    codes: np.ndarray,
    *,
    max_iter: int = 500,
    tol: float = 1e-4,
    start_tol: float = 1e-3,
    max_rounds: int = 3,
    pass_dtype=np.float32,
    chunk_samples: int | None = None,
) -> dict:
    """Maximum-likelihood fit of the linear, noiseless iVAE with the extended prior.

    The prior (:mod:`sepkit.functional_ica`): per source and segment a scale,
    times a super-Gaussian (k = ``SUPER_GAUSSIAN_K``, 2) or sub-Gaussian
    (k = ``SUB_GAUSSIAN_K``, -1) factor. First the
    Gaussian model (every k = 0), fitted on the segment moments alone, from
    the identity (the whitened data), as a start; then k per source from the sign of
    E[sech^2 z] - E[z tanh z] (extended infomax's switch) and the full model;
    the signs are checked at its optimum and the model refitted while any
    changes (``max_rounds`` fits at most). Both are minimised by picard's
    preconditioned L-BFGS in the relative parametrisation, in numpy.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
        Centred, whitened data (float64).
    codes : ndarray of int, shape (n_times,)
        Segment of u for every sample, 0 .. n_segments - 1, none empty.
    max_iter : int
        Iterations at most per fit (the Gaussian start and each round).
    tol : float
        Stop a fit of the full model when the largest entry of its relative
        gradient falls below it (with float32 passes, whose gradients carry
        rounding errors near 1e-5, 1e-4 is as low as it goes).
    start_tol : float
        ``tol`` of the Gaussian start. It only has to come near: traced on
        make_eeg recordings (20 and 40 sources), the full model reached the
        same optimum (objective within 1e-7) from a start at 1e-3 as from one
        at 1e-7, and in fewer iterations (18 against 28 at 40 sources).
    max_rounds : int
        Fits of the full model at most.
    pass_dtype : numpy dtype
        Of the pass over the samples: float32 (half the time of float64).
    chunk_samples : int or None
        Samples per block of a pass over the data (bounds the pass's memory);
        None: :func:`sepkit.functional_ica.block_samples` of the source count.

    Returns
    -------
    dict
        ``unmixing`` (ndarray, shape (n_dims, n_dims)), rows scaled to unit
        source variance; ``shape`` (ndarray, shape (n_dims,)): k per source;
        ``nll`` (-log p(x|u), nats per sample, whitened space) and
        ``start_nll`` (the Gaussian start's); ``n_iter`` (all fits, the
        start's first); ``converged``; ``trace`` (the full model's -log p(x|u)
        at its start and after every iteration; where the signs change, the
        next fit's values belong to the new k) and ``trace_iter`` (their
        iteration numbers, counted from the Gaussian start's first).
    """
    codes = np.asarray(codes)
    counts = _segment_counts("fit_extended_ivae", codes)
    # The pass over the samples in float32: half the time, and the same sources
    # (the moments, the objective's sums and the optimiser stay in float64).
    data = group_segments(
        np.asarray(x, dtype=np.float64), codes, len(counts), dtype=pass_dtype,
        chunk_samples=chunk_samples,
    )  # fmt: skip
    n = x.shape[0]

    def evaluate_with(signs):
        return lambda W: extended_ivae_terms(W, data, signs)

    W, terms, n_gauss, converged = _relative_lbfgs(
        evaluate_with(np.zeros(n)), np.eye(n), max_iter=max_iter, tol=start_tol
    )
    start_nll = terms["loss"] + n * (0.5 + log_normalizer(0))
    signs = np.full(n, SUPER_GAUSSIAN_K)
    score = evaluate_with(signs)(W)["super_score"]
    n_iter = n_gauss
    trace, trace_iter = [], []  # the full model's -log p(x|u) per iteration
    for _ in range(max_rounds):
        signs = np.where(score >= 0, SUPER_GAUSSIAN_K, SUB_GAUSSIAN_K)
        values = []
        W, terms, ran, converged = _relative_lbfgs(
            evaluate_with(signs), W, max_iter=max_iter, tol=tol, trace=values
        )
        constant = sum(0.5 + log_normalizer(k) for k in signs)
        trace += [v + constant for v in values]
        trace_iter += range(n_iter, n_iter + len(values))
        n_iter += ran
        score = terms["super_score"]
        if np.array_equal(np.where(score >= 0, SUPER_GAUSSIAN_K, SUB_GAUSSIAN_K), signs):
            break
    nll = terms["loss"] + sum(0.5 + log_normalizer(k) for k in signs)
    return dict(
        unmixing=_unit_variance_unmixing(W, data, nll, "extended linear iVAE"),
        shape=signs,
        nll=float(nll),
        start_nll=float(start_nll),
        n_iter=int(n_iter),
        converged=bool(converged),
        trace=[float(v) for v in trace],
        trace_iter=trace_iter,
    )
