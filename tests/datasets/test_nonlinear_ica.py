import numpy as np
import pytest

from sepkit.datasets import make_nonlinear_ica


def test_shapes_and_labels():
    X, S, u = make_nonlinear_ica(3, 10, 50, 2, random_state=0)
    assert X.shape == S.shape == (3, 500) and u.shape == (500,)
    np.testing.assert_array_equal(np.bincount(u), np.full(10, 50))
    assert X.dtype == S.dtype == np.float32


def test_reproducible():
    a = make_nonlinear_ica(3, 5, 20, 2, random_state=4)
    b = make_nonlinear_ica(3, 5, 20, 2, random_state=4)
    c = make_nonlinear_ica(3, 5, 20, 2, random_state=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])


def test_one_layer_is_linear_and_invertible():
    X, S, _ = make_nonlinear_ica(4, 10, 100, 1, random_state=0)
    A, *_ = np.linalg.lstsq(S.T, X.T, rcond=None)
    np.testing.assert_allclose(S.T @ A, X.T, atol=1e-4)
    assert np.linalg.cond(A) < 20


def test_segment_stds_follow_std_range():
    _, S, u = make_nonlinear_ica(
        2, 30, 4000, 1, mean_range=None, std_range=(0.5, 3.0), random_state=0
    )
    stds = np.array([S[:, u == k].std(axis=1) for k in range(30)])
    assert stds.min() > 0.45 and stds.max() < 3.1
    assert stds.max() / stds.min() > 4  # really non-stationary


def test_deep_mixing_is_nonlinear():
    X, S, _ = make_nonlinear_ica(3, 10, 200, 3, activation="xtanh", random_state=0)
    A, res, *_ = np.linalg.lstsq(S.T, X.T, rcond=None)
    assert res.sum() / (X**2).sum() > 1e-3


def test_observed_dims_and_laplace():
    X, S, _ = make_nonlinear_ica(2, 4, 100, 2, n_obs=5, prior="laplace", random_state=0)
    assert X.shape == (5, 400) and S.shape == (2, 400)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prior="cauchy"), "Invalid value for the 'prior' parameter"),
        (dict(activation="relu"), "Invalid value for the 'activation' parameter"),
        (dict(std_range=(2.0, 1.0)), r"'std_range' must be two finite .* 0 < low <= high"),
        # Audit: numpy's "high - low < 0" or a TypeError, naming no argument.
        (dict(std_range=1.0), r"'std_range' must be two finite numbers \(low, high\)"),
        (dict(std_range=(1.0, float("inf"))), r"'std_range' must be two finite"),
        (dict(mean_range=(1.0, -1.0)), r"'mean_range' must be two finite .* low <= high, got"),
        (dict(mean_range=5), r"'mean_range' must be two finite numbers"),
        (dict(n_obs=1), "'n_obs' must be >= 2"),
        (dict(repeat_mixing="yes"), "Invalid value for the 'repeat_mixing' parameter"),
        (dict(unit_norm="rows"), "Invalid value for the 'unit_norm' parameter"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_nonlinear_ica(2, 4, 10, 2, **kwargs)


@pytest.mark.parametrize(("unit_norm", "axis"), [("outputs", 0), ("inputs", 1)])
def test_mixing_matrix_normalisation(unit_norm, axis):
    # "outputs": unit-norm rows of W, as the reference code; "inputs": columns.
    X, S, _ = make_nonlinear_ica(4, 10, 100, 1, unit_norm=unit_norm, random_state=1)
    A, *_ = np.linalg.lstsq(S.T, X.T, rcond=None)  # X.T = S.T @ A, so A = W.T
    np.testing.assert_allclose(np.linalg.norm(A, axis=axis), 1.0, rtol=1e-4)
    assert np.linalg.cond(A) < 20


def test_repeat_mixing_uses_one_matrix_for_every_layer():
    kw = dict(activation="xtanh", repeat_mixing=True, unit_norm="outputs", random_state=2)
    X1, S, _ = make_nonlinear_ica(3, 10, 100, 1, **kw)
    X2, S2, _ = make_nonlinear_ica(3, 10, 100, 2, **kw)
    np.testing.assert_array_equal(S, S2)
    A, *_ = np.linalg.lstsq(S.T, X1.T, rcond=None)  # the one matrix, transposed
    expected = (np.tanh(X1.T) + 0.1 * X1.T) @ A  # W xtanh(W s)
    np.testing.assert_allclose(X2.T, expected, atol=1e-4)
    fresh, *_ = make_nonlinear_ica(3, 10, 100, 2, activation="xtanh", random_state=2)
    assert not np.allclose(fresh, X2)  # a new matrix per layer otherwise
