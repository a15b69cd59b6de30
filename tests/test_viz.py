"""Tests for sepkit.viz: every figure renders to a non-trivial PNG."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sepkit import IVAESeparator, Recording
from sepkit.viz import (
    plot_correlation_matrix,
    plot_sources,
    plot_topographies,
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
    # The training curve has one point per history entry.
    line = figs["training"].axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [h["step"] for h in sep.history_])


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
