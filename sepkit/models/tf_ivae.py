"""The iVAE source model for time-frequency (convolutive) separation.

Each separated source frame ``y_{n,:,t}`` (all frequencies of one STFT frame)
is modelled as zero-mean complex Gaussian with a variance per frequency,

    y_{n,f,t} ~ N_c(0, r_{n,f,t}),   r_{n,f,t} = g_{n,t} v_f(z_{n,t}),

where ``v(z)`` is a spectral shape decoded from a small latent ``z`` and
``g_{n,t}`` the frame's gain (set to its maximum-likelihood value, so the
network only has to model shape, as NMF bases do in ILRMA). The latents have
the iVAE conditional prior ``p(z | u, n) = N(mu_{n,u}, diag sigma^2_{n,u})``
with ``u`` the index of the time segment the frame falls in (Khemakhem et al.
2020), and the encoder is ``q(z | log-spectrum, u, n)``. This is the MVAE of
Kameoka et al. (2019) with the class label replaced by the iVAE's segment
prior, trained on the mixture itself rather than on a speech corpus.

References
----------
Kameoka, Li, Inoue, Makino (2019). Supervised determined source separation
with multichannel variational autoencoder. Neural Computation 31(9).
Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
nonlinear ICA: a unifying framework. AISTATS.
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import kl_gaussian, reparameterize

__all__ = ["TFSourceModel"]

# Smallest spectral shape value relative to the frame's mean: keeps 1/r finite
# in bands where a source is silent (IP weights are 1/r).
_LOGV_MIN = -12.0
# Largest value: exp stays far from float32 overflow even after adding the
# frame's log-gain (87 dB above the frame's geometric mean).
_LOGV_MAX = 20.0


class TFSourceModel(nn.Module):
    """Encoder, decoder and conditional prior over per-frame source spectra.

    Parameters
    ----------
    n_freqs : int
        STFT bins per frame.
    n_sources : int
    n_segments : int
        Number of distinct u (time segments).
    n_latent : int
        Dimension of z per source frame.
    n_hidden : int
        Width of the one hidden layer of encoder and decoder.
    """

    def __init__(
        self, n_freqs: int, n_sources: int, n_segments: int, n_latent: int = 8, n_hidden: int = 64
    ):
        super().__init__()
        self.n_freqs = n_freqs
        self.n_sources = n_sources
        self.n_segments = n_segments
        self.n_latent = n_latent
        self.n_hidden = n_hidden
        n_u = n_sources * n_segments
        # Encoder q(z | x, u): the u embedding is added to the first layer,
        # which equals concatenating a one-hot u.
        self.enc_in = nn.Linear(n_freqs, n_hidden)
        self.enc_u = nn.Embedding(n_u, n_hidden)
        self.enc_out = nn.Linear(n_hidden, 2 * n_latent)
        # Conditional prior p(z | u): a mean and log-variance per (source, segment).
        self.prior = nn.Embedding(n_u, 2 * n_latent)
        nn.init.zeros_(self.prior.weight)
        self.dec = nn.Sequential(
            nn.Linear(n_latent, n_hidden), nn.LeakyReLU(0.2), nn.Linear(n_hidden, n_freqs)
        )
        nn.init.zeros_(self.enc_u.weight)

    def config(self) -> dict:
        """Constructor arguments (for save/load)."""
        return dict(
            n_freqs=self.n_freqs,
            n_sources=self.n_sources,
            n_segments=self.n_segments,
            n_latent=self.n_latent,
            n_hidden=self.n_hidden,
        )

    @staticmethod
    def features(power: torch.Tensor) -> torch.Tensor:
        """Log-spectral shape: log power minus its mean over frequency.

        power : Tensor, shape (..., n_freqs) -> same shape.
        """
        logp = torch.log(power + 1e-10 * power.mean(-1, keepdim=True) + 1e-30)
        return logp - logp.mean(-1, keepdim=True)

    def encode(self, power: torch.Tensor, codes: torch.Tensor):
        """q(z | x, u): mean and log-variance, shape (..., n_latent) each.

        power : (..., n_freqs) source power; codes : (...) long, source * n_segments + u.
        """
        h = nn.functional.leaky_relu(self.enc_in(self.features(power)) + self.enc_u(codes), 0.2)
        mean, logvar = self.enc_out(h).chunk(2, dim=-1)
        return mean, logvar.clamp(-10.0, 5.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Log spectral shape log v(z), shape (..., n_freqs), mean zero over frequency."""
        logv = self.dec(z)
        logv = logv - logv.mean(-1, keepdim=True)
        return logv.clamp(_LOGV_MIN, _LOGV_MAX)

    @staticmethod
    def gain_nll(power: torch.Tensor, logv: torch.Tensor):
        """ML frame gain and the complex-Gaussian negative log-likelihood per frame.

        -log N_c(y; 0, g v) summed over frequency, with g = mean_f(|y|^2 / v)
        (its maximiser) plugged in: F log g + sum_f log v + F (+ F log pi).

        Returns (log_gain, nll), shapes (...,) each; nll is divided by n_freqs.
        """
        ratio = power * torch.exp(-logv)
        gain = ratio.mean(-1).clamp_min(1e-30)
        log_gain = torch.log(gain)
        nll = log_gain + logv.mean(-1) + 1.0
        return log_gain, nll

    def loss(self, power: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per frame and frequency (a scalar), one-sample estimate."""
        mean, logvar = self.encode(power, codes)
        z = reparameterize(mean, logvar)
        _, nll = self.gain_nll(power, self.decode(z))
        pm, plv = self.prior(codes).chunk(2, dim=-1)
        kl = kl_gaussian(mean, logvar, pm, plv.clamp(-10.0, 5.0)).sum(-1)
        return (nll + kl / self.n_freqs).mean()

    @torch.no_grad()
    def variances(self, power: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """r = g v(E[z]) for every frame: the variances the IP update weighs by.

        power : (..., n_freqs) -> (..., n_freqs).
        """
        mean, _ = self.encode(power, codes)
        logv = self.decode(mean)
        log_gain, _ = self.gain_nll(power, logv)
        return torch.exp(logv + log_gain[..., None])
