"""Stateless torch math for the iVAE: log-densities, KL terms, reparameterisation.

Shapes are broadcast; every function reduces nothing unless it says so, so the
callers choose how to average over batch, time and dimensions.

References
----------
Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
nonlinear ICA: a unifying framework. AISTATS. (Eq. numbers below refer to it.)
"""

from __future__ import annotations

import math

from ._lazy import torch

_LOG_2PI = math.log(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Draw z = mean + sigma * eps, eps ~ N(0, I) (the reparameterisation trick)."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    return -0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def laplace_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log Laplace(x; loc, b) with b = exp(log_scale)."""
    return -math.log(2.0) - log_scale - (x - loc).abs() * torch.exp(-log_scale)


def kl_gaussian(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise closed-form KL( N(mean_q, var_q) || N(mean_p, var_p) ).

    This is the second term of the ELBO, eq. (5), for the Gaussian conditional
    prior p(z|u) of eq. (7) with T(z) = (z, z^2).
    """
    return 0.5 * (
        logvar_p
        - logvar_q
        + (torch.exp(logvar_q) + (mean_q - mean_p) ** 2) * torch.exp(-logvar_p)
        - 1.0
    )


def kl_gaussian_laplace(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, loc_p: torch.Tensor, log_scale_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise closed-form KL( N(mean_q, var_q) || Laplace(loc_p, b_p) ).

    KL = -H[q] - E_q[log p], with the Gaussian entropy
    H = 0.5 (log 2 pi e + logvar_q) and the folded-normal mean
    E|z - m| = sigma sqrt(2/pi) exp(-d^2 / 2 sigma^2) + d (1 - 2 Phi(-d / sigma)),
    d = mean_q - loc_p.
    """
    sigma = torch.exp(0.5 * logvar_q)
    d = mean_q - loc_p
    abs_mean = sigma * _SQRT_2_OVER_PI * torch.exp(-0.5 * (d / sigma) ** 2) + d * torch.erf(
        d / (sigma * math.sqrt(2.0))
    )
    neg_entropy = -0.5 * (_LOG_2PI + 1.0 + logvar_q)
    neg_expected_log_p = math.log(2.0) + log_scale_p + abs_mean * torch.exp(-log_scale_p)
    return neg_entropy + neg_expected_log_p


def gaussian_total_correlation(
    marginal_logvar: torch.Tensor, chol_diag_log: torch.Tensor
) -> torch.Tensor:
    """0.5 (sum_i log Sigma_ii - log det Sigma) for Sigma = L L^T, over the last dim.

    For a full-covariance Gaussian q and a factorised prior p, KL(q || p) is
    the sum of the per-dimension KLs of q's marginals plus this term (the
    total correlation of q, >= 0 by Hadamard's inequality). ``chol_diag_log``
    is log diag(L), so log det Sigma = 2 sum log L_ii.
    """
    return 0.5 * marginal_logvar.sum(-1) - chol_diag_log.sum(-1)


def negative_elbo(
    x: torch.Tensor,
    x_mean: torch.Tensor,
    x_logvar: torch.Tensor,
    z_mean: torch.Tensor,
    z_logvar: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_logscale: torch.Tensor,
    prior: str = "gauss",
    extra_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO of eq. (5), averaged over batch and time samples.

    -ELBO = -E_q[log p(x|z,u)] + KL(q(z|x,u) || p(z|u)), with one Monte Carlo
    sample for the first term (``x_mean`` is the decoder output for a
    reparameterised z) and the KL in closed form.

    Parameters
    ----------
    x, x_mean : Tensor, shape (batch, n_channels, n_times)
    x_logvar : Tensor, broadcastable to x
        Log observation-noise variance.
    z_mean, z_logvar : Tensor, shape (batch, n_sources, n_times)
        Encoder q(z|x,u).
    prior_mean, prior_logscale : Tensor, broadcastable to z_mean
        Conditional prior p(z|u): log-variance for ``prior="gauss"``, log of the
        Laplace scale b for ``prior="laplace"``.
    extra_kl : Tensor or None, shape (batch, n_times)
        Added to the KL, e.g. :func:`gaussian_total_correlation` for a
        full-covariance q (then ``z_logvar`` holds q's marginal log-variances).

    Returns
    -------
    loss, neg_log_lik, kl : Tensor (scalars)
        Each summed over channels / sources and averaged over batch and time.
    """
    n_points = x.shape[0] * x.shape[-1]
    neg_log_lik = -gaussian_log_prob(x, x_mean, x_logvar).sum() / n_points
    if prior == "gauss":
        kl = kl_gaussian(z_mean, z_logvar, prior_mean, prior_logscale)
    elif prior == "laplace":
        kl = kl_gaussian_laplace(z_mean, z_logvar, prior_mean, prior_logscale)
    else:  # validated by the callers; kept explicit so a typo cannot pass silently
        raise ValueError(f"Invalid prior {prior!r}; allowed are 'gauss' and 'laplace'.")
    kl = kl.sum()
    if extra_kl is not None:
        kl = kl + extra_kl.sum()
    kl = kl / n_points
    return neg_log_lik + kl, neg_log_lik, kl


def segment_covariances(
    x: torch.Tensor, codes: torch.Tensor, n_segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and covariances of ``x`` within each segment of u.

    Parameters
    ----------
    x : Tensor, shape (n_dims, n_times)
        Centred data.
    codes : Tensor of int, shape (n_times,)
        Segment code (0 .. n_segments - 1) of every sample.
    n_segments : int

    Returns
    -------
    covs : Tensor, shape (n_segments, n_dims, n_dims)
        Covariance about the segment's mean (divided by n_k, the maximum-likelihood
        estimate); zero for an empty segment.
    means : Tensor, shape (n_segments, n_dims)
    counts : Tensor, shape (n_segments,)
        Samples per segment, in ``x``'s dtype.
    """
    n_dims = x.shape[0]
    counts = torch.bincount(codes, minlength=n_segments)
    # Samples grouped by segment, then one centred matrix product per segment:
    # memory stays at one copy of x whatever n_dims.
    grouped = x[:, torch.argsort(codes, stable=True)]
    covs = torch.zeros(n_segments, n_dims, n_dims, dtype=x.dtype, device=x.device)
    means = torch.zeros(n_segments, n_dims, dtype=x.dtype, device=x.device)
    start = 0
    for k, n_k in enumerate(counts.tolist()):
        if n_k:
            seg = grouped[:, start : start + n_k]
            means[k] = seg.mean(dim=1)
            centred = seg - means[k][:, None]
            covs[k] = centred @ centred.T / n_k
            start += n_k
    counts = counts.to(x.dtype)
    return covs, means, counts


def linear_ivae_nll(
    unmixing: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """-log p(x|u) per sample of the linear, noiseless iVAE with a Gaussian prior.

    The model x = A s, s = W x with W = A^{-1} square, and the conditional
    prior p(s_i | u = k) = N(mu_ki, lambda_ki) of eq. (7). Its
    log-likelihood is log|det W| + sum_i log N(w_i^T x; mu_ki, lambda_ki);
    with the means and variances at their maximum, mu_ki = w_i^T m_k and
    lambda_ki = w_i^T C_k w_i (m_k, C_k the segment's mean and covariance),
    it becomes, per sample,

        -log p(x|u) = -log|det W| + 0.5 sum_k pi_k sum_i log(2 pi e lambda_ki),

    pi_k the fraction of samples in segment k. This is the iVAE's ELBO in the
    limit of zero observation noise, where the exact posterior is a point
    mass at W x, and the objective of Pham and Cardoso's (2001) separation of
    non-stationary sources. It only needs the (n_dims, n_dims) segment
    covariances, not the samples.

    Parameters
    ----------
    unmixing : Tensor, shape (n_dims, n_dims)
        W, one row per source.
    covs : Tensor, shape (n_segments, n_dims, n_dims)
        From :func:`segment_covariances`.
    weights : Tensor, shape (n_segments,)
        pi_k, summing to 1.

    Returns
    -------
    Tensor (scalar)
        Nats per sample.
    """
    variances = torch.einsum("ij,kjl,il->ki", unmixing, covs, unmixing)
    return profiled_gaussian_nll(variances, weights) - torch.linalg.slogdet(unmixing)[1]


def profiled_gaussian_nll(
    variances: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """-E log p(s|u) per sample, Gaussian sources at their segment means and variances.

    With the means and variances of eq. (7) at their maximum (the segment
    statistics of s), 0.5 sum_k pi_k sum_i log(2 pi e lambda_ki): the prior
    term shared by the noiseless iVAEs (:func:`linear_ivae_nll`,
    :func:`flow_ivae_nll`).

    Parameters
    ----------
    variances : Tensor, shape (n_segments, n_dims)
        lambda_ki.
    weights : Tensor, shape (n_segments,)
        pi_k, summing to 1.
    eps : float
        Floor of the variances: a segment in which a source is exactly zero (a
        tiny last window) must not send the objective to -inf; it is far below
        unit variance.
    """
    log_var = torch.log(variances.clamp(min=eps))
    n_dims = variances.shape[-1]
    return 0.5 * (weights[:, None] * log_var).sum() + 0.5 * n_dims * (_LOG_2PI + 1.0)


def gengauss_ivae_nll(
    unmixing: torch.Tensor,
    x: torch.Tensor,
    codes: torch.Tensor,
    counts: torch.Tensor,
    shape: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """-log p(x|u) per sample of the linear, noiseless iVAE with a generalised Gaussian prior.

    As :func:`linear_ivae_nll`, with the conditional prior of each source a
    generalised Gaussian of shape beta_i (the same in every segment) and a
    scale a_ki per segment,

        p(s_i | u = k) = beta_i / (2 a_ki Gamma(1/beta_i)) exp(-|s_i|^beta_i / a_ki^beta_i):

    the conditionally factorial exponential family of eq. (7) with one
    sufficient statistic T_i(s) = |s|^beta_i and natural parameter
    -a_ki^-beta_i. beta = 2 is a zero-mean Gaussian, beta = 1 the Laplace;
    beta < 2 fits heavy tails (blinks, ECG), beta > 2 flat ones (line noise).
    A source whose scale changes between segments is identifiable by that
    (Thm. 1); one whose scale does not, by beta != 2, as in ICA. With the
    scales at their maximum, a_ki^beta_i = beta_i m_ki, m_ki the segment mean
    of |s_i|^beta_i, per sample

        -log p(x|u) = -log|det W| + sum_k pi_k sum_i [log(2 Gamma(1/beta_i) / beta_i)
                      + log(beta_i m_ki) / beta_i + 1 / beta_i].

    At beta = 2 this is :func:`linear_ivae_nll` on the segments' second
    moments about zero (the sources' segment means fixed at 0). Unlike it,
    this needs the samples, not only the segment covariances.

    Parameters
    ----------
    unmixing : Tensor, shape (n_dims, n_dims)
        W, one row per source.
    x : Tensor, shape (n_dims, n_times)
        Centred, whitened data.
    codes : Tensor of int, shape (n_times,)
        Segment code (0 .. n_segments - 1) of every sample; no segment empty.
    counts : Tensor, shape (n_segments,)
        Samples per segment, in ``x``'s dtype.
    shape : Tensor, shape (n_dims,)
        beta_i > 0.
    eps : float
        |s|^beta is computed as (s^2 + eps)^(beta / 2), smooth at 0 for beta <= 1.

    Returns
    -------
    Tensor (scalar)
        Nats per sample.
    """
    return _gengauss_terms(unmixing, x, codes, counts, shape, eps)["nll"]


def _gengauss_terms(unmixing, x, codes, counts, shape, eps) -> dict:
    """The value of :func:`gengauss_ivae_nll` and the pieces its gradients reuse."""
    sources = unmixing @ x
    q = sources * sources + eps
    log_q = torch.log(q)
    power = torch.exp(0.5 * shape[:, None] * log_q)  # |s|^beta

    def segment_mean(values):
        total = torch.zeros(sources.shape[0], counts.shape[0], dtype=x.dtype, device=x.device)
        return total.index_add_(1, codes, values) / counts

    # The floor is as linear_ivae_nll's: a source exactly zero in a segment.
    m = segment_mean(power).clamp(min=1e-12)
    beta = shape[:, None]
    weights = counts / counts.sum()
    log_norm = (math.log(2.0) + torch.lgamma(1.0 / shape) - torch.log(shape))[:, None]
    log_bm = torch.log(beta * m)
    nll = (weights * (log_norm + log_bm / beta + 1.0 / beta)).sum()
    return dict(
        nll=nll - torch.linalg.slogdet(unmixing)[1],
        sources=sources,
        q=q,
        log_q=log_q,
        power=power,
        m=m,
        log_bm=log_bm,
        weights=weights,
        segment_mean=segment_mean,
    )


def gengauss_ivae_nll_and_grad(
    unmixing: torch.Tensor,
    x: torch.Tensor,
    codes: torch.Tensor,
    counts: torch.Tensor,
    shape: torch.Tensor,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`gengauss_ivae_nll` with its gradients in closed form (no autograd graph).

    With N samples, s = W x, q = s^2 + eps, a = q^(beta/2) and m_ki the
    segment means of a, the per-sample objective's gradients are

        d/dW      = G x^T - W^-T,   G_it = s_it a_it / (N q_it m_k(t)i),
        d/dbeta_i = sum_k pi_k [-psi(1/beta)/beta^2 - 1/beta - log(beta m_ki)/beta^2
                    + (1/beta + mb_ki / m_ki)/beta - 1/beta^2],

    psi the digamma function and mb_ki the segment mean of a log(q) / 2. It
    takes about two thirds of the time of backpropagating through
    :func:`gengauss_ivae_nll` (whose value it returns): 152 against 230 ms for
    16 sources x 153600 samples on one CPU thread.

    Returns
    -------
    nll : Tensor (scalar)
    grad_unmixing : Tensor, shape (n_dims, n_dims)
    grad_shape : Tensor, shape (n_dims,)
    """
    with torch.no_grad():
        t = _gengauss_terms(unmixing, x, codes, counts, shape, eps)
        sources, q, power, m, beta = t["sources"], t["q"], t["power"], t["m"], shape[:, None]
        m_shape = t["segment_mean"](0.5 * power * t["log_q"])
        g = sources * power / (q * m[:, codes] * x.shape[1])
        grad_unmixing = g @ x.T - torch.linalg.inv(unmixing).T
        d_log_norm = (-torch.digamma(1.0 / shape) / shape**2 - 1.0 / shape)[:, None]
        d_terms = (
            d_log_norm - t["log_bm"] / beta**2 + (1.0 / beta + m_shape / m) / beta - 1.0 / beta**2
        )
        grad_shape = (t["weights"] * d_terms).sum(dim=1)
    return t["nll"], grad_unmixing, grad_shape


def odd_power_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """Stack x, x^3/3, ..., x^(2 degree + 1)/(2 degree + 1) along the first axis.

    Parameters
    ----------
    x : Tensor, shape (n_channels, n_times)
    degree : int

    Returns
    -------
    Tensor, shape ((degree + 1) * n_channels, n_times)
        The terms of :func:`sensor_unwarp`, so that its output is a linear
        map of these features.
    """
    return torch.cat([x ** (2 * k + 1) / (2 * k + 1) for k in range(degree + 1)], dim=0)


def sensor_unwarp(x: torch.Tensor, coefs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h(x) = x + sum_k c_k x^(2k+1) / (2k+1) per channel, and its derivative.

    With every c_k >= 0, h is odd, increasing and expansive: the inverse of
    a compressive, symmetric sensor nonlinearity such as an amplifier's soft
    clip L tanh(y / L), whose inverse L atanh(x / L) = x + x^3 / (3 L^2) +
    x^5 / (5 L^4) + ... has exactly this form.

    Parameters
    ----------
    x : Tensor, shape (n_channels, n_times)
        Standardised sensor data.
    coefs : Tensor, shape (n_channels, degree)
        c_1 .. c_degree per channel, >= 0.

    Returns
    -------
    h, dh : Tensor, shape (n_channels, n_times)
    """
    degree = coefs.shape[1]
    if degree == 0:
        return x.clone(), torch.ones_like(x)
    # Horner's scheme in x^2 with fused multiply-adds: h = x (1 + x^2 (c1/3 +
    # x^2 (c2/5 + ...))), h' = 1 + x^2 (c1 + x^2 (c2 + ...)). Nine passes over
    # the data for degree 3 instead of about twenty (the cost of this function
    # is memory traffic: 1.6 s -> 0.6 s for 64 channels x 10 min at 256 Hz).
    x2 = x * x
    p = coefs[:, degree - 1 :] / (2 * degree + 1)
    q = coefs[:, degree - 1 :]
    for k in range(degree - 2, -1, -1):
        p = torch.addcmul(coefs[:, k : k + 1] / (2 * k + 3), p, x2)
        q = torch.addcmul(coefs[:, k : k + 1], q, x2)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.addcmul(one, p, x2) * x, torch.addcmul(one, q, x2)


def sensor_warp(
    y: torch.Tensor, coefs: torch.Tensor, n_iter: int = 50, tol: float = 1e-12
) -> torch.Tensor:
    """The inverse of :func:`sensor_unwarp`: x with h(x) = y, per element.

    h is odd and convex on x >= 0, so Newton's method started at an upper
    bound (|y|, as h(x) >= x, or a tighter one below) decreases monotonically
    to the root. A time
    sample leaves the iteration once every channel's Newton step is below
    ``tol`` (relative to 1 + |x|): small values settle in a few steps, and
    only the few large ones (a clipped blink) need many, so a recording costs
    a few passes instead of ``n_iter`` (35 s -> 2 s for ``apply`` on 32
    channels x 10 min at 256 Hz).

    Parameters
    ----------
    y : Tensor, shape (n_channels, n_times)
    coefs : Tensor, shape (n_channels, degree)
        As in :func:`sensor_unwarp`.
    n_iter : int
        Newton steps at most.
    tol : float
        Relative step size below which an element counts as settled.

    Returns
    -------
    x : Tensor, shape (n_channels, n_times)
    """
    a = y.abs()
    x = a.clone()
    # Every term of h is >= 0 on x >= 0, so each bounds the root from above
    # too: c_k x^(2k+3) / (2k+3) <= a. For large a the highest power's bound is
    # far tighter than a itself, and Newton needs a handful of steps from it.
    for k in range(coefs.shape[1]):
        c = coefs[:, k : k + 1]
        bound = ((2 * k + 3) * a / c.clamp(min=1e-300)) ** (1.0 / (2 * k + 3))
        x = torch.where(c > 0, torch.minimum(x, bound), x)
    active = None  # every time sample, until most have settled
    for _ in range(n_iter):
        xa = x if active is None else x[:, active]
        h, dh = sensor_unwarp(xa, coefs)
        step = (h - (a if active is None else a[:, active])) / dh
        moving = (step.abs() > tol * (1.0 + xa.abs())).any(dim=0)
        if active is None:
            x -= step
            if not moving.any():
                break
            # Gathering columns costs about as much as a pass over them, so
            # the iteration narrows to the moving ones only once most stop.
            if moving.double().mean() < 0.5:
                active = torch.nonzero(moving).squeeze(1)
        else:
            x[:, active] = xa - step
            active = active[moving]
            if active.numel() == 0:
                break
    return torch.sign(y) * x


def unwarp_feature_map(coefs: torch.Tensor) -> torch.Tensor:
    """E with sensor_unwarp(x, coefs)[0] = E @ odd_power_features(x, degree).

    Parameters
    ----------
    coefs : Tensor, shape (n_channels, degree)

    Returns
    -------
    Tensor, shape (n_channels, (degree + 1) * n_channels)
    """
    n_channels, degree = coefs.shape
    blocks = [torch.eye(n_channels, dtype=coefs.dtype, device=coefs.device)]
    blocks += [torch.diag(coefs[:, k]) for k in range(degree)]
    return torch.cat(blocks, dim=1)


def pack_covariances(covs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper triangles of symmetric matrices, off-diagonal entries doubled.

    With ``packed, index = pack_covariances(C)``,
    ``packed @ (m[index[0]] * m[index[1]])`` is ``m^T C_k m`` for every k:
    the quadratic forms of :func:`post_nonlinear_ivae_nll` as one matrix
    product over half the entries (2.5x faster, forward and backward, than
    the einsum over full matrices for 256 x 256 feature covariances).

    Parameters
    ----------
    covs : Tensor, shape (n_segments, n_features, n_features)
        Symmetric.

    Returns
    -------
    packed : Tensor, shape (n_segments, n_features * (n_features + 1) // 2)
    index : Tensor of int, shape (2, n_features * (n_features + 1) // 2)
        Row and column of each packed entry.
    """
    n_features = covs.shape[-1]
    index = torch.triu_indices(n_features, n_features, device=covs.device)
    weight = torch.where(index[0] == index[1], 1.0, 2.0).to(covs.dtype)
    return covs[:, index[0], index[1]] * weight, index


def post_nonlinear_ivae_nll(
    unmixing: torch.Tensor,
    log_coefs: torch.Tensor,
    feature_covs: torch.Tensor,
    feature_total_cov: torch.Tensor,
    weights: torch.Tensor,
    sq_quantiles: torch.Tensor,
    n_sources: int,
    noise_floor: float = 1e-4,
) -> torch.Tensor:
    """-log p(x|u) per sample of the post-nonlinear, noiseless linear iVAE.

    The model: y = h(x) channel by channel (:func:`sensor_unwarp`, the inverse
    of the sensors' nonlinearity), s = W y with W square; the first
    ``n_sources`` rows of W are the sources with the Gaussian conditional
    prior of eq. (7) (per-segment means and variances at their maximum, as
    in :func:`linear_ivae_nll`), the other rows stationary Gaussian noise.
    The change of variables adds -sum_c log h_c'(x_c), averaged over the data.
    An isotropic ``noise_floor`` on y keeps the likelihood bounded when the
    data have a null direction (an average reference).

    Parameters
    ----------
    unmixing : Tensor, shape (n_channels, n_channels)
    log_coefs : Tensor, shape (n_channels, degree)
        log c of :func:`sensor_unwarp`.
    feature_covs : Tensor, shape (n_segments, n_features, n_features), or tuple
        Segment covariances of :func:`odd_power_features` of the data, or
        the same packed by :func:`pack_covariances` (faster; the fit passes
        them so).
    feature_total_cov : Tensor, shape (n_features, n_features)
        Their covariance over all samples.
    weights : Tensor, shape (n_segments,)
        Fraction of samples per segment.
    sq_quantiles : Tensor, shape (n_channels, n_bins)
        x^2 per channel summarised by equal-count bins (bin means): the
        log-Jacobian only depends on x^2, and its mean over the bins stands
        for the mean over samples.
    n_sources : int
    noise_floor : float

    Returns
    -------
    Tensor (scalar)
        Nats per sample (of the standardised data).
    """
    n_channels, degree = log_coefs.shape
    coefs = torch.exp(log_coefs)
    M = unmixing @ unwarp_feature_map(coefs)  # s as a linear map of the features
    floor = noise_floor * (unmixing**2).sum(dim=1)
    src = M[:n_sources]
    if isinstance(feature_covs, tuple):
        packed, index = feature_covs
        quad = packed @ (src[:, index[0]] * src[:, index[1]]).T
    else:
        quad = torch.einsum("ia,kab,ib->ki", src, feature_covs, src)
    seg_var = quad + floor[:n_sources]
    noise = M[n_sources:]
    noise_var = torch.einsum("ia,ab,ib->i", noise, feature_total_cov, noise) + floor[n_sources:]
    powers = torch.stack([sq_quantiles ** (k + 1) for k in range(degree)], dim=1)
    log_jac = torch.log1p((coefs[:, :, None] * powers).sum(dim=1)).mean(dim=1).sum()
    return (
        0.5 * (weights[:, None] * torch.log(seg_var)).sum()
        + 0.5 * torch.log(noise_var).sum()
        + 0.5 * n_channels * (_LOG_2PI + 1.0)
        - torch.linalg.slogdet(unmixing)[1]
        - log_jac
    )


def flow_ivae_nll(
    sources: torch.Tensor, logdet: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """-log p(x|u) per sample of the noiseless iVAE with an invertible decoder.

    The nonlinear counterpart of :func:`linear_ivae_nll`: with x = f(s), f
    invertible and g = f^{-1}, the change of variables gives
    log p(x|u) = log p(g(x)|u) + log|det J_g(x)|, the iVAE's ELBO in the limit
    of zero observation noise (the posterior a point mass at g(x)). Under the
    Gaussian conditional prior of eq. (7) with its means and variances at
    their maximum (the segment means and variances of g(x)),

        -log p(x|u) = 0.5 sum_k pi_k sum_i log(2 pi e lambda_ki) - E log|det J_g(x)|.

    Parameters
    ----------
    sources : Tensor, shape (n_segments, n_per_segment, n_dims)
        g(x) for a batch with the same number of samples from every segment.
    logdet : Tensor, shape (n_segments, n_per_segment)
        log|det J_g(x)| of the same samples.
    weights : Tensor, shape (n_segments,)
        pi_k, the share of the recording's samples in segment k (sums to 1).
    eps : float
        Floor of the segment variances.

    Returns
    -------
    Tensor, shape ()
        Nats per sample.
    """
    mean = sources.mean(dim=1)
    var = (sources * sources).mean(dim=1) - mean * mean
    # Every segment's own logdet, weighted as its samples are in the recording.
    return profiled_gaussian_nll(var, weights, eps) - (weights * logdet.mean(dim=1)).sum()
