import math

import pytest
import torch
from torch.distributions import Laplace, Normal, kl_divergence

from sepkit import functional as F


def _params(seed=0, shape=(4, 3, 5)):
    g = torch.Generator().manual_seed(seed)
    mq = torch.randn(shape, generator=g, dtype=torch.float64)
    lvq = torch.randn(shape, generator=g, dtype=torch.float64) * 0.5
    mp = torch.randn(shape, generator=g, dtype=torch.float64)
    lvp = torch.randn(shape, generator=g, dtype=torch.float64) * 0.5
    return mq, lvq, mp, lvp


def test_gaussian_log_prob_matches_torch():
    x, lv, m, _ = _params()
    ref = Normal(m, torch.exp(0.5 * lv)).log_prob(x)
    torch.testing.assert_close(F.gaussian_log_prob(x, m, lv), ref)


def test_laplace_log_prob_matches_torch():
    x, ls, m, _ = _params(1)
    ref = Laplace(m, torch.exp(ls)).log_prob(x)
    torch.testing.assert_close(F.laplace_log_prob(x, m, ls), ref)


def test_kl_gaussian_matches_torch():
    mq, lvq, mp, lvp = _params(2)
    ref = kl_divergence(Normal(mq, torch.exp(0.5 * lvq)), Normal(mp, torch.exp(0.5 * lvp)))
    torch.testing.assert_close(F.kl_gaussian(mq, lvq, mp, lvp), ref)


def test_kl_gaussian_laplace_matches_monte_carlo():
    mq = torch.tensor([0.0, 1.5, -0.7], dtype=torch.float64)
    lvq = torch.tensor([0.0, -1.0, 0.8], dtype=torch.float64)
    mp = torch.tensor([0.0, 0.5, 0.3], dtype=torch.float64)
    lsp = torch.tensor([0.0, 0.3, -0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z = mq + torch.exp(0.5 * lvq) * torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    mc = (F.gaussian_log_prob(z, mq, lvq) - F.laplace_log_prob(z, mp, lsp)).mean(0)
    exact = F.kl_gaussian_laplace(mq, lvq, mp, lsp)
    torch.testing.assert_close(exact, mc, atol=5e-3, rtol=0)
    assert (exact > 0).all()


def test_kl_is_zero_for_identical_gaussians():
    m = torch.randn(10)
    lv = torch.randn(10)
    assert F.kl_gaussian(m, lv, m, lv).abs().max() < 1e-6


def test_reparameterize_moments():
    torch.manual_seed(0)
    mean = torch.full((200_000,), 2.0)
    logvar = torch.full((200_000,), math.log(0.25))
    z = F.reparameterize(mean, logvar)
    assert abs(z.mean().item() - 2.0) < 0.01
    assert abs(z.var().item() - 0.25) < 0.01


def test_negative_elbo_decomposes():
    x = torch.randn(2, 3, 7)
    xm = torch.randn(2, 3, 7)
    zm, zl = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    pm, pl = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    loss, nll, kl = F.negative_elbo(x, xm, torch.zeros(3, 1), zm, zl, pm, pl)
    torch.testing.assert_close(loss, nll + kl)
    n = 2 * 7
    torch.testing.assert_close(nll, -F.gaussian_log_prob(x, xm, torch.zeros(())).sum() / n)
    torch.testing.assert_close(kl, F.kl_gaussian(zm, zl, pm, pl).sum() / n)


def test_negative_elbo_rejects_unknown_prior():
    t = torch.zeros(1, 1, 1)
    with pytest.raises(ValueError, match="Invalid prior 'cauchy'"):
        F.negative_elbo(t, t, t, t, t, t, t, prior="cauchy")


def test_full_covariance_kl_matches_torch_multivariate_normal():
    from torch.distributions import MultivariateNormal

    g = torch.Generator().manual_seed(3)
    n = 4
    mean_q = torch.randn(n, generator=g, dtype=torch.float64)
    L = torch.tril(torch.randn(n, n, generator=g, dtype=torch.float64), -1)
    L = L + torch.diag(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    mean_p = torch.randn(n, generator=g, dtype=torch.float64)
    logvar_p = torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    marginal_logvar = torch.log((L**2).sum(-1))
    ours = F.kl_gaussian(mean_q, marginal_logvar, mean_p, logvar_p).sum()
    ours = ours + F.gaussian_total_correlation(marginal_logvar, torch.log(torch.diagonal(L)))
    ref = kl_divergence(
        MultivariateNormal(mean_q, scale_tril=L),
        MultivariateNormal(mean_p, covariance_matrix=torch.diag(torch.exp(logvar_p))),
    )
    torch.testing.assert_close(ours, ref)


def test_total_correlation_is_zero_for_diagonal_covariance():
    lv = torch.randn(5)
    assert F.gaussian_total_correlation(lv, 0.5 * lv).abs() < 1e-6


def test_flow_ivae_nll_by_hand():
    from sepkit.functional import flow_ivae_nll

    # Two segments of two samples, one dimension: variances 1 and 4, means 0 and 1.
    s = torch.tensor([[[-1.0], [1.0]], [[-1.0], [3.0]]])
    logdet = torch.tensor([[0.5, 0.5], [1.0, 2.0]])
    weights = torch.tensor([0.25, 0.75])
    expected = (
        0.5 * (0.25 * math.log(1.0) + 0.75 * math.log(4.0))
        + 0.5 * (math.log(2 * math.pi) + 1)
        - (0.25 * 0.5 + 0.75 * 1.5)
    )
    assert float(flow_ivae_nll(s, logdet, weights)) == pytest.approx(expected, rel=1e-6)
