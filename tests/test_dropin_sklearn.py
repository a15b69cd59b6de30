"""sepkit.dropin_sklearn.IVAETransformer: scikit-learn's conventions, and separation."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from sepkit import IVAESeparator
from sepkit.dropin_sklearn import IVAETransformer
from sepkit.metrics import mcc

# What a broken model must not reach on the mixture below: PCA (decorrelation
# without separation) scores 0.79-0.89 there on seeds 0-2, the fit 0.9997-1.0.
MCC_MIN = 0.95


def make_mixture(seed=0, n_segments=30, per_segment=100, n_sources=3):
    """Laplace sources whose scale changes per segment, mixed by a random matrix.

    Returns X (n_samples, n_sources), S (n_samples, n_sources), u (n_samples,).
    """
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.1, 2.0, size=(n_segments, n_sources))
    S = rng.laplace(size=(n_segments * per_segment, n_sources))
    S *= np.repeat(scales, per_segment, axis=0)
    A = rng.normal(size=(n_sources, n_sources))
    X = S @ A.T + rng.normal(size=n_sources)
    return X, S, np.repeat(np.arange(n_segments), per_segment)


@pytest.fixture(scope="module")
def mixture():
    return make_mixture()


@pytest.fixture(scope="module")
def fitted(mixture):
    X, _, _ = mixture
    return IVAETransformer(n_components=3, n_segments=30).fit(X)


# --------------------------------------------------------- scikit-learn's checks
def _run_array_api_check_in_subprocess(check):
    """check_array_api_input skips unless SCIPY_ARRAY_API=1 was set before scipy
    was imported, which this process cannot undo: run it in a fresh one."""
    code = (
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from sepkit.dropin_sklearn import IVAETransformer\n"
        f"check_array_api_input(*{check.args!r}, IVAETransformer(), **{check.keywords!r})\n"
    )
    env = dict(os.environ, SCIPY_ARRAY_API="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


# The tiny inputs of the checks (10-56 samples) draw this estimator's warnings
# about too few segments and, on 10 features, non-convergence: expected there.
@pytest.mark.filterwarnings("ignore:The fit uses:UserWarning")
@pytest.mark.filterwarnings("ignore:X has rank:UserWarning")
@pytest.mark.filterwarnings("ignore:The linear iVAE fit stopped:RuntimeWarning")
@parametrize_with_checks([IVAETransformer()])
def test_sklearn_compatible(estimator, check):
    name = getattr(check, "func", check).__name__
    if name == "check_array_api_input" and os.environ.get("SCIPY_ARRAY_API") != "1":
        _run_array_api_check_in_subprocess(check)
    else:
        check(estimator)


@pytest.mark.parametrize(
    "name",
    [
        "check_transformer_get_feature_names_out",
        "check_set_output_transform",
        "check_transformer_get_feature_names_out_pandas",
        "check_set_output_transform_pandas",
        "check_global_output_transform_pandas",
        "check_dataframe_column_names_consistency",
    ],
)
@pytest.mark.filterwarnings("ignore:The fit uses:UserWarning")
def test_feature_names_and_set_output(name):
    # Checks that scikit-learn runs on its own transformers but check_estimator
    # does not include; the *_pandas ones skip without pandas.
    if "pandas" in name or "column_names" in name:
        pytest.importorskip("pandas")
    getattr(estimator_checks, name)("IVAETransformer", IVAETransformer())


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, _, _ = make_mixture(per_segment=20)
    df = pd.DataFrame(X, columns=["fz", "cz", "pz"])
    t = IVAETransformer(n_segments=30).set_output(transform="pandas").fit(df)
    np.testing.assert_array_equal(t.feature_names_in_, ["fz", "cz", "pz"])
    out = t.transform(df)
    assert list(out.columns) == ["ivaetransformer0", "ivaetransformer1", "ivaetransformer2"]


# ------------------------------------------------------------------ separation
def test_separates_nonstationary_mixture(mixture, fitted):
    X, S, _ = mixture
    Z = fitted.transform(X)
    assert Z.shape == (3000, 3) and Z.dtype == np.float64
    score = mcc(S.T, Z.T)
    assert score > MCC_MIN, score
    # The threshold is out of reach of decorrelation alone.
    assert mcc(S.T, PCA(3).fit_transform(X).T) < MCC_MIN
    assert fitted.n_segments_ == 30 and fitted.n_iter_ > 0
    assert fitted.components_.shape == (3, 3) and fitted.mixing_.shape == (3, 3)
    np.testing.assert_allclose(fitted.mean_, X.mean(axis=0))
    # Unit-variance sources; transform is the affine map of the attributes.
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(Z, (X - fitted.mean_) @ fitted.components_.T)
    np.testing.assert_allclose(fitted.components_ @ fitted.mixing_, np.eye(3), atol=1e-10)


def test_agrees_with_ivae_separator(mixture):
    X, _, u = mixture
    t = IVAETransformer(n_components=2).fit(X, u=u)
    sep = IVAESeparator(n_sources=2, mixing="linear", device="cpu").fit(X.T, u)
    np.testing.assert_allclose(t.transform(X), sep.transform(X.T, u).T, atol=1e-4)
    np.testing.assert_allclose(t.mixing_, sep.get_components(), rtol=1e-10, atol=1e-12)


def test_u_labels_are_the_segments(mixture):
    X, S, u = mixture
    labels = np.array([f"block {c}" for c in u])  # any sortable values
    t = IVAETransformer(n_segments=2).fit(X, u=labels)  # n_segments is ignored with u
    assert t.n_segments_ == 30
    assert mcc(S.T, t.transform(X).T) > MCC_MIN


def test_auto_segments():
    rng = np.random.default_rng(0)
    # 4 (2 n_components + 1) segments ...
    assert IVAETransformer().fit(rng.normal(size=(600, 3))).n_segments_ == 28
    # ... more where they would exceed 1000 samples ...
    assert IVAETransformer().fit(rng.normal(size=(30_500, 1))).n_segments_ == 31
    # ... and fewer where they would have under n_components + 1 samples.
    with pytest.warns(UserWarning, match="identifiability of 2 components needs at least 5"):
        t = IVAETransformer().fit(rng.normal(size=(12, 2)))
    assert t.n_segments_ == 4


def test_inverse_transform_and_dtype(mixture, fitted):
    X, _, _ = mixture
    np.testing.assert_allclose(fitted.inverse_transform(fitted.transform(X)), X, atol=1e-9)
    X32 = X.astype(np.float32)
    Z32 = IVAETransformer(n_segments=30).fit_transform(X32)
    assert Z32.dtype == np.float32
    assert IVAETransformer(n_segments=30).fit(X32).inverse_transform(Z32).dtype == np.float32
    # Fewer components: the projection on the separated directions.
    t2 = IVAETransformer(n_components=2, n_segments=30).fit(X)
    X_hat = t2.inverse_transform(t2.transform(X))
    assert X_hat.shape == X.shape
    np.testing.assert_allclose(t2.transform(X_hat), t2.transform(X), atol=1e-9)


def test_constant_feature_is_left_out(mixture):
    X, S, _ = mixture
    X4 = np.column_stack([X[:, :2], np.full(len(X), 7.0), X[:, 2]])
    t = IVAETransformer(n_components=3, n_segments=30).fit(X4)
    np.testing.assert_array_equal(t.components_[:, 2], 0.0)
    np.testing.assert_array_equal(t.mixing_[2], 0.0)
    assert mcc(S.T, t.transform(X4).T) > MCC_MIN
    with pytest.warns(UserWarning, match=r"X has rank 3 \(4 features, 1 of them constant\), so"):
        assert IVAETransformer(n_segments=30).fit(X4).n_components_ == 3


def test_clone_and_pickle_round_trip(mixture, fitted):
    X, _, _ = mixture
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "components_")
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.transform(X), fitted.transform(X))
    assert back.n_segments_ == fitted.n_segments_


def test_pipeline(mixture):
    X, S, u = mixture
    pipe = make_pipeline(StandardScaler(), IVAETransformer(n_components=3, n_segments=30))
    assert mcc(S.T, pipe.fit_transform(X).T) > MCC_MIN
    # u reaches the step as a fit parameter.
    pipe.fit(X, ivaetransformer__u=u)
    assert pipe[-1].n_segments_ == 30
    assert mcc(S.T, pipe.transform(X).T) > MCC_MIN
    assert list(pipe.get_feature_names_out()) == [f"ivaetransformer{i}" for i in range(3)]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(n_components=0), ValueError, "'n_components' must be >= 1, got 0"),
        (dict(n_components=2.5), TypeError, "'n_components' must be an integer"),
        (dict(n_components=4), ValueError, "n_components=4 is more than the 3 features of X"),
        (dict(n_segments=1), ValueError, "'n_segments' must be >= 2, got 1"),
        (dict(n_segments="many"), TypeError, "'n_segments' must be 'auto' or an integer >= 2"),
        (dict(n_segments=3.0), TypeError, "'n_segments' must be 'auto' or an integer >= 2"),
        (dict(prior="laplace"), ValueError, "Invalid value for the 'prior' parameter. Allowed"),
        (dict(random_state="seed"), ValueError, "cannot be used to seed"),
    ],
)
def test_invalid_parameters(mixture, params, error, match):
    X, _, _ = mixture
    est = IVAETransformer(**params)  # __init__ only stores; fit validates
    with pytest.raises(error, match=match):
        est.fit(X)


@pytest.mark.parametrize(
    "u, match",
    [
        (np.zeros(10), r"u must have shape \(n_samples,\) = \(3000,\), one label per sample"),
        (np.zeros((3000, 1)), r"got \(3000, 1\) instead. Use u.ravel\(\) for a column"),
        (np.zeros(3000), "u takes a single value"),
        (np.r_[np.zeros(2999), 1], r"u label\(s\) \[1.0\] cover fewer than n_components \+ 1 = 4"),
    ],
)
def test_invalid_u(mixture, u, match):
    X, _, _ = mixture
    with pytest.raises(ValueError, match=match):
        IVAETransformer().fit(X, u=u)


def test_too_few_samples_or_too_low_rank():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="X has 7 samples, too few for n_components=3"):
        IVAETransformer().fit(rng.normal(size=(7, 3)))
    X = rng.normal(size=(100, 2)) @ rng.normal(size=(2, 3))  # rank 2
    with pytest.raises(ValueError, match=r"X has rank 2 \(3 features\), below n_components=3"):
        IVAETransformer(n_components=3).fit(X)
    with pytest.warns(UserWarning, match="so n_components=None fits 2 components"):
        assert IVAETransformer().fit(X).n_components_ == 2
    with pytest.raises(ValueError, match="X has rank 0: all its 2 features are constant"):
        IVAETransformer().fit(np.ones((50, 2)))


def test_segment_warnings(mixture):
    X, _, _ = mixture
    with pytest.warns(UserWarning, match="n_segments=1000 would leave segments of fewer than"):
        t = IVAETransformer(n_segments=1000).fit(X)
    assert t.n_segments_ == 750  # 3000 samples // (3 + 1)
    with pytest.warns(UserWarning, match="The fit uses 3 segments; identifiability of 3"):
        IVAETransformer(n_segments=3).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 7 = 2 n_components + 1 segments: no warning
        IVAETransformer(n_segments=7).fit(X)


def test_state_errors(mixture, fitted):
    X, _, _ = mixture
    with pytest.raises(NotFittedError, match="This IVAETransformer instance is not fitted yet"):
        IVAETransformer().transform(X)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        IVAETransformer().inverse_transform(X)
    with pytest.raises(ValueError, match="X has 2 features, but IVAETransformer is expecting 3"):
        fitted.transform(X[:, :2])
    with pytest.raises(ValueError, match="X has 2 columns but the transformer has n_components_=3"):
        fitted.inverse_transform(X[:, :2])


def test_extended_prior_separates_stationary_sources():
    # Two Laplace sources of constant scale and one whose scale changes: the
    # Gaussian prior cannot split the stationary pair, the extended prior can.
    rng = np.random.default_rng(4)
    n, per = 6000, 200
    S = rng.laplace(size=(n, 3))
    S[:, 2] *= np.repeat(rng.uniform(0.2, 2.0, n // per), per)
    # In every segment the pair is made exactly uncorrelated with unit variance,
    # so the segment covariances hold nothing that tells its rotations apart.
    for a in range(0, n, per):
        q, r = np.linalg.qr(S[a : a + per, :2] - S[a : a + per, :2].mean(axis=0))
        S[a : a + per, :2] = q * np.sign(np.diag(r)) * np.sqrt(per)
    X = S @ rng.normal(size=(3, 3)).T
    ext = IVAETransformer(n_components=3, n_segments=30, prior="extended").fit(X)
    gauss = IVAETransformer(n_components=3, n_segments=30, prior="gauss").fit(X)
    assert mcc(S.T, ext.transform(X).T) > 0.98
    assert mcc(S.T, gauss.transform(X).T) < mcc(S.T, ext.transform(X).T) - 0.02


def test_non_convergence_is_a_convergence_warning_in_this_estimator_s_terms():
    # Audit: a RuntimeWarning from inside sepkit, advising longer windows (a setting of
    # IVAESeparator's), not scikit-learn's ConvergenceWarning that grid searches filter.
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(1)
    X = rng.standard_cauchy(size=(600, 4)) ** 3 @ rng.normal(size=(4, 4)).T
    with pytest.warns(ConvergenceWarning, match=r"^IVAETransformer's fit stopped after \d+ "
                      r"iterations without converging; .* pass fewer n_segments") as record:  # fmt: skip
        IVAETransformer().fit(X)
    assert all(w.filename == __file__ for w in record if w.category is ConvergenceWarning)
