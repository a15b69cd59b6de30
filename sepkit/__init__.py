"""sepkit: identifiable VAE (iVAE) source separation for multichannel audio and EEG."""

from ._check import NotFittedError
from ._version import __version__
from .io import Recording

__all__ = ["NotFittedError", "Recording", "__version__"]
