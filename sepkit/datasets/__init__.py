"""Data generators with known ground truth."""

from .audio import AudioMixture, make_audio_mixture
from .eeg import EEG_SOURCE_KINDS, make_eeg
from .nonlinear_ica import make_nonlinear_ica

__all__ = [
    "EEG_SOURCE_KINDS",
    "AudioMixture",
    "make_audio_mixture",
    "make_eeg",
    "make_nonlinear_ica",
]
