"""The network family: the convolutional iVAE trained on the ELBO (CPU or GPU).

The ELBO of Khemakhem et al. (2020), eq. (5): E_q[log p(x|z,u)] -
KL(q(z|x,u) || p(z|u)), with a 1-D convolutional encoder and decoder
(``kernel_size=1`` is the paper's per-sample MLP), trained by
:func:`sepkit.train.train_ivae` on chunks of the standardised recording.
Optionally started from ICA (``ica_init``) or from a fitted separator
(fine-tuning, ``init=``).
"""

from __future__ import annotations

import numpy as np
import torch

from .._check import check_device
from ..preprocessing import Standardizer
from ..train import resolve_data_device, train_ivae
from ..windows import overlapping_training_set, valid_chunk_starts
from . import _time, _time_fit
from ._time_fit import TimeDomainFit, build_model
from .base import COMMON_PARAMS, TOP_LEVEL_PARAMS, FitInput

NAME = "network"
# fit's keywords it honours (the protocol of sepkit.methods.base).
HOOKS = frozenset({"device", "resume", "callback"})
# Constructor parameters that shape the network: a model fine-tuned from
# (init=) must have the same ones for its weights to fit.
ARCH_PARAMS = (
    "n_sources",
    "n_hidden",
    "n_layers",
    "kernel_size",
    "activation",
    "encoder_u",
    "decoder_u",
    "learn_noise",
    "whiten",
)
PARAMS = (
    COMMON_PARAMS
    | set(ARCH_PARAMS)
    | {
        "prior",
        "posterior",
        "noise_var",
        "window",
        "window_samples",
        "window_overlap",
        "n_steps",
        "batch_size",
        "chunk_samples",
        "lr",
        "checkpoint_dir",
        "checkpoint_every",
        "early_stopping",
        "patience",
        "min_delta",
        "precision",
        "compile",
        "data_device",
        "ica_init",
        "batch_size_start",
        "kl_warmup",
        "refine_steps",
        "refine_prior_weight",
        "highpass",
        "lowpass",
    }
)


# Fitted by the ELBO: every option of the network applies (see EXACT in linear.py).
EXACT = None


def resolve_prior(prior: str, posterior: str, is_eeg: bool) -> tuple[str, str]:
    """(prior, posterior) of a fit: "auto" resolved for this family.

    EEG: a Laplace prior (blinks and bursts are heavy-tailed within a window)
    and a diagonal posterior; other data: Gaussian, full.
    """
    prior = prior if prior != "auto" else ("laplace" if is_eeg else "gauss")
    posterior = posterior if posterior != "auto" else ("diag" if is_eeg else "full")
    return prior, posterior


# The network's own settings, which fit_params may hold (the constructor
# keywords of the same names are the other, older spelling).
FIT_PARAMS = tuple(sorted(PARAMS - TOP_LEVEL_PARAMS))


def check_fit_params(fit_params) -> None:
    """``fit_params`` may hold the network's settings (their values are checked by the estimator)."""
    unknown = sorted(set(fit_params or {}) - set(FIT_PARAMS))
    if unknown:
        raise ValueError(
            f"fit_params has key(s) {unknown} that the 'network' family does not take. Its "
            f"settings are {list(FIT_PARAMS)}; the top-level ones ({sorted(TOP_LEVEL_PARAMS)}) "
            "are IVAESeparator's own arguments."
        )


def fit(
    inp: FitInput, opts: dict, *, device, init=None, resume=False, callback=None
) -> TimeDomainFit:
    """Train the network on ``inp``.

    Parameters
    ----------
    inp : FitInput
    opts : dict
        The estimator's settings plus the resolved ``prior_``, ``posterior_``,
        ``mixing_``, ``window_samples_``, ``hop_samples_`` and ``fit_filter``.
    device : str or torch.device
        Resolved here (:func:`sepkit._check.check_device`).
    init : fitted separator or None
        Fine-tune from it (its architecture, channels and rate must match).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir``.
    callback : callable or None
        ``callback(step, fitted)`` every 100 steps; True stops training.
    """
    if init is not None and opts["ica_init"] is not None:
        raise ValueError(
            f"ica_init={opts['ica_init']!r} and init= both set the starting weights. Pass "
            "ica_init=None to fine-tune a pretrained model, or drop init= to start from ICA."
        )
    device = check_device(device)
    prep = _time.prepare(inp, opts)
    opts = dict(opts, n_sources=prep.n_sources)  # None or a share of variance: counted
    init_state = None
    if init is None:
        st = Standardizer.fit(prep.stats, opts["n_sources"], opts["whiten"], prep.scale)
    else:
        st, init_state = check_init(init, opts, inp)
    seed = opts["seed"]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = build_model(st.rank, prep.codec, opts).to(device)
        if init_state is not None:
            apply_init(model, init_state)
        fitted = TimeDomainFit(
            model=model,
            standardizer=st,
            codec=prep.codec,
            family=NAME,
            mixing="nonlinear",
            prior=opts["prior_"],
            posterior=opts["posterior_"],
            n_layers=opts["n_layers"],
            kernel_size=opts["kernel_size"],
            refine_steps=opts["refine_steps"],
            refine_prior_weight=opts["refine_prior_weight"],
        )
        Xt, ut, valid, chunk = _training_set(fitted, prep, opts, seed)
        fitted.history = _train(fitted, Xt, ut, valid, chunk, opts, device, seed, resume, callback)
    fitted.source_mean = fitted.fitted_source_mean(prep)
    return fitted


def _training_set(fitted, prep, opts, seed):
    """(X, u codes, valid chunk starts or None, chunk_samples) to train on."""
    model, codec = fitted.model, fitted.codec
    n_times = prep.data.shape[1]
    chunk = opts["chunk_samples"] or model.receptive_field
    if chunk > n_times:
        raise ValueError(f"chunk_samples={chunk} is longer than the recording ({n_times} samples).")
    valid = None
    codes = prep.codes
    Xt = fitted.standardizer.forward(prep.data)
    good = prep.good
    if opts["ica_init"] is not None:
        model.set_linear_path(*ica_matrices(Xt if good is None else Xt[:, good], opts, seed))
    if prep.u_layout:
        index, codes, starts = overlapping_training_set(
            n_times, codec.window_samples, codec.hop_samples, chunk, good
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
    return torch.from_numpy(Xt), None if codes is None else torch.from_numpy(codes), valid, chunk


def _train(fitted, Xt, ut, valid, chunk, opts, device, seed, resume, callback) -> list:
    n_bytes = sum(t.nbytes for t in (Xt, ut, valid) if t is not None)
    # Streamed data stay on the host, and so do the batch generator
    # and indices (see train_ivae).
    where = resolve_data_device(opts["data_device"], device, n_bytes)
    data_at = device if where == "device" else torch.device("cpu")
    Xt, ut, valid = (None if t is None else t.to(data_at) for t in (Xt, ut, valid))
    fitted.data_device = where
    gen = torch.Generator(device=data_at)
    gen.manual_seed(seed)

    def step_callback(step, model):
        fitted.model = model
        return callback(step, fitted)

    return train_ivae(
        fitted.model,
        Xt,
        ut,
        n_steps=opts["n_steps"],
        batch_size=opts["batch_size"],
        chunk_samples=chunk,
        lr=opts["lr"],
        generator=gen,
        valid_starts=valid,
        verbose=opts["verbose"],
        checkpoint_dir=opts["checkpoint_dir"],
        checkpoint_every=opts["checkpoint_every"],
        resume=resume,
        early_stopping=opts["early_stopping"],
        patience=opts["patience"],
        min_delta=opts["min_delta"],
        precision=opts["precision"],
        compile=opts["compile"],
        data_device=where,
        callback=None if callback is None else step_callback,
        batch_size_start=opts["batch_size_start"],
        kl_warmup=opts["kl_warmup"],
    )


def ica_matrices(Xt, opts, seed):
    """Unmixing (n_sources, rank) and mixing (rank, n_sources) of ICA on ``Xt``.

    ICA runs on the first ``n_sources`` whitened dimensions (the ones the
    whitening scales to unit variance; the weaker ones are left to the MLPs).
    Rows of the unmixing are scaled to give unit-variance sources, the scale
    of the prior.
    """
    n_sources, rank = opts["n_sources"], Xt.shape[0]
    Y = Xt[:n_sources].astype(np.float64)
    if opts["ica_init"] == "picard":
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
    unmixing = np.zeros((n_sources, rank))
    unmixing[:, :n_sources] = W
    mixing = np.zeros((rank, n_sources))
    mixing[:n_sources] = np.linalg.inv(W)
    return unmixing, mixing


def check_init(pre, opts: dict, inp: FitInput):
    """Check the fitted separator ``pre`` against the settings and data; take its input map.

    The pretrained network was trained on inputs in *its* whitened space, so
    the same map must feed it (a new PCA basis could rotate or flip the input
    dimensions and make the weights meaningless). Returns the Standardizer and
    the weights to load into the new network.
    """
    label = getattr(pre, "pretrained_", {}).get("name", "init")
    # Its settings, with those it took through fit_params.
    pre_params = pre.get_params()
    pre_params.update({k: v for k, v in (pre.fit_params or {}).items() if k in pre_params})
    if getattr(pre, "domain_", "time") != "time":
        raise ValueError(
            f"init={label!r} is a domain={pre.domain_!r} separator; fine-tuning (init=) applies "
            "to domain='time' models. Fit a new separator instead."
        )
    if getattr(pre, "family_", NAME) != NAME:
        raise ValueError(
            f"init={label!r} is a {pre.family_!r}-family separator (no network weights); "
            "fine-tuning (init=) starts from a network-family separator (mixing='nonlinear'). "
            "Fit a new separator instead, or start from a network fit."
        )
    mismatch = {k: (opts[k], pre_params[k]) for k in ARCH_PARAMS if opts[k] != pre_params[k]}
    if mismatch:
        detail = ", ".join(f"{k}={a!r} (model: {b!r})" for k, (a, b) in mismatch.items())
        raise ValueError(
            f"init={label!r} has another architecture than this separator: {detail}. Start from "
            f"IVAESeparator.from_pretrained({label!r}), change training settings with "
            "set_params(n_steps=..., lr=...), then fit(X, init=...)."
        )
    for attr, param in (("prior_", "prior"), ("posterior_", "posterior")):
        if opts[attr] != getattr(pre, attr):
            raise ValueError(
                f"init={label!r} has {param}={getattr(pre, attr)!r} but this fit resolved "
                f"{param}={opts[attr]!r}. Pass {param}={getattr(pre, attr)!r}."
            )
    _check_init_data(pre, label, inp)
    st = Standardizer(
        np.array(pre.mean_, dtype=np.float64),
        np.array(pre.whitening_, dtype=np.float64),
        np.array(pre.dewhitening_, dtype=np.float64),
    )
    return st, {k: v.detach().cpu().clone() for k, v in pre.model_.state_dict().items()}


def _check_init_data(pre, label, inp):
    n_channels, sample_rate, ch_names = inp.n_channels, inp.sample_rate, inp.ch_names
    if n_channels != pre.n_channels_:
        names = f" ({', '.join(pre.ch_names_)})" if pre.ch_names_ else ""
        raise ValueError(
            f"X has {n_channels} channels but init={label!r} expects {pre.n_channels_}{names}. "
            "Select them first (picks=[...] for an MNE Raw)."
        )
    if (
        sample_rate is not None
        and pre.sample_rate_ is not None
        and float(sample_rate) != float(pre.sample_rate_)
    ):
        raise ValueError(
            f"X has sample_rate {float(sample_rate):g} Hz but init={label!r} expects "
            f"{float(pre.sample_rate_):g} Hz. Resample it first: "
            "sepkit.io.audio.resample(rec, rate) for a Recording, sepkit.io.resample(raw, rate) "
            "for an MNE Raw."
        )
    # EEG channels are matched by name (a montage); audio channels by position:
    # readers name them ch0, ch1, ..., and a microphone has no standard name.
    if pre.ch_names_ and ch_names and inp.is_eeg and tuple(ch_names) != tuple(pre.ch_names_):
        raise ValueError(
            f"X has channels {list(ch_names)} but init={label!r} expects "
            f"{list(pre.ch_names_)} in this order. Reorder or pick them (picks=[...] for an "
            "MNE Raw)."
        )


def apply_init(model, state: dict) -> list[str]:
    """Load ``state`` into ``model``; tensors whose shape differs stay as initialised.

    Only the per-u tables (the prior's, and the encoder's or decoder's with
    ``encoder_u`` / ``decoder_u``) can differ, when the new data have another
    number of u values; they are re-learnt. Returns their names.
    """
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    keep = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise ValueError(
            "The pretrained weights do not fit this network: missing "
            f"{sorted(set(missing) - set(skipped))}, unexpected {sorted(unexpected)}."
        )
    return skipped


def from_state(tensors: dict, meta: dict, params: dict, device) -> TimeDomainFit:
    """Rebuild a saved network fit (:func:`sepkit.methods._time_fit.from_state`)."""
    return _time_fit.from_state(tensors, meta, params, device)
