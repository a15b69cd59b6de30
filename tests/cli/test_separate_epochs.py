"""``sepkit separate`` on a FIF file of MNE Epochs: fitted and separated end to end."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import main
from sepkit.datasets import make_eeg

RATE = 128.0


@pytest.fixture(scope="module")
def epochs_file(tmp_path_factory):
    """(epochs, S, path): make_eeg's 6 sources and an EOG lead, cut into 2 s epochs.

    make_eeg's second source is a blink; the EOG lead records it with noise.
    """
    raw, S, _ = make_eeg(6, duration=60.0, sample_rate=RATE, random_state=1)
    eog = S[1] / S[1].std() * 50e-6 + 5e-6 * np.random.default_rng(0).standard_normal(S.shape[1])
    info = mne.create_info(["EOG"], RATE, ["eog"])
    raw.add_channels([mne.io.RawArray(eog[None], info, verbose="error")], force_update_info=True)
    events = mne.make_fixed_length_events(raw, duration=2.0)
    epochs = mne.Epochs(
        raw, events, tmin=0.0, tmax=2.0 - 1 / RATE, baseline=None, preload=True, verbose="error"
    )
    path = tmp_path_factory.mktemp("epochs") / "sub-01-epo.fif"
    epochs.save(path, verbose="error")
    return epochs, S, path


def _same_in_float32(actual, expected):
    # FIF stores single precision by default.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_separate_epochs_writes_epochs(epochs_file, tmp_path, capsys):
    epochs, S, path = epochs_file
    out = tmp_path / "out"
    argv = ["separate", str(path), "--n-sources", "6", "-o", str(out), "--exclude", "eog"]
    assert main([*argv, "--save-ica", "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "sub-01_cleaned_epo.fif", "sub-01_ica.fif", "sub-01_metrics.json",
        "sub-01_model.safetensors", "sub-01_sources_epo.fif",
    ]  # fmt: skip
    sep = IVAESeparator.load(out / "sub-01_model.safetensors")
    # The fit saw the epochs end to end: the same model as fit(epochs) in Python.
    again = IVAESeparator(6, random_state=0).fit(epochs)
    np.testing.assert_allclose(again.get_components(), sep.get_components(), rtol=1e-4, atol=1e-6)
    sources = mne.read_epochs(out / "sub-01_sources_epo.fif", verbose="error")
    expected = sep.get_sources(epochs)
    assert sources.ch_names == expected.ch_names and len(sources) == len(epochs)
    _same_in_float32(sources.get_data(), expected.get_data())
    # The blink source is the one removed, and the cleaned epochs are apply's.
    info = json.loads((out / "sub-01_metrics.json").read_text())
    ends = expected.get_data().transpose(1, 0, 2).reshape(6, -1)
    truth = np.abs([np.corrcoef(s, S[1][: ends.shape[1]])[0, 1] for s in ends])
    assert info["excluded"] == [int(np.argmax(truth))] and truth.max() > 0.9
    cleaned = mne.read_epochs(out / "sub-01_cleaned_epo.fif", verbose="error")
    assert cleaned.ch_names == epochs.ch_names  # the EOG lead kept, as MNE's apply does
    _same_in_float32(cleaned.get_data(), sep.apply(epochs, exclude=info["excluded"]).get_data())
    # The ICA file reads back in MNE, with the removal of this run.
    ica = mne.preprocessing.read_ica(out / "sub-01_ica.fif", verbose="error")
    assert ica.exclude == info["excluded"]
    picks = sep.ch_names_
    got = ica.get_sources(epochs.copy().pick(picks)).get_data()
    np.testing.assert_allclose(got, expected.get_data(), rtol=1e-3, atol=1e-3 * np.abs(got).max())

    # A saved model applied as it is, with --plots (the traces of the epochs end to end).
    out2 = tmp_path / "applied"
    model = str(out / "sub-01_model.safetensors")
    assert (
        main(["separate", str(path), "--model", model, "-o", str(out2), "--plots", "--quiet"]) == 0
    )
    assert sorted(p.name for p in out2.iterdir()) == [
        "sub-01_metrics.json", "sub-01_sources.png", "sub-01_sources_epo.fif",
        "sub-01_topographies.png",
    ]  # fmt: skip
    applied = mne.read_epochs(out2 / "sub-01_sources_epo.fif", verbose="error")
    _same_in_float32(applied.get_data(), expected.get_data())


def test_separate_epochs_refusals_write_nothing(epochs_file, tmp_path, capsys):
    _, _, path = epochs_file
    out = tmp_path / "out"
    assert main(["separate", str(path), "--n-sources", "6", "-o", str(out), "--quiet"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    # Fine-tuning continues a network on a continuous recording.
    model = str(out / "sub-01_model.safetensors")
    argv = [
        "separate",
        str(path),
        "--model",
        model,
        "--fine-tune",
        "-o",
        str(out),
        "--force",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        "sub-01-epo.fif holds MNE Epochs, and --fine-tune continues a network's training on a "
        "continuous recording. Apply the model as it is (drop --fine-tune)" in err
    )
    # An earlier output set is not overwritten without --force.
    assert main(["separate", str(path), "--n-sources", "6", "-o", str(out), "--quiet"]) == 2
    assert "sub-01_sources_epo.fif" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_fit_takes_epochs(epochs_file, tmp_path, capsys):
    epochs, _, path = epochs_file
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(path), "--n-sources", "6", "-o", str(model), "--quiet"]) == 0
    again = IVAESeparator(6, random_state=0).fit(epochs)
    got = IVAESeparator.load(model).get_components()
    np.testing.assert_allclose(got, again.get_components(), rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    argv = [
        "fit",
        str(path),
        "--init",
        "ivae-eeg1020-256hz-v1",
        "-o",
        str(tmp_path / "n.safetensors"),
    ]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sub-01-epo.fif holds MNE Epochs, and --init continues" in err


def test_reject_drops_whole_epochs_from_the_fit(epochs_file, tmp_path, capsys):
    epochs, _, path = epochs_file
    # The threshold between the epochs' peak-to-peak amplitudes: some are dropped.
    ptp = np.ptp(epochs.get_data(picks="eeg"), axis=-1).max(axis=-1)
    threshold = float(np.median(ptp))
    kept = epochs.copy().drop_bad(reject=dict(eeg=threshold), verbose="error")
    assert 0 < len(kept) < len(epochs)
    out = tmp_path / "out"
    argv = ["separate", str(path), "--n-sources", "6", "-o", str(out)]
    assert main([*argv, "--reject", f"eeg={threshold!r}"]) == 0
    said = capsys.readouterr().err
    assert f"sub-01-epo.fif: fitting on {len(kept)} of {len(epochs)} epochs" in said
    info = json.loads((out / "sub-01_metrics.json").read_text())
    assert info["n_samples_fitted"] == len(kept) * len(epochs.times)
    assert info["reject"] == {"eeg": threshold}
    sep = IVAESeparator.load(out / "sub-01_model.safetensors")
    again = IVAESeparator(6, random_state=0).fit(kept)
    np.testing.assert_allclose(again.get_components(), sep.get_components(), rtol=1e-4, atol=1e-6)
    # Sources for every epoch, the dropped ones too.
    assert len(mne.read_epochs(out / "sub-01_sources_epo.fif", verbose="error")) == len(epochs)
    # sepkit fit drops them alike; a threshold that drops every epoch is one line.
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(path), "--n-sources", "6", "-o", str(model), "--quiet",
                 "--reject", f"eeg={threshold!r}"]) == 0  # fmt: skip
    np.testing.assert_allclose(
        IVAESeparator.load(model).get_components(), sep.get_components(), rtol=1e-6
    )
    capsys.readouterr()
    assert main([*argv, "--quiet", "--force", "--flat", "eeg=1.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"sepkit separate: error: sub-01-epo.fif: --reject / --flat dropped every one of the "
        f"{len(epochs)} epochs, so nothing is left to fit. Check the thresholds' unit (volts "
        "for EEG: 150e-6 is 150 uV)."
    )
    # --tstep has no stretches to set in Epochs (audit: the error said --reject was not given).
    assert main([*argv, "--quiet", "--force", "--reject", "eeg=1.0", "--tstep", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sepkit separate: error: --tstep sets the stretches of a continuous "
        "recording that --reject / --flat judge, but sub-01-epo.fif holds Epochs, each judged "
        "whole. Drop --tstep."
    )
