"""The protocol every model family implements, and the normalised input it fits.

A family is a module with

- ``NAME``: its name in ``sepkit separate``'s report and the metrics JSON (one
  of :data:`sepkit.methods.FAMILIES`);
- ``PARAMS``: the :class:`~sepkit.IVAESeparator` settings it reads (the
  estimator warns about any other setting changed from its default);
- ``check_fit_params(fit_params)``: validate the family's ``fit_params``;
  ``FIT_PARAMS`` (optional): the keys it takes there, named in the estimator's
  advice when such a setting is given as an argument the family ignores;
- ``HOOKS``: which of ``fit``'s ``device``, ``resume`` and ``callback`` it
  honours (the estimator refuses or reports the others);
- ``fit(inp, opts, **kw) -> Fitted``: fit on one :class:`FitInput`;
- ``from_state(tensors, meta, params, device) -> Fitted``: rebuild a saved fit;
- ``DECIM`` (optional, default False): True where ``fit`` honours
  ``FitInput.decim`` (the estimator refuses ``decim`` for the others).

A time-domain family chosen by a value of ``mixing`` (:data:`sepkit.methods.MIXINGS`)
also has

- ``resolve_prior(prior, posterior, is_eeg) -> (prior, posterior)``: what
  "auto" means for its prior and posterior;
- ``EXACT``: None for a family fitted by the ELBO, or, for one fitted by exact
  likelihood, the words of the estimator's error about an option that needs
  the ELBO network (keys ``priors``: the priors it takes, ``prior``,
  ``decoder_u``, ``fit``, ``does``).

The :class:`Fitted` object answers every later question (sources,
reconstruction, sensor patterns, state to save), so the estimator's
``transform``, ``inverse_transform``, ``get_components`` and ``save`` never
ask which family ran. Its optional ``sensor_maps()`` (the unmixing and mixing
matrices in sensor units) is what ``to_mne_ica`` exports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

# Settings every family reads (the estimator's own: what to separate, how u is
# cut, where to compute, how much to say).
COMMON_PARAMS = frozenset(
    {"n_sources", "domain", "mixing", "device", "random_state", "verbose", "fit_params"}
)
# The short list a user sets, as mne.preprocessing.ICA's: what to separate, the
# model choice, how u is cut and the fit filter, where to compute. Every other
# setting belongs to one family and may be given in fit_params (the constructor
# keywords of the same names stay for compatibility).
TOP_LEVEL_PARAMS = COMMON_PARAMS | {
    "prior",
    "window",
    "window_samples",
    "window_overlap",
    "highpass",
    "lowpass",
}


def no_fit_params(family: str, fit_params) -> None:
    """``check_fit_params`` of a family whose settings all have constructor arguments."""
    if fit_params:
        raise ValueError(
            f"fit_params has key(s) {sorted(fit_params)} but the {family!r} family takes no "
            "fit_params (its settings are IVAESeparator's arguments). fit_params holds the "
            "settings of the families that have their own: the network (mixing='nonlinear'), "
            "the flow (mixing='flow') and the time-frequency model (domain='tf'); drop them, "
            "or choose the family they belong to."
        )


def check_fit_param_keys(fit_params, allowed, family: str, where: str = "") -> dict:
    """``fit_params`` as a dict, or a ValueError naming the unknown keys and the allowed ones.

    ``family`` says whose settings they are (e.g. "domain='tf'"); ``where``
    is appended to the list of allowed keys (e.g. the dataclass to read).
    """
    fit_params = dict(fit_params or {})
    unknown = sorted(set(fit_params) - set(allowed))
    if unknown:
        raise ValueError(
            f"fit_params has unknown key(s) {unknown} for {family}. Allowed keys are "
            f"{list(allowed)}{where}."
        )
    return fit_params


@dataclass
class FitInput:
    """One recording, normalised for every family.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_times), float32
        As recorded (not yet filtered by ``highpass``/``lowpass``).
    sample_rate : float or None
        None for a plain array.
    ch_names : tuple of str or None
    is_eeg : bool
    u : None, ndarray of labels (n_times,) or continuous (n_u, n_times)
        An MNE Raw's ``"annotations"``/``"events"`` already turned into labels.
    good : ndarray of bool, shape (n_times,), or None
        Samples the statistics and training may use (None: all).
    highpassed : bool
        An MNE Raw that was high-pass filtered before the fit.
    decim : int
        Fit the model on every ``decim``-th sample of ``good`` (its statistics
        of the channels, e.g. the whitening, may use them all); see
        :meth:`fitted_samples`.
    u_from : {None, "annotations", "events"}
        Where an MNE Raw's u was read from (None: given as labels, or the
        default windows).
    """

    data: np.ndarray
    sample_rate: float | None
    ch_names: tuple | None
    is_eeg: bool
    u: object = None
    good: np.ndarray | None = None
    highpassed: bool = False
    decim: int = 1
    u_from: str | None = None

    def fitted_samples(self) -> np.ndarray | None:
        """The samples the model is fitted on: ``good`` thinned to every ``decim``-th.

        Returns
        -------
        ndarray of bool, shape (n_times,), or None (every sample)
        """
        if self.decim == 1:
            return self.good
        keep = np.zeros(self.n_times, dtype=bool)
        keep[:: self.decim] = True
        return keep if self.good is None else keep & self.good

    @property
    def n_fitted(self) -> int:
        """How many samples the model is fitted on."""
        keep = self.fitted_samples()
        return self.n_times if keep is None else int(keep.sum())

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_times(self) -> int:
        return int(self.data.shape[1])


class Fitted(ABC):
    """A fitted separation: everything inference, plots and ``save`` need.

    Attributes every implementation sets: ``family`` (its module's ``NAME``),
    ``n_sources``, ``n_channels``, ``history`` (list of dict). A family that fits
    on a part of the recording (the tf families' ``max_fit_seconds``) also sets
    ``n_fitted_samples``, the samples its fit saw (the estimator's ``n_samples_``);
    one that separates at a rate of its own (a source model's) sets ``work_rate``,
    the rate streaming reads at. ``needs_u``: its sources and reconstruction
    read u (streaming and Epochs, which have none, then refuse it).
    ``per_sample``: they map each time sample on its own (a matrix, a
    per-channel warp, an invertible map of the channels), so the sample rate
    does not enter and data at another rate (decimated Epochs, a resampled
    Raw) are separated as they are, as MNE's ICA separates them.
    """

    family: str
    n_sources: int
    n_channels: int
    history: list
    n_fitted_samples: int | None = None
    work_rate: float | None = None
    needs_u: bool = False
    per_sample: bool = False

    @abstractmethod
    def sources(self, data: np.ndarray, u=None) -> np.ndarray:
        """Sources of ``data`` (n_channels, n_times) -> (n_sources, n_times), float32."""

    @abstractmethod
    def reconstruct(self, sources: np.ndarray, u=None) -> np.ndarray:
        """Sensors from sources (n_sources, n_times) -> (n_channels, n_times), float32."""

    @abstractmethod
    def components(self) -> np.ndarray:
        """Sensor patterns, shape (n_channels, n_sources), in sensor units."""

    @abstractmethod
    def state(self) -> tuple[dict, dict]:
        """(arrays, meta): what :mod:`sepkit.serialization` writes for this fit.

        The arrays are torch tensors or numpy arrays (written as tensors).
        """

    @abstractmethod
    def attributes(self) -> dict:
        """The estimator's fitted attributes (``model_``, ``history_``, ...) this fit sets."""

    def set_params(self, params: dict) -> None:  # noqa: B027 (optional hook)
        """Take the estimator's inference-time settings (``refine_steps``, ...), if any."""

    @property
    def readout_params(self) -> frozenset:
        """The inference-time settings :meth:`set_params` honours (none by default)."""
        return frozenset()

    @abstractmethod
    def describe(self) -> dict:
        """Which model ran: ``family``, ``domain``, ``mixing``, ``prior``, ``unwarped``."""
