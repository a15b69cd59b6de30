"""IVAESeparator: the public estimator, in the scikit-learn / MNE-ICA tradition."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from ._atomic import atomic_write
from ._check import (
    NotFittedError,
    check_data_2d,
    check_device,
    check_float,
    check_int,
    check_option,
)
from ._mne_mixin import MNEMixin
from ._version import __version__
from .io.raw import (
    UNLABELLED,
    check_flat_eeg,
    picked_info,
    raw_to_data,
    resolve_raw_u,
    sensors_to_raw,
    sources_to_raw,
)
from .io.recording import Recording
from .models.ivae import _LOGVAR_MIN, ACTIVATIONS, IVAE, POSTERIORS, PRIORS
from .windows import (
    overlapping_training_set,
    resolve_window_samples,
    valid_chunk_starts,
    window_labels,
)

_FORMAT_VERSION = 1
# mixing values fitted by maximum likelihood without a network.
_LINEAR_MIXINGS = ("linear", "post-nonlinear")
# Odd powers in the sensor unwarping of mixing="post-nonlinear" (x^3, x^5, x^7).
_UNWARP_DEGREE = 3
# L-BFGS iterations of the joint fit that learns the unwarping h. Only h is
# kept (see _fit_sensor_unwarp), and it settles long before the full unmixing
# does: on clipped make_eeg recordings (19/32/64 channels) 100 iterations gave
# MCC within 0.002 of 1000 (0.756/0.860/0.898 vs 0.758/0.861/0.900) in a tenth
# of the time (64 channels: 20 s vs 133 s on one CPU thread).
_UNWARP_MAX_ITER = 100
# mixing="auto" keeps the sensor unwarping h it tried (a highpass/lowpass fit
# of EEG) when h changes some channel by this share of its RMS or more
# (``sensor_nonlinearity_``). On recipes/eeg_semisynthetic's unfiltered
# recordings (seeds 0-2, 19/32/64 channels) the largest channel change was at
# most 0.030 on the 18 linear ones and at least 0.216 on the 27 clipped ones;
# EEGLAB's sample recording: 0.009. 0.08 lies between (near their geometric
# mean), a channel that clips alone is enough. Held-out seed 3 (15 recordings):
# linear at most 0.042 (64 channels), clipped at least 0.185.
_UNWARP_KEEP = 0.08
MODEL_SUFFIX = ".safetensors"


def check_model_path(path, what: str = "path") -> Path:
    """``path`` as a Path, if its name ends in ``.safetensors`` (raises ValueError else).

    ``what`` names the argument in the message (``"-o"`` for the command line).
    """
    path = Path(path)
    if path.suffix != MODEL_SUFFIX:
        raise ValueError(
            f"{what} must end in {MODEL_SUFFIX} (a separator is saved as a safetensors "
            f"file), got {str(path)!r}. Name it e.g. {path.stem or 'model'}{MODEL_SUFFIX}."
        )
    return path


# Samples per forward pass at inference: bounds memory for long recordings.
_INFER_CHUNK_SAMPLES = 1 << 16


def _is_mne_raw(obj) -> bool:
    return hasattr(obj, "info") and hasattr(obj, "get_data") and hasattr(obj, "ch_names")


def _bridge_rejected(a: np.ndarray, good) -> np.ndarray:
    """``a`` with the samples outside ``good`` replaced by straight lines.

    Before the fit filter: rejected (BAD) samples stay out of the statistics,
    but a filter would spread an artefact under them over its impulse
    response into the good samples, and the odd powers of the post-nonlinear
    model blow it up (a 5 s artefact of 50x the signal under a BAD
    annotation took a clipped 4-source fit from MCC 0.994 to 0.953; bridged:
    0.9935, tests/test_linear_ivae.py). A line between the neighbouring good
    samples of each channel has no step, so it adds no filter transient.

    Parameters
    ----------
    a : ndarray, shape (n_rows, n_times)
    good : ndarray of bool, shape (n_times,), or None (nothing rejected)

    Returns
    -------
    ndarray, shape (n_rows, n_times)
        A new array when samples were replaced, else ``a`` itself.
    """
    if good is None or good.all():
        return a
    t = np.arange(a.shape[1])
    out = np.array(a, dtype=np.float64, copy=True)
    for row in out:
        row[~good] = np.interp(t[~good], t[good], row[good])
    return out


class IVAESeparator(MNEMixin, TransformerMixin, BaseEstimator):
    """Blind source separation with an identifiable VAE (iVAE).

    Fits the model of Khemakhem et al. (2020): sources z with a factorised
    prior p(z|u) whose location and scale depend on an observed auxiliary
    variable u, mixed by a decoder x = f(z) + noise. Because the sources'
    distribution changes with u (non-stationarity), the sources are
    identifiable up to permutation and per-source transformations, which
    neither plain ICA (for nonlinear mixing) nor a plain VAE achieve.

    By default u is the index of the time window each sample falls in.

    Parameters
    ----------
    n_sources : int
        Number of sources to estimate (<= number of channels).
    prior : {"auto", "gauss", "laplace", "standard", "gengauss"}
        Family of p(z|u). "standard" fits a plain VAE with p(z) = N(0, I) and
        no u: a non-identifiable baseline. "auto" follows the recording:
        "laplace" for EEG (an MNE Raw or a Recording of kind "eeg"), whose
        sources (blinks, bursts) are heavy-tailed within a window, "gauss"
        otherwise; the linear models (``mixing``) use "gauss". "gengauss"
        (linear and post-nonlinear models only): a generalised Gaussian with a
        learned shape per source and a scale per segment
        (:func:`sepkit.functional.gengauss_ivae_nll`), so that sources whose
        variance hardly changes between windows (ECG, line noise) are told
        apart by their non-Gaussianity, as ICA does, while the others still are
        by their non-stationarity; shapes in ``source_shape_``. It passes over
        all samples per iteration, so it fits slower than "gauss" (measured on
        one CPU thread: 16-83 s against about 1 s for 10 min of 19-64 channels
        at 256 Hz; 7 s against 3 s on EEGLAB's 4-min sample). On the 9 linear
        recordings of recipes/eeg_semisynthetic its MCC is ahead of picard's
        on 8. The choice is stored in ``prior_``.
    posterior : {"auto", "diag", "full"}
        Covariance of the Gaussian q(z|x,u): "diag" (mean field, the paper's)
        or "full" (a Cholesky factor per sample), which removes the mean-field
        bias towards orthogonal decoder Jacobians; see :class:`~sepkit.models.IVAE`.
        "auto": "diag" for EEG, "full" otherwise (stored in ``posterior_``).
        Measured: on the paper's nonlinear mixtures "full" is better; on the
        real EEGLAB sample the blink component reached |r| 0.84 with FPz with
        "diag" (Laplace prior) but 0.67 with "full" (MNE picard: 0.87).
    n_hidden : int
        Width of the hidden layers of encoder and decoder.
    n_layers : int
        Convolution layers in encoder and decoder; 1 gives a linear model.
    kernel_size : int
        Odd temporal kernel size; 1 is the per-sample MLP of the paper.
    activation : {"lrelu", "xtanh", "elu"}
        Nonlinearity between layers.
    encoder_u : bool
        Condition the encoder on u, q(z|x,u), as in the paper. False gives an
        amortised q(z|x) that can be applied to recordings with unseen u.
    decoder_u : bool
        Condition the decoder on u, p(x|z,u). Off by default because it gives
        up the identifiability guarantee (Thm. 1 assumes f does not depend on u).
    learn_noise : bool
        Learn the per-channel observation-noise variance.
    noise_var : float
        Initial (or, with ``learn_noise=False``, fixed) noise variance, relative
        to the whitened (or standardised) data.
    whiten : bool
        PCA-whiten the data before the model (else standardise each channel).
        The encoder's q(z|x,u) is factorised (mean field); its ELBO penalises
        non-orthogonal mixing, and whitening makes the true mixing orthogonal
        up to scale, which removes that bias (MCC on linear mixtures rises
        from about 0.5 to 0.99 in our runs). Dimensions with no variance (e.g.
        after an average reference) are dropped.
    window : float or None
        Window length in seconds for the default u (window index). Needs a
        sample rate (Recording or Raw input); overrides ``window_samples``.
    window_samples : int or None
        Window length in samples for the default u. None chooses it from the
        recording: at least 4 (2 n_sources + 1) windows (four times the number
        of distinct u values that Thm. 1 needs), at most 1000 samples each;
        a recording too short for windows of 10 samples is an error.
    window_overlap : float
        Overlap of consecutive windows of the default u, in seconds, with
        ``0 <= window_overlap < window`` (needs a sample rate). Window k
        starts at ``k * (window - window_overlap)``; in fit a sample inside
        two windows is trained under both labels (more distinct u values from
        the same data), and at inference it takes the window whose centre is
        nearest (:func:`sepkit.windows.window_labels`). Default 0: disjoint
        windows.
    n_steps : int
        Optimiser steps.
    batch_size : int
        Chunks per step (of the last step when ``batch_size_start`` is given).
    batch_size_start : int or None
        Chunks in the first step; the batch then grows geometrically to
        ``batch_size`` by the last step. None: ``batch_size`` throughout.
        256 -> 1024 with ``kl_warmup=0.1`` gave MCC +0.0015 (median of 5
        seeds, +0.001 to +0.003 on every seed) over a constant 512 at the
        same time on the paper's synthetic setting (recipes/synthetic).
    kl_warmup : float
        Fraction of ``n_steps`` over which the weight of the KL term rises
        linearly from 0 to 1 (0: none).
    chunk_samples : int or None
        Length of a training chunk; default the encoder's receptive field
        (1 for ``kernel_size=1``).
    lr : float
        Peak learning rate (Adam, warm-up then cosine decay).
    device : str
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    random_state : None or int
        Seed for initialisation and batches; an int makes fits reproducible.
    verbose : bool
        Show a progress bar with the ELBO and steps/s; False prints nothing.
    checkpoint_dir : str, path or None
        Folder for a training checkpoint (model, optimiser, RNG states, step,
        learning-rate scale, history), written atomically every
        ``checkpoint_every`` steps and at the end, so that ``fit(...,
        resume=True)`` can continue an interrupted fit. None writes none.
        The file is ``ivae_checkpoint.pt`` (``ivae_checkpoint.rankR.pt`` per
        rank under ``python -m sepkit.train``); a fit with ``resume=False``
        refuses to overwrite one.
    checkpoint_every : int
        Steps between checkpoints. Default 1000: an interruption loses at
        most 1000 steps, while each write (a copy of the state to the host)
        costs little against them.
    early_stopping : bool
        Stop before ``n_steps`` once the -ELBO (averaged over 100-step log
        intervals) has not improved by ``min_delta`` for ``patience``
        intervals. Off by default so that ``n_steps`` means what it says.
    patience : int
        Log intervals (of 100 steps) without improvement before stopping.
        Default 5: 500 steps, long enough for the noise of a stochastic ELBO
        not to pass for a plateau.
    min_delta : float
        Smallest decrease of the -ELBO per sample (nats) that counts as an
        improvement. Default 1e-3, below what a useful step changes.
    precision : {"fp32", "bf16"}
        "bf16" trains under bfloat16 autocast on CUDA (exp, log and the
        log-likelihood and KL sums stay in float32); on CPU it is an error,
        as bf16 gains nothing there. Inference runs in float32.
    compile : bool
        Run the model through ``torch.compile`` for training (needs a C++
        compiler on CPU, Triton on CUDA; a clear error says when it fails).
        Off by default: compiling takes longer than short fits last.
    data_device : {"auto", "device", "host"}
        Where the training data live. "device" copies the recording to the
        GPU once (fastest); "host" keeps it in host memory and streams each
        batch over from pinned memory with asynchronous copies, for
        recordings larger than the GPU's memory; "auto" picks "device" when
        the data take at most half the free GPU memory, else "host". On CPU
        both are the same. The batches drawn differ between "device" and
        "host" on CUDA (different random generators), not their statistics.
    domain : {"auto", "time", "tf"}
        Where the model works. "time": the convolutional iVAE on samples
        (instantaneous mixing, linear or nonlinear). "tf": convolutive
        separation for real rooms (:mod:`sepkit.tf_separation`): per-frequency
        demixing matrices learnt with iterative-projection updates, initialised
        by 20 AuxIVA iterations, with an iVAE source model (conditional prior
        over ~1 s time segments) for the per-frame source spectra, MVAE-style;
        sources come back as their images at the first channel (projection
        back). Long recordings are fitted on at most 60 s spread over them and
        separated in chunks. "auto" (stored in ``domain_``): for a Recording
        of kind "audio" it looks at the phase of the channels' cross-spectra
        (``mixing_phase_``; :func:`sepkit.functional_tf.cross_spectrum_phase`):
        real cross-spectra (score <= 0.12) mean an instantaneous mix, linear or
        saturating, fitted with "time"; delays and echoes (a larger score)
        mean a room, fitted with "tf". On the 100 speech mixtures of
        recipes/audio_bss this told every instantaneous mix (<= 0.058) from
        every room (>= 0.22). Anything else (arrays, EEG, Raw) is "time".
        "tf" is linear per frequency, so nonlinear instantaneous mixtures need
        "time". With "tf", ``n_steps``, ``lr``, ``window`` and the network
        settings do not apply.
    ica_init : {None, "picard", "fastica"}
        Start from an ICA solution: run ICA (python-picard's Picard, or
        scikit-learn's FastICA) on the whitened training data, and give the
        encoder's mean and the decoder a linear path loaded with its unmixing
        and mixing matrices, beside MLPs whose output layers start at zero
        (:class:`~sepkit.models.IVAE`, ``linear_path``). Training then starts
        at the ICA sources and can only add the nonlinear part. None (the
        default) starts from random weights. Needs ``whiten=True``, and cannot
        be combined with ``fit(..., init=...)``. Measured on semi-synthetic
        19-channel EEG (recipes/eeg_semisynthetic/README.md): MCC 0.845 and
        0.757 on linear mixtures (defaults 0.678, 0.668; picard 0.846,
        0.783), no gain on saturating ones.
    mixing : {"auto", "nonlinear", "linear", "post-nonlinear"}
        "nonlinear": the convolutional iVAE above, trained on the ELBO.
        "linear": the iVAE with a linear, invertible decoder x = A z in the
        limit of zero observation noise, where the exact posterior is a point
        mass at W x (W = A^-1) and the ELBO is the exact log-likelihood with
        the Gaussian conditional prior of eq. (7) (per-segment means and
        variances). It is fitted by maximum likelihood with L-BFGS on the
        segment covariances of the first ``n_sources`` whitened dimensions
        (:func:`sepkit.train.fit_linear_ivae`; the objective of Pham and
        Cardoso's separation of non-stationary sources): seconds, no network
        training, no randomness, and the sources are identifiable from their
        non-stationarity alone. The network settings, ``n_steps``, ``lr`` and
        ``batch_size`` do not apply; u must be discrete (windows, labels,
        events or annotations), and ``prior`` "auto" or "gauss". "auto"
        (stored in ``mixing_``): "linear" for EEG (an MNE Raw or a Recording
        of kind "eeg"), whose sensors see a linear mixture of their sources
        (volume conduction, the assumption of MNE's ICA), unless an option
        needs the network (``prior="laplace"``, ``ica_init``, ``init=``, a
        continuous u, ``decoder_u``), or "post-nonlinear" for saturating
        sensors (below); "nonlinear" otherwise. Measured on
        19-channel semi-synthetic EEG (recipes/eeg_semisynthetic): MCC 0.847
        and 0.781 on linear mixtures (MNE picard 0.846, 0.783; mixing=
        "nonlinear" 0.678, 0.668) in 2.4-2.7 s on one CPU thread (picard
        3-5 s), 0.794 and 0.705 with amplifier saturation (picard 0.775,
        0.684). "post-nonlinear": the linear iVAE behind a learned, invertible
        nonlinearity per sensor, x_c = g_c((A z)_c), for saturating or
        compressive amplifiers: g_c^-1 = h_c is odd and increasing, h(x) = x +
        c1 x^3/3 + c2 x^5/5 + c3 x^7/7 on the standardised channel
        (:func:`sepkit.functional.sensor_unwarp`; the series of the inverse
        of a soft clip L tanh(y/L)). h is fitted by exact maximum likelihood
        together with a square unmixing over all channels (the change of
        variables adds sum_c log h_c'(x_c);
        :func:`sepkit.train.fit_post_nonlinear_ivae`), then the sources are
        separated on h(x) as for "linear". Fit it on the **unfiltered**
        recording with ``highpass`` set (below): the clip acts before any
        filter. "auto" tries it when fit filters (``highpass`` or
        ``lowpass`` set) an EEG recording that is not high-pass filtered
        already: it fits h, and keeps it when h changes some channel by 8 %
        of its RMS or more (``sensor_nonlinearity_``; at most 3.0 % on 18
        linear make_eeg recordings and 0.9 % on EEGLAB's sample recording, at
        least 21.6 % on 27 clipped ones; on 15 held-out ones at most 4.2 %
        and at least 18.5 %), else it drops h and fits "linear" on the
        filtered copy (128 channels, biosemi128, 10 min: 0.028-0.033 on two
        linear recordings, 0.276 clipped). That try costs a post-nonlinear
        fit, also where h is dropped: pass ``mixing="linear"`` to skip it. A
        linear recording that kept h would lose nothing but time (h stays
        near the identity). The post-nonlinear fit takes 4-8 s (19 channels),
        15-25 s (64) and about 50 s (128) on one CPU thread. Measured on clipped make_eeg recordings
        (recipes/eeg_semisynthetic, 10 min at 256 Hz, ``highpass=1.0``):
        ahead of MNE picard on all 27, by +0.023 to +0.091 MCC with a soft
        clip at 3x the RMS, +0.050 to +0.134 at 1.5x and +0.022 to +0.075
        with a hard rail at 1.5x (which no unwarping can undo: +0.006 to
        +0.044 over "linear" there), and equal to "linear" (within 0.001) on
        18 linear recordings, where h stays the identity.
    refine_steps : int
        0: ``transform`` returns the posterior mean of q(z|x,u). n > 0: it
        refines that mean, sample by sample, with n Levenberg-Marquardt steps
        towards the mode of the posterior under an observation noise
        ``refine_prior_weight`` times the learned one
        (:meth:`sepkit.models.IVAE.refine_sources`). The posterior mean is
        shrunk towards the prior where the decoder is flat (saturated
        mixing); the sharper mode undoes most of that. Needs
        ``kernel_size=1``; skipped with a Laplace prior and with
        ``mixing_ == "linear"`` (noiseless already). On the paper's synthetic
        setting at mixing depth 3 (recipes/synthetic, 5 seeds): MCC median
        0.926 -> 0.952 with 5 steps, 2-3 s for 40,000 samples on one CPU
        thread (10 steps: the same within 0.0003, twice the time).
    refine_prior_weight : float
        Weight of the prior in the refined cost (1: the posterior mode of
        the fitted model). 0.05 was chosen on one seed of the synthetic
        setting (0.02: -0.002, 0.1: -0.001, 1: -0.021 MCC there).
    highpass : float or None
        Edge in Hz of a high-pass filter (MNE's default FIR, as
        ``raw.filter(highpass, None)``) that ``fit`` applies to a copy of
        the data; ``transform``, ``get_sources`` and ``apply`` use the
        unmixing on the data they are given, unfiltered, as MNE's ICA fitted
        on a filtered copy and applied to the raw recording. None (default):
        no filter. Needs a sample rate (a Recording or Raw) and
        ``domain="time"``. With ``mixing="post-nonlinear"`` the filter acts
        after the sensor unwarping h, where the sensors are linear
        (:func:`sepkit.train.fit_post_nonlinear_ivae`): a saturating
        amplifier clips the unfiltered signal, and a filter applied to the
        recording before the fit spreads each clipped sample over its
        neighbours, which no per-sample h can undo. So fit the
        post-nonlinear model on the unfiltered recording with ``highpass``
        set; measured on clipped make_eeg recordings in
        recipes/eeg_semisynthetic/README.md.
    lowpass : float or None
        Edge in Hz of a low-pass filter applied with ``highpass`` in the
        same way (both set: a band-pass, as ``raw.filter(highpass,
        lowpass)``). None (default): no low-pass.

    Attributes
    ----------
    model_ : IVAE
        The fitted torch module.
    domain_ : {"time", "tf"}
        The domain ``domain`` resolved to.
    mixing_ : {"linear", "post-nonlinear", "nonlinear"}
        The model ``mixing`` resolved to (time domain only).
    sensor_mean_, sensor_scale_ : ndarray, shape (n_channels,)
        ``mixing_ == "post-nonlinear"`` only: channel standardisation before h.
    sensor_coefs_ : ndarray, shape (n_channels, 3) or None
        c1..c3 of h per channel (``mixing_ == "post-nonlinear"``), else None;
        ``mean_``, ``whitening_`` and ``dewhitening_`` then refer to h(x).
    sensor_nonlinearity_ : ndarray, shape (n_channels,) or None
        Where h was fitted (``mixing="post-nonlinear"``, or tried by "auto"):
        per channel, the standard deviation of h(x) - x over that of h(x) on
        the fitted samples of the standardised channel; 0 for a linear
        sensor. None where h was not fitted.
    source_shape_ : ndarray, shape (n_sources,) or None
        ``prior_ == "gengauss"``: the fitted shape of each source's
        generalised Gaussian (2 Gaussian, below 2 heavy-tailed, above 2
        flat-topped), else None.
    mixing_phase_ : float or None
        The cross-spectrum phase score "auto" measured on an audio Recording
        (near 0: instantaneous mixing); None when it was not measured.
    history_ : list of dict
        Training curve (-ELBO per sample every 100 steps, and at
        checkpoints); an ``event`` key marks a caught non-finite loss, and
        ``stopped_early_at`` the last entry of an early-stopped fit.
    n_steps_run_ : int
        Optimiser steps actually run (below ``n_steps`` after early stopping;
        0 for ``mixing_ == "linear"``, whose single ``history_`` entry holds
        the -log-likelihood per sample, the L-BFGS iterations and whether it
        converged).
    n_channels_ : int
    mean_ : ndarray, shape (n_channels,)
        Channel means removed before the model.
    whitening_ : ndarray, shape (n_dims, n_channels)
        Linear map from centred data to the model's input space.
    dewhitening_ : ndarray, shape (n_channels, n_dims)
        Its pseudo-inverse, back to sensor units.
    rank_ : int
        n_dims, the rank of the data (channels minus null dimensions).
    n_segments_ : int or None
        Number of distinct discrete u values seen in ``fit``.
    classes_ : ndarray or None
        The discrete u labels, in the order of their codes.
    n_u_ : int or None
        Dimension of a continuous u.
    window_samples_ : int
        Window length used for the default u.
    hop_samples_ : int
        Step between the starts of those windows (``window_samples_`` without
        overlap).
    source_mean_ : ndarray, shape (n_sources,)
        Mean of the estimated sources over the fitted samples: the point at
        which :meth:`get_components` takes the decoder's Jacobian.
    data_device_ : {"device", "host"}
        Where the training data were kept ("host": streamed batch by batch).
    exclude : list of int
        Sources that :meth:`apply` and :meth:`save_cleaned` remove by default,
        as ``ICA.exclude`` (e.g. ``sep.exclude = sep.find_bads_eog(raw)[0]``).
        Empty after every ``fit`` (a refit's indices name other sources);
        saved and loaded with the model.

    References
    ----------
    Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
    nonlinear ICA: a unifying framework. AISTATS.

    Examples
    --------
    >>> from sepkit.datasets import make_nonlinear_ica
    >>> X, S, u = make_nonlinear_ica(3, 20, 200, 1, random_state=0)
    >>> sep = IVAESeparator(n_sources=3, n_steps=200, random_state=0).fit(X, u)
    >>> sep.transform(X, u).shape
    (3, 4000)
    """

    def __init__(
        self,
        n_sources: int = 2,
        *,
        prior: str = "auto",
        posterior: str = "auto",
        n_hidden: int = 64,
        n_layers: int = 3,
        kernel_size: int = 1,
        activation: str = "lrelu",
        encoder_u: bool = True,
        decoder_u: bool = False,
        learn_noise: bool = True,
        noise_var: float = 0.01,
        whiten: bool = True,
        window: float | None = None,
        window_samples: int | None = None,
        window_overlap: float = 0.0,
        n_steps: int = 5000,
        batch_size: int = 256,
        chunk_samples: int | None = None,
        lr: float = 0.03,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
        early_stopping: bool = False,
        patience: int = 5,
        min_delta: float = 1e-3,
        precision: str = "fp32",
        compile: bool = False,
        data_device: str = "auto",
        domain: str = "auto",
        ica_init: str | None = None,
        mixing: str = "auto",
        batch_size_start: int | None = None,
        kl_warmup: float = 0.0,
        refine_steps: int = 0,
        refine_prior_weight: float = 0.05,
        highpass: float | None = None,
        lowpass: float | None = None,
    ):
        self.n_sources = n_sources
        self.prior = prior
        self.posterior = posterior
        self.n_hidden = n_hidden
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        self.activation = activation
        self.encoder_u = encoder_u
        self.decoder_u = decoder_u
        self.learn_noise = learn_noise
        self.noise_var = noise_var
        self.whiten = whiten
        self.window = window
        self.window_samples = window_samples
        self.window_overlap = window_overlap
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.chunk_samples = chunk_samples
        self.lr = lr
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.early_stopping = early_stopping
        self.patience = patience
        self.min_delta = min_delta
        self.precision = precision
        self.compile = compile
        self.data_device = data_device
        self.domain = domain
        self.ica_init = ica_init
        self.mixing = mixing
        self.batch_size_start = batch_size_start
        self.kl_warmup = kl_warmup
        self.refine_steps = refine_steps
        self.refine_prior_weight = refine_prior_weight
        self.highpass = highpass
        self.lowpass = lowpass

    # ------------------------------------------------------------------ checks
    def _validate_params(self):
        check_int("n_sources", self.n_sources, min_value=1)
        check_option("prior", self.prior, ("auto", *PRIORS, "gengauss"))
        check_option("posterior", self.posterior, ("auto", *POSTERIORS))
        check_int("n_hidden", self.n_hidden, min_value=1)
        check_int("n_layers", self.n_layers, min_value=1)
        k = check_int("kernel_size", self.kernel_size, min_value=1)
        if k % 2 == 0:
            raise ValueError(
                f"'kernel_size' must be odd so that outputs stay aligned with inputs, got {k}. "
                f"Use {k + 1}."
            )
        check_option("activation", self.activation, ACTIVATIONS)
        check_option("encoder_u", self.encoder_u, (True, False))
        check_option("decoder_u", self.decoder_u, (True, False))
        check_option("learn_noise", self.learn_noise, (True, False))
        check_option("whiten", self.whiten, (True, False))
        check_float("noise_var", self.noise_var, min_value=0.0, strict_min=True)
        if self.window is not None:
            check_float("window", self.window, min_value=0.0, strict_min=True)
        if self.window_samples is not None:
            check_int("window_samples", self.window_samples, min_value=1)
        check_float("window_overlap", self.window_overlap, min_value=0.0)
        check_int("n_steps", self.n_steps, min_value=1)
        check_int("batch_size", self.batch_size, min_value=1)
        if self.chunk_samples is not None:
            check_int("chunk_samples", self.chunk_samples, min_value=1)
        check_float("lr", self.lr, min_value=0.0, strict_min=True)
        if self.random_state is not None:
            check_int("random_state", self.random_state, min_value=0)
        check_option("verbose", self.verbose, (True, False))
        if self.checkpoint_dir is not None and not isinstance(
            self.checkpoint_dir, (str, os.PathLike)
        ):
            raise TypeError(
                "'checkpoint_dir' must be None or a path (str or os.PathLike), got "
                f"{self.checkpoint_dir!r} ({type(self.checkpoint_dir).__name__})."
            )
        check_int("checkpoint_every", self.checkpoint_every, min_value=1)
        check_option("early_stopping", self.early_stopping, (True, False))
        check_int("patience", self.patience, min_value=1)
        check_float("min_delta", self.min_delta, min_value=0.0)
        check_option("compile", self.compile, (True, False))
        check_option("data_device", self.data_device, ("auto", "device", "host"))
        check_option("domain", self.domain, ("auto", "time", "tf"))
        check_option("ica_init", self.ica_init, (None, "picard", "fastica"))
        if self.ica_init is not None and not self.whiten:
            raise ValueError(
                f"ica_init={self.ica_init!r} runs ICA on the whitened data and needs "
                "whiten=True, got whiten=False. Pass whiten=True or ica_init=None."
            )
        check_option("mixing", self.mixing, ("auto", "nonlinear", *_LINEAR_MIXINGS))
        if self.batch_size_start is not None:
            check_int("batch_size_start", self.batch_size_start, min_value=1)
        check_float("kl_warmup", self.kl_warmup, min_value=0.0, max_value=1.0)
        check_int("refine_steps", self.refine_steps, min_value=0)
        check_float("refine_prior_weight", self.refine_prior_weight, min_value=0.0, strict_min=True)
        for name in ("highpass", "lowpass"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), min_value=0.0, strict_min=True)
        if self.refine_steps and (self.kernel_size != 1 or self.prior == "laplace"):
            raise ValueError(
                f"refine_steps={self.refine_steps} refines each time sample on its own with a "
                f"Gaussian prior; it needs kernel_size=1 (got {self.kernel_size}) and prior "
                f"'gauss', 'standard' or 'auto' (got {self.prior!r}). Pass refine_steps=0."
            )
        if self.mixing in _LINEAR_MIXINGS:
            self._check_linear_options()
        device = check_device(self.device)
        # Imported here, not at module level, so that ``python -m sepkit.train``
        # does not find sepkit.train already imported by ``import sepkit``.
        from .train import check_precision

        check_precision(self.precision, device)
        return device

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    @staticmethod
    def _unpack(X, picks=None, fitted_names=None):
        """Return (data, sample_rate, kind, container) for ndarray / Recording / Raw.

        For a Raw the container keeps the Raw itself, so outputs can copy its
        timing and annotations; ``fitted_names`` (at inference) selects the
        channels of fit by name.
        """
        if isinstance(X, Recording):
            return check_data_2d(X.data, "Recording data"), X.sample_rate, "recording", X
        if _is_mne_raw(X):
            return raw_to_data(X, picks, fitted_names)
        if picks is not None:
            raise TypeError("'picks' applies to MNE Raw input only; got an array.")
        return check_data_2d(X), None, "array", None

    def _hop_samples_for(self, sample_rate, window_samples):
        """Step between window starts, from ``window_overlap`` (seconds)."""
        if self.window_overlap == 0:
            return window_samples
        if sample_rate is None:
            raise ValueError(
                f"window_overlap={self.window_overlap} s needs a sample rate, but X is a plain "
                "array. Pass a Recording or an MNE Raw, or window_overlap=0."
            )
        overlap = int(round(self.window_overlap * sample_rate))
        if overlap >= window_samples:
            raise ValueError(
                f"Invalid value for the 'window_overlap' parameter: it must be shorter than "
                f"the window ({window_samples / sample_rate:g} s), got {self.window_overlap:g} "
                "s. Pass 0 <= window_overlap < window, e.g. half the window."
            )
        return window_samples - overlap

    def _window_samples_for(self, sample_rate, n_times, *, default_u=False):
        """Window length in samples (:func:`sepkit.windows.resolve_window_samples`)."""
        return resolve_window_samples(
            self.window,
            self.window_samples,
            sample_rate,
            n_times,
            self.n_sources,
            default_u=default_u,
        )

    def _encode_u(self, u, n_times, *, fitting):
        """Validate u and turn it into model input (codes or continuous)."""
        if self.prior_ == "standard":
            return None
        if u is None:
            hop = getattr(self, "hop_samples_", self.window_samples_)
            if fitting:
                return window_labels(n_times, self.window_samples_, hop)
            codes = window_labels(n_times, self.window_samples_, hop)
            if self.n_u_ is not None:
                raise ValueError(
                    "This separator was fitted with a continuous u; pass u of shape "
                    f"({self.n_u_}, n_times) to transform."
                )
            if self.classes_ is not None:
                # Window indices would silently stand in for the labels of fit.
                raise ValueError(
                    f"This separator was fitted with labels u ({len(self.classes_)} values), "
                    "so u=None (the window index) does not apply; pass u with one label per "
                    "sample, shape (n_times,), from the labels seen in fit."
                )
            if codes.max() >= self.n_segments_:
                raise ValueError(
                    f"X has {codes.max() + 1} windows of {self.window_samples_} samples but the "
                    f"model was fitted on {self.n_segments_}, so the later windows have no "
                    "learnt u. Pass u with labels seen in fit, or fit with encoder_u=False "
                    "to separate recordings of any length."
                )
            return codes
        u = np.asarray(u)
        if u.ndim == 1:
            if u.shape[0] != n_times:
                raise ValueError(
                    f"u has {u.shape[0]} labels but X has {n_times} samples; pass one label "
                    "per time sample, shape (n_times,)."
                )
            if fitting:
                classes, codes = np.unique(u, return_inverse=True)
                self.classes_ = classes
                return codes.astype(np.int64)
            if self.classes_ is None:
                raise ValueError(
                    "This separator was fitted with a continuous u; pass u of shape "
                    f"({self.n_u_}, n_times), got labels of shape {u.shape}."
                )
            codes = np.searchsorted(self.classes_, u)
            codes = np.clip(codes, 0, len(self.classes_) - 1)
            unseen = self.classes_[codes] != u
            if unseen.any():
                shown = [str(c) for c in self.classes_[:10]]
                hint = ""
                if UNLABELLED in set(map(str, u[unseen])):
                    # u="annotations"/"events" name the samples outside every
                    # label seen in fit UNLABELLED; say what that means.
                    hint = (
                        f" {UNLABELLED!r} marks samples that no annotation or event seen in "
                        "fit covers (new or missing descriptions, or gaps between them)."
                    )
                raise ValueError(
                    f"u holds labels not seen in fit: {np.unique(u[unseen])[:10].tolist()}. "
                    f"Allowed labels are those of fit ({len(self.classes_)} values: {shown})."
                    f"{hint} Label every sample with one of them, or refit on this u."
                )
            return codes.astype(np.int64)
        if u.ndim == 2:
            if u.shape[1] != n_times:
                raise ValueError(
                    f"u has shape {u.shape} but X has {n_times} samples; a continuous u must "
                    "have shape (n_u, n_times)."
                )
            if not np.isfinite(u).all():
                raise ValueError("u contains NaN or Inf values.")
            if not fitting and self.n_u_ != u.shape[0]:
                raise ValueError(
                    f"u has {u.shape[0]} dimensions but the model was fitted with n_u={self.n_u_}."
                )
            return u.astype(np.float32)
        raise ValueError(
            f"u must have shape (n_times,) for labels or (n_u, n_times) for a continuous "
            f"variable, got {u.shape}."
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X,
        u=None,
        *,
        picks=None,
        reject_by_annotation: bool = True,
        resume: bool = False,
        init=None,
        callback=None,
    ):
        """Fit the iVAE to a recording.

        Parameters
        ----------
        X : ndarray, shape (n_channels, n_times), Recording or mne.io.Raw
            Observations. A Raw that is not high-pass filtered at 0.5 Hz or
            above draws a RuntimeWarning, as slow drifts spoil separation.
        u : None, "annotations", "events" or ndarray, shape (n_times,) or (n_u, n_times)
            Auxiliary variable: one label per sample (any hashable values), or
            a continuous vector per sample. Default: window index.
            ``"annotations"`` (Raw only) labels each sample with the
            description of the annotation over it (task blocks, sleep stages;
            see :func:`sepkit.io.labels_from_annotations`), samples under none
            with ``"<unlabelled>"``; ``transform`` of a Raw then does the same
            by itself. ``"events"`` (Raw only) reads events from the stim
            channel (``mne.find_events``) and labels the samples from each
            event to the next ``"event <code>"`` (block or stage starts);
            an MNE events array, shape (n_events, 3), does the same with
            those events. For other event labelling pass
            ``sepkit.io.labels_from_events(raw, events, event_id)[0]``.
        picks : str or list or None
            Channels of an MNE Raw to fit: a channel type, a list of names, or
            None for ``"eeg"``. Channels in ``raw.info["bads"]`` are left out,
            and so are EOG/ECG-typed channels unless picked.
        reject_by_annotation : bool
            Raw only: leave the samples under bad annotations (descriptions
            starting with "bad" or "edge", any case) out of fitting. They do
            not enter the channel means, the whitening, or any training chunk
            (chunks overlapping them are never drawn); ``transform`` still
            separates them.
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir`` (same data and
            settings), giving bit-identical weights to an uninterrupted fit
            with the same ``random_state``; a fit that has no checkpoint yet
            starts afresh. False refuses to overwrite an existing checkpoint.
        init : None, str, path or IVAESeparator
            Fine-tune: start from a pretrained model (a name from
            :func:`sepkit.pretrained.list_models`, a model folder, or a fitted
            separator) instead of random weights. The architecture parameters
            must match (start from ``IVAESeparator.from_pretrained(name)``),
            and so must the channels and sample rate. The model's channel
            means and whitening are kept, not refitted: the network was
            trained on inputs in that space, and a new PCA basis would rotate
            or flip them. Per-u tables are re-learnt when the number of u
            values differs. Measured (recipes/pretrained/README.md): this
            helps on recordings from the model's own setup; on another head
            or mixing, fitting from scratch did better.
        callback : callable or None
            ``callback(step, sep)``, called every 100 training steps (after
            a finite loss check) with this separator, whose ``model_`` then
            holds the current weights, so ``sep.transform`` works inside it;
            return True to stop training there. For monitoring (e.g. MCC
            against known sources in ``benchmarks/synthetic_time.py``).

        Returns
        -------
        self : IVAESeparator
        """
        device = self._validate_params()
        check_option("reject_by_annotation", reject_by_annotation, (True, False))
        check_option("resume", resume, (True, False))
        if resume and self.checkpoint_dir is None:
            raise ValueError(
                "resume=True needs the checkpoint_dir of the fit to resume; the separator has "
                "checkpoint_dir=None. Pass IVAESeparator(..., checkpoint_dir=DIR)."
            )
        data, sample_rate, kind, rec = self._unpack(X, picks)
        from . import tf_separation

        # Indices chosen on an earlier fit name other sources now.
        self.exclude = []
        self.domain_, self.mixing_phase_ = tf_separation.resolve_domain(
            self.domain, kind, rec, init, self.n_sources
        )
        if self.domain_ == "tf":  # convolutive audio: sepkit/tf_separation.py
            if self.prior == "gengauss":
                raise ValueError(
                    "prior='gengauss' is a prior of the linear time-domain models, but domain "
                    "resolved to 'tf' (convolutive separation). Pass domain='time' and "
                    "mixing='linear', or another prior."
                )
            if self.mixing in _LINEAR_MIXINGS:
                raise ValueError(
                    f"mixing={self.mixing!r} is an instantaneous model of the time domain, "
                    "but domain resolved to 'tf' (convolutive separation). Pass "
                    "domain='time', or mixing='auto'."
                )
            band = self._band_text()
            if band:
                raise ValueError(
                    f"{band} filters the time-domain fit, but domain resolved to 'tf' "
                    "(convolutive separation, which works per frequency). Pass "
                    "highpass=None and lowpass=None, or domain='time'."
                )
            return tf_separation.fit_separator(self, data, sample_rate, rec, u)
        from .io.eeg import is_highpassed

        n_channels, n_times = data.shape
        is_eeg = kind == "raw" or (rec is not None and rec.kind == "eeg")
        self.mixing_ = self._resolve_mixing(is_eeg, init, u)
        fit_filter = self._fit_filter(sample_rate)
        self.sensor_coefs_ = None  # set by mixing="post-nonlinear" only
        self.sensor_nonlinearity_ = None  # set where the unwarping h is fitted
        # mixing="auto" on EEG that fit filters itself (so it sees the signal as
        # the amplifiers gave it): try the sensor unwarping, keep it only where
        # it finds saturating sensors (_fit_linear). On a Raw filtered before
        # the fit a clip is smeared over its neighbours and the unwarping gains
        # little (recipes/eeg_semisynthetic/README.md), so it is not tried there.
        try_unwarp = (
            self.mixing == "auto"
            and self.mixing_ == "linear"
            and fit_filter is not None
            and not (kind == "raw" and is_highpassed(X))
        )
        if try_unwarp:
            self.mixing_ = "post-nonlinear"
        self.source_shape_ = None  # set by prior="gengauss" only
        if self.mixing_ in _LINEAR_MIXINGS:
            # The linear model's likelihood has a Gaussian (or generalised
            # Gaussian) prior and an exact (point-mass) posterior, stored as a
            # diagonal one.
            self.prior_ = "gengauss" if self.prior == "gengauss" else "gauss"
            self.posterior_ = "diag"
        else:
            self.prior_ = self.prior if self.prior != "auto" else ("laplace" if is_eeg else "gauss")
            self.posterior_ = (
                self.posterior if self.posterior != "auto" else ("diag" if is_eeg else "full")
            )
        # Samples that statistics and training chunks may use; None means all.
        good = None
        from_annotations = False
        if kind == "raw":
            self._warn_filtering(X)
            check_flat_eeg(rec)
            u, good, from_annotations = resolve_raw_u(X, u, reject_by_annotation)
            good = None if good.all() else good
        elif isinstance(u, str):
            raise ValueError(
                f"u={u!r} reads the annotations of an MNE Raw, but X is a "
                f"{type(X).__name__}. Pass the Raw, or u as an array of labels."
            )
        if fit_filter is not None and self.mixing_ != "post-nonlinear":
            # The post-nonlinear fit filters after its unwarping (_fit_linear).
            data = fit_filter(_bridge_rejected(data, good))
        stats = data if good is None else data[:, good]
        if self.n_sources > n_channels:
            raise ValueError(
                f"n_sources={self.n_sources} is more than the {n_channels} channels of X. "
                f"Pass n_sources <= {n_channels}, or record more channels."
            )
        scale = stats.std(axis=1)
        flat = np.flatnonzero(scale <= 1e-12 * max(1.0, float(np.abs(stats).max())))
        if flat.size:
            names = [rec.ch_names[i] for i in flat] if rec is not None else flat.tolist()
            raise ValueError(f"X has flat (constant) channel(s) {names}; drop them before fitting.")

        self.classes_ = None
        self.n_u_ = None
        self.n_segments_ = None
        self.window_samples_ = self._window_samples_for(
            sample_rate, n_times, default_u=u is None and self.prior_ != "standard"
        )
        self.hop_samples_ = self._hop_samples_for(sample_rate, self.window_samples_)
        # Overlapping windows are laid out one after the other for training (see
        # below), so the default u of fit is the window index in that layout.
        u_layout = (
            u is None and self.hop_samples_ < self.window_samples_ and self.prior_ != "standard"
        )
        if u_layout:
            _, codes, _ = overlapping_training_set(
                n_times, self.window_samples_, self.hop_samples_, 1
            )
        else:
            codes = self._encode_u(u, n_times, fitting=True)
        if codes is not None:
            if codes.ndim == 1:
                n_seg = int(codes.max()) + 1
                if n_seg < 2:
                    raise ValueError(
                        "u takes a single value, so the sources are not identifiable (the iVAE "
                        "needs the source distribution to change with u). Pass a u with at least "
                        f"2 values, or a shorter window (window_samples={self.window_samples_}, "
                        f"n_times={n_times})."
                    )
                # Thm. 1 needs n*k + 1 distinct u for n sources with k = 2 sufficient
                # statistics (mean and variance) each.
                need = 2 * self.n_sources + 1
                if n_seg < need:
                    warnings.warn(
                        f"u takes {n_seg} distinct values; identifiability of {self.n_sources} "
                        f"sources needs at least {need} (2 * n_sources + 1, Thm. 1 of "
                        "Khemakhem et al. 2020). Use shorter windows or more data.",
                        UserWarning,
                        stacklevel=2,
                    )
                self.n_segments_ = n_seg
            else:
                self.n_u_ = codes.shape[0]

        init_state = None
        if init is not None and self.ica_init is not None:
            raise ValueError(
                f"ica_init={self.ica_init!r} and init= both set the starting weights. Pass "
                "ica_init=None to fine-tune a pretrained model, or drop init= to start from ICA."
            )
        if init is None:
            self._fit_standardisation(stats, scale)
        else:
            from .pretrained import prepare_init

            names = rec.ch_names if rec is not None else None
            init_state = prepare_init(self, init, n_channels, sample_rate, names)
        self.annotation_u_ = from_annotations == "annotations"
        self.event_u_ = from_annotations == "events"
        self.info_ = picked_info(rec) if kind == "raw" else None
        self.n_channels_ = n_channels
        self.n_features_in_ = n_channels
        self.ch_names_ = tuple(rec.ch_names) if rec is not None else None
        self.sample_rate_ = sample_rate

        seed = (
            self.random_state
            if self.random_state is not None
            else int(np.random.default_rng().integers(2**31))
        )
        if self.mixing_ in _LINEAR_MIXINGS:
            return self._fit_linear(data, codes, u_layout, good, device, fit_filter, try_unwarp)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model = self._build_model().to(device)
            if init_state is not None:
                from .pretrained import apply_init

                apply_init(model, init_state)
            chunk = self.chunk_samples or model.receptive_field
            if chunk > n_times:
                raise ValueError(
                    f"chunk_samples={chunk} is longer than the recording ({n_times} samples)."
                )
            valid = None
            Xt = self._standardize(data)
            if self.ica_init is not None:
                model.set_linear_path(
                    *self._ica_matrices(Xt if good is None else Xt[:, good], seed)
                )
            fit_codes = codes
            if u_layout:
                index, codes, starts = overlapping_training_set(
                    n_times, self.window_samples_, self.hop_samples_, chunk, good
                )
                if starts.size == 0:
                    raise ValueError(
                        f"No stretch of {chunk} samples (chunk_samples) lies inside one window "
                        "and outside the bad annotations, so nothing is left to train on. "
                        "Use longer windows, a smaller kernel_size / n_layers, or "
                        "reject_by_annotation=False."
                    )
                valid = torch.from_numpy(starts)
                Xt = np.ascontiguousarray(Xt[:, index])
            elif good is not None:
                starts = valid_chunk_starts(good, chunk)
                if starts.size == 0:
                    raise ValueError(
                        f"No stretch of {chunk} samples (chunk_samples) lies outside the bad "
                        "annotations, so nothing is left to train on. Shorten the bad "
                        "annotations, use a smaller kernel_size / n_layers, or pass "
                        "reject_by_annotation=False."
                    )
                valid = torch.from_numpy(starts)
            from .train import resolve_data_device, train_ivae

            Xt = torch.from_numpy(Xt)
            ut = None if codes is None else torch.from_numpy(codes)
            n_bytes = sum(t.nbytes for t in (Xt, ut, valid) if t is not None)
            # Streamed data stay on the host, and so do the batch generator
            # and indices (see train_ivae).
            where = resolve_data_device(self.data_device, device, n_bytes)
            data_at = device if where == "device" else torch.device("cpu")
            Xt, ut, valid = (None if t is None else t.to(data_at) for t in (Xt, ut, valid))
            self.data_device_ = where
            gen = torch.Generator(device=data_at)
            gen.manual_seed(seed)

            self.history_ = train_ivae(
                model,
                Xt,
                ut,
                n_steps=self.n_steps,
                batch_size=self.batch_size,
                chunk_samples=chunk,
                lr=self.lr,
                generator=gen,
                valid_starts=valid,
                verbose=self.verbose,
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=self.checkpoint_every,
                resume=resume,
                early_stopping=self.early_stopping,
                patience=self.patience,
                min_delta=self.min_delta,
                precision=self.precision,
                compile=self.compile,
                data_device=where,
                callback=None if callback is None else self._step_callback(callback),
                batch_size_start=self.batch_size_start,
                kl_warmup=self.kl_warmup,
            )
        self.n_steps_run_ = self.history_[-1]["step"]
        self.model_ = model
        self.source_mean_ = self._source_mean(data, fit_codes, u_layout, good)
        return self

    def _step_callback(self, callback):
        """Adapt ``callback(step, sep)`` to train_ivae's ``callback(step, model)``."""

        def call(step, model):
            self.model_ = model
            return callback(step, self)

        return call

    def _source_mean(self, data, codes, u_layout, good) -> np.ndarray:
        """Mean of the posterior means E[z | x, u] over the fitted samples."""
        if self.model_.encoder_u and u_layout:
            codes = window_labels(data.shape[1], self.window_samples_, self.hop_samples_)
        elif not self.model_.encoder_u:
            codes = None
        z = self._run_chunked(
            lambda x, uu: self.model_.encode(x, uu)[0], self._standardize(data), codes
        )
        if good is not None:
            z = z[:, good]
        return z.mean(axis=1).astype(np.float64)

    def _band_text(self) -> str:
        """ "highpass=1 Hz, lowpass=40 Hz" for the filter options that are set ("" if none)."""
        return ", ".join(
            f"{name}={getattr(self, name):g} Hz"
            for name in ("highpass", "lowpass")
            if getattr(self, name) is not None
        )

    def _fit_filter(self, sample_rate):
        """The ``highpass``/``lowpass`` filter of fit as ``filt(a)`` on (n_rows, n_times), or None."""
        if self.highpass is None and self.lowpass is None:
            return None
        if sample_rate is None:
            raise ValueError(
                f"{self._band_text()} needs a sample rate, but X is a plain array. Pass a "
                "Recording or an MNE Raw, or highpass=None and lowpass=None."
            )
        import mne

        from .io.eeg import check_band

        check_band(self.highpass, self.lowpass, sample_rate, names=("highpass", "lowpass"))

        def filt(a):
            return mne.filter.filter_data(
                np.asarray(a, dtype=np.float64),
                sample_rate,
                self.highpass,
                self.lowpass,
                verbose="error",
            )

        return filt

    def _warn_filtering(self, raw) -> None:
        """MNE's advice on filtering, adapted to ``highpass`` and the post-nonlinear model."""
        from .io.eeg import is_highpassed, warn_if_not_highpassed

        if self.mixing_ == "post-nonlinear" and is_highpassed(raw):
            edge = raw.info["highpass"]
            warnings.warn(
                f"mixing='post-nonlinear' on a recording high-pass filtered at {edge:g} Hz: "
                "the sensors' nonlinearity acted before the filter, which spreads each "
                "clipped sample over its neighbours, and the per-channel unwarping cannot "
                f"undo that. Fit the unfiltered recording with highpass={edge:g} instead "
                "(the filter then acts after the unwarping).",
                RuntimeWarning,
                stacklevel=3,
            )
        elif self.highpass is None or self.highpass < 0.5:
            fix = (
                ", or let fit filter a copy: highpass=1.0 (then mixing='auto' also checks "
                "the sensors for clipping, and mixing='post-nonlinear' can model it)"
                if self.highpass is None
                else ""
            )
            warn_if_not_highpassed(raw, stacklevel=3, fix=fix)

    def _fit_standardisation(self, stats, scale=None):
        """``mean_`` and the whitening from the fitted samples ``stats`` (n_channels, n_good).

        ``scale``: their per-channel standard deviation, where the caller has it.
        """
        self.mean_ = stats.mean(axis=1).astype(np.float64)
        self._fit_whitening(stats, stats.std(axis=1) if scale is None else scale)

    def _fit_whitening(self, data, scale):
        if not self.whiten:
            self.whitening_ = np.diag(1.0 / scale).astype(np.float64)
            self.dewhitening_ = np.diag(scale).astype(np.float64)
            self.rank_ = data.shape[0]
            return
        centred = data.astype(np.float64) - self.mean_[:, None]
        cov = centred @ centred.T / centred.shape[1]
        evals, evecs = np.linalg.eigh(cov)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        # Dimensions whose variance is this far below the largest are numerical
        # zeros (e.g. the one an average reference removes).
        keep = evals > evals[0] * 1e-10
        rank = int(keep.sum())
        if self.n_sources > rank:
            raise ValueError(
                f"n_sources={self.n_sources} is above the rank of the data ({rank} of "
                f"{data.shape[0]} channels; re-referencing, e.g. to the average, removes one "
                f"dimension per reference). Pass n_sources <= {rank}."
            )
        evals, evecs = evals[:rank], evecs[:, :rank]
        # Whiten the n_sources strongest components only; weaker ones are scaled
        # like the n_sources-th, so they stay below unit variance. Whitening all
        # of them would lift pure sensor noise to the level of the sources and
        # hide which directions carry signal (MCC 0.25 vs 0.94 for FastICA on
        # 19-channel, 8-source EEG in our runs).
        scales = np.sqrt(np.maximum(evals, evals[self.n_sources - 1]))
        self.whitening_ = (evecs / scales).T
        self.dewhitening_ = evecs * scales
        self.rank_ = rank

    def _check_linear_options(self, init=None, u=None):
        """Raise when an option needs the network that mixing="linear" does not train."""
        conflicts = []
        if self.prior not in ("auto", "gauss", "gengauss"):
            conflicts.append(
                f"prior={self.prior!r} (the linear model's prior is 'gauss' or 'gengauss')"
            )
        if self.ica_init is not None:
            conflicts.append(f"ica_init={self.ica_init!r} (a start for network training)")
        if self.decoder_u:
            conflicts.append("decoder_u=True (a decoder conditioned on u is not linear)")
        if not self.whiten:
            conflicts.append("whiten=False (the linear fit runs on the whitened data)")
        if init is not None:
            conflicts.append("init= (a pretrained network to fine-tune)")
        if u is not None and not isinstance(u, str) and np.ndim(u) == 2 and np.shape(u)[1] != 3:
            conflicts.append("a continuous u (the linear fit needs segments: labels or windows)")
        if conflicts:
            raise ValueError(
                f"mixing={self.mixing if self.mixing != 'auto' else 'linear'!r} fits the "
                "linear, noiseless iVAE by maximum likelihood and "
                f"trains no network, so it cannot take {'; '.join(conflicts)}. Pass "
                "mixing='nonlinear', or drop those options."
            )

    def _resolve_mixing(self, is_eeg, init, u) -> str:
        """``mixing_``: "linear" for EEG unless an option needs the network."""
        if self.mixing in _LINEAR_MIXINGS:
            self._check_linear_options(init, u)
            return self.mixing
        if self.mixing != "nonlinear" and is_eeg:
            try:
                self._check_linear_options(init, u)
            except ValueError:
                pass
            else:
                return "linear"
        if self.prior == "gengauss":
            raise ValueError(
                "prior='gengauss' is a prior of the linear models, but mixing resolved to "
                f"'nonlinear' (mixing={self.mixing!r}"
                + ("" if is_eeg else ", and the data are not EEG")
                + "). Pass mixing='linear' (or 'post-nonlinear'), or another prior."
            )
        return "nonlinear"

    def _fit_linear(self, data, codes, u_layout, good, device, fit_filter=None, try_unwarp=False):
        """Fit ``mixing_ == "linear"``: maximum likelihood, no network training.

        The result is stored as an :class:`~sepkit.models.IVAE` with one
        linear layer each way (``linear_path`` loaded, the parallel layers at
        zero), the prior table at the fitted per-segment log-variances, the
        posterior a near point mass and the observation noise at the variance
        of the whitened dimensions beyond ``n_sources``: the noiseless linear
        iVAE written in the model's own parameters, so transform, save and
        get_components work as for a trained network.

        ``try_unwarp`` (mixing="auto" with the fit filter; ``mixing_`` is then
        "post-nonlinear" on entry): fit the sensor unwarping, and fall back to
        "linear" on the filtered data when it changes no channel by
        ``_UNWARP_KEEP`` of its RMS.
        """
        from .train import fit_gengauss_ivae, fit_linear_ivae

        n_times = data.shape[1]
        all_codes = self._linear_codes(codes, u_layout, n_times)
        lin_codes = all_codes if good is None else all_codes[good]
        # Drop segments without samples (e.g. wholly under BAD annotations) from the codes.
        _, lin_codes = np.unique(lin_codes, return_inverse=True)
        unwarp = None
        if self.mixing_ == "post-nonlinear":
            # h becomes part of the standardisation; the sources are then
            # separated as for mixing="linear", on the unwarped signal.
            unwarp = self._fit_sensor_unwarp(data, all_codes, good, fit_filter)
            if try_unwarp and self.sensor_nonlinearity_.max() < _UNWARP_KEEP:
                # mixing="auto": the sensors are linear; drop h and fit the
                # filtered recording exactly as mixing="linear" does.
                self.mixing_ = "linear"
                self.sensor_coefs_ = None
                data = fit_filter(_bridge_rejected(data, good))
                stats = data if good is None else data[:, good]
                self._fit_standardisation(stats)
        Xt = self._standardize(data).astype(np.float64)
        if fit_filter is not None and self.mixing_ == "post-nonlinear":
            # The model's sources are those of the filtered h(x).
            Xt = fit_filter(_bridge_rejected(Xt, good))
        if good is not None:
            Xt = Xt[:, good]
        Y = Xt[: self.n_sources]
        if self.prior_ == "gengauss":
            result = fit_gengauss_ivae(Y, lin_codes)
            self.source_shape_ = result["shape"]
        else:
            result = fit_linear_ivae(Y, lin_codes)
        W = result["unmixing"]
        # Per-segment means and variances of the unit-variance sources: the fitted prior.
        S = W @ Y
        counts = np.bincount(lin_codes)
        seg_mean = np.stack([np.bincount(lin_codes, weights=s) / counts for s in S], axis=1)
        seg_sq = np.stack([np.bincount(lin_codes, weights=s * s) / counts for s in S], axis=1)
        seg_var = seg_sq - seg_mean**2
        unmixing = np.zeros((self.n_sources, self.rank_))
        unmixing[:, : self.n_sources] = W
        mixing = np.zeros((self.rank_, self.n_sources))
        mixing[: self.n_sources] = np.linalg.inv(W)
        residual = Xt - mixing @ S
        noise_var = np.maximum(residual.var(axis=1), 1e-6)

        model = self._build_model()
        n = self.n_sources
        with torch.no_grad():
            model.set_linear_path(unmixing, mixing)
            enc = model.encoder.layers[-1]
            enc.weight[n : 2 * n].zero_()
            # The exact posterior of the noiseless model is a point mass at W x:
            # the smallest log-variance the encoder may output.
            enc.bias[n : 2 * n].fill_(_LOGVAR_MIN)
            model.noise_logvar.copy_(torch.from_numpy(np.log(noise_var))[:, None])
            if model.prior_net is not None and model.prior_net.discrete:
                table = model.prior_net.table.weight
                if table.shape[0] == seg_var.shape[0]:
                    table[:, :n] = torch.from_numpy(seg_mean)
                    table[:, n:] = torch.from_numpy(np.log(np.maximum(seg_var, 1e-12)))
        entry = dict(step=0, loss=result["nll"], n_iter=result["n_iter"])
        if "start_nll" in result:
            entry["start_loss"] = result["start_nll"]
        entry["converged"] = result["converged"]
        if unwarp is not None:
            entry.update(unwarp_loss=unwarp["nll"], unwarp_n_iter=unwarp["n_iter"])
        self.history_ = [entry]
        if not result["converged"]:
            fitted = "linear iVAE" + (" (prior='gengauss')" if self.prior_ == "gengauss" else "")
            warnings.warn(
                f"The {fitted} fit stopped after {result['n_iter']} L-BFGS iterations "
                "without converging; the sources may be off. Check the data for outliers "
                "or use longer windows.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.n_steps_run_ = 0
        self.data_device_ = "host"
        self.model_ = model.to(device)
        self.source_mean_ = self._source_mean(data, codes, u_layout, good)
        return self

    def _fit_sensor_unwarp(self, data, codes, good=None, fit_filter=None) -> dict:
        """mixing="post-nonlinear": fit h, and store it in the standardisation.

        h is fitted jointly with a square unmixing by maximum likelihood
        (:func:`sepkit.train.fit_post_nonlinear_ivae`). That unmixing is then
        dropped: its rows beyond the sources model the rest of the signal as
        stationary Gaussian noise, so a source with little non-stationarity
        (ECG, line noise) is as likely a noise row as a source row; the
        sources are instead separated on the unwarped signal as for
        mixing="linear", from its strongest principal components (measured
        on a clipped 32-channel make_eeg recording, seed 2: MCC 0.861 vs
        0.804 for the joint unmixing, whose ECG source fell to |r| 0.11).

        Sets ``sensor_mean_``, ``sensor_scale_``, ``sensor_coefs_`` (h per
        channel, on the standardised channels) and ``mean_``, ``whitening_``,
        ``dewhitening_`` and ``rank_`` (PCA whitening, as ``_fit_whitening``)
        for the standardised unwarped data y = h(x). ``data`` and ``codes``
        cover the whole recording; ``good`` (or None) marks the samples
        fitted, after ``fit_filter`` has filtered the unwarped signal.
        """
        from .functional import sensor_unwarp
        from .train import fit_post_nonlinear_ivae

        stats = data if good is None else data[:, good]
        self.sensor_mean_ = stats.mean(axis=1).astype(np.float64)
        self.sensor_scale_ = stats.std(axis=1).astype(np.float64)
        x = (data - self.sensor_mean_[:, None]) / self.sensor_scale_[:, None]
        if fit_filter is not None:
            x = _bridge_rejected(x, good)
        result = fit_post_nonlinear_ivae(
            x,
            codes,
            self.n_sources,
            degree=_UNWARP_DEGREE,
            max_iter=_UNWARP_MAX_ITER,
            feature_filter=fit_filter,
            keep=good,
        )
        self.sensor_coefs_ = result["coefs"]
        y, _ = sensor_unwarp(torch.from_numpy(x), torch.from_numpy(self.sensor_coefs_))
        change = y - torch.from_numpy(x)
        if good is not None:
            change, y_fit = change[:, good], y[:, good]
        else:
            y_fit = y
        self.sensor_nonlinearity_ = (change.std(dim=1) / y_fit.std(dim=1)).numpy()
        # Back to each channel's own scale, so that the principal components
        # weigh the channels as they do for mixing="linear".
        scale = self.sensor_scale_
        y = y.numpy() * scale[:, None]
        if fit_filter is not None:
            y = fit_filter(y)
        stats = y if good is None else y[:, good]
        self._fit_standardisation(stats)
        # Fold the scale in: _standardize applies whitening_ to h(x) itself.
        self.mean_ = self.mean_ / scale
        self.whitening_ = self.whitening_ * scale[None, :]
        self.dewhitening_ = self.dewhitening_ / scale[:, None]
        return result

    def _linear_codes(self, codes, u_layout, n_times):
        """One segment code per sample of the recording, for the linear iVAE."""
        if u_layout:
            return window_labels(n_times, self.window_samples_, self.hop_samples_)
        if codes is None or codes.ndim != 1:
            return None
        return codes

    def _ica_matrices(self, Xt, seed):
        """Unmixing (n_sources, rank_) and mixing (rank_, n_sources) of ICA on ``Xt``.

        ICA runs on the first ``n_sources`` whitened dimensions (the ones
        ``_fit_whitening`` scales to unit variance; the weaker ones are left
        to the MLPs). Rows of the unmixing are scaled to give unit-variance
        sources, the scale of the prior.
        """
        Y = Xt[: self.n_sources].astype(np.float64)
        if self.ica_init == "picard":
            try:
                from picard import picard
            except ImportError:
                raise ImportError(
                    "ica_init='picard' needs python-picard: pip install python-picard, "
                    "or pass ica_init='fastica'."
                ) from None
            # Picard's defaults (Picard-O, extended), as mne.preprocessing.ICA runs it.
            _, W, _ = picard(Y, whiten=False, random_state=seed, max_iter=500)
        else:
            from sklearn.decomposition import FastICA

            ica = FastICA(whiten=False, random_state=seed, max_iter=1000, tol=1e-4)
            W = ica.fit(Y.T).components_
        W = W / (W @ Y).std(axis=1)[:, None]
        unmixing = np.zeros((self.n_sources, self.rank_))
        unmixing[:, : self.n_sources] = W
        mixing = np.zeros((self.rank_, self.n_sources))
        mixing[: self.n_sources] = np.linalg.inv(W)
        return unmixing, mixing

    def _build_model(self) -> IVAE:
        # mixing="linear": one linear layer each way (with the linear path
        # holding the fit), per sample; the network settings do not apply.
        linear = getattr(self, "mixing_", "nonlinear") in _LINEAR_MIXINGS
        return IVAE(
            self.rank_,
            self.n_sources,
            n_segments=self.n_segments_,
            n_u=self.n_u_,
            n_hidden=self.n_hidden,
            n_layers=1 if linear else self.n_layers,
            kernel_size=1 if linear else self.kernel_size,
            activation=self.activation,
            # The module's prior table holds the segment means and variances;
            # a generalised Gaussian's shapes live in source_shape_.
            prior="gauss" if self.prior_ == "gengauss" else self.prior_,
            posterior="diag" if linear else self.posterior_,
            # The linear model's posterior mean is W x whatever the window.
            encoder_u=self.encoder_u and not linear,
            decoder_u=self.decoder_u,
            learn_noise=self.learn_noise,
            noise_var=self.noise_var,
            linear_path=self.ica_init is not None or linear,
        )

    def _standardize(self, data):
        if getattr(self, "sensor_coefs_", None) is not None:  # mixing="post-nonlinear"
            from .functional import sensor_unwarp

            x = (data - self.sensor_mean_[:, None]) / self.sensor_scale_[:, None]
            data, _ = sensor_unwarp(torch.from_numpy(x), torch.from_numpy(self.sensor_coefs_))
            data = data.numpy()
        return (self.whitening_ @ (data - self.mean_[:, None])).astype(np.float32)

    def _destandardize(self, out):
        """The inverse of :meth:`_standardize`, shape (n_channels, n_times)."""
        out = self.dewhitening_ @ out + self.mean_[:, None]
        if getattr(self, "sensor_coefs_", None) is not None:  # mixing="post-nonlinear"
            from .functional import sensor_warp

            x = sensor_warp(torch.from_numpy(out), torch.from_numpy(self.sensor_coefs_)).numpy()
            out = x * self.sensor_scale_[:, None] + self.sensor_mean_[:, None]
        return out

    # ------------------------------------------------------------ inference
    def _device(self):
        return next(self.model_.parameters()).device

    @torch.no_grad()
    def _run_chunked(self, fn, inp: np.ndarray, codes) -> np.ndarray:
        """Apply a fully convolutional ``fn(x, u)`` over time in bounded-memory chunks."""
        device = self._device()
        n_times = inp.shape[1]
        margin = self.n_layers * (self.kernel_size // 2)
        outs = []
        for start in range(0, n_times, _INFER_CHUNK_SAMPLES):
            stop = min(n_times, start + _INFER_CHUNK_SAMPLES)
            lo, hi = max(0, start - margin), min(n_times, stop + margin)
            x = torch.from_numpy(np.ascontiguousarray(inp[:, lo:hi]))[None].to(device)
            u = None
            if codes is not None:
                u = torch.from_numpy(np.ascontiguousarray(codes[..., lo:hi]))[None].to(device)
            out = fn(x, u)[0, :, start - lo : start - lo + (stop - start)]
            outs.append(out.float().cpu().numpy())
        return np.concatenate(outs, axis=1)

    def _wrap(self, out, kind, rec, prefix):
        if kind == "array":
            return out
        names = tuple(f"{prefix}{i:03d}" for i in range(out.shape[0]))
        if kind == "recording":
            return Recording(out, rec.sample_rate, names, rec.kind)
        return sources_to_raw(out, rec.raw, names)

    def transform(self, X, u=None, *, picks=None, resample: bool = False):
        """Estimated sources: the mean of q(z|x,u), refined if ``refine_steps > 0``.

        Parameters
        ----------
        X : ndarray, shape (n_channels, n_times), Recording or mne.io.Raw
            For a Raw, the channels named as in fit are taken (an error names
            any it lacks).
        u : None, "annotations", "events" or ndarray
            As in ``fit``; default the window index (labels seen in fit), or
            the annotations / stim-channel events of a Raw when fitted with
            ``u="annotations"`` / ``u="events"``.
        picks : str or list or None
            Raw only; must select the fitted channels. None takes them by name.
        resample : bool
            A Recording or Raw whose sample rate differs from the one of fit
            (``sample_rate_``) is an error, unless True: then it is resampled
            to ``sample_rate_`` first (and so are the sources returned).

        Returns
        -------
        S : ndarray, shape (n_sources, n_times), or a Recording / Raw of sources
            named IVAE000, IVAE001, ... (same type as ``X``). A Raw has
            ``misc`` channels and the sample rate, ``first_samp``,
            ``meas_date`` and annotations of ``X``.
        """
        self._check_fitted()
        check_option("resample", resample, (True, False))
        X = self._match_sample_rate(X, resample)
        is_raw = _is_mne_raw(X)
        data, _, kind, rec = self._unpack(X, picks, self.ch_names_ if is_raw else None)
        if getattr(self, "domain_", "time") == "tf":  # sepkit/tf_separation.py
            from .tf_separation import transform_separator

            return transform_separator(self, data, None, kind, rec, u)
        if is_raw:
            u = self._raw_u(X, u)
        if data.shape[0] != self.n_channels_:
            names = f" ({', '.join(self.ch_names_)})" if self.ch_names_ else ""
            raise ValueError(
                f"X has {data.shape[0]} channels but the separator was fitted on "
                f"{self.n_channels_}{names}. Pass the same channels as in fit (for an MNE "
                "Raw, picks=[...] selects them)."
            )
        model = self.model_
        refine = (
            getattr(self, "refine_steps", 0) > 0
            and model.prior != "laplace"
            and getattr(self, "mixing_", "nonlinear") not in _LINEAR_MIXINGS
        )
        # The refinement's prior p(z|u) needs u even when the encoder ignores it.
        needs_u = model.encoder_u or (refine and model.prior_net is not None)
        codes = self._encode_u(u, data.shape[1], fitting=False) if needs_u else None

        def sources(x, uu):
            z = model.encode(x, uu if model.encoder_u else None)[0]
            if refine:
                z = model.refine_sources(
                    x,
                    uu,
                    z,
                    prior_weight=self.refine_prior_weight,
                    n_iter=self.refine_steps,
                )
            return z

        out = self._run_chunked(sources, self._standardize(data), codes)
        return self._wrap(out, kind, rec, "IVAE")

    def _match_sample_rate(self, X, resample):
        """X itself, or X resampled to ``sample_rate_`` (Recording / Raw only)."""
        expected = getattr(self, "sample_rate_", None)
        if isinstance(X, Recording):
            got = X.sample_rate
        elif _is_mne_raw(X):
            got = X.info["sfreq"]
        else:
            return X  # a plain array carries no rate
        if expected is None or float(got) == float(expected):
            return X
        if not resample:
            raise ValueError(
                f"X has sample_rate {float(got):g} Hz but the model expects {float(expected):g} "
                "Hz. Pass resample=True to resample it, or resample it yourself first."
            )
        if isinstance(X, Recording):
            from .io.audio import resample as resample_recording

            return resample_recording(X, float(expected))
        from .io.eeg import resample as resample_raw

        return resample_raw(X, float(expected))

    def inverse_transform(self, S, u=None):
        """Map sources back to the sensors: the mean of p(x|z[,u]).

        Parameters
        ----------
        S : ndarray, shape (n_sources, n_times), or a Recording / Raw of sources
            (a Raw from ``transform`` / ``get_sources``, channels IVAE000, ...).
        u : None or ndarray
            Needed only with ``decoder_u=True``.

        Returns
        -------
        X_hat : ndarray, shape (n_channels, n_times) (a Recording for a
            Recording, a Raw with the fitted channels for a Raw)
        """
        self._check_fitted()
        source_names = [f"IVAE{i:03d}" for i in range(self.n_sources)]
        data, _, kind, rec = self._unpack(S, source_names if _is_mne_raw(S) else None)
        if getattr(self, "domain_", "time") == "tf":  # sepkit/tf_separation.py
            from .tf_separation import inverse_transform_separator

            return inverse_transform_separator(self, data, None, kind, rec)
        if data.shape[0] != self.n_sources:
            raise ValueError(
                f"S has {data.shape[0]} rows but the separator has n_sources={self.n_sources}. "
                "Pass the output of transform."
            )
        codes = self._encode_u(u, data.shape[1], fitting=False) if self.model_.decoder_u else None
        out = self._run_chunked(lambda z, uu: self.model_.decode(z, uu), data, codes)
        out = self._destandardize(out.astype(np.float64)).astype(np.float32)
        if kind == "array":
            return out
        names = self.ch_names_ or tuple(f"ch{i}" for i in range(self.n_channels_))
        if kind == "raw":
            return sensors_to_raw(out, rec.raw, names, getattr(self, "info_", None))
        return Recording(out, rec.sample_rate, names, rec.kind)

    def get_components(self) -> np.ndarray:
        """Sensor patterns, shape (n_channels, n_sources).

        Column k is how the sensors change per unit of source k, in sensor
        units: for a linear decoder (``n_layers=1``, ``kernel_size=1``) the
        mixing matrix (the decoder's weight, de-whitened), as
        ``ICA.get_components``; otherwise the Jacobian ``d f(z) / d z`` of
        the decoder at the data mean, i.e. at ``source_mean_``, the mean of
        the estimated sources over the fitted samples. (For a linear decoder
        the Jacobian is the same everywhere, so both agree.) The Jacobian at
        one point is the pattern of small deflections around typical
        activity; far from it (e.g. in a saturated amplifier) a source's
        effect on the sensors differs.

        With ``kernel_size > 1`` the decoder maps a stretch of sources to
        each sensor sample; the Jacobian is taken for a constant source
        stretch (the sum of the per-lag weights), the pattern of slow changes.

        Returns
        -------
        patterns : ndarray, shape (n_channels, n_sources)
        """
        self._check_fitted()
        if getattr(self, "domain_", "time") == "tf":
            raise ValueError(
                "get_components is defined for domain='time' only: a domain='tf' separator "
                "has one demixing matrix per frequency, in tf_.demix (n_freqs, n_sources, "
                "n_channels)."
            )
        model = self.model_
        device = self._device()
        linear = self.n_layers == 1 and self.kernel_size == 1 and not model.decoder_u
        if linear and model.decoder_linear is None:
            W = model.decoder.layers[0].weight[:, :, 0].detach().cpu().double().numpy()
        else:
            mean = getattr(self, "source_mean_", None)
            if mean is None:  # separators saved before source_mean_ existed
                mean = np.zeros(self.n_sources)
            z0 = torch.as_tensor(mean, dtype=torch.float32, device=device)

            # A constant stretch as long as the decoder sees, read at its centre.
            margin = self.n_layers * (self.kernel_size // 2)

            def f(z):
                stretch = z[None, :, None].expand(1, -1, 2 * margin + 1)
                return model.decode(stretch, None)[0, :, margin]

            W = torch.autograd.functional.jacobian(f, z0).cpu().double().numpy()
        patterns = self.dewhitening_ @ W
        if getattr(self, "sensor_coefs_", None) is not None:  # mixing="post-nonlinear"
            # Chain rule through the sensor warp g = h^-1 at the decoded source mean:
            # dx/dz = scale * dy/dz / h'(g(y0)).
            from .functional import sensor_unwarp, sensor_warp

            mean = getattr(self, "source_mean_", np.zeros(self.n_sources))
            z0 = torch.as_tensor(mean, dtype=torch.float32, device=device)[None, :, None]
            with torch.no_grad():
                y0 = model.decode(z0, None)[0].cpu().double().numpy()
            y0 = self.dewhitening_ @ y0 + self.mean_[:, None]
            coefs = torch.from_numpy(self.sensor_coefs_)
            x0 = sensor_warp(torch.from_numpy(y0), coefs)
            _, dh = sensor_unwarp(x0, coefs)
            patterns = patterns * (self.sensor_scale_[:, None] / dh.numpy())
        return patterns

    # ------------------------------------------------------------ save / load
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write weights (safetensors, no pickle) and settings to one file.

        The write is atomic: a temp file in the same folder is renamed over
        ``path`` only once complete.

        Parameters
        ----------
        path : str or Path
            The file to write; its name must end in ``.safetensors`` (the format
            it holds, and what ``sepkit separate --model`` and :meth:`load` expect).
        overwrite : bool, default False
            Replace an existing file.

        Returns
        -------
        path : Path
            The file written.
        """
        from safetensors.torch import save_file

        self._check_fitted()
        path = check_model_path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists. Pass overwrite=True to replace it.")
        if getattr(self, "domain_", "time") == "tf":  # sepkit/tf_separation.py
            from .tf_separation import save_separator

            return save_separator(self, path)
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()
        }
        for name in ("mean_", "whitening_", "dewhitening_"):
            tensors[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        if getattr(self, "sensor_coefs_", None) is not None:  # mixing="post-nonlinear"
            for name in ("sensor_mean_", "sensor_scale_", "sensor_coefs_"):
                tensors[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        if getattr(self, "source_shape_", None) is not None:  # prior="gengauss"
            tensors["source_shape_"] = torch.from_numpy(np.ascontiguousarray(self.source_shape_))
        if getattr(self, "sensor_nonlinearity_", None) is not None:
            tensors["sensor_nonlinearity_"] = torch.from_numpy(
                np.ascontiguousarray(self.sensor_nonlinearity_)
            )
        classes = None if self.classes_ is None else self.classes_.tolist()
        meta = dict(
            format_version=_FORMAT_VERSION,
            sepkit_version=__version__,
            # Paths (checkpoint_dir) as strings: JSON has no path type.
            params={
                k: os.fspath(v) if isinstance(v, os.PathLike) else v
                for k, v in self.get_params().items()
            },
            n_channels_=self.n_channels_,
            prior_=self.prior_,
            posterior_=self.posterior_,
            mixing_=getattr(self, "mixing_", "nonlinear"),
            n_segments_=self.n_segments_,
            n_u_=self.n_u_,
            classes_=classes,
            window_samples_=self.window_samples_,
            hop_samples_=int(getattr(self, "hop_samples_", self.window_samples_)),
            source_mean_=np.asarray(getattr(self, "source_mean_", np.zeros(0))).tolist(),
            event_u_=bool(getattr(self, "event_u_", False)),
            sample_rate_=self.sample_rate_,
            ch_names_=list(self.ch_names_) if self.ch_names_ else None,
            annotation_u_=bool(getattr(self, "annotation_u_", False)),
            history_=self.history_,
            exclude=self._check_exclude(getattr(self, "exclude", []), "sep.exclude"),
        )
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={"sepkit": json.dumps(meta)})
        return path

    @classmethod
    def from_pretrained(cls, name_or_path, *, device: str = "auto") -> IVAESeparator:
        """Load a shipped pretrained model by name (see :mod:`sepkit.pretrained`).

        The weights' sha256 is checked against the model's config.json before
        they are read; nothing is downloaded and no pickle is executed.
        ``IVAESeparator.from_pretrained("nope")`` lists the valid names.
        """
        from .pretrained import load_pretrained

        return load_pretrained(name_or_path, device=device)

    @classmethod
    def load(cls, path, *, device: str = "auto") -> IVAESeparator:
        """Load a separator written by :meth:`save` (never unpickles anything)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No saved separator at {path}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a sepkit separator file: {err}") from None
        if "sepkit" not in header:
            raise ValueError(f"{path} is a safetensors file but holds no sepkit separator.")
        meta = json.loads(header["sepkit"])
        if meta.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by sepkit {meta.get('sepkit_version')} in a newer format; "
                "upgrade sepkit to load it."
            )
        params = dict(meta["params"])
        params["device"] = device
        sep = cls(**params)
        dev = sep._validate_params()
        sep.exclude = list(meta.get("exclude", []))  # files from before the attribute
        if meta.get("domain_") == "tf":  # sepkit/tf_separation.py
            from .tf_separation import load_separator

            return load_separator(sep, meta, tensors)
        sep.n_channels_ = sep.n_features_in_ = meta["n_channels_"]
        sep.prior_ = meta["prior_"]
        sep.posterior_ = meta["posterior_"]
        sep.mixing_ = meta.get("mixing_", "nonlinear")  # files from before the option
        sep.n_segments_ = meta["n_segments_"]
        sep.n_u_ = meta["n_u_"]
        sep.classes_ = None if meta["classes_"] is None else np.asarray(meta["classes_"])
        sep.window_samples_ = meta["window_samples_"]
        sep.hop_samples_ = meta.get("hop_samples_", sep.window_samples_)
        sep.source_mean_ = np.asarray(meta.get("source_mean_", np.zeros(sep.n_sources)))
        sep.event_u_ = meta.get("event_u_", False)
        sep.sample_rate_ = meta["sample_rate_"]
        sep.ch_names_ = tuple(meta["ch_names_"]) if meta["ch_names_"] else None
        sep.annotation_u_ = meta.get("annotation_u_", False)
        sep.history_ = meta["history_"]
        sep.n_steps_run_ = sep.history_[-1]["step"]
        for name in ("mean_", "whitening_", "dewhitening_"):
            setattr(sep, name, tensors.pop(name).numpy())
        sep.sensor_coefs_ = sep.sensor_nonlinearity_ = sep.source_shape_ = None
        for name in (
            "sensor_mean_",
            "sensor_scale_",
            "sensor_coefs_",
            "sensor_nonlinearity_",
            "source_shape_",
        ):
            if name in tensors:
                setattr(sep, name, tensors.pop(name).numpy())
        sep.rank_ = sep.whitening_.shape[0]
        model = sep._build_model()
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items()}, strict=True)
        sep.model_ = model.to(dev).eval()
        return sep
