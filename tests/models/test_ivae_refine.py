"""Tempered-MAP refinement of the posterior mean, batch-size ramp and KL warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sepkit.train as train_mod
from sepkit import IVAESeparator
from sepkit.datasets import make_nonlinear_ica
from sepkit.models import IVAE


def _linear_model(prior="gauss"):
    torch.manual_seed(0)
    # n_layers=1: encoder and decoder are single linear maps (per sample).
    model = IVAE(4, 3, n_segments=5, n_layers=1, prior=prior, posterior="full")
    with torch.no_grad():
        model.noise_logvar.copy_(torch.log(torch.tensor([[0.1], [0.2], [0.05], [0.3]])))
        model.prior_net.table.weight.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("weight", [1.0, 0.05])
def test_refine_reaches_the_tempered_map_of_a_linear_decoder(weight):
    model = _linear_model().double()  # float64: the accept test is exact near the optimum
    x = torch.randn(2, 4, 30, dtype=torch.float64)
    u = torch.randint(5, (2, 30))
    z0 = model.encode(x, u)[0]
    z = model.refine_sources(x, u, z0, prior_weight=weight, n_iter=30)
    # Closed form: argmin (x - A z - b)^T W (x - A z - b) + weight (z - m)^T P (z - m).
    layer = model.decoder.layers[0]
    A, b = layer.weight[:, :, 0], layer.bias
    W = torch.diag(torch.exp(-model.noise_logvar[:, 0]))
    loc, logvar = model.prior_params(u, z0)
    for i in range(2):
        for t in (0, 17, 29):
            P = torch.diag(weight * torch.exp(-logvar[i, :, t]))
            m = loc[i, :, t]
            lhs = A.T @ W @ A + P
            rhs = A.T @ W @ (x[i, :, t] - b) + P @ m
            expected = torch.linalg.solve(lhs, rhs)
            torch.testing.assert_close(z[i, :, t], expected, atol=1e-8, rtol=1e-8)


def test_refine_never_raises_the_cost():
    torch.manual_seed(1)
    model = IVAE(3, 3, n_segments=4, n_hidden=16, n_layers=3, posterior="full").eval()
    x = torch.randn(1, 3, 200)
    u = torch.randint(4, (1, 200))
    z0 = model.encode(x, u)[0]

    def cost(z):
        w = torch.exp(-model.noise_logvar)
        loc, logvar = model.prior_params(u, z)
        with torch.no_grad():
            r = ((x - model.decode(z, u)) ** 2 * w).sum(1)
        return r + (0.05 * (z - loc) ** 2 * torch.exp(-logvar)).sum(1)

    z = model.refine_sources(x, u, z0, prior_weight=0.05, n_iter=5)
    assert torch.all(cost(z) <= cost(z0) + 1e-6)
    assert cost(z).mean() < cost(z0).mean()


def test_refine_errors():
    model = IVAE(3, 2, n_segments=4, kernel_size=3)
    x, u = torch.randn(1, 3, 10), torch.randint(4, (1, 10))
    with pytest.raises(ValueError, match="needs kernel_size=1, but this model has a receptive"):
        model.refine_sources(x, u, torch.zeros(1, 2, 10))
    model = IVAE(3, 2, n_segments=4, prior="laplace")
    with pytest.raises(ValueError, match="needs a Gaussian prior .* got prior='laplace'"):
        model.refine_sources(x, u, torch.zeros(1, 2, 10))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"refine_steps": -1}, "'refine_steps' must be >= 0"),
        ({"refine_prior_weight": 0.0}, "'refine_prior_weight' must be > 0"),
        ({"kl_warmup": 1.5}, "'kl_warmup' must be <= 1"),
        ({"batch_size_start": 0}, "'batch_size_start' must be >= 1"),
        ({"refine_steps": 3, "kernel_size": 3}, "needs kernel_size=1 \\(got 3\\)"),
        ({"refine_steps": 3, "prior": "laplace"}, "prior 'gauss', 'standard' or 'auto'"),
    ],
)
def test_separator_checks_the_new_parameters(params, match):
    X, _, u = make_nonlinear_ica(3, 4, 50, 1, random_state=0)
    with pytest.raises(ValueError, match=match):
        IVAESeparator(3, n_steps=2, **params).fit(X, u)


def test_batch_ramp_is_geometric():
    sizes = [train_mod._batch_at(s, 5, 1024, 256) for s in range(5)]
    assert sizes == [256, 362, 512, 724, 1024]
    assert train_mod._batch_at(3, 5, 64, None) == 64


def test_separator_refines_in_transform():
    X, _, u = make_nonlinear_ica(3, 8, 75, 2, random_state=0)
    sep = IVAESeparator(
        3, n_steps=60, batch_size=64, batch_size_start=16, kl_warmup=0.2, random_state=0
    ).fit(X, u)
    mean = sep.transform(X, u)
    sep.set_params(refine_steps=3)
    refined = sep.transform(X, u)
    assert refined.shape == mean.shape == (3, 600)
    assert np.all(np.isfinite(refined))
    assert not np.allclose(refined, mean)
    # The same fit with a constant batch and no warm-up draws other batches.
    plain = IVAESeparator(3, n_steps=60, batch_size=64, random_state=0).fit(X, u)
    assert not np.allclose(plain.transform(X, u), mean)
