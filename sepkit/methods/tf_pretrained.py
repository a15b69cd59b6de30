"""The pretrained-source-model family: determined room separation with a speech prior.

The demixing is fitted per mixture, as in :mod:`sepkit.methods.tf`, but the
source model is not: it is a :class:`~sepkit.models.SpeechSourcePrior`
trained once on a speech corpus (``recipes/speech_source_model``) and shipped
under ``pretrained/`` (FastMVAE, Li et al. 2019, with the iVAE's segment
prior). The amortised encoder gives a new mixture's latents in one pass; a
short fine-tuning on the mixture (on by default: it measures better) adapts a
copy of the model to its voices:

1. STFT (the model's frame and hop), per-frequency PCA whitening onto the
   ``n_sources`` strongest directions (so more microphones than sources work).
2. ``n_init`` AuxIVA sweeps (IP updates with spherical Laplace weights, Ono 2011).
3. ``n_iter`` times: ``n_finetune`` Adam steps on the ELBO of the current
   separated spectra, on a copy of the model (the short per-mixture
   fine-tuning; 0 keeps the shipped weights), then the encoder gives each
   separated source's latents in one pass, the segment prior ``p(z | u)`` of
   this recording is refitted in closed form (the EM M-step,
   :meth:`SpeechSourcePrior.segment_prior`), the decoder gives the variances
   ``r = g v(z)`` and ``n_ip`` IP sweeps update ``W_f`` with weights ``1 / r``.
   The model sees the separated sources projected back onto the reference
   microphone (the spectra it was trained on), not IP's own per-frequency
   scale.
4. Projection back onto the reference microphone, and each image blended
   half and half with a soft-mask estimate of it (``postfilter``, as in
   :mod:`sepkit.methods.tf`).

Audio at another sample rate than the model's is resampled to it for the fit
and the separation, and the sources are resampled back (a warning says so).

References
----------
Li, Kameoka, Inoue, Makino (2020). FastMVAE: a fast optimization algorithm for
the multichannel variational autoencoder method. IEEE Access 8.
Kameoka, Li, Inoue, Makino (2019). Supervised determined source separation
with multichannel variational autoencoder. Neural Computation 31(9).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import functional_tf as F
from .._check import check_float, check_int
from ..io.audio import resample
from ..io.recording import Recording
from ..models.source_prior import SpeechSourcePrior, segment_index
from ..registry import model_info, verified_weights
from ..windows import check_fit_blocks
from .base import COMMON_PARAMS, FitInput, check_fit_param_keys
from .tf import (
    SPEECH_POSTFILTER,
    DemixerFit,
    TFDemixer,
    centred,
    check_audio_input,
    check_postfilter,
    fit_blocks,
)

NAME = "tf_pretrained"
# fit's keywords it honours: none (it runs on the CPU, takes no steps, keeps no checkpoints).
HOOKS = frozenset()
PARAMS = COMMON_PARAMS | {"source_model"}
# Kind written in a source model's config.json (the registry also holds separators).
SOURCE_MODEL_KIND = "source_model"
# Defaults (measured in recipes/speech_source_model/README.md): 40 AuxIVA
# sweeps (a better start for the prior's sweeps than the tf family's 20: on 8
# held-out 3x3 rooms 2.47 dB against 1.21), then 40 alternations of one Adam
# step at lr 1e-3 on a copy of the model and two IP sweeps. Against the
# previous 2 steps at 3e-3 and one sweep, on the recipe's 63 rooms: median
# SI-SDRi 7.61 / 3.07 / 3.06 dB (2 / 3 / 4 sources) against 7.27 / 2.86 / 2.49.
# n_finetune=0 is the amortised model alone (no weight trained per mixture;
# about 2 s per 10 s of audio): 6.18 / 2.81 dB at 2 / 3 sources there.
FIT_PARAMS = dict(
    n_init=40,
    n_iter=40,
    n_finetune=1,
    finetune_lr=1e-3,
    n_ip=2,
    ref_channel=0,
    max_fit_seconds=60.0,
    postfilter=SPEECH_POSTFILTER,
)
_CHUNK_SECONDS = 30.0
# The way out of a recording shorter than one frame of the source model: the model
# works in the time-frequency domain only, so domain='time' alone would be refused.
_SHORT = "source_model=None with domain='time' (the time-domain separator)"
# domain="auto" separates a room with this model instead of training the tf
# family per mixture, where that measured better (recipes/speech_source_model,
# 126 held-out rooms of 10 s at 16 kHz, room seeds 0-5, median SI-SDRi): 2 sources
# 7.92 dB against 5.88 (72 fits), 3 sources 3.16 against 2.18 (36), with the
# post-filter (7.12 and 2.95 without); not 4 sources (18 fits: 2.38 with it
# against 1.75, but ahead in only 9 rooms, mean +0.01 dB; ILRMA 3.00 leads). Only
# where the input is like the measured ones: at least the model's rate (no
# upsampling) and at least as long.
AUTO_SOURCE_MODEL = "ivae-speech-16k-v1"
AUTO_MAX_SOURCES = 3
AUTO_MIN_SECONDS = 10.0
# Above the model's rate, the largest share of power above its Nyquist frequency
# that "auto" leaves out of the separation (1 %, -20 dB).
AUTO_MAX_HIGH_SHARE = 0.01


def auto_source_model(
    n_sources: int, n_channels: int, sample_rate, n_times: int, data=None
) -> str | None:
    """The source model domain="auto" uses for a room, or None (the per-mixture tf family).

    The rule: 2 <= ``n_sources`` <= ``AUTO_MAX_SOURCES``, at least as many
    channels, a rate of at least the model's (16 kHz), at least
    ``AUTO_MIN_SECONDS`` of audio, the model installed (its folder found), and,
    above the model's rate, at most ``AUTO_MAX_HIGH_SHARE`` of the power of
    ``data`` (the recording, (n_channels, n_times), when given) above the
    model's Nyquist frequency: the model separates 16 kHz, and the band above
    8 kHz would be lost (audit: 11 % of a 44.1 kHz room's power, dropped from
    every source).
    """
    if not (2 <= n_sources <= min(AUTO_MAX_SOURCES, n_channels)) or sample_rate is None:
        return None
    if n_times < AUTO_MIN_SECONDS * sample_rate:
        return None
    try:
        config = model_info(AUTO_SOURCE_MODEL)
    except (ValueError, FileNotFoundError):
        # An install without the pretrained folder (a FileNotFoundError: audit, the
        # room then failed instead of falling back): the per-mixture model.
        return None
    model_rate = float(config["sample_rate"])
    if sample_rate < model_rate:
        return None
    if data is not None and sample_rate > model_rate:
        if high_band_share(data, sample_rate, model_rate) > AUTO_MAX_HIGH_SHARE:
            return None
    return AUTO_SOURCE_MODEL


def high_band_share(data: np.ndarray, sample_rate: float, model_rate: float) -> float:
    """The share of the first channel's power above ``model_rate / 2`` (up to 60 s read)."""
    from scipy.signal import welch

    x = np.asarray(data[0, : int(60 * sample_rate)], dtype=np.float64)
    freqs, power = welch(x - x.mean(), fs=sample_rate, nperseg=min(4096, x.size))
    total = float(power.sum())
    return float(power[freqs > model_rate / 2].sum()) / total if total > 0 else 0.0


@dataclass
class SourceModel:
    """A loaded speech source prior and the STFT it was trained on."""

    model: SpeechSourcePrior
    name: str
    sha256: str
    sample_rate: float
    n_fft: int
    hop: int
    segment_frames: int
    info: dict = field(default_factory=dict)


def load_source_model(name_or_path) -> SourceModel:
    """A shipped source model (by name) or a model folder, after its sha256 check.

    Raises ValueError for an unknown name (listing the valid ones), a changed
    file, or a model folder that holds a separator rather than a source model.
    """
    from safetensors.torch import load_file

    weights, config, digest = verified_weights(name_or_path)
    if config.get("kind") != SOURCE_MODEL_KIND:
        raise ValueError(
            f"source_model={config['name']!r} is a separator (kind {config.get('kind')!r}), "
            f"not a source model (kind {SOURCE_MODEL_KIND!r}). Load it with "
            "IVAESeparator.from_pretrained, or pass a source model such as "
            "'ivae-speech-16k-v1'."
        )
    stft = config["stft"]
    model = SpeechSourcePrior(**config["model"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    return SourceModel(
        model=model.eval(),
        name=str(config["name"]),
        sha256=digest,
        sample_rate=float(config["sample_rate"]),
        n_fft=int(stft["n_fft"]),
        hop=int(stft["hop"]),
        segment_frames=int(stft["segment_frames"]),
        info=config,
    )


def check_fit_params(fit_params) -> dict:
    """``fit_params`` of this family, with defaults filled in."""
    fit_params = check_fit_param_keys(fit_params, FIT_PARAMS, "a source_model separation")
    out = {**FIT_PARAMS, **fit_params}
    check_int("n_init", out["n_init"], min_value=0)
    check_int("n_iter", out["n_iter"], min_value=0)
    check_int("n_finetune", out["n_finetune"], min_value=0)
    check_postfilter(out["postfilter"])
    check_int("n_ip", out["n_ip"], min_value=1)
    check_float("finetune_lr", out["finetune_lr"], min_value=0.0, strict_min=True)
    check_int("ref_channel", out["ref_channel"], min_value=0)
    if not float(out["max_fit_seconds"]) > 0:
        raise ValueError(f"max_fit_seconds must be > 0, got {out['max_fit_seconds']!r}.")
    return out


def _resample(x: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """``x`` (n_rows, n_times) at ``rate_out``: the project's resampler (io.audio.resample)."""
    if rate_in == rate_out:
        return x
    out = resample(Recording(np.ascontiguousarray(x, np.float32), rate_in), rate_out).data
    return np.ascontiguousarray(out, dtype=np.float32)


def prior_weights(model: SpeechSourcePrior, Y: torch.Tensor, segment_frames: int, tune=None):
    """IP weights ``1 / r`` of the separated spectra ``Y`` under the source model.

    Y : (n_freqs, n_sources, n_frames) complex -> (n_sources, n_freqs, n_frames) real.
    ``tune``: None, or (optimizer, n_steps): Adam steps on the model's ELBO for
    these spectra first (the short per-mixture fine-tuning).
    """
    power = F.power(Y).permute(1, 0, 2)
    # The scale of each source is free (IP renormalises); keep the net's input O(1).
    power = power / power.mean(dim=(1, 2), keepdim=True).clamp_min(1e-30)
    u = segment_index(power.shape[-1], segment_frames, power.device)
    if tune is not None:
        opt, n_steps = tune
        model.train()
        for _ in range(n_steps):
            opt.zero_grad(set_to_none=True)
            loss = model.loss(power, u)
            if torch.isfinite(loss):
                loss.backward()
                opt.step()
        model.eval()
    r = model.variances(power, u)
    return 1.0 / torch.maximum(r, 1e-6 * r.mean(dim=(1, 2), keepdim=True))


def fit_demixing(blocks, prior: SourceModel, n_sources: int, opts: dict, verbose=False, seed=0):
    """(demixing (n_freqs, n_sources, n_channels), history, model) of ``blocks``.

    ``model`` is the source model as used for the last sweep: the shipped one,
    or a fine-tuned copy (``opts["n_finetune"] > 0``; the shipped one is never
    changed).
    """
    model, tune = prior.model, None
    if opts["n_finetune"]:
        model = copy.deepcopy(prior.model)
        tune = (torch.optim.Adam(model.parameters(), lr=opts["finetune_lr"]), opts["n_finetune"])
    # Each block centred (a DC offset is no source: see tf.centred).
    Xs = [F.stft(torch.from_numpy(centred(b)), prior.n_fft, prior.hop) for b in blocks]
    X = torch.cat(Xs, dim=-1)
    P = F.whiten_per_frequency(X, n_sources)
    Xw = P @ X
    W = torch.eye(n_sources, dtype=X.dtype).expand(X.shape[0], n_sources, n_sources).clone()
    outer = F.frame_outer_products(Xw)  # every sweep re-weights the same frames
    disable = None if verbose == "auto" else not verbose
    history = []
    with tqdm(total=opts["n_init"] + opts["n_iter"], desc="tf-prior", disable=disable) as bar:
        for _ in range(opts["n_init"]):
            W = F.ip_sweep(W, F.weighted_covariances(outer, F.auxiva_weights(W @ Xw)))
            bar.update(1)
        for it in range(opts["n_iter"]):
            Y = W @ Xw
            # The model is of speech as a microphone hears it, but IP leaves each
            # output at a scale per frequency of its own (flat after the whitening),
            # so the model sees the outputs projected back onto the reference
            # microphone. A scale per source and frequency of the weights changes
            # only the scale of the IP update's row, not its direction.
            heard = F.projection_back_scales(W @ P, opts["ref_channel"])[:, :, None] * Y
            with torch.random.fork_rng(devices=[]):  # the fine-tuning's sampling noise
                torch.manual_seed(seed + it)
                weights = prior_weights(model, heard, prior.segment_frames, tune)
            if not torch.isfinite(weights).all():
                weights = F.auxiva_weights(Y)
            V = F.weighted_covariances(outer, weights)
            for _ in range(opts["n_ip"]):  # the variances fixed: each sweep gains likelihood
                W_new = F.ip_sweep(W, V)
                ok = torch.isfinite(torch.view_as_real(W_new)).flatten(1).all(1)
                W = torch.where(ok[:, None, None], W_new, W)
            history.append({"iter": it + 1})
            bar.update(1)
    demix = W @ P
    demix = F.projection_back_scales(demix, opts["ref_channel"])[:, :, None] * demix
    return demix.detach().numpy().astype(np.complex64), history or [{"iter": 0}], model


@dataclass
class PretrainedTFFit(DemixerFit):
    """A fitted separation with a pretrained source model (this family's :class:`Fitted`)."""

    demixer: TFDemixer
    prior: SourceModel
    sample_rate: float  # the input's rate (the demixer works at the model's)
    ch_names: tuple | None = None
    family: str = NAME

    @property
    def work_rate(self) -> float:
        """The rate the demixer separates at (the source model's): streaming reads at it."""
        return float(self.prior.sample_rate)

    def sources(self, data, u=None):
        _check_no_u(u)
        x = _resample(np.asarray(data, np.float32), self.sample_rate, self.prior.sample_rate)
        check_audio_input(x, self.n_sources, self.prior.n_fft, short=_SHORT)
        s = self.demixer.separate(x, chunk_seconds=_CHUNK_SECONDS)
        return _fit_length(_resample(s, self.prior.sample_rate, self.sample_rate), data.shape[1])

    def reconstruct(self, sources, u=None):
        s = _resample(np.asarray(sources, np.float32), self.sample_rate, self.prior.sample_rate)
        x = self.demixer.inverse(s)
        return _fit_length(_resample(x, self.prior.sample_rate, self.sample_rate), sources.shape[1])

    def components(self):
        raise ValueError(
            "get_components is defined for domain='time' only: a source_model separator has "
            "one demixing matrix per frequency, in tf_.demix (n_freqs, n_sources, n_channels)."
        )

    def attributes(self) -> dict:
        d = self.demixer
        return dict(
            domain_="tf",
            tf_=d,
            # The model as the last sweep used it (fine-tuned on this mixture unless
            # n_finetune=0); a saved fit keeps the demixing, which is all that
            # separation needs, and names the shipped model.
            model_=self.demixer.model,
            source_model_=self.prior.name,
            history_=d.history,
            n_steps_run_=len(d.history),
            prior_="gauss",
            posterior_="diag",
            mixing_="convolutive",
            n_segments_=None,
            n_u_=None,
            classes_=None,
            window_samples_=int(self.prior.segment_frames * self.prior.hop),
            annotation_u_=False,
        )

    def describe(self) -> dict:
        return {**super().describe(), "source_model": self.prior.name}

    def state(self):
        d = self.demixer
        tensors = {
            "tf.demix_real": torch.from_numpy(np.ascontiguousarray(d.demix.real, np.float32)),
            "tf.demix_imag": torch.from_numpy(np.ascontiguousarray(d.demix.imag, np.float32)),
        }
        # The source model is named, not copied: its folder is immutable once
        # released, and the sha256 makes a changed one an error at load time.
        meta = dict(
            domain_="tf",
            family_=NAME,
            tf_=dict(n_fft=d.n_fft, hop=d.hop, sample_rate=d.sample_rate, postfilter=d.postfilter),
            source_model_=dict(name=self.prior.name, sha256=self.prior.sha256),
            input_sample_rate_=self.sample_rate,
            history_=d.history,
        )
        return tensors, meta


def _fit_length(x: np.ndarray, n_times: int) -> np.ndarray:
    """Trim or zero-pad the last axis to ``n_times`` (resampling rounds lengths)."""
    if x.shape[-1] >= n_times:
        return np.ascontiguousarray(x[..., :n_times])
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_times - x.shape[-1])])


def _check_no_u(u):
    if u is not None:
        raise ValueError(
            "u applies to domain='time' only; a source_model separation sets u itself (the "
            "~1 s segment of every STFT frame). Pass u=None."
        )


def fit(inp: FitInput, opts: dict, **_) -> PretrainedTFFit:
    """Fit the demixing of ``inp`` (a multichannel audio recording) under the source model."""
    if inp.sample_rate is None:
        raise ValueError(
            "source_model needs the sample rate of X, but X is a plain array. Pass a "
            "Recording (e.g. Recording(X, sample_rate=16000, kind='audio'))."
        )
    _check_no_u(inp.u)
    prior = load_source_model(opts["source_model"])
    settings = check_fit_params(opts.get("fit_params"))
    if inp.n_channels < opts["n_sources"]:
        raise ValueError(
            f"n_sources={opts['n_sources']} needs at least as many microphones, but X has "
            f"{inp.n_channels} channel(s). Pass n_sources <= {inp.n_channels} (determined "
            "separation: one microphone per source at least)."
        )
    if settings["ref_channel"] >= inp.n_channels:
        raise ValueError(
            f"ref_channel must be < the {inp.n_channels} channels, got {settings['ref_channel']}."
        )
    if inp.sample_rate != prior.sample_rate and float(inp.sample_rate) != int(inp.sample_rate):
        raise ValueError(
            f"X's sample rate is {inp.sample_rate!r} Hz, which cannot be resampled to the "
            f"source model's {prior.sample_rate:g} Hz (the resampler needs whole Hz). "
            f"Resample the recording to {prior.sample_rate:g} Hz first "
            "(sepkit.io.resample), or give its rate in whole Hz."
        )
    if inp.sample_rate != prior.sample_rate:
        share = high_band_share(inp.data, inp.sample_rate, prior.sample_rate)
        lost = (
            f" The band above {prior.sample_rate / 2:g} Hz, {100 * share:.1f} % of the "
            "power at the first microphone, is not separated: the sources hold nothing above "
            "it (domain='tf' separates the whole band)."
            if share > 0.001
            else ""
        )
        warnings.warn(
            f"X is at {inp.sample_rate:g} Hz and source_model {prior.name!r} at "
            f"{prior.sample_rate:g} Hz: X is resampled to {prior.sample_rate:g} Hz for the "
            f"separation and the sources back to the input's rate.{lost}",
            UserWarning,
            stacklevel=2,
        )
    x = _resample(inp.data, inp.sample_rate, prior.sample_rate)
    ranges = fit_blocks(x.shape[1], prior.sample_rate, settings["max_fit_seconds"])
    check_fit_blocks(ranges, prior.n_fft, settings["max_fit_seconds"], prior.sample_rate)
    blocks = [x[:, a:b] for a, b in ranges]
    for b in blocks:
        check_audio_input(b, opts["n_sources"], prior.n_fft, short=_SHORT)
    seed = opts["random_state"] if opts["random_state"] is not None else 0
    demix, history, model = fit_demixing(
        blocks, prior, opts["n_sources"], settings, opts["verbose"], seed
    )
    demixer = TFDemixer(
        demix, prior.n_fft, prior.hop, prior.sample_rate, model, history, settings["postfilter"]
    )
    fitted = PretrainedTFFit(demixer, prior, float(inp.sample_rate), inp.ch_names)
    # The samples fitted (a part: max_fit_seconds), counted at the input's rate.
    seen = sum(b.shape[1] for b in blocks) * inp.sample_rate / prior.sample_rate
    fitted.n_fitted_samples = min(inp.n_times, int(round(seen)))
    return fitted


def from_state(tensors: dict, meta: dict, params: dict, device) -> PretrainedTFFit:
    """Rebuild a saved fit; its source model is loaded by name and its sha256 checked."""
    saved = meta["source_model_"]
    prior = load_source_model(params.get("source_model") or saved["name"])
    if prior.sha256 != saved["sha256"]:
        raise ValueError(
            f"the separator was fitted with source model {saved['name']!r} of sha256 "
            f"{saved['sha256'][:12]}..., but that model now has {prior.sha256[:12]}...; "
            "refit the separator with the current model."
        )
    info = meta["tf_"]
    demix = tensors["tf.demix_real"].numpy() + 1j * tensors["tf.demix_imag"].numpy()
    demixer = TFDemixer(
        demix.astype(np.complex64),
        int(info["n_fft"]),
        int(info["hop"]),
        float(info["sample_rate"]),
        prior.model,
        meta["history_"],
        # Saved before the post-filter existed: separated as then.
        float(info.get("postfilter", 0.0)),
    )
    names = tuple(meta["ch_names_"]) if meta.get("ch_names_") else None
    return PretrainedTFFit(demixer, prior, float(meta["input_sample_rate_"]), names)


__all__ = [
    "FIT_PARAMS",
    "NAME",
    "PARAMS",
    "SourceModel",
    "check_fit_params",
    "fit",
    "fit_demixing",
    "from_state",
    "load_source_model",
    "prior_weights",
]
