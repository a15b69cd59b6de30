"""The rank check of fit (issue 21, part 3): data that an average reference,
interpolated channels or a PCA reduction left rank-deficient give a clear error
naming the rank, the largest n_sources, and the fix."""

from __future__ import annotations

import pickle
import warnings

import mne
import numpy as np
import pytest
from sklearn.base import clone

import sepkit._check as check
from sepkit import IVAESeparator, Recording
from sepkit._check import check_rank, data_rank
from sepkit.preprocessing import count_components

N_CHANNELS = 8


def _mixture(n_channels=N_CHANNELS, n_times=4000, seed=0):
    """Laplace sources with window-wise variances, mixed to ``n_channels`` (volts)."""
    rng = np.random.default_rng(seed)
    scales = np.repeat(rng.uniform(0.3, 2.0, (n_channels, 40)), n_times // 40, axis=1)
    return (
        1e-5 * rng.normal(size=(n_channels, n_channels)) @ (rng.laplace(size=scales.shape) * scales)
    )


def _average_referenced(n_channels=N_CHANNELS):
    names = [f"E{i}" for i in range(n_channels)]
    raw = mne.io.RawArray(
        _mixture(n_channels), mne.create_info(names, 100.0, "eeg"), verbose="error"
    )
    return raw.set_eeg_reference("average", verbose="error")


def test_average_reference_is_named_with_the_largest_n_sources():
    data = _average_referenced().get_data().astype(np.float32)  # as fit sees it
    with pytest.raises(
        ValueError,
        match=r"^n_sources=8 is above the rank of the data \(7 of 8 channels; re-referencing, "
        r"e\.g\. to the average, removes one dimension per reference.*\)\. One dimension is "
        r"missing, as after an average reference: n_sources can be at most 7\. Pass "
        r"n_sources <= 7, or drop 1 channel\(s\) .* or fit the data before the reference\.$",
    ):
        check_rank(data, N_CHANNELS)
    assert check_rank(data, 7) == 7
    assert check_rank(_mixture().astype(np.float32), N_CHANNELS) == N_CHANNELS  # full rank


def test_duplicated_and_interpolated_channels():
    X = _mixture().astype(np.float32)
    duplicated = np.vstack([X, X[2:3]])
    with pytest.raises(ValueError, match=r"n_sources=9 is above the rank of the data \(8 of 9 "):
        check_rank(duplicated, 9)
    # Two channels that are combinations of the others (as interpolated ones are).
    mixed = np.vstack([X, 0.5 * (X[0] + X[1]), X[3] - 0.2 * X[5]])
    with pytest.raises(ValueError, match=r"2 dimensions are missing, as after interpolating 2"):
        check_rank(mixed, 10)
    assert check_rank(mixed, 8) == 8


def test_rank_is_unmoved_by_offsets_and_scales_and_honours_good_samples():
    X = _mixture().astype(np.float64)
    ref = X - X.mean(axis=0)
    # EEG offsets 1000 times the signal and channels 1e6 apart in scale: centred, normalised.
    shifted = (ref + 1e-2 * np.arange(1, N_CHANNELS + 1)[:, None]).astype(np.float32)
    assert data_rank(shifted) == N_CHANNELS - 1
    full = (X + 1e-2 * np.arange(1, N_CHANNELS + 1)[:, None]).astype(np.float32)
    assert data_rank(full) == N_CHANNELS
    scaled = (ref * np.logspace(0, 6, N_CHANNELS)[:, None]).astype(np.float32)
    assert data_rank(scaled) == N_CHANNELS - 1
    # The channels are independent only where a bad span is: left out, rank 7.
    mostly = ref.copy()
    mostly[:, :500] = X[:, :500]
    good = np.ones(mostly.shape[1], bool)
    good[:500] = False
    assert data_rank(mostly.astype(np.float32)) == N_CHANNELS
    assert data_rank(mostly.astype(np.float32), good) == N_CHANNELS - 1


@pytest.mark.parametrize("ratio, lost", [(1e4, 0), (3e5, 0), (1e6, 1)])
def test_one_channel_with_a_huge_offset_costs_at_most_its_own_dimension(ratio, lost):
    # A BioSemi electrode off the head (MNE's test.bdf: EXG1 at -0.259 V with 0.9 uV of
    # signal, 2.9e5 times less): in float32 its own signal is coarsely rounded, but the
    # other channels' rank must stand (one tolerance for all channels made it 0 there).
    rng = np.random.default_rng(5)
    off = -0.26 + (0.26 / ratio) * rng.normal(size=4000)
    referenced = np.vstack([_average_referenced().get_data(), off]).astype(np.float32)
    independent = np.vstack([_mixture(), off]).astype(np.float32)
    assert data_rank(referenced) == N_CHANNELS - lost  # 7 + the electrode's own
    assert data_rank(independent) == N_CHANNELS + 1 - lost


def test_blocks_and_subsample_give_the_same_rank(monkeypatch):
    data = _average_referenced().get_data().astype(np.float32)
    monkeypatch.setattr(check, "RANK_CHUNK_SAMPLES", 300)
    assert data_rank(data) == N_CHANNELS - 1
    monkeypatch.setattr(check, "RANK_MAX_SAMPLES", 1000)  # every 4th sample
    assert data_rank(data) == N_CHANNELS - 1
    assert data_rank(_mixture().astype(np.float32)) == N_CHANNELS


def test_fit_on_average_referenced_raw_says_the_rank():
    raw = _average_referenced()
    with pytest.raises(
        ValueError, match=r"n_sources=8 is above the rank of the data \(7 of 8 channels; re-ref"
    ):
        IVAESeparator(N_CHANNELS, mixing="linear", window=0.2).fit(raw)
    sep = IVAESeparator(7, mixing="linear", window=0.2, random_state=0).fit(raw)
    assert sep.transform(raw).get_data().shape == (7, raw.n_times)


def test_more_sources_than_channels_is_left_to_the_families():
    X = np.vstack([_mixture()[:2]] * 2).astype(np.float32)  # 4 channels, rank 2
    assert check_rank(X, 5) == 4  # not computed: the family's "more than the channels" error
    with pytest.raises(ValueError, match=r"n_sources=3 is above the rank of the data \(2 of 4"):
        check_rank(X, 3)


def test_post_nonlinear_and_unwhitened_fits_are_checked_too():
    # Neither the unwarping (it fits all channels) nor whiten=False's network
    # runs the whitening that used to catch a rank deficit.
    raw = _average_referenced()
    for kwargs in (dict(mixing="post-nonlinear"), dict(mixing="nonlinear", whiten=False)):
        with pytest.raises(ValueError, match=r"n_sources=8 is above the rank of the data \(7 of 8"):
            IVAESeparator(N_CHANNELS, n_steps=2, random_state=0, **kwargs).fit(raw)


def test_row_moments_pool_blocks_exactly():
    from sepkit._check import RowMoments

    rng = np.random.default_rng(3)
    # Offsets 1000x the spread, blocks of unequal size, one empty.
    x = 1e3 + rng.standard_normal((3, 10007))
    moments = RowMoments(3)
    for a, b in [(0, 5000), (5000, 5000), (5000, 9999), (9999, 10007)]:
        moments.add(x[:, a:b])
    assert moments.count == x.shape[1]
    np.testing.assert_allclose(moments.mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(moments.var, x.var(axis=1), rtol=1e-10)


def test_standardizer_in_blocks_matches_one_pass():
    from sepkit.preprocessing import CHUNK_SAMPLES, Standardizer

    rng = np.random.default_rng(4)
    # Longer than two blocks; a rank-3 signal plus weak noise in 5 channels.
    x = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 2 * CHUNK_SAMPLES + 123))
    x = (x + 1e-3 * rng.standard_normal(x.shape) + 5.0).astype(np.float32)
    st = Standardizer.fit(x, 3)
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(st.mean, x64.mean(axis=1), rtol=1e-12)
    # The three strongest directions come out white and uncorrelated.
    y = st.forward(x)
    np.testing.assert_allclose(np.cov(y[:3], bias=True), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(y, (st.whitening @ centred).astype(np.float32), rtol=1e-4, atol=1e-4)


# --- n_sources=None or a share of variance: MNE's ICA(n_components=...) forms.


def _mne_count(raw, n_components):
    ica = mne.preprocessing.ICA(n_components=n_components, method="fastica", max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA stops after 2 iterations: only the count counts
        return ica.fit(raw, verbose="error").n_components_


@pytest.mark.parametrize("n_sources", [None, 0.5, 0.8, 0.95])
def test_share_of_variance_counts_as_mne_ica(n_sources):
    raw = mne.io.RawArray(
        _mixture(),
        mne.create_info([f"E{i}" for i in range(N_CHANNELS)], 100.0, "eeg"),
        verbose="error",
    )
    sep = IVAESeparator(n_sources, mixing="linear", window=0.2, random_state=0).fit(raw)
    assert sep.n_sources == n_sources  # the constructor's argument, as sklearn keeps it
    assert sep.n_sources_ == _mne_count(raw, n_sources)
    assert sep.transform(raw).get_data().shape == (sep.n_sources_, raw.n_times)


def test_count_components_by_hand():
    cov = np.diag([8.0, 1.0, 0.5, 0.5, 1e-14])  # shares 0.8, 0.9, 0.95, 1.0; a null dimension
    assert count_components(cov, 0.8) == 2  # MNE's rule: the shares <= 0.8, plus one
    assert count_components(cov, 0.85) == 2
    assert count_components(cov, 0.9) == 3
    assert count_components(cov, None) == 4  # the null dimension left out
    assert count_components(cov, 3) == 3
    with pytest.raises(
        ValueError,
        match=r"^n_sources=0\.5 gives 1 source: the strongest principal component alone holds "
        r"80\.0 % of the variance\. Pass a larger share \(e\.g\. 0\.9\) or the number of sources\.$",
    ):
        count_components(cov, 0.5)


def test_none_takes_the_rank_and_survives_save_clone_and_export(tmp_path):
    raw = _average_referenced()
    sep = IVAESeparator(None, mixing="linear", window=0.2, random_state=0).fit(raw)
    assert sep.n_sources_ == 7 == _mne_count(raw, None)
    assert sep.get_sources(raw).ch_names == [f"IVAE{k:03d}" for k in range(7)]
    assert sep.to_mne_ica().n_components_ == 7
    sep.exclude = [6]
    back = IVAESeparator.load(sep.save(tmp_path / "sep.safetensors"))
    assert back.n_sources is None and back.n_sources_ == 7 and back.exclude == [6]
    np.testing.assert_allclose(back.transform(raw).get_data(), sep.transform(raw).get_data())
    assert pickle.loads(pickle.dumps(sep)).n_sources_ == 7
    assert clone(sep).n_sources is None and not hasattr(clone(sep), "n_sources_")
    with pytest.raises(ValueError, match=r"index 7 .*7 sources; allowed indices are 0 to 6"):
        sep.apply(raw, exclude=[7])


def test_network_and_post_nonlinear_count_too(tmp_path):
    raw = _average_referenced()
    net = IVAESeparator(None, mixing="nonlinear", n_steps=2, n_hidden=8, random_state=0).fit(raw)
    assert net.n_sources_ == 7
    back = IVAESeparator.load(net.save(tmp_path / "net.safetensors"))
    assert back.n_sources_ == 7 and back.transform(raw).get_data().shape == (7, raw.n_times)
    pnl = IVAESeparator(0.9, mixing="post-nonlinear", highpass=1.0, random_state=0).fit(raw)
    assert 1 < pnl.n_sources_ < 7


def test_time_frequency_separation_needs_a_count():
    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((2, 16000)).astype(np.float32), 16000.0, kind="audio")
    match = (
        r"^n_sources=None counts sources from a PCA of the data, as MNE's "
        r"ICA\(n_components=\.\.\.\) does, which the time-domain models support; .* Pass "
        r"n_sources=k, the number of talkers\.$"
    )
    with pytest.raises(ValueError, match=match):
        IVAESeparator(None, domain="tf").fit(rec)
    with pytest.raises(ValueError, match=match.replace("None", r"0\.9")):
        IVAESeparator(0.9, source_model="ivae-speech-16k-v1").fit(rec)


def test_audio_rank_message_speaks_of_microphones():
    # A stereo file whose two channels are the same: no reference or interpolation
    # to blame, so the message says what an audio user can do.
    x = _mixture(n_channels=1)[0] * 1e4
    rec = Recording(np.vstack([x, x]).astype(np.float32), sample_rate=8000.0, kind="audio")
    with pytest.raises(
        ValueError,
        match=r"^n_sources=2 is above the rank of the data \(1 of 2 channels\): some channels "
        r"are copies or mixes of others \(e\.g\. a stereo file whose two channels are the same\)",
    ):
        IVAESeparator(2, n_steps=2).fit(rec)
