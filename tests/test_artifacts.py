"""sepkit.artifacts: artefact scores on arrays, against hand-computed values and MNE's own."""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest

from sepkit.artifacts import (
    SCORE_FILTER,
    check_references,
    correlations,
    ctps_scores,
    ecg_peaks,
    flag_sources,
    kuiper_index,
    reference_correlations,
    whole_epoch_peaks,
    zscore_outliers,
)

SAMPLE_RATE = 128.0


def _stephens_index(v: float, n: int) -> float:
    """Normalised Kuiper index of statistic ``v`` over ``n`` samples, by the series itself."""
    lam = (math.sqrt(n) + 0.155 + 0.24 / math.sqrt(n)) * v
    q = 2.0 * sum((4 * j**2 * lam**2 - 1) * math.exp(-2 * j**2 * lam**2) for j in range(1, 101))
    return 0.0 if lam < 0.4 else min(1.0, -math.log(q) / (2 * n))


# --------------------------------------------------------------------------
# Correlations and outliers
# --------------------------------------------------------------------------


def test_correlations_are_pearson():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 200))
    sources = rng.standard_normal((3, 200))
    sources[1] = -3.0 * ref[0] + 1.0
    sources[2] = 5.0  # constant: correlates with nothing
    r = correlations(ref, sources)
    assert r.shape == (2, 3)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(r[i, j], np.corrcoef(ref[i], sources[j])[0, 1], atol=1e-12)
    np.testing.assert_allclose(r[0, 1], -1.0)
    np.testing.assert_array_equal(r[:, 2], 0.0)
    # By hand: centred [-1, 0, 1] and [1, 0, -1], dot -2 over norms sqrt(2) sqrt(2).
    by_hand = correlations(
        np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0]])
    )
    np.testing.assert_allclose(by_hand, [[-1.0, 0.0]], atol=1e-15)


def test_reference_correlations_filter_after_cutting_bad_samples():
    rng = np.random.default_rng(1)
    n_times = int(20 * SAMPLE_RATE)
    sources = rng.standard_normal((4, n_times))
    ref = sources[2:3] + 0.5 * rng.standard_normal((1, n_times))
    good = np.ones(n_times, dtype=bool)
    good[500:700] = False
    sources[0, 500:700] += 1e3 * ref[0, 500:700]  # only under the bad span
    r = reference_correlations(sources, ref, SAMPLE_RATE, l_freq=1.0, h_freq=10.0, good=good)
    # By hand: cut, then band-pass (MNE's score_sources filter), then Pearson's r.
    band = mne.filter.filter_data(
        np.vstack([sources, ref])[:, good], SAMPLE_RATE, 1.0, 10.0, verbose="error", **SCORE_FILTER
    )
    expected = [np.corrcoef(b, band[-1])[0, 1] for b in band[:-1]]
    np.testing.assert_allclose(r[0], expected, atol=1e-10)
    assert r[0, 2] > 0.8 and abs(r[0, 0]) < 0.2
    # Unfiltered, every sample: plain correlations.
    np.testing.assert_allclose(
        reference_correlations(sources, ref, SAMPLE_RATE), correlations(ref, sources)
    )
    with pytest.raises(ValueError, match=r"h_freq=100 Hz must be below the Nyquist frequency"):
        reference_correlations(sources, ref, SAMPLE_RATE, h_freq=100.0)


def test_zscore_outliers_match_mne():
    from mne.preprocessing.bads import _find_outliers

    rng = np.random.default_rng(5)
    for n, planted in [(15, [3]), (30, [0, 7]), (12, []), (64, [5, 6, 40])]:
        scores = 0.1 * rng.standard_normal(n)
        scores[planted] = rng.choice([-1, 1], len(planted)) * rng.uniform(0.5, 0.9, len(planted))
        for threshold in (1.5, 2.5, 3.0):
            ours = np.flatnonzero(zscore_outliers(scores, threshold))
            np.testing.assert_array_equal(ours, _find_outliers(scores, threshold))
    assert not zscore_outliers(np.zeros(5), 1.0).any()  # no spread: nothing stands out


def test_flag_sources():
    from mne.preprocessing.bads import _find_outliers

    scores = np.array([[0.1, -0.9, 0.6, 0.2], [0.7, 0.1, 0.0, -0.1]])
    # Best absolute score over the references, highest first.
    assert flag_sources(scores, 0.5) == [1, 0, 2]
    assert flag_sources(scores, 0.8) == [1]
    assert flag_sources(scores[0], 0.5) == [1, 2]  # one reference, 1-D
    rng = np.random.default_rng(2)
    many = 0.1 * rng.standard_normal((2, 20))
    many[0, 4], many[1, 11] = 0.9, -0.8
    for threshold in (2.0, 2.5, 3.0):
        # Flagged against either reference, as MNE flags per reference.
        flagged = flag_sources(many, threshold, "zscore")
        expected = set(_find_outliers(many[0], threshold)) | set(_find_outliers(many[1], threshold))
        assert set(flagged) == expected and flagged[:2] == [4, 11]
    assert flag_sources(many, 3.0, "zscore") == [4, 11]
    with pytest.raises(ValueError, match=r"'measure' .* 'correlation' and 'zscore', but got 'z'"):
        flag_sources(scores, 0.5, "z")


# --------------------------------------------------------------------------
# Kuiper's test and CTPS
# --------------------------------------------------------------------------


def test_kuiper_index_matches_mne():
    from mne.preprocessing.ctps_ import kuiper

    rng = np.random.default_rng(7)
    for n in (5, 40, 300):
        spread = rng.uniform(size=(n, 6))
        locked = (0.3 + 0.05 * rng.standard_normal((n, 6))) % 1.0
        for x in (spread, locked, np.c_[spread, locked]):
            np.testing.assert_allclose(kuiper_index(x), kuiper(x)[1], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(kuiper_index(x.T, axis=1), kuiper(x)[1], rtol=1e-12)
    assert kuiper_index(np.linspace(0, 1, 200, endpoint=False)) == 0.0  # evenly spread
    assert kuiper_index(np.full(200, 0.25)) == 1.0  # all alike (clipped)


def test_kuiper_index_hand_computed():
    # Ten equal samples: V = 1, and the series is still below 1 (no clipping).
    np.testing.assert_allclose(kuiper_index(np.full(10, 0.4)), _stephens_index(1.0, 10), rtol=1e-12)
    assert 0.9 < _stephens_index(1.0, 10) < 0.95


def test_ctps_scores_hand_computed():
    # 64 Hz, epochs of 2 * 32 + 1 = 65 samples: five whole periods of 13 samples,
    # so the FFT-based Hilbert transform gives the cosine's phase exactly.
    t = np.arange(640)
    wave = np.cos(2 * np.pi * t / 13)[None]
    # Peaks 13 samples apart: every epoch the same, V = 1 at every latency.
    locked = 13 * np.arange(3, 13)
    scores = ctps_scores(wave, locked, 64.0, l_freq=None, h_freq=None)
    assert scores.shape == (1,)
    np.testing.assert_allclose(scores, [_stephens_index(1.0, len(locked))], rtol=1e-9)
    # Peaks 14 samples apart: the 13 epochs start one sample (1/13 cycle) later each,
    # so at every latency the phases are spread evenly, V = 1/13 and the index 0.
    spread = 39 + 14 * np.arange(13)
    assert ctps_scores(wave, spread, 64.0, l_freq=None, h_freq=None).tolist() == [0.0]
    # Scores do not depend on amplitude or sign.
    both = np.vstack([wave, -1e-6 * wave])
    np.testing.assert_allclose(ctps_scores(both, locked, 64.0, l_freq=None, h_freq=None), scores[0])


def _heartbeat_sources(seed: int = 0):
    """(sources, peaks): 3 noise sources at SAMPLE_RATE, a QRS-like spike added to source 1."""
    rng = np.random.default_rng(seed)
    n_times = int(30 * SAMPLE_RATE)
    sources = rng.standard_normal((3, n_times))
    peaks = np.arange(80, n_times - 80, 100) + rng.integers(
        -5, 6, size=len(range(80, n_times - 80, 100))
    )
    spike = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2) * np.cos(np.arange(-8, 9))
    for p in peaks:
        sources[1, p - 8 : p + 9] += 4.0 * spike
    return sources, peaks


def test_ctps_scores_match_mne():
    from mne.preprocessing.ctps_ import ctps

    sources, peaks = _heartbeat_sources()
    scores = ctps_scores(sources, peaks, SAMPLE_RATE, l_freq=8.0, h_freq=16.0)  # -0.5 to 0.5 s
    half = int(0.5 * SAMPLE_RATE)
    band = mne.filter.filter_data(sources, SAMPLE_RATE, 8.0, 16.0, verbose="error")
    epochs = np.stack([band[:, p - half : p + half + 1] for p in peaks])  # (n_ep, n_src, n_lat)
    np.testing.assert_allclose(scores, ctps(epochs)[1].max(axis=-1), rtol=1e-10)
    assert np.argmax(scores) == 1 and scores[1] > 0.3 > scores[[0, 2]].max()
    # Unfiltered (the default), a shorter window: the same as MNE on those epochs.
    half = int(round(0.25 * SAMPLE_RATE))
    raw_scores = ctps_scores(sources, peaks, SAMPLE_RATE, half_window=0.25)
    epochs = np.stack([sources[:, p - half : p + half + 1] for p in peaks])
    np.testing.assert_allclose(raw_scores, ctps(epochs)[1].max(axis=-1), rtol=1e-10)


def test_ctps_scores_bad_arguments():
    sources, peaks = _heartbeat_sources()
    with pytest.raises(ValueError, match=r"'sources' must have shape \(n_sources, n_times\)"):
        ctps_scores(sources[0], peaks, SAMPLE_RATE)
    with pytest.raises(ValueError, match="CTPS needs at least 2 peaks .* got 1"):
        ctps_scores(sources, peaks[:1], SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"'peaks' must be a 1-D array of sample indices"):
        ctps_scores(sources, peaks.astype(float), SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"'peaks' \[10\] lie less than 64 samples .* whole_epoch"):
        ctps_scores(sources, np.r_[10, peaks], SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"'peaks' \[3800\] lie less than 64 samples"):
        ctps_scores(sources, np.r_[peaks, 3800], SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"h_freq=70 Hz must be below the Nyquist frequency"):
        ctps_scores(sources, peaks, SAMPLE_RATE, h_freq=70.0)
    with pytest.raises(ValueError, match="'half_window' must be > 0.0, got 0.0"):
        ctps_scores(sources, peaks, SAMPLE_RATE, half_window=0.0)


def test_whole_epoch_peaks():
    good = np.ones(1000, dtype=bool)
    good[500:520] = False
    peaks = np.array([10, 64, 100, 460, 470, 550, 600, 935, 936])
    # 0.5 s at 128 Hz: 64 samples a side, 129 in all.
    kept = whole_epoch_peaks(peaks, good, SAMPLE_RATE)
    # 10: before the start; 460 and 550: their epoch touches 500-519 (435 <= 499 and
    # 486 <= 519); 470 too; 936: 936 + 64 = 1000 is past the last sample.
    assert kept.tolist() == [64, 100, 600, 935]
    assert whole_epoch_peaks(peaks, good, SAMPLE_RATE, half_window=0.1).tolist() == [
        64, 100, 460, 470, 550, 600, 935, 936
    ]  # fmt: skip
    assert whole_epoch_peaks(np.array([], dtype=int), good, SAMPLE_RATE).tolist() == []


def test_ecg_peaks_are_mne_heartbeats():
    from mne.preprocessing import find_ecg_events

    rng = np.random.default_rng(3)
    n_times = int(40 * SAMPLE_RATE)
    ecg = 1e-6 * rng.standard_normal(n_times)
    beats = np.arange(100, n_times - 100, 110)
    for p in beats:
        ecg[p - 2 : p + 3] += 1e-3 * np.array([0.2, 0.6, 1.0, 0.6, 0.2])
    raw = mne.io.RawArray(ecg[None], mne.create_info(["ECG"], SAMPLE_RATE, "ecg"), verbose="error")
    raw.crop(tmin=1.0)  # first_samp > 0: peaks count from the first sample of raw
    peaks = ecg_peaks(raw, "ECG")
    expected = find_ecg_events(raw, ch_name="ECG", verbose="error")[0][:, 0] - raw.first_samp
    np.testing.assert_array_equal(peaks, expected)
    assert len(peaks) > 30 and np.abs(np.diff(peaks) - 110).max() <= 2
    # Too short for MNE's detector: no peaks, no error.
    assert len(ecg_peaks(raw.copy().crop(0.0, 0.5), "ECG")) == 0


def test_check_references_refuses_flat_and_non_finite_rows():
    ref = np.random.default_rng(0).standard_normal((3, 50))
    check_references(ref, ["a", "b", "c"], "find_x", "Fix it.")  # every row varies
    ref[1] = 2.5
    ref[2, 7] = np.nan
    with pytest.raises(
        ValueError,
        match=r"find_x: the reference channel\(s\) \['b', 'c'\] are flat or hold NaN/Inf over "
        r"the samples scored, so no source can follow them \(a disconnected lead\?\)\. Fix it\.",
    ):
        check_references(ref, ["a", "b", "c"], "find_x", "Fix it.")
