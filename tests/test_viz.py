"""Tests for sepkit.viz: every figure renders to a non-trivial PNG."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sepkit import IVAESeparator, Recording
from sepkit.viz import (
    plot_correlation_matrix,
    plot_overlay,
    plot_source_properties,
    plot_source_traces,
    plot_sources,
    plot_topographies,
    plot_topomaps,
    plot_training_curve,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # an empty canvas is ~2-4 kB


def _pixels_vary(path):
    """The saved image is not one flat colour."""
    from matplotlib.image import imread

    return imread(path)[..., :3].std() > 0.02


@pytest.fixture(scope="module")
def eeg_fit():
    from sepkit.datasets import make_eeg

    raw, S, _ = make_eeg(3, duration=4.0, random_state=0)
    sep = IVAESeparator(3, n_hidden=8, n_layers=1, n_steps=100, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sep.fit(raw)
    return sep, raw, S


def test_all_figures_render(tmp_path, eeg_fit):
    sep, raw, S = eeg_fit
    Z = sep.transform(raw).get_data()
    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((2, 8000)).astype(np.float32), 8000.0, ("a", "b"))
    figs = {
        "sources": plot_sources(rec),
        "sources_array": plot_sources(Z, 256.0, names=["x", "y", "z"], max_seconds=2.0),
        "training": plot_training_curve(sep, title="fit"),
        "correlation": plot_correlation_matrix(S, Z),
        "topographies": plot_topographies(sep),
    }
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / f"{name}.png")
        _check_png(path)
        assert _pixels_vary(path), name
    # One row per source, waveform and spectrogram side by side.
    assert len(figs["sources_array"].axes) == 6
    # The correlation matrix shows the matched |r| and the MCC in the title.
    from sepkit.metrics import mcc

    title = figs["correlation"].axes[0].get_title()
    assert title == f"|pearson r|, MCC = {mcc(S, Z):.3f}"
    # The linear EEG default's curve is its objective per L-BFGS iteration (a
    # single dot per fit before; issue 22).
    line = figs["training"].axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), sep.history_[0]["trace_iter"])
    np.testing.assert_allclose(line.get_ydata(), sep.history_[0]["trace"])


def test_correlation_matrix_diagonal_after_matching():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((3, 500))
    fig = plot_correlation_matrix(S, -2.0 * S[[2, 0, 1]])
    C = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(C), 1.0)
    assert fig.axes[0].get_title() == "|pearson r|, MCC = 1.000"


def test_errors_and_no_overwrite(tmp_path, eeg_fit):
    with pytest.raises(ValueError, match="plot_sources needs sample_rate= for an array"):
        plot_sources(np.zeros((2, 100)))
    with pytest.raises(ValueError, match=r"'sources' must have shape \(n_sources, n_times\)"):
        plot_sources(np.zeros((2, 3, 4)), 100.0)
    with pytest.raises(ValueError, match="'names' has 1 entries for 2 sources"):
        plot_sources(np.ones((2, 100)), 100.0, names=["a"])
    with pytest.raises(ValueError, match="holds no entries with a finite 'loss'"):
        plot_training_curve([])
    with pytest.raises(TypeError, match="'history' must be a list of dicts"):
        plot_training_curve(3)
    fig = plot_training_curve(eeg_fit[0])
    path = save_figure(fig, tmp_path / "curve.png")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="curve.png exists. Pass overwrite=True"):
        save_figure(fig, path)
    assert path.read_bytes() == before
    save_figure(fig, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]  # no temp left


# --------------------------------------------------------------------------
# The figures of the separator's MNE methods, on arrays
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eeg_info():
    """The info of make_eeg's EEG channels, with their standard 10-20 positions."""
    import mne

    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(3, duration=2.0, random_state=0)
    return mne.pick_info(raw.info, mne.pick_types(raw.info, eeg=True))


def test_mne_method_figures_render(tmp_path, eeg_info):
    rng = np.random.default_rng(2)
    n_channels = len(eeg_info["ch_names"])
    S = rng.standard_normal((3, 1024))
    before = 1e-5 * rng.standard_normal((2, 512))
    figs = {
        "topomaps": plot_topomaps(rng.standard_normal((n_channels, 3)), eeg_info),
        "properties": plot_source_properties(
            S[0], rng.standard_normal(n_channels), eeg_info, 256.0, window_samples=128
        ),
        "traces": plot_source_traces(S, 256.0, bad_spans=[(1.0, 2.0)]),
        "overlay": plot_overlay(before, 0.5 * before, 256.0, names=["Fp1", "Fp2"], eeg=[1, 1]),
    }
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / f"{name}.png")
        _check_png(path)
        assert _pixels_vary(path), name


def test_plot_topomaps(eeg_info):
    import mne

    rng = np.random.default_rng(3)
    n_channels = len(eeg_info["ch_names"])
    patterns = rng.standard_normal((n_channels, 7))
    fig = plot_topomaps(patterns, eeg_info, n_cols=3)
    assert [ax.get_title() for ax in fig.axes[:7]] == [f"IVAE{k:03d}" for k in range(7)]
    assert fig.axes[3].get_subplotspec().rowspan.start == 1  # 3 to a row
    fig = plot_topomaps(patterns[:, :2], eeg_info, names=["a", "b"], n_cols=5)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]
    assert tuple(fig.get_size_inches()) == (4.0, 2.0)  # n_cols shrinks to the maps
    with pytest.raises(ValueError, match=r"'patterns' must have shape \(n_channels, n_maps\) with"):
        plot_topomaps(patterns[:-1], eeg_info)
    with pytest.raises(ValueError, match="'names' has 1 entries for 7 maps"):
        plot_topomaps(patterns, eeg_info, names=["a"])
    with pytest.raises(ValueError, match="'n_cols' must be >= 1, got 0"):
        plot_topomaps(patterns, eeg_info, n_cols=0)
    # Positions on one line: MNE's triangulation fails; the error names the caller.
    line = {n: np.array([0.01 * i - 0.03, 0.0, 0.09]) for i, n in enumerate(eeg_info["ch_names"])}
    on_line = eeg_info.copy().set_montage(mne.channels.make_dig_montage(line, coord_frame="head"))
    with pytest.raises(ValueError, match=r"^my_plot cannot interpolate .* lie on one line"):
        plot_topomaps(patterns, on_line, caller="my_plot")


def test_plot_source_properties(eeg_info):
    from scipy.signal import welch

    rng = np.random.default_rng(4)
    source = rng.standard_normal(1000) * np.repeat([1.0, 3.0, 0.5, 2.0], 250)
    pattern = rng.standard_normal(len(eeg_info["ch_names"]))
    fig = plot_source_properties(
        source, pattern, eeg_info, 100.0, window_samples=250, fmax=20.0, title="IVAE001: x"
    )
    top, spec, var = fig.axes[:3]
    freqs, power = welch(source, fs=100.0, nperseg=200)  # 2 s segments
    (line,) = spec.lines
    np.testing.assert_allclose(line.get_xdata(), freqs[freqs <= 20.0])
    np.testing.assert_allclose(line.get_ydata(), power[freqs <= 20.0])
    (line,) = var.lines
    np.testing.assert_allclose(line.get_xdata(), [1.25, 3.75, 6.25, 8.75])  # window centres
    np.testing.assert_allclose(line.get_ydata(), source.reshape(4, 250).var(axis=1))
    assert var.get_ylabel() == "Variance per 2.5 s window"
    assert fig.get_suptitle() == "IVAE001: x"
    # A short source: the Welch segment shrinks to the source; the Nyquist by default.
    fig = plot_source_properties(source[:150], pattern, eeg_info, 100.0, window_samples=50)
    assert fig.axes[1].lines[0].get_xdata()[-1] == 50.0
    with pytest.raises(ValueError, match=r"'source' must have shape \(n_times,\), got \(1, 1000\)"):
        plot_source_properties(source[None], pattern, eeg_info, 100.0, window_samples=250)
    with pytest.raises(ValueError, match="'window_samples' must be >= 1, got 0"):
        plot_source_properties(source, pattern, eeg_info, 100.0, window_samples=0)


def test_plot_source_traces():
    rng = np.random.default_rng(5)
    S = rng.standard_normal((3, 500)) * np.array([[1.0], [10.0], [0.1]])
    S[2] = 0.0  # constant: shown unscaled
    fig = plot_source_traces(S, 100.0, start=2.0, bad_spans=[(3.0, 3.5), (6.0, 7.0)])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["IVAE000", "IVAE001", "IVAE002"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), S[1] / S[1].std() - 6.0)
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), -12.0)
    assert ax.lines[0].get_xdata()[0] == pytest.approx(2.0)
    assert ax.get_xlim() == pytest.approx((2.0, 2.0 + 499 / 100.0))
    assert len(ax.patches) == 2  # the bad spans
    named = plot_source_traces(S[:2], 100.0, names=["x", "y"])
    assert [t.get_text() for t in named.axes[0].get_yticklabels()] == ["x", "y"]
    with pytest.raises(ValueError, match="'names' has 1 entries for 3 sources"):
        plot_source_traces(S, 100.0, names=["x"])
    with pytest.raises(ValueError, match=r"'sources' must have shape \(n_sources, n_times\)"):
        plot_source_traces(S[0], 100.0)
    with pytest.raises(ValueError, match="'sample_rate' must be > 0.0, got 0.0"):
        plot_source_traces(S, 0.0)


def test_plot_overlay_arrays():
    rng = np.random.default_rng(6)
    before = 1e-5 * rng.standard_normal((2, 300))
    after = 0.5 * before
    fig = plot_overlay(
        before, after, 100.0, names=["Fz", "EOG"], start=1.0, eeg=[True, False], title="Removed"
    )
    assert [ax.get_ylabel() for ax in fig.axes] == ["Fz\n(uV)", "EOG"]
    red, black = fig.axes[0].lines
    np.testing.assert_allclose(red.get_ydata(), before[0] * 1e6)
    np.testing.assert_allclose(black.get_ydata(), after[0] * 1e6)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), before[1])  # not EEG: as is
    assert red.get_xdata()[0] == pytest.approx(1.0)
    assert fig.axes[0].get_title() == "Removed"
    assert plot_overlay(before, after, 100.0, names=["a", "b"]).axes[0].get_ylabel() == "a"
    with pytest.raises(ValueError, match=r"'before' and 'after' must have the same shape"):
        plot_overlay(before, after[:, :10], 100.0, names=["a", "b"])
    with pytest.raises(ValueError, match="'names' has 1 entries for 2 channels"):
        plot_overlay(before, after, 100.0, names=["a"])


def test_linear_fit_curve_is_the_objective_per_lbfgs_iteration():
    from sepkit import IVAESeparator
    from sepkit.io import Recording
    from sepkit.viz import plot_training_curve

    rng = np.random.default_rng(0)
    scales = np.repeat(rng.uniform(0.2, 2, (3, 30)), 200, axis=1)
    x = rng.normal(size=(4, 3)) @ (rng.laplace(size=(3, 6000)) * scales)
    rec = Recording((1e-5 * x).astype(np.float32), 100.0, ("A", "B", "C", "D"), "eeg")
    # The Gaussian prior: one L-BFGS fit (the EEG default's trace is tested below).
    sep = IVAESeparator(3, prior="gauss", random_state=0).fit(rec)
    entry = sep.history_[0]
    trace = np.array(entry["trace"])
    # The start, then one value per iteration that evaluated the objective (the last
    # may stop on its direction test before evaluating), ending at the fit's likelihood.
    assert entry["n_iter"] <= trace.size <= entry["n_iter"] + 1 and trace.size > 3
    assert trace[-1] == pytest.approx(entry["loss"]) and trace[0] > trace[-1]
    ax = plot_training_curve(sep).axes[0]
    assert ax.get_xlabel() == "L-BFGS iteration"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), trace)
    # The extended prior (the EEG default): the full model's objective after its
    # Gaussian start, numbered from the start's iterations on.
    ext = IVAESeparator(3, random_state=0).fit(rec)
    entry = ext.history_[0]
    assert ext.prior_ == "extended"
    trace, iters = np.array(entry["trace"]), np.array(entry["trace_iter"])
    assert trace.size == iters.size > 1 and (np.diff(iters) == 1).all()
    assert 0 < iters[0] and iters[-1] == entry["n_iter"]
    assert trace[-1] == pytest.approx(entry["loss"]) and trace[0] > trace[-1]
    ax = plot_training_curve(ext).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), iters)


def test_saved_figures_keep_their_axis_labels(tmp_path):
    import matplotlib.image

    from sepkit.viz import plot_correlation_matrix, save_figure

    rng = np.random.default_rng(0)
    S = rng.standard_normal((2, 500))
    fig = plot_correlation_matrix(S, S + 0.1 * rng.standard_normal((2, 500)))
    path = save_figure(fig, tmp_path / "c.png", dpi=100)
    height, width = matplotlib.image.imread(path).shape[:2]
    fig.canvas.draw()
    label = fig.axes[0].xaxis.label.get_window_extent()
    # The 2x2 matrix's figure is narrower than its x label; the image must hold it.
    assert label.width > fig.get_figwidth() * fig.dpi * 0.9
    assert width >= label.width * 100 / fig.dpi


# --------------------------------------------------------------------------
# Excluded components, drawn as MNE's ICA plots draw ica.exclude (issue 21)
# --------------------------------------------------------------------------


def _grey(artist) -> bool:
    from matplotlib.colors import same_color

    return same_color(artist.get_color(), "gray")


def test_plot_sources_marks_the_excluded_rows():
    Z = np.random.default_rng(7).standard_normal((3, 1024))
    fig = plot_sources(Z, 256.0, names=["a", "b", "c"], exclude=[1])
    waveforms = fig.axes[0::2]  # (waveform, spectrogram) per row
    assert [ax.get_ylabel() for ax in waveforms] == ["a", "b\n(excluded)", "c"]
    assert [_grey(ax.lines[0]) for ax in waveforms] == [False, True, False]
    assert [_grey(ax.yaxis.label) for ax in waveforms] == [False, True, False]
    assert fig.axes[3].images[0].get_cmap().name == "gray_r"  # its spectrogram
    assert fig.axes[1].images[0].get_cmap().name == "magma"
    plain = plot_sources(Z, 256.0)
    assert not any(_grey(ax.lines[0]) for ax in plain.axes[0::2])
    with pytest.raises(ValueError, match=r"'exclude' holds index 3, but there are 3 sources"):
        plot_sources(Z, 256.0, exclude=[3])
    with pytest.raises(TypeError, match="'exclude' must be a sequence of indices of the sources"):
        plot_sources(Z, 256.0, exclude="1")
    with pytest.raises(TypeError, match=r"'exclude' must hold integer indices, got 1\.0"):
        plot_sources(Z, 256.0, exclude=[1.0])


def test_plot_source_traces_and_topomaps_mark_the_excluded(eeg_info):
    rng = np.random.default_rng(8)
    fig = plot_source_traces(rng.standard_normal((3, 300)), 100.0, exclude=[0, 2])
    (ax,) = fig.axes
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == ["IVAE000 (excluded)", "IVAE001", "IVAE002 (excluded)"]
    assert [_grey(t) for t in labels] == [True, False, True]
    assert [_grey(line) for line in ax.lines] == [True, False, True]
    patterns = rng.standard_normal((len(eeg_info["ch_names"]), 3))
    fig = plot_topomaps(patterns, eeg_info, names=["x", "y", "z"], exclude=[1])
    titles = [ax.title for ax in fig.axes[:3]]
    assert [t.get_text() for t in titles] == ["x", "y (excluded)", "z"]
    assert [_grey(t) for t in titles] == [False, True, False]
    with pytest.raises(ValueError, match=r"'exclude' holds index 5, but there are 3 maps"):
        plot_topomaps(patterns, eeg_info, exclude=[5])


def test_plot_topographies_marks_the_separators_exclude(eeg_fit):
    sep, _, _ = eeg_fit
    fig = plot_topographies(sep, exclude=[2])
    assert [ax.get_title() for ax in fig.axes[:3]] == ["IVAE000", "IVAE001", "IVAE002 (excluded)"]
    sep.exclude = [0]
    try:  # sep.exclude and exclude together, as apply removes them
        titles = [ax.title for ax in plot_topographies(sep, exclude=[2]).axes[:3]]
    finally:
        sep.exclude = []
    assert [_grey(t) for t in titles] == [True, False, True]


def test_command_line_figures_show_the_removed_sources_as_excluded(eeg_fit):
    from pathlib import Path

    from sepkit.cli.separate import _figures, _Input

    sep, raw, _ = eeg_fit
    S = sep.transform(raw)
    item = _Input(Path("rec_raw.fif"), "rec", raw, "eeg", True)
    figs = _figures(item, sep, S, S.get_data(), True, [1])
    waveforms = figs["rec_sources.png"].axes[0::2]
    assert [ax.get_ylabel() for ax in waveforms] == ["IVAE000", "IVAE001\n(excluded)", "IVAE002"]
    assert [_grey(ax.lines[0]) for ax in waveforms] == [False, True, False]
    titles = [ax.title for ax in figs["rec_topographies.png"].axes[:3]]
    assert [t.get_text() for t in titles] == ["IVAE000", "IVAE001 (excluded)", "IVAE002"]
    assert [_grey(t) for t in titles] == [False, True, False]
    plain = _figures(item, sep, S, S.get_data(), True)  # nothing removed: nothing marked
    assert not any("excluded" in ax.get_title() for ax in plain["rec_topographies.png"].axes)


def test_save_figure_without_a_suffix_writes_png(tmp_path):
    # Audit: no suffix crashed with the temp file's random suffix as the "format".
    import matplotlib.figure

    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    path = save_figure(fig, tmp_path / "noext")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(fig, tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
