"""The iVAE source model of the time-frequency separation."""

import math

import numpy as np
import torch

from sepkit.models import TFSourceModel


def test_gain_nll_is_the_complex_gaussian_nll_at_the_ml_gain():
    torch.manual_seed(0)
    power = torch.rand(3, 5) + 0.1
    logv = torch.randn(3, 5)
    logv = logv - logv.mean(-1, keepdim=True)
    log_gain, nll = TFSourceModel.gain_nll(power, logv)
    gain = (power / logv.exp()).mean(-1)
    np.testing.assert_allclose(log_gain.exp().numpy(), gain.numpy(), rtol=1e-6)
    # -log N_c(y; 0, r) = log(pi r) + |y|^2 / r, averaged over frequency, minus log pi.
    r = gain[:, None] * logv.exp()
    ref = (torch.log(math.pi * r) + power / r).mean(-1) - math.log(math.pi)
    np.testing.assert_allclose(nll.numpy(), ref.numpy(), rtol=1e-5)
    # The gain maximises the likelihood: any other gain is worse.
    for scale in (0.5, 2.0):
        r2 = scale * r
        other = (torch.log(r2) + power / r2).mean(-1)
        assert torch.all(other > nll)


def test_shapes_and_loss_decreases():
    torch.manual_seed(0)
    model = TFSourceModel(n_freqs=33, n_sources=2, n_segments=4, n_latent=3, n_hidden=16)
    # Two sources with different fixed spectral shapes and random frame gains.
    shapes = torch.stack([torch.linspace(0, 3, 33), torch.linspace(3, 0, 33)]).exp()
    gains = torch.rand(2, 40, 1) + 0.1
    power = shapes[:, None, :] * gains * torch.distributions.Exponential(1.0).sample((2, 40, 33))
    codes = torch.arange(2)[:, None] * 4 + (torch.arange(40) // 10)[None, :]
    r = model.variances(power, codes)
    assert r.shape == power.shape and torch.all(r > 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(power, codes).item()
    for _ in range(200):
        opt.zero_grad()
        loss = model.loss(power, codes)
        loss.backward()
        opt.step()
    assert model.loss(power, codes).item() < first - 0.2
    assert model.config() == dict(n_freqs=33, n_sources=2, n_segments=4, n_latent=3, n_hidden=16)
