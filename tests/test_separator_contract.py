"""The estimator's contract after the methods/ split: scikit-learn conventions where we
claim them, one file format, and no setting silently dropped."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from sepkit import IVAESeparator
from sepkit.datasets import make_nonlinear_ica
from sepkit.io import Recording
from sepkit.methods import linear, network, tf

TINY = dict(n_steps=30, n_hidden=8, batch_size=64, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def data():
    return make_nonlinear_ica(3, 10, 200, 2, random_state=0)


def _eeg(seed=0, n_channels=5, n_times=6000):
    rng = np.random.default_rng(seed)
    scales = np.repeat(rng.uniform(0.2, 2.0, (3, 30)), n_times // 30, axis=1)
    x = rng.normal(size=(n_channels, 3)) @ (rng.laplace(size=(3, n_times)) * scales)
    names = tuple(f"EEG{i}" for i in range(n_channels))
    return Recording((1e-5 * x).astype(np.float32), 100.0, names, "eeg")


def _room(seed=0, sample_rate=8000.0, seconds=2.0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    s = rng.laplace(size=(2, n)) * np.repeat(rng.uniform(0.1, 1, (2, 20)), n // 20, axis=1)
    x = np.zeros((2, n))
    for i in range(2):
        for j in range(2):
            d = 3 + 4 * i + 5 * j
            x[i, d:] += (0.5 + 0.5 * (i == j)) * s[j, : n - d]
    return Recording(x.astype(np.float32), sample_rate, ("mic0", "mic1"), "audio")


def test_fit_transform_passes_u_to_both_steps(data):
    X, _, u = data
    labels = np.array([f"block{k}" for k in u])  # explicit labels: TransformerMixin raised here
    a = IVAESeparator(3, **TINY).fit_transform(X, labels)
    b = IVAESeparator(3, **TINY).fit(X, labels).transform(X, labels)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_get_params_set_params_clone_round_trip():
    sep = IVAESeparator(4, mixing="linear", fit_params={"n_iter": 3}, highpass=1.0)
    c = clone(sep)
    assert c is not sep and c.get_params() == sep.get_params()
    c.set_params(n_sources=2, fit_params=None)
    assert c.n_sources == 2 and c.fit_params is None and sep.n_sources == 4


def test_pickled_fitted_separator_gives_the_same_sources(data):
    X, _, u = data
    sep = IVAESeparator(3, **TINY).fit(X, u)
    back = pickle.loads(pickle.dumps(sep))
    np.testing.assert_array_equal(back.transform(X, u), sep.transform(X, u))
    assert back.family_ == "network"


def test_bf16_trained_settings_load_and_run_on_cpu(data, tmp_path):
    X, _, u = data
    sep = IVAESeparator(3, **TINY).fit(X, u)
    # As if trained on a GPU in bf16: only training reads precision.
    sep.set_params(precision="bf16")
    path = sep.save(tmp_path / "bf16.safetensors")
    back = IVAESeparator.load(path, device="cpu")
    assert back.precision == "bf16"
    np.testing.assert_allclose(back.transform(X, u), sep.transform(X, u), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="precision='bf16' needs a CUDA device"):
        back.fit(X, u)  # training still checks it


def test_family_attributes_say_which_model_ran(data):
    X, _, u = data
    net = IVAESeparator(3, **TINY).fit(X, u)
    assert net.family_ == "network" and net.fitted_.describe()["mixing"] == "nonlinear"
    eeg = IVAESeparator(3, random_state=0).fit(_eeg())
    assert eeg.family_ == "linear" and eeg.mixing_ == "linear"
    assert eeg.fitted_.describe() == dict(
        family="linear", domain="time", mixing="linear", prior="extended", unwarped=False
    )


def test_a_refit_with_another_family_leaves_no_attribute_of_the_first():
    # Audit: a tf refit of a linear separator kept whitening_, unmixing_, ... of the
    # linear model beside the tf model's.
    room = _room()
    sep = IVAESeparator(2, domain="time", mixing="linear").fit(room)
    first = set(sep.fitted_.attributes())
    assert {"unmixing_", "whitening_", "segment_var_"} <= first
    sep.set_params(domain="tf", mixing="auto").fit(room)
    assert sep.family_ == "tf"
    for name in first - set(sep.fitted_.attributes()):
        assert not hasattr(sep, name), name
    # A refit with the same family sets the same names again.
    sep.set_params(domain="time", mixing="linear").fit(room)
    assert set(sep.fitted_.attributes()) == first and sep.unmixing_ is not None


def test_a_setting_the_family_ignores_warns():
    rec = _eeg()
    with pytest.warns(UserWarning, match=r"n_hidden=8, n_steps=30: not used by the 'linear'"):
        IVAESeparator(3, n_hidden=8, n_steps=30).fit(rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults and the family's own settings: silent
        IVAESeparator(3, window=2.0, random_state=0).fit(rec)


def test_family_params_name_real_settings():
    names = set(IVAESeparator().get_params())
    for family in (network, linear, tf):
        assert family.PARAMS <= names, family.NAME


def test_tf_settings_are_reachable_through_fit_params():
    rec = _room()
    sep = IVAESeparator(2, domain="tf", random_state=0, fit_params={"n_iter": 3, "n_init": 2})
    sep.fit(rec)
    assert sep.family_ == "tf" and len(sep.history_) == 3
    S = sep.transform(rec)
    assert S.data.shape == (2, rec.n_times)
    with pytest.raises(ValueError, match=r"fit_params has unknown key\(s\) \['n_itr'\].*n_iter"):
        IVAESeparator(2, domain="tf", fit_params={"n_itr": 3}).fit(rec)
    # Audit: it named domain='tf' alone, also for the network's and the flow's n_steps.
    with pytest.raises(
        ValueError,
        match=r"the 'linear' family takes no fit_params \(its settings are IVAESeparator's "
        r"arguments\)\. fit_params holds the settings of the families that have their own: "
        r"the network \(mixing='nonlinear'\), the flow \(mixing='flow'\) and the "
        r"time-frequency model \(domain='tf'\); drop them, or choose the family they belong to\.",
    ):
        IVAESeparator(3, fit_params={"n_iter": 3}).fit(_eeg())
    with pytest.raises(TypeError, match="'fit_params' must be None or a dict"):
        IVAESeparator(2, fit_params=[("n_iter", 3)]).fit(rec)
    with pytest.raises(ValueError, match="'n_iter' must be"):
        IVAESeparator(2, domain="tf", fit_params={"n_iter": -1}).fit(rec)


def test_tf_get_components_is_a_clear_error():
    sep = IVAESeparator(2, domain="tf", random_state=0, fit_params={"n_iter": 1, "n_init": 1})
    sep.fit(_room())
    with pytest.raises(ValueError, match="get_components is defined for domain='time' only"):
        sep.get_components()


def test_progress_is_shown_as_tqdm_users_expect(data, capsys):
    X, _, u = data
    assert IVAESeparator().verbose == "auto"
    IVAESeparator(3, **TINY).fit(X, u)  # "auto": stderr here is no terminal
    assert "iVAE fit" not in capsys.readouterr().err
    IVAESeparator(3, **TINY, verbose=True).fit(X, u)
    assert "iVAE fit" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Invalid value for the 'verbose' parameter"):
        IVAESeparator(3, **TINY, verbose="yes").fit(X, u)


def test_network_settings_through_fit_params(data, tmp_path):
    X, _, u = data
    by_keyword = IVAESeparator(3, **TINY).fit(X, u)
    base = {k: v for k, v in TINY.items() if k in ("device", "random_state")}
    family = {k: v for k, v in TINY.items() if k not in base}
    by_fit_params = IVAESeparator(3, **base, fit_params=family).fit(X, u)
    # The same fit either way, and the constructor's values are left as given.
    np.testing.assert_array_equal(by_fit_params.transform(X, u), by_keyword.transform(X, u))
    assert by_fit_params.n_steps == 5000 and by_fit_params.n_steps_run_ == 30
    back = IVAESeparator.load(by_fit_params.save(tmp_path / "m.safetensors"), device="cpu")
    np.testing.assert_array_equal(back.transform(X, u), by_keyword.transform(X, u))
    with pytest.raises(ValueError, match="n_steps given both as IVAESeparator argument"):
        IVAESeparator(3, n_steps=10, fit_params={"n_steps": 20}).fit(X, u)
    with pytest.raises(
        ValueError, match=r"fit_params has key\(s\) \['n_iter'\] that the 'network'"
    ):
        IVAESeparator(3, **base, fit_params={"n_iter": 3}).fit(X, u)
    with pytest.raises(ValueError, match="'n_hidden' must be >= 1, got 0"):
        IVAESeparator(3, **base, fit_params={"n_hidden": 0}).fit(X, u)
    with pytest.raises(ValueError, match="the 'linear' family takes no fit_params"):
        IVAESeparator(3, fit_params={"n_hidden": 8}).fit(_eeg())


def test_eeg_recording_channels_are_matched_by_name():
    # Audit: an EEG Recording was taken by position, so the same channels in another
    # order gave other sources, and channels of other names were separated.
    from sepkit.datasets import make_nonlinear_ica

    X, _, u = make_nonlinear_ica(3, 10, 200, n_layers=1, random_state=0)
    X = X.astype(np.float32)
    rec = Recording(X, 100.0, ("Fz", "Cz", "Pz"), "eeg")
    sep = IVAESeparator(3, mixing="linear").fit(rec, u)
    reordered = Recording(X[::-1].copy(), 100.0, ("Pz", "Cz", "Fz"), "eeg")
    np.testing.assert_array_equal(sep.transform(reordered, u).data, sep.transform(rec, u).data)
    with pytest.raises(ValueError, match=r"fitted on channel\(s\) \['Fz', 'Cz', 'Pz'\] that the "
                       r"Recording lacks; its channels are \['O1', 'O2', 'Oz'\]"):  # fmt: skip
        sep.transform(Recording(X, 100.0, ("O1", "O2", "Oz"), "eeg"), u)
    # picks name a Recording's channels (it has no types).
    assert IVAESeparator(2, mixing="linear").fit(rec, u, picks=["Fz", "Pz"]).ch_names_ == (
        "Fz",
        "Pz",
    )
    with pytest.raises(ValueError, match=r"'picks' names channel\(s\) \['zz'\] that the Recording"):
        sep.fit(rec, u, picks=["Fz", "zz"])
    # Audio channels, and names a Recording made up, go by position.
    audio = Recording(X, 100.0, ("a", "b", "c"), "audio")
    fitted = IVAESeparator(3, mixing="linear", domain="time").fit(audio, u)
    assert fitted.transform(Recording(X, 100.0, ("x", "y", "z"), "audio"), u).n_channels == 3
    assert sep.transform(Recording(X, 100.0, kind="eeg"), u).n_channels == 3


def test_u_column_is_refused_with_the_fix():
    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    with pytest.raises(ValueError, match=r"u has shape \(500, 1\), a column\. Pass u\.ravel\(\)"):
        IVAESeparator(2).fit(X, u[:, None])


def test_window_with_u_given_is_reported():
    # Audit: window_samples with u given changed nothing, without a word.
    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    with pytest.warns(UserWarning, match=r"window_samples=50: the windows cut the default u .* "
                      r"but u was given, so they are not used"):  # fmt: skip
        IVAESeparator(2, mixing="linear", window_samples=50).fit(X, u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IVAESeparator(2, mixing="linear", window_samples=50).fit(X)


def test_resample_with_a_plain_array_is_refused():
    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    sep = IVAESeparator(2, mixing="linear").fit(X, u)
    with pytest.raises(ValueError, match=r"resample=True resamples a Recording .* plain array"):
        sep.transform(X, u, resample=True)


def test_refine_steps_set_after_fit_on_a_model_that_cannot_refine_warns():
    # Audit: set_params(refine_steps=50) after a linear (or Laplace-prior) fit changed
    # nothing, without a word; at construction the same setting is refused or reported.
    X, _, u = make_nonlinear_ica(2, 5, 100, n_layers=1, random_state=0)
    sep = IVAESeparator(2, mixing="linear").fit(X, u)
    with pytest.warns(UserWarning, match=r"refine_steps=50: not used by the fitted 'linear'") as w:
        sep.set_params(refine_steps=50)
    assert w[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IVAESeparator(2, mixing="linear").set_params(refine_steps=5)  # not fitted: no word
        sep.set_params(refine_steps=0)


def test_nested_fit_params_name_the_dict_form():
    with pytest.raises(ValueError, match=r"\['fit_params__n_iter'\] set keys inside fit_params, "
                       r"which is a dict.*set_params\(fit_params=\{\*\*\(sep\.fit_params or "
                       r"\{\}\), \*\*\{'n_iter': 3\}\}\)"):  # fmt: skip
        IVAESeparator(2).set_params(fit_params__n_iter=3)
