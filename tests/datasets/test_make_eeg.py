"""Semi-synthetic EEG generator: shapes, ground truth, noise level, saturation."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from sepkit.datasets.eeg import EEG_SOURCE_KINDS, _forward, make_eeg

CLASSIC_1020 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
                "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2"]  # fmt: skip
DURATION = 10.0
SAMPLE_RATE = 256.0


def _make(n_sources=4, **kwargs):
    kwargs.setdefault("duration", DURATION)
    kwargs.setdefault("random_state", 0)
    return make_eeg(n_sources, **kwargs)


def test_shapes_channels_and_montage():
    raw, S, A = _make(5)
    n_times = int(DURATION * SAMPLE_RATE)
    assert isinstance(raw, mne.io.RawArray)
    assert raw.ch_names == CLASSIC_1020
    assert set(raw.get_channel_types()) == {"eeg"}
    assert raw.info["sfreq"] == SAMPLE_RATE
    assert raw.get_data().shape == (19, n_times)
    assert S.shape == (5, n_times) and A.shape == (19, 5)
    pos = raw.get_montage().get_positions()["ch_pos"]
    assert all(np.isfinite(pos[name]).all() for name in CLASSIC_1020)
    assert "'alpha', 'blink', 'nonstationary', 'muscle', 'saccade'" in raw.info["description"]


@pytest.mark.parametrize(("montage", "n_channels"), [("biosemi32", 32), ("biosemi64", 64)])
def test_other_montages(montage, n_channels):
    raw, S, A = _make(6, montage=montage, duration=2.0)
    assert len(raw.ch_names) == n_channels and A.shape == (n_channels, 6)


def test_dig_montage_and_cache():
    full = mne.channels.make_standard_montage("biosemi32").get_positions()
    names = ["Fp1", "Fz", "Cz", "Pz", "Oz", "T7", "T8", "O1"]
    montage = mne.channels.make_dig_montage(
        ch_pos={n: full["ch_pos"][n] for n in names},
        nasion=full["nasion"], lpa=full["lpa"], rpa=full["rpa"], coord_frame="head",
    )  # fmt: skip
    raw, _, A = _make(3, montage=montage, duration=2.0)
    assert raw.ch_names == names and A.shape == (8, 3)
    assert _forward(montage) is _forward(montage)  # built once per process


def test_reproducible_with_random_state():
    raw1, S1, A1 = _make(4, random_state=3)
    raw2, S2, A2 = _make(4, random_state=3)
    np.testing.assert_array_equal(S1, S2)
    np.testing.assert_array_equal(A1, A2)
    np.testing.assert_array_equal(raw1.get_data(), raw2.get_data())
    _, S3, A3 = _make(4, random_state=4)
    assert not np.allclose(S1, S3) and not np.allclose(A1, A3)


def test_linear_data_is_mixture_plus_noise_at_snr():
    snr_db = 10.0
    raw, S, A = _make(4, snr_db=snr_db)
    clean = A @ S
    noise = raw.get_data() - clean
    measured = 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.2)
    # The residual is sensor noise: same level on every channel, unrelated to the sources.
    per_channel = noise.std(axis=1)
    assert per_channel.max() < 1.1 * per_channel.min()
    corr = np.corrcoef(np.vstack([noise, S]))[: len(noise), len(noise) :]
    assert np.abs(corr).max() < 0.1
    noiseless, S0, A0 = _make(4, snr_db=None)
    np.testing.assert_allclose(noiseless.get_data(), A0 @ S0, rtol=1e-12, atol=1e-18)


def test_realistic_scale_and_reference():
    raw, S, A = _make(6)
    rms = np.sqrt(np.mean(raw.get_data() ** 2))
    assert 1e-6 < rms < 1e-4  # scalp EEG: microvolts to tens of microvolts
    np.testing.assert_allclose(A.sum(axis=0), 0.0, atol=1e-9 * np.abs(A).max())
    _, _, A_inf = _make(6, reference=None)
    assert np.abs(A_inf.sum(axis=0)).min() > 1e-3 * np.abs(A_inf).max()
    # Same seed, same dipoles: the average reference is the only difference.
    np.testing.assert_allclose(A, A_inf - A_inf.mean(axis=0), rtol=1e-10)


def test_saturation_bounds_data():
    level = 20e-6
    raw, S, A = _make(4, nonlinearity="saturation", saturation_level=level, snr_db=None)
    X = raw.get_data()
    assert np.abs(X).max() < level
    np.testing.assert_allclose(X, level * np.tanh(A @ S / level), rtol=1e-12, atol=1e-18)
    assert np.abs(A @ S).max() > 2 * level  # the clip was actually reached
    default, S_d, A_d = _make(4, nonlinearity="saturation", snr_db=None)
    default_level = 3.0 * np.sqrt(np.mean((A_d @ S_d) ** 2))
    assert np.abs(default.get_data()).max() < default_level


def test_clip_is_a_hard_rail():
    level = 20e-6
    raw, S, A = _make(4, nonlinearity="clip", saturation_level=level, snr_db=None)
    X = raw.get_data()
    np.testing.assert_allclose(X, np.clip(A @ S, -level, level), rtol=1e-12, atol=1e-18)
    assert (np.abs(X) == level).mean() > 0.01  # flat tops at the rail
    lin, _, _ = _make(4, snr_db=None)
    default, _, _ = _make(4, nonlinearity="clip", snr_db=None)
    rail = 3.0 * np.sqrt(np.mean(lin.get_data() ** 2))
    np.testing.assert_allclose(np.abs(default.get_data()).max(), rail, rtol=1e-12)
    # saturation_rms: the level as a multiple of that RMS, in one simulation.
    rms = np.sqrt(np.mean(lin.get_data() ** 2))
    relative, _, _ = _make(4, nonlinearity="clip", saturation_rms=1.5, snr_db=None)
    absolute, _, _ = _make(4, nonlinearity="clip", saturation_level=1.5 * rms, snr_db=None)
    np.testing.assert_allclose(relative.get_data(), absolute.get_data(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.abs(relative.get_data()).max(), 1.5 * rms, rtol=1e-12)


def _peak_freq(x, sample_rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(x))
    return np.fft.rfftfreq(x.size, 1 / sample_rate)[np.argmax(spectrum[1:]) + 1]


def test_source_kinds_have_their_signatures():
    kinds = list(EEG_SOURCE_KINDS)
    _, S, _ = _make(len(kinds), source_kinds=kinds, line_freq=60.0, duration=20.0)
    s = dict(zip(kinds, S, strict=True))
    assert 8.5 <= _peak_freq(s["alpha"]) <= 11.5
    assert _peak_freq(s["line_noise"]) == pytest.approx(60.0, abs=0.1)
    assert 20.0 <= _peak_freq(s["muscle"]) <= 120.0
    assert (s["blink"] >= 0).all() and (s["blink"] == 0).mean() > 0.5  # sparse bumps
    r_peaks = np.flatnonzero(s["ecg"] > 0.5 * s["ecg"].max())
    n_beats = 1 + np.sum(np.diff(r_peaks) > 0.1 * SAMPLE_RATE)
    assert 55 * 20 / 60 - 2 <= n_beats <= 85 * 20 / 60 + 2
    # Non-stationary: the variance changes a lot between 2 s windows.
    windows = s["nonstationary"].reshape(10, -1).var(axis=1)
    assert windows.max() > 3 * windows.min()


def test_errors():
    with pytest.raises(ValueError, match="'source_kinds' has 1 entries but n_sources=2"):
        _make(2, source_kinds=["alpha"])
    with pytest.raises(ValueError, match="Invalid value for the 'source_kinds' parameter"):
        _make(1, source_kinds=["theta"])
    with pytest.raises(ValueError, match=r"'n_sources' \(20\) must not exceed the montage's 19"):
        _make(20)
    with pytest.raises(
        ValueError, match=r"'line_freq' \(60 Hz\) must be below 0.45 \* sample_rate"
    ):
        _make(1, source_kinds=["line_noise"], line_freq=60.0, sample_rate=128.0)
    with pytest.raises(
        ValueError, match="'saturation_level' only applies with nonlinearity='saturation' or 'clip'"
    ):
        _make(2, saturation_level=1e-5)
    with pytest.raises(
        ValueError, match="'saturation_rms' only applies with nonlinearity='saturation' or 'clip'"
    ):
        _make(2, saturation_rms=1.5)
    with pytest.raises(ValueError, match=r"saturation_level=1e-05 and saturation_rms=1.5 both"):
        _make(2, nonlinearity="clip", saturation_level=1e-5, saturation_rms=1.5)
    with pytest.raises(ValueError, match="'saturation_rms' must be > 0"):
        _make(2, nonlinearity="clip", saturation_rms=0.0)
    with pytest.raises(ValueError, match="Invalid value for the 'montage' parameter"):
        _make(2, montage="biosemi65")
    with pytest.raises(ValueError, match="Invalid value for the 'nonlinearity' parameter"):
        _make(2, nonlinearity="tanh")
    with pytest.raises(ValueError, match="'sample_rate' must be >= 64"):
        _make(2, sample_rate=32.0)


def test_short_recordings_still_blink():
    # Audit: the first blink waits 3.5-7 s on average, so at 2 s the blink source was
    # all zeros for 27 of 40 seeds (a silent "true" source).
    from sepkit.datasets import make_eeg

    for seed in range(20):
        _, S, _ = make_eeg(2, duration=2.0, random_state=seed)
        assert S[1].any(), seed


def test_line_noise_of_the_default_kinds_says_where_it_came_from():
    # Audit: make_eeg(9, sample_rate=100) blamed source_kinds, which the user never passed.
    from sepkit.datasets import make_eeg

    with pytest.raises(ValueError, match=r"pass source_kinds without 'line_noise' \(the "
                       r"default kinds hold one from 9 sources on\), or fewer than 9"):  # fmt: skip
        make_eeg(9, sample_rate=100.0, duration=2.0)
    with pytest.raises(ValueError, match=r"or drop 'line_noise' from source_kinds\."):
        make_eeg(1, sample_rate=100.0, duration=2.0, source_kinds=["line_noise"])
