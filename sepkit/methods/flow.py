"""The flow family: the iVAE's noiseless limit with an invertible nonlinear decoder.

For an invertible mixing x = f(s) (as many sensors as sources, no sensor
noise) the iVAE's ELBO tends, as the observation noise goes to zero, to the
exact likelihood log p(g(x)|u) + log|det J_g(x)| of the inverse g = f^{-1}
(:func:`sepkit.functional.flow_ivae_nll`). This family fits g as a
:class:`~sepkit.models.CouplingFlow` by that exact maximum likelihood, under
the iVAE's conditional prior (a Gaussian per source and segment of u, its
means and variances profiled out as the linear family does): the nonlinear
counterpart of the linear family, which is the same limit with g linear, and
of iFlow (Li et al. 2019). The sources are g(x), exactly; there is no
posterior to approximate and no readout to tune.

The flow starts at the linear iVAE's unmixing (the linear family's estimator
on the same data), with every coupling at the identity, and is trained by
Adam on minibatches that hold the same number of samples from every segment
(:func:`sepkit.train.flow.train_flow`). Settings (``fit_params``, see
:class:`FlowConfig`) were chosen on synthetic seeds 100-102, which no reported
figure uses (benchmarks/README.md, "Nonlinear core").

References
----------
Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
nonlinear ICA: a unifying framework. AISTATS.
Li, Peng, Chen, Zhang, Wang (2019). Identifying through flows for recovering
latent representations (iFlow). arXiv:1909.12555.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from .._check import check_device, check_float, check_int
from ..models.flow import CouplingFlow
from ..preprocessing import Standardizer
from ..train.flow import train_flow
from ..windows import window_labels
from . import _time
from .base import TOP_LEVEL_PARAMS, FitInput, Fitted, check_fit_param_keys
from .likelihood import fit_linear_ivae

NAME = "flow"
# fit's keywords it honours (resume: refused by fit itself, with the flow's reason).
HOOKS = frozenset({"device", "resume", "callback"})
# A fit that ends this much (nats per sample) below its linear start's
# likelihood diverged; less is minibatch noise of a fit that barely moved.
_DIVERGED_NATS = 1e-2
# The estimator settings this family reads: the top-level ones (its own are in
# fit_params, FlowConfig).
PARAMS = TOP_LEVEL_PARAMS
# Fitted by exact likelihood: the words of the estimator's error about an option
# that needs the ELBO network (see linear.EXACT).
EXACT = dict(
    priors=("auto", "gauss"),
    prior="the flow's prior is 'gauss'",
    decoder_u="the flow's g does not read u",
    fit="the flow",
    does="fits an invertible network by exact maximum likelihood and trains no ELBO network",
)


def resolve_prior(prior: str, posterior: str, is_eeg: bool) -> tuple[str, str]:
    """(prior, posterior) of a fit: the flow's is Gaussian, its posterior a point mass."""
    return "gauss", "diag"


@dataclass
class FlowConfig:
    """Settings of the flow family (``IVAESeparator(fit_params={...})``).

    Attributes
    ----------
    n_steps : int
        Adam steps.
    lr : float
        Peak learning rate (5 % warm-up, cosine decay to 5 %).
    batch_size : int
        Samples per step, drawn equally from every segment (at least 2 each).
    n_coupling : int
        Coupling layers of g.
    n_hidden : int
        Hidden width of each coupling's conditioner.
    """

    # Chosen on seeds 100-102 for at most 5 s per fit on 2 CPU cores: the
    # earlier 1000 steps of 14 couplings at lr 0.03 took twice as long for
    # +0.009 / +0.002 median MCC there (benchmarks/README.md, "Nonlinear core").
    n_steps: int = 600
    lr: float = 0.04
    batch_size: int = 1000
    n_coupling: int = 12
    n_hidden: int = 16

    def validate(self) -> FlowConfig:
        check_int("n_steps", self.n_steps, min_value=1)
        check_float("lr", self.lr, min_value=0.0, strict_min=True)
        check_int("batch_size", self.batch_size, min_value=1)
        check_int("n_coupling", self.n_coupling, min_value=0)
        check_int("n_hidden", self.n_hidden, min_value=1)
        return self


FIT_PARAMS = tuple(f.name for f in fields(FlowConfig))


def check_fit_params(fit_params) -> FlowConfig:
    """``fit_params`` (a dict of FlowConfig fields, or None) as a validated FlowConfig."""
    fit_params = check_fit_param_keys(
        fit_params, FIT_PARAMS, "mixing='flow'", " (sepkit.methods.flow.FlowConfig)"
    )
    return FlowConfig(**fit_params).validate()


def fit(inp: FitInput, opts: dict, *, device, init=None, resume=False, callback=None) -> FlowFit:
    """Fit g on ``inp`` by exact maximum likelihood; ``callback(step, fitted)`` every 100 steps.

    ``init`` is refused by the estimator before it gets here (no pretrained
    flow exists to start from); ``resume`` here: the flow keeps no checkpoints.
    """
    if resume:
        raise ValueError(
            "resume=True continues a network fit from its checkpoint, but mixing='flow' keeps "
            "no checkpoints (a fit takes seconds). Pass resume=False, or mixing='nonlinear'."
        )
    del init
    device = check_device(device)
    config = check_fit_params(opts["fit_params"])
    prep = _time.prepare(inp, opts)
    opts = dict(opts, n_sources=prep.n_sources)  # None or a share of variance: counted
    n_sources = opts["n_sources"]
    st = Standardizer.fit(prep.stats, n_sources, scale=prep.scale)
    # The flow is square: with more channels than sources it sees the first
    # n_sources principal components (whitened), as the linear family does.
    st = Standardizer(st.mean, st.whitening[:n_sources], st.dewhitening[:, :n_sources])
    x = st.forward(prep.data)
    codes = _sample_codes(prep, x.shape[1])
    if prep.good is not None:
        x, codes = x[:, prep.good], codes[prep.good]
    # Segments without samples (e.g. wholly under BAD annotations) are dropped.
    _, codes = np.unique(codes, return_inverse=True)
    start = fit_linear_ivae(x.astype(np.float64), codes)
    seed = opts["seed"]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = CouplingFlow(
            n_sources,
            config.n_coupling,
            config.n_hidden,
            generator=torch.Generator().manual_seed(seed),
        )
    model.reset_to_linear(start["unmixing"])
    model = model.to(device)
    fitted = FlowFit(model=model, standardizer=st, codec=prep.codec, config=config)
    xt = torch.from_numpy(np.ascontiguousarray(x.T)).to(device)
    ct = torch.from_numpy(codes.astype(np.int64)).to(device)
    step_callback = None if callback is None else (lambda step, _model: callback(step, fitted))
    fitted.history = train_flow(
        model,
        xt,
        ct,
        n_steps=config.n_steps,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=seed,
        callback=step_callback,
    )
    last = fitted.history[-1]
    last["linear_nll"] = float(start["nll"])
    if not last["nll"] <= last["linear_nll"] + _DIVERGED_NATS:
        # The flow started at the linear iVAE, so training that ends with a lower
        # likelihood diverged: return the start rather than a worse model.
        model.reset_to_linear(start["unmixing"])
        last["event"] = "diverged: reset to the linear iVAE's unmixing"
        warnings.warn(
            f"The flow's fit ended at {last['nll']:.3f} nats per sample, worse than the linear "
            f"iVAE it started from ({last['linear_nll']:.3f}); it returns the linear sources. "
            "Pass a smaller fit_params['lr'] or more n_steps, or mixing='nonlinear'.",
            RuntimeWarning,
            stacklevel=4,
        )
    sources = fitted.run_chunked(lambda v: model(v)[0], x)
    fitted.source_mean = sources.mean(axis=1).astype(np.float64)
    return fitted


def _sample_codes(prep: _time.Prepared, n_times: int) -> np.ndarray:
    """One segment code per sample (the flow's prior needs segments, not a continuous u)."""
    if prep.u_layout:
        # Overlapping windows: each sample belongs to the window whose centre is nearest.
        return window_labels(n_times, prep.codec.window_samples, prep.codec.hop_samples)
    if prep.codes is None or prep.codes.ndim != 1:
        raise ValueError(
            "mixing='flow' fits a prior per segment of u, but u is continuous (or "
            "prior='standard' uses none). Pass u as labels (or None for windows), or "
            "mixing='nonlinear'."
        )
    return prep.codes


class FlowFit(Fitted):
    """A fitted flow: s = g(whitening (x - mean)), exact both ways.

    Attributes
    ----------
    model : CouplingFlow
    standardizer : Standardizer
    codec : UCodec
    config : FlowConfig
    source_mean : ndarray, shape (n_sources,)
    history : list of dict
    """

    family = NAME
    # g maps the channels of each sample on its own: the rate does not enter.
    per_sample = True

    def __init__(self, model, standardizer, codec, config, source_mean=None, history=None):
        self.model = model
        self.standardizer = standardizer
        self.codec = codec
        self.config = config
        self.source_mean = source_mean
        self.history = history or []

    @property
    def n_sources(self) -> int:
        return self.model.n_dims

    @property
    def n_channels(self) -> int:
        return int(self.standardizer.mean.shape[0])

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    @torch.no_grad()
    def run_chunked(self, fn, inp: np.ndarray) -> np.ndarray:
        """``fn`` over samples (time last in ``inp``), in bounded-memory chunks."""
        outs = []
        for start in range(0, inp.shape[1], _time.INFER_CHUNK_SAMPLES):
            block = inp[:, start : start + _time.INFER_CHUNK_SAMPLES].T
            v = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(self.device)
            outs.append(fn(v).float().cpu().numpy().T)
        if not outs:
            return np.zeros((self.n_sources, 0), dtype=np.float32)
        return np.concatenate(outs, axis=1)

    def sources(self, data, u=None):
        # g(x) does not read u: the prior p(s|u) shaped the fit, not the readout.
        return self.run_chunked(lambda v: self.model(v)[0], self.standardizer.forward(data))

    def reconstruct(self, sources, u=None):
        out = self.run_chunked(self.model.inverse, np.asarray(sources, dtype=np.float32))
        return self.standardizer.inverse(out.astype(np.float64)).astype(np.float32)

    def components(self):
        # The mixing's Jacobian df/ds = (dg/dx)^{-1} at the mean source, in sensor units.
        mean = self.source_mean if self.source_mean is not None else np.zeros(self.n_sources)
        s0 = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        J = torch.autograd.functional.jacobian(self.model.inverse, s0)
        return self.standardizer.dewhitening @ J.cpu().double().numpy()

    def attributes(self) -> dict:
        return dict(
            _time.fit_attributes(self.standardizer, self.codec, self.source_mean, self.history),
            model_=self.model,
            sensor_mean_=None,
            sensor_scale_=None,
            sensor_coefs_=None,
            sensor_nonlinearity_=None,
            source_shape_=None,
            data_device_="host",
            mixing_=NAME,
            prior_="gauss",
            posterior_="diag",
        )

    def describe(self) -> dict:
        return dict(family=NAME, domain="time", mixing=NAME, prior="gauss", unwarped=False)

    def state(self):
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
        }
        st = self.standardizer
        for name, value in (
            ("mean_", st.mean),
            ("whitening_", st.whitening),
            ("dewhitening_", st.dewhitening),
        ):
            tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
        meta = dict(
            family_=NAME,
            prior_="gauss",
            posterior_="diag",
            mixing_=NAME,
            flow_config_=asdict(self.config),
            **_time.codec_meta(self.codec, self.source_mean, self.history),
        )
        return tensors, meta


def from_state(tensors: dict, meta: dict, params: dict, device) -> FlowFit:
    """Rebuild a :class:`FlowFit` from a saved file."""
    tensors = dict(tensors)
    codec = _time.codec_from_meta(meta, True)
    st = Standardizer(*(tensors.pop(k).numpy() for k in ("mean_", "whitening_", "dewhitening_")))
    config = FlowConfig(**meta["flow_config_"]).validate()
    model = CouplingFlow(params["n_sources"], config.n_coupling, config.n_hidden)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items()}, strict=True)
    return FlowFit(
        model=model.to(check_device(device)).eval(),
        standardizer=st,
        codec=codec,
        config=config,
        source_mean=np.asarray(meta["source_mean_"], dtype=np.float64),
        history=meta["history_"],
    )
