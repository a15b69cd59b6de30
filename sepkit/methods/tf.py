"""The time-frequency family: convolutive separation of multichannel audio.

Real rooms mix every source through an impulse response hundreds of
milliseconds long, which the per-sample time-domain iVAE cannot model. In the
STFT domain with ~256 ms frames the mixing becomes one complex matrix per
frequency, and separation is a demixing matrix ``W_f`` per frequency. This
module learns them as MVAE does (Kameoka et al. 2019), with the iVAE as the
source model (see :class:`sepkit.models.TFSourceModel`):

1. STFT (Hann, ~256 ms frames, hop 1/4), per-frequency PCA whitening onto the
   ``n_sources`` strongest directions.
2. Initialisation: ``n_init`` AuxIVA iterations (IP updates with the spherical
   Laplace weights, Ono 2011). MVAE is likewise initialised from ILRMA; we say
   so because a part of the result is owed to it.
3. Alternation, ``n_iter`` times: a few Adam steps on the iVAE's ELBO for the
   current separated spectra (complex-Gaussian likelihood with variances
   ``r = g v(z)``, conditional prior ``p(z | u)`` over ~1 s time segments), then
   one IP sweep of ``W`` with weights ``1 / r``. Both steps increase the same
   likelihood (the ELBO's reconstruction term plus ``log |det W_f|^2``).
4. Scale: projection back onto the reference microphone (minimal distortion
   principle). Permutation across frequencies: the source model is joint over
   frequency (one gain and one latent per frame), as in IVA.
5. Optionally (``postfilter``, off by default here), each image blended with
   a soft-mask estimate of it (:func:`sepkit.functional_tf.wiener_blend`),
   which lowers the cross-talk a reverberant room leaves in the demixed
   images of sparse sources such as speech.

After fitting, separation is a fixed linear filter per frequency, so any
length of audio can be separated chunk by chunk with bounded memory and the
same result as in one piece (:func:`sepkit.tf_separation.separate_file`).

References
----------
Kameoka, Li, Inoue, Makino (2019). Supervised determined source separation
with multichannel variational autoencoder. Neural Computation 31(9).
Ono (2011). Stable and fast update rules for independent vector analysis based
on auxiliary function technique. WASPAA.
Kitamura et al. (2016). Determined blind source separation unifying IVA and
NMF. IEEE/ACM TASLP 24(9).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import functional_tf as F
from .._check import check_float, check_int
from ..models.tf_ivae import TFSourceModel
from ..windows import STREAM_CHUNK_SECONDS, TF_MAX_FIT_SECONDS, check_fit_blocks, fit_blocks
from .base import COMMON_PARAMS, FitInput, Fitted, check_fit_param_keys

# ------------------------------------------------------------------ defaults
# Measured figures below: 2x2 CMU ARCTIC rooms, 7 s, 3 rooms per RT60 (SI-SDRi).
# AuxIVA iterations before the iVAE source model takes over: pyroomacoustics'
# own default for AuxIVA is 20; the iVAE needs a rough separation to start from.
_N_INIT = 20
# Alternations of (Adam steps on the ELBO, one IP sweep). 20 / 40 / 80 gave
# 5.7 / 5.8 / 5.9 dB at RT60 0.15 s and 1.1 / 1.3 / 1.6 dB at 0.35 s (64 ms
# frames, 5 Adam steps); 40 is the compromise with time.
_N_ITER = 40
# Adam steps per alternation: few, so the source model follows W (MVAE does
# likewise). Measured on 2x2 rooms (64 ms frames): 2 steps gave +0.2, +0.8 and
# +0.9 dB SI-SDRi over 5 steps at RT60 0.15/0.35/0.6 s, in half the time.
_N_ADAM = 2
# Adam learning rate for the source model (not tuned).
_LR = 3e-3
# Frames per source in each Adam step: a random minibatch keeps a step's cost
# (profiled: a full-batch step on 10 s took 25 ms) independent of the length of the fit audio.
_BATCH_FRAMES = 128
# Gradient-norm clip for the source model's Adam steps (measured maxima 0.8-1.1
# on the recipe's 7 s mixtures: only runaway steps are touched).
_MAX_GRAD_NORM = 10.0
# Segment length for u, in seconds: speech statistics change over ~0.5-1 s
# (0.5 s gave -0.4 to +0.6 dB against 1 s: no clear gain).
_SEGMENT_SECONDS = 1.0
# Most audio used to fit, and the audio separated at a time when streaming:
# sepkit.windows (the streaming module shares them without importing torch).
_MAX_FIT_SECONDS = TF_MAX_FIT_SECONDS
_CHUNK_SECONDS = STREAM_CHUNK_SECONDS
# Share of the soft-mask estimate in each output (functional_tf.wiener_blend).
# The mask helps where the sources are sparse in time-frequency, as speech is:
# for the speech source model (methods.tf_pretrained, default 0.5) it was
# chosen on 72 rooms never used for the recipe's tables
# (recipes/speech_source_model, room seeds 10-15, 2x2 and 3x3), where 0.25 /
# 0.5 / 0.75 / 1 changed the mean SI-SDRi by +0.32 / +0.39 / +0.21 / -0.17 dB
# (2x2) and +0.31 / +0.46 / +0.45 / +0.25 dB (3x3), 0.5 ahead of none in 81 %
# and 97 % of the rooms. This family separates any sound, and on sources that
# are not sparse (tests/test_tf_separation.py: Laplace noise) the mask costs
# 1.8 dB, so here it is off unless asked for.
POSTFILTER = 0.0
SPEECH_POSTFILTER = 0.5


def check_postfilter(value) -> float:
    """The ``postfilter`` fit parameter: a share in [0, 1]."""
    return check_float("postfilter", value, min_value=0.0, max_value=1.0)


# The shortest STFT frame the tf family takes (4 ms: 64 samples at 16 kHz).
MIN_FRAME_SECONDS = 0.004


@dataclass
class TFConfig:
    """Settings of the time-frequency separation (defaults: see module constants)."""

    n_init: int = _N_INIT
    n_iter: int = _N_ITER
    n_adam: int = _N_ADAM
    lr: float = _LR
    segment_seconds: float = _SEGMENT_SECONDS
    max_fit_seconds: float = _MAX_FIT_SECONDS
    ref_channel: int = 0
    frame_seconds: float = F._FRAME_SECONDS
    n_latent: int = 8
    n_hidden: int = 64
    batch_frames: int = _BATCH_FRAMES
    postfilter: float = POSTFILTER

    def validate(self) -> TFConfig:
        check_int("n_init", self.n_init, min_value=0)
        check_int("n_iter", self.n_iter, min_value=0)
        check_int("n_adam", self.n_adam, min_value=1)
        check_float("lr", self.lr, min_value=0.0, strict_min=True)
        check_float("segment_seconds", self.segment_seconds, min_value=0.0, strict_min=True)
        check_float("max_fit_seconds", self.max_fit_seconds, min_value=0.0, strict_min=True)
        check_int("ref_channel", self.ref_channel, min_value=0)
        # Frames under 4 ms have no frequency resolution to separate by (audit: 1e-5 s
        # ran with 16-sample FFTs and returned garbage without a word).
        check_float("frame_seconds", self.frame_seconds, min_value=MIN_FRAME_SECONDS)
        check_int("n_latent", self.n_latent, min_value=1)
        check_int("n_hidden", self.n_hidden, min_value=1)
        check_int("batch_frames", self.batch_frames, min_value=1)
        check_postfilter(self.postfilter)
        return self


def centred(data: np.ndarray) -> np.ndarray:
    """``data`` (n_channels, n_times) less each channel's mean, float32.

    A DC offset is no source: left in, it is demixed at the lowest bins like
    one, and with a large offset the outputs are mostly DC and the edges'
    steps (audit: SI-SDRi -13 dB where the speech itself separated at +10 dB).
    So the time-frequency families fit on centred blocks and separate centred
    channels (:meth:`TFDemixer._chunks`); the sources then sum to the
    reference microphone less its mean.
    """
    data = np.asarray(data, np.float32)
    return data - data.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)


def _channel_means(read, n_times: int, n_channels: int, block: int) -> np.ndarray:
    """Each channel's mean over [0, n_times) of ``read(lo, hi)``, shape (n_channels, 1)."""
    total = np.zeros(n_channels, np.float64)
    for lo in range(0, n_times, block):
        total += read(lo, min(lo + block, n_times)).sum(axis=1, dtype=np.float64)
    return (total / max(n_times, 1)).astype(np.float32)[:, None]


@dataclass
class TFDemixer:
    """A fitted time-frequency separation: everything ``transform`` needs.

    Attributes
    ----------
    demix : ndarray, shape (n_freqs, n_sources, n_channels), complex64
        Demixing per frequency, already scaled by projection back, so that
        ``demix[f] @ x_{f,t}`` are the sources' images at the reference mic.
    n_fft, hop : int
        STFT frame and hop in samples.
    sample_rate : float
    model : TFSourceModel
        The fitted iVAE source model.
    history : list of dict
    postfilter : float in [0, 1]
        Share of the soft-mask estimate in each output
        (:func:`sepkit.functional_tf.wiener_blend`); 0: the demixed images.
    """

    demix: np.ndarray
    n_fft: int
    hop: int
    sample_rate: float
    model: TFSourceModel
    history: list = field(default_factory=list)
    postfilter: float = 0.0

    @property
    def n_sources(self) -> int:
        return self.demix.shape[1]

    @property
    def n_channels(self) -> int:
        return self.demix.shape[2]

    def separate(self, data: np.ndarray, *, chunk_seconds: float = _CHUNK_SECONDS, progress=None):
        """Apply the demixing to a whole array, chunk by chunk.

        Parameters
        ----------
        data : ndarray, shape (n_channels, n_times)

        Returns
        -------
        sources : ndarray, shape (n_sources, n_times), float32
        """
        n_times = data.shape[1]
        out = np.empty((self.n_sources, n_times), np.float32)
        for start, stop, block in self._chunks(
            lambda lo, hi: data[:, lo:hi], n_times, chunk_seconds
        ):
            out[:, start:stop] = block
            if progress is not None:
                progress.update(stop - start)
        return out

    def _chunk_len(self, chunk_seconds: float) -> int:
        n = max(self.n_fft * 4, int(chunk_seconds * self.sample_rate))
        return (n // self.hop) * self.hop

    def _chunks(self, read, n_times: int, chunk_seconds: float):
        """Yield (start, stop, sources) over [0, n_times), each from ``read(lo, hi)``.

        Chunks start on multiples of the hop and are read with ``n_fft``
        samples of context on each side, so every output sample comes from the
        same STFT frames as in a one-piece transform (identical up to float
        rounding). The channels are centred first (:func:`centred`; one pass of
        ``read`` finds their means).
        """
        chunk = self._chunk_len(chunk_seconds)
        pad = self.n_fft
        demix = torch.from_numpy(self.demix)
        mean = _channel_means(read, n_times, self.n_channels, chunk)
        for start in range(0, n_times, chunk):
            stop = min(n_times, start + chunk)
            lo, hi = max(0, start - pad), min(n_times, stop + pad)
            # Keep frame k of the chunk on the global frame grid.
            x = np.zeros((self.n_channels, hi - (start - pad)), np.float32)
            x[:, lo - (start - pad) :] = read(lo, hi) - mean
            X = F.stft(torch.from_numpy(x), self.n_fft, self.hop)
            Y = F.wiener_blend(demix @ X, self.postfilter)
            y = F.istft(Y, self.n_fft, self.hop, x.shape[1]).numpy()
            yield start, stop, y[:, pad : pad + (stop - start)]

    def inverse(self, sources: np.ndarray) -> np.ndarray:
        """Mix sources (images at the reference mic) back to all microphones.

        Through the inverse of the demixing, so only approximately: a matrix
        per frequency applied to an STFT gives one that no signal has (its
        frames overlap), and the resynthesis drops what does not fit (-15 to
        -18 dB of the other microphones in 2x2 rooms of RT60 0.4 s, audits); with
        ``postfilter > 0`` the sources are not the demixing's alone either.
        The reference microphone comes back exactly where there are as many
        microphones as sources (the sources sum to it, less its mean).

        sources : (n_sources, n_times) -> (n_channels, n_times), float32.
        """
        mixing = torch.linalg.pinv(torch.from_numpy(self.demix))  # (F, M, N)
        n_times = sources.shape[1]
        S = F.stft(
            torch.from_numpy(np.ascontiguousarray(sources, np.float32)), self.n_fft, self.hop
        )
        return F.istft(mixing @ S, self.n_fft, self.hop, n_times).numpy().astype(np.float32)


def check_audio_input(
    data: np.ndarray, n_sources: int, n_fft: int, what: str = "X", short: str = "domain='time'"
) -> None:
    """The bad-input checks of the audio path, with messages that say the fix."""
    n_channels, n_times = data.shape
    if n_channels == 1 and n_sources >= 2:
        raise ValueError(
            f"{what} is mono (1 channel) but n_sources={n_sources}: separating several "
            "sources needs at least as many microphones as sources. Pass a multichannel "
            "recording, or n_sources=1."
        )
    if n_sources > n_channels:
        raise ValueError(
            f"n_sources={n_sources} is more than the {n_channels} channels of {what}. "
            f"Pass n_sources <= {n_channels}, or record more channels."
        )
    if n_times < n_fft:
        raise ValueError(
            f"{what} has {n_times} samples, shorter than one STFT window ({n_fft} samples); "
            "time-frequency separation needs at least one window. Pass a longer recording, "
            f"or {short}."
        )
    finite = np.isfinite(data)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{what} contains {int((~finite).sum())} NaN or Inf samples (channel(s) "
            f"{rows[:10].tolist()}). Replace them (e.g. np.nan_to_num) before separating."
        )


def _segment_codes(n_frames_per_block, segment_frames, n_sources):
    """u per frame: the segment index (blocks never share a segment)."""
    seg = []
    offset = 0
    for n in n_frames_per_block:
        k = np.arange(n) // segment_frames
        n_seg = max(1, int(np.ceil(n / segment_frames)))
        # A last segment shorter than half is merged into the one before it.
        if n_seg > 1 and n - (n_seg - 1) * segment_frames < segment_frames // 2:
            k = np.minimum(k, n_seg - 2)
            n_seg -= 1
        seg.append(k + offset)
        offset += n_seg
    seg = np.concatenate(seg)
    codes = np.arange(n_sources)[:, None] * offset + seg[None, :]
    return torch.from_numpy(codes.astype(np.int64)), offset


def fit_tf(
    blocks,
    sample_rate: float,
    n_sources: int,
    *,
    config: TFConfig | None = None,
    random_state: int | None = None,
    verbose: bool = False,
) -> TFDemixer:
    """Fit the time-frequency iVAE separation.

    Parameters
    ----------
    blocks : list of ndarray, each shape (n_channels, n_times_i)
        Audio to fit on (one block for a whole recording; several spread-out
        blocks for a long file; see :func:`fit_blocks`).
    sample_rate : float
    n_sources : int
    config : TFConfig or None
    random_state : int or None
    verbose : bool
        Show a progress bar.

    Returns
    -------
    TFDemixer
    """
    cfg = (config or TFConfig()).validate()
    n_fft = F.fft_size_for(sample_rate, cfg.frame_seconds)
    hop = n_fft // 4
    # Each block centred (a DC offset is no source: see centred).
    Xs = [F.stft(torch.from_numpy(centred(b)), n_fft, hop) for b in blocks]
    X = torch.cat(Xs, dim=-1)  # (F, M, T)
    n_freqs, n_channels, n_frames = X.shape
    if cfg.ref_channel >= n_channels:
        raise ValueError(
            f"'ref_channel' must be < the {n_channels} channels, got {cfg.ref_channel}."
        )
    P = F.whiten_per_frequency(X, n_sources)  # (F, N, M)
    Xw = P @ X  # (F, N, T)
    W = torch.eye(n_sources, dtype=X.dtype).expand(n_freqs, n_sources, n_sources).clone()

    seed = (
        random_state if random_state is not None else int(np.random.default_rng().integers(2**31))
    )
    segment_frames = max(1, int(round(cfg.segment_seconds * sample_rate / hop)))
    codes, n_segments = _segment_codes([x.shape[-1] for x in Xs], segment_frames, n_sources)
    history = []
    # verbose="auto": tqdm's rule (disable=None), shown only on a terminal.
    disable = None if verbose == "auto" else not verbose
    bar = tqdm(total=cfg.n_init + cfg.n_iter, desc="tf-ivae", disable=disable, leave=False)
    outer = F.frame_outer_products(Xw)  # every sweep re-weights the same frames
    for _ in range(cfg.n_init):
        W = F.ip_sweep(W, F.weighted_covariances(outer, F.auxiva_weights(W @ Xw)))
        bar.update(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TFSourceModel(n_freqs, n_sources, n_segments, cfg.n_latent, cfg.n_hidden)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(seed)
        n_batch = min(cfg.batch_frames, n_frames)
        for it in range(cfg.n_iter):
            Y = W @ Xw
            power = F.power(Y).permute(1, 2, 0)  # (N, T, F)
            # Scale is free per source (IP renormalises); keep the net's input O(1).
            power = power / power.mean(dim=(1, 2), keepdim=True).clamp_min(1e-30)
            model.train()
            for _ in range(cfg.n_adam):
                idx = torch.randperm(n_frames, generator=gen)[:n_batch]
                opt.zero_grad(set_to_none=True)
                loss = model.loss(power[:, idx], codes[:, idx])
                if torch.isfinite(loss):
                    loss.backward()
                    # Few frames against many bins can make a step explode:
                    # clip, and skip any step whose gradient is not finite.
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
                    if torch.isfinite(norm):
                        opt.step()
            model.eval()
            r = model.variances(power, codes)  # (N, T, F)
            floor = 1e-6 * r.mean(dim=(1, 2), keepdim=True)
            weights = 1.0 / torch.maximum(r, floor).permute(0, 2, 1)
            if not torch.isfinite(weights).all():
                # An overflowing source model (e.g. very few frames) must not
                # spoil W: fall back to the AuxIVA weights for this sweep.
                weights = F.auxiva_weights(W @ Xw)
            W_new = F.ip_sweep(W, F.weighted_covariances(outer, weights))
            # Keep the previous matrices where a sweep went non-finite.
            ok = torch.isfinite(torch.view_as_real(W_new)).flatten(1).all(1)
            W = torch.where(ok[:, None, None], W_new, W)
            history.append({"iter": it + 1, "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    demix = W @ P
    demix = F.projection_back_scales(demix, cfg.ref_channel)[:, :, None] * demix
    if not history:
        history.append({"iter": 0, "loss": float("nan")})
    return TFDemixer(
        demix=demix.numpy().astype(np.complex64),
        n_fft=n_fft,
        hop=hop,
        sample_rate=float(sample_rate),
        model=model.eval(),
        history=history,
        postfilter=cfg.postfilter,
    )


# ------------------------------------------------------- choosing the domain
# Largest cross-spectrum phase score (functional_tf.cross_spectrum_phase) still
# taken for instantaneous mixing. Measured on recipes/audio_bss's 100 speech
# mixtures: instantaneous (linear and tanh) <= 0.058, rooms >= 0.22.
_INSTANTANEOUS_PHASE = 0.12
# The score needs only a rough cross-spectrum: 64 ms frames over <= 60 s.
_PHASE_FRAME_SECONDS = 0.064


def mixing_phase_score(data: np.ndarray, sample_rate: float) -> float:
    """:func:`functional_tf.cross_spectrum_phase` of (up to 60 s of) a recording."""
    n_fft = F.fft_size_for(sample_rate, _PHASE_FRAME_SECONDS)
    blocks = [data[:, a:b] for a, b in fit_blocks(data.shape[1], sample_rate, _MAX_FIT_SECONDS)]
    X = torch.cat(
        [
            F.stft(torch.from_numpy(np.ascontiguousarray(b, np.float32)), n_fft, n_fft // 4)
            for b in blocks
        ],
        dim=-1,
    )
    return F.cross_spectrum_phase(X)


def measure_domain(rec, n_sources: int) -> tuple[str, float | None]:
    """'time' or 'tf' for an audio Recording, and its mixing phase score.

    Near 0 (:func:`mixing_phase_score`) means an instantaneous (possibly
    saturating) mix, fitted with 'time'; otherwise, or when the channels are
    unrelated (NaN), 'tf' for convolutive rooms. Called by
    :func:`sepkit.methods.resolve_domain` for ``domain="auto"``.
    """
    n_fft = F.fft_size_for(rec.sample_rate)
    if rec.data.shape[1] < n_fft:
        # Shorter than one STFT frame: no time-frequency fit, but the time domain can.
        return "time", None
    # Audio errors (mono, NaN) before measuring anything.
    check_audio_input(rec.data, n_sources, n_fft)
    if rec.data.shape[0] < 2:  # one channel, one source: nothing to unmix
        return "tf", None
    score = mixing_phase_score(rec.data, rec.sample_rate)
    if np.isnan(score):  # unrelated channels: no phase to measure, nothing to store
        return "tf", None
    return ("time" if score <= _INSTANTANEOUS_PHASE else "tf"), score


NAME = "tf"
# fit's keywords it honours: none (it runs on the CPU, takes no steps, keeps no checkpoints).
HOOKS = frozenset()
# The estimator settings this family reads; its own settings are TFConfig's
# fields, given as IVAESeparator(fit_params={...}).
PARAMS = COMMON_PARAMS
FIT_PARAMS = tuple(f.name for f in fields(TFConfig))


def check_fit_params(fit_params) -> TFConfig:
    """``fit_params`` (a dict of TFConfig fields, or None) as a validated TFConfig."""
    fit_params = check_fit_param_keys(
        fit_params, FIT_PARAMS, "domain='tf'", " (sepkit.methods.tf.TFConfig)"
    )
    return TFConfig(**fit_params).validate()


class DemixerFit(Fitted):
    """What every fit that ends in per-frequency demixing matrices (``demixer``) shares."""

    demixer: TFDemixer

    @property
    def n_sources(self) -> int:
        return self.demixer.n_sources

    @property
    def n_channels(self) -> int:
        return self.demixer.n_channels

    @property
    def history(self) -> list:
        return self.demixer.history

    def describe(self) -> dict:
        return dict(
            family=self.family,
            domain="tf",
            mixing="convolutive",
            prior="gauss",
            unwarped=False,
            postfilter=self.demixer.postfilter,
        )


@dataclass
class TFFit(DemixerFit):
    """A fitted time-frequency separation (the :class:`Fitted` of this family)."""

    demixer: TFDemixer
    ch_names: tuple | None = None
    family: str = NAME

    def sources(self, data, u=None):
        _check_no_u(u, "pass u=None for domain='tf'.")
        check_audio_input(data, self.n_sources, self.demixer.n_fft)
        return self.demixer.separate(np.asarray(data, np.float32))

    def reconstruct(self, sources, u=None):
        return self.demixer.inverse(sources)

    def components(self):
        raise ValueError(
            "get_components is defined for domain='time' only: a domain='tf' separator "
            "has one demixing matrix per frequency, in tf_.demix (n_freqs, n_sources, "
            "n_channels)."
        )

    def attributes(self) -> dict:
        d = self.demixer
        return dict(
            domain_="tf",
            tf_=d,
            model_=d.model,
            history_=d.history,
            n_steps_run_=len(d.history),
            # The source model's conditional prior is Gaussian per (source, segment),
            # with a diagonal Gaussian posterior.
            prior_="gauss",
            posterior_="diag",
            mixing_="convolutive",
            n_segments_=d.model.n_segments,
            n_u_=None,
            classes_=None,
            window_samples_=int(round(_SEGMENT_SECONDS * d.sample_rate)),
            annotation_u_=False,
        )

    def state(self):
        d = self.demixer
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in d.model.state_dict().items()
        }
        # Complex as two float32 tensors: every safetensors reader handles those.
        tensors["tf.demix_real"] = torch.from_numpy(np.ascontiguousarray(d.demix.real, np.float32))
        tensors["tf.demix_imag"] = torch.from_numpy(np.ascontiguousarray(d.demix.imag, np.float32))
        meta = dict(
            domain_="tf",
            tf_=dict(
                n_fft=d.n_fft,
                hop=d.hop,
                sample_rate=d.sample_rate,
                model=d.model.config(),
                postfilter=d.postfilter,
            ),
            history_=d.history,
        )
        return tensors, meta


def _check_no_u(u, fix):
    if u is not None:
        raise ValueError(f"u applies to domain='time' only; {fix}")


def fit(inp: FitInput, opts: dict, **_) -> TFFit:
    """Fit the time-frequency separation on ``inp`` (an audio recording)."""
    if inp.sample_rate is None:
        raise ValueError(
            "domain='tf' needs the sample rate to choose the STFT frame, but X is a plain "
            "array. Pass a Recording (e.g. Recording(X, sample_rate=16000, kind='audio'))."
        )
    _check_no_u(
        inp.u,
        f"with domain='tf' u is the index of the {_SEGMENT_SECONDS:g} s time segment of every "
        "STFT frame. Pass u=None, or domain='time'.",
    )
    config = check_fit_params(opts.get("fit_params"))
    n_fft = F.fft_size_for(inp.sample_rate)  # the checks' frame (the default one)
    check_audio_input(inp.data, opts["n_sources"], n_fft)
    ranges = fit_blocks(inp.n_times, inp.sample_rate, config.max_fit_seconds)
    check_fit_blocks(ranges, n_fft, config.max_fit_seconds, inp.sample_rate)
    blocks = [inp.data[:, a:b] for a, b in ranges]
    for b in blocks:
        check_audio_input(b, opts["n_sources"], n_fft)
    demixer = fit_tf(
        blocks,
        inp.sample_rate,
        opts["n_sources"],
        config=config,
        random_state=opts["random_state"],
        verbose=opts["verbose"],
    )
    fitted = TFFit(demixer, inp.ch_names)
    fitted.n_fitted_samples = int(sum(b - a for a, b in ranges))  # a part: max_fit_seconds
    return fitted


def from_state(tensors: dict, meta: dict, params: dict, device) -> TFFit:
    """Rebuild a saved domain='tf' fit."""
    tensors = dict(tensors)
    info = meta["tf_"]
    demix = tensors.pop("tf.demix_real").numpy() + 1j * tensors.pop("tf.demix_imag").numpy()
    model = TFSourceModel(**info["model"])
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items()}, strict=True)
    demixer = TFDemixer(
        demix=demix.astype(np.complex64),
        n_fft=int(info["n_fft"]),
        hop=int(info["hop"]),
        sample_rate=float(info["sample_rate"]),
        model=model.eval(),
        history=meta["history_"],
        # Saved before the post-filter existed: separated as then.
        postfilter=float(info.get("postfilter", 0.0)),
    )
    return TFFit(demixer, tuple(meta["ch_names_"]) if meta.get("ch_names_") else None)
