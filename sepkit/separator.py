"""IVAESeparator: the public estimator, in the scikit-learn / MNE-ICA tradition.

The estimator holds the options, normalises the input once
(:class:`~sepkit.methods.base.FitInput`), makes the "auto" choice of model
family (:meth:`IVAESeparator._choose_family`) and delegates: the family's
``fit`` returns a :class:`~sepkit.methods.base.Fitted` that every later
method (transform, inverse_transform, get_components, save) asks, without
asking which family it is. See ARCHITECTURE.md.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

from ._check import (
    ACTIVATIONS,
    MAX_SEED,
    POSTERIORS,
    PRIORS,
    check_data_2d,
    check_device_setting,
    check_finite_fit,
    check_fit_data,
    check_float,
    check_int,
    check_option,
    check_precision,
    check_rank,
)
from ._mne_mixin import MNEMixin, segment_sensors, segment_transform
from ._mne_scores import ScoresMixin
from .io.audio import resample as resample_recording
from .io.eeg import edge_samples, is_highpassed, warn_if_not_highpassed
from .io.eeg import resample as resample_raw
from .io.raw import (
    check_flat_eeg,
    check_ptp_thresholds,
    epochs_as_raw,
    info_from_dict,
    info_to_dict,
    is_epochs_or_evoked,
    picked_info,
    ptp_reject_mask,
    raw_to_data,
    resolve_raw_u,
    sensors_to_raw,
    sources_to_raw,
    span_mask,
)
from .io.recording import Recording, recording_channels
from .methods import MIXINGS, load_family, resolve_domain
from .methods._time import LINEAR_PRIORS
from .methods.base import FitInput
from .preprocessing import FitFilter, band_text
from .registry import check_model_file, verified_weights
from .serialization import (
    MODEL_SUFFIX,
    check_model_path,
    fitted_from_state,
    read_separator,
    write_separator,
)

__all__ = ["IVAESeparator", "MODEL_SUFFIX", "NotFittedError", "check_model_path"]


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """Raised when a method that needs a fitted estimator is called before ``fit``.

    scikit-learn's ``NotFittedError`` (a ValueError and an AttributeError, so
    ``except sklearn.exceptions.NotFittedError`` and ``hasattr``-style checks work
    as for any scikit-learn estimator; audit: it was a class of its own that
    neither caught), and a RuntimeError, as it was before.
    """


def _is_mne_raw(obj) -> bool:
    return hasattr(obj, "info") and hasattr(obj, "get_data") and hasattr(obj, "ch_names")


class IVAESeparator(MNEMixin, ScoresMixin, BaseEstimator):
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
    n_sources : int, float or None
        Number of sources to estimate (<= the rank of the data). As MNE's
        ``ICA(n_components=...)`` for the time-domain models: a float in
        (0, 1) takes the fewest principal components whose cumulative share
        of the variance reaches it, and None every dimension the data hold
        (a share of 0.999999, which leaves out what an average reference or
        an interpolation removed); counted at fit on the data as fitted (the
        fit filter's band), and stored in ``n_sources_``. The
        time-frequency models (rooms) need the number of talkers.
    prior : {"auto", "gauss", "laplace", "standard", "extended", "gengauss"}
        Family of p(z|u). "standard" fits a plain VAE with p(z) = N(0, I) and
        no u: a non-identifiable baseline. For the network, "auto" follows the
        recording: "laplace" for EEG (an MNE Raw or a Recording of kind
        "eeg"), whose sources (blinks, bursts) are heavy-tailed within a
        window, "gauss" otherwise. For the linear models (``mixing``), "auto"
        is "extended" for EEG and "gauss" otherwise. "extended" and
        "gengauss" are priors of the linear and post-nonlinear models only;
        each keeps a scale (and mean) per source and segment, so the
        non-stationarity still separates, and adds a shape per source, so that
        sources whose variance hardly changes between windows (ECG, line
        noise) are told apart by their non-Gaussianity, as ICA does; the
        shapes are in ``source_shape_``. "extended": a Gaussian times a
        super-Gaussian (sech^2) or sub-Gaussian (cosh) factor, chosen per
        source as extended infomax does (:mod:`sepkit.functional_ica`),
        fitted by picard's preconditioned L-BFGS; a few passes over the
        samples, so its time stays near that of "gauss" (128 channels x 10 min:
        benchmarks/README.md). "gengauss": a generalised Gaussian with a
        learned shape per source (:func:`sepkit.functional.gengauss_ivae_nll`);
        it passes over all samples per iteration, so it fits much slower
        (measured on one CPU thread: 16-83 s against about 1 s for 10 min of
        19-64 channels at 256 Hz). The choice is stored in ``prior_``.
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
        Seed for initialisation and batches, 0 to 2**63 - 1; an int makes fits
        reproducible. A numpy Generator or RandomState is refused (torch takes
        a number): pass a seed drawn from it.
    verbose : bool or "auto"
        Progress bars (network training, the time-frequency fit): True always,
        False never, "auto" (default) as tqdm does, only when stderr is a
        terminal, so logs and notebooks' captured output stay quiet.
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
        every room (>= 0.22). A room with 2 or 3 sources, at least as many
        microphones, at 16 kHz or more and at least 10 s long is separated with
        the shipped speech prior ``ivae-speech-16k-v1`` (as
        ``source_model="ivae-speech-16k-v1"``; ``family_ == "tf_pretrained"``),
        which measured better than the per-mixture model there
        (recipes/speech_source_model, 36 rooms per shape, with its default
        post-filter: median SI-SDRi 7.76 against 5.78 dB with 2 sources on 2
        microphones, 3.16 against 2.18 with 3 on 3; with 4 on 4 it is not chosen,
        2.38 against 1.75 in 18 rooms where ILRMA leads with 3.00);
        pass ``domain="tf"`` (or ``fit_params`` of the tf family) for the
        per-mixture model, e.g. for sounds that are not speech. Anything else
        (arrays, EEG, Raw) is "time".
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
    mixing : {"auto", "nonlinear", "flow", "linear", "post-nonlinear"}
        "nonlinear": the convolutional iVAE above, trained on the ELBO.
        "flow": the iVAE's noiseless limit with an invertible nonlinear
        decoder (:mod:`sepkit.methods.flow`): an affine-coupling network g
        (:class:`~sepkit.models.CouplingFlow`), started at the linear iVAE's
        unmixing and fitted by exact maximum likelihood, log p(g(x)|u) +
        log|det J_g(x)|, under the Gaussian conditional prior of eq. (7)
        with its segment means and variances profiled out; the sources are
        g(x), exactly, and ``inverse_transform`` is g's exact inverse. Its
        settings go in ``fit_params`` (:class:`sepkit.methods.flow.FlowConfig`:
        ``n_steps``, ``lr``, ``batch_size``, ``n_coupling``, ``n_hidden``);
        the network's settings, ``refine_steps``, ``init=`` and ``resume``
        do not apply, u must be discrete and ``prior`` "auto" or "gauss".
        With more channels than ``n_sources`` it sees the first
        ``n_sources`` principal components. Measured on the paper's setting
        (benchmarks/README.md, "Nonlinear core"): see there for MCC and time
        against the ELBO network. "auto" resolves to "flow" for data that are
        neither EEG nor audio (a plain array) when ``n_sources`` equals the
        number of channels or is None (a square mixing that can be invertible) and no
        setting asks for the ELBO network (a network setting such as
        ``n_steps`` or ``n_hidden`` changed from its default, a prior other
        than "gauss", ``ica_init``, ``decoder_u``, ``whiten=False``,
        ``init=``, a continuous u); otherwise to "nonlinear", whose observation
        noise also covers sensor noise and extra channels.
        "linear": the iVAE with a linear, invertible decoder x = A z in the
        limit of zero observation noise, where the exact posterior is a point
        mass at W x (W = A^-1) and the ELBO is the exact log-likelihood with
        the conditional prior of eq. (7) (per-segment means and variances).
        With the Gaussian prior it is fitted by maximum likelihood with L-BFGS
        on the segment covariances of the first ``n_sources`` whitened
        dimensions (:func:`sepkit.methods.likelihood.fit_linear_ivae`; the
        objective of Pham and Cardoso's separation of non-stationary sources),
        and the sources are identifiable from their non-stationarity alone;
        with the extended prior (EEG's default, see ``prior``) also from their
        non-Gaussianity (:func:`sepkit.methods.likelihood.fit_extended_ivae`).
        Seconds, no network training, no randomness. The network settings,
        ``n_steps``, ``lr`` and ``batch_size`` do not apply; u must be discrete
        (windows, labels, events or annotations), and ``prior`` "auto",
        "gauss", "extended" or "gengauss". "auto"
        (stored in ``mixing_``): "linear" for EEG (an MNE Raw or a Recording
        of kind "eeg"), whose sensors see a linear mixture of their sources
        (volume conduction, the assumption of MNE's ICA), and for audio whose
        channels' cross-spectra are real (an instantaneous mix; a room goes to
        ``domain="tf"``), unless an option needs the network
        (``prior="laplace"``, ``ica_init``, ``init=``, a continuous u,
        ``decoder_u``), or "post-nonlinear" for saturating sensors (below);
        "flow" or "nonlinear" for other data (see "flow" above). Measured on
        19-channel semi-synthetic EEG (benchmarks/eeg.py, seed 0, one CPU
        thread): MCC 0.848 on a linear mixture in 0.4 s (MNE picard 0.846 in
        3.8 s; the Gaussian prior 0.847; mixing="nonlinear" 0.678), 0.794
        with amplifier saturation (picard 0.775). "post-nonlinear": the linear iVAE behind a learned, invertible
        nonlinearity per sensor, x_c = g_c((A z)_c), for saturating or
        compressive amplifiers: g_c^-1 = h_c is odd and increasing, h(x) = x +
        c1 x^3/3 + c2 x^5/5 + c3 x^7/7 on the standardised channel
        (:func:`sepkit.functional.sensor_unwarp`; the series of the inverse
        of a soft clip L tanh(y/L)). h is fitted by exact maximum likelihood
        together with a square unmixing over all channels (the change of
        variables adds sum_c log h_c'(x_c);
        :func:`sepkit.methods.likelihood.fit_post_nonlinear_ivae`), then the sources are
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
        fit, also where h is dropped: pass ``mixing="linear"`` to skip it.
        "auto" tries it on at most 64 channels and 512 MiB of the fit's
        feature covariances, and beyond that fits "linear" and warns: its time
        grows with the cube of the channel count (128 channels x 10 min: 78 s
        and 3.0 GB peak on one AMD EPYC thread, where "linear" took 3.7 s and
        1.0 GB). A
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
        (:func:`sepkit.methods.likelihood.fit_post_nonlinear_ivae`): a saturating
        amplifier clips the unfiltered signal, and a filter applied to the
        recording before the fit spreads each clipped sample over its
        neighbours, which no per-sample h can undo. So fit the
        post-nonlinear model on the unfiltered recording with ``highpass``
        set; measured on clipped make_eeg recordings in
        recipes/eeg_semisynthetic/README.md.
    fit_params : dict or None
        The chosen family's own settings, as ``mne.preprocessing.ICA(fit_params=...)``:
        for the network family any of its settings (``n_hidden``, ``n_steps``,
        ``lr``, ... :data:`sepkit.methods.network.FIT_PARAMS`; the constructor
        keywords of the same names are the older spelling, and giving one both
        ways is an error); for domain='tf' the fields of
        :class:`sepkit.methods.tf.TFConfig` (``n_iter``, ``n_init``,
        ``frame_seconds``, ...); for mixing='flow' the fields of
        :class:`sepkit.methods.flow.FlowConfig` (``n_steps``, ``lr``,
        ``batch_size``, ``n_coupling``, ``n_hidden``; given with
        ``mixing="auto"`` they are read as the network's, so pass
        ``mixing="flow"`` with them); the linear family takes none. A key the
        chosen family does not know is an error that lists the allowed ones. The
        top-level settings are ``n_sources``, ``domain``, ``mixing``, ``prior``,
        the windows of u, ``highpass``/``lowpass``, ``device``,
        ``random_state`` and ``verbose``. With ``source_model``: ``n_init``,
        ``n_iter``, ``n_finetune``, ``finetune_lr``, ``n_ip``, ``ref_channel``,
        ``max_fit_seconds``, ``postfilter`` (:data:`sepkit.methods.tf_pretrained.FIT_PARAMS`;
        ``postfilter``, 0.5 there and 0 for domain='tf', is the share of a
        soft-mask estimate blended into each separated image).
    source_model : str, path or None
        A pretrained speech source model (e.g. ``"ivae-speech-16k-v1"``, see
        ``pretrained/README.md``) or its folder: reverberant multichannel audio
        is then separated with that model as the source prior, and only the
        demixing is fitted (:mod:`sepkit.methods.tf_pretrained`). Audio at
        another sample rate is resampled to the model's and back. None: the
        families chosen by ``domain`` and ``mixing`` (``domain="auto"`` picks
        ``ivae-speech-16k-v1`` itself for rooms of 2-3 sources, see ``domain``).
    lowpass : float or None
        Edge in Hz of a low-pass filter applied with ``highpass`` in the
        same way (both set: a band-pass, as ``raw.filter(highpass,
        lowpass)``). None (default): no low-pass.

    Attributes
    ----------
    fitted_ : sepkit.methods.base.Fitted
        The family's fitted state; every later method asks it.
    family_ : {"network", "flow", "linear", "tf", "tf_pretrained"}
        Which model family ran (``fitted_.describe()`` says more).
    n_sources_ : int
        The number of sources fitted: ``n_sources``, or what None or a share
        of variance counted to (MNE's ``n_components_``).
    model_ : IVAE or CouplingFlow
        The fitted torch module (the flow family's g: a CouplingFlow); not set
        by the linear family, which keeps numpy matrices (below) and no torch.
    unmixing_ : ndarray, shape (n_sources, rank_)
        Linear family: B, the sources B @ whitening_ @ (x - mean_) (after the
        sensor unwarping for ``mixing_ == "post-nonlinear"``).
    noise_var_ : ndarray, shape (rank_,)
        Linear family: what the sources leave of each whitened dimension.
    segment_mean_, segment_var_ : ndarray, shape (n_segments_, n_sources) or None
        Linear family: the fitted prior p(z|u), each segment's source means
        and variances (None when some window had no sample to fit).
    domain_ : {"time", "tf"}
        The domain ``domain`` resolved to.
    mixing_ : {"linear", "post-nonlinear", "nonlinear", "flow"}
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
        flat-topped); ``prior_ == "extended"``: each source's k (2:
        super-Gaussian, -1: sub-Gaussian); else None.
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
    n_samples_ : int
        Samples the model was fitted on (after BAD annotations, ``reject`` /
        ``flat`` and ``decim``), as ``ICA.n_samples_``. With ``reject`` or
        ``flat`` it can differ from MNE's count: MNE leaves out the last,
        shorter ``tstep`` stretch, and with ``decim`` judges stretches of the
        decimated samples; we judge every stretch at the full rate, then
        decimate (on EEGLAB's sample, 100 s: 11265 against 11264 samples, and
        3754 against 3784 with ``decim=3``).
    reject_ : dict or None
        fit's ``reject``, as ``ICA.reject_``.
    fitted_on_epochs_ : bool
        Whether fit took MNE Epochs (``to_mne_ica()``'s ``current_fit`` is
        then ``"epochs"``, as MNE's ICA records it).
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
        verbose: bool | str = "auto",
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
        fit_params: dict | None = None,
        source_model: str | os.PathLike | None = None,
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
        self.fit_params = fit_params
        self.source_model = source_model

    @property
    def source_mean_(self) -> np.ndarray:
        """Mean of the estimated sources over the fitted samples (time-domain fits)."""
        value = getattr(self.fitted_, "source_mean", None)
        if value is None:
            raise AttributeError("source_mean_ is set by time-domain fits only.")
        return value

    @source_mean_.setter
    def source_mean_(self, value) -> None:
        # get_components takes the decoder's Jacobian here: setting it moves that point.
        self.fitted_.source_mean = None if value is None else np.asarray(value, np.float64)

    # ------------------------------------------------------------------ checks
    def _validate_params(self, *, training: bool = True):
        """Check every setting; returns the device setting (resolved by the torch families).

        ``training=False`` (``load``) skips the settings only training reads
        (``precision``), so that a model trained in bf16 on a GPU loads and
        runs on a CPU.
        """
        _check_n_sources(self.n_sources)
        check_option("prior", self.prior, ("auto", *PRIORS, *LINEAR_PRIORS))
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
        for name in ("encoder_u", "decoder_u", "learn_noise", "whiten"):
            check_option(name, getattr(self, name), (True, False))
        check_option("verbose", self.verbose, (True, False, "auto"))
        self._validate_training_params()
        self._validate_choice_params()
        # Checked here as a setting; the families that compute with torch
        # resolve it (check_device), so a linear fit never imports torch.
        device = check_device_setting(self.device)
        if training:
            check_precision(self.precision, device)
        return device

    def _validate_training_params(self):
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
        _check_seed(self.random_state)
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
        if self.batch_size_start is not None:
            check_int("batch_size_start", self.batch_size_start, min_value=1)
        check_float("kl_warmup", self.kl_warmup, min_value=0.0, max_value=1.0)
        check_int("refine_steps", self.refine_steps, min_value=0)
        check_float("refine_prior_weight", self.refine_prior_weight, min_value=0.0, strict_min=True)
        for name in ("highpass", "lowpass"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), min_value=0.0, strict_min=True)
        self._check_fit_params_type()

    def _validate_choice_params(self):
        check_option("domain", self.domain, ("auto", "time", "tf"))
        check_option("ica_init", self.ica_init, (None, "picard", "fastica"))
        if self.ica_init is not None and not self.whiten:
            raise ValueError(
                f"ica_init={self.ica_init!r} runs ICA on the whitened data and needs "
                "whiten=True, got whiten=False. Pass whiten=True or ica_init=None."
            )
        check_option("mixing", self.mixing, ("auto", *MIXINGS))
        if self.refine_steps and (self.kernel_size != 1 or self.prior == "laplace"):
            raise ValueError(
                f"refine_steps={self.refine_steps} refines each time sample on its own with a "
                f"Gaussian prior; it needs kernel_size=1 (got {self.kernel_size}) and prior "
                f"'gauss', 'standard' or 'auto' (got {self.prior!r}). Pass refine_steps=0."
            )
        family = MIXINGS.get(self.mixing)  # None for "auto"
        if family is not None and load_family(family).EXACT is not None:
            _check_exact_options(self, family)

    def _check_fitted(self):
        if not hasattr(self, "fitted_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def set_params(self, **params):
        """As scikit-learn's; after fit, a readout setting the fitted model ignores is reported."""
        _check_nested_fit_params(params)
        super().set_params(**params)
        _warn_unused_readout(self, params)
        return self

    @staticmethod
    def _unpack(X, picks=None, fitted_names=None):
        """Return (data, sample_rate, kind, container) for ndarray / Recording / Raw.

        For a Raw the container keeps the Raw itself, so outputs can copy its
        timing and annotations; ``fitted_names`` (at inference) selects the
        channels of fit by name.
        """
        if isinstance(X, Recording):
            X = recording_channels(X, picks, fitted_names)
            return check_data_2d(X.data, "Recording data"), X.sample_rate, "recording", X
        if _is_mne_raw(X):
            return raw_to_data(X, picks, fitted_names)
        if picks is not None:
            raise TypeError("'picks' applies to MNE Raw input only; got an array.")
        return check_data_2d(X), None, "array", None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X,
        u=None,
        *,
        picks=None,
        reject_by_annotation: bool = True,
        start: float | None = None,
        stop: float | None = None,
        decim: int | None = None,
        reject: dict | None = None,
        flat: dict | None = None,
        tstep: float = 2.0,
        resume: bool = False,
        init=None,
        callback=None,
    ):
        """Fit the iVAE to a recording.

        Parameters
        ----------
        X : ndarray, shape (n_channels, n_times), Recording, mne.io.Raw or mne.Epochs
            Observations. A Raw that is not high-pass filtered at 0.5 Hz or
            above draws a RuntimeWarning, as slow drifts spoil separation.
            Epochs are fitted end to end, as ``ICA.fit(epochs)`` takes them
            (:func:`sepkit.io.raw.epochs_as_raw`; u: None, ``"events"`` for
            each epoch's event, or one label per sample end to end).
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
            Channels of an MNE Raw to fit: a channel type, a list of names, a
            list of types (``["eeg", "eog"]``, as MNE), or None for ``"eeg"``.
            Channels in ``raw.info["bads"]`` are left out unless named (as
            MNE's picks), and so are EOG/ECG-typed channels unless picked.
        reject_by_annotation : bool
            Raw only: leave the samples under bad annotations (descriptions
            starting with "bad", any case, as MNE) out of fitting. They do
            not enter the channel means, the whitening, or any training chunk
            (chunks overlapping them are never drawn); ``transform`` still
            separates them.
        start, stop : float or None
            Raw only, as ``ICA.fit``'s: fit on the span from ``start`` to
            ``stop`` (exclusive), in seconds from the first sample of ``raw``
            (None: from the start / to the end); the samples outside it are
            left out as BAD annotations are, so u still counts the windows
            from the recording's start. A whole number other than 0 is
            refused: MNE reads an int as a sample index.
        decim : int or None
            Fit on every ``decim``-th sample only (of those not left out), as
            ``ICA.fit(..., decim=3)``: the whitening still sees every sample,
            the unmixing every ``decim``-th, so the fit runs about ``decim``
            times faster. Low-pass the recording first if it holds power
            above the decimated Nyquist frequency that the sources should not
            be judged on (MNE's advice too). Only the linear families
            (``mixing="linear"`` or ``"post-nonlinear"``, the EEG default),
            whose likelihood is a sum over samples, take it; the network
            families model the time course and refuse it.
        reject, flat : dict or None
            Raw only, as ``ICA.fit``: channel type -> peak-to-peak amplitude
            (volts for EEG), e.g. ``reject=dict(eeg=150e-6)``. Each
            ``tstep``-second stretch where a fitted channel of that type spans
            more (``reject``) or less (``flat``) is left out of the fit, like
            samples under a BAD annotation (:func:`sepkit.io.raw.ptp_reject_mask`).
            Each key must be the type of some fitted channel. For Epochs,
            drop epochs first: ``epochs.drop_bad(reject=...)``.
        tstep : float
            Seconds per stretch judged by ``reject`` and ``flat``.
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
        rejection = _Rejection.of(
            X, reject_by_annotation, decim, (reject, flat, tstep), (start, stop)
        )
        on_epochs = is_epochs_or_evoked(X)
        if on_epochs:
            X, u = epochs_as_raw(X, u)
        with self._family_settings():
            self._fit(X, u, picks, rejection, resume, init, callback)
        self.fitted_on_epochs_ = bool(on_epochs)
        return self

    def _planned_family(self, X, u=None) -> str:
        """The family ``fit(X, u)`` would choose, without fitting (``sepkit.train`` asks it)."""
        self._validate_params()
        _, _, kind, rec = self._unpack(X, None)
        with self._family_settings():
            return self._choose_family(X, kind, rec, u, None).family

    def _fit(self, X, u, picks, rejection, resume, init, callback):
        """``fit`` with the family settings of ``fit_params`` in effect."""
        device = self._validate_params()
        check_option("reject_by_annotation", rejection.by_annotation, (True, False))
        check_option("resume", resume, (True, False))
        _check_u_not_picks(X, u)
        data, sample_rate, kind, rec = self._unpack(X, picks)
        _check_u_column(u, data.shape[1])
        choice = self._choose_family(X, kind, rec, u, init)
        if init is not None and not hasattr(init, "fitted_"):  # a pretrained model's name
            init = type(self).from_pretrained(init, device="cpu")
        inp = self._fit_input(X, data, sample_rate, kind, rec, u, rejection, choice)
        _check_decim_family(inp.decim, choice.module)
        _check_fit_hooks(choice.module, self, resume, callback)
        # Every family's input is checked the same way, before any family sees it
        # (a silent recording has no phase score; the choice then means nothing).
        check_fit_data(inp.data, inp.ch_names, inp.good)
        if _is_count(self.n_sources):  # None or a share: counted within the rank
            check_rank(inp.data, self.n_sources, inp.good, getattr(rec, "kind", kind))
        opts = self._family_options(choice, inp)
        fitted = choice.module.fit(
            inp,
            opts,
            device=device,
            init=init,
            resume=resume,
            callback=None if callback is None else self._step_callback(callback, inp),
        )
        check_finite_fit(fitted.state()[0])
        # Set once the fit succeeded, so that a failed refit leaves the earlier fit whole.
        self._set_fitted(fitted, inp.ch_names, inp.sample_rate)
        self.exclude = []  # indices chosen on an earlier fit name other sources now
        self.annotation_u_, self.event_u_ = inp.u_from == "annotations", inp.u_from == "events"
        _set_provenance(self, init)
        self.n_samples_ = fitted.n_fitted_samples or inp.n_fitted
        self.reject_ = rejection.reject
        self.domain_, self.mixing_phase_ = choice.domain, choice.mixing_phase
        self.info_ = picked_info(rec) if kind == "raw" else None
        return self

    def _check_fit_params_type(self) -> None:
        if self.fit_params is not None and not isinstance(self.fit_params, dict):
            raise TypeError(
                "'fit_params' must be None or a dict of the chosen family's settings, got "
                f"{type(self.fit_params).__name__}."
            )

    @contextmanager
    def _family_settings(self):
        """Give ``fit_params``' family settings effect, for one call.

        ``fit_params`` may hold a family's settings that are also constructor
        keywords (the network's ``n_hidden``, ``n_steps``...); within this block
        the attributes of those names hold them, so every step of fit, inference
        and loading reads one set of settings. Setting one both ways is an error.
        """
        self._check_fit_params_type()
        if self.__dict__.get("_in_family_settings"):
            # Re-entered (a fit callback calling transform): already in effect.
            yield
            return
        defaults = _constructor_defaults()
        given = {k: v for k, v in (self.fit_params or {}).items() if k in defaults}
        twice = sorted(k for k in given if not _same(getattr(self, k), defaults[k]))
        if twice:
            raise ValueError(
                f"{', '.join(twice)} given both as IVAESeparator argument(s) and in fit_params; "
                "give each setting once (fit_params is the place for family settings)."
            )
        saved = {k: getattr(self, k) for k in given}
        self.__dict__.update(given, _in_family_settings=True)
        try:
            yield
        finally:
            self.__dict__.update(saved)
            del self.__dict__["_in_family_settings"]

    def fit_transform(self, X, u=None, **fit_params):
        """Fit, then return the sources of ``X``: ``fit(X, u, ...).transform(X, u)``.

        Unlike scikit-learn's TransformerMixin, the second argument is u (the
        auxiliary variable), passed to both steps.
        """
        self.fit(X, u, **fit_params)
        if is_epochs_or_evoked(X):  # u labelled the epochs for fit; their sources need none
            return self.transform(X)
        return self.transform(X, u, picks=fit_params.get("picks"))

    def _choose_family(self, X, kind, rec, u, init) -> _Choice:
        """The "auto" decision: which family fits, and the settings it resolves.

        Audio (a Recording of kind "audio") goes to the time-frequency family
        when its channels' cross-spectra are complex (a room); the time domain
        is linear for EEG (scalp EEG is a linear mixture) and instantaneous
        audio unless an option needs the network, and flow or nonlinear for
        other data. With the fit filter on an
        unfiltered EEG recording, mixing="auto" also tries the sensor
        unwarping and keeps it where it finds saturating sensors.
        """
        if self.source_model is not None:
            self._check_source_model_options(kind, rec, init)
            _check_count_domain(self.n_sources, "tf")
            return _Choice("tf_pretrained", "tf", None, "gauss", "diag", None)
        count = self.n_sources if _is_count(self.n_sources) else 1
        domain, phase = resolve_domain(self.domain, kind, rec, init, count)
        _check_count_domain(self.n_sources, domain)
        if domain == "tf":
            _check_tf_options(self)
            auto_model = _auto_source_model(self, rec)
            if auto_model is not None:
                return _Choice(
                    "tf_pretrained", "tf", None, "gauss", "diag", phase, source_model=auto_model
                )
            return _Choice("tf", "tf", None, "gauss", "diag", phase)
        is_eeg = kind == "raw" or (rec is not None and rec.kind == "eeg")
        is_audio = rec is not None and rec.kind == "audio"
        # An MNE Raw is EEG (never the flow): its channel count is not needed here.
        n_channels = (
            np.shape(X)[0]
            if kind == "array"
            else rec.data.shape[0]
            if kind == "recording"
            else None
        )
        mixing = _resolve_mixing(self, is_eeg or is_audio, init, u, n_channels)
        # A Raw joined from recordings (a streamed fit's blocks) is filtered piece by piece.
        edges = edge_samples(rec.raw) if kind == "raw" else ()
        fit_filter = FitFilter.create(
            self.highpass, self.lowpass, getattr(rec, "sample_rate", None), edges
        )
        # Try the sensor unwarping where the signal reaches fit as the sensors
        # gave it: instantaneous audio (saturating microphones and amplifiers), and
        # EEG that fit filters itself. On a Raw filtered before the fit a clip is
        # smeared over its neighbours and the unwarping gains little
        # (recipes/eeg_semisynthetic/README.md), so it is not tried there.
        try_unwarp = (
            self.mixing == "auto"
            and mixing == "linear"
            and (is_audio or (fit_filter is not None and not (kind == "raw" and is_highpassed(X))))
        )
        if try_unwarp:
            mixing = "post-nonlinear"
        # The family of that mixing resolves what "auto" means for its prior.
        family = MIXINGS[mixing]
        prior, posterior = load_family(family).resolve_prior(self.prior, self.posterior, is_eeg)
        return _Choice(
            family, "time", mixing, prior, posterior, phase, try_unwarp, fit_filter, is_eeg
        )

    def _check_source_model_options(self, kind, rec, init):
        if self.domain == "time":
            raise ValueError(
                "source_model separates rooms in the time-frequency domain, but domain='time' "
                "was asked for. Pass domain='auto' (or 'tf'), or source_model=None."
            )
        if init is not None:
            raise ValueError(
                "init= fine-tunes a time-domain model, but source_model fits a demixing under "
                "a fixed source model. Drop init, or pass source_model=None."
            )
        if kind != "recording" or rec.kind != "audio":
            what = (
                "an MNE Raw"
                if kind == "raw"
                else (
                    "a plain array" if kind != "recording" else f"a Recording of kind {rec.kind!r}"
                )
            )
            raise ValueError(
                f"source_model separates audio, but X is {what}. Pass a Recording of kind "
                "'audio' (e.g. sepkit.read_audio(path)), or source_model=None."
            )
        _check_tf_options(self)

    def _fit_input(self, X, data, sample_rate, kind, rec, u, rejection, choice):
        """The one normalised :class:`FitInput` every family fits on."""
        names = tuple(rec.ch_names) if rec is not None else None
        inp = FitInput(data, sample_rate, names, choice.is_eeg, u, decim=rejection.decim)
        if kind == "raw":
            _warn_filtering(X, choice.mixing, self.highpass)
            check_flat_eeg(rec)
            inp.u, good, from_annotations = resolve_raw_u(X, u, rejection.by_annotation)
            good = rejection.apply(X, data, rec, good)
            inp.good = None if good.all() else good
            inp.highpassed, inp.u_from = is_highpassed(X), from_annotations
        elif isinstance(u, str):
            raise ValueError(
                f"u={u!r} reads the annotations of an MNE Raw, but X is a "
                f"{type(X).__name__}. Pass the Raw, or u as an array of labels."
            )
        return inp

    def _family_options(self, choice, inp) -> dict:
        """The settings the family reads: the constructor's, plus what fit resolved."""
        self._check_unused_settings(choice)
        opts = dict(
            self.get_params(),
            prior_=choice.prior,
            posterior_=choice.posterior,
            mixing_=choice.mixing,
            try_unwarp=choice.try_unwarp,
            fit_filter=choice.fit_filter,
            # int(): torch's seeds take Python ints only (audit: np.int64 crashed).
            seed=int(
                self.random_state
                if self.random_state is not None
                else np.random.default_rng().integers(2**31)
            ),
        )
        if choice.source_model is not None:
            opts["source_model"] = choice.source_model
        return opts

    def _check_unused_settings(self, choice) -> None:
        """Warn about settings changed from their default that the chosen family ignores."""
        choice.module.check_fit_params(self.fit_params)
        defaults = _constructor_defaults()
        in_fit_params = set(self.fit_params or {})
        ignored = {
            name: value
            for name, value in self.get_params().items()
            if name not in choice.module.PARAMS
            and name not in in_fit_params
            and not _same(value, defaults[name])
        }
        if ignored:
            chose = _chosen(choice, self.source_model)
            warnings.warn(
                f"{_settings_text(ignored)}: not used by the {choice.module.NAME!r} model family that "
                f"this fit chose ({chose}); they are ignored. Pass 'domain' or 'mixing' to "
                "choose another family, or leave them at their defaults"
                f"{_own_settings_hint(choice.module, ignored)}.",
                UserWarning,
                stacklevel=5,  # the caller of fit (fit > _fit > _family_options > here)
            )

    def _set_fitted(self, fitted, ch_names, sample_rate) -> None:
        """Expose ``fitted`` and the fitted channels' names and rate as fitted attributes."""
        _forget_previous_fit(self, fitted)
        self.fitted_ = fitted
        self.family_ = fitted.family
        self.n_sources_ = fitted.n_sources
        for name, value in fitted.attributes().items():
            setattr(self, name, value)
        self.n_channels_ = self.n_features_in_ = fitted.n_channels
        self.ch_names_ = ch_names
        self.sample_rate_ = sample_rate

    def _step_callback(self, callback, inp):
        """Adapt ``callback(step, sep)`` to the family's ``callback(step, fitted)``."""

        def call(step, fitted):
            self._set_fitted(fitted, inp.ch_names, inp.sample_rate)
            return callback(step, self)

        return call

    # ------------------------------------------------------------ inference
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
        X : ndarray, shape (n_channels, n_times), Recording, mne.io.Raw, mne.Epochs or mne.Evoked
            For a Raw, the channels named as in fit are taken (an error names
            any it lacks). Epochs and Evoked data give ``get_sources(X)``.
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
            named IVAE000, IVAE001, ... (same type as ``X``), float32 whatever
            the input's float type (the fits compute in float32). A Raw has
            ``misc`` channels and the sample rate, ``first_samp``,
            ``meas_date`` and annotations of ``X``.
        """
        self._check_fitted()
        check_option("resample", resample, (True, False))
        if is_epochs_or_evoked(X):
            return segment_transform(self, X, u, picks, resample)
        X = self._match_sample_rate(X, resample)
        is_raw = _is_mne_raw(X)
        named = is_raw or isinstance(X, Recording)
        data, _, kind, rec = self._unpack(X, picks, self.ch_names_ if named else None)
        if is_raw:
            u = self._raw_u(X, u)
        if data.shape[0] != self.n_channels_:
            _check_not_transposed(data.shape, self.n_channels_)
            names = f" ({', '.join(self.ch_names_)})" if self.ch_names_ else ""
            raise ValueError(
                f"X has {data.shape[0]} channel{'s' * (data.shape[0] != 1)} but the separator was fitted on "
                f"{self.n_channels_}{names}. Pass the same channels as in fit (for an MNE "
                "Raw, picks=[...] selects them)."
            )
        with self._family_settings():
            self.fitted_.set_params(self.get_params())
        out = self.fitted_.sources(data, u)
        if not np.isfinite(out).all():
            raise RuntimeError(
                "The model gave NaN or Inf sources for this recording (the recording itself "
                "is finite): the model is broken or the input far outside what it was fitted "
                "on. Refit it, or check that the recording matches the one of fit."
            )
        return self._wrap(out, kind, rec, "IVAE")

    def _match_sample_rate(self, X, resample):
        """X itself, or X resampled to ``sample_rate_`` (Recording / Raw only)."""
        expected = getattr(self, "sample_rate_", None)
        if isinstance(X, Recording):
            got = X.sample_rate
        elif _is_mne_raw(X):
            got = X.info["sfreq"]
        elif resample:
            raise ValueError(
                "resample=True resamples a Recording or an MNE Raw to the model's rate, but X "
                "is a plain array, which carries no rate. Pass a Recording, or resample=False."
            )
        else:
            return X  # a plain array carries no rate
        if expected is None or float(got) == float(expected):
            return X
        if not resample and self.fitted_.per_sample:  # a map of each sample: rate-free, as ICA
            return X
        if not resample:
            raise ValueError(
                f"X has sample_rate {float(got):g} Hz but the model expects {float(expected):g} "
                f"Hz (the '{self.family_}' family's model reads time, not just each sample). "
                "Pass resample=True to transform, or resample it first (raw.resample "
                "before get_sources or apply)."
            )
        if isinstance(X, Recording):
            return resample_recording(X, float(expected))
        return resample_raw(X, float(expected))

    def inverse_transform(self, S, u=None):
        """Map sources back to the sensors: the mean of p(x|z[,u]).

        For the time-frequency families (``domain_ == "tf"``) the sources are
        images at the reference microphone and the map is the pseudo-inverse of
        each frequency's demixing: the reference microphone comes back exactly,
        the others only approximately (measured on 2x2 rooms, RT60 0.4 s: 12-17 %
        relative error, -15 to -18 dB).

        Parameters
        ----------
        S : ndarray, shape (n_sources, n_times), or a Recording / Raw / Epochs / Evoked of sources
            (from ``transform`` / ``get_sources``, channels IVAE000, ...).
        u : None or ndarray
            Needed only with ``decoder_u=True`` (not for Epochs or Evoked).

        Returns
        -------
        X_hat : ndarray, shape (n_channels, n_times) (a Recording for a
            Recording, a Raw / EpochsArray / EvokedArray with the fitted
            channels for a Raw / Epochs / Evoked)
        """
        self._check_fitted()
        if is_epochs_or_evoked(S):
            return segment_sensors(self, S, u)
        source_names = [f"IVAE{i:03d}" for i in range(self.n_sources_)]
        data, _, kind, rec = self._unpack(S, source_names if _is_mne_raw(S) else None)
        if data.shape[0] != self.n_sources_:
            raise ValueError(
                f"S has {data.shape[0]} rows but the separator has {self.n_sources_} sources. "
                "Pass the output of transform."
            )
        out = self.fitted_.reconstruct(data, u)
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
        return self.fitted_.components()

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
        self._check_fitted()
        path = check_model_path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists. Pass overwrite=True to replace it.")
        own = dict(
            n_sources_=self.n_sources_,
            n_channels_=self.n_channels_,
            sample_rate_=self.sample_rate_,
            ch_names_=list(self.ch_names_) if self.ch_names_ else None,
            event_u_=bool(getattr(self, "event_u_", False)),
            annotation_u_=bool(getattr(self, "annotation_u_", False)),
            exclude=self._check_exclude(getattr(self, "exclude", []), "sep.exclude"),
            **_fit_record(self),
        )
        return write_separator(path, self.get_params(), self.fitted_, own)

    @classmethod
    def from_pretrained(cls, name_or_path, *, device: str = "auto") -> IVAESeparator:
        """Load a shipped pretrained model by name (see :mod:`sepkit.pretrained`).

        The weights' sha256 is checked against the model's config.json before
        they are read; nothing is downloaded and no pickle is executed.
        ``IVAESeparator.from_pretrained("nope")`` lists the valid names.
        """
        weights, config, digest = verified_weights(name_or_path)
        if config.get("kind") == "source_model":
            raise ValueError(
                f"{config['name']!r} is a source model (a prior over speech spectrograms), not a "
                "separator. Fit a separator with it on your recording: "
                f"IVAESeparator(n_sources=k, source_model={config['name']!r}).fit(recording)."
            )
        sep = cls.load(weights, device=device)
        _check_config_matches(sep, config, weights)
        sep.pretrained_ = {
            "name": config["name"],
            "version": config.get("version"),
            "sha256": digest,
        }
        return sep

    @classmethod
    def load(cls, path, *, device: str = "auto") -> IVAESeparator:
        """Load a separator written by :meth:`save` (never unpickles anything).

        The weights file of a model folder, loaded by its path, is checked
        against the folder's sha256 as :meth:`from_pretrained` checks it.
        """
        check_model_file(path)
        meta, tensors = read_separator(path)
        params = dict(meta["params"])
        params["device"] = device
        sep = cls(**params)
        try:
            with sep._family_settings():
                dev = sep._validate_params(training=False)
                settings = sep.get_params()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} holds an invalid setting: {err}") from None
        # n_sources=None or a share of variance: the families rebuild the count fitted.
        settings["n_sources"] = meta.get("n_sources_", settings["n_sources"])
        fitted = fitted_from_state(meta, tensors, settings, dev, path=path)
        names = tuple(meta["ch_names_"]) if meta.get("ch_names_") else None
        sep._set_fitted(fitted, names, meta["sample_rate_"])
        sep.n_channels_ = sep.n_features_in_ = meta["n_channels_"]
        sep.event_u_ = meta.get("event_u_", False)
        sep.annotation_u_ = meta.get("annotation_u_", False)
        sep.exclude = list(meta.get("exclude", []))  # files from before the attribute
        _restore_fit_record(sep, meta)
        return sep


@dataclass(frozen=True)
class _Choice:
    """What :meth:`IVAESeparator._choose_family` decided (``family``: a name in ``FAMILIES``)."""

    family: str
    domain: str
    mixing: str | None
    prior: str
    posterior: str
    mixing_phase: float | None
    try_unwarp: bool = False
    fit_filter: FitFilter | None = None
    is_eeg: bool = False
    # The source model domain="auto" chose (tf_pretrained.auto_source_model).
    source_model: str | None = None

    @property
    def module(self) -> ModuleType:
        """The family's module (imported on first use: see :func:`sepkit.methods.load_family`)."""
        return load_family(self.family)


@dataclass(frozen=True)
class _Rejection:
    """Which samples ``fit`` leaves out, and which it thins: its MNE-style arguments."""

    by_annotation: bool
    decim: int
    reject: dict | None
    flat: dict | None
    tstep: float
    span: tuple = (None, None)  # fit's start and stop (seconds)

    @classmethod
    def of(cls, X, by_annotation, decim, thresholds, span) -> _Rejection:
        """fit's arguments, checked against the kind of ``X``.

        ``thresholds``: (reject, flat, tstep); ``span``: (start, stop).
        """
        reject, flat, tstep = thresholds
        if span != (None, None) and (is_epochs_or_evoked(X) or not _is_mne_raw(X)):
            raise ValueError(
                f"start and stop choose a span of a Raw, but X is a {type(X).__name__}. "
                "Crop it first (raw.crop, epochs[...], X[:, a:b]) and pass start=None, "
                "stop=None."
            )
        if (reject is not None or flat is not None) and is_epochs_or_evoked(X):
            raise ValueError(
                "reject and flat judge stretches of a continuous Raw; for Epochs, drop "
                "the bad epochs first (epochs.drop_bad(reject=..., flat=...)) and fit "
                "the rest."
            )
        if (reject is not None or flat is not None) and not _is_mne_raw(X):
            raise ValueError(
                "reject and flat need the channel types of an MNE Raw, but X is a "
                f"{type(X).__name__}. Pass the Raw, or leave the stretches to reject out "
                "yourself (X[:, keep])."
            )
        if reject is None and flat is None and tstep != 2.0:
            raise ValueError(
                f"tstep={tstep!r} sets the stretches that reject and flat judge, but neither "
                "was given. Pass reject=dict(eeg=...) or flat=..., or drop tstep."
            )
        return cls(by_annotation, _check_decim(decim), reject, flat, tstep, span)

    def apply(self, raw, data, rec, good):
        """``good`` (the annotations' mask) less what start / stop and reject / flat leave out."""
        if self.span != (None, None):
            good = good & span_mask(raw, *self.span)
            if not good.any():
                raise ValueError(
                    f"start={self.span[0]!r} and stop={self.span[1]!r} hold no sample "
                    "outside BAD annotations. Choose another span, or "
                    "reject_by_annotation=False."
                )
        if self.reject is None and self.flat is None:
            return good
        types = raw.get_channel_types(picks=list(rec.ch_names))
        check_ptp_thresholds(self.reject, self.flat, self.tstep, types)
        kept = ptp_reject_mask(data, types, rec.sample_rate, reject=self.reject,
                               flat=self.flat, tstep=self.tstep, good=good)  # fmt: skip
        if not kept.any():
            raise ValueError(
                f"reject={self.reject!r} and flat={self.flat!r} left no {self.tstep:g} s "
                "stretch of the recording to fit. Check the thresholds' unit (volts for "
                "EEG: 150e-6 is 150 uV), raise reject or lower flat."
            )
        return kept


def _warn_filtering(raw, mixing, highpass) -> None:
    """MNE's advice on filtering, adapted to ``highpass`` and the post-nonlinear model."""
    if mixing == "post-nonlinear" and is_highpassed(raw):
        edge = raw.info["highpass"]
        warnings.warn(
            f"mixing='post-nonlinear' on a recording high-pass filtered at {edge:g} Hz: "
            "the sensors' nonlinearity acted before the filter, which spreads each "
            "clipped sample over its neighbours, and the per-channel unwarping cannot "
            f"undo that. Fit the unfiltered recording with highpass={edge:g} instead "
            "(the filter then acts after the unwarping).",
            RuntimeWarning,
            stacklevel=4,
        )
    elif highpass is None or highpass < 0.5:
        fix = (
            ", or let fit filter a copy: highpass=1.0 (then mixing='auto' also checks "
            "the sensors for clipping, and mixing='post-nonlinear' can model it)"
            if highpass is None
            else ""
        )
        warn_if_not_highpassed(raw, stacklevel=4, fix=fix)


def _check_seed(random_state) -> None:
    """``random_state``: None or a whole number 0 to :data:`MAX_SEED` (a seed, as torch takes it)."""
    if random_state is None:
        return
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise TypeError(
            f"'random_state' must be None or an int from 0 to 2**63 - 1 (a seed), got "
            f"{random_state!r} ({type(random_state).__name__}). The fits seed torch, which "
            "takes a number: for a numpy Generator or RandomState, pass a seed drawn from "
            "it, e.g. random_state=int(rng.integers(2**31))."
        )
    if not 0 <= random_state <= MAX_SEED:
        raise ValueError(
            f"'random_state' must be from 0 to 2**63 - 1 (a seed, as torch takes it), got "
            f"{random_state}. Pass a smaller seed, e.g. {random_state % 2**31}."
        )


def _check_n_sources(n_sources) -> None:
    """``n_sources``: a whole number >= 1, None, or a share of variance in (0, 1) (MNE's forms)."""
    if n_sources is None:
        return
    if isinstance(n_sources, float):
        if not 0.0 < n_sources < 1.0:
            raise ValueError(
                f"'n_sources' as a float is a share of the variance, between 0 and 1 "
                f"(exclusive), got {n_sources!r}. "
                "Pass e.g. 0.99 (the principal components holding 99 % of the variance), an "
                "integer count, or None (every dimension the data hold)."
            )
        return
    if isinstance(n_sources, str) or not isinstance(n_sources, (numbers.Integral, float)):
        # Audit: "all" (the command line's word) drew "must be an integer".
        raise TypeError(
            f"'n_sources' must be an integer count, a float share of the variance in (0, 1) "
            f"or None (every dimension the data hold: the command line's 'all'), got "
            f"{n_sources!r} ({type(n_sources).__name__}). Pass e.g. 15, 0.99 or None."
        )
    check_int("n_sources", n_sources, min_value=1)


def _chosen(choice, source_model=None) -> str:
    """The domain and mixing of a family choice, as settings (the tf family has no mixing)."""
    if choice.family == "tf_pretrained":  # chosen by its source model, not by a domain
        return f"source_model={choice.source_model or source_model!r}"
    if choice.try_unwarp:  # auto tries the unwarping, and keeps it only where sensors clip
        mixing = ", mixing='linear' (or 'post-nonlinear' where the sensors clip)"
    else:
        mixing = "" if choice.mixing is None else f", mixing={choice.mixing!r}"
    return f"domain={choice.domain!r}{mixing}"


def _resolve_mixing(sep, linear_by_default, init, u, n_channels) -> str:
    """``mixing_``: "linear" for EEG and audio, "flow" for square other data, else "nonlinear".

    A mixing asked for by name is its family's (:data:`sepkit.methods.MIXINGS`),
    with the options checked that a family fitted by exact likelihood cannot take.
    "auto": scalp EEG is a linear mixture, and so is audio whose channels'
    cross-spectra are real (an instantaneous mix: ``_choose_family`` sends rooms
    to the time-frequency family); sensor saturation is tried on top
    (try_unwarp). Other data with as many channels as sources (or
    ``n_sources=None``, every dimension) may be an invertible nonlinear
    mixture: the flow fits it by exact likelihood, unless an option needs the
    ELBO network (a network setting changed from its default, a prior other
    than Gaussian, ``init=``, a continuous u). With more channels than sources
    (or ``mixing="nonlinear"``) the ELBO network models the extra dimensions as
    noise.
    """
    if sep.mixing not in ("auto", "nonlinear"):
        family = MIXINGS[sep.mixing]
        if load_family(family).EXACT is not None:
            _check_exact_options(sep, family, init, u)
        return sep.mixing
    if sep.mixing == "auto" and linear_by_default and not _exact_conflicts(sep, "linear", init, u):
        return "linear"
    if (
        sep.mixing == "auto"
        and not linear_by_default
        # None is every dimension the data hold: as square as the count of channels.
        and sep.n_sources in (None, n_channels)
        and not _network_settings_changed(sep)
        and not _exact_conflicts(sep, "flow", init, u)
    ):
        return "flow"
    if sep.prior in LINEAR_PRIORS:
        raise ValueError(
            f"prior={sep.prior!r} is a prior of the linear models, but mixing resolved to "
            f"'nonlinear' (mixing={sep.mixing!r}"
            + ("" if linear_by_default else ", and the data are neither EEG nor audio")
            + "). Pass mixing='linear' (or 'post-nonlinear'), or another prior."
        )
    return "nonlinear"


# What picks= takes besides channel names (MNE's channel types and groups).
_PICK_WORDS = frozenset({"eeg", "eog", "ecg", "emg", "meg", "mag", "grad", "misc", "stim",
                         "seeg", "ecog", "dbs", "data", "all"})  # fmt: skip


def _check_not_transposed(shape, n_channels: int) -> None:
    """Refuse an array that holds the fitted channels along its second axis, with X.T."""
    if shape[1] == n_channels and shape[0] > shape[1]:
        raise ValueError(
            f"X has shape {tuple(shape)}, {shape[0]} channels of {shape[1]} samples, where the "
            f"separator was fitted on {n_channels} channels: it looks transposed. X must be "
            "(n_channels, n_times); if yours is (n_times, n_channels), pass X.T."
        )


def _check_u_not_picks(X, u) -> None:
    """Refuse channel picks given as u (``ICA.fit(raw, picks)`` passes them second).

    A channel type, or channel names of ``X`` (an MNE Raw or Epochs), as u.
    Audit: they met an error about u's labels.
    """
    names = _PICK_WORDS | set(getattr(X, "ch_names", ()) if hasattr(X, "info") else ())
    if isinstance(u, str):
        picks = u in names
    else:
        picks = (
            isinstance(u, (list, tuple))
            and 0 < len(u)
            and all(isinstance(v, str) and v in names for v in u)
        )
    if picks:
        raise ValueError(
            f"fit's second argument is u (the auxiliary variable: 'annotations', 'events', "
            f"labels per sample, or None for the window index), got {u!r}: channel picks, "
            "which MNE's ICA.fit(raw, picks) takes second. Pass them by name: "
            f"fit(raw, picks={u!r})."
        )


def _forget_previous_fit(sep, fitted) -> None:
    """Remove the attributes of ``sep``'s earlier fit that ``fitted`` does not set.

    A refit with another family (linear, then tf) left the first family's
    ``unmixing_``, ``whitening_``, ... beside the new fit's, describing a model
    that no longer exists (audit); as in scikit-learn, a fit replaces the fit.
    """
    previous = sep.__dict__.get("fitted_")
    if previous is None or previous is fitted:
        return
    for name in set(previous.attributes()) - set(fitted.attributes()):
        sep.__dict__.pop(name, None)


def _is_count(n_sources) -> bool:
    """Whether ``n_sources`` is a number of sources (not None or a share counted at fit)."""
    return isinstance(n_sources, numbers.Integral)


def _check_count_domain(n_sources, domain: str) -> None:
    """The time-frequency families separate a given number of talkers: no share of variance."""
    if domain == "tf" and not _is_count(n_sources):
        raise ValueError(
            f"n_sources={n_sources!r} counts sources from a PCA of the data, as MNE's "
            "ICA(n_components=...) does, which the time-domain models support; this input is "
            "separated in the time-frequency domain (a room, domain='tf' or a source model), "
            "which needs the number of sources. Pass n_sources=k, the number of talkers."
        )


def _check_decim(decim) -> int:
    """``decim`` of fit as a sample step (1: every sample)."""
    if decim is None:
        return 1
    if isinstance(decim, bool) or not isinstance(decim, (int, np.integer)) or decim < 1:
        raise ValueError(
            f"decim must be None or a whole number >= 1 (fit on every decim-th sample), got "
            f"{decim!r}."
        )
    return int(decim)


def _check_decim_family(decim: int, module) -> None:
    """Refuse ``decim`` for a family that would not honour it."""
    if decim > 1 and not getattr(module, "DECIM", False):
        # The mixings whose family takes decim, from the registry (not a list of ours).
        thinned = [m for m, f in MIXINGS.items() if getattr(load_family(f), "DECIM", False)]
        names = " or ".join(f"mixing={m!r}" for m in thinned)
        raise ValueError(
            f"decim={decim} thins the samples of the families whose likelihood is a sum over "
            f"samples ({names}; the EEG default); the {module.NAME!r} family chosen here "
            "does not take it. Pass decim=None (or mixing='linear' where the mixing is "
            "instantaneous, as in EEG)."
        )


def _check_tf_options(sep) -> None:
    """Refuse the time-domain settings of ``sep`` when the domain resolved to 'tf'."""
    if sep.prior in LINEAR_PRIORS:
        raise ValueError(
            f"prior={sep.prior!r} is a prior of the linear time-domain models, but domain "
            "resolved to 'tf' (convolutive separation). Pass domain='time' and "
            "mixing='linear', or another prior."
        )
    if sep.mixing != "auto":  # every other mixing is a model of the time domain
        raise ValueError(
            f"mixing={sep.mixing!r} is an instantaneous model of the time domain, "
            "but domain resolved to 'tf' (convolutive separation). Pass "
            "domain='time', or mixing='auto'."
        )
    band = band_text(sep.highpass, sep.lowpass)
    if band:
        raise ValueError(
            f"{band} filters the time-domain fit, but domain resolved to 'tf' "
            "(convolutive separation, which works per frequency). Pass "
            "highpass=None and lowpass=None, or domain='time'."
        )


# What fit recorded beside the model, kept in the file as MNE's -ica.fif keeps it
# (read_ica restores info, n_samples_ and reject_), so that to_mne_ica, the
# topographies and ICLabel work on a loaded separator as on the fitted one.
_RECORD = ("n_samples_", "reject_", "mixing_phase_", "fitted_on_epochs_", "pretrained_")


def _check_config_matches(sep, config: dict, weights) -> None:
    """Refuse a model folder whose config.json says other than its weights do.

    ``sepkit models list`` and the cards read the config; the separator, the
    weights (audit: a config edited to 8000 Hz and 5 sources listed so, and
    separated 16 kHz audio into 2).
    """
    said = {"sample_rate": sep.sample_rate_, "n_sources": sep.n_sources_,
            "n_channels": sep.n_channels_}  # fmt: skip
    other = {
        k: (config[k], v)
        for k, v in said.items()
        if config.get(k) is not None and v is not None and float(config[k]) != float(v)
    }
    if other:
        text = ", ".join(f"{k} {a!r} (the weights: {b!r})" for k, (a, b) in other.items())
        raise ValueError(
            f"{Path(weights).parent / 'config.json'} says {text}: the folder is inconsistent. "
            "Restore it (git checkout), or re-export the model."
        )


def _set_provenance(sep, init) -> None:
    """``pretrained_`` after a fit: the shipped model it started from, if any.

    From scratch: none. Fine-tuned from a shipped model: its name, version and
    sha256 with ``"fine_tuned": True`` (the weights are no longer those whose
    sha256 it names; audit: the attribute was kept as it was).
    """
    start = None if init is None else getattr(init, "pretrained_", None)
    if start is None:
        sep.__dict__.pop("pretrained_", None)
    else:
        sep.pretrained_ = {**start, "fine_tuned": True}


def _fit_record(sep) -> dict:
    """``n_samples_``, ``reject_``, ``mixing_phase_``, ``fitted_on_epochs_`` and ``info_`` of a fit."""
    info = getattr(sep, "info_", None)
    record = {name: getattr(sep, name, None) for name in _RECORD}
    return dict(record, info_=None if info is None else info_to_dict(info))


def _restore_fit_record(sep, meta: dict) -> None:
    """Set on a loaded ``sep`` what :func:`_fit_record` wrote (files before it: nothing)."""
    for name in _RECORD:
        if meta.get(name) is not None:
            setattr(sep, name, meta[name])
    sep.fitted_on_epochs_ = bool(meta.get("fitted_on_epochs_", False))
    if meta.get("info_") is not None:
        sep.info_ = info_from_dict(meta["info_"])


def _check_nested_fit_params(params: dict) -> None:
    """Refuse ``fit_params__key``: fit_params is a plain dict, not an estimator."""
    nested = sorted(k for k in params if k.startswith("fit_params__"))
    if nested:
        keys = {k.split("__", 1)[1]: params[k] for k in nested}
        raise ValueError(
            f"{nested} set keys inside fit_params, which is a dict, not an estimator. Pass "
            f"set_params(fit_params={{**(sep.fit_params or {{}}), **{keys!r}}}) (in a grid "
            "search, 'fit_params' with whole dicts)."
        )


def _warn_unused_readout(sep, params: dict) -> None:
    """Warn where set_params after fit changes a readout setting the fitted model ignores."""
    fitted = getattr(sep, "fitted_", None)
    if fitted is None:
        return
    defaults = _constructor_defaults()
    ignored = {
        name: value
        for name, value in params.items()
        if name in ("refine_steps", "refine_prior_weight")
        and name not in fitted.readout_params
        and not _same(value, defaults[name])
    }
    if ignored:
        warnings.warn(
            f"{_settings_text(ignored)}: not used by the fitted {sep.family_!r} model (posterior "
            "refinement needs the network family with a Gaussian prior), so transform is "
            "unchanged. Refit with mixing='nonlinear' and prior='gauss' to refine.",
            UserWarning,
            stacklevel=3,
        )


def _check_u_column(u, n_times: int) -> None:
    """Refuse u of shape (n_times, 1): a column of labels, not one continuous variable."""
    shape = np.shape(u) if u is not None and not isinstance(u, str) else ()
    if len(shape) == 2 and shape[1] == 1 and shape[0] == n_times and n_times > 1:
        raise ValueError(
            f"u has shape {shape}, a column. Pass u.ravel() for one label per sample (shape "
            "(n_times,)), or u.T for one continuous variable (shape (n_u, n_times))."
        )


def _check_fit_hooks(module, sep, resume: bool, callback) -> None:
    """Refuse or report what fit was given that the family does not use (its ``HOOKS``)."""
    hooks, device = getattr(module, "HOOKS", frozenset()), sep.device
    if resume and "resume" not in hooks:
        raise ValueError(
            f"resume=True continues a network fit from its checkpoint, but the {module.NAME!r} "
            "family chosen here keeps no checkpoints. Pass resume=False."
        )
    if resume and sep.checkpoint_dir is None:
        raise ValueError(
            "resume=True needs the checkpoint_dir of the fit to resume; the separator has "
            "checkpoint_dir=None. Pass IVAESeparator(..., checkpoint_dir=DIR)."
        )
    if callback is not None and "callback" not in hooks:
        warnings.warn(
            f"callback is not called by the {module.NAME!r} family chosen here: it takes no "
            "training steps to report (the network and flow families call it). Pass "
            "callback=None to silence this.",
            UserWarning,
            stacklevel=4,
        )
    if "cuda" in str(device) and "device" not in hooks:
        warnings.warn(
            f"device={str(device)!r} is not used by the {module.NAME!r} model family: it fits "
            "and separates on the CPU. Pass device='auto' (or 'cpu') to silence this.",
            UserWarning,
            stacklevel=4,
        )


def _settings_text(settings: dict) -> str:
    """``name=value, ...`` as a user would type them."""
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())


def _own_settings_hint(module, ignored) -> str:
    """Where the family takes a setting of the same name (its fit_params), as advice."""
    own = [name for name in ignored if name in getattr(module, "FIT_PARAMS", ())]
    if not own:
        return ""
    return (
        f"; the {module.NAME!r} family's own {', '.join(own)} go in fit_params={{{own[0]!r}: ...}}"
    )


def _auto_source_model(sep, rec) -> str | None:
    """The speech prior domain="auto" uses for a room (2-3 sources, speech-like input), or None.

    It measured better than training the tf family per mixture there; an
    explicit domain="tf" or tf settings in fit_params keep the tf family, and
    settings only the source model takes keep it. Settings both take (audit:
    ``postfilter``, ``n_iter``) keep the tf family, with a warning that says so
    (they switched the family without a word).
    """
    if sep.domain != "auto" or rec is None:
        return None
    n_channels, n_times = rec.data.shape
    pretrained = load_family("tf_pretrained")
    name = pretrained.auto_source_model(
        sep.n_sources, n_channels, rec.sample_rate, n_times, rec.data
    )
    keys = set(sep.fit_params or {})
    if name is None or not keys:
        return name
    own, tf_keys = set(pretrained.FIT_PARAMS), set(load_family("tf").FIT_PARAMS)
    if keys <= own and not keys <= tf_keys:
        return name  # settings of the source model alone: it is meant
    if keys <= own:
        warnings.warn(
            f"fit_params {sorted(keys)} are settings of both the per-mixture tf model and "
            f"the speech prior {name!r} that domain='auto' picks for this room; the "
            f"per-mixture model is fitted. Pass source_model={name!r} with them for the "
            "speech prior, or domain='tf' to say the per-mixture model.",
            UserWarning,
            stacklevel=5,  # the caller of fit (fit > _fit > _choose_family > here)
        )
    return None


def _exact_conflicts(sep, family: str, init=None, u=None) -> list[str]:
    """The options that need the ELBO network that ``family`` (one with ``EXACT``) lacks."""
    words = load_family(family).EXACT
    conflicts = []
    if sep.prior not in words["priors"]:
        conflicts.append(f"prior={sep.prior!r} ({words['prior']})")
    if sep.ica_init is not None:
        conflicts.append(f"ica_init={sep.ica_init!r} (a start for network training)")
    if sep.decoder_u:
        conflicts.append(f"decoder_u=True ({words['decoder_u']})")
    if not sep.whiten:
        conflicts.append(f"whiten=False ({words['fit']} runs on the whitened data)")
    if init is not None:
        conflicts.append("init= (a pretrained network to fine-tune)")
    if u is not None and not isinstance(u, str) and np.ndim(u) == 2 and np.shape(u)[1] != 3:
        conflicts.append(f"a continuous u ({words['fit']} needs segments: labels or windows)")
    return conflicts


def _check_exact_options(sep, family: str, init=None, u=None) -> None:
    """Raise when an option needs the ELBO network that ``family`` (one with ``EXACT``) lacks."""
    conflicts = _exact_conflicts(sep, family, init, u)
    if conflicts:
        words = load_family(family).EXACT
        mixing = sep.mixing if sep.mixing != "auto" else family
        raise ValueError(
            f"mixing={mixing!r} {words['does']}, so it cannot take {'; '.join(conflicts)}. "
            "Pass mixing='nonlinear', or drop those options."
        )


def _network_settings_changed(sep) -> list:
    """What asks for the ELBO network: its own settings changed from their defaults.

    Settings only the network reads, changed as arguments, and any ``fit_params``
    (the network's settings may be given there; the flow's are chosen with
    ``mixing="flow"``).
    """
    defaults = _constructor_defaults()
    # Checkpoints manage a run, they choose no model (audit: checkpoint_dir in a
    # training config turned the flow into the network without a word); the flow
    # then reports them as settings it does not use.
    run_management = {"checkpoint_dir", "checkpoint_every"}
    only_network = load_family("network").PARAMS - load_family("flow").PARAMS - run_management
    changed = {name for name in only_network if not _same(getattr(sep, name), defaults[name])}
    return sorted(changed | set(sep.fit_params or {}))


@functools.cache
def _constructor_defaults() -> MappingProxyType:
    """The constructor's defaults, read once (transform consults them on every call)."""
    return MappingProxyType(
        {
            name: p.default
            for name, p in inspect.signature(IVAESeparator.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
    )


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays
        return a is b
