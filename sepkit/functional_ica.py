"""Stateless numpy math of the linear iVAE with the extended prior (``prior="extended"``).

The model: x = A s with, for source i in segment u, the density
p(s | u) = f_k((s - mu_iu) / sigma_iu) / sigma_iu, where mu_iu and sigma_iu are
the source's mean and standard deviation in that segment and f_k(z) is proportional to
exp(-z^2 / 2 - k log cosh z): for k = +1 a Gaussian times sech (super-Gaussian,
peaked), for k = -1 a Gaussian times cosh (sub-Gaussian, the mixture of two
Gaussians at +-1), for k = 0 a Gaussian. These are the densities of extended
infomax (Lee, Girolami & Sejnowski 1999, Neural Computation 11(2)); the segment
scale adds the iVAE's non-stationarity (Khemakhem et al. 2020, Eq. 7 with a
scale per segment u). With k = 0 the objective is the Gaussian linear iVAE of
:func:`sepkit.functional.linear_ivae_nll`.

With W the unmixing of whitened data x and y = W x, the negative
log-likelihood per sample is, up to constants of k,

    L(W) = -log|det W| + sum_u pi_u sum_i 1/2 log m_iu + 1/T sum_t sum_i k_i log cosh z_it,

m_iu = (W C_u W^T)_ii the variance of y_i in segment u (C_u the segment's
covariance of x), z_it = (y_it - mu_i,u(t)) / sqrt(m_i,u(t)) (the z^2 / 2 term
averages to 1/2 in every segment). The segment means mu_iu = w_i^T mean_u(x)
are those of the Gaussian model, whose constant-free objective this is at k = 0. Its relative gradient G (dL for W <- (I + E) W) is

    G = sum_u pi_u diag((1 - k c_u) / m_u) W C_u W^T + diag(k) E[tanh(z) y^T / sigma] - I,

with c_iu = mean over u of z tanh z. Everything but the middle term comes from
the segment moments; the middle term and the log cosh need one pass over the
samples, in chunks of ``chunk_samples`` (memory bounded by the chunk, not the
recording). G's diagonal is 0 (the scale is profiled out), as in picard's
relative-gradient form (Ablin, Cardoso & Gramfort 2018), whose approximation of
the Hessian, H_ij = E[g_i'] E[y_j^2], is given here per segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LOG2 = math.log(2.0)
# Samples per chunk of a pass: 16384 x 40 sources x 8 bytes = 5 MiB per array.
CHUNK_SAMPLES = 16384


@dataclass
class SegmentMoments:
    """The per-segment statistics of whitened data that the objective needs.

    Attributes
    ----------
    moments : ndarray, shape (n_segments, n_dims, n_dims)
        C_u, the segment's covariance about its mean (divided by its count).
    means : ndarray, shape (n_segments, n_dims)
        The segment's mean of x.
    counts : ndarray, shape (n_segments,)
        Samples per segment.
    weights : ndarray, shape (n_segments,)
        counts / n_times.
    """

    moments: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    weights: np.ndarray

    def total(self) -> np.ndarray:
        """Covariance of all samples, within plus between segments, shape (n_dims, n_dims)."""
        spread = self.means - self.weights @ self.means
        within = np.einsum("u,uab->ab", self.weights, self.moments)
        return within + np.einsum("u,ua,ub->ab", self.weights, spread, spread)


def segment_moments(x: np.ndarray, codes: np.ndarray, n_segments: int) -> SegmentMoments:
    """Mean and covariance of every segment of ``x``.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
    codes : ndarray of int, shape (n_times,)
        Segment of each sample, 0 .. n_segments - 1 (any order).
    n_segments : int

    Returns
    -------
    SegmentMoments
    """
    n = x.shape[0]
    counts = np.bincount(codes, minlength=n_segments).astype(np.float64)
    moments = np.zeros((n_segments, n, n))
    means = np.zeros((n_segments, n))
    # Samples grouped by segment; one segment's samples are copied at a time.
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts).astype(np.int64)])
    for u in range(n_segments):
        idx = order[bounds[u] : bounds[u + 1]]
        if idx.size:
            xs = x[:, idx] if idx[-1] - idx[0] + 1 != idx.size else x[:, idx[0] : idx[-1] + 1]
            means[u] = xs.mean(axis=1)
            centred = xs - means[u][:, None]
            moments[u] = centred @ centred.T / idx.size
    return SegmentMoments(moments, means, counts, counts / counts.sum())


def _segment_sums(values: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
    """Add the per-segment sums of ``values`` (n, L) to ``out`` (n, n_segments).

    Runs of equal consecutive codes (windows) are summed by ``np.add.reduceat``.
    """
    starts = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], starts])
    np.add.at(out, (slice(None), codes[starts]), np.add.reduceat(values, starts, axis=1))


def extended_ivae_terms(
    unmixing: np.ndarray,
    x: np.ndarray,
    codes: np.ndarray,
    seg: SegmentMoments,
    signs: np.ndarray,
    *,
    chunk_samples: int = CHUNK_SAMPLES,
) -> dict:
    """The objective L(W) of this module, its relative gradient and Hessian approximation.

    Parameters
    ----------
    unmixing : ndarray, shape (n, n)
        W, acting on whitened data.
    x : ndarray, shape (n, n_times)
        Whitened data; the pass over the samples computes in its dtype
        (float32 halves its time; the sums are kept in float64).
    codes : ndarray of int, shape (n_times,)
    seg : SegmentMoments
        :func:`segment_moments` of ``x`` and ``codes``.
    signs : ndarray, shape (n,)
        k per source: +1 super-Gaussian, -1 sub-Gaussian, 0 Gaussian. With
        every k 0 no pass over the samples is made.
    chunk_samples : int
        Samples per chunk of the pass.

    Returns
    -------
    dict
        ``loss`` (L(W), nats per sample up to constants; inf where W is
        singular), ``grad`` (G, shape (n, n)), ``hess`` (H, shape (n, n):
        H_ij approximates the second derivative of L in E_ij), ``super_score``
        (ndarray, shape (n,): E[sech^2 z] - E[z tanh z], positive for a
        super-Gaussian z, as in extended infomax's switch; zeros without a
        pass).
    """
    n, n_times = x.shape
    k = np.asarray(signs, dtype=np.float64)
    proj = seg.moments @ unmixing.T  # C_u W^T
    m = np.einsum("ia,uai->iu", unmixing, proj)  # m_iu = (W C_u W^T)_ii
    _, logdet = np.linalg.slogdet(unmixing)
    if not np.isfinite(logdet) or not (m > 0).all():
        return dict(loss=np.inf, grad=None, hess=None, super_score=np.zeros(n))
    loss = -logdet + 0.5 * float((np.log(m) @ seg.weights).sum())
    zt = np.zeros_like(m)  # sums over each segment of z tanh z
    tt = np.zeros_like(m)  # ... of tanh^2 z
    cross = np.zeros((n, n))  # sum over samples of tanh(z) y^T / sigma
    logcosh = np.zeros(n)
    if k.any():
        dtype = x.dtype
        inv_sigma = (1.0 / np.sqrt(m)).astype(dtype)
        source_means = (unmixing @ seg.means.T).astype(dtype)  # (n, n_segments)
        w = unmixing.astype(dtype)
        for a in range(0, n_times, chunk_samples):
            c = codes[a : a + chunk_samples]
            y = w @ x[:, a : a + chunk_samples]
            y -= source_means[:, c]
            scale = inv_sigma[:, c]
            z = y * scale
            az = np.abs(z)
            e = np.exp(-2.0 * az)  # tanh and log cosh from one exponential, without overflow
            logcosh += az.sum(axis=1, dtype=np.float64)
            logcosh += np.log1p(e).sum(axis=1, dtype=np.float64)
            t = 1.0 - e
            t /= 1.0 + e
            np.copysign(t, z, out=t)  # tanh z
            _segment_sums(z * t, c, zt)
            _segment_sums(t * t, c, tt)
            t *= scale
            cross += t @ y.T
        loss += float(k @ (logcosh / n_times - _LOG2))
    c_mean = zt / seg.counts  # E_u[z tanh z]
    sech_mean = 1.0 - tt / seg.counts  # E_u[sech^2 z]
    d = seg.weights * (1.0 - k[:, None] * c_mean) / m  # (n, U)
    wcw = unmixing @ proj  # W C_u W^T, shape (n_segments, n, n)
    grad = np.einsum("iu,uij->ij", d, wcw) + k[:, None] * cross / n_times - np.eye(n)
    curv = seg.weights * (1.0 - k[:, None] * (c_mean - sech_mean)) / m
    hess = curv @ m.T
    super_score = (sech_mean - c_mean) @ seg.weights if k.any() else np.zeros(n)
    return dict(loss=loss, grad=grad, hess=hess, super_score=super_score)


def log_normalizer(sign: float) -> float:
    """log of the integral of exp(-z^2 / 2 - k log cosh z) over z, for k in {-1, 0, 1}."""
    if sign == 0:
        return 0.5 * math.log(2 * math.pi)
    if sign < 0:  # exp(-z^2/2) cosh z integrates to sqrt(2 pi) e^(1/2)
        return 0.5 * math.log(2 * math.pi) + 0.5
    z = np.linspace(-40.0, 40.0, 160001)
    f = np.exp(-0.5 * z * z) / np.cosh(z)
    return math.log(float(f.sum() * (z[1] - z[0])))
