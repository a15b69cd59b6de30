"""The convolutional iVAE core: encoder q(z|x,u), decoder p(x|z[,u]), prior p(z|u).

Every network is a stack of 1-D convolutions over time on windows of shape
(batch, n_channels, n_times). With ``kernel_size=1`` a convolution is the same
linear map applied to every time sample, so the model reduces exactly to the
per-sample MLPs of Khemakhem et al. (2020): one model serves both.

The auxiliary variable u enters per time sample, either as an integer label
(a segment index, shape (batch, n_times)) or as a continuous vector (shape
(batch, n_u, n_times)).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import functional as F_

# Bounds for every log-variance the networks output. Without them a single
# badly scaled batch can push exp(logvar) to 0 or inf and the ELBO to NaN.
_LOGVAR_MIN, _LOGVAR_MAX = -12.0, 8.0


class _XTanh(nn.Module):
    """tanh(x) + alpha x: the invertible activation of the paper's reference setting."""

    def __init__(self, alpha: float = 0.1):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return torch.tanh(x) + self.alpha * x


def _activation(name: str) -> nn.Module:
    if name == "lrelu":
        return nn.LeakyReLU(0.1)
    if name == "xtanh":
        return _XTanh(0.1)
    return nn.ELU()


class ConvStack(nn.Module):
    """``n_layers`` Conv1d layers (same padding) with activations in between.

    ``n_layers=1`` is a single linear map (per sample when ``kernel_size=1``).
    An optional additive conditioning term (the u features) is added after
    the first layer, which equals concatenating one-hot u to the input.
    """

    def __init__(self, n_in, n_out, n_hidden, n_layers, kernel_size, activation):
        super().__init__()
        sizes = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
        pad = kernel_size // 2
        self.layers = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=pad)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.act = _activation(activation)
        self.n_first = sizes[1]

    def forward(self, x, cond=None):
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and cond is not None:
                h = h + cond
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class UFeatures(nn.Module):
    """Map u to per-sample features of size ``n_out``.

    Discrete u (segment labels) use an embedding table: identical to a linear
    layer on one-hot u, without materialising the one-hot tensor. Continuous
    u go through a small per-sample network.
    """

    def __init__(self, n_out, *, n_segments=None, n_u=None, n_hidden=32, activation="lrelu"):
        super().__init__()
        self.discrete = n_segments is not None
        if self.discrete:
            self.table = nn.Embedding(n_segments, n_out)
        else:
            self.net = ConvStack(n_u, n_out, n_hidden, 2, 1, activation)

    def forward(self, u):
        if self.discrete:
            return self.table(u).transpose(1, 2)  # (batch, n_out, n_times)
        return self.net(u)


class IVAE(nn.Module):
    """Identifiable VAE with a conditionally factorial prior p(z|u).

    Parameters
    ----------
    n_channels : int
        Observed dimensions (sensors).
    n_sources : int
        Latent dimensions (sources).
    n_segments : int or None
        Number of discrete u values; give this or ``n_u``.
    n_u : int or None
        Dimension of a continuous u.
    n_hidden, n_layers, kernel_size, activation
        Shape of the encoder and decoder stacks (``kernel_size`` odd).
    prior : {"gauss", "laplace", "standard"}
        Family of p(z|u) (factorised, u-dependent location and scale, eq. (7));
        "standard" is N(0, I) with u ignored everywhere: a plain VAE, the
        non-identifiable baseline.
    posterior : {"diag", "full"}
        Covariance of the Gaussian q(z|x,u) per time sample. "diag" is the
        paper's mean-field q. Its ELBO gap, 0.5 log(prod diag(J^T J) /
        det(J^T J)) for a decoder Jacobian J in the small-noise limit, does not
        vanish with the noise and pulls the decoder towards orthogonal
        Jacobians, away from the true mixing. "full" (a Cholesky factor per
        sample, n_sources (n_sources + 1) / 2 outputs) removes that bias.
    encoder_u : bool
        Condition the encoder on u, q(z|x,u), as in the paper.
    decoder_u : bool
        Condition the decoder on u, p(x|z,u). Off by default: the
        identifiability theorem (Thm. 1) assumes x = f(z) + noise with f not
        depending on u; a u-dependent decoder can explain segment changes in
        the decoder instead of the sources, and the guarantee is lost.
    learn_noise : bool
        Learn the per-channel observation-noise variance, else keep it fixed.
    noise_var : float
        The (initial) observation-noise variance, in units of the
        standardised data.
    linear_path : bool
        Add a linear map (no bias) beside the encoder's mean and beside the
        decoder: mean = B x + MLP(x), x_mean = A z + MLP(z). The MLP's layers
        that feed these outputs start at zero, so the model starts as the
        linear one that :meth:`set_linear_path` loads (an ICA solution, see
        ``IVAESeparator(ica_init=...)``) and training adds the nonlinear part.
    """

    def __init__(
        self,
        n_channels: int,
        n_sources: int,
        *,
        n_segments: int | None = None,
        n_u: int | None = None,
        n_hidden: int = 64,
        n_layers: int = 3,
        kernel_size: int = 1,
        activation: str = "lrelu",
        prior: str = "gauss",
        posterior: str = "diag",
        encoder_u: bool = True,
        decoder_u: bool = False,
        learn_noise: bool = True,
        noise_var: float = 0.01,
        linear_path: bool = False,
    ):
        super().__init__()
        if (n_segments is None) == (n_u is None) and prior != "standard":
            raise ValueError("IVAE needs exactly one of n_segments (discrete u) or n_u.")
        self.prior = prior
        self.posterior = posterior
        self.n_sources = n_sources
        n_tril = n_sources * (n_sources - 1) // 2 if posterior == "full" else 0
        if n_tril:
            rows, cols = torch.tril_indices(n_sources, n_sources, offset=-1)
            self.register_buffer("tril_rows", rows, persistent=False)
            self.register_buffer("tril_cols", cols, persistent=False)
        self.kernel_size = kernel_size
        self.n_layers = n_layers
        conditional = prior != "standard"
        self.encoder_u = encoder_u and conditional
        self.decoder_u = decoder_u and conditional
        ukw = dict(n_segments=n_segments, n_u=n_u, activation=activation)

        self.encoder = ConvStack(
            n_channels, 2 * n_sources + n_tril, n_hidden, n_layers, kernel_size, activation
        )
        self.encoder_ufeat = UFeatures(self.encoder.n_first, **ukw) if self.encoder_u else None
        self.decoder = ConvStack(n_sources, n_channels, n_hidden, n_layers, kernel_size, activation)
        self.decoder_ufeat = UFeatures(self.decoder.n_first, **ukw) if self.decoder_u else None
        # Built after the stacks so that the default model draws the same
        # random weights as before the option existed.
        self.encoder_linear = self.decoder_linear = None
        if linear_path:
            self.encoder_linear = nn.Conv1d(n_channels, n_sources, 1, bias=False)
            self.decoder_linear = nn.Conv1d(n_sources, n_channels, 1, bias=False)
            with torch.no_grad():
                # Zero MLP contributions at the start: the encoder's mean rows
                # (its log-variances keep their usual initialisation) and the
                # whole decoder output.
                last = self.encoder.layers[-1]
                last.weight[:n_sources].zero_()
                last.bias[:n_sources].zero_()
                self.decoder.layers[-1].weight.zero_()
                self.decoder.layers[-1].bias.zero_()
        if conditional:
            # Prior p(z|u): location and log-scale per source, eq. (7).
            self.prior_net = UFeatures(2 * n_sources, **ukw)
            if n_segments is not None:
                nn.init.normal_(self.prior_net.table.weight, std=0.1)
        else:
            self.prior_net = None
        logvar0 = torch.full((n_channels, 1), float(torch.log(torch.tensor(noise_var))))
        if learn_noise:
            self.noise_logvar = nn.Parameter(logvar0)
        else:
            self.register_buffer("noise_logvar", logvar0)

    @torch.no_grad()
    def set_linear_path(self, unmixing, mixing):
        """Load the linear path's weights (needs ``linear_path=True``).

        Parameters
        ----------
        unmixing : array-like, shape (n_sources, n_channels)
            Encoder map B: the posterior mean starts at B x.
        mixing : array-like, shape (n_channels, n_sources)
            Decoder map A: the reconstruction starts at A z.
        """
        if self.encoder_linear is None:
            raise ValueError("set_linear_path needs an IVAE built with linear_path=True.")
        for conv, w in ((self.encoder_linear, unmixing), (self.decoder_linear, mixing)):
            w = torch.as_tensor(w, dtype=conv.weight.dtype, device=conv.weight.device)
            if w.shape != conv.weight.shape[:2]:
                raise ValueError(
                    f"set_linear_path got a matrix of shape {tuple(w.shape)}; expected "
                    f"{tuple(conv.weight.shape[:2])}."
                )
            conv.weight.copy_(w[:, :, None])

    @property
    def receptive_field(self) -> int:
        """Samples of x that one output sample of the encoder depends on."""
        return self.n_layers * (self.kernel_size - 1) + 1

    def _encoder_out(self, x, u):
        cond = self.encoder_ufeat(u) if self.encoder_ufeat is not None else None
        h = self.encoder(x, cond)
        n = self.n_sources
        mean = h[:, :n]
        if self.encoder_linear is not None:
            mean = mean + self.encoder_linear(x)
        return mean, h[:, n : 2 * n].clamp(_LOGVAR_MIN, _LOGVAR_MAX), h[:, 2 * n :]

    def _cholesky(self, diag_logvar, offdiag):
        """Lower-triangular L of q's covariance, shape (batch, n_times, n, n)."""
        L = torch.diag_embed(torch.exp(0.5 * diag_logvar).transpose(1, 2))
        L[:, :, self.tril_rows, self.tril_cols] = offdiag.transpose(1, 2)
        return L

    def encode(self, x, u=None):
        """q(z|x,u): mean and marginal log-variance, each (batch, n_sources, n_times)."""
        mean, diag_logvar, offdiag = self._encoder_out(x, u)
        if offdiag.shape[1] == 0:
            return mean, diag_logvar
        marginal = torch.exp(diag_logvar)
        marginal = marginal.index_add(1, self.tril_rows, offdiag**2)
        return mean, torch.log(marginal)

    def decode(self, z, u=None):
        """Mean of p(x|z[,u]), shape (batch, n_channels, n_times)."""
        cond = self.decoder_ufeat(u) if self.decoder_ufeat is not None else None
        out = self.decoder(z, cond)
        if self.decoder_linear is not None:
            out = out + self.decoder_linear(z)
        return out

    def prior_params(self, u, like):
        """Location and log-scale of p(z|u), broadcastable to ``like``."""
        if self.prior_net is None:
            zero = torch.zeros((), device=like.device, dtype=like.dtype)
            return zero, zero
        loc, logscale = self.prior_net(u).chunk(2, dim=1)
        return loc, logscale.clamp(_LOGVAR_MIN, _LOGVAR_MAX)

    def _decoder_jacobian(self, z, u):
        """Decoder output (batch, n_channels, n_times) and its per-sample Jacobian.

        The Jacobian has shape (batch, n_times, n_channels, n_sources): one
        forward-mode derivative per source (needs ``receptive_field == 1``).
        """
        cols = []
        out = None
        for i in range(z.shape[1]):
            tangent = torch.zeros_like(z)
            tangent[:, i] = 1.0
            out, col = torch.func.jvp(lambda q: self.decode(q, u), (z,), (tangent,))
            cols.append(col)
        return out, torch.stack(cols, -1).permute(0, 2, 1, 3)

    @torch.no_grad()
    def refine_sources(self, x, u, z, *, prior_weight: float = 0.05, n_iter: int = 10):
        """Sharpen posterior means towards the decoder's inverse (per time sample).

        Minimises, for every sample, the tempered negative log posterior

            sum_c (x_c - f_c(z))^2 / noise_c + prior_weight * sum_i (z_i - m_i)^2 / v_i

        (m, v: mean and variance of p(z|u)) by Levenberg-Marquardt steps from
        ``z``, each kept only where it lowers the cost. ``prior_weight=1`` is
        the posterior mode of the fitted model; a smaller weight is the mode
        under an observation noise ``prior_weight`` times the learned one,
        which undoes most of the shrinkage towards the prior that the
        posterior mean carries where the decoder is flat.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_times)
            Standardised observations.
        u : Tensor or None
            As for :meth:`forward`.
        z : Tensor, shape (batch, n_sources, n_times)
            Starting point, e.g. the mean of q(z|x,u).
        prior_weight : float
            Weight of the prior term (> 0).
        n_iter : int
            Levenberg-Marquardt steps.

        Returns
        -------
        z : Tensor, shape (batch, n_sources, n_times)
        """
        if self.receptive_field != 1:
            raise ValueError(
                f"refine_sources works sample by sample and needs kernel_size=1, but this "
                f"model has a receptive field of {self.receptive_field} samples. Use the "
                "posterior mean (no refinement) for convolutional models."
            )
        if self.prior == "laplace":
            raise ValueError(
                "refine_sources needs a Gaussian prior (prior='gauss' or 'standard'), got "
                "prior='laplace'. Use the posterior mean (no refinement) with a Laplace prior."
            )
        n = self.n_sources
        loc, logvar = self.prior_params(u, z)
        loc = torch.broadcast_to(loc, z.shape).transpose(1, 2).reshape(-1, n)
        prec = prior_weight * torch.exp(-torch.broadcast_to(logvar, z.shape))
        prec = prec.transpose(1, 2).reshape(-1, n)  # (n_points, n_sources)
        w = torch.exp(-self.noise_logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX))[:, 0]
        sw = w.sqrt()
        target = x.transpose(1, 2).reshape(-1, x.shape[1])  # (n_points, n_channels)

        def evaluate(zz):
            out, jac = self._decoder_jacobian(zz, u)
            r = target - out.transpose(1, 2).reshape(-1, x.shape[1])
            flat = zz.transpose(1, 2).reshape(-1, n)
            cost = (r**2 * w).sum(-1) + (prec * (flat - loc) ** 2).sum(-1)
            return r, jac.reshape(-1, x.shape[1], n), cost

        r, J, cost = evaluate(z)
        damping = torch.full_like(cost, 1e-2)
        for _ in range(n_iter):
            flat = z.transpose(1, 2).reshape(-1, n)
            Jw = J * sw[:, None]
            A = Jw.transpose(1, 2) @ Jw + torch.diag_embed(prec)
            g = (Jw.transpose(1, 2) @ (r * sw)[..., None])[..., 0] + prec * (loc - flat)
            lhs = A + damping[:, None, None] * torch.diag_embed(A.diagonal(dim1=1, dim2=2) + 1e-6)
            step = torch.linalg.solve(lhs, g[..., None])[..., 0]
            cand = (flat + step).reshape(z.shape[0], z.shape[2], n).transpose(1, 2)
            r_new, J_new, cost_new = evaluate(cand)
            ok = cost_new < cost
            okz = ok.reshape(z.shape[0], z.shape[2])[:, None, :]
            z = torch.where(okz, cand, z)
            r = torch.where(ok[:, None], r_new, r)
            J = torch.where(ok[:, None, None], J_new, J)
            cost = torch.where(ok, cost_new, cost)
            damping = torch.where(ok, damping / 3, damping * 4).clamp(1e-6, 1e6)
        return z

    def forward(self, x, u=None):
        """Negative ELBO (eq. (5)) for a batch; returns (loss, neg_log_lik, kl)."""
        z_mean, diag_logvar, offdiag = self._encoder_out(x, u)
        extra_kl = None
        if offdiag.shape[1] == 0:
            z_logvar = diag_logvar
            z = F_.reparameterize(z_mean, z_logvar)
        else:
            L = self._cholesky(diag_logvar, offdiag)
            eps = torch.randn_like(z_mean).transpose(1, 2).unsqueeze(-1)
            z = z_mean + (L @ eps).squeeze(-1).transpose(1, 2)
            z_logvar = torch.log((L**2).sum(-1)).transpose(1, 2)  # marginal variances
            extra_kl = F_.gaussian_total_correlation(
                z_logvar.transpose(1, 2), 0.5 * diag_logvar.transpose(1, 2)
            )
        x_mean = self.decode(z, u)
        p_loc, p_logscale = self.prior_params(u, z_mean)
        noise_logvar = self.noise_logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)
        family = "gauss" if self.prior == "standard" else self.prior
        return F_.negative_elbo(
            x,
            x_mean,
            noise_logvar,
            z_mean,
            z_logvar,
            p_loc,
            p_logscale,
            prior=family,
            extra_kl=extra_kl,
        )
