"""The fitted state of the network family: an :class:`~sepkit.models.IVAE` and its standardiser.

(The linear family keeps its own numpy state, :class:`sepkit.methods.linear.LinearFit`;
it reads its files of formats 1-2, written as an IVAE's weights, itself.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._check import check_device
from ..models.ivae import IVAE
from ..preprocessing import Standardizer
from ..windows import UCodec, window_labels
from ._time import (
    INFER_CHUNK_SAMPLES,
    Prepared,
    codec_from_meta,
    codec_meta,
    fit_attributes,
)
from .base import Fitted


def build_model(rank: int, codec: UCodec, opts: dict) -> IVAE:
    """The IVAE of a network fit, from the estimator's settings and the resolved prior."""
    return IVAE(
        rank,
        opts["n_sources"],
        n_segments=codec.n_segments,
        n_u=codec.n_u,
        n_hidden=opts["n_hidden"],
        n_layers=opts["n_layers"],
        kernel_size=opts["kernel_size"],
        activation=opts["activation"],
        prior=opts["prior_"],
        posterior=opts["posterior_"],
        encoder_u=opts["encoder_u"],
        decoder_u=opts["decoder_u"],
        learn_noise=opts["learn_noise"],
        noise_var=opts["noise_var"],
        # ica_init starts the network from ICA's matrices on a parallel linear path.
        linear_path=opts["ica_init"] is not None,
    )


@dataclass
class TimeDomainFit(Fitted):
    """A fitted network-family iVAE.

    Attributes
    ----------
    model : IVAE
    standardizer : Standardizer
    codec : UCodec
    family : {"network"}
    mixing, prior, posterior : str
        Resolved settings (``mixing_`` is "nonlinear", ``prior_``, ``posterior_``).
    refine_steps, refine_prior_weight : int, float
        Posterior refinement at readout.
    source_mean : ndarray, shape (n_sources,)
    """

    model: IVAE
    standardizer: Standardizer
    codec: UCodec
    family: str
    mixing: str
    prior: str
    posterior: str
    n_layers: int
    kernel_size: int
    refine_steps: int = 0
    refine_prior_weight: float = 0.05
    source_mean: np.ndarray | None = None
    history: list = field(default_factory=list)
    data_device: str = "host"

    @property
    def n_sources(self) -> int:
        return self.model.n_sources

    @property
    def n_channels(self) -> int:
        return int(self.standardizer.mean.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _refines(self) -> bool:
        return self.refine_steps > 0 and self.model.prior != "laplace"

    @property
    def needs_u(self) -> bool:
        """Whether ``sources`` reads u (the refinement's prior p(z|u) needs it too)."""
        return self.model.encoder_u or (self._refines and self.model.prior_net is not None)

    @property
    def readout_params(self) -> frozenset:
        # The refinement's Gaussian prior: none for a Laplace prior (_refines).
        if self.model.prior == "laplace":
            return frozenset()
        return frozenset({"refine_steps", "refine_prior_weight"})

    def set_params(self, params: dict) -> None:
        # Posterior refinement is a readout setting: set_params after fit applies.
        self.refine_steps = params.get("refine_steps", self.refine_steps)
        self.refine_prior_weight = params.get("refine_prior_weight", self.refine_prior_weight)

    def sources(self, data, u=None):
        codes = self.codec.encode(u, data.shape[1]) if self.needs_u else None
        return self.encode(self.standardizer.forward(data), codes)

    def encode(self, x, codes):
        """Posterior means (refined if set) of standardised ``x`` with u ``codes``."""
        model, refine = self.model, self._refines

        def sources(xx, uu):
            z = model.encode(xx, uu if model.encoder_u else None)[0]
            if refine:
                z = model.refine_sources(
                    xx, uu, z, prior_weight=self.refine_prior_weight, n_iter=self.refine_steps
                )
            return z

        return self.run_chunked(sources, x, codes)

    def reconstruct(self, sources, u=None):
        codes = self.codec.encode(u, sources.shape[1]) if self.model.decoder_u else None
        out = self.run_chunked(lambda z, uu: self.model.decode(z, uu), sources, codes)
        return self.standardizer.inverse(out.astype(np.float64)).astype(np.float32)

    def components(self):
        model, device = self.model, self.device
        linear = self.n_layers == 1 and self.kernel_size == 1 and not model.decoder_u
        mean = self.source_mean if self.source_mean is not None else np.zeros(self.n_sources)
        if linear and model.decoder_linear is None:
            W = model.decoder.layers[0].weight[:, :, 0].detach().cpu().double().numpy()
        else:
            z0 = torch.as_tensor(mean, dtype=torch.float32, device=device)
            # A constant stretch as long as the decoder sees, read at its centre.
            margin = self.n_layers * (self.kernel_size // 2)

            def f(z):
                stretch = z[None, :, None].expand(1, -1, 2 * margin + 1)
                return model.decode(stretch, None)[0, :, margin]

            W = torch.autograd.functional.jacobian(f, z0).cpu().double().numpy()
        return self.standardizer.dewhitening @ W

    @torch.no_grad()
    def run_chunked(self, fn, inp: np.ndarray, codes) -> np.ndarray:
        """Apply a fully convolutional ``fn(x, u)`` over time in bounded-memory chunks."""
        device = self.device
        n_times = inp.shape[1]
        margin = self.n_layers * (self.kernel_size // 2)
        outs = []
        for start in range(0, n_times, INFER_CHUNK_SAMPLES):
            stop = min(n_times, start + INFER_CHUNK_SAMPLES)
            lo, hi = max(0, start - margin), min(n_times, stop + margin)
            x = torch.from_numpy(np.ascontiguousarray(inp[:, lo:hi]))[None].to(device)
            u = None
            if codes is not None:
                u = torch.from_numpy(np.ascontiguousarray(codes[..., lo:hi]))[None].to(device)
            out = fn(x, u)[0, :, start - lo : start - lo + (stop - start)]
            outs.append(out.float().cpu().numpy())
        return np.concatenate(outs, axis=1)

    def fitted_source_mean(self, prep: Prepared) -> np.ndarray:
        """Mean of the posterior means E[z | x, u] over the fitted samples."""
        codes = prep.codes
        if self.model.encoder_u and prep.u_layout:
            codes = window_labels(
                prep.data.shape[1], self.codec.window_samples, self.codec.hop_samples
            )
        elif not self.model.encoder_u:
            codes = None
        z = self.run_chunked(
            lambda x, uu: self.model.encode(x, uu)[0], self.standardizer.forward(prep.data), codes
        )
        if prep.good is not None:
            z = z[:, prep.good]
        return z.mean(axis=1).astype(np.float64)

    # ---------------------------------------------------------------- state
    def attributes(self) -> dict:
        return dict(
            fit_attributes(self.standardizer, self.codec, self.source_mean, self.history),
            model_=self.model,
            # The linear family's; set (None) so that every time-domain fit has them.
            sensor_mean_=None,
            sensor_scale_=None,
            sensor_coefs_=None,
            sensor_nonlinearity_=None,
            source_shape_=None,
            data_device_=self.data_device,
            mixing_=self.mixing,
            prior_=self.prior,
            posterior_=self.posterior,
        )

    def describe(self) -> dict:
        return dict(
            family=self.family,
            domain="time",
            mixing=self.mixing,
            prior=self.prior,
            unwarped=False,
        )

    def state(self):
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
        }
        st = self.standardizer
        for name, value in (("mean_", st.mean), ("whitening_", st.whitening)):
            tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
        tensors["dewhitening_"] = torch.from_numpy(np.ascontiguousarray(st.dewhitening))
        meta = dict(
            prior_=self.prior,
            posterior_=self.posterior,
            mixing_=self.mixing,
            **codec_meta(self.codec, self.source_mean, self.history),
        )
        return tensors, meta


def from_state(tensors: dict, meta: dict, params: dict, device) -> TimeDomainFit:
    """Rebuild a :class:`TimeDomainFit` from a saved network fit (every format)."""
    tensors = dict(tensors)
    codec = codec_from_meta(meta, meta["prior_"] != "standard")
    st = Standardizer(*(tensors.pop(k).numpy() for k in ("mean_", "whitening_", "dewhitening_")))
    opts = dict(params, prior_=meta["prior_"], posterior_=meta["posterior_"])
    model = build_model(st.rank, codec, opts)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items()}, strict=True)
    n_sources = params["n_sources"]
    return TimeDomainFit(
        model=model.to(check_device(device)).eval(),
        standardizer=st,
        codec=codec,
        family="network",
        mixing="nonlinear",
        prior=meta["prior_"],
        posterior=meta["posterior_"],
        n_layers=params["n_layers"],
        kernel_size=params["kernel_size"],
        refine_steps=params.get("refine_steps", 0),
        refine_prior_weight=params.get("refine_prior_weight", 0.05),
        source_mean=np.asarray(meta.get("source_mean_", np.zeros(n_sources))),
        history=meta["history_"],
    )
