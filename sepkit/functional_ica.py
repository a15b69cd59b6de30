"""Stateless numpy math of the linear iVAE with the extended prior (``prior="extended"``).

The model: x = A s with, for source i in segment u, the density
p(s | u) = f_k((s - mu_iu) / sigma_iu) / sigma_iu, where mu_iu and sigma_iu are
the source's mean and standard deviation in that segment and f_k(z) is
proportional to exp(-z^2 / 2 - k log cosh z): for k = 2 a Gaussian times sech^2
(super-Gaussian, peaked), for k = -1 a Gaussian times cosh (sub-Gaussian, the
mixture of two Gaussians at +-1), for k = 0 a Gaussian. The first two are the
densities of extended infomax (Lee, Girolami & Sejnowski 1999, Neural
Computation 11(2)); the segment scale adds the iVAE's non-stationarity
(Khemakhem et al. 2020, Eq. 7 with a mean and scale per segment u). The means
and scales are set to the segment's moments (the maximum-likelihood values at
k = 0, a plug-in otherwise), so with k = 0 the objective is the Gaussian linear
iVAE of :func:`sepkit.functional.linear_ivae_nll`.

With W the unmixing of whitened data x and y = W x, the negative
log-likelihood per sample is, up to constants of k,

    L(W) = -log|det W| + sum_u pi_u sum_i 1/2 log m_iu + 1/T sum_t sum_i k_i log cosh z_it,

m_iu = (W C_u W^T)_ii the variance of y_i in segment u (C_u the segment's
covariance of x), z_it = (y_it - mu_i,u(t)) / sqrt(m_i,u(t)), mu_iu =
w_i^T mean_u(x) (the z^2 / 2 term averages to 1/2 in every segment). Its
relative gradient G (dL for W <- (I + E) W) is

    G = sum_u pi_u diag((1 - k c_u) / m_u) W C_u W^T + diag(k) E[tanh(z) y^T / sigma] - I,

with c_iu = mean over u of z tanh z. Everything but the middle term comes from
the segment moments; the middle term and the log cosh need one pass over the
samples, in blocks of at most ``chunk_samples`` (across segments). G's
diagonal is 0 (the scale is profiled out) unless a variance is floored. This
is the relative-gradient form of picard (Ablin, Cardoso & Gramfort 2018),
whose Hessian approximation, H_ij = E[g_i'] E[y_j^2], is computed here per
segment.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_LOG2 = math.log(2.0)
# Floor of a source's variance in a segment (whitened data: unit variance overall).
VARIANCE_FLOOR = 1e-12
# Elements (sources x samples) per block of a pass: about 400 KiB per float32 array,
# which stays in a core's cache. Timed on the 2-core AMD EPYC dev machine (one thread,
# 2026-12-07): at 80 sources blocks of 1024 samples passed 12 % faster than of 4096, at
# 20 sources 4096 passed 23 % faster than 1024; at 40, 2048 and 4096 were level.
BLOCK_ELEMENTS = 98304


def block_samples(n_dims: int) -> int:
    """Samples per block of a pass for ``n_dims`` sources: a power of 2, 512-16384."""
    return int(np.clip(2 ** round(math.log2(BLOCK_ELEMENTS / max(n_dims, 1))), 512, 16384))


@dataclass
class SegmentData:
    """Whitened data grouped by segment, and the statistics the objective needs.

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
    samples : ndarray, shape (n_dims, n_times) or None
        x minus its segment's mean, the samples of one segment next to each
        other, segment after segment (the objective is a sum over samples, so
        their order is free); None when not kept.
    blocks : list of tuple
        ``(start, stop, segments, offsets)`` of consecutive blocks of
        ``samples``, each at most ``chunk_samples`` long and spanning one or
        more segments: ``segments`` (ndarray of int) are those the block
        holds, in order, and ``offsets`` (ndarray of int) where each begins,
        from ``start`` (``offsets[0] == 0``).
    """

    moments: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    weights: np.ndarray
    samples: np.ndarray | None
    blocks: list

    def total(self) -> np.ndarray:
        """Covariance of all samples, within plus between segments, shape (n_dims, n_dims)."""
        spread = self.means - self.weights @ self.means
        within = np.einsum("u,uab->ab", self.weights, self.moments)
        return within + np.einsum("u,ua,ub->ab", self.weights, spread, spread)


def group_segments(
    x: np.ndarray,
    codes: np.ndarray,
    n_segments: int,
    *,
    dtype=np.float64,
    keep_samples: bool = True,
    chunk_samples: int | None = None,
) -> SegmentData:
    """Mean and covariance of every segment of ``x``, and its samples grouped by segment.

    Parameters
    ----------
    x : ndarray, shape (n_dims, n_times)
    codes : ndarray of int, shape (n_times,)
        Segment of each sample, 0 .. n_segments - 1 (any order).
    n_segments : int
    dtype : numpy dtype
        Of the kept samples: the pass over them computes in it (float32
        halves its time; the statistics stay float64).
    keep_samples : bool
        Keep the grouped, segment-centred copy of ``x`` (needed for any
        non-zero k in :func:`extended_ivae_terms`).
    chunk_samples : int or None
        Longest block of the pass; None: :func:`block_samples` of ``n_dims``.

    Returns
    -------
    SegmentData
    """
    n, n_times = x.shape
    if chunk_samples is None:
        chunk_samples = block_samples(n)
    counts = np.bincount(codes, minlength=n_segments).astype(np.float64)
    moments = np.zeros((n_segments, n, n))
    means = np.zeros((n_segments, n))
    samples = np.empty((n, n_times), dtype=dtype) if keep_samples else None
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts).astype(np.int64)])
    for u in range(n_segments):
        a, b = bounds[u], bounds[u + 1]
        if a == b:
            continue
        idx = order[a:b]
        # A window's samples are consecutive: a slice, not a gathered copy.
        xs = x[:, idx[0] : idx[-1] + 1] if idx[-1] - idx[0] + 1 == idx.size else x[:, idx]
        means[u] = xs.mean(axis=1)
        centred = xs - means[u][:, None]
        moments[u] = centred @ centred.T / idx.size
        if samples is not None:
            samples[:, a:b] = centred
    blocks = _blocks(bounds, n_times, chunk_samples)
    return SegmentData(moments, means, counts, counts / counts.sum(), samples, blocks)


def _blocks(bounds: np.ndarray, n_times: int, chunk_samples: int) -> list:
    """Blocks of at most ``chunk_samples`` of the grouped samples, across segments.

    Across, not within: EEG windows hold a few hundred samples (128 in a 1 s
    window at 128 Hz), and one block per window makes a pass of many small
    products and many Python steps.
    """
    nonempty = np.flatnonzero(np.diff(bounds) > 0)
    starts = bounds[nonempty]
    blocks = []
    for a in range(0, n_times, chunk_samples):
        b = min(a + chunk_samples, n_times)
        first = np.searchsorted(starts, a, side="right") - 1
        last = np.searchsorted(starts, b, side="left")
        segments = nonempty[first:last]
        offsets = np.maximum(starts[first:last], a) - a
        blocks.append((a, b, segments, offsets))
    return blocks


def extended_ivae_terms(unmixing: np.ndarray, data: SegmentData, signs: np.ndarray) -> dict:
    """The objective L(W) of this module, its relative gradient and Hessian approximation.

    Parameters
    ----------
    unmixing : ndarray, shape (n, n)
        W, acting on whitened data.
    data : SegmentData
        :func:`group_segments` of the whitened data.
    signs : ndarray, shape (n,)
        k per source: > 0 super-Gaussian, < 0 sub-Gaussian, 0 Gaussian. With
        every k 0 no pass over the samples is made.

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
    n = unmixing.shape[0]
    k = np.asarray(signs, dtype=np.float64)
    proj = data.moments @ unmixing.T  # C_u W^T
    m = np.einsum("ia,uai->iu", unmixing, proj)  # m_iu = (W C_u W^T)_ii
    _, logdet = np.linalg.slogdet(unmixing)
    if not np.isfinite(logdet) or not np.isfinite(m).all():
        return dict(loss=np.inf, grad=None, hess=None, super_score=np.zeros(n))
    # A source that is exactly zero in a segment (noise-free data) sends log m to
    # -inf: the variances are floored, as in sepkit.functional.profiled_gaussian_nll,
    # and a floored variance no longer moves the objective.
    active = m > VARIANCE_FLOOR
    m = np.maximum(m, VARIANCE_FLOOR)
    loss = -logdet + 0.5 * float((np.log(m) @ data.weights).sum())
    zt = np.zeros_like(m)  # sums over each segment of z tanh z
    tt = np.zeros_like(m)  # ... of tanh^2 z
    cross = np.zeros((n, n))  # sum over samples of tanh(z) y^T / sigma
    if k.any():
        if data.samples is None:
            raise ValueError(
                "extended_ivae_terms needs the samples: group_segments(keep_samples=True)."
            )
        dtype = data.samples.dtype
        inverse = (1.0 / np.sqrt(m)).astype(dtype)  # 1 / sigma_iu
        w = unmixing.astype(dtype)
        logcosh = np.zeros(n)
        for a, b, segments, offsets in data.blocks:
            y = w @ data.samples[:, a:b]  # the centred sources
            lengths = np.diff(offsets, append=b - a)
            scale = np.repeat(inverse[:, segments], lengths, axis=1)
            z = y * scale
            t, block_logcosh = _tanh_logcosh(z)
            logcosh += block_logcosh
            # Sums per segment in float64: a window holds up to thousands of samples.
            zt[:, segments] += np.add.reduceat(t * z, offsets, axis=1, dtype=np.float64)
            tt[:, segments] += np.add.reduceat(t * t, offsets, axis=1, dtype=np.float64)
            t *= scale  # tanh(z_i) / sigma_i
            cross += t @ y.T
        loss += float(k @ (logcosh / data.counts.sum() - _LOG2))
    c_mean = zt / data.counts  # E_u[z tanh z]
    sech_mean = 1.0 - tt / data.counts  # E_u[sech^2 z]
    d = active * data.weights * (1.0 - k[:, None] * c_mean) / m  # (n, U)
    # sum_u d_iu (W C_u W^T)_ij = sum_a [sum_u d_iu (C_u W^T)_ai] W_ja: one pass over the
    # segments' n x n blocks instead of a product with each (U n^2 + n^3, not U n^3).
    moment_grad = np.einsum("iu,uai->ia", d, proj) @ unmixing.T
    grad = moment_grad + k[:, None] * cross / data.counts.sum() - np.eye(n)
    # G_ii = -sum_u pi_u (1 - k_i c_iu) over the floored segments alone: 0 where none is
    # (the scale is profiled out). Computed as a difference, its two sums of z tanh z
    # (the cross term's and c's) would leave the float32 pass's rounding.
    np.fill_diagonal(grad, -((~active) * data.weights * (1.0 - k[:, None] * c_mean)).sum(axis=1))
    curv = data.weights * (1.0 - k[:, None] * (c_mean - sech_mean)) / m
    hess = curv @ m.T
    super_score = (sech_mean - c_mean) @ data.weights if k.any() else np.zeros(n)
    return dict(loss=loss, grad=grad, hess=hess, super_score=super_score)


def _tanh_logcosh(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tanh(z) and the row sums of log cosh(z) + log 2, from one exponential.

    With e = exp(-2|z|): log cosh z = |z| + log(1 + e) - log 2 and tanh z =
    sign(z) (2 / (1 + e) - 1), so one ``exp`` serves both, computed in place
    in z's dtype. ``log(1 + e)`` rather than ``log1p(e)``: numpy's float32
    ``log1p`` is not vectorised (4.5x the time of ``log`` on the 2-core AMD EPYC
    dev machine, half of the whole pass), and rounding 1 + e (e <= 1) costs at most 6e-8 per
    sample, below the float32 pass's own rounding.

    Parameters
    ----------
    z : ndarray, shape (n, n_block)

    Returns
    -------
    tanh : ndarray, shape (n, n_block)
        In z's dtype.
    logcosh : ndarray, shape (n,)
        Sum over the block of log cosh(z) + log 2, float64.
    """
    d = np.abs(z)
    logcosh = d.sum(axis=1, dtype=np.float64)
    d *= -2.0
    np.exp(d, out=d)
    d += 1.0  # 1 + e
    t = np.divide(2.0, d)
    t -= 1.0
    np.copysign(t, z, out=t)
    np.log(d, out=d)
    logcosh += d.sum(axis=1, dtype=np.float64)
    return t, logcosh


@functools.lru_cache(maxsize=16)
def log_normalizer(k: float) -> float:
    """log of the integral of exp(-z^2 / 2 - k log cosh z) over z (k >= -1)."""
    if k == 0:
        return 0.5 * math.log(2 * math.pi)
    if k == -1:  # exp(-z^2/2) cosh z integrates to sqrt(2 pi) e^(1/2)
        return 0.5 * math.log(2 * math.pi) + 0.5
    # The integrand is below exp(-z^2/2) cosh(z)^-k <= e^(-z^2/2 + |k z|): gone by |z| = 40.
    z = np.linspace(-40.0, 40.0, 160001)
    f = np.exp(-0.5 * z * z - k * (np.abs(z) + np.log1p(np.exp(-2 * np.abs(z))) - _LOG2))
    return math.log(float(f.sum() * (z[1] - z[0])))
