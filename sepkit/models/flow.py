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

    def __init__(self, n_dims: int, n_coupling: int = 12, n_hidden: int = 16, generator=None):
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

    def _weights(self):
        """(masks, w1, b1, w2, b2, w3, b3, mats): what :func:`_mask_weights` takes."""
        return self.masks, self.w1, self.b1, self.w2, self.b2, self.w3, self.b3, self.mats

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
        if not self.n_coupling:
            return h.reshape(*lead, self.n_dims), logdet.expand(h.shape[0]).reshape(lead)
        logdet = logdet + torch.linalg.slogdet(self.mats)[1].sum()
        if torch.is_grad_enabled():
            h, coupling_logdet = _CouplingStack.apply(h, *self._weights())
        else:
            # Without gradients nothing is kept for a backward pass: memory stays
            # that of one coupling whatever the chunk of samples.
            coupling_logdet = 0.0
            for layer in _per_coupling(_mask_weights(*self._weights())):
                _, _, half, _, y = _coupling(layer, h)
                h = y @ layer[-1]
                coupling_logdet = coupling_logdet + half.sum(1)
            # log|det| of a coupling is the sum of its log-scales, 2 tanh(y / 2).
            coupling_logdet = _MAX_LOG_SCALE * coupling_logdet
        logdet = logdet + coupling_logdet
        return h.reshape(*lead, self.n_dims), logdet.reshape(lead)

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        """x = g^{-1}(s) = f(s), exact; s (..., n_dims)."""
        lead = s.shape[:-1]
        h = s.reshape(-1, self.n_dims)
        for layer in reversed(_per_coupling(_mask_weights(*self._weights()))):
            h = torch.linalg.solve(layer[-1], h, left=False)
            # The kept coordinates pass unchanged, so the conditioner sees the same input.
            _, _, half, shift = _conditioner(layer, h)
            h = (h - shift) * torch.exp(-_MAX_LOG_SCALE * half)
        x = torch.linalg.solve(self.unmixing, h.T).T + self.mean
        return x.reshape(*lead, self.n_dims)


def _mask_weights(masks, w1, b1, w2, b2, w3, b3, mats):
    """(w1, b1, w2, b2, w_log_scale, b_log_scale, w_shift, b_shift, M^T), stacked over couplings.

    Masking the conditioner's input and output weights once per pass, rather
    than its activations in every layer, computes the same function with the
    same gradients in far fewer operations (on a CPU a step of these small
    layers costs per operation more than per flop). The output weights of the
    kept coordinates are zeroed, so their log-scale and shift are exactly 0;
    the log-scale half is also halved, for the bound 2 tanh(y / 2). The two
    halves of the output layer are separate products so that each comes out
    contiguous (tanh of a strided half took 10x longer).
    """
    n = masks.shape[1]
    move = 1.0 - masks
    return (
        w1 * masks[:, :, None],
        b1,
        w2,
        b2,
        w3[:, :, :n] * (move / _MAX_LOG_SCALE)[:, None, :],
        b3[:, :n] * (move / _MAX_LOG_SCALE),
        w3[:, :, n:] * move[:, None, :],
        b3[:, n:] * move,
        mats.transpose(1, 2),
    )


def _per_coupling(weights) -> list:
    """The stacked tensors of :func:`_mask_weights` as one tuple per coupling."""
    return list(zip(*(w.unbind(0) for w in weights), strict=True))


def _conditioner(layer, h: torch.Tensor):
    """(hidden 1, hidden 2, tanh(log-scale / 2), shift) of one coupling at h.

    ``layer`` is one coupling's slice of :func:`_mask_weights`.
    """
    w1, b1, w2, b2, w_ls, b_ls, w_sh, b_sh, _ = layer
    t1 = torch.tanh(torch.addmm(b1, h, w1))
    t2 = torch.tanh(torch.addmm(b2, t1, w2))
    return t1, t2, torch.tanh(torch.addmm(b_ls, t2, w_ls)), torch.addmm(b_sh, t2, w_sh)


def _coupling(layer, h: torch.Tensor):
    """(hidden 1, hidden 2, tanh(log-scale / 2), scale, y): one coupling at h, before its map.

    y = h * exp(2 tanh(log-scale / 2)) + shift, with scale the exp factor.
    """
    t1, t2, half, shift = _conditioner(layer, h)
    scale = torch.exp(_MAX_LOG_SCALE * half)
    return t1, t2, half, scale, torch.addcmul(shift, h, scale)


class _CouplingStack(torch.autograd.Function):
    """All the couplings and maps of a CouplingFlow, with a hand-written backward pass.

    Autograd records every operation of every coupling and replays it; with
    batches of a thousand 5-dimensional samples on a CPU that bookkeeping is a
    sizeable part of a step. The backward pass below is the chain rule through
    the forward's few products, written out, with the weights' gradients of all
    the couplings taken as one batched product each at the end
    (``tests/models/test_flow.py`` checks them against autograd through the
    layers' definition).

    forward(h, masks, w1, b1, w2, b2, w3, b3, mats), the CouplingFlow's own
    tensors, returns (h after every coupling and map, sum of the couplings'
    log-scales per sample). The masking (:func:`_mask_weights`) happens inside,
    so that autograd records none of it either.
    """

    @staticmethod
    def forward(ctx, h, masks, w1, b1, w2, b2, w3, b3, mats):
        steps = []  # (h, hidden 1, hidden 2, half, scale, y) of every coupling
        half_sum = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
        weights = _mask_weights(masks, w1, b1, w2, b2, w3, b3, mats)
        w1, _, w2, _, w_ls, _, w_sh, _, mats_t = weights
        for layer in _per_coupling(weights):
            t1, t2, half, scale, y = _coupling(layer, h)
            steps.append((h, t1, t2, half, scale, y))
            h = y @ layer[-1]
            half_sum += half.sum(1)
        ctx.save_for_backward(
            masks, w1, w2, w_ls, w_sh, mats_t, *(torch.stack(v) for v in zip(*steps, strict=True))
        )
        return h, _MAX_LOG_SCALE * half_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_logdet):
        masks, w1, w2, w_ls, w_sh, mats_t, inputs, hidden1, hidden2, halves, scales, outputs = (
            ctx.saved_tensors
        )
        n_layers = w1.shape[0]
        if grad_h is None:
            grad_h = torch.zeros_like(outputs[-1])
        if grad_logdet is None:
            grad_logdet = torch.zeros_like(outputs[-1][:, 0])
        # d logdet / d half = 2 on every moved coordinate.
        grad_ld = (_MAX_LOG_SCALE * grad_logdet)[:, None]
        # Per coupling: the gradients at the map's input, the log-scale and shift
        # heads and the two hidden layers' pre-activations.
        g_out, g_ls, g_sh, g_z2, g_z1 = ([None] * n_layers for _ in range(5))
        for i in reversed(range(n_layers)):
            g_out[i] = grad_h
            grad_y = grad_h @ mats_t[i].T
            # y = h * exp(2 half) + shift; d/d half also gets logdet's 2 per coordinate.
            grad_half = torch.addcmul(grad_ld, grad_y * inputs[i], scales[i], value=_MAX_LOG_SCALE)
            # tanh' = 1 - tanh^2.
            half = halves[i]
            g_ls[i] = torch.addcmul(grad_half, grad_half, half * half, value=-1.0)
            g_sh[i] = grad_y
            grad_t = torch.addmm(g_ls[i] @ w_ls[i].T, grad_y, w_sh[i].T)
            t2 = hidden2[i]
            g_z2[i] = torch.addcmul(grad_t, grad_t, t2 * t2, value=-1.0)
            grad_t = g_z2[i] @ w2[i].T
            t1 = hidden1[i]
            g_z1[i] = torch.addcmul(grad_t, grad_t, t1 * t1, value=-1.0)
            grad_h = torch.addmm(grad_y * scales[i], g_z1[i], w1[i].T)

        def weight_grads(layer_inputs, grads):
            grads = torch.stack(grads)
            return layer_inputs.transpose(1, 2) @ grads, grads.sum(1)

        grad_w1, grad_b1 = weight_grads(inputs, g_z1)
        grad_w2, grad_b2 = weight_grads(hidden1, g_z2)
        grad_wl, grad_bl = weight_grads(hidden2, g_ls)
        grad_ws, grad_bs = weight_grads(hidden2, g_sh)
        grad_m = outputs.transpose(1, 2) @ torch.stack(g_out)
        # Back through the masking: the chain rule of _mask_weights.
        move = 1.0 - masks
        half_move = move / _MAX_LOG_SCALE
        return (
            grad_h,
            None,
            grad_w1 * masks[:, :, None],
            grad_b1,
            grad_w2,
            grad_b2,
            torch.cat([grad_wl * half_move[:, None, :], grad_ws * move[:, None, :]], dim=2),
            torch.cat([grad_bl * half_move, grad_bs * move], dim=1),
            grad_m.transpose(1, 2),
        )
