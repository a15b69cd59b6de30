"""sepkit.io.raw.ptp_reject_mask and check_ptp_thresholds: ICA.fit's reject / flat / tstep."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from mne.utils import _reject_data_segments

from sepkit.io.raw import check_ptp_thresholds, ptp_reject_mask

RATE = 100.0


def _data(seed=0):
    """3 EEG channels and 1 EOG channel, 10 s; an EEG jump in [2, 4) s, a flat EOG [6, 8) s."""
    rng = np.random.default_rng(seed)
    data = 10e-6 * rng.standard_normal((4, 1000))
    data[1, 250:260] += 500e-6
    data[3, 600:800] = 0.0
    return data, ["eeg", "eeg", "eeg", "eog"]


def test_ptp_mask_by_hand():
    data, types = _data()
    keep = ptp_reject_mask(data, types, RATE, reject=dict(eeg=200e-6), tstep=2.0)
    expected = np.ones(1000, dtype=bool)
    expected[200:400] = False  # the stretch [2, 4) s holds the jump
    np.testing.assert_array_equal(keep, expected)
    keep = ptp_reject_mask(data, types, RATE, reject=dict(eeg=200e-6), flat=dict(eog=1e-6))
    expected[600:800] = False
    np.testing.assert_array_equal(keep, expected)
    # tstep 1.5 s: the jump lies in [150, 300); only [600, 750) is flat throughout.
    keep = ptp_reject_mask(data, types, RATE, reject=dict(eeg=200e-6), flat=dict(eog=1e-6),
                           tstep=1.5)  # fmt: skip
    expected = np.ones(1000, dtype=bool)
    expected[150:300] = expected[600:750] = False
    np.testing.assert_array_equal(keep, expected)


def test_ptp_mask_keeps_what_mne_keeps():
    """The samples kept are those MNE's own rejection keeps (ICA.fit's _reject_data_segments)."""
    data, types = _data(1)
    info = mne.create_info(["a", "b", "c", "EOG"], RATE, types)
    reject, flat = dict(eeg=200e-6), dict(eog=1e-6)
    theirs, _ = _reject_data_segments(data, reject, flat, None, info, 2.0)
    keep = ptp_reject_mask(data, types, RATE, reject=reject, flat=flat, tstep=2.0)
    np.testing.assert_array_equal(data[:, keep], theirs)


def test_ptp_mask_judges_good_samples_only():
    data, types = _data()
    good = np.ones(1000, dtype=bool)
    good[250:260] = False  # the jump lies under a BAD annotation
    keep = ptp_reject_mask(data, types, RATE, reject=dict(eeg=200e-6), good=good)
    np.testing.assert_array_equal(keep, good)  # nothing more is rejected
    # A last, shorter stretch is judged too: 1050 samples, a jump in the last 50.
    longer = np.hstack([data, 10e-6 * np.ones((4, 50))])
    longer[0, -10:] = 900e-6
    keep = ptp_reject_mask(longer, types, RATE, reject=dict(eeg=200e-6))
    assert not keep[1000:].any() and keep[400:1000].all()


@pytest.mark.parametrize(
    ("reject", "flat", "tstep", "error", "match"),
    [
        (dict(eog=1e-4), None, 2.0, ValueError,
         r"reject has the key 'eog', but no fitted channel is of that type \(the fitted "
         r"channels are of type\(s\) \['eeg'\]\). Drop the key, or pick those channels"),
        ([150e-6], None, 2.0, TypeError,
         r"reject must be a dict of channel type -> peak-to-peak threshold \(e.g. "
         r"reject=dict\(eeg=150e-6\)\) or None, got list"),
        (None, dict(eeg="1uV"), 2.0, TypeError, r"flat\['eeg'\] must be a number .*got '1uV'"),
        (dict(eeg=-1.0), None, 2.0, ValueError,
         r"reject\['eeg'\] must be a positive, finite peak-to-peak amplitude .*got -1.0"),
        (dict(eeg=1e-4), None, 0.0, ValueError, r"tstep must be a positive number of seconds"),
        (dict(eeg=1e-4), None, "2", TypeError, r"tstep must be a number of seconds, got '2'"),
    ],
)  # fmt: skip
def test_threshold_errors(reject, flat, tstep, error, match):
    with pytest.raises(error, match=match):
        check_ptp_thresholds(reject, flat, tstep, ["eeg", "eeg"])
