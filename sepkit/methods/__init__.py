"""Model families: one module each, behind the protocol of :mod:`sepkit.methods.base`.

The estimator and the file schema reach a family by its name through
:func:`load_family`, which imports the family's module on first use: the
network, flow and time-frequency families import torch (and their torch
modules), the linear family does not, so a linear EEG fit never loads torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Every family, by NAME (the module of the same name in this package).
FAMILIES = ("network", "flow", "linear", "tf", "tf_pretrained")

# The values of the estimator's ``mixing`` (besides "auto") and the time-domain
# family that fits each: the one list the estimator, the file schema and the
# command line take their choices from. (The time-frequency families are chosen
# by ``domain`` and ``source_model``.)
MIXINGS = {
    "nonlinear": "network",
    "flow": "flow",
    "linear": "linear",
    "post-nonlinear": "linear",
}
# The mixings whose fit is a matrix of the channels, as an ICA's: what
# ``to_mne_ica`` exports (``Fitted.sensor_maps``; the post-nonlinear model's
# per-sensor unwarping is no matrix). The command line refuses --save-ica for the
# others before a fit is spent.
ICA_MIXINGS = ("linear",)


def load_family(name: str) -> ModuleType:
    """The family module called ``name`` (one of :data:`FAMILIES`), imported on first use."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; the families are {list(FAMILIES)}.")
    return importlib.import_module(f"{__name__}.{name}")


def resolve_domain(
    domain: str, kind: str, rec, init=None, n_sources: int = 1
) -> tuple[str, float | None]:
    """The domain to fit in, and the mixing phase score when 'auto' measured it.

    'auto' on a Recording of kind 'audio' asks the time-frequency family to
    measure how far the channels' cross-spectra are from real
    (:func:`sepkit.methods.tf.measure_domain`); any other input gives 'time'.
    Fine-tuning (``init`` given) starts from a time-domain model, so 'auto'
    then means 'time'.
    """
    if domain == "tf" and init is not None:
        raise ValueError(
            "init= fine-tunes a time-domain model, but domain='tf' was asked for. Pass "
            "domain='time' (or 'auto') with init, or fit domain='tf' without init."
        )
    if domain != "auto":
        return domain, None
    if init is not None or kind != "recording" or rec.kind != "audio":
        return "time", None
    return load_family("tf").measure_domain(rec, n_sources)
