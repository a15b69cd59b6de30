"""Reading, resampling and writing audio files (sepkit.io.audio)."""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepkit.io import Recording
from sepkit.io import audio as audio_mod
from sepkit.io.audio import read_audio, resample, write_audio, write_sources

SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "audio"
RATE = 8000


def _tones(n_channels=3, n_times=RATE, rate=RATE, amplitude=0.5):
    """Distinct sines per channel, so channel order and slices are visible."""
    t = np.arange(n_times) / rate
    freqs = 220.0 * (1 + np.arange(n_channels))
    return (amplitude * np.sin(2 * np.pi * freqs[:, None] * t)).astype(np.float32)


def _write(path, data, rate=RATE, **kwargs):
    sf.write(str(path), data.T, rate, **kwargs)
    return path


def _peak_freq(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        ("wav", "FLOAT", 0.0),
        ("wav", "PCM_16", 2.0**-15),
        ("flac", "PCM_24", 2.0**-23),
    ],
)
def test_lossless_round_trip(tmp_path, suffix, subtype, atol):
    data = _tones()
    path = _write(tmp_path / f"x.{suffix}", data, subtype=subtype)
    rec = read_audio(path)
    assert isinstance(rec, Recording)
    assert rec.data.dtype == np.float32
    assert rec.data.shape == data.shape
    assert rec.sample_rate == RATE
    assert rec.kind == "audio"
    assert rec.ch_names == ("ch0", "ch1", "ch2")
    np.testing.assert_allclose(rec.data, data, atol=atol, rtol=0)


def test_ogg_vorbis_round_trip(tmp_path):
    data = _tones(n_channels=2)
    rec = read_audio(_write(tmp_path / "x.ogg", data))
    assert rec.data.shape == data.shape
    # Lossy codec: the waveform survives with a high SNR, and channels keep their order.
    for decoded, original in zip(rec.data, data, strict=True):
        snr_db = 10 * np.log10(np.sum(original**2) / np.sum((decoded - original) ** 2))
        assert snr_db > 20


@pytest.mark.parametrize(("suffix", "subtype"), [("wav", "PCM_16"), ("flac", None), ("ogg", None)])
def test_slice_equals_slicing_full_read(tmp_path, suffix, subtype):
    kwargs = {} if subtype is None else {"subtype": subtype}
    path = _write(tmp_path / f"x.{suffix}", _tones(), **kwargs)
    full = read_audio(path)
    start, stop = 0.25, 0.6
    part = read_audio(path, start=start, stop=stop)
    first, last = round(start * RATE), round(stop * RATE)
    np.testing.assert_array_equal(part.data, full.data[:, first:last])
    np.testing.assert_array_equal(read_audio(path, start=start).data, full.data[:, first:])
    np.testing.assert_array_equal(read_audio(path, stop=stop).data, full.data[:, :last])


def test_slice_decodes_only_the_slice(tmp_path, monkeypatch):
    path = _write(tmp_path / "x.wav", _tones(n_times=4 * RATE))
    requested = []
    original_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    rec = read_audio(path, start=1.0, stop=1.5)
    assert requested == [rec.n_times] == [round(0.5 * RATE)]


def test_channel_selection(tmp_path):
    data = _tones(n_channels=4)
    path = _write(tmp_path / "x.wav", data, subtype="FLOAT")
    rec = read_audio(path, channels=[2, 0])
    np.testing.assert_array_equal(rec.data, data[[2, 0]])
    assert rec.ch_names == ("ch2", "ch0")
    one = read_audio(path, channels=-1)
    np.testing.assert_array_equal(one.data, data[[3]])
    assert one.ch_names == ("ch3",)
    both = read_audio(path, channels=(1, 3), start=0.5)
    np.testing.assert_array_equal(both.data, data[[1, 3], RATE // 2 :])


def test_read_resamples_and_keeps_a_sine(tmp_path):
    freq, n_times = 440.0, RATE
    data = _tones(n_channels=1, n_times=n_times)  # 220 Hz
    data = np.vstack([data, (0.5 * np.sin(2 * np.pi * freq * np.arange(n_times) / RATE))])
    path = _write(tmp_path / "x.wav", data.astype(np.float32), subtype="FLOAT")
    new_rate = 16000
    rec = read_audio(path, sample_rate=new_rate)
    assert rec.sample_rate == new_rate
    assert rec.n_times == math.ceil(n_times * new_rate / RATE)
    assert _peak_freq(rec.data[1], new_rate) == pytest.approx(freq, abs=new_rate / rec.n_times)
    # Amplitude kept away from the edges, where the filter sees zero padding.
    inner = rec.data[1, new_rate // 10 : -new_rate // 10]
    assert np.max(np.abs(inner)) == pytest.approx(0.5, rel=0.01)


def test_resample_removes_content_above_new_nyquist():
    rate, new_rate = 16000, 8000
    t = np.arange(rate) / rate
    low = 0.5 * np.sin(2 * np.pi * 1000 * t)
    high = 0.5 * np.sin(2 * np.pi * 5000 * t)  # would alias to 3000 Hz
    rec = Recording(np.stack([low, high]), sample_rate=rate, kind="audio")
    out = resample(rec, new_rate)
    assert out.sample_rate == new_rate and out.ch_names == rec.ch_names
    assert out.n_times == new_rate
    rms = np.sqrt(np.mean(out.data**2, axis=1))
    assert rms[0] == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert rms[1] < 0.01 * rms[0]
    assert resample(rec, rate) is rec


def test_resample_errors():
    rec = Recording(np.zeros((1, 100)), sample_rate=RATE)
    with pytest.raises(ValueError, match=r"'sample_rate' must be a whole number of Hz.*8000\.5"):
        resample(rec, 8000.5)
    with pytest.raises(ValueError, match="'sample_rate' must be > 0"):
        resample(rec, 0)
    with pytest.raises(TypeError, match="'rec' must be a Recording, got ndarray"):
        resample(np.zeros((1, 100)), RATE)


def test_audioread_fallback_when_soundfile_cannot_open(tmp_path, monkeypatch):
    data = _tones()
    path = _write(tmp_path / "x.wav", data, subtype="PCM_16")
    expected = read_audio(path, channels=[1], start=0.1, stop=0.3)

    def refuse(*args, **kwargs):
        raise sf.SoundFileRuntimeError("Format not recognised (simulated)")

    # librosa also tries soundfile first, so this forces audioread's decoder.
    monkeypatch.setattr(sf, "SoundFile", refuse)
    rec = read_audio(path, channels=[1], start=0.1, stop=0.3)
    np.testing.assert_array_equal(rec.data, expected.data)
    assert rec.ch_names == ("ch1",) and rec.sample_rate == RATE
    with pytest.raises(ValueError, match="stop=2.0 s is past the end"):
        read_audio(path, stop=2.0)


# --------------------------------------------------------------------------- #
# Read errors: each names the file
# --------------------------------------------------------------------------- #
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Audio file '.*nope\.wav' does not exist"):
        read_audio(tmp_path / "nope.wav")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not an audio file"):
        read_audio(tmp_path)


def test_path_type():
    with pytest.raises(TypeError, match="'path' must be a str or os.PathLike.*got int"):
        read_audio(3)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*empty\.wav' is empty \(0 bytes\)"):
        read_audio(path)


def test_zero_frames(tmp_path):
    path = _write(tmp_path / "none.wav", np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match=r"'.*none\.wav' .*holds no audio frames \(0 frames\)"):
        read_audio(path)


def test_truncated_wav(tmp_path):
    path = _write(tmp_path / "cut.wav", _tones(), subtype="PCM_16")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"'.*cut\.wav' is truncated: its header declares 8000"):
        read_audio(path)


def test_truncated_flac(tmp_path):
    path = _write(tmp_path / "cut.flac", _tones())
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"'.*cut\.flac'.*(truncated|corrupt)"):
        read_audio(path)


def test_unsupported_format(tmp_path):
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"definitely not audio " * 50)
    with pytest.raises(
        ValueError, match=r"Could not read '.*voice\.m4a': its format is not supported"
    ):
        read_audio(path)
    with pytest.raises(ValueError, match="need ffmpeg installed"):
        read_audio(path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"channels": [3]},
            ValueError,
            r"Channel index 3 .* out of range: '.*x\.wav' has 3 channel",
        ),
        ({"channels": [-4]}, ValueError, r"Channel index -4 .* valid indices are 0 to 2"),
        ({"channels": [0, 0]}, ValueError, "selects the same channel more than once"),
        ({"channels": []}, ValueError, "'channels' is empty"),
        ({"channels": "0"}, TypeError, "'channels' must be None, an int or a sequence of ints"),
        ({"channels": [0.5]}, TypeError, "'channels' must hold integer channel indices"),
        ({"start": 0.5, "stop": 0.2}, ValueError, r"'start' must be before 'stop'.*x\.wav"),
        ({"start": 0.5, "stop": 0.5}, ValueError, "'start' must be before 'stop'"),
        (
            {"start": 1.0},
            ValueError,
            r"start=1.0 s is at or past the end of '.*x\.wav', which lasts 1 s",
        ),
        (
            {"start": 0.99999},  # below 1 s, but it rounds to the frame past the end
            ValueError,
            r"start=0.99999 s is at or past .*a start rounds to the nearest frame\)\. Pass a "
            r"start of at most 0\.99\d* s \(the last frame\)",
        ),
        ({"stop": 1.5}, ValueError, r"stop=1.5 s is past the end of '.*x\.wav'.*Pass stop=None"),
        ({"start": -1.0}, ValueError, "'start' must be >= 0.0"),
        ({"stop": 0.0}, ValueError, "'stop' must be > 0.0"),
        ({"start": 0.1, "stop": 0.10001}, ValueError, "select no whole sample"),
        ({"sample_rate": -8000}, ValueError, "'sample_rate' must be > 0.0"),
        ({"start": "1s"}, TypeError, "'start' must be a number"),
    ],
)
def test_read_argument_errors(tmp_path, kwargs, error, match):
    path = _write(tmp_path / "x.wav", _tones())
    with pytest.raises(error, match=match):
        read_audio(path, **kwargs)


# --------------------------------------------------------------------------- #
# write_audio
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("suffix", "atol"), [("wav", 2.0**-15), ("flac", 2.0**-15)])
def test_write_audio_round_trip(tmp_path, suffix, atol):
    rec = Recording(_tones(), sample_rate=RATE, kind="audio")
    path = write_audio(rec, tmp_path / f"out.{suffix}")
    assert path == tmp_path / f"out.{suffix}"
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.channels == rec.n_channels
    np.testing.assert_allclose(read_audio(path).data, rec.data, atol=atol, rtol=0)
    float_path = write_audio(rec, tmp_path / "out_float.wav", subtype="float")
    np.testing.assert_array_equal(read_audio(float_path).data, rec.data)


def test_write_audio_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"precious")
    rec = Recording(_tones(), sample_rate=RATE)
    with pytest.raises(FileExistsError, match=r"'out\.wav'.*Nothing was written.*overwrite=True"):
        write_audio(rec, path)
    assert path.read_bytes() == b"precious"
    write_audio(rec, path, overwrite=True)
    np.testing.assert_allclose(read_audio(path).data, rec.data, atol=2.0**-15)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]  # no temp file left


def test_write_audio_refuses_to_clip(tmp_path):
    rec = Recording(3.0 * _tones(), sample_rate=RATE)
    with pytest.raises(ValueError, match=r"peak is 1.5, above full scale.*as PCM_16 would clip"):
        write_audio(rec, tmp_path / "loud.wav")
    assert not (tmp_path / "loud.wav").exists()
    path = write_audio(rec, tmp_path / "loud.wav", subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(path).data, rec.data)


def test_write_audio_errors(tmp_path):
    rec = Recording(_tones(), sample_rate=RATE)
    with pytest.raises(ValueError, match=r"Cannot tell the audio format from the suffix.*'\.txt'"):
        write_audio(rec, tmp_path / "out.txt")
    with pytest.raises(ValueError, match=r"'subtype' parameter with format OGG.*'PCM_16'"):
        write_audio(rec, tmp_path / "out.ogg", subtype="PCM_16")
    with pytest.raises(FileNotFoundError, match="the folder '.*missing' does not exist"):
        write_audio(rec, tmp_path / "missing" / "out.wav")
    with pytest.raises(ValueError, match=r"sample_rate is 8000\.5 Hz.*resample\(rec, 8000\)"):
        write_audio(rec.replace(sample_rate=8000.5), tmp_path / "out.wav")
    nan = rec.data.copy()
    nan[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or Inf values \(in channel\(s\) \[1\]\)"):
        write_audio(rec.replace(data=nan), tmp_path / "out.wav")
    with pytest.raises(TypeError, match="'rec' must be a Recording, got ndarray"):
        write_audio(rec.data, tmp_path / "out.wav")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# write_sources
# --------------------------------------------------------------------------- #
def test_write_sources_names_and_content(tmp_path):
    rec = Recording(_tones(), sample_rate=RATE, kind="audio")
    out_dir = tmp_path / "sep" / "run1"  # created on demand
    paths, gains = write_sources(rec, out_dir, stem="mix7", return_gains=True)
    assert [p.name for p in paths] == ["mix7_s1.wav", "mix7_s2.wav", "mix7_s3.wav"]
    assert sorted(os.listdir(out_dir)) == [p.name for p in paths]
    # Below full scale: written unscaled, so a projected-back source keeps its level.
    np.testing.assert_array_equal(gains, np.ones(rec.n_channels))
    for path, source in zip(paths, rec.data, strict=True):
        back = read_audio(path)
        assert back.n_channels == 1 and sf.info(str(path)).subtype == "PCM_16"
        np.testing.assert_allclose(back.data[0], source, atol=2.0**-15)
    default = write_sources(rec, tmp_path / "d", format="flac")
    assert [p.name for p in default] == ["source_s1.flac", "source_s2.flac", "source_s3.flac"]


def test_write_sources_refusal_writes_nothing(tmp_path):
    rec = Recording(_tones(), sample_rate=RATE)
    existing = tmp_path / "est_s2.wav"
    existing.write_bytes(b"earlier result")
    with pytest.raises(
        FileExistsError, match=r"1 of the 3 target.*'est_s2\.wav'.*Nothing was written"
    ):
        write_sources(rec, tmp_path, stem="est")
    assert sorted(os.listdir(tmp_path)) == ["est_s2.wav"]
    assert existing.read_bytes() == b"earlier result"
    paths = write_sources(rec, tmp_path, stem="est", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)
    np.testing.assert_allclose(read_audio(existing).data[0], rec.data[1], atol=2.0**-15)


def test_write_sources_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    rec = Recording(_tones(), sample_rate=RATE)
    original_write = sf.write
    calls = []

    def fail_on_second(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original_write(file, *args, **kwargs)

    monkeypatch.setattr(audio_mod.sf, "write", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        write_sources(rec, tmp_path, stem="est")
    assert os.listdir(tmp_path) == []


def test_write_sources_failure_keeps_existing_files(tmp_path, monkeypatch):
    rec = Recording(_tones(), sample_rate=RATE)
    paths = write_sources(rec, tmp_path, stem="est")
    before = [p.read_bytes() for p in paths]
    original_write = sf.write
    calls = []

    def fail_on_third(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return original_write(file, *args, **kwargs)

    monkeypatch.setattr(audio_mod.sf, "write", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        write_sources(Recording(0.5 * rec.data, RATE), tmp_path, stem="est", overwrite=True)
    # The two files encoded before the failure were not renamed into place.
    assert [p.read_bytes() for p in paths] == before
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)


def test_written_files_get_the_usual_modes_and_follow_links(tmp_path):
    rec = Recording(_tones(), sample_rate=RATE)
    old = os.umask(0o022)
    try:
        (new,) = write_sources(Recording(rec.data[:1], RATE), tmp_path, stem="new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644  # as open() gives, not 0600
    os.chmod(new, 0o640)
    write_audio(rec, new, overwrite=True)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # the replaced file's mode
    link = tmp_path / "link.wav"
    link.symlink_to(new)
    write_audio(Recording(rec.data[:1], RATE), link, overwrite=True)
    assert link.is_symlink() and read_audio(new).data.shape[0] == 1  # written through


def test_write_sources_scales_down_without_clipping(tmp_path, caplog):
    data = _tones(amplitude=1.0)
    data[0] *= 3.0  # peak 3, far above full scale
    rec = Recording(data, sample_rate=RATE)
    with caplog.at_level(logging.INFO, logger="sepkit.io.audio"):
        paths, gains = write_sources(rec, tmp_path, return_gains=True)
    # One common gain keeps the sources' relative levels.
    assert np.all(gains == gains[0]) and gains[0] == pytest.approx(0.99 / 3.0, rel=1e-6)
    assert "scaled the sources" in caplog.text
    back = np.vstack([read_audio(p).data for p in paths])
    assert np.max(np.abs(back)) < 1.0
    np.testing.assert_allclose(back, data * gains[:, None], atol=2.0**-15)


def test_write_sources_float_subtype_is_never_scaled(tmp_path):
    data = 4.0 * _tones()
    paths, gains = write_sources(
        Recording(data, sample_rate=RATE), tmp_path, subtype="FLOAT", return_gains=True
    )
    np.testing.assert_array_equal(gains, 1.0)
    np.testing.assert_array_equal(np.vstack([read_audio(p).data for p in paths]), data)


def test_write_sources_peak_normalize_each_source(tmp_path):
    data = _tones()
    data *= np.array([[0.01], [5.0], [0.3]], dtype=np.float32)
    data[2] = 0.0  # a silent source is left alone
    paths, gains = write_sources(
        Recording(data, sample_rate=RATE), tmp_path, normalize="peak", return_gains=True
    )
    peaks = np.array([np.max(np.abs(read_audio(p).data)) for p in paths])
    np.testing.assert_allclose(peaks[:2], 0.99, atol=2.0**-14)
    assert peaks[2] == 0.0 and gains[2] == 1.0


def test_write_sources_errors(tmp_path):
    loud = Recording(3.0 * _tones(), sample_rate=RATE)
    with pytest.raises(
        ValueError, match=r"Source 1 peaks at 1.5, above full scale.*normalize=None"
    ):
        write_sources(loud, tmp_path, normalize=None)
    with pytest.raises(ValueError, match="'normalize' parameter. Allowed values are 'peak_safe'"):
        write_sources(loud, tmp_path, normalize="rms")
    with pytest.raises(ValueError, match="'format' parameter. Allowed values are 'wav', 'flac'"):
        write_sources(loud, tmp_path, format="mp3")
    with pytest.raises(ValueError, match="'stem' must be a plain file name prefix"):
        write_sources(loud, tmp_path, stem="sub/est")
    with pytest.raises(TypeError, match="'stem' must be a str"):
        write_sources(loud, tmp_path, stem=3)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="'.*afile' exists but is a file"):
        write_sources(loud, tmp_path / "afile")
    assert os.listdir(tmp_path) == ["afile"]


# --------------------------------------------------------------------------- #
# Real data
# --------------------------------------------------------------------------- #
@pytest.mark.shared_data
def test_read_real_speech_file():
    path = SHARED_AUDIO / "cmu_arctic_us_aew_a0001.wav"
    if not path.exists():
        pytest.skip(f"{path} is absent (needs ../shared/data beside the project)")
    info = sf.info(str(path))
    rec = read_audio(path)
    assert rec.n_channels == info.channels == 1
    assert rec.sample_rate == info.samplerate
    assert rec.n_times == info.frames
    assert 0 < np.max(np.abs(rec.data)) <= 1.0
    part = read_audio(path, start=1.0, stop=2.0, sample_rate=8000)
    assert part.sample_rate == 8000 and part.n_times == 8000
    direct = read_audio(path, start=1.0, stop=2.0)
    np.testing.assert_allclose(part.data, resample(direct, 8000).data)


def test_a_fifo_is_not_called_empty(tmp_path):
    import os

    from sepkit.io import read_audio

    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is not a regular file \(a FIFO, socket or device\)"):
        read_audio(fifo)
