import numpy as np
import pytest

from sepkit.windows import (
    make_windows,
    n_windows_for,
    overlapping_training_set,
    window_labels,
    window_spans,
)


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


def test_window_labels_overlap_nearest_centre():
    # Windows of 4 every 2 samples: starts 0, 2, 4; centres 1.5, 3.5, 5.5.
    np.testing.assert_array_equal(window_labels(8, 4, 2), [0, 0, 0, 1, 1, 2, 2, 2])
    # Ties (t = 3 between centres 1.5 and 4.5) go to the earlier window.
    np.testing.assert_array_equal(window_labels(10, 4, 3)[:8], [0, 0, 0, 0, 1, 1, 1, 2])
    # hop == window is the disjoint case.
    np.testing.assert_array_equal(window_labels(7, 3, 3), window_labels(7, 3))
    with pytest.raises(ValueError, match="'hop_samples' must be <= window_samples \\(4\\)"):
        window_labels(10, 4, 5)
    with pytest.raises(ValueError, match="'hop_samples' must be >= 1"):
        window_labels(10, 4, 0)


def test_window_spans_and_count():
    np.testing.assert_array_equal(window_spans(9, 4, 2), [[0, 4], [2, 6], [4, 9]])
    np.testing.assert_array_equal(window_spans(7, 3), [[0, 3], [3, 7]])
    assert n_windows_for(10, 4, 2) == 4 and n_windows_for(10, 4) == 2
    with pytest.raises(ValueError, match="fewer than one window"):
        window_spans(3, 4, 2)


def test_overlapping_training_set_layout_and_bad_samples():
    good = np.ones(9, dtype=bool)
    good[3] = False
    index, labels, starts = overlapping_training_set(9, 4, 2, 2, good)
    # Windows [0, 4), [2, 6), [4, 9) laid out one after the other.
    np.testing.assert_array_equal(index, [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4 + [2] * 5)
    # Chunks of 2 within one window, avoiding sample 3 (positions 3 and 5):
    # window 0 -> 0, 1; window 1 -> 6; window 2 -> 8, 9, 10, 11.
    np.testing.assert_array_equal(starts, [0, 1, 6, 8, 9, 10, 11])
    # No chunk crosses from one window into the next (position 3 -> 4).
    _, _, all_starts = overlapping_training_set(9, 4, 2, 2)
    assert 3 not in all_starts and 7 not in all_starts
    # A chunk longer than every window leaves nothing.
    assert overlapping_training_set(9, 4, 2, 6)[2].size == 0


def test_window_shorter_than_one_sample_is_refused():
    # Audit: window=0.001 s at 250 Hz was rounded up to one sample without a word.
    from sepkit.windows import resolve_window_samples

    with pytest.raises(ValueError, match=r"window=0.001 s is shorter than one sample at 250 Hz"):
        resolve_window_samples(0.001, None, 250.0, 5000, 3)
    assert resolve_window_samples(0.004, None, 250.0, 5000, 3) == 1


def test_unseen_labels_show_their_types():
    # Audit: labels of fit as ints and of transform as text printed as two equal lists.
    from sepkit.windows import UCodec

    codec = UCodec(10, 10)
    codec.fit_codes(np.repeat(np.arange(3), 10), 30)
    with pytest.raises(ValueError, match=r"not seen in fit: \['0', '1', '2'\]\. Allowed labels "
                       r"are those of fit \(3 values: \[0, 1, 2\]\)\. They are fit's labels as "
                       r"another type"):  # fmt: skip
        codec.encode(np.repeat(np.array(["0", "1", "2"]), 10), 30)
