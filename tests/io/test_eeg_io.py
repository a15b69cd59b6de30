"""EEG loading, Recording conversion, channel checks, preprocessing helpers and
per-sample labels from annotations/events."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from sepkit import Recording
from sepkit.io import (
    SUPPORTED_EEG_EXTENSIONS,
    bad_annotation_mask,
    check_eeg_channels,
    filter_eeg,
    from_recording,
    highpass,
    is_epochs_file,
    is_highpassed,
    labels_from_annotations,
    labels_from_events,
    mark_bad_channels,
    notch,
    read_eeg,
    read_epochs,
    resample,
    set_reference,
    to_recording,
    warn_if_not_highpassed,
    write_epochs_fif,
    write_raw_fif,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLE_RATE = 100.0


def _shared(relpath: str) -> Path:
    path = SHARED / relpath
    if not path.exists():
        pytest.skip(f"{path} is absent (needs ../shared/data beside the project)")
    return path


def _raw(names=("Fz", "Cz", "Pz", "Oz"), n_seconds=10.0, data=None, types="eeg"):
    """A small RawArray in volts: independent noise, 10 uV RMS."""
    n_times = int(n_seconds * SAMPLE_RATE)
    if data is None:
        data = 10e-6 * np.random.default_rng(0).standard_normal((len(names), n_times))
    info = mne.create_info(list(names), SAMPLE_RATE, types)
    return mne.io.RawArray(data, info, verbose="error")


def _save(raw, path: Path) -> Path:
    raw.save(path, verbose="error")
    return path


# --------------------------------------------------------------------------
# Real formats (shared data)
# --------------------------------------------------------------------------

# (file, EEG channels, sample rate, samples, first EEG channel), measured with MNE 1.13.
REAL_FILES = [
    ("eeg/eeglab/eeglab_data.set", 32, 128.0, 30504, "FPz"),
    ("eeg/formats/test.vhdr", 26, 1000.0, 7900, "FP1"),
    ("eeg/formats/test.edf", 138, 512.0, 3072, "A1"),
    ("eeg/formats/test.bdf", 72, 2048.0, 2048, "Fp1"),
]


@pytest.mark.shared_data
@pytest.mark.parametrize(("relpath", "n_eeg", "sample_rate", "n_times", "first"), REAL_FILES)
def test_read_real_formats(relpath, n_eeg, sample_rate, n_times, first):
    raw = read_eeg(_shared(relpath))
    assert set(raw.get_channel_types()) == {"eeg"}
    assert len(raw.ch_names) == n_eeg
    assert raw.info["sfreq"] == sample_rate
    assert raw.n_times == n_times
    assert raw.ch_names[0] == first
    rec = to_recording(raw)
    assert rec.kind == "eeg"
    assert rec.data.dtype == np.float32
    assert rec.data.shape == (n_eeg, n_times)
    assert rec.sample_rate == sample_rate
    # Volts, not microvolts: channel standard deviations are far below 1 V.
    assert np.median(rec.data.std(axis=1)) < 1e-2


@pytest.mark.shared_data
def test_read_all_channels_with_picks_none():
    raw = read_eeg(_shared("eeg/formats/test.vhdr"), picks=None)
    assert len(raw.ch_names) == 32
    assert "misc" in raw.get_channel_types()


@pytest.mark.shared_data
def test_side_file_suggests_header():
    with pytest.raises(ValueError, match=r"Unsupported file extension '\.eeg'.*pass .*test\.vhdr"):
        read_eeg(_shared("eeg/formats/test.eeg"))


@pytest.mark.shared_data
def test_real_roundtrip_and_event_labels():
    raw = read_eeg(_shared("eeg/eeglab/eeglab_data.set"))
    rec = to_recording(raw)
    back = from_recording(rec, raw.info)
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-12)
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    u, keep = labels_from_events(raw, events, event_id)
    first = events[:, 0].min() - raw.first_samp
    assert (u[:first] == -1).all() and not keep[:first].any()
    assert set(np.unique(u[first:])) == set(range(len(event_id)))


# --------------------------------------------------------------------------
# read_eeg with files we write (always run)
# --------------------------------------------------------------------------


def test_fif_roundtrip_keeps_data_and_annotations(tmp_path):
    raw = _raw()
    raw.set_annotations(mne.Annotations([1.0], [2.0], ["task"]))
    path = _save(raw, tmp_path / "sub_raw.fif")
    back = read_eeg(path)
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6)
    assert back.ch_names == raw.ch_names
    assert back.info["sfreq"] == SAMPLE_RATE
    assert list(back.annotations.description) == ["task"]
    assert back.annotations.duration[0] == pytest.approx(2.0)


def _epochs(preload: bool = False):
    raw = _raw()
    events = mne.make_fixed_length_events(raw, duration=1.0)
    return mne.Epochs(
        raw, events, tmin=0.0, tmax=0.5, baseline=None, preload=preload, verbose="error"
    )


@pytest.mark.parametrize(
    ("name", "average", "match"),
    [
        (
            "sub-epo.fif",
            False,
            r"'.*sub-epo.fif' holds MNE Epochs, not a continuous recording: read_eeg reads "
            r"continuous ones \(Raw\). Read it with sepkit.io.read_epochs",
        ),
        (
            "sub-ave.fif",
            True,
            r"'.*sub-ave.fif' holds MNE Evoked data \(averages over epochs\), .*Fit the "
            r"Epochs or the Raw it was averaged from",
        ),
    ],
)
def test_epochs_and_evoked_files_are_named_as_such(tmp_path, name, average, match):
    # Read as a Raw, both said "No raw data ... Check that the file is complete and
    # of the format its name says", which they are.
    epochs = _epochs()
    (epochs.average() if average else epochs).save(tmp_path / name, verbose="error")
    with pytest.raises(ValueError, match=match):
        read_eeg(tmp_path / name)


def test_read_and_write_epochs(tmp_path):
    raw = _raw()
    epochs = _epochs(preload=True)
    path = write_epochs_fif(epochs, tmp_path / "sub_epo.fif")
    assert is_epochs_file(path) and not is_epochs_file(tmp_path / "absent_epo.fif")
    back = read_epochs(path)
    np.testing.assert_allclose(back.get_data(), epochs.get_data(), rtol=1e-6)
    assert back.ch_names == epochs.ch_names and len(back) == len(epochs)
    # A continuous recording is not Epochs, for either reader.
    raw_path = write_raw_fif(raw, tmp_path / "sub_raw.fif")
    assert not is_epochs_file(raw_path)
    with pytest.raises(
        ValueError, match=r"Could not read '.*sub_raw.fif' as MNE Epochs: .*read_eeg"
    ):
        read_epochs(raw_path)
    with pytest.raises(ValueError, match=r"read_epochs reads MNE Epochs from FIF files .*'x.edf'"):
        read_epochs(tmp_path / "x.edf")
    with pytest.raises(FileNotFoundError, match=r"No Epochs file at 'path' \(.*gone_epo.fif\)"):
        read_epochs(tmp_path / "gone_epo.fif")
    (tmp_path / "empty_epo.fif").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Epochs file '.*empty_epo.fif' is empty \(0 bytes\)"):
        read_epochs(tmp_path / "empty_epo.fif")
    # Writing: MNE's naming rule, no silent overwrite, Epochs only.
    with pytest.raises(ValueError, match=r"ends in -epo.fif or _epo.fif \(.gz\) .*'sub.fif'"):
        write_epochs_fif(epochs, tmp_path / "sub.fif")
    with pytest.raises(FileExistsError, match=r"sub_epo.fif exists. Pass overwrite=True"):
        write_epochs_fif(epochs, path)
    with pytest.raises(TypeError, match=r"'epochs' must be mne.Epochs, got RawArray"):
        write_epochs_fif(raw, tmp_path / "r_epo.fif")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty_epo.fif",
        "sub_epo.fif",
        "sub_raw.fif",
    ]


def test_read_eeg_picks_drops_other_types(tmp_path):
    raw = _raw(names=("Fz", "Cz", "EOG", "STI"), types=["eeg", "eeg", "eog", "stim"])
    path = _save(raw, tmp_path / "mixed_raw.fif")
    assert read_eeg(path).ch_names == ["Fz", "Cz"]
    assert read_eeg(path, picks=["Cz", "EOG"]).ch_names == ["Cz", "EOG"]
    assert read_eeg(path, picks=None).ch_names == ["Fz", "Cz", "EOG", "STI"]
    # A list of channel types, as MNE takes it: the recording's order, not the list's.
    assert read_eeg(path, picks=["eog", "eeg"]).ch_names == ["Fz", "Cz", "EOG"]
    # MNE's picks strings: "data" (brain channels, no EOG or stim) and "all".
    assert read_eeg(path, picks="data").ch_names == ["Fz", "Cz"]
    assert read_eeg(path, picks="all").ch_names == ["Fz", "Cz", "EOG", "STI"]
    with pytest.raises(
        ValueError,
        match=r"'picks' mixes channel types \['eeg'\] with channel names \['Cz'\]; pass a list of types or a list of names",
    ):
        read_eeg(path, picks=["eeg", "Cz"])


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Unsupported file extension '\.xyz' for 'path'") as err:
        read_eeg(path)
    for ext in (".bdf", ".edf", ".fif", ".set", ".vhdr", ".cnt", ".gdf"):
        assert ext in SUPPORTED_EEG_EXTENSIONS
        assert ext in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope_raw\.fif"):
        read_eeg(tmp_path / "nope_raw.fif")


def test_path_type_error():
    with pytest.raises(TypeError, match="'path' must be a str or pathlib.Path"):
        read_eeg(42)


def test_no_eeg_channels_after_picks(tmp_path):
    path = _save(_raw(names=("EOG", "STI"), types=["eog", "stim"]), tmp_path / "noeeg_raw.fif")
    with pytest.raises(ValueError, match=r"No EEG channels in noeeg_raw\.fif.*\['eog', 'stim'\]"):
        read_eeg(path)
    eeg_path = _save(_raw(names=("Fz", "EOG"), types=["eeg", "eog"]), tmp_path / "eog_raw.fif")
    with pytest.raises(ValueError, match="No EEG channels .* picks=\\['EOG'\\]"):
        read_eeg(eeg_path, picks=["EOG"])


def test_picks_errors(tmp_path):
    path = _save(_raw(), tmp_path / "p_raw.fif")
    with pytest.raises(ValueError, match=r"'picks' names channel\(s\) \['T7'\]"):
        read_eeg(path, picks=["Fz", "T7"])
    with pytest.raises(
        ValueError,
        match=r"neither a channel name nor a channel type\. This recording has channel types "
        r"\['eeg'\]; pass one of them, a list of channel names, 'data' \(its EEG, MEG, sEEG, "
        r"ECoG channels\) or 'all', as MNE's picks\.",
    ):
        read_eeg(path, picks="brain")


def test_montage_missing_positions(tmp_path):
    path = _save(_raw(names=("Fz", "CZ", "FOO1")), tmp_path / "m_raw.fif")
    with pytest.raises(ValueError, match=r"no position for 1 EEG channel\(s\): FOO1\..*on_missing"):
        read_eeg(path, montage="standard_1020")
    with pytest.warns(RuntimeWarning, match="FOO1"):
        raw = read_eeg(path, montage="standard_1020", on_missing="warn")
    pos = raw.get_montage().get_positions()["ch_pos"]
    # Case-insensitive match: "CZ" got Cz's position; FOO1 has none.
    assert np.isfinite(pos["Fz"]).all() and np.isfinite(pos["CZ"]).all()
    assert np.isnan(pos["FOO1"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_eeg(path, montage="standard_1020", on_missing="ignore")
    with pytest.raises(ValueError, match="Invalid value for the 'on_missing' parameter"):
        read_eeg(path, montage="standard_1020", on_missing="skip")


def test_unknown_montage_name(tmp_path):
    path = _save(_raw(), tmp_path / "u_raw.fif")
    with pytest.raises(ValueError, match="Invalid value for the 'montage' parameter.*biosemi64"):
        read_eeg(path, montage="biosemi65")
    with pytest.raises(TypeError, match="'montage' must be None"):
        read_eeg(path, montage=64)


# --------------------------------------------------------------------------
# Recording conversion
# --------------------------------------------------------------------------


def test_recording_roundtrip_with_and_without_info():
    raw = _raw(names=("Fz", "Cz", "EOG", "Pz"), types=["eeg", "eeg", "eog", "eeg"])
    raw.info["bads"] = ["Pz"]
    rec = to_recording(raw)
    assert rec.ch_names == ("Fz", "Cz")  # EEG only, bad channel left out
    assert rec.kind == "eeg" and rec.data.dtype == np.float32
    np.testing.assert_allclose(rec.data, raw.get_data(picks=["Fz", "Cz"]), rtol=1e-6)

    back = from_recording(rec, raw.info)
    assert back.ch_names == ["Fz", "Cz"]
    assert back.info["sfreq"] == SAMPLE_RATE
    np.testing.assert_array_equal(back.get_data(), rec.data.astype(np.float64))

    fresh = from_recording(rec.replace(ch_names=("s0", "s1")), ch_types="misc")
    assert fresh.get_channel_types() == ["misc", "misc"]


def test_recording_conversion_errors():
    raw = _raw()
    rec = to_recording(raw)
    with pytest.raises(TypeError, match="'raw' must be an mne.io.Raw"):
        to_recording(rec.data)
    with pytest.raises(TypeError, match="'rec' must be a sepkit.Recording"):
        from_recording(raw)
    with pytest.raises(ValueError, match=r"'info' has no channel\(s\) \['T7'\]"):
        from_recording(Recording(rec.data[:1], SAMPLE_RATE, ("T7",)), raw.info)
    with pytest.raises(ValueError, match="'info' has sample rate 100.0 Hz but 'rec' has 200.0"):
        from_recording(rec.replace(sample_rate=200.0), raw.info)


# --------------------------------------------------------------------------
# Channel checks
# --------------------------------------------------------------------------


def test_check_and_mark_bad_channels():
    raw = _raw(names=("Fz", "Cz", "Pz", "C3"))
    data = raw.get_data()
    data[1] = 3e-3  # a constant DC offset: flat
    data[3, 10] = np.nan
    raw = mne.io.RawArray(data, raw.info, verbose="error")
    with pytest.raises(ValueError, match=r"NaN or Inf values in C3; flat signal .* in Cz\."):
        check_eeg_channels(raw)
    marked = mark_bad_channels(raw)
    assert marked.info["bads"] == ["C3", "Cz"]
    assert raw.info["bads"] == []  # input untouched
    check_eeg_channels(marked)  # bad channels are skipped: no error


# --------------------------------------------------------------------------
# Preprocessing helpers
# --------------------------------------------------------------------------


def _sines(freqs, n_seconds=20.0, amplitude=10e-6):
    t = np.arange(int(n_seconds * SAMPLE_RATE)) / SAMPLE_RATE
    row = sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)
    return _raw(names=("Fz", "Cz"), data=np.vstack([row, row + 5e-3]), n_seconds=n_seconds)


def _amplitude_at(x, freq):
    spectrum = np.abs(np.fft.rfft(x)) * 2 / x.size
    return spectrum[int(round(freq * x.size / SAMPLE_RATE))]


def test_highpass_removes_drift_keeps_signal_and_warning():
    raw = _sines([0.1, 10.0])
    with pytest.warns(RuntimeWarning, match="high-pass edge of 0 Hz, below 0.5 Hz"):
        assert warn_if_not_highpassed(raw) is False
    out = highpass(raw, 1.0)
    x = out.get_data()[1]
    mid = slice(500, -500)  # away from filter edges
    assert abs(np.mean(x[mid])) < 1e-7  # 5 mV DC offset gone
    assert _amplitude_at(x, 0.1) < 0.05 * _amplitude_at(raw.get_data()[1] - 5e-3, 0.1)
    assert _amplitude_at(x, 10.0) == pytest.approx(10e-6, rel=0.05)
    assert is_highpassed(out) and not is_highpassed(raw)
    assert raw.info["highpass"] == 0.0  # input untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_not_highpassed(out) is True


def test_filters_include_bad_channels_as_mne_does():
    # Audit: with a channel marked bad, highpass left it unfiltered and MNE then kept
    # info["highpass"] at 0, so fit told the user to high-pass what they just had.
    raw = _sines([0.1, 10.0])
    raw.info["bads"] = [raw.ch_names[1]]
    out = highpass(raw, 1.0)
    assert out.info["highpass"] == 1.0 and is_highpassed(out)
    want = raw.copy().filter(1.0, None, picks="eeg", verbose="error").get_data()
    np.testing.assert_allclose(out.get_data(), want)
    notched = notch(raw, 30.0).get_data()
    np.testing.assert_allclose(notched, raw.copy().notch_filter([30.0], verbose="error").get_data())


def test_bandpass_and_notch():
    raw = _sines([10.0, 30.0])
    low = filter_eeg(raw, 1.0, 20.0).get_data()[0]
    assert _amplitude_at(low, 30.0) < 0.05 * _amplitude_at(low, 10.0)
    assert filter_eeg(raw, 1.0, 20.0).info["lowpass"] == 20.0
    notched = notch(raw, 30.0).get_data()[0]
    assert _amplitude_at(notched, 30.0) < 0.05 * 10e-6
    assert _amplitude_at(notched, 10.0) == pytest.approx(10e-6, rel=0.05)


def test_filter_errors():
    raw = _raw()
    with pytest.raises(
        ValueError, match=r"h_freq=60 Hz must be below the Nyquist frequency \(50 Hz\)"
    ):
        filter_eeg(raw, 1.0, 60.0)
    with pytest.raises(
        ValueError, match=r"l_freq=50 Hz must be below the Nyquist frequency \(50 Hz\)"
    ):
        filter_eeg(raw, 50.0, None)
    with pytest.raises(
        ValueError, match=r"l_freq=20 Hz must be below h_freq=10 Hz for a band-pass"
    ):
        filter_eeg(raw, 20.0, 10.0)
    with pytest.raises(ValueError, match="both None"):
        filter_eeg(raw, None, None)
    with pytest.raises(ValueError, match="'l_freq' must be > 0"):
        highpass(raw, 0.0)
    with pytest.raises(ValueError, match=r"'freqs' must be below the Nyquist frequency \(50 Hz\)"):
        notch(raw, 60.0)


def test_set_reference_and_resample():
    raw = _raw()
    avg = set_reference(raw).get_data()
    np.testing.assert_allclose(avg.mean(axis=0), 0.0, atol=1e-18)
    cz = set_reference(raw, "Cz")
    np.testing.assert_allclose(cz.get_data(picks="Cz"), 0.0, atol=1e-18)
    with pytest.raises(
        ValueError, match=r"'ref' must be 'average' or existing channel names; \['M1'\]"
    ):
        set_reference(raw, ["M1"])
    raw.set_annotations(mne.Annotations([2.0], [1.0], ["task"]))
    half = resample(raw, SAMPLE_RATE / 2)
    assert half.info["sfreq"] == SAMPLE_RATE / 2
    assert half.n_times == raw.n_times // 2
    u, _ = labels_from_annotations(half)
    assert np.flatnonzero(u == 0).tolist() == list(range(100, 150))


# --------------------------------------------------------------------------
# Labels from annotations and events
# --------------------------------------------------------------------------


def _annotated():
    raw = _raw()
    raw.set_annotations(
        mne.Annotations(
            onset=[0.0, 3.0, 4.0, 8.0],
            duration=[3.0, 3.0, 1.0, 0.5],
            description=["rest", "task", "BAD_move", "edge boundary"],
        )
    )
    return raw


def test_labels_from_annotations_drop_unlabelled():
    raw = _annotated()
    u, keep = labels_from_annotations(raw)
    assert u.dtype == np.int64 and u.shape == keep.shape == (raw.n_times,)
    assert (u[:300] == 0).all() and (u[300:600] == 1).all() and (u[600:] == -1).all()
    expected_keep = np.zeros(raw.n_times, bool)
    expected_keep[:600] = True
    expected_keep[400:500] = False  # BAD_move
    np.testing.assert_array_equal(keep, expected_keep)
    _, keep_all = labels_from_annotations(raw, reject_by_annotation=False)
    assert keep_all[:600].all()


def test_labels_from_annotations_own_label_and_mapping():
    raw = _annotated()
    u, keep = labels_from_annotations(raw, unlabelled="own")
    # "edge boundary" is no label, and not bad either (MNE's rule): kept, in the own label.
    assert (u[600:] == 2).all() and keep[600:850].all()
    u, keep = labels_from_annotations(raw, mapping={"task": 5})
    assert (u[300:600] == 5).all() and (u[:300] == -1).all()
    with pytest.raises(ValueError, match="'mapping' values must be non-negative integer labels"):
        labels_from_annotations(raw, mapping={"task": -1})
    with pytest.raises(ValueError, match="Invalid value for the 'unlabelled' parameter"):
        labels_from_annotations(raw, unlabelled="keep")


def test_labels_follow_crop():
    raw = _annotated()
    u_full, keep_full = labels_from_annotations(raw)
    cropped = raw.copy().crop(tmin=2.0)
    assert cropped.first_samp > 0
    u, keep = labels_from_annotations(cropped)
    np.testing.assert_array_equal(u, u_full[200:])
    np.testing.assert_array_equal(keep, keep_full[200:])
    np.testing.assert_array_equal(bad_annotation_mask(cropped), bad_annotation_mask(raw)[200:])


def test_bad_annotation_mask_prefixes():
    raw = _raw()
    raw.set_annotations(
        mne.Annotations([1.0, 3.0, 5.0, 7.0], [0.5, 0.5, 0.5, 0.5],
                        ["BAD_blink", "bad segment", "EDGE boundary", "blink"])
    )  # fmt: skip
    mask = bad_annotation_mask(raw)
    # MNE's rule (audit: "EDGE" was counted bad too): only "bad", any case.
    assert mask.dtype == bool and mask.sum() == 100
    for start in (100, 300):
        assert mask[start : start + 50].all()
    assert not mask[500:550].any() and not mask[700:750].any()
    kept = raw.get_data(reject_by_annotation="omit", verbose="error").shape[1]
    assert kept == raw.n_times - mask.sum()


def test_labels_from_events_hold_and_duration():
    raw = _raw()
    first = raw.first_samp
    events = np.array([[first + 100, 0, 7], [first + 400, 0, 3], [first + 500, 0, 9],
                       [first + 700, 0, 7]])  # fmt: skip
    u, keep = labels_from_events(raw, events, {"a": 3, "b": 7})
    # Labels in code order: 3 -> 0, 7 -> 1; code 9 is ignored and ends nothing.
    assert (u[:100] == -1).all() and not keep[:100].any()
    assert (u[100:400] == 1).all() and (u[400:700] == 0).all() and (u[700:] == 1).all()
    u, keep = labels_from_events(raw, events, duration=0.5, unlabelled="own")
    assert (u[500:550] == 2).all()  # code 9 -> label 2 when every code is used
    assert (u[150:400] == 3).all() and keep.all()
    with pytest.raises(
        ValueError, match=r"'events' must be an integer array of shape \(n_events, 3\)"
    ):
        labels_from_events(raw, events[:, :2])


@pytest.mark.parametrize("suffix", [".fif", ".edf", ".set"])
def test_reader_errors_name_the_file(tmp_path, suffix):
    from sepkit.io import read_eeg

    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"'{empty}' is empty \(0 bytes\)"):
        read_eeg(empty)
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"not an EEG file at all" * 20)
    with pytest.raises(ValueError, match=rf"Could not read '{corrupt}' as {suffix} EEG"):
        read_eeg(corrupt)
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder, not an EEG file"):
        read_eeg(folder)


def test_channel_std_in_blocks_matches_numpy():
    from sepkit.io.eeg import _channel_std

    rng = np.random.default_rng(0)
    # Three blocks and a bit; offsets far above the spread test the pooled form.
    x = rng.standard_normal((4, 200001)) * 1e-5 + np.array([[3e-3], [0.0], [-1e-4], [0.0]])
    x[3, 70000] = np.inf
    raw = mne.io.RawArray(x, mne.create_info(4, 256.0, "eeg"), verbose="error")
    finite, std = _channel_std(raw, np.arange(4))
    np.testing.assert_array_equal(finite, [True, True, True, False])
    np.testing.assert_allclose(std[:3], x[:3].std(axis=1), rtol=1e-9)
    assert std[3] == np.inf


def test_a_truncated_raw_fif_is_not_called_evoked(tmp_path):
    # mne.read_evokeds gives [] (no error) on a FIF file without averages, so a
    # truncated Raw was reported as "holds MNE Evoked data".
    path = _save(_raw(), tmp_path / "full_raw.fif")
    cut = tmp_path / "cut_raw.fif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"Could not read '.*cut_raw\.fif' as \.fif EEG") as err:
        read_eeg(cut)
    assert "Evoked" not in str(err.value)


def test_named_bad_channels_are_picked_as_mne_picks_them():
    # Audit: to_recording(raw, picks=["Fz", "Pz"]) dropped the bad Pz without a word;
    # MNE keeps a bad channel that is named (raw.get_data(picks=[...]), ICA.fit).
    raw = _sines([10.0])
    raw.info["bads"] = ["Cz"]
    assert to_recording(raw).ch_names == ("Fz",)
    rec = to_recording(raw, picks=["Cz", "Fz"])
    assert rec.ch_names == ("Cz", "Fz")
    np.testing.assert_allclose(rec.data, raw.get_data(picks=["Cz", "Fz"]), rtol=1e-6)


def test_mff_folder_reaches_mne_reader(tmp_path, monkeypatch):
    # Audit: an EGI MFF recording is a folder, and read_eeg refused every folder.
    (tmp_path / "rec.mff").mkdir()
    with pytest.raises(ValueError, match=r"Could not read '.*rec.mff' as .mff EEG"):
        read_eeg(tmp_path / "rec.mff")

    def missing(*args, **kwargs):  # MNE's words when mffpy is not installed
        raise RuntimeError(
            "For reading EGI MFF data to work, the module mffpy is needed, but it could not "
            "be imported. Use the following installation method appropriate for your "
            "environment:\n\n    pip install mffpy"
        )

    monkeypatch.setattr(mne.io, "read_raw_egi", missing)
    with pytest.raises(ImportError, match=r"MNE needs an optional package to read .*rec.mff.*"
                       r"the module mffpy is needed.*pip install 'sepkit\[eeg\]'"):  # fmt: skip
        read_eeg(tmp_path / "rec.mff")
    (tmp_path / "x.edf").mkdir()
    with pytest.raises(ValueError, match=r"is a folder, not an EEG file"):
        read_eeg(tmp_path / "x.edf")


def test_fif_writes_refuse_non_ascii_names_and_folders(tmp_path):
    # Audit: a bare UnicodeEncodeError from MNE's writer, and a staging path in the
    # IsADirectoryError of a folder named like a FIF file.
    raw = _raw(names=("Öz", "Fz"))
    with pytest.raises(ValueError, match=r"stores channel names in ASCII, and \['Öz'\] are not"
                       r"\. Rename them first, e\.g\. inst\.rename_channels\(\{'Öz': '_z'\}\)"):  # fmt: skip
        write_raw_fif(raw, tmp_path / "u_raw.fif")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d_raw.fif").mkdir()
    with pytest.raises(IsADirectoryError, match=r"'path' \(.*d_raw.fif\) is a folder; a FIF"):
        write_raw_fif(_raw(), tmp_path / "d_raw.fif", overwrite=True)


def test_read_eeg_pathlike_empty_data_and_epochs_warning(tmp_path):
    import os

    class P(os.PathLike):  # not a pathlib.Path, as MNE takes it
        def __init__(self, path):
            self.path = str(path)

        def __fspath__(self):
            return self.path

    path = _save(_raw(), tmp_path / "a_raw.fif")
    assert read_eeg(P(path)).ch_names == ["Fz", "Cz", "Pz", "Oz"]
    # An Epochs file: our error, without MNE's naming warning before it.
    epochs = mne.make_fixed_length_epochs(_raw(), 1.0, verbose="error")
    epochs.save(tmp_path / "e-epo.fif", verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"holds MNE Epochs, not a continuous recording"):
            read_eeg(tmp_path / "e-epo.fif")
    # A BrainVision header whose data file is empty: no samples.
    header = (
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\n"
        "Codepage=UTF-8\nDataFile=x.eeg\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        "NumberOfChannels=2\nSamplingInterval=4000\n[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n"
        "[Channel Infos]\nCh1=Fz,,0.1,µV\nCh2=Cz,,0.1,µV\n"
    )
    (tmp_path / "x.vhdr").write_text(header, encoding="utf-8")
    (tmp_path / "x.eeg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x.vhdr' holds no samples"):
        read_eeg(tmp_path / "x.vhdr", preload=False)


def test_recording_refuses_repeated_channel_names():
    with pytest.raises(ValueError, match=r"ch_names must be distinct .* \['Fz'\] repeat"):
        Recording(np.zeros((3, 10)), 100.0, ("Fz", "Cz", "Fz"), "eeg")
