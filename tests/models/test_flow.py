"""CouplingFlow: exact inverse, exact log-determinant, identity at the start."""

import numpy as np
import pytest
import torch

from sepkit.models import CouplingFlow


def _flow(n_dims=3, seed=0):
    torch.manual_seed(seed)
    flow = CouplingFlow(
        n_dims, n_coupling=3, n_hidden=8, generator=torch.Generator().manual_seed(0)
    )
    # Move every weight off its start so that the couplings are not the identity
    # (the masks are buffers, not parameters, and stay 0/1).
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_flow_starts_at_its_linear_map():
    flow = CouplingFlow(4, n_coupling=2, n_hidden=5, generator=torch.Generator().manual_seed(0))
    W = torch.tensor([[2.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 3]])
    with torch.no_grad():
        flow.unmixing.copy_(W)
    x = torch.randn(7, 4)
    s, logdet = flow(x)
    torch.testing.assert_close(s, x @ W.T)
    torch.testing.assert_close(logdet, torch.full((7,), float(np.log(6.0))))


@pytest.mark.parametrize("n_dims", [1, 2, 5])
def test_inverse_is_exact(n_dims):
    flow = _flow(n_dims)
    x = torch.randn(50, n_dims)
    with torch.no_grad():
        s, _ = flow(x)
        torch.testing.assert_close(flow.inverse(s), x, atol=1e-4, rtol=1e-4)


def test_logdet_matches_autograd_jacobian():
    flow = _flow(3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    _, logdet = flow(x)
    for i in range(6):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        assert float(logdet[i].detach()) == pytest.approx(
            float(torch.linalg.slogdet(J)[1]), abs=1e-9
        )


def test_masks_alternate_their_sizes():
    flow = CouplingFlow(5, n_coupling=4, n_hidden=4, generator=torch.Generator().manual_seed(3))
    # 2 kept of 5, then 3: every layer moves some coordinates and keeps others.
    assert flow.masks.sum(1).tolist() == [2.0, 3.0, 2.0, 3.0]
    assert set(flow.masks.flatten().tolist()) == {0.0, 1.0}


def test_one_dimension_is_the_linear_map_alone():
    flow = CouplingFlow(1, n_coupling=4, n_hidden=4)
    assert flow.n_coupling == 0
    s, logdet = flow(torch.tensor([[2.0]]))
    assert float(s) == 2.0 and float(logdet) == 0.0


def test_reset_to_linear():
    flow = _flow(3)
    W = np.diag([1.0, 2.0, 4.0])
    flow.reset_to_linear(W)
    x = torch.randn(5, 3)
    with torch.no_grad():
        s, logdet = flow(x - 0.0)
    torch.testing.assert_close(s, (x - flow.mean) @ torch.as_tensor(W, dtype=torch.float32).T)
    torch.testing.assert_close(logdet, torch.full((5,), float(np.log(8.0))))


def _reference_flow(flow, x):
    """g(x) and log|det J| written from the definition, layer by layer, through autograd."""
    h = (x - flow.mean) @ flow.unmixing.T
    logdet = torch.linalg.slogdet(flow.unmixing)[1] + torch.linalg.slogdet(flow.mats)[1].sum()
    n = flow.n_dims
    for i in range(flow.n_coupling):
        keep = flow.masks[i]
        hidden = torch.tanh((h * keep) @ flow.w1[i] + flow.b1[i])
        hidden = torch.tanh(hidden @ flow.w2[i] + flow.b2[i])
        out = hidden @ flow.w3[i] + flow.b3[i]
        log_scale = 2.0 * torch.tanh(out[:, :n] / 2.0) * (1 - keep)
        h = (h * torch.exp(log_scale) + out[:, n:] * (1 - keep)) @ flow.mats[i].T
        logdet = logdet + log_scale.sum(1)
    return h, logdet


def test_hand_written_backward_matches_autograd():
    flow = _flow(5).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    weights = torch.linspace(0.5, 1.5, 40, dtype=torch.float64)

    def loss(s, logdet):
        # Uses both outputs, with per-sample weights, as the flow's objective does.
        return (weights[:, None] * s**2).sum() + (s[:, 0] * logdet).sum() - logdet.sum()

    ours = torch.autograd.grad(loss(*flow(x)), list(flow.parameters()))
    ref = torch.autograd.grad(loss(*_reference_flow(flow, x)), list(flow.parameters()))
    for (name, _), a, b in zip(flow.named_parameters(), ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    with torch.no_grad():
        s, logdet = flow(x)
    s_ref, logdet_ref = _reference_flow(flow, x)
    torch.testing.assert_close(s, s_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref.detach(), rtol=1e-12, atol=1e-12)
