"""Long inputs are streamed (sepkit.streaming): the same files as in memory, in bounded reads.

``sepkit separate`` streams every input longer than the fit's budget. Here the
thresholds are made tiny (``STREAM_SECONDS``, ``CHUNK_SECONDS``), so that
seconds-long recordings take the streamed path while the fit still sees all
of them: the streamed outputs must then equal the in-memory ones to float32
precision. Reads are counted at the lowest level (soundfile's
``SoundFile.read``, MNE's ``BaseRaw._read_segment``). Memory on real long files
is measured, not tested (see the issue 22 report).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import main
from sepkit.cli import separate as separate_cli

sf = pytest.importorskip("soundfile")
mne = pytest.importorskip("mne")
streaming = pytest.importorskip("sepkit.streaming")

RATE = 8000
LINEAR = ["--domain", "time", "--mixing", "linear", "--quiet"]


def _wav(path, seconds=3.0, rate=RATE, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    s = rng.standard_normal((2, t.size)) * (1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t))
    x = np.array([[1.0, 0.5], [0.3, 1.0]]) @ s
    sf.write(str(path), (0.1 * x).T, rate, subtype="FLOAT")
    return path


def _eeg(path, seconds=20.0, first_samp=0):
    """make_eeg's 6 channels at 128 Hz, plus an EOG lead that records the blink source."""
    from sepkit.datasets import make_eeg

    raw, S, _ = make_eeg(6, duration=seconds, sample_rate=128.0, random_state=1)
    eog = S[1] / S[1].std() * 50e-6 + 5e-6 * np.random.default_rng(0).standard_normal(S.shape[1])
    info = mne.create_info(["EOG"], 128.0, ["eog"])
    raw.add_channels([mne.io.RawArray(eog[None], info, verbose="error")], force_update_info=True)
    if first_samp:
        raw = mne.io.RawArray(raw.get_data(), raw.info, first_samp=first_samp, verbose="error")
    raw.set_annotations(mne.Annotations([2.0], [1.5], ["BAD_move"]))
    raw.save(path, verbose="error")
    return path


@pytest.fixture
def tiny(monkeypatch):
    """Stream anything over 1 s, 0.7 s at a time; the fit still sees 60 s (all)."""
    monkeypatch.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
    monkeypatch.setattr(streaming, "CHUNK_SECONDS", 0.7)
    monkeypatch.setitem(streaming.MAX_FIT_SECONDS, "eeg", 60.0)


def _run(argv):
    assert main([str(a) for a in argv]) == 0


def _metrics(folder: Path, stem: str) -> dict:
    return json.loads((folder / f"{stem}_metrics.json").read_text())


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_keys_and_model(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["streamed"] is False and b["streamed"] is True
    skip = {"streamed", "seconds"}
    assert {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


@pytest.mark.parametrize("options", [LINEAR, ["--domain", "tf", "--quiet"]])
def test_streamed_audio_equals_in_memory(tmp_path, monkeypatch, capsys, options):
    wav = _wav(tmp_path / "a.wav")
    mem, streamed = tmp_path / "mem", tmp_path / "streamed"
    _run(["separate", wav, "--n-sources", "2", "-o", mem, "--plots", *options])
    assert "streamed" not in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
        m.setattr(streaming, "CHUNK_SECONDS", 0.7)
        argv = ["separate", wav, "--n-sources", "2", "-o", streamed, "--plots", *options]
        _run([a for a in argv if a != "--quiet"])
    err = capsys.readouterr().err
    assert (
        "a.wav: 3.0 s, longer than 1 s, is streamed: the fit sees all of it; its sources are "
        "written 0.7 s at a time" in err.splitlines()
    )
    assert _names(mem) == _names(streamed)
    _same_keys_and_model(_metrics(mem, "a"), _metrics(streamed, "a"))
    for k in (1, 2):
        x, rate = sf.read(str(mem / f"a_s{k}.wav"), dtype="int16")
        y, _ = sf.read(str(streamed / f"a_s{k}.wav"), dtype="int16")
        assert rate == RATE and x.shape == y.shape
        # PCM_16 of the same float32 sources: at most one step apart (a rounding tie).
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1
    # The models are the same fit, so their float sources agree to float32 precision.
    rec = streaming.open_recording(wav)
    sep = IVAESeparator.load(streamed / "a_model.safetensors")
    ref = IVAESeparator.load(mem / "a_model.safetensors").transform(
        streaming.fit_excerpt(rec, 60.0)
    )
    got = np.concatenate([S for _, _, S in streaming.iter_sources(sep, rec)], axis=1)
    np.testing.assert_allclose(got, ref.data, rtol=1e-5, atol=1e-6 * np.abs(ref.data).max())


def test_streamed_eeg_equals_in_memory(tmp_path, monkeypatch, capsys):
    path = _eeg(tmp_path / "rec_raw.fif", first_samp=300)
    mem, streamed = tmp_path / "mem", tmp_path / "streamed"
    argv = ["separate", path, "--n-sources", "6", "--exclude", "eog", "--plots", "--quiet"]
    _run([*argv, "-o", mem])
    with monkeypatch.context() as m:
        m.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
        m.setattr(streaming, "CHUNK_SECONDS", 0.7)
        _run([*argv[:-1], "-o", streamed])
    assert "rec_raw.fif: 20.0 s, longer than 1 s, is streamed: the fit and --exclude see all of " \
        "it; its sources are written 0.7 s at a time" in capsys.readouterr().err  # fmt: skip
    assert _names(mem) == _names(streamed)
    a, b = _metrics(mem, "rec"), _metrics(streamed, "rec")
    _same_keys_and_model(a, b)
    assert a["excluded"] == b["excluded"] and len(a["excluded"]) == 1
    for name in ("rec_sources_raw.fif", "rec_cleaned_raw.fif"):
        x = mne.io.read_raw_fif(mem / name, verbose="error")
        y = mne.io.read_raw_fif(streamed / name, verbose="error")
        assert x.ch_names == y.ch_names and x.first_samp == y.first_samp == 300
        assert x.info["sfreq"] == y.info["sfreq"] and x.info["highpass"] == y.info["highpass"]
        assert list(x.annotations.onset) == list(y.annotations.onset)
        assert list(x.annotations.description) == list(y.annotations.description)
        ref = x.get_data()
        np.testing.assert_allclose(y.get_data(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_reads_never_exceed_a_chunk(tmp_path, monkeypatch):
    # 9 s, fit on 3 s (six blocks of 0.5 s), chunks of 1.5 s: every read of the
    # input is one of those, the first second (read for the checks) or the
    # first and last sample (_probe's check for a truncated file).
    reads = []
    real_read = sf.SoundFile.read

    def counted(self, frames=-1, *a, **kw):
        out = real_read(self, frames, *a, **kw)
        reads.append((Path(self.name).name, len(out)))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counted)
    monkeypatch.setattr(separate_cli, "STREAM_SECONDS", {"audio": 2.0, "eeg": 2.0})
    monkeypatch.setattr(streaming, "CHUNK_SECONDS", 1.5)
    monkeypatch.setitem(streaming.MAX_FIT_SECONDS, "audio", 3.0)
    monkeypatch.setitem(streaming.MAX_FIT_SECONDS, "eeg", 4.5)
    wav = _wav(tmp_path / "long.wav", seconds=9.0)
    _run(["separate", wav, "--n-sources", "2", "-o", tmp_path / "out", *LINEAR])
    of_input = sorted(n for name, n in reads if name == "long.wav")
    # The linear model reads no context: each chunk once, nothing more.
    assert of_input == sorted([1, 1, RATE] + [RATE // 2] * 6 + [int(1.5 * RATE)] * 6)
    temp = [n for name, n in reads if name != "long.wav"]  # the second, encoding pass
    assert temp and max(temp) <= int(1.5 * RATE)

    spans = []
    real_segment = mne.io.BaseRaw._read_segment

    def segment(self, start=0, stop=None, *a, **kw):
        out = real_segment(self, start, stop, *a, **kw)
        spans.append((type(self).__name__, out.shape[1]))
        return out

    monkeypatch.setattr(mne.io.BaseRaw, "_read_segment", segment)
    path = _eeg(tmp_path / "eeg_raw.fif")
    spans.clear()
    argv = ["separate", path, "--n-sources", "6", "-o", tmp_path / "eeg", "--exclude", "0"]
    _run([*argv, "--quiet"])
    of_input = sorted(n for kind, n in spans if kind == "Raw")
    # The first second, the fit's six blocks of 0.75 s, then chunks of 1.5 s
    # (20 s = 13 x 192 + 64 samples) for the sources and again for the cleaned file.
    assert of_input == sorted([128] + [96] * 6 + ([192] * 13 + [64]) * 2)
    assert (tmp_path / "eeg" / "eeg_cleaned_raw.fif").is_file()


def test_streamed_network_reads_no_u(tmp_path, tiny, capsys):
    wav = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    argv = ["separate", wav, "--n-sources", "2", "-o", out, "--domain", "time"]
    _run([*argv, "--mixing", "nonlinear", "--steps", "3"])
    err = capsys.readouterr().err
    # Said once, on the streaming line; no warning about a setting the user never gave.
    assert err.count("encoder_u") == 1 and (
        "a.wav: 3.0 s, longer than 1 s, is streamed: the fit sees all of it; a network fitted "
        "here reads no u (encoder_u=False: a chunk has no window u); its sources are written "
        "0.7 s at a time" in err.splitlines()
    )
    sep = IVAESeparator.load(out / "a_model.safetensors")
    assert sep.family_ == "network" and sep.encoder_u is False
    assert _metrics(out, "a")["streamed"] is True and sep.n_steps_run_ == 3


def test_streamed_with_a_model_and_resample(tmp_path, monkeypatch, capsys):
    # A model fitted at 8 kHz, applied to a 16 kHz recording: streamed and in
    # memory resample alike (the chunks are resampled with context).
    model = tmp_path / "m.safetensors"
    _run(["fit", _wav(tmp_path / "a.wav"), "--n-sources", "2", "-o", model, *LINEAR])
    wav16 = _wav(tmp_path / "b.wav", seconds=2.0, rate=16000, seed=1)
    argv = ["separate", wav16, "--model", model, "--resample"]
    capsys.readouterr()
    _run([*argv, "-o", tmp_path / "mem"])
    # The sources are at the model's rate, and the run says so (audit: it did not).
    assert "b.wav: resampled from 16000 Hz to the model's 8000 Hz; its sources are written at " \
        "8000 Hz" in capsys.readouterr().err.splitlines()  # fmt: skip
    argv.append("--quiet")
    monkeypatch.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
    monkeypatch.setattr(streaming, "CHUNK_SECONDS", 0.3)
    _run([*argv, "-o", tmp_path / "streamed"])
    assert _names(tmp_path / "mem") == _names(tmp_path / "streamed") == [
        "b_metrics.json", "b_s1.wav", "b_s2.wav",
    ]  # fmt: skip
    for k in (1, 2):
        x, rate = sf.read(str(tmp_path / "mem" / f"b_s{k}.wav"), dtype="int16")
        y, _ = sf.read(str(tmp_path / "streamed" / f"b_s{k}.wav"), dtype="int16")
        assert rate == RATE and x.shape == y.shape == (2 * RATE,)
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def _one_line(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("reading ")]
    assert len(lines) == 1 and lines[0].startswith("sepkit separate: error: "), lines
    return lines[0]


def test_streamed_bad_inputs_are_one_line_before_any_work(tmp_path, tiny, capsys):
    # An EEG model at another rate: a streamed EEG recording is not resampled.
    eeg = _eeg(tmp_path / "rec_raw.fif")
    argv = ["separate", eeg, "--model", "ivae-eeg1020-256hz-v1", "-o", tmp_path / "x"]
    for extra in ([], ["--resample"]):
        assert main([str(a) for a in argv + extra]) == 2
        assert _one_line(capsys) == (
            "sepkit separate: error: rec_raw.fif has sample_rate 128 Hz but the model expects "
            "256 Hz, and it is streamed (20.0 s): EEG is resampled only in one piece. Resample "
            "it first (raw.resample(256), then raw.save), then separate it."
        )
    # Audio at another rate without --resample: the in-memory message, in option terms.
    model = tmp_path / "m.safetensors"
    _run(["fit", _wav(tmp_path / "a.wav"), "--n-sources", "2", "-o", model, *LINEAR])
    wav16 = _wav(tmp_path / "b.wav", rate=16000)
    assert main(["separate", str(wav16), "--model", str(model), "-o", str(tmp_path / "x")]) == 2
    assert _one_line(capsys) == (
        "sepkit separate: error: b.wav has sample_rate 16000 Hz but the model expects 8000 Hz. "
        "Pass --resample to resample it, or resample it yourself first."
    )
    # A model whose encoder reads u, fitted on 0.5 s, given 3 s: refused before reading.
    short = _wav(tmp_path / "short.wav", seconds=0.5)
    net = tmp_path / "net.safetensors"
    fit = ["fit", short, "--n-sources", "2", "-o", net, "--domain", "time"]
    _run([*fit, "--mixing", "nonlinear", "--steps", "2", "--quiet"])
    assert IVAESeparator.load(net).fitted_.needs_u
    argv = ["separate", str(tmp_path / "a.wav"), "--model", str(net), "-o", str(tmp_path / "x")]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert re.search(r"error: a.wav has \d+ windows of \d+ samples but the model \S+ was fitted on "
                     r"20, and its encoder", err)  # fmt: skip
    assert err.endswith(
        "its encoder reads the window index u, so it separates only recordings as long as the "
        "one it was fitted on. Fit a new separator instead: --n-sources 2 in place of --model."
    )
    assert not (tmp_path / "x").exists()


def test_non_finite_streamed_sources_write_nothing(tmp_path, tiny, monkeypatch, capsys):
    wav = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    real = IVAESeparator.transform
    calls = []

    def nan_later(self, X, *a, **kw):
        S = real(self, X, *a, **kw)
        calls.append(1)
        return S if len(calls) < 3 else np.full_like(S, np.nan)  # the third chunk

    monkeypatch.setattr(IVAESeparator, "transform", nan_later)
    assert main([str(a) for a in ["separate", wav, "--n-sources", "2", "-o", out, *LINEAR]]) == 2
    assert _one_line(capsys) == (
        "sepkit separate: error: The model gave NaN or Inf sources for this recording (the "
        "recording itself is finite): the model is broken or the input far outside what it was "
        "fitted on. Refit it, or check that the recording matches the one of fit."
    )
    assert not out.exists()  # the staging folder went, and the folder made for it


def test_nan_in_a_streamed_eeg_channel(tmp_path, tiny, capsys):
    raw = mne.io.read_raw_fif(_eeg(tmp_path / "rec_raw.fif"), preload=True, verbose="error")
    IVAESeparator(6, random_state=0).fit(raw).save(tmp_path / "m.safetensors")
    raw._data[2, 2000] = np.nan
    raw.save(tmp_path / "nan_raw.fif", verbose="error")
    argv = ["separate", tmp_path / "nan_raw.fif", "--model", tmp_path / "m.safetensors"]
    assert main([str(a) for a in [*argv, "-o", tmp_path / "out", "--quiet"]]) == 2
    # Where, in seconds of the file (audit: the 0.7 s chunk's sample range was given).
    assert _one_line(capsys) == (
        f"sepkit separate: error: nan_raw.fif: channel(s) ['{raw.ch_names[2]}'] contain NaN or "
        f"Inf values from {2000 / 128:.3f} s to {2001 / 128:.3f} s (at least; read in chunks). "
        "Mark them bad (add them to raw.info['bads']) or interpolate them with "
        "raw.interpolate_bads(), and save the recording again."
    )
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the library
def test_fit_excerpt_is_bounded_and_spread(tmp_path):
    rec = streaming.open_recording(_wav(tmp_path / "a.wav", seconds=6.0))
    assert (rec.kind, rec.n_times, rec.sample_rate, rec.ch_names) == (
        "audio", 6 * RATE, RATE, ("ch0", "ch1"),
    )  # fmt: skip
    excerpt = streaming.fit_excerpt(rec, 1.2)
    assert excerpt.n_times == 6 * (int(1.2 * RATE) // 6) and excerpt.kind == "audio"
    np.testing.assert_array_equal(excerpt.data[:, :1600], rec.read(0, 1600))  # the first block
    np.testing.assert_array_equal(excerpt.data[:, -1600:], rec.read(6 * RATE - 1600, 6 * RATE))
    eeg = streaming.open_recording(_eeg(tmp_path / "rec_raw.fif"))
    assert eeg.kind == "eeg" and not eeg.raw.preload and "EOG" in eeg.ch_names
    part = streaming.fit_excerpt(eeg, 6.0)
    assert part.n_times == 6 * 128 and part.ch_names == list(eeg.ch_names)
    assert "BAD boundary" in part.annotations.description
    with pytest.raises(ValueError, match="'max_fit_seconds' must be > 0"):
        streaming.fit_excerpt(eeg, 0.0)


def test_library_errors(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    rec = streaming.open_recording(wav)
    net = IVAESeparator(2, mixing="nonlinear", domain="time", n_steps=2, random_state=0)
    net.fit(streaming.fit_excerpt(rec))
    with pytest.raises(ValueError, match=r"reads u \(the index of the windows of the recording"):
        next(streaming.iter_sources(net, rec))
    with pytest.raises(ValueError, match="mixing='nonlinear' with encoder_u=True fits an encoder"):
        streaming.separate_long(wav, tmp_path / "o", separator=IVAESeparator(2, mixing="nonlinear"))
    sep, paths = streaming.separate_long(wav, tmp_path / "o", random_state=0)
    assert [p.name for p in paths] == ["a_s1.wav", "a_s2.wav"]
    with pytest.raises(FileExistsError, match="Pass overwrite=True to replace them"):
        streaming.separate_long(wav, tmp_path / "o", separator=sep)
    wav16 = streaming.open_recording(_wav(tmp_path / "b.wav", rate=16000))
    with pytest.raises(ValueError, match="b.wav has sample_rate 16000 Hz but the model expects "):
        next(streaming.iter_sources(sep, wav16))
    with pytest.raises(ValueError, match="'chunk_seconds' must be > 0"):
        next(streaming.iter_sources(sep, rec, chunk_seconds=0))
    eeg = streaming.open_recording(_eeg(tmp_path / "rec_raw.fif"))
    with pytest.raises(ValueError, match="write_audio_sources writes audio, but rec_raw.fif is"):
        streaming.write_audio_sources(sep, eeg, tmp_path, "x")
    with pytest.raises(ValueError, match="'exclude' removes sources from EEG recordings"):
        streaming.separate_long(wav, tmp_path / "p", separator=sep, exclude=[0])
    # Refused before a fit (audit: an unfitted separator was fitted first, then refused).
    unfitted = IVAESeparator(2, random_state=0)
    with pytest.raises(ValueError, match="'exclude' removes sources from EEG recordings"):
        streaming.separate_long(wav, tmp_path / "p", separator=unfitted, exclude=[0])
    assert not hasattr(unfitted, "fitted_")
    m4a = tmp_path / "a.m4a"
    m4a.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="cannot be read in parts: libsndfile does not read"):
        streaming.open_recording(m4a)


def test_separate_long_eeg_writes_sources_and_cleaned(tmp_path):
    path = _eeg(tmp_path / "rec_raw.fif")
    full = mne.io.read_raw_fif(path, preload=True, verbose="error")
    sep = IVAESeparator(6, random_state=0).fit(full)
    sep.exclude = [4]
    _, paths = streaming.separate_long(
        path, tmp_path / "o", separator=sep, exclude=[1], chunk_seconds=0.9
    )
    assert [p.name for p in paths] == ["rec_sources_raw.fif", "rec_cleaned_raw.fif"]
    got = mne.io.read_raw_fif(paths[1], verbose="error").get_data()
    ref = sep.apply(full, exclude=[1]).get_data()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [p.name for p in sorted(paths)]


def test_a_source_model_streams_at_its_own_rate(tmp_path):
    # Audit: streamed files at a rate other than 16 kHz were separated by the 16 kHz
    # demixer at the file's rate (garbage sources, exit 0); transform resampled.
    from sepkit.io import read_audio

    wav = _wav(tmp_path / "m8k.wav", seconds=3.0, rate=8000)
    rec = read_audio(wav)
    with pytest.warns(UserWarning, match="resampled to 16000 Hz"):
        sep = IVAESeparator(
            2, source_model="ivae-speech-16k-v1", random_state=0,
            fit_params={"n_init": 3, "n_iter": 2},
        ).fit(rec)  # fmt: skip
    want = sep.transform(rec).data
    paths, _ = streaming.write_audio_sources(
        sep, streaming.open_recording(wav), tmp_path / "o", "m", subtype="FLOAT"
    )
    got = np.stack([sf.read(str(p), dtype="float32")[0] for p in paths])
    assert sf.info(str(paths[0])).samplerate == 8000 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    chunks = list(streaming.iter_sources(sep, streaming.open_recording(wav)))
    assert chunks[-1][1] == 2 * rec.n_times  # the chunks come at the model's 16 kHz


def test_the_metrics_say_which_rates_a_source_model_ran_at(tmp_path):
    wav = _wav(tmp_path / "m8k.wav", seconds=3.0, rate=8000)
    out = tmp_path / "out"
    argv = ["separate", str(wav), "--n-sources", "2", "--source-model", "ivae-speech-16k-v1"]
    assert main([*argv, "-o", str(out), "--quiet"]) == 0
    info = json.loads((out / "m8k_metrics.json").read_text())
    assert info["input_sample_rate"] == info["sample_rate"] == 8000.0
    assert info["separation_sample_rate"] == 16000.0


@pytest.mark.parametrize("streamed", [False, True])
def test_subtype_sets_the_wav_sample_format(tmp_path, monkeypatch, streamed):
    # Audit: the sources were 16-bit PCM whatever the user needed.
    wav = _wav(tmp_path / "a.wav")
    if streamed:
        monkeypatch.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
        monkeypatch.setattr(streaming, "CHUNK_SECONDS", 0.7)
    sources = {}
    for subtype in ("pcm_24", "FLOAT"):
        out = tmp_path / subtype
        _run(["separate", wav, "--n-sources", "2", "-o", out, "--subtype", subtype, *LINEAR])
        for k in (1, 2):
            info = sf.info(str(out / f"a_s{k}.wav"))
            assert info.subtype == subtype.upper() and info.frames == 3 * RATE
        sources[subtype] = np.stack([sf.read(str(out / f"a_s{k}.wav"))[0] for k in (1, 2)])
    # The same fit, written in float as it is and in 24 bits with the one common gain
    # that keeps the loudest source from clipping: one quantisation step apart.
    peak = np.abs(sources["FLOAT"]).max()
    gain = 0.99 / peak if peak > 1 else 1.0
    np.testing.assert_allclose(sources["pcm_24"], gain * sources["FLOAT"], rtol=0, atol=2.0**-23)


def test_subtype_is_refused_for_eeg(tmp_path, capsys):
    path = _eeg(tmp_path / "e_raw.fif")
    out = tmp_path / "out"
    argv = ["separate", str(path), "--n-sources", "4", "-o", str(out), "--subtype", "FLOAT"]
    assert main([*argv, "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sepkit separate: error: --subtype sets the sample format of the source WAV files of "
        "audio inputs, but e_raw.fif is EEG (its sources are written as FIF, in float). Drop "
        "--subtype."
    )
    assert not out.exists()


@pytest.mark.parametrize("streamed", [False, True])
def test_channels_leave_out_a_dead_microphone(tmp_path, monkeypatch, capsys, streamed):
    # Audit: a dead microphone stopped the run ("flat channel ... drop them") with no
    # way on the command line to drop it.
    x, _ = sf.read(str(_wav(tmp_path / "two.wav")), dtype="float32")
    dead = np.stack([x[:, 0], np.zeros(len(x), np.float32), x[:, 1]], axis=1)
    sf.write(str(tmp_path / "a.wav"), dead, RATE, subtype="FLOAT")
    if streamed:
        monkeypatch.setattr(separate_cli, "STREAM_SECONDS", {"audio": 1.0, "eeg": 1.0})
        monkeypatch.setattr(streaming, "CHUNK_SECONDS", 0.7)
    out, ref = tmp_path / "out", tmp_path / "ref"
    _run(
        [
            "separate",
            tmp_path / "a.wav",
            "--n-sources",
            "2",
            "-o",
            out,
            "--channels",
            "0,2",
            *LINEAR,
        ]
    )
    _run(["separate", tmp_path / "two.wav", "--n-sources", "2", "-o", ref, *LINEAR])
    assert _metrics(out, "a")["streamed"] is streamed
    # The two live channels fit and separate as the file that holds only them.
    for k in (1, 2):
        got, rate = sf.read(str(out / f"a_s{k}.wav"), dtype="int16")
        want, _ = sf.read(str(ref / f"two_s{k}.wav"), dtype="int16")
        assert rate == RATE and np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert IVAESeparator.load(out / "a_model.safetensors").ch_names_ == ("ch0", "ch2")


def test_channels_errors_are_one_line(tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    eeg = _eeg(tmp_path / "e_raw.fif")
    out = tmp_path / "out"
    for path, value, message in (
        (wav, "0,2", "Channel index 2 in channels=[0, 2] is out of range: "),
        (wav, "0,0", "channels=[0, 0] selects the same channel more than once;"),
        (wav, "0,x", "argument --channels: takes audio channel indices from 0, separated by "),
        (wav, "-1", "argument --channels: takes audio channel indices from 0, separated by "),
        (eeg, "0,1", "--channels picks audio channels by index, but e_raw.fif is EEG. Drop "),
    ):
        argv = ["separate", str(path), "--n-sources", "2", "-o", str(out), "--channels", value]
        try:
            code = main([*argv, "--quiet"])
        except SystemExit as exit:  # argparse's own errors
            code = exit.code
        assert code == 2, value
        err = capsys.readouterr().err.strip()
        assert err.startswith("sepkit separate: error: ") and message in err, err
        assert "\n" not in err
    assert not out.exists()
    # sepkit fit takes it too.
    model = tmp_path / "m.safetensors"
    assert (
        main(["fit", str(wav), "--n-sources", "1", "-o", str(model), "--channels", "1", *LINEAR])
        == 0
    )
    assert IVAESeparator.load(model).ch_names_ == ("ch1",)
