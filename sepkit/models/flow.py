"""An invertible network with an exact log-determinant: the decoder of the flow family.

``CouplingFlow`` is g: x -> s, the inverse of the mixing f of the noiseless
iVAE (x = f(s)). It alternates affine coupling layers (Dinh, Sohl-Dickstein,
Bengio 2017, RealNVP) with square linear maps:

    g(x) = M_L c_L( ... M_1 c_1(W_0 (x - mean)) ... )

A coupling layer keeps the coordinates of its mask and moves the others by an
affine map whose log-scale and shift are an MLP of the kept ones, so its
inverse is closed-form and log|det J| is the sum of the log-scales; a linear
map adds log|det M|. The masks are drawn at random, keeping floor(n/2) and
ceil(n/2) coordinates in turn (keeping the same number in every layer fitted
worse: -0.04 and -0.02 MCC on two seeds of the paper's setting); the maps start
at the identity and are learnt, so what a coupling keeps is learnt too (as
Glow's 1x1 convolutions do). Unlike elementwise activations in a fixed basis (an
"invertible MLP"), the couplings need not find the basis in which the mixing
bends: on the paper's setting an elementwise flow started at the linear iVAE
stalled at MCC 0.82 where the couplings reach 0.94-0.96
(benchmarks/README.md, "Nonlinear core").

References
----------
Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP. ICLR.
Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
nonlinear ICA: a unifying framework. AISTATS.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CouplingFlow"]

# Bound on |log scale| of a coupling layer, so that one step cannot blow up or
# collapse a coordinate by more than e^2 while training is far from a fit.
_MAX_LOG_SCALE = 2.0


class CouplingFlow(nn.Module):
    """g(x) = M_L c_L(... M_1 c_1(W_0 (x - mean)) ...), invertible, exact log|det J_g|.

    The weights of all layers are stacked in a few tensors (one slogdet call
    for all the maps, one optimiser update per kind of weight): on a CPU the
    cost of a step of small layers is the number of operations, not their size.

    Parameters
    ----------
    n_dims : int
        Dimension of x and s.
    n_coupling : int
        Coupling layers, each followed by a linear map (none for n_dims = 1:
        one coordinate has nothing to condition on; g is then W_0 alone).
    n_hidden : int
        Width of the two hidden layers of every conditioner.
    generator : torch.Generator or None
        Draws the starting permutations (the conditioners' weights use torch's
        global generator, seeded by the caller).

    Attributes
    ----------
    mean : buffer, shape (n_dims,)
    unmixing : Parameter, shape (n_dims, n_dims)
        W_0 (the flow family starts it at the linear iVAE's unmixing).
    masks : buffer, shape (n_coupling, n_dims)
        1 for the coordinates each coupling keeps.
    mats : Parameter, shape (n_coupling, n_dims, n_dims)
        M_1 .. M_L.
    w1, b1, w2, b2, w3, b3 : Parameter
        The conditioners' layers, stacked over the couplings: (n_coupling,
        n_dims, n_hidden), (n_coupling, n_hidden), (n_coupling, n_hidden,
        n_hidden), ..., (n_coupling, n_hidden, 2 n_dims). A conditioner sees
        the masked input and its outputs for the kept coordinates are unused.
    """

    def __init__(self, n_dims: int, n_coupling: int = 14, n_hidden: int = 16, generator=None):
        super().__init__()
        self.n_dims = n_dims
        n_layers = n_coupling if n_dims > 1 else 0
        self.n_coupling = n_layers
        self.register_buffer("mean", torch.zeros(n_dims))
        self.unmixing = nn.Parameter(torch.eye(n_dims))
        masks = torch.zeros(n_layers, n_dims)
        for i in range(n_layers):
            # Odd layers keep the larger half, so with an odd n_dims every
            # coordinate is moved by some layer.
            order = torch.randperm(n_dims, generator=generator)
            masks[i, order[: (n_dims + i % 2) // 2]] = 1.0
        self.register_buffer("masks", masks)
        self.mats = nn.Parameter(torch.eye(n_dims).repeat(n_layers, 1, 1))

        def uniform(fan_in, *shape):
            # nn.Linear's default initialisation.
            bound = 1.0 / fan_in**0.5
            return nn.Parameter((torch.rand(n_layers, *shape) * 2 - 1) * bound)

        self.w1 = uniform(n_dims, n_dims, n_hidden)
        self.b1 = uniform(n_dims, n_hidden)
        self.w2 = uniform(n_hidden, n_hidden, n_hidden)
        self.b2 = uniform(n_hidden, n_hidden)
        # Zero output layers: every coupling starts at the identity.
        self.w3 = nn.Parameter(torch.zeros(n_layers, n_hidden, 2 * n_dims))
        self.b3 = nn.Parameter(torch.zeros(n_layers, 2 * n_dims))

    def _scale_shift(self, i: int, h: torch.Tensor):
        """(log-scale, shift) of coupling i, zero on the kept coordinates."""
        keep = self.masks[i]
        hidden = torch.tanh(torch.addmm(self.b1[i], h * keep, self.w1[i]))
        hidden = torch.tanh(torch.addmm(self.b2[i], hidden, self.w2[i]))
        log_scale, shift = torch.addmm(self.b3[i], hidden, self.w3[i]).chunk(2, dim=-1)
        move = 1.0 - keep
        return _MAX_LOG_SCALE * torch.tanh(log_scale / _MAX_LOG_SCALE) * move, shift * move

    @torch.no_grad()
    def reset_to_linear(self, unmixing) -> None:
        """g(x) = unmixing (x - mean): every coupling back at the identity, the maps unchanged."""
        self.unmixing.copy_(torch.as_tensor(unmixing, dtype=self.unmixing.dtype))
        self.w3.zero_()
        self.b3.zero_()
        # The maps are products of learnt matrices: back to permutations would
        # change g; back to the identity keeps g = W_0 exactly.
        self.mats.copy_(torch.eye(self.n_dims).expand_as(self.mats))

    def forward(self, x: torch.Tensor):
        """x (..., n_dims) -> (s = g(x), log|det J_g(x)| of shape (...))."""
        lead = x.shape[:-1]
        h = (x.reshape(-1, self.n_dims) - self.mean) @ self.unmixing.T
        logdet = torch.linalg.slogdet(self.unmixing)[1]
        if self.n_coupling:
            logdet = logdet + torch.linalg.slogdet(self.mats)[1].sum()
        logdet = logdet.expand(h.shape[0])
        for i in range(self.n_coupling):
            log_scale, shift = self._scale_shift(i, h)
            h = (h * torch.exp(log_scale) + shift) @ self.mats[i].T
            logdet = logdet + log_scale.sum(-1)
        return h.reshape(*lead, self.n_dims), logdet.reshape(lead)

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        """x = g^{-1}(s) = f(s), exact; s (..., n_dims)."""
        lead = s.shape[:-1]
        h = s.reshape(-1, self.n_dims)
        for i in reversed(range(self.n_coupling)):
            h = torch.linalg.solve(self.mats[i], h.T).T
            # The kept coordinates pass unchanged, so the conditioner sees the same input.
            log_scale, shift = self._scale_shift(i, h)
            h = (h - shift) * torch.exp(-log_scale)
        x = torch.linalg.solve(self.unmixing, h.T).T + self.mean
        return x.reshape(*lead, self.n_dims)
