"""A pretrained convolutional iVAE over log-spectrograms: a source prior for separation.

The model of one source's STFT frame ``y_{:,t}`` is the one of
:class:`~sepkit.models.TFSourceModel` (complex Gaussian with a variance per
frequency, ``r_{f,t} = g_t v_f(z_t)``, the frame gain ``g_t`` at its
maximum-likelihood value), but the networks see the whole spectrogram:

- the encoder ``q(z_t | log-spectrogram)`` is a 1-D convolution stack over
  time with the frequencies as channels, so a frame's latent is inferred from
  its neighbours too; it is amortised (FastMVAE, Li et al. 2019): trained once
  on clean speech, it gives the latents of a new mixture's sources in one
  pass, with no network weight trained per mixture;
- the decoder ``v(z)`` is a convolution stack back to log spectral shapes;
- the conditional prior ``p(z_t | u) = N(m_u, diag s_u^2)``, with ``u`` the
  index of the ~1 s segment the frame falls in (the iVAE prior, Khemakhem et
  al. 2020), has parameters that belong to one recording, not to the network.
  They are fitted per recording in closed form (the M-step of EM: the
  Gaussian that best matches the segment's posteriors), under a standard
  normal hyperprior, both in training and when a mixture is separated
  (:meth:`SpeechSourcePrior.segment_prior`).

References
----------
Kameoka, Li, Inoue, Makino (2019). Supervised determined source separation
with multichannel variational autoencoder. Neural Computation 31(9).
Li, Kameoka, Inoue, Makino (2019). FastMVAE: a fast optimization algorithm
for the multichannel variational autoencoder method. arXiv:1904.xxxxx
(IEEE Access 8, 2020).
Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
nonlinear ICA: a unifying framework. AISTATS.
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import kl_gaussian, reparameterize

__all__ = ["SpeechSourcePrior", "segment_index"]

# Range of the decoded log spectral shape (mean zero over frequency): keeps
# the IP weights 1/r finite in silent bands, and exp far from overflow.
_LOGV_MIN = -12.0
_LOGV_MAX = 20.0
# Floor of the power under the log, relative to the frame's mean power.
_POWER_FLOOR = 1e-8


def segment_index(n_frames: int, segment_frames: int, device=None) -> torch.Tensor:
    """u of every frame: ``t // segment_frames``, shape (n_frames,), long."""
    return torch.arange(n_frames, device=device) // max(1, int(segment_frames))


class SpeechSourcePrior(nn.Module):
    """Convolutional encoder, decoder and per-recording segment prior over spectrograms.

    Parameters
    ----------
    n_freqs : int
        STFT bins per frame (``n_fft // 2 + 1``).
    n_latent : int
        Dimension of z per frame.
    n_hidden : int
        Channels of the convolution stacks.
    kernel_size : int
        Temporal kernel of the hidden convolutions (odd; frames of context).
    """

    def __init__(self, n_freqs: int, n_latent: int = 16, n_hidden: int = 128, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        self.n_freqs = int(n_freqs)
        self.n_latent = int(n_latent)
        self.n_hidden = int(n_hidden)
        self.kernel_size = int(kernel_size)
        pad = kernel_size // 2
        act = nn.LeakyReLU(0.2)
        # The first and last layers act per frame (kernel 1): they carry the
        # frequency axis, the bulk of the weights; the context is in between.
        self.encoder = nn.Sequential(
            nn.Conv1d(n_freqs + 1, n_hidden, 1),
            act,
            nn.Conv1d(n_hidden, n_hidden, kernel_size, padding=pad),
            act,
            nn.Conv1d(n_hidden, n_hidden, kernel_size, padding=pad),
            act,
            nn.Conv1d(n_hidden, 2 * n_latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(n_latent, n_hidden, kernel_size, padding=pad),
            act,
            nn.Conv1d(n_hidden, n_hidden, kernel_size, padding=pad),
            act,
            nn.Conv1d(n_hidden, n_freqs, 1),
        )

    def config(self) -> dict:
        """Constructor arguments (for save/load)."""
        return dict(
            n_freqs=self.n_freqs,
            n_latent=self.n_latent,
            n_hidden=self.n_hidden,
            kernel_size=self.kernel_size,
        )

    @staticmethod
    def features(power: torch.Tensor) -> torch.Tensor:
        """Log spectral shape per frame and the frame's log level (scale-free).

        power : Tensor, shape (batch, n_freqs, n_frames), nonnegative
        -> Tensor, shape (batch, n_freqs + 1, n_frames): log power minus its
        mean over frequency, then the frame's mean log power minus the
        recording's (so silence and speech are told apart at any scale).
        """
        mean = power.mean(dim=1, keepdim=True)
        logp = torch.log(power + _POWER_FLOOR * mean.mean(dim=2, keepdim=True) + 1e-30)
        level = logp.mean(dim=1, keepdim=True)
        return torch.cat([logp - level, level - level.mean(dim=2, keepdim=True)], dim=1)

    def encode(self, power: torch.Tensor):
        """q(z | spectrogram): mean and log-variance, shapes (batch, n_latent, n_frames)."""
        mean, logvar = self.encoder(self.features(power)).chunk(2, dim=1)
        return mean, logvar.clamp(-10.0, 5.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """log v(z), shape (batch, n_freqs, n_frames), mean zero over frequency."""
        logv = self.decoder(z)
        logv = logv - logv.mean(dim=1, keepdim=True)
        return logv.clamp(_LOGV_MIN, _LOGV_MAX)

    @staticmethod
    def gain_nll(power: torch.Tensor, logv: torch.Tensor):
        """ML frame gain and the complex-Gaussian NLL per frame, divided by n_freqs.

        With ``g_t = mean_f(|y_{f,t}|^2 / v_{f,t})`` (the maximiser) plugged
        in, ``-log N_c(y_t; 0, g_t v_t) / F = log g_t + mean_f log v + 1``
        (dropping log pi). Returns (log_gain, nll), shapes (batch, n_frames).
        """
        gain = (power * torch.exp(-logv)).mean(dim=1).clamp_min(1e-30)
        log_gain = torch.log(gain)
        return log_gain, log_gain + logv.mean(dim=1) + 1.0

    @staticmethod
    def segment_prior(mean: torch.Tensor, logvar: torch.Tensor, u: torch.Tensor):
        """Closed-form segment prior p(z | u) = N(m_u, s_u^2) of one recording.

        The M-step of EM for the prior's parameters under a standard normal
        hyperprior on m_u (and the mode of an inverse-gamma-like shrinkage of
        s_u^2 towards 1): with ``n`` frames in segment u,
        ``m_u = sum_t mu_t / (n + 1)`` and
        ``s_u^2 = (sum_t (sigma_t^2 + (mu_t - m_u)^2) + 1) / (n + 1)``.

        Parameters
        ----------
        mean, logvar : Tensor, shape (batch, n_latent, n_frames)
        u : Tensor, shape (n_frames,), long
            Segment of every frame (:func:`segment_index`).

        Returns
        -------
        prior_mean, prior_logvar : Tensor, shape (batch, n_latent, n_frames)
            The segment's parameters at each of its frames.
        """
        n_seg = int(u.max()) + 1
        onehot = torch.nn.functional.one_hot(u, n_seg).to(mean.dtype)  # (T, S)
        count = onehot.sum(0) + 1.0  # (S,)
        m = (mean @ onehot) / count
        dev = torch.exp(logvar) + (mean - m @ onehot.T).square()
        s2 = (dev @ onehot + 1.0) / count
        return m @ onehot.T, torch.log(s2 @ onehot.T)

    def loss(self, power: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per frame and frequency (a scalar), one-sample estimate.

        power : (batch, n_freqs, n_frames) clean source power; u : (n_frames,).
        """
        mean, logvar = self.encode(power)
        z = reparameterize(mean, logvar)
        _, nll = self.gain_nll(power, self.decode(z))
        pm, plv = self.segment_prior(mean, logvar, u)
        kl = kl_gaussian(mean, logvar, pm, plv).sum(dim=1)  # (batch, n_frames)
        return (nll + kl / self.n_freqs).mean()

    def forward(self, power: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The training loss (:meth:`loss`); forward, so that DistributedDataParallel syncs."""
        return self.loss(power, u)

    @torch.no_grad()
    def variances(self, power: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """r = g v(E[z | x, u]) for every frame: the variances the IP update weighs by.

        The latent is the posterior mean under the recording's segment prior:
        the product of the encoder's Gaussian and N(m_u, s_u^2).

        power : (batch, n_freqs, n_frames) -> (batch, n_freqs, n_frames).
        """
        mean, logvar = self.encode(power)
        pm, plv = self.segment_prior(mean, logvar, u)
        prec_q, prec_p = torch.exp(-logvar), torch.exp(-plv)
        z = (mean * prec_q + pm * prec_p) / (prec_q + prec_p)
        logv = self.decode(z)
        log_gain, _ = self.gain_nll(power, logv)
        return torch.exp(logv + log_gain[:, None, :])
