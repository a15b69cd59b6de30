"""Readers, writers and the :class:`Recording` container."""

from .audio import read_audio, write_audio, write_sources
from .eeg import (
    SUPPORTED_EEG_EXTENSIONS,
    apply_montage,
    bad_annotation_mask,
    check_eeg_channels,
    filter_eeg,
    find_bad_channels,
    from_recording,
    highpass,
    is_highpassed,
    labels_from_annotations,
    labels_from_events,
    mark_bad_channels,
    notch,
    read_eeg,
    resample,
    set_reference,
    to_recording,
    warn_if_not_highpassed,
)
from .recording import Recording

__all__ = [
    "SUPPORTED_EEG_EXTENSIONS",
    "apply_montage",
    "bad_annotation_mask",
    "check_eeg_channels",
    "filter_eeg",
    "find_bad_channels",
    "from_recording",
    "highpass",
    "is_highpassed",
    "labels_from_annotations",
    "labels_from_events",
    "mark_bad_channels",
    "notch",
    "read_eeg",
    "resample",
    "set_reference",
    "to_recording",
    "warn_if_not_highpassed",
    "Recording",
    "read_audio",
    "write_audio",
    "write_sources",
]
