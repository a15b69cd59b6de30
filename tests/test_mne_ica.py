"""sep.to_mne_ica, sep.label_components and their command-line flags (sepkit/io/mne_ica.py)."""

from __future__ import annotations

import collections
import json
import sys
import time
import warnings
from pathlib import Path

import matplotlib
import mne
import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import command_line_phrasing, main
from sepkit.datasets import make_eeg
from sepkit.io.mne_ica import (
    ICA_METHOD,
    ICLABEL_CLASSES,
    _average_reference_matrix,
    check_iclabel_classes,
    select_sources,
)

matplotlib.use("Agg")

N_SOURCES = 6
RATE = 128.0
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The separator computes in float32 (relative precision 6e-8), MNE in float64.
RTOL = 1e-5


def _close(got, want, rtol=RTOL):
    """Relative agreement with the largest value of ``want`` as the scale."""
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


def _icalabel():
    return pytest.importorskip("mne_icalabel", reason="mne-icalabel (the eeg extra) is absent")


@pytest.fixture(scope="module")
def raw():
    """19 channels (standard_1020), 60 s at 128 Hz, high-passed at 1 Hz."""
    raw, _, _ = make_eeg(N_SOURCES, duration=60.0, sample_rate=RATE, random_state=0)
    return raw.filter(1.0, None, verbose="error")


@pytest.fixture(scope="module")
def sep(raw):
    return IVAESeparator(N_SOURCES, mixing="linear", random_state=0, device="cpu").fit(raw)


# ---------------------------------------------------------------- to_mne_ica
def test_to_mne_ica_agrees_with_the_separator(raw, sep):
    ica = sep.to_mne_ica()
    assert isinstance(ica, mne.preprocessing.ICA)
    _close(ica.get_sources(raw).get_data(), sep.get_sources(raw).get_data())
    _close(ica.get_components(), sep.get_components())
    for exclude in ([1], [0, 3]):
        _close(
            ica.apply(raw.copy(), exclude=exclude).get_data(),
            sep.apply(raw, exclude=exclude).get_data(),
        )
    # Nothing removed: both return the recording (MNE keeps every PCA component).
    _close(ica.apply(raw.copy(), exclude=[]).get_data(), raw.get_data())
    # MNE's representation: volts throughout, orthonormal PCA rows, the separator's mean.
    n_channels = len(raw.ch_names)
    assert ica.n_components_ == N_SOURCES and ica.n_pca_components == n_channels
    assert ica.ch_names == list(sep.ch_names_) and ica.current_fit == "raw"
    np.testing.assert_array_equal(ica.pre_whitener_, np.ones((n_channels, 1)))
    _close(ica.pca_components_ @ ica.pca_components_.T, np.eye(n_channels), rtol=1e-12)
    np.testing.assert_allclose(ica.pca_mean_, sep.mean_)
    # The first n_sources variances are the fitted data's along those directions.
    X = raw.get_data()
    centred = X - X.mean(axis=1, keepdims=True)
    along = ica.pca_components_[:N_SOURCES] @ centred
    np.testing.assert_allclose(ica.pca_explained_variance_[:N_SOURCES], along.var(axis=1), 1e-6)
    assert ica.method == ICA_METHOD and ica.fit_params["family"] == "linear"
    assert ica.info["projs"] == [] and ica.exclude == []


def test_to_mne_ica_apply_differs_by_a_constant_where_sources_have_a_mean(raw):
    # Fitted with the filter inside (highpass=1.0) on an unfiltered recording with
    # an offset: the sources of the recording have a mean, which sepkit's apply
    # holds and MNE's removes. The difference is a constant per channel.
    unfiltered, _, _ = make_eeg(N_SOURCES, duration=30.0, sample_rate=RATE, random_state=1)
    unfiltered.apply_function(lambda x: x + 20e-6)
    sep = IVAESeparator(N_SOURCES, mixing="linear", highpass=1.0, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sep.fit(unfiltered)
    ica = sep.to_mne_ica()
    _close(ica.get_sources(unfiltered).get_data(), sep.get_sources(unfiltered).get_data())
    diff = (
        ica.apply(unfiltered.copy(), exclude=[1]).get_data()
        - sep.apply(unfiltered, exclude=[1]).get_data()
    )
    scale = np.abs(unfiltered.get_data()).max()
    assert np.abs(diff.mean(axis=1)).max() > 1e-4 * scale  # a real offset
    assert np.abs(diff - diff.mean(axis=1, keepdims=True)).max() <= RTOL * scale


def test_to_mne_ica_survives_save_and_read_ica(raw, sep, tmp_path):
    sep.exclude = [2]
    try:
        ica = sep.to_mne_ica()
    finally:
        sep.exclude = []
    path = tmp_path / "rec-ica.fif"
    ica.save(path, verbose="error")
    back = mne.preprocessing.read_ica(path, verbose="error")
    assert back.method == ICA_METHOD and back.fit_params == ica.fit_params
    assert back.exclude == [2] and back.n_pca_components == len(raw.ch_names)
    _close(back.get_sources(raw).get_data(), sep.get_sources(raw).get_data())
    _close(back.get_components(), sep.get_components())
    _close(back.apply(raw.copy()).get_data(), sep.apply(raw, exclude=[2]).get_data())
    assert "imported_sepkit" in repr(back)


def test_to_mne_ica_carries_the_fitted_samples_and_reject(raw, sep, tmp_path):
    assert sep.to_mne_ica().n_samples_ == raw.n_times and sep.to_mne_ica().reject_ is None
    reject = dict(eeg=float(np.ptp(raw.get_data(), axis=1).max()) / 2)
    thinned = IVAESeparator(N_SOURCES, mixing="linear", random_state=0).fit(
        raw, decim=2, reject=reject
    )
    assert 0 < thinned.n_samples_ < raw.n_times // 2
    ica = thinned.to_mne_ica()
    assert ica.n_samples_ == thinned.n_samples_ and ica.reject_ == reject
    ica.save(tmp_path / "thin-ica.fif", verbose="error")
    back = mne.preprocessing.read_ica(tmp_path / "thin-ica.fif", verbose="error")
    assert back.n_samples_ == thinned.n_samples_ and back.reject_ == reject


def test_a_loaded_separator_keeps_what_read_ica_keeps(raw, tmp_path):
    # Audit: after save / load, info_, n_samples_ and reject_ were gone, so to_mne_ica
    # and the topographies needed info= (MNE's read_ica restores them).
    reject = dict(eeg=float(np.ptp(raw.get_data(), axis=1).max()) / 2)
    fitted = IVAESeparator(N_SOURCES, mixing="linear", random_state=0).fit(raw, reject=reject)
    back = IVAESeparator.load(fitted.save(tmp_path / "m.safetensors"))
    assert back.n_samples_ == fitted.n_samples_ and back.reject_ == reject
    ica, want = back.to_mne_ica(), fitted.to_mne_ica()
    assert ica.n_samples_ == want.n_samples_ and ica.info["sfreq"] == want.info["sfreq"]
    assert ica.info["highpass"] == want.info["highpass"]
    locs = [ch["loc"][:3] for ch in ica.info["chs"]]
    np.testing.assert_allclose(locs, [ch["loc"][:3] for ch in want.info["chs"]], atol=1e-9)
    _close(ica.get_components(), want.get_components())
    # An edited info_ is caught (its digest) and a malformed one named.
    from sepkit.serialization import _check_fit_record, _Invalid

    with pytest.raises(_Invalid, match=r"'info_' must be null or an object with keys"):
        _check_fit_record({"info_": {"sfreq": 128.0}}, list(fitted.ch_names_))
    with pytest.raises(_Invalid, match=r"'n_samples_' must be null or an integer"):
        _check_fit_record({"n_samples_": "many"}, None)


def test_mne_tools_work_on_the_exported_ica(raw, sep):
    ica = sep.to_mne_ica()
    figs = ica.plot_components(show=False)
    assert figs is not None
    indices, scores = ica.find_bads_eog(
        raw, ch_name="Fp1", measure="correlation", threshold=0.5, verbose="error"
    )
    assert np.shape(scores) == (N_SOURCES,) and np.isfinite(scores).all()
    # The source most like Fp1 (make_eeg's blink) first, as sepkit's find_bads_eog finds
    # it (their band-pass filters differ, so the scores differ a little).
    ours, our_scores = sep.find_bads_eog(raw, ch_name="Fp1")
    assert indices[0] == int(np.argmax(np.abs(our_scores))) == ours[0]
    figs = ica.plot_sources(raw, show=False)
    assert figs is not None
    matplotlib.pyplot.close("all")


def test_to_mne_ica_takes_info_when_fitted_on_an_array(raw, sep):
    names = list(sep.ch_names_)
    arr = IVAESeparator(N_SOURCES, mixing="linear", random_state=0, device="cpu")
    arr.fit(raw.get_data(picks=names))
    with pytest.raises(ValueError, match=r"to_mne_ica needs the channels' mne\.Info, but the "):
        arr.to_mne_ica()
    # Fitted on an array, the channels are ch0, ch1, ...: an Info must name them so.
    with pytest.raises(ValueError, match=r"'info' lacks fitted channel\(s\) \['ch0', 'ch1'"):
        arr.to_mne_ica(info=raw)
    with pytest.raises(TypeError, match="'info' must be None, an mne.Info or an mne.io.Raw, got"):
        sep.to_mne_ica(info="raw")
    renamed = raw.copy().rename_channels({n: f"ch{i}" for i, n in enumerate(names)})
    ica = arr.to_mne_ica(info=renamed.info)
    _close(ica.get_sources(renamed).get_data(), arr.transform(raw.get_data(picks=names)))


def test_to_mne_ica_reorders_channels_and_drops_projectors(raw, sep):
    shuffled = raw.copy().reorder_channels(list(reversed(raw.ch_names)))
    shuffled.set_eeg_reference("average", projection=True, verbose="error")
    ica = sep.to_mne_ica(info=shuffled)
    assert ica.ch_names == list(sep.ch_names_) and ica.info["projs"] == []
    _close(ica.get_sources(raw).get_data(), sep.get_sources(raw).get_data())


def test_to_mne_ica_refuses_families_without_an_unmixing_matrix(raw):
    small = raw.copy().pick(raw.ch_names[:4]).crop(0, 20)
    fits = {
        "network": (dict(mixing="nonlinear", n_steps=5, n_hidden=8), r"'network' family"),
        "post-nonlinear": (
            dict(mixing="post-nonlinear"),
            r"post-nonlinear model \(sensor_coefs_ set\)",
        ),
        # Audit: the flow was called "the post-nonlinear model".
        "flow": (
            dict(mixing="flow", fit_params={"n_steps": 2, "n_coupling": 2}),
            r"'flow' family \(mixing_='flow'\), an invertible neural network",
        ),
    }
    for kwargs, what in fits.values():
        sep = IVAESeparator(2, random_state=0, device="cpu", window=1.0, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sep.fit(small)
        with pytest.raises(
            ValueError,
            match=r"to_mne_ica exports only the family whose sources are a matrix times the "
            rf"channels, as an ICA's: family_='linear' without sensor unwarping \(sensor_coefs_ "
            rf"None\)\. This separator is the {what}.*Refit with mixing='linear'",
        ) as info:
            sep.to_mne_ica()
        # The same advice on the command line (sepkit separate --save-ica): an option, not
        # a Python call with an option inside ("IVAESeparator(n_sources, --mixing linear)").
        cli = command_line_phrasing(str(info.value))
        assert "Refit with --mixing linear" in cli and "IVAESeparator(" not in cli, cli
        with pytest.raises(ValueError, match=what):
            sep.label_components(small)
    # The tf family (convolutive audio): sources of a time-frequency model.
    from sepkit.io import Recording

    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((2, 8000)).astype(np.float32), 8000.0, ("a", "b"), "audio")
    sep = IVAESeparator(2, domain="tf", random_state=0, device="cpu")
    sep.set_params(fit_params=dict(n_iter=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sep.fit(rec)
    with pytest.raises(ValueError, match=r"This separator is the 'tf' family \(domain_='tf'\)"):
        sep.to_mne_ica(info=mne.create_info(["a", "b"], 8000.0, "eeg"))


# ---------------------------------------------------------- label_components
def test_label_components_one_label_per_source(raw, sep):
    _icalabel()
    with pytest.warns(RuntimeWarning) as record:
        result = sep.label_components(raw)
    messages = [str(w.message) for w in record]
    # make_eeg's Raw is neither 1-100 Hz nor marked average-referenced.
    ours = [m for m in messages if m.startswith("ICLabel expects EEG band-passed 1-100 Hz")]
    assert len(ours) == 1
    assert "re-referenced to the common average, and the separator's maps with it" in ours[0]
    assert "not low-passed at 100 Hz (sampled at 128 Hz" in ours[0]
    # (mne-icalabel's own note that ICLabel was trained on extended infomax maps comes
    # once per session, so a test run earlier may already have drawn it.)
    assert len(result["labels"]) == N_SOURCES
    assert set(result["labels"]) <= set(ICLABEL_CLASSES)
    assert result["probabilities"].shape == (N_SOURCES, 7)
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result["y_pred_proba"], result["probabilities"].max(axis=1))
    assert result["classes"] == ICLABEL_CLASSES
    # raw was not changed
    assert raw.info["custom_ref_applied"] == 0 and raw.info["highpass"] == 1.0


def test_label_components_takes_epochs_end_to_end(raw, sep):
    # It refused Epochs ("'raw' must be an mne.io.Raw"); mne-icalabel takes them.
    _icalabel()
    events = mne.make_fixed_length_events(raw, duration=2.0)
    epochs = mne.Epochs(raw, events, tmin=0.0, tmax=1.5, baseline=None, verbose="error")
    ends = mne.io.RawArray(np.concatenate(list(epochs.get_data()), axis=1), epochs.info)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, expected = sep.label_components(epochs), sep.label_components(ends)
    assert got["labels"] == expected["labels"]
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
    with pytest.raises(TypeError, match=r"label_components takes an mne.io.Raw or mne.Epochs"):
        sep.label_components(epochs.average())


def test_label_components_on_iclabel_ready_data_uses_the_export_as_it_is():
    _icalabel()
    raw, _, _ = make_eeg(N_SOURCES, duration=30.0, sample_rate=256.0, random_state=3)
    raw.filter(1.0, 100.0, verbose="error").set_eeg_reference("average", verbose="error")
    sep = IVAESeparator(N_SOURCES, mixing="linear", random_state=0, device="cpu").fit(raw)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = sep.label_components(raw)
    assert not [w for w in record if "ICLabel expects" in str(w.message)]
    assert len(result["labels"]) == N_SOURCES


def test_rereferenced_decomposition_gives_the_same_sources():
    # Noise-free data of rank 5 on 19 channels, not average-referenced: on the
    # re-referenced copy, the re-referenced ICA gives the separator's sources.
    from sepkit.io.mne_ica import iclabel_inputs

    raw, _, _ = make_eeg(5, duration=30.0, sample_rate=RATE, snr_db=None, reference=None,
                         random_state=4)  # fmt: skip
    raw.filter(1.0, None, verbose="error")
    sep = IVAESeparator(5, mixing="linear", random_state=0, device="cpu").fit(raw)
    ica = sep.to_mne_ica()
    _close(ica.get_sources(raw).get_data(), sep.get_sources(raw).get_data())
    with pytest.warns(RuntimeWarning, match="re-referenced to the common average"):
        inst, car = iclabel_inputs(raw, ica)
    assert inst.info["custom_ref_applied"] and raw.info["custom_ref_applied"] == 0
    # The copy is high-passed at 1 Hz already, as raw: same data, average-referenced.
    C = _average_reference_matrix(raw.info)
    _close(inst.get_data(), C @ raw.get_data())
    _close(car.get_sources(inst).get_data(), sep.get_sources(raw).get_data(), rtol=1e-4)
    _close(car.get_components(), C @ sep.get_components())


def test_average_reference_matrix_is_mne_s_average_reference(raw):
    rawb = raw.copy().load_data()
    rawb.info["bads"] = ["Fp1"]
    C = _average_reference_matrix(rawb.info)
    ref = rawb.copy().set_eeg_reference("average", verbose="error")
    _close(ref.get_data(), C @ rawb.get_data(), rtol=1e-12)


def test_label_components_refuses_what_iclabel_cannot_label(raw, sep, monkeypatch):
    _icalabel()
    # As many sources as channels, not average-referenced: the reference merges two.
    small = raw.copy().pick(raw.ch_names[:5])
    full = IVAESeparator(5, mixing="linear", window=1.0, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full.fit(small)
    with pytest.raises(
        ValueError,
        match=r"ICLabel needs the recording referenced to the common average, which leaves "
        r"rank 4 to the 5 fitted channels, but the separator has n_sources=5: the average "
        r"reference merges some of their maps\. Re-reference the recording before fitting "
        r"\(raw\.set_eeg_reference\('average'\)\) and fit at most 4 sources\.",
    ):
        full.label_components(small)
    # No EEG-typed channel among the fitted ones.
    misc = raw.copy().set_channel_types({n: "misc" for n in raw.ch_names}, verbose="error")
    with pytest.raises(ValueError, match=r"ICLabel labels EEG components, but none of the "):
        sep.label_components(misc)
    # No positions.
    bare = raw.copy().set_montage(None)
    with pytest.raises(ValueError, match=r"ICLabel reads each component's map off the electrode "):
        sep.label_components(bare)
    with pytest.raises(ValueError, match=r"Invalid value for the 'backend' parameter\. Allowed"):
        sep.label_components(raw, backend="tf")
    with pytest.raises(TypeError, match=r"'inst' must be an mne\.io\.Raw or mne\.Epochs \(e\.g\."):
        sep.label_components(raw.get_data())
    # mne-icalabel absent: the error says how to install it.
    monkeypatch.setitem(sys.modules, "mne_icalabel", None)
    with pytest.raises(
        ImportError, match=r"optional package mne-icalabel.*pip install sepkit\[eeg\]"
    ):
        sep.label_components(raw)


def test_iclabel_classes_and_selection():
    assert check_iclabel_classes("Eye blink, heart beat") == ("eye blink", "heart beat")
    with pytest.raises(ValueError, match=r"Invalid ICLabel class\(es\) \['blink'\]\. Allowed "):
        check_iclabel_classes("blink")
    with pytest.raises(ValueError, match=r"Invalid ICLabel class\(es\) \[''\]"):
        check_iclabel_classes("")
    proba = np.array([[0.9, 0.1, 0, 0, 0, 0, 0], [0.1, 0, 0.85, 0, 0, 0, 0.05]])
    assert select_sources(proba, ("eye blink",), 0.8) == [1]
    assert select_sources(proba, ("eye blink",), 0.9) == []
    assert select_sources(proba, ("brain", "eye blink"), 0.8) == [0, 1]


# ---------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def fif(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "rec_raw.fif"
    raw.save(path, verbose="error")
    return path


def test_cli_save_ica_writes_an_ica_of_the_output_set(fif, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["separate", str(fif), "--n-sources", "4", "--mixing", "linear", "-o", str(out)]
    assert main([*argv, "--save-ica", "--quiet"]) == 0, capsys.readouterr().err
    assert (out / "rec_ica.fif").is_file()
    ica = mne.preprocessing.read_ica(out / "rec_ica.fif", verbose="error")
    sep = IVAESeparator.load(out / "rec_model.safetensors")
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    _close(ica.get_sources(raw).get_data(), sep.transform(raw.get_data(picks=ica.ch_names)))
    assert json.loads((out / "rec_metrics.json").read_text())["ica_file"] == "rec_ica.fif"
    # A name of one's own; a rerun without --save-ica removes the earlier set's rec_ica.fif.
    assert main([*argv, "--save-ica", "sub-01-ica.fif", "--quiet", "--force"]) == 0
    assert (out / "sub-01-ica.fif").is_file() and not (out / "rec_ica.fif").exists()
    assert main([*argv, "--save-ica", str(out / "x_ica.fif"), "--quiet", "--force"]) == 0
    assert (out / "x_ica.fif").is_file()


def test_cli_exclude_iclabel(fif, tmp_path, capsys):
    _icalabel()
    out = tmp_path / "out"
    argv = ["separate", str(fif), "--n-sources", "4", "--mixing", "linear", "-o", str(out)]
    argv += ["--exclude", "iclabel", "--iclabel-classes", "eye blink,heart beat"]
    assert main([*argv, "--iclabel-threshold", "0.01", "--save-ica", "--quiet"]) == 0, (
        capsys.readouterr().err
    )
    metrics = json.loads((out / "rec_metrics.json").read_text())
    assert len(metrics["iclabel_labels"]) == 4 and len(metrics["iclabel_proba"]) == 4
    assert metrics["iclabel_classes"] == ["eye blink", "heart beat"]
    assert metrics["iclabel_threshold"] == 0.01
    # At p >= 0.01 some source is a blink or a heartbeat; the saved ICA excludes the same.
    assert metrics["excluded"]
    assert (out / "rec_cleaned_raw.fif").is_file()
    ica = mne.preprocessing.read_ica(out / "rec_ica.fif", verbose="error")
    assert ica.exclude == metrics["excluded"]


def test_cli_iclabel_and_save_ica_errors(fif, tmp_path, capsys, monkeypatch):
    from sepkit.io import write_raw_fif

    base = ["separate", str(fif), "--n-sources", "4", "-o", str(tmp_path / "o"), "--quiet"]
    cases = [
        (["--iclabel-threshold", "0.5"], "--iclabel-threshold sets which sources --exclude "
         "iclabel removes, but --exclude iclabel is not given. Pass --exclude iclabel too, or "
         "drop --iclabel-threshold."),
        (["--iclabel-classes", "eye blink"], "--iclabel-classes sets which sources"),
        (["--save-ica", "out.fif"], "--save-ica names an MNE ICA file, whose name ends in "
         "-ica.fif or _ica.fif (.gz) as read_ica expects, got 'out.fif'. Pass e.g. "
         "sub-01-ica.fif."),
        (["--save-ica", str(tmp_path / "elsewhere" / "a-ica.fif")], "--save-ica writes into "
         "the output folder"),
        (["--save-ica", "--mixing", "nonlinear"], "--save-ica needs a separator whose sources "
         "are a matrix times the channels (the linear family), but --mixing nonlinear fits "
         "another. Pass --mixing linear (or auto, the EEG default)."),
        (["--save-ica", "--domain", "tf"], "but --domain tf fits another"),
    ]  # fmt: skip
    if "mne_icalabel" in sys.modules or _has_icalabel():
        cases += [
            (["--exclude", "iclabel", "--iclabel-classes", "blink"], "--iclabel-classes: "
             "Invalid ICLabel class(es) ['blink']. Allowed classes are 'brain', "),
            (["--exclude", "iclabel", "--iclabel-threshold", "1.5"], "--iclabel-threshold is "
             "a probability, 0 < P <= 1, got 1.5. Pass e.g. 0.8."),
        ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("sepkit separate: error: ") and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1
    # Two inputs, one name.
    other = tmp_path / "two_raw.fif"
    other.symlink_to(fif)
    assert main([*base[:2], str(other), *base[2:], "--save-ica", "a-ica.fif"]) == 2
    assert "--save-ica a-ica.fif names one file, but 2 inputs were given" in (
        capsys.readouterr().err
    )
    # No positions, for ICLabel.
    bare = mne.io.read_raw_fif(fif, preload=True, verbose="error").set_montage(None)
    bare_path = write_raw_fif(bare, tmp_path / "bare_raw.fif")
    if _has_icalabel():
        assert main(["separate", str(bare_path), *base[2:], "--exclude", "iclabel"]) == 2
        assert "--exclude iclabel needs electrode positions, which bare_raw.fif lacks" in (
            capsys.readouterr().err
        )
    # mne-icalabel absent: one line, exit 2, before any fit.
    monkeypatch.setitem(sys.modules, "mne_icalabel", None)
    assert main([*base, "--exclude", "iclabel"]) == 2
    err = capsys.readouterr().err
    assert "--exclude iclabel: ICLabel labelling needs the optional package mne-icalabel" in err
    assert "pip install sepkit[eeg]" in err
    assert not (tmp_path / "o").exists()


def test_cli_save_ica_refuses_a_non_linear_model_file(fif, tmp_path, capsys):
    small = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    net = IVAESeparator(2, mixing="nonlinear", n_steps=5, n_hidden=8, window=1.0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit(small)
    model = net.save(tmp_path / "net.safetensors")
    argv = ["separate", str(fif), "--model", str(model), "-o", str(tmp_path / "o"), "--save-ica"]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "to_mne_ica exports only the family whose sources are a matrix" in err
    assert "the 'network' family" in err and not (tmp_path / "o").exists()


def _has_icalabel() -> bool:
    try:
        import mne_icalabel  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- real recording
@pytest.mark.shared_data
def test_iclabel_class_counts_sepkit_vs_picard_on_the_eeglab_sample():
    """ICLabel's class counts for sepkit's default and picard on EEGLAB's sample (printed)."""
    _icalabel()
    pytest.importorskip("picard")
    from mne_icalabel import label_components

    from sepkit.io import read_eeg

    path = SHARED / "eeg" / "eeglab" / "eeglab_data.set"
    if not path.exists():
        pytest.skip(f"{path} is absent (needs ../shared/data beside the project)")
    # ICLabel's preprocessing (1 Hz high-pass; 128 Hz sampling allows no 100 Hz low-pass;
    # average reference) before both fits, as recipes/eeg_real with 15 components.
    raw = read_eeg(path, picks="eeg")
    raw.set_channel_types({"EOG1": "eog", "EOG2": "eog"}, verbose="error")
    raw.filter(1.0, None, verbose="error").set_eeg_reference("average", verbose="error")
    counts = {}
    t0 = time.perf_counter()
    sep = IVAESeparator(15, random_state=0).fit(raw)
    fit_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts["sepkit"] = collections.Counter(sep.label_components(raw)["labels"])
    # picard as mne-icalabel recommends it (extended infomax's model).
    ica = mne.preprocessing.ICA(
        15, method="picard", fit_params=dict(ortho=False, extended=True), random_state=0
    )
    t0 = time.perf_counter()
    ica.fit(raw, verbose="error")
    picard_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts["picard"] = collections.Counter(
            label_components(raw, ica, method="iclabel")["labels"]
        )
    for name, count in counts.items():
        print(f"{name}: {dict(sorted(count.items()))}")
    print(f"fit seconds: sepkit {fit_s:.1f}, picard {picard_s:.1f}")
    for count in counts.values():
        assert sum(count.values()) == 15
        # One blink component each (recipes/eeg_real: |r| 0.876 / 0.879 with FPz).
        assert count["eye blink"] == 1
    assert counts["sepkit"]["brain"] >= counts["picard"]["brain"] - 1


def test_build_ica_refuses_what_no_ica_reproduces_and_keeps_one_source(raw, tmp_path):
    from sepkit.io.mne_ica import build_ica, pca_from_unmixing

    info = mne.pick_info(raw.info, [0, 1, 2, 3])
    rng = np.random.default_rng(0)
    unmixing = rng.standard_normal((2, 4))
    with pytest.raises(
        ValueError,
        match=r"The decomposition cannot be written as an MNE ICA exactly: the unmixing's rows "
        r"leave the PCA components' span \(relative residual",
    ):
        build_ica(unmixing, np.zeros(4), info, components=np.eye(4), variances=np.ones(4))
    data = rng.standard_normal((4, 500))
    components, variances = pca_from_unmixing(unmixing, data, np.zeros(4))
    with pytest.raises(ValueError, match=r"exactly: the mixing is not the unmixing's inverse"):
        build_ica(unmixing, np.zeros(4), info, components=components, variances=variances,
                  mixing=np.ones((4, 2)))  # fmt: skip
    # One source: MNE's constructor refuses n_components=1, read_ica must not.
    one = unmixing[:1]
    components, variances = pca_from_unmixing(one, data, np.zeros(4))
    ica = build_ica(one, np.zeros(4), info, components=components, variances=variances)
    ica.save(tmp_path / "one-ica.fif", verbose="error")
    back = mne.preprocessing.read_ica(tmp_path / "one-ica.fif", verbose="error")
    raw4 = mne.io.RawArray(data, info, verbose="error")
    _close(back.get_sources(raw4).get_data(), one @ data)


def test_save_ica_keeps_auto_on_the_linear_family_with_a_filter(tmp_path, capsys):
    # With --highpass, --mixing auto picks the post-nonlinear model for clipping sensors
    # (tests/cli: fit chooses it on this recording); no ICA file holds that model, and
    # --save-ica failed after the whole fit. Asked for an ICA, the run fits the linear one.
    raw, _, _ = make_eeg(
        4, duration=20.0, sample_rate=128.0, nonlinearity="saturation", random_state=2
    )
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    out = tmp_path / "out"
    argv = ["separate", str(path), "--n-sources", "4", "-o", str(out), "--highpass", "1"]
    code = main([*argv, "--save-ica"])
    said = capsys.readouterr()
    assert code == 0, said.err
    said = said.out + said.err
    assert "rec_raw.fif: --save-ica fits --mixing linear (MNE's ICA holds only the linear" in said
    assert json.loads((out / "rec_metrics.json").read_text())["mixing"] == "linear"
    ica = mne.preprocessing.read_ica(out / "rec_ica.fif", verbose="error")
    assert ica.n_components_ == 4


def test_an_epochs_fit_exports_as_an_epochs_decomposition(raw, tmp_path):
    # Audit: --save-ica of an Epochs fit wrote an ICA whose repr said "raw data".
    epochs = mne.make_fixed_length_epochs(raw, 2.0, preload=True, verbose="error")
    sep = IVAESeparator(N_SOURCES, mixing="linear", random_state=0).fit(epochs)
    assert sep.fitted_on_epochs_ and sep.to_mne_ica().current_fit == "epochs"
    assert "epochs decomposition" in repr(sep.to_mne_ica())
    back = IVAESeparator.load(sep.save(tmp_path / "e.safetensors"))
    assert back.to_mne_ica().current_fit == "epochs"
    sep.fit(raw)
    assert not sep.fitted_on_epochs_ and sep.to_mne_ica().current_fit == "raw"
