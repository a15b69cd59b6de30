"""The extended prior's objective (sepkit.functional_ica) and its optimiser."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from sepkit.functional import linear_ivae_nll, segment_covariances
from sepkit.functional_ica import (
    _tanh_logcosh,
    block_samples,
    extended_ivae_terms,
    group_segments,
    log_normalizer,
)
from sepkit.methods.likelihood import _pair_newton


def _data(seed=0, n=4, n_segments=6, per=700):
    rng = np.random.default_rng(seed)
    scale = np.repeat(rng.uniform(0.5, 2.0, (n, n_segments)), per, axis=1)
    x = rng.laplace(size=(n, n_segments * per)) * scale + 0.2
    # Scattered codes: runs of random length, a code repeating in several runs.
    codes = np.repeat(rng.integers(0, n_segments, 60), per * n_segments // 60)
    codes[:n_segments] = np.arange(n_segments)  # every code present
    return x, codes, n_segments


def test_group_segments_match_torch():
    x, codes, n_seg = _data()
    seg = group_segments(x, codes, n_seg, chunk_samples=500)
    covs, means, counts = segment_covariances(torch.from_numpy(x), torch.from_numpy(codes), n_seg)
    np.testing.assert_allclose(seg.moments, covs.numpy(), atol=1e-12)
    np.testing.assert_allclose(seg.means, means.numpy(), atol=1e-12)
    np.testing.assert_array_equal(seg.counts, counts.numpy())
    xc = x - x.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(seg.total(), xc @ xc.T / x.shape[1], atol=1e-12)
    # The kept samples: each segment's, centred, one segment after another, in blocks
    # of at most 500 that tile them and say which segments each holds, from where.
    bounds = np.cumsum([0, *seg.counts]).astype(int)
    assert [a for a, *_ in seg.blocks] == list(range(0, x.shape[1], 500))
    assert [b for _, b, *_ in seg.blocks] == [*range(500, x.shape[1], 500), x.shape[1]]
    for a, b, segments, offsets in seg.blocks:
        assert offsets[0] == 0 and (np.diff(offsets) > 0).all()
        for u, start, stop in zip(segments, offsets, [*offsets[1:], b - a], strict=True):
            assert bounds[u] <= a + start and a + stop <= bounds[u + 1]
    for u in range(n_seg):
        got = np.sort(seg.samples[:, bounds[u] : bounds[u + 1]], axis=1)
        np.testing.assert_allclose(
            got, np.sort(x[:, codes == u] - means[u].numpy()[:, None], axis=1)
        )


def test_gaussian_objective_is_the_linear_ivae_likelihood():
    x, codes, n_seg = _data(1)
    W = np.eye(4) + 0.3 * np.random.default_rng(1).standard_normal((4, 4))
    got = extended_ivae_terms(W, group_segments(x, codes, n_seg), np.zeros(4))["loss"]
    covs, _, counts = segment_covariances(torch.from_numpy(x), torch.from_numpy(codes), n_seg)
    ref = float(linear_ivae_nll(torch.from_numpy(W), covs, counts / counts.sum()))
    # linear_ivae_nll holds the constants 0.5 n (log 2 pi + 1) that L(W) leaves out.
    np.testing.assert_allclose(got + 2.0 * (math.log(2 * math.pi) + 1.0), ref, rtol=1e-12)


def test_objective_by_hand():
    x, codes, n_seg = _data(2)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((4, 4))
    k = np.array([1.0, -1.0, 1.0, 0.0])
    got = extended_ivae_terms(W, group_segments(x, codes, n_seg, chunk_samples=999), k)
    # -log p(x|u) per sample, from the densities f_k((s - mu) / sigma) / sigma.
    y = W @ x
    total = -np.log(abs(np.linalg.det(W))) * x.shape[1]
    for u in range(n_seg):
        yu = y[:, codes == u]
        mu, sigma = yu.mean(axis=1, keepdims=True), yu.std(axis=1, keepdims=True)
        z = (yu - mu) / sigma
        total += (np.log(sigma) + 0.5 * z**2 + k[:, None] * np.log(np.cosh(z))).sum()
    # L(W) leaves out the 1/2 of every z^2 / 2 (it averages to 1/2 per source).
    np.testing.assert_allclose(got["loss"] + 2.0, total / x.shape[1], rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relative_gradient_matches_finite_differences(dtype):
    x, codes, n_seg = _data(3)
    seg = group_segments(x, codes, n_seg)
    W = np.eye(4) + 0.2 * np.random.default_rng(3).standard_normal((4, 4))
    k = np.array([1.0, -1.0, 1.0, 1.0])
    got = extended_ivae_terms(W, group_segments(x, codes, n_seg, dtype=dtype), k)["grad"]
    num, h = np.zeros((4, 4)), 1e-6
    for i in range(4):
        for j in range(4):
            E = np.zeros((4, 4))
            E[i, j] = h
            up = extended_ivae_terms((np.eye(4) + E) @ W, seg, k)["loss"]
            down = extended_ivae_terms((np.eye(4) - E) @ W, seg, k)["loss"]
            num[i, j] = (up - down) / (2 * h)
    np.testing.assert_allclose(got, num, atol=1e-8 if dtype == np.float64 else 1e-5)
    np.testing.assert_allclose(np.diag(got), 0.0, atol=1e-9)  # the scale is profiled out


def test_hessian_approximation_at_independent_sources():
    # At W = I on independent sources, the second derivative of L along E_ij
    # is E[g_i'] E[y_j^2] per segment; compare with finite differences of G.
    x, codes, n_seg = _data(4)
    seg = group_segments(x, codes, n_seg)
    k = np.ones(4)
    terms = extended_ivae_terms(np.eye(4), seg, k)
    h = 1e-5
    for i, j in [(0, 1), (2, 3), (3, 0)]:
        E = np.zeros((4, 4))
        E[i, j] = h
        up = extended_ivae_terms(np.eye(4) + E, seg, k)["grad"][i, j]
        down = extended_ivae_terms(np.eye(4) - E, seg, k)["grad"][i, j]
        assert abs((up - down) / (2 * h) - terms["hess"][i, j]) < 0.1 * terms["hess"][i, j]


def test_blocks_across_segments_give_the_same_terms():
    # Blocks of 1 to all samples (across segments, one of them empty) give the
    # same objective, gradient and Hessian as the float64 reference of 999.
    x, codes, n_seg = _data(9)
    codes[codes == 2] = 3  # segment 2 empty
    W = np.eye(4) + 0.2 * np.random.default_rng(9).standard_normal((4, 4))
    k = np.array([2.0, -1.0, 2.0, 0.0])
    ref = extended_ivae_terms(W, group_segments(x, codes, n_seg, chunk_samples=999), k)
    for chunk in (1, 37, 700, x.shape[1]):
        got = extended_ivae_terms(W, group_segments(x, codes, n_seg, chunk_samples=chunk), k)
        for key in ("loss", "grad", "hess", "super_score"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_logcosh_from_one_exponential(dtype):
    z = np.array([[0.0, 1e-6, -0.3, 2.0, -20.0, 60.0, -1e4], [5.0, -5.0, 0.7, -0.7, 1.0, 3.0, 0.1]])
    t, logcosh = _tanh_logcosh(z.astype(dtype))
    assert t.dtype == dtype and logcosh.dtype == np.float64
    np.testing.assert_allclose(
        t, np.tanh(z), rtol=2e-6 if dtype == np.float32 else 1e-14, atol=1e-7
    )
    # log cosh z + log 2, summed per row; cosh overflows at 1e4, so |z| + log1p(e^-2|z|).
    ref = (np.abs(z) + np.log1p(np.exp(-2 * np.abs(z)))).sum(axis=1)
    np.testing.assert_allclose(logcosh, ref, rtol=1e-7 if dtype == np.float32 else 1e-14)


def test_block_samples():
    assert [block_samples(n) for n in (1, 20, 40, 80, 256)] == [16384, 4096, 2048, 1024, 512]


def test_pair_newton_solves_the_blocks():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((3, 3))
    H = rng.uniform(1.5, 3.0, (3, 3))
    d = _pair_newton(g, H, 1e-2)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        block = np.array([[H[i, j], 1.0], [1.0, H[j, i]]])
        np.testing.assert_allclose(block @ [d[i, j], d[j, i]], [g[i, j], g[j, i]], rtol=1e-12)
    assert not np.diag(d).any()
    # A block with an eigenvalue below lambda_min is lifted, so -d descends.
    flat = _pair_newton(g, np.ones((3, 3)), 1e-2)
    assert np.sum(flat * g) > 0


@pytest.mark.parametrize("sign", [-1.0, 0.0, 1.0, 2.0])
def test_log_normalizer(sign):
    value, _ = quad(lambda z: math.exp(-0.5 * z * z - sign * math.log(math.cosh(z))), -50, 50)
    assert log_normalizer(sign) == pytest.approx(math.log(value), rel=1e-9)


def test_super_score_signs():
    rng = np.random.default_rng(6)
    n_times = 20000
    x = np.stack(
        [
            rng.laplace(size=n_times),
            rng.uniform(-1, 1, n_times),
            np.sin(np.arange(n_times) / 7.0),
        ]
    )
    codes = np.repeat(np.arange(4), n_times // 4)
    data = group_segments(x, codes, 4)
    score = extended_ivae_terms(np.eye(3), data, np.ones(3))["super_score"]
    assert score[0] > 0 and score[1] < 0 and score[2] < 0


def test_terms_need_the_samples():
    x, codes, n_seg = _data(7)
    moments_only = group_segments(x, codes, n_seg, keep_samples=False)
    gauss = extended_ivae_terms(np.eye(4), moments_only, np.zeros(4))
    assert np.isfinite(gauss["loss"])  # k = 0 reads the moments alone
    with pytest.raises(ValueError, match=r"needs the samples: group_segments\(keep_samples=True\)"):
        extended_ivae_terms(np.eye(4), moments_only, np.ones(4))


def test_a_source_silent_in_a_segment_keeps_the_objective_finite():
    # Noise-free data: the first source is exactly zero in segment 0, so at the
    # true unmixing its variance there is 0 and log m would be -inf.
    rng = np.random.default_rng(8)
    s = rng.laplace(size=(3, 3000))
    s[0, :1000] = 0.0
    codes = np.repeat(np.arange(3), 1000)
    data = group_segments(s, codes, 3)
    terms = extended_ivae_terms(np.eye(3), data, np.array([2.0, 2.0, -1.0]))
    assert np.isfinite(terms["loss"]) and np.isfinite(terms["grad"]).all()
    assert np.isfinite(terms["hess"]).all()
    # The floor enters the loss: 1/2 log(1e-12) for that source and segment.
    ref = extended_ivae_terms(np.eye(3), group_segments(s[:, 1000:], codes[1000:] - 1, 2),
                              np.array([2.0, 2.0, -1.0]))  # fmt: skip
    assert terms["loss"] < ref["loss"] - 4.0
    # Where a variance is floored the scale is no longer profiled out: the gradient's
    # diagonal is the loss's derivative in E_ii, not 0.
    h = 1e-6
    for i in range(3):
        E = np.zeros((3, 3))
        E[i, i] = h
        k = np.array([2.0, 2.0, -1.0])
        up = extended_ivae_terms(np.eye(3) + E, data, k)["loss"]
        down = extended_ivae_terms(np.eye(3) - E, data, k)["loss"]
        assert terms["grad"][i, i] == pytest.approx((up - down) / (2 * h), abs=1e-6)
    assert terms["grad"][0, 0] < -0.3  # segment 0 of 3 floored for source 0


def test_settled_rule():
    from sepkit.methods.likelihood import _settled

    assert not _settled([3.0, 2.0, 1.0])  # too few iterations to say
    assert _settled([5.0, 1.0 + 5e-9, 1.0 + 4e-9, 1.0 + 3e-9, 1.0 + 2e-9, 1.0 + 1e-9, 1.0])
    assert not _settled([5.0, 1.1, 1.08, 1.06, 1.04, 1.02, 1.0])
    # Relative to the objective's size above 1.
    assert _settled([9.0, 1e4 + 5e-5, 1e4 + 4e-5, 1e4 + 3e-5, 1e4 + 2e-5, 1e4 + 1e-5, 1e4])
