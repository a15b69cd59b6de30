import numpy as np
import pytest

from sepkit.windows import make_windows, window_labels


def test_window_labels_tail_joins_last_window():
    np.testing.assert_array_equal(window_labels(7, 3), [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(window_labels(6, 3), [0, 0, 0, 1, 1, 1])


def test_window_labels_errors():
    with pytest.raises(ValueError, match="fewer than one window"):
        window_labels(5, 10)
    with pytest.raises(ValueError, match="'window_samples' must be >= 1"):
        window_labels(5, 0)
    with pytest.raises(TypeError, match="'window_samples' must be an integer"):
        window_labels(5, 2.5)


def test_make_windows_overlap():
    X = np.arange(20, dtype=float).reshape(2, 10)
    w, u = make_windows(X, 4, 2)
    assert w.shape == (4, 2, 4)
    np.testing.assert_array_equal(u, np.arange(4))
    np.testing.assert_array_equal(w[1, 0], [2, 3, 4, 5])
    np.testing.assert_array_equal(w[3, 1], [16, 17, 18, 19])
    with pytest.raises(ValueError, match="fewer than one window"):
        make_windows(X, 11)
    with pytest.raises(ValueError, match=r"shape \(n_channels, n_times\)"):
        make_windows(X[0], 2)
