"""sepkit: identifiable VAE (iVAE) source separation for multichannel audio and EEG."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .io import Recording, read_audio, read_eeg, write_sources
    from .separator import IVAESeparator, NotFittedError

__all__ = [
    "IVAESeparator",
    "NotFittedError",
    "Recording",
    "__version__",
    "read_audio",
    "read_eeg",
    "write_sources",
]

# The public names, imported on first use (PEP 562): `import sepkit` and the
# command line's `sepkit --help` do not load torch, MNE and scikit-learn.
_LAZY = {
    "IVAESeparator": ".separator",
    "NotFittedError": ".separator",
    "Recording": ".io",
    "read_audio": ".io",
    "read_eeg": ".io",
    "write_sources": ".io",
}


def __getattr__(name: str):
    if name.startswith("__"):  # probes such as __wrapped__, __file__ of a package
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    try:  # sepkit.io, sepkit.metrics, ...: a submodule not imported yet
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
