"""sepkit: identifiable VAE (iVAE) source separation for multichannel audio and EEG."""

from ._check import NotFittedError
from ._version import __version__
from .io import Recording, read_audio, read_eeg, write_sources
from .separator import IVAESeparator

__all__ = [
    "IVAESeparator",
    "NotFittedError",
    "Recording",
    "__version__",
    "read_audio",
    "read_eeg",
    "write_sources",
]
