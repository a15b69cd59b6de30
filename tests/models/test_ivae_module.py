import pytest
import torch
from torch import nn

from sepkit.models import IVAE, ConvStack


def test_kernel_one_is_a_per_sample_mlp():
    torch.manual_seed(0)
    stack = ConvStack(4, 3, 8, 3, 1, "lrelu")
    x = torch.randn(2, 4, 50)
    out = stack(x)
    # The same MLP written with Linear layers on each time sample separately.
    layers = [nn.Linear(c.in_channels, c.out_channels) for c in stack.layers]
    for lin, conv in zip(layers, stack.layers, strict=True):
        lin.weight.data = conv.weight.data[:, :, 0]
        lin.bias.data = conv.bias.data
    h = x.transpose(1, 2)
    for i, lin in enumerate(layers):
        h = lin(h)
        if i < len(layers) - 1:
            h = nn.functional.leaky_relu(h, 0.1)
    torch.testing.assert_close(out, h.transpose(1, 2))


def test_kernel_one_has_no_temporal_mixing():
    torch.manual_seed(0)
    model = IVAE(3, 2, n_segments=4, kernel_size=1)
    x = torch.randn(1, 3, 20)
    u = torch.randint(4, (1, 20))
    m_full, _ = model.encode(x, u)
    m_one, _ = model.encode(x[:, :, 7:8], u[:, 7:8])
    torch.testing.assert_close(m_full[:, :, 7:8], m_one)


def test_shapes_and_receptive_field():
    model = IVAE(6, 3, n_segments=5, kernel_size=5, n_layers=3)
    assert model.receptive_field == 13
    x = torch.randn(2, 6, 40)
    u = torch.randint(5, (2, 40))
    mean, logvar = model.encode(x, u)
    assert mean.shape == logvar.shape == (2, 3, 40)
    assert model.decode(mean, u).shape == (2, 6, 40)
    loss, nll, kl = model(x, u)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_continuous_u_and_laplace_prior():
    model = IVAE(4, 2, n_u=3, prior="laplace")
    x = torch.randn(2, 4, 10)
    u = torch.randn(2, 3, 10)
    loss, _, kl = model(x, u)
    assert torch.isfinite(loss) and kl > 0


def test_decoder_u_flag_and_standard_prior():
    assert IVAE(4, 2, n_segments=3, decoder_u=True).decoder_ufeat is not None
    assert IVAE(4, 2, n_segments=3).decoder_ufeat is None
    vae = IVAE(4, 2, prior="standard")
    assert vae.prior_net is None and vae.encoder_ufeat is None
    loss, _, _ = vae(torch.randn(2, 4, 5), None)
    assert torch.isfinite(loss)


def test_fixed_noise_is_a_buffer():
    model = IVAE(4, 2, n_segments=3, learn_noise=False, noise_var=0.05)
    names = [n for n, _ in model.named_parameters()]
    assert "noise_logvar" not in names
    torch.testing.assert_close(model.noise_logvar.exp(), torch.full((4, 1), 0.05))


def test_needs_exactly_one_kind_of_u():
    with pytest.raises(ValueError, match="exactly one of n_segments"):
        IVAE(4, 2)
    with pytest.raises(ValueError, match="exactly one of n_segments"):
        IVAE(4, 2, n_segments=3, n_u=2)


def test_full_posterior_marginals_and_samples():
    torch.manual_seed(0)
    model = IVAE(4, 3, n_segments=5, posterior="full")
    x = torch.randn(1, 4, 2)
    u = torch.randint(5, (1, 2))
    mean, diag_logvar, offdiag = model._encoder_out(x, u)
    assert offdiag.shape == (1, 3, 2)  # n (n - 1) / 2 = 3 off-diagonal entries
    L = model._cholesky(diag_logvar, offdiag)
    assert torch.equal(L, torch.tril(L))
    cov = L[0, 0] @ L[0, 0].T
    _, marginal_logvar = model.encode(x, u)
    torch.testing.assert_close(torch.exp(marginal_logvar[0, :, 0]), torch.diagonal(cov))
    loss, _, kl = model(x, u)
    assert torch.isfinite(loss) and kl > 0
