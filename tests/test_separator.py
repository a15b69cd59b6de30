import re
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from sepkit import IVAESeparator, NotFittedError, Recording
from sepkit.datasets import make_nonlinear_ica
from sepkit.metrics import mcc

FAST = dict(n_steps=400, n_hidden=16, batch_size=128, device="cpu")


@pytest.fixture(scope="module")
def linear_data():
    return make_nonlinear_ica(3, 10, 200, 1, random_state=0)


@pytest.fixture(scope="module")
def fitted(linear_data):
    X, _, u = linear_data
    return IVAESeparator(3, random_state=0, **FAST).fit(X, u)


def test_fit_returns_self_and_sets_attributes(linear_data):
    X, _, u = linear_data
    sep = IVAESeparator(3, random_state=0, **FAST)
    assert sep.fit(X, u) is sep
    assert sep.n_channels_ == 3 and sep.n_segments_ == 10 and sep.rank_ == 3
    assert sep.history_[-1]["step"] == FAST["n_steps"]
    assert np.isfinite(sep.history_[-1]["loss"])
    np.testing.assert_array_equal(sep.classes_, np.arange(10))


def test_init_only_stores_and_params_round_trip():
    sep = IVAESeparator(4, prior="gaus", n_steps=-3)  # invalid values: checked in fit, not here
    assert sep.get_params()["prior"] == "gaus"
    sep.set_params(prior="laplace", n_steps=10)
    assert sep.prior == "laplace" and sep.n_steps == 10
    c = clone(sep)
    assert c.get_params() == sep.get_params() and c is not sep
    with pytest.raises(TypeError):
        IVAESeparator(4, "laplace")  # options after n_sources are keyword-only


def test_transform_before_fit_raises():
    X = np.random.default_rng(0).standard_normal((3, 100))
    for method in ("transform", "inverse_transform"):
        with pytest.raises(NotFittedError, match="not fitted yet. Call 'fit'"):
            getattr(IVAESeparator(2), method)(X)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        IVAESeparator(2).get_components()
    # scikit-learn's class, as IVAETransformer raises it (audit: a class of its own that
    # `except sklearn.exceptions.NotFittedError` did not catch).
    import sklearn.exceptions

    with pytest.raises(sklearn.exceptions.NotFittedError):
        IVAESeparator(2).transform(X)
    assert issubclass(NotFittedError, RuntimeError | AttributeError | ValueError)


def test_features_in_units_far_apart_keep_their_rank():
    # Audit: an income beside a ratio (standard deviations 2e4 and 0.003) read as rank 2
    # of 3, the small column a numerical zero, where FastICA separates them.
    from sepkit.dropin_sklearn import IVAETransformer

    rng = np.random.default_rng(0)
    n = 2000
    S = rng.laplace(size=(n, 3)) * np.repeat(rng.uniform(0.3, 2.0, (20, 3)), n // 20, axis=0)
    X = (S @ rng.normal(size=(3, 3)).T) * [2e4, 10.0, 0.003] + [5e4, 40.0, 0.01]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes, not the point here
        Z = IVAETransformer().fit_transform(X)
        sep = IVAESeparator(3, mixing="linear").fit(X.T)
    assert Z.shape == (n, 3) and mcc(S.T, Z.T) > 0.99
    assert mcc(S.T, sep.transform(X.T)) > 0.99


def test_transform_shapes_and_inverse(fitted, linear_data):
    X, _, u = linear_data
    S_hat = fitted.transform(X, u)
    assert S_hat.shape == (3, 2000) and S_hat.dtype == np.float32
    X_hat = fitted.inverse_transform(S_hat)
    assert X_hat.shape == X.shape
    # The decoder mean reconstructs the data far better than its mean does.
    assert ((X - X_hat) ** 2).mean() < 0.2 * X.var(axis=1).mean()
    assert fitted.get_components().shape == (3, 3)


def test_default_u_is_window_index(linear_data):
    X, _, _ = linear_data
    sep = IVAESeparator(3, window_samples=200, random_state=0, **FAST).fit(X)
    assert sep.n_segments_ == 10 and sep.window_samples_ == 200
    assert sep.transform(X).shape == (3, 2000)
    with pytest.raises(
        ValueError, match="has 20 windows of 200 samples but the model was fitted on 10"
    ):
        sep.transform(np.tile(X, 2))


def test_auto_prior_and_posterior_follow_the_recording(linear_data):
    X, _, u = linear_data
    sep = IVAESeparator(3, random_state=0, **{**FAST, "n_steps": 1}).fit(X, u)
    assert (sep.prior_, sep.posterior_) == ("gauss", "full")
    eeg = Recording(X, sample_rate=100.0, kind="eeg")
    # EEG: the linear model by default (tests/test_linear_ivae.py); the network's
    # own defaults for EEG show with mixing="nonlinear".
    assert IVAESeparator(3, **{**FAST, "n_steps": 1}).fit(eeg, u).mixing_ == "linear"
    sep = IVAESeparator(3, random_state=0, mixing="nonlinear", **{**FAST, "n_steps": 1})
    sep.fit(eeg, u)
    assert (sep.mixing_, sep.prior_, sep.posterior_) == ("nonlinear", "laplace", "diag")
    assert sep.model_.prior == "laplace" and sep.model_.posterior == "diag"
    explicit = IVAESeparator(
        3, prior="gauss", posterior="full", mixing="nonlinear", **{**FAST, "n_steps": 1}
    )
    assert (explicit.fit(eeg, u).prior_, explicit.posterior_) == ("gauss", "full")
    # An option only the network has makes "auto" pick it.
    laplace = IVAESeparator(3, prior="laplace", **{**FAST, "n_steps": 1}).fit(eeg, u)
    assert (laplace.mixing_, laplace.prior_) == ("nonlinear", "laplace")


def test_default_window_follows_the_recording(linear_data):
    X, _, _ = linear_data
    # 2000 samples, 3 sources: 4 * (2 * 3 + 1) = 28 windows of 2000 // 28 = 71 samples.
    sep = IVAESeparator(3, random_state=0, **FAST).fit(X)
    assert sep.window_samples_ == 71 and sep.n_segments_ == 28
    long = np.tile(X, 30)  # 60000 samples: capped at 1000 samples per window
    assert IVAESeparator(3, **{**FAST, "n_steps": 1}).fit(long).window_samples_ == 1000


def test_recording_in_recording_out(linear_data):
    X, _, _ = linear_data
    rec = Recording(X, sample_rate=100.0, kind="audio")
    # domain="time": "auto" would pick the time-frequency model for audio.
    sep = IVAESeparator(2, window=2.0, random_state=0, domain="time", **FAST).fit(rec)
    assert sep.window_samples_ == 200
    out = sep.transform(rec)
    assert isinstance(out, Recording)
    assert out.ch_names == ("IVAE000", "IVAE001") and out.sample_rate == 100.0
    assert out.kind == "audio" and out.n_times == rec.n_times
    back = sep.inverse_transform(out)
    assert isinstance(back, Recording) and back.ch_names == rec.ch_names


def test_window_seconds_needs_sample_rate(linear_data):
    X, _, _ = linear_data
    with pytest.raises(ValueError, match="needs a sample rate, but X is a plain array"):
        IVAESeparator(2, window=1.0, **FAST).fit(X)


def test_reproducible_and_save_load(tmp_path, fitted, linear_data):
    X, _, u = linear_data
    again = IVAESeparator(3, random_state=0, **FAST).fit(X, u)
    np.testing.assert_array_equal(again.transform(X, u), fitted.transform(X, u))
    path = fitted.save(tmp_path / "sep.safetensors")
    loaded = IVAESeparator.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.transform(X, u), fitted.transform(X, u))
    np.testing.assert_array_equal(
        loaded.inverse_transform(fitted.transform(X, u)),
        fitted.inverse_transform(fitted.transform(X, u)),
    )
    assert loaded.get_params() == {**fitted.get_params(), "device": "cpu"}
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists. Pass overwrite=True"):
        fitted.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sep.safetensors"]  # no temp left
    with pytest.raises(ValueError, match=r"path must end in .safetensors .*got '.*sep.pt'"):
        fitted.save(tmp_path / "sep.pt")
    with pytest.raises(
        ValueError,
        match=r"For an MNE ICA file of a linear separator, save its export: sep.to_mne_ica\(\).save\(path\).",
    ):
        fitted.save(tmp_path / "sub-01-ica.fif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sep.safetensors"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved separator"):
        IVAESeparator.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a sepkit separator file"):
        IVAESeparator.load(bad)


def test_labels_of_any_type_and_unseen_labels(linear_data):
    X, _, u = linear_data
    names = np.array(["rest", "task"])[(u >= 5).astype(int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sep = IVAESeparator(2, random_state=0, **FAST).fit(X, names)
    assert list(sep.classes_) == ["rest", "task"]
    bad = names.astype("<U8")
    bad[:3] = "sleep"
    with pytest.raises(ValueError, match=r"u holds labels not seen in fit: \['sleep'\]"):
        sep.transform(X, bad)


def test_continuous_u(linear_data):
    X, _, u = linear_data
    cont = np.stack([np.sin(u / 3.0), np.cos(u / 3.0)]).astype(np.float32)
    sep = IVAESeparator(3, random_state=0, **FAST).fit(X, cont)
    assert sep.n_u_ == 2 and sep.n_segments_ is None
    assert sep.transform(X, cont).shape == (3, 2000)
    with pytest.raises(ValueError, match="fitted with a continuous u; pass u of shape"):
        sep.transform(X)
    with pytest.raises(ValueError, match="u has 1 dimensions but the model was fitted with n_u=2"):
        sep.transform(X, cont[:1])


def test_vae_baseline_ignores_u(linear_data):
    X, _, u = linear_data
    sep = IVAESeparator(3, prior="standard", random_state=0, **FAST).fit(X, u)
    assert sep.model_.prior_net is None
    np.testing.assert_array_equal(sep.transform(X), sep.transform(X, u))


def test_conv_kernel_and_long_input_chunking(linear_data, monkeypatch):
    import sepkit.methods._time as time_mod

    X, _, u = linear_data
    sep = IVAESeparator(3, kernel_size=5, n_layers=2, random_state=0, **FAST).fit(X, u)
    full = sep.transform(X, u)
    # Chunked inference with margins must equal one pass over the whole signal.
    monkeypatch.setattr(time_mod, "INFER_CHUNK_SAMPLES", 333)
    np.testing.assert_allclose(sep.transform(X, u), full, atol=1e-5)


def test_rank_deficient_data_is_handled():
    rng = np.random.default_rng(0)
    X, _, u = make_nonlinear_ica(3, 10, 100, 1, random_state=0)
    X4 = np.vstack([X, X.sum(axis=0, keepdims=True)])  # 4 channels, rank 3
    sep = IVAESeparator(3, random_state=0, **FAST).fit(X4, u)
    assert sep.rank_ == 3 and sep.transform(X4, u).shape == (3, 1000)
    with pytest.raises(ValueError, match=r"above the rank of the data \(3 of 4 channels"):
        IVAESeparator(4, **FAST).fit(X4 + 0 * rng.standard_normal(X4.shape), u)


@pytest.mark.parametrize(
    "params, match, exc",
    [
        (
            dict(prior="gaus"),
            "Invalid value for the 'prior' parameter. Allowed values are 'auto', 'gauss', 'laplace', 'standard', 'extended' and 'gengauss', but got 'gaus' instead.",
            ValueError,
        ),
        (dict(activation="relu"), "Invalid value for the 'activation' parameter", ValueError),
        (dict(kernel_size=4), "'kernel_size' must be odd", ValueError),
        (dict(n_steps=0), "'n_steps' must be >= 1, got 0", ValueError),
        (dict(lr=-1.0), "'lr' must be > 0.0", ValueError),
        (
            dict(random_state=2**63),
            "'random_state' must be from 0 to 2**63 - 1 (a seed, as torch takes it), got "
            "9223372036854775808. Pass a smaller seed, e.g. 0.",
            ValueError,
        ),
        (
            dict(random_state=np.random.default_rng(0)),
            "'random_state' must be None or an int from 0 to 2**63 - 1 (a seed), got Generator(",
            TypeError,
        ),
        (
            dict(n_sources="all"),
            "'n_sources' must be an integer count, a float share of the variance in (0, 1) or "
            "None (every dimension the data hold: the command line's 'all'), got 'all' (str). "
            "Pass e.g. 15, 0.99 or None.",
            TypeError,
        ),
        (
            dict(n_sources=1.5),
            "'n_sources' as a float is a share of the variance, between 0 and 1 (exclusive), "
            "got 1.5. Pass e.g. 0.99",
            ValueError,
        ),
        (dict(n_sources=0.0), "'n_sources' as a float is a share of the variance", ValueError),
        (dict(device="tpu"), "Invalid value for the 'device' parameter", ValueError),
        (dict(device="cuda:x"), r"'cuda:N', but got 'cuda:x' instead", ValueError),
        (dict(device=0), "'device' must be a string such as 'auto'", TypeError),
        (dict(whiten="yes"), "Invalid value for the 'whiten' parameter", ValueError),
    ],
)
def test_bad_options(params, match, exc, linear_data):
    X, _, u = linear_data
    kw = {**FAST, **params}
    n = kw.pop("n_sources", 2)
    with pytest.raises(exc, match=re.escape(match)):
        IVAESeparator(n, **kw).fit(X, u)


def test_bad_input(linear_data):
    X, _, u = linear_data
    sep = IVAESeparator(2, **FAST)
    with pytest.raises(ValueError, match="n_sources=4 is more than the 3 channels of X"):
        IVAESeparator(4, **FAST).fit(X, u)
    Xn = X.copy()
    Xn[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"contains 1 NaN or Inf values \(in channel\(s\) \[1\]\)"):
        sep.fit(Xn, u)
    with pytest.raises(
        ValueError,
        match=r"X must have shape \(n_channels, n_times\), got \(2000,\) instead. Use X\[None\]",
    ):
        sep.fit(X[0], u)
    with pytest.raises(ValueError, match="u has 10 labels but X has 2000 samples"):
        sep.fit(X, u[:10])
    with pytest.raises(
        ValueError, match="u takes a single value, so the sources are not identifiable"
    ):
        sep.fit(X, np.zeros(2000))
    with pytest.warns(
        UserWarning,
        match=r"u takes 3 distinct values; identifiability of 2 sources needs at least 5",
    ):
        sep.fit(X, u // 4)
    flat = X.copy()
    flat[2] = 1.0
    with pytest.raises(ValueError, match=r"flat \(constant\) channel\(s\) \[2\]"):
        sep.fit(flat, u)
    with pytest.raises(ValueError, match=r"u must have shape \(n_times,\) for labels"):
        sep.fit(X, u[None, None])


def test_wrong_channels_at_transform(fitted, linear_data):
    X, _, u = linear_data
    with pytest.raises(ValueError, match="X has 2 channels but the separator was fitted on 3"):
        fitted.transform(X[:2], u)
    with pytest.raises(ValueError, match="S has 2 rows but the separator has 3 sources"):
        fitted.inverse_transform(X[:2])


def test_cuda_requested_without_gpu(linear_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    X, _, u = linear_data
    with pytest.raises(
        RuntimeError, match="CUDA is not available on this machine. Pass device='cpu'"
    ):
        IVAESeparator(2, **{**FAST, "device": "cuda"}).fit(X, u)


def test_ivae_recovers_linear_sources_fast():
    # The acceptance test: a small 1-layer case, MCC >= 0.9 in under a minute on CPU.
    X, S, u = make_nonlinear_ica(5, 20, 500, 1, mean_range=None, random_state=0)
    t0 = time.perf_counter()
    sep = IVAESeparator(5, n_steps=1500, device="cpu", random_state=0).fit(X, u)
    elapsed = time.perf_counter() - t0
    score = mcc(S, sep.transform(X, u))
    assert score >= 0.9, score
    assert elapsed < 60, elapsed


def test_default_windows_need_a_long_enough_recording():
    # 65 samples for 15 sources: the default rule would cut 124 windows of 1 sample.
    X = np.random.default_rng(0).standard_normal((20, 65))
    with pytest.raises(ValueError, match=r"X has 65 samples, too few for the default u of 124 "):
        IVAESeparator(15, mixing="linear").fit(X)
    # Windows chosen by hand are the user's call (here 13 windows of 5 samples).
    sep = IVAESeparator(2, mixing="linear", window_samples=5).fit(X[:2])
    assert sep.window_samples_ == 5 and sep.n_segments_ == 13
