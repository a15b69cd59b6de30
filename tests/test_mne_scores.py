"""find_bads_muscle, score_sources, get_explained_variance_ratio, plot_scores, copy and
get_channel_types (sepkit/_mne_scores.py): MNE's ICA methods of those names, checked
against MNE's own on the separator exported with to_mne_ica (which agrees with it to
numerical precision), and against hand-computed values."""

from __future__ import annotations

import warnings

import mne
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from sepkit import IVAESeparator
from sepkit.artifacts import muscle_scores, spectral_slopes, sphere_projection
from sepkit.datasets import make_eeg


@pytest.fixture(scope="module")
def fitted():
    raw, _, _ = make_eeg(8, montage="biosemi32", duration=30.0, random_state=0)
    raw.filter(1.0, None, verbose="error")
    sep = IVAESeparator(8, random_state=0).fit(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ica = sep.to_mne_ica()
    return raw, sep, ica


def test_find_bads_muscle_agrees_with_mne(fitted):
    raw, sep, ica = fitted
    idx, scores = sep.find_bads_muscle(raw)
    mne_idx, mne_scores = ica.find_bads_muscle(raw)
    np.testing.assert_allclose(scores, mne_scores, rtol=1e-5, atol=1e-8)
    assert sorted(idx) == sorted(mne_idx) and len(idx) >= 1  # make_eeg has muscle sources
    assert list(scores[idx]) == sorted(scores[idx], reverse=True)  # highest first
    idx2, scores2 = sep.find_bads_muscle(raw, threshold=0.3, start=5.0, stop=20.0, h_freq=40.0)
    mne_idx2, mne_scores2 = ica.find_bads_muscle(
        raw, threshold=0.3, start=5.0, stop=20.0, h_freq=40.0
    )
    np.testing.assert_allclose(scores2, mne_scores2, rtol=1e-5, atol=1e-8)


def test_find_bads_muscle_without_positions_uses_the_slope(fitted):
    raw, sep, ica = fitted
    bare = raw.copy().set_montage(None)
    with pytest.warns(RuntimeWarning, match=r"No sensor positions in the recording: the muscle"):
        idx, scores = sep.find_bads_muscle(bare)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, mne_scores = ica.find_bads_muscle(bare)
    np.testing.assert_allclose(scores, mne_scores, rtol=1e-5)
    with pytest.raises(ValueError, match=r"'sphere' must be None, 'auto' or \(x, y, z\[, radius"):
        sep.find_bads_muscle(raw, sphere=(0.0, 0.0))
    with pytest.raises(ValueError, match=r"'threshold' must be > 0\.0, got -1\.0"):
        sep.find_bads_muscle(raw, threshold=-1.0)


def test_muscle_criteria_by_hand():
    # A rising spectrum (slope 0.15) against a falling one (slope -1).
    freqs = np.arange(7.0, 46.0)
    psd = np.vstack([freqs**0.15, freqs**-1.0])
    np.testing.assert_allclose(spectral_slopes(psd, freqs), [0.15, -1.0])
    np.testing.assert_allclose(muscle_scores(np.array([-0.5, 0.0])), [0.5, 1 / (1 + np.exp(-2))])
    # The vertex maps to the centre, a point on the equator to its distance from the origin.
    pos = sphere_projection(np.array([[0.0, 0.0, 0.09], [0.09, 0.0, 0.0], [0.0, -0.08, 0.0]]))
    np.testing.assert_allclose(pos, [[0.0, 0.0], [0.09, 0.0], [0.0, -0.08]], atol=1e-12)


def test_score_sources_agrees_with_mne(fitted):
    raw, sep, ica = fitted
    target = raw.ch_names[0]
    for kw in (
        dict(target=target),
        dict(target=target, l_freq=1.0, h_freq=10.0),
        dict(target=target, score_func="kendalltau", start=5.0, stop=20.0),
    ):
        mne_kw = dict(kw)
        if "start" in kw:  # MNE reads whole numbers as samples
            mne_kw.update(start=5 * 256, stop=20 * 256)
        np.testing.assert_allclose(
            sep.score_sources(raw, **kw), ica.score_sources(raw, **mne_kw), rtol=1e-5, atol=1e-7
        )
    # An array target, a callable, and a scipy.stats function of the sources alone.
    row = raw.get_data(picks=[target])[0]
    np.testing.assert_allclose(sep.score_sources(raw, row), sep.score_sources(raw, target))
    kurt = sep.score_sources(raw, score_func="kurtosis")
    from scipy.stats import kurtosis

    np.testing.assert_allclose(kurt, kurtosis(sep.get_sources(raw).get_data(), axis=1))
    np.testing.assert_allclose(
        sep.score_sources(raw, score_func=lambda s: s.std()), sep.get_sources(raw).get_data().std(1)
    )


def test_score_sources_errors(fitted):
    raw, sep, _ = fitted
    with pytest.raises(ValueError, match=r"target='nope' is not a channel of the recording"):
        sep.score_sources(raw, "nope")
    with pytest.raises(ValueError, match=r"target has 3 values but the span scored has"):
        sep.score_sources(raw, np.zeros(3))
    with pytest.raises(ValueError, match=r"both edges or none, got l_freq=1\.0 and h_freq=None"):
        sep.score_sources(raw, raw.ch_names[0], l_freq=1.0)
    with pytest.raises(ValueError, match=r"score_func='nope' is not a function of scipy\.stats"):
        sep.score_sources(raw, raw.ch_names[0], score_func="nope")
    epochs = mne.make_fixed_length_epochs(raw, 2.0, preload=True, verbose="error")
    with pytest.raises(ValueError, match=r"'start' and 'stop' score a span of a Raw; for Epochs"):
        sep.score_sources(epochs, raw.ch_names[0], start=1.0)
    with pytest.raises(ValueError, match=r"'start' and 'stop' score a span of a Raw; for Epochs"):
        sep.find_bads_muscle(epochs, stop=1.0)
    assert sep.score_sources(epochs, raw.ch_names[0]).shape == (8,)  # end to end, as fit


def test_explained_variance_ratio_agrees_with_mne(fitted):
    raw, sep, ica = fitted
    for components in (None, 2, [0, 3]):
        ours = sep.get_explained_variance_ratio(raw, components=components)
        theirs = ica.get_explained_variance_ratio(raw, components=components)
        assert ours.keys() == theirs.keys() == {"eeg"}
        np.testing.assert_allclose(ours["eeg"], theirs["eeg"], rtol=1e-6)
    evoked = mne.make_fixed_length_epochs(raw, 2.0, preload=True, verbose="error").average()
    np.testing.assert_allclose(
        sep.get_explained_variance_ratio(evoked, components=[1])["eeg"],
        ica.get_explained_variance_ratio(evoked, components=[1])["eeg"],
        rtol=1e-6,
    )
    # By hand: all sources explain what the data hold beyond the noise dimensions.
    data = raw.get_data()
    rebuilt = sep.inverse_transform(sep.get_sources(raw)).get_data()
    expected = 1 - (data - rebuilt).var(axis=0).mean() / data.var(axis=0).mean()
    np.testing.assert_allclose(sep.get_explained_variance_ratio(raw)["eeg"], expected)
    with pytest.raises(ValueError, match=r"ch_type='mag' names no fitted channel; the fitted"):
        sep.get_explained_variance_ratio(raw, ch_type="mag")
    with pytest.raises(ValueError, match=r"^'components' is empty: no source explains any"):
        sep.get_explained_variance_ratio(raw, components=[])
    with pytest.raises(ValueError, match=r"'components' holds source index 8 but the separator"):
        sep.get_explained_variance_ratio(raw, components=[8])


def test_plot_scores_copy_and_channel_types(fitted):
    raw, sep, _ = fitted
    idx, scores = sep.find_bads_muscle(raw)
    fig = sep.plot_scores(scores, exclude=idx, labels="muscle")
    bars = fig.axes[0].patches
    assert len(bars) == 8
    red = to_rgba("tab:red")
    assert [k for k, bar in enumerate(bars) if bar.get_facecolor() == red] == sorted(idx)
    assert fig.axes[0].get_title() == "muscle"
    two = sep.plot_scores(np.vstack([scores, -scores]), labels=["a", "b"], axhline=0.5, n_cols=2)
    assert [ax.get_title() for ax in two.axes] == ["a", "b"]
    assert {line.get_ydata()[0] for line in two.axes[1].lines} == {0.0, 0.5}
    with pytest.raises(ValueError, match=r"'n_cols' must be >= 1, got 0"):
        sep.plot_scores(scores, n_cols=0)
    with pytest.raises(ValueError, match=r"'scores' must have shape \(n_sources,\) or"):
        sep.plot_scores(scores[:3])
    twin = sep.copy()
    assert twin is not sep and twin.fitted_ is not sep.fitted_
    np.testing.assert_array_equal(twin.transform(raw).get_data(), sep.transform(raw).get_data())
    assert sep.get_channel_types() == ["eeg"] * 32
    with pytest.raises(ValueError, match=r"get_channel_types needs the channel types of the fit"):
        IVAESeparator(2, mixing="linear").fit(
            np.random.default_rng(0).standard_normal((3, 2000))
        ).get_channel_types()


def test_find_bads_eog_and_ecg_correlations_agree_with_mne(fitted):
    # The same band-pass as MNE's score_sources (artifacts.SCORE_FILTER), so the same
    # correlations, with bad spans cut out before filtering as MNE's "omit" does.
    raw, sep, ica = fitted
    raw = raw.copy().set_annotations(mne.Annotations([8.0], [3.0], ["BAD_move"]))
    for kw in (dict(), dict(reject_by_annotation=False), dict(l_freq=2.0, h_freq=20.0)):
        _, ours = sep.find_bads_eog(raw, ch_name="Fp1", **kw)
        _, theirs = ica.find_bads_eog(raw, ch_name="Fp1", measure="correlation", **kw)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    _, ours = sep.find_bads_eog(raw, ch_name="Fp1", start=5.0, stop=20.0)
    _, theirs = ica.find_bads_eog(raw, ch_name="Fp1", start=5 * 256, stop=20 * 256)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    _, ours = sep.find_bads_ecg(raw, ch_name="Oz", method="correlation")
    _, theirs = ica.find_bads_ecg(raw, ch_name="Oz", method="correlation", measure="correlation")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_flat_references_are_refused(fitted):
    # A zeroed lead would score 0 against every source (MNE: NaN) and flag nothing.
    raw, sep, _ = fitted
    flat = raw.copy()
    flat._data[flat.ch_names.index("Fp1")] = 0.0
    with pytest.raises(
        ValueError, match=r"find_bads_eog: the reference channel\(s\) \['Fp1'\] are"
    ):
        sep.find_bads_eog(flat, ch_name="Fp1")
    for method in ("ctps", "correlation"):
        with pytest.raises(ValueError, match=r"find_bads_ecg: .*\['Fp1'\].*Pass ch_name naming a"):
            sep.find_bads_ecg(flat, ch_name="Fp1", method=method)
    with pytest.raises(ValueError, match=r"score_sources: .*\['Fp1'\] are flat or hold NaN/Inf"):
        sep.score_sources(flat, "Fp1")
    with pytest.raises(ValueError, match=r"score_sources: .*\['target'\] are flat"):
        sep.score_sources(flat, np.full(raw.n_times, np.nan))
    # Flat only under a BAD span, which is not scored: accepted.
    spanned = raw.copy().set_annotations(mne.Annotations([2.0], [3.0], ["BAD_lead"]))
    spanned._data[spanned.ch_names.index("Fp1"), 512:1280] = 0.0
    assert sep.find_bads_eog(spanned, ch_name="Fp1")[1].shape == (8,)
