"""``sepkit separate`` and ``sepkit fit`` write an output set together or not at all.

A failed, interrupted or disk-full run leaves the earlier outputs byte for
byte as they were and no partial file; debris of a killed run is removed by
the next one; user errors are one line, exit 2, before any fit, and nothing
is created. Every run says which model ran. The fits are the linear iVAE on
half a second of 8 kHz audio (well under a second each).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import main

sf = pytest.importorskip("soundfile")

RATE = 8000
LINEAR = ["--domain", "time", "--mixing", "linear", "--quiet"]


def _wav(path, seed=0, channels=2):
    rng = np.random.default_rng(seed)
    t = np.arange(RATE // 2) / RATE
    s = rng.standard_normal((2, t.size)) * (1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t))
    x = (np.array([[1.0, 0.5], [0.3, 1.0]]) @ s)[:channels]
    sf.write(str(path), (0.1 * x).T, RATE, subtype="FLOAT")
    return path


def _snapshot(folder: Path) -> dict:
    """Every entry of ``folder`` (hidden ones too): name -> bytes (None if not a file)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(folder.iterdir())}


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sepkit {command}: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def earlier(tmp_path):
    """A finished ``separate`` run: (argv, out folder, its files)."""
    wav = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    argv = ["separate", str(wav), "--n-sources", "2", "-o", str(out), *LINEAR]
    assert main(argv) == 0
    names = {"a_s1.wav", "a_s2.wav", "a_model.safetensors", "a_metrics.json"}
    assert set(_snapshot(out)) == names
    return argv, out, _snapshot(out)


def _fail_after_save(error):
    """An IVAESeparator.save that writes the model, then raises ``error``."""
    real = IVAESeparator.save

    def save(self, path, **kw):
        written = real(self, path, **kw)
        assert Path(written).is_file()
        raise error

    return save


def test_failed_force_rerun_keeps_the_earlier_outputs(earlier, monkeypatch, capsys):
    argv, out, before = earlier
    rerun = [*argv, "--force", "--seed", "1"]

    # Sources with NaN (a diverged fit): refused before anything is written.
    # Before the fix the new model replaced the old one, then the NaN sources
    # failed to write, leaving the old sources beside the new model.
    real_transform = IVAESeparator.transform

    def nan_transform(self, X, *a, **kw):
        S = real_transform(self, X, *a, **kw)
        return type(S)(np.full_like(S.data, np.nan), S.sample_rate, S.ch_names, S.kind)

    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "transform", nan_transform)
        assert main(rerun) == 2
    err = _one_line_error(capsys, "separate")
    assert err == (
        "sepkit separate: error: the sources of a.wav contain NaN or Inf values, so nothing "
        "was written. Check the recording for silent or flat channels and extreme values, or "
        "choose the model yourself (--domain, --mixing)."
    )
    assert _snapshot(out) == before

    # A fit whose loss ended non-finite (its sources may still look finite).
    real_fit = IVAESeparator.fit

    def nan_fit(self, *a, **kw):
        real_fit(self, *a, **kw)
        self.history_[-1]["loss"] = float("inf")
        return self

    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "fit", nan_fit)
        assert main(rerun) == 2
    err = _one_line_error(capsys, "separate")
    assert "error: the fit on a.wav ended with a non-finite loss (inf), so nothing was" in err
    assert _snapshot(out) == before

    # A fit that raises.
    def broken_fit(self, *a, **kw):
        raise RuntimeError("the fit diverged")

    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "fit", broken_fit)
        assert main(rerun) == 2
    assert _one_line_error(capsys, "separate") == "sepkit separate: error: a.wav: the fit diverged"
    assert _snapshot(out) == before

    # A likelihood that is not finite (the exact-likelihood fits raise FloatingPointError).
    def nan_likelihood(self, *a, **kw):
        raise FloatingPointError("The linear iVAE's likelihood is not finite; use mixing='linear'.")

    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "fit", nan_likelihood)
        assert main(rerun) == 2
    assert _one_line_error(capsys, "separate") == (
        "sepkit separate: error: a.wav: The linear iVAE's likelihood is not finite; use --mixing linear."
    )
    assert _snapshot(out) == before

    # A write that fails after the model file is written (e.g. a codec error).
    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "save", _fail_after_save(ValueError("cannot encode")))
        assert main(rerun) == 2
    assert _one_line_error(capsys, "separate") == "sepkit separate: error: cannot encode"
    assert _snapshot(out) == before

    # The rerun that works replaces the set.
    assert main(rerun) == 0
    after = _snapshot(out)
    assert set(after) == set(before) and after["a_metrics.json"] != before["a_metrics.json"]


def test_interrupt_after_the_model_is_written_leaves_no_mix(earlier, monkeypatch, capsys):
    argv, out, before = earlier
    monkeypatch.setattr(IVAESeparator, "save", _fail_after_save(KeyboardInterrupt()))
    assert main([*argv, "--force"]) == 130
    assert capsys.readouterr().err.strip().endswith("sepkit: interrupted")
    assert _snapshot(out) == before
    # Without --force in a new folder: nothing at all is left, so the rerun
    # is not blocked by a partial file.
    fresh = out.parent / "fresh"
    argv = [*argv[:4], "-o", str(fresh), *LINEAR]
    assert main(argv) == 130
    assert not fresh.exists()
    monkeypatch.undo()
    assert main(argv) == 0
    assert set(_snapshot(fresh)) == set(before)


def test_disk_full_and_read_only_folder_are_one_line(earlier, monkeypatch, capsys):
    argv, out, before = earlier
    import sepkit.cli.separate as separate

    # libsndfile's own error (a file-size limit, a full disk) says only "System error."
    # (audit: that one line was all the user saw).
    class LibsndfileError(RuntimeError):
        pass

    failures = (
        (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
            f"could not write the outputs of a.wav in {out}: No space left on device",
            "No output was changed; free some space, then run the command again.",
        ),
        (
            LibsndfileError("System error."),
            f"could not write the outputs of a.wav in {out}: System error. No output was ",
            "check the free space, any file-size limit (ulimit -f) and the permissions",
        ),
    )
    for failure, *said in failures:

        def fail(*a, failure=failure, **kw):
            raise failure

        monkeypatch.setattr(separate, "write_json", fail)
        assert main([*argv, "--force"]) == 2
        err = _one_line_error(capsys, "separate")
        assert all(text in err for text in said), err
        assert _snapshot(out) == before
    monkeypatch.undo()

    # Not writable: refused before reading or fitting anything.
    import sepkit.cli._common as common

    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    def no_fit(*a, **kw):
        raise AssertionError("fit must not start")

    monkeypatch.setattr(common.tempfile, "mkdtemp", denied)
    monkeypatch.setattr(IVAESeparator, "fit", no_fit)
    target = out / "new"
    assert main([*argv[:4], "-o", str(target), *LINEAR]) == 2
    err = _one_line_error(capsys, "separate")
    assert err == (
        f"sepkit separate: error: cannot write into {out} (-o {target}): Permission denied. "
        "Choose a folder you can write to, or make it writable; nothing was done."
    )
    model = out / "m.safetensors"
    assert main(["fit", argv[1], "--n-sources", "2", "-o", str(model), *LINEAR]) == 2
    assert _one_line_error(capsys, "fit") == (
        f"sepkit fit: error: cannot write into {out} (-o {model}): Permission denied. "
        "Choose a folder you can write to, or make it writable; nothing was done."
    )
    assert _snapshot(out) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_refused_before_the_fit(tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["separate", str(wav), "--n-sources", "2", "-o", str(ro), *LINEAR]) == 2
        assert "cannot write into" in _one_line_error(capsys, "separate")
        assert main(["fit", str(wav), "--n-sources", "2", "-o", str(ro / "m.safetensors")]) == 2
        assert "cannot write into" in _one_line_error(capsys, "fit")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_debris_of_a_killed_run_is_removed(tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    # What a SIGKILL leaves: a staging folder of a process that is gone, and
    # the atomic-write temp files of earlier versions beside the targets.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = out / f".a.{int(gone.stdout)}-0123abcd.partial"
    dead.mkdir()
    (dead / "a_model.safetensors").write_bytes(b"half")
    (dead / ".a_s1.wav.k2j3h4g5.tmp").write_bytes(b"half")
    debris = [".a_model.safetensors.ab12cd34.tmp", ".a_sources_raw.fif.x_y_z123_raw.fif",
              ".a_sources.png.q1w2e3r4.png"]  # fmt: skip
    for name in debris:
        (out / name).write_bytes(b"half")
    # Not ours: another stem, another program's hidden file, a running process's stage.
    others = [".b_model.safetensors.ab12cd34.tmp", ".a.swp"]
    for name in others:
        (out / name).write_bytes(b"x")
    live = out / f".a.{os.getppid()}-0123abcd.partial"
    live.mkdir()
    argv = ["separate", str(wav), "--n-sources", "2", "-o", str(out), *LINEAR]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a_s1.wav", "a_s2.wav", "a_model.safetensors", "a_metrics.json", *others, live.name]
    )
    # sepkit fit cleans up its own the same way.
    (out / ".m.safetensors.ab12cd34.tmp").write_bytes(b"half")
    (out / f".m.{int(gone.stdout)}-00ff00ff.partial").mkdir()
    model = out / "m.safetensors"
    assert main(["fit", str(wav), "--n-sources", "2", "-o", str(model), *LINEAR]) == 0
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == sorted([*others, live.name])


def test_force_replaces_the_earlier_set_as_a_whole(earlier, capsys):
    argv, out, before = earlier
    # Files of an earlier run that this one does not write: refused without
    # --force, removed with it (no old file beside the new set).
    (out / "a_s3.wav").write_bytes(before["a_s1.wav"])
    (out / "a_training.png").write_bytes(b"old figure")
    (out / "notes_a.txt").write_text("mine")
    (out / "ab_s1.wav").write_bytes(b"another stem")
    fresh = {k: v for k, v in before.items() if k != "a_metrics.json"}
    for name in fresh:
        (out / name).unlink()
    assert main(argv) == 2
    err = _one_line_error(capsys, "separate")
    assert err.startswith("sepkit separate: error: output(s) exist: ")
    assert "a_metrics.json" in err and "a_s3.wav" in err and "a_training.png" in err
    assert main([*argv[:-1], "--force"]) == 0  # without --quiet: the removal is said
    assert "a.wav: removed a_s3.wav, a_training.png of an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "notes_a.txt", "ab_s1.wav"])

    # Applying the saved model of that folder into it again: the model file is
    # this run's input and stays, although this run does not write it.
    model = out / "a_model.safetensors"
    kept = model.read_bytes()
    wav = argv[1]
    assert main(["separate", wav, "--model", str(model), "-o", str(out), "--force"]) == 0
    assert model.read_bytes() == kept
    info = json.loads((out / "a_metrics.json").read_text())
    assert info["model"] == str(model) and "n_steps" not in info


def test_fit_force_rerun_that_fails_keeps_the_old_model(tmp_path, monkeypatch, capsys):
    wav = _wav(tmp_path / "a.wav")
    model = tmp_path / "m.safetensors"
    argv = ["fit", str(wav), "--n-sources", "2", "-o", str(model), *LINEAR]
    assert main(argv) == 0
    before = _snapshot(tmp_path)
    assert {"m.safetensors", "m_metrics.json"} <= set(before)

    real_fit = IVAESeparator.fit

    def nan_fit(self, *a, **kw):  # what a diverged fit leaves: a NaN final loss
        real_fit(self, *a, **kw)
        self.history_[-1]["loss"] = float("nan")
        return self

    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "fit", nan_fit)
        assert main([*argv, "--force"]) == 2
    err = _one_line_error(capsys, "fit")
    assert f"the fit on {wav} ended with a non-finite loss (nan), so no model was written" in err
    assert _snapshot(tmp_path) == before

    import sepkit.cli.fit as fit

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:  # disk full after the model is written
        m.setattr(fit, "write_json", full)
        assert main([*argv, "--force"]) == 2
    err = _one_line_error(capsys, "fit")
    assert err == (
        f"sepkit fit: error: could not write m.safetensors and its metrics in {tmp_path}: No "
        "space left on device. No output was changed; free some space, then run the command "
        "again."
    )
    assert _snapshot(tmp_path) == before
    # The same without --force into a new name: nothing left, so the rerun runs.
    other = tmp_path / "sub" / "n.safetensors"
    with monkeypatch.context() as m:
        m.setattr(IVAESeparator, "save", _fail_after_save(KeyboardInterrupt()))
        assert main([*argv[:5], str(other), *LINEAR]) == 130
    assert _snapshot(tmp_path) == before
    assert main([*argv[:5], str(other), *LINEAR]) == 0
    assert sorted(p.name for p in other.parent.iterdir()) == ["n.safetensors", "n_metrics.json"]


def test_bad_paths_are_one_line_before_any_fit(tmp_path, monkeypatch, capsys):
    def no_fit(*a, **kw):
        raise AssertionError("fit must not start")

    monkeypatch.setattr(IVAESeparator, "fit", no_fit)
    wav = _wav(tmp_path / "a.wav")
    folder = tmp_path / "recordings"
    folder.mkdir()
    (tmp_path / "empty_raw.fif").touch()
    (tmp_path / "empty.set").touch()
    (tmp_path / "x.safetensors").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "garbage.set").write_text("not a MATLAB file")
    os.mkfifo(tmp_path / "stream.wav")
    out = tmp_path / "out"
    sep_args = ["--n-sources", "2", "-o", str(out), "--quiet"]
    cases = [
        (["separate", str(folder), *sep_args],
         f"input {folder} is a folder, not a recording file. Pass the recording file(s) in "
         f"it, e.g. {folder}/*.wav."),
        (["fit", str(folder), "-o", str(tmp_path / "m.safetensors"), "--n-sources", "2"],
         f"input {folder} is a folder, not a recording file."),
        (["separate", str(tmp_path / "empty_raw.fif"), *sep_args],
         f"input {tmp_path / 'empty_raw.fif'} is empty (0 bytes). It was probably not written "
         "completely; re-export or re-copy it."),
        (["separate", str(tmp_path / "empty.set"), *sep_args],
         f"input {tmp_path / 'empty.set'} is empty (0 bytes)."),
        (["fit", str(tmp_path / "empty.set"), "-o", str(tmp_path / "m.safetensors"),
          "--n-sources", "2"], f"input {tmp_path / 'empty.set'} is empty (0 bytes)."),
        (["separate", str(tmp_path / "garbage.set"), *sep_args],
         f"cannot read {tmp_path / 'garbage.set'} as an EEG recording (MatReadError: "),
        (["separate", str(tmp_path / "stream.wav"), *sep_args],
         f"input {tmp_path / 'stream.wav'} is not a regular file (a FIFO, socket or device); "
         "recordings are read from files. Save the stream to a file first."),
        (["fit", str(wav), "-o", str(tmp_path / "x.safetensors"), "--n-sources", "2",
          "--force"],
         f"{tmp_path / 'x.safetensors'} is a folder, but the output file of that name goes "
         "there. Remove or rename the folder, or choose another output name."),
        (["separate", str(wav), "--n-sources", "2", "-o", str(tmp_path / "afile")],
         f"-o {tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a folder. Choose "
         "another output folder."),
        (["separate", str(wav), "--n-sources", "2", "-o", str(tmp_path / "afile" / "sub")],
         f"-o {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file, not a folder."),
    ]  # fmt: skip
    before = _snapshot(tmp_path)
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, argv[0])
        assert err.startswith(f"sepkit {argv[0]}: error: {message}"), err
        assert _snapshot(tmp_path) == before, argv


def test_a_bad_recording_among_several_stops_the_run_before_any_fit(tmp_path, monkeypatch, capsys):
    def no_fit(*a, **kw):
        raise AssertionError("fit must not start")

    monkeypatch.setattr(IVAESeparator, "fit", no_fit)
    good = _wav(tmp_path / "a.wav")
    silent, nan, flat = tmp_path / "silent.wav", tmp_path / "nan.wav", tmp_path / "flat.wav"
    x = sf.read(str(good), dtype="float32")[0]
    sf.write(str(silent), np.zeros_like(x), RATE, subtype="FLOAT")
    x_nan = x.copy()
    x_nan[100, 1] = np.nan
    sf.write(str(nan), x_nan, RATE, subtype="FLOAT")
    x_flat = x.copy()
    x_flat[:, 0] = 0.25
    sf.write(str(flat), x_flat, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    cases = [
        (silent, "silent.wav: the recording is silent: every channel is constant"),
        (nan, "nan.wav: the recording contains 1 NaN or Inf values (in channel(s) [1])."),
        (
            flat,
            "flat.wav: the recording has flat (constant) channel(s) ['ch0']; leave them out "
            "(audio: --channels with the indices of the others; EEG: mark them bad in the "
            "file, raw.info['bads'] with MNE).",
        ),
    ]
    for bad, message in cases:
        argv = ["separate", str(good), str(bad), "--n-sources", "2", "-o", str(out), *LINEAR]
        assert main(argv) == 2, bad
        err = _one_line_error(capsys, "separate")
        assert err.startswith(f"sepkit separate: error: {message}"), err
        assert not out.exists()  # the good first input was not fitted and written either


def test_an_error_in_the_fit_names_the_input(tmp_path, capsys):
    short = tmp_path / "short.wav"
    sf.write(str(short), np.random.default_rng(0).standard_normal((800, 2)), RATE)
    argv = ["separate", str(short), "--n-sources", "2", "-o", str(tmp_path / "out"), "--quiet"]
    # (--domain auto fits the time domain below one STFT frame; tf asked for is refused.)
    assert main([*argv, "--domain", "tf"]) == 2
    err = _one_line_error(capsys, "separate")
    assert err.startswith(
        "sepkit separate: error: short.wav: the recording has 800 samples, shorter than one "
        "STFT window"
    ), err
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.random.default_rng(1).standard_normal((RATE, 2)), RATE)
    argv = ["separate", str(stereo), "--n-sources", "3", "-o", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    assert _one_line_error(capsys, "separate").startswith(
        "sepkit separate: error: stereo.wav: --n-sources 3 is more than the 2 channels of the "
        "recording. Pass --n-sources 2 or fewer"
    )


def test_every_run_says_which_model_ran(tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    argv = ["separate", str(wav), "--n-sources", "2", "-o", str(out), "--domain", "time"]
    assert main([*argv, "--mixing", "linear"]) == 0
    line = (
        "a.wav: linear family, time domain, mixing linear, prior gauss, sensor unwarping not kept"
    )
    assert line in capsys.readouterr().err.splitlines()
    info = json.loads((out / "a_metrics.json").read_text())
    assert {k: info[k] for k in ("family", "domain", "mixing", "prior", "unwarped")} == dict(
        family="linear", domain="time", mixing="linear", prior="gauss", unwarped=False
    )
    # The post-nonlinear model keeps the unwarping; --quiet prints no model line.
    model = tmp_path / "m.safetensors"
    fit = ["fit", str(wav), "--n-sources", "2", "-o", str(model), "--domain", "time"]
    assert main([*fit, "--mixing", "post-nonlinear"]) == 0
    err = capsys.readouterr().err
    assert "a.wav: linear family, time domain, mixing post-nonlinear, prior gauss, sensor " \
        "unwarping kept" in err  # fmt: skip
    fitted = json.loads((tmp_path / "m_metrics.json").read_text())
    assert fitted["mixing"] == "post-nonlinear" and fitted["unwarped"] is True
    assert fitted["family"] == "linear" and fitted["domain"] == "time"
    # A saved model applied as it is: its description too, not a null mixing.
    out2 = tmp_path / "out2"
    assert main(["separate", str(wav), "--model", str(model), "-o", str(out2), "--quiet"]) == 0
    assert "family" not in capsys.readouterr().err
    applied = json.loads((out2 / "a_metrics.json").read_text())
    assert applied["mixing"] == "post-nonlinear" and applied["family"] == "linear"


def test_tf_runs_name_their_mixing(tmp_path, capsys):
    # A room (delays between the microphones): the tf family, whose mixing
    # was reported as null.
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, RATE)) * np.abs(np.sin(np.arange(RATE) / 900.0))
    x = np.stack([s[0] + 0.6 * np.roll(s[1], 7), s[1] + 0.6 * np.roll(s[0], 5)])
    sf.write(str(tmp_path / "room.wav"), (0.1 * x).T, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    argv = ["separate", str(tmp_path / "room.wav"), "--n-sources", "2", "-o", str(out)]
    assert main([*argv, "--domain", "tf"]) == 0
    info = json.loads((out / "room_metrics.json").read_text())
    assert info["family"] == "tf" and info["domain"] == "tf"
    assert info["mixing"] == "convolutive" and info["unwarped"] is False
    assert "room.wav: tf family, tf domain, mixing convolutive" in capsys.readouterr().err


def test_fine_tune_advice_names_what_was_passed(tmp_path, capsys):
    mono = _wav(tmp_path / "mono.wav", channels=1)
    two = _wav(tmp_path / "a.wav")
    linear, network = tmp_path / "linear.safetensors", tmp_path / "network.safetensors"
    assert main(["fit", str(two), "--n-sources", "2", "-o", str(linear), *LINEAR]) == 0
    fit = ["fit", str(two), "--n-sources", "2", "-o", str(network), "--domain", "time"]
    assert main([*fit, "--mixing", "nonlinear", "--steps", "3", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    shipped = "ivae-audio-2mic-16khz-v1"
    tune = ["--fine-tune", "-o", str(out), "--quiet"]
    for argv, name, option in [
        (["separate", str(mono), "--model", str(network), *tune], str(network), "--model"),
        (["fit", str(mono), "--init", shipped, "-o", str(tmp_path / "n.safetensors")],
         shipped, "--init"),
    ]:  # fmt: skip
        assert main(argv) == 2
        err = _one_line_error(capsys, argv[0])
        # Before: "--n-sources 2 is more than the 1 channels of X", an option not given.
        assert "--n-sources 2" not in err
        assert err.endswith(
            f"mono.wav has 1 channel(s) but the model {name} was fitted on 2; fine-tuning "
            "keeps its channels and its 2 sources. Pass a recording with the model's channels, "
            f"or fit a new separator with --n-sources K (K <= 1) instead of {option}."
        ), err
    # A linear model has no network to fine-tune. Before: "--mixing linear fits the
    # linear, noiseless iVAE ... Pass --mixing nonlinear", options not given.
    assert main(["separate", str(two), "--model", str(linear), *tune]) == 2
    assert _one_line_error(capsys, "separate") == (
        f"sepkit separate: error: {two.name}: --model {linear} is a linear-family model (mixing linear), "
        "which has no network to fine-tune. Fit a new separator on the recording instead: "
        "--n-sources 2 in place of --model and --fine-tune."
    )
    # EEG: the channels by name, before the fit (before: "--n-sources 8 is more
    # than the 6 channels of X").
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(4, duration=8.0, sample_rate=256.0, random_state=0)
    raw.pick(raw.ch_names[:6]).save(tmp_path / "six_raw.fif", verbose="error")
    eeg = "ivae-eeg1020-256hz-v1"
    assert main(["separate", str(tmp_path / "six_raw.fif"), "--model", eeg, *tune]) == 2
    err = _one_line_error(capsys, "separate")
    assert err.startswith(
        "sepkit separate: error: six_raw.fif: the recording lacks channel(s) ['F8', 'T7', "
    )
    assert "--n-sources" not in err
    assert not out.exists() and not (tmp_path / "n.safetensors").exists()


def test_ctrl_c_during_the_moves_is_held_until_the_set_is_in_place(earlier, monkeypatch, capsys):
    import signal

    import sepkit.cli._common as common

    argv, out, before = earlier
    real_move = common._move_into_place
    moves = []

    def move(staged, target):  # Ctrl-C arrives as the first file is moved
        if not moves:
            os.kill(os.getpid(), signal.SIGINT)
        moves.append(target.name)
        real_move(staged, target)

    monkeypatch.setattr(common, "_move_into_place", move)
    # Python's own Ctrl-C handler, as in a terminal: a job started in the background
    # (``pytest &``) inherits SIGINT ignored, which the command line rightly leaves alone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main([*argv, "--force", "--seed", "3"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(moves) == sorted(before)  # every file moved, then the interrupt
    after = _snapshot(out)
    assert set(after) == set(before) and after["a_metrics.json"] != before["a_metrics.json"]
    assert json.loads(after["a_metrics.json"])["input"] == argv[1]


@pytest.fixture
def default_sigterm():
    """SIGTERM at Python's default while the test runs (the command line then catches it)."""
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield signal
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_the_fit_leaves_no_output_folder(
    tmp_path, monkeypatch, capsys, default_sigterm
):
    # `kill` or `timeout` sends SIGTERM; it used to end Python at once and leave
    # the new output folder behind, empty.
    signal = default_sigterm
    wav = _wav(tmp_path / "a.wav")
    real_fit = IVAESeparator.fit

    def fit(self, *args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_fit(self, *args, **kw)

    monkeypatch.setattr(IVAESeparator, "fit", fit)
    out = tmp_path / "new"
    assert main(["separate", str(wav), "--n-sources", "2", "-o", str(out), *LINEAR]) == 143
    assert capsys.readouterr().err.strip().endswith("sepkit: terminated")
    assert not out.exists()
    # The handler is Python's default again once the command returns.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_during_the_moves_is_held_until_the_set_is_in_place(
    earlier, monkeypatch, capsys, default_sigterm
):
    import sepkit.cli._common as common

    signal = default_sigterm
    argv, out, before = earlier
    real_move = common._move_into_place
    moves = []

    def move(staged, target):
        if not moves:
            os.kill(os.getpid(), signal.SIGTERM)
        moves.append(target.name)
        real_move(staged, target)

    monkeypatch.setattr(common, "_move_into_place", move)
    assert main([*argv, "--force", "--seed", "3"]) == 143
    assert sorted(moves) == sorted(before)  # every file moved, then the signal
    after = _snapshot(out)
    assert set(after) == set(before) and after["a_metrics.json"] != before["a_metrics.json"]


def test_an_output_never_replaces_an_input_of_the_run(tmp_path, capsys):
    # Audit: `separate mix.wav mix_s1.wav -o . --force` wrote source 1 of mix.wav over
    # the input mix_s1.wav (the help says inputs are never removed).
    a = _wav(tmp_path / "mix.wav")
    b = _wav(tmp_path / "mix_s1.wav", seed=1)
    before = _snapshot(tmp_path)
    argv = ["separate", str(a), str(b), "--n-sources", "2", "-o", str(tmp_path), "--force"]
    assert main([*argv, *LINEAR]) == 2
    assert _one_line_error(capsys, "separate") == (
        f"sepkit separate: error: the output {tmp_path / 'mix_s1.wav'} would replace "
        f"{b}, which this run reads. Choose another output folder (-o), or rename that file."
    )
    assert _snapshot(tmp_path) == before


def test_several_inputs_hold_one_recording_at_a_time(tmp_path, monkeypatch):
    # Audit: every input was read and kept in memory before the first fit, so a run
    # over many files grew with their number, not with one file.
    import gc
    import weakref

    import sepkit.cli.separate as separate_cli

    paths = [_wav(tmp_path / f"r{k}.wav", seed=k) for k in range(3)]
    arrays, alive = [], []
    real_read, real_fit = separate_cli._read_one, separate_cli._fit_one

    def read(*args, **kw):
        item = real_read(*args, **kw)
        arrays.append(weakref.ref(item.X.data))
        return item

    def fit(args, item, *rest):
        gc.collect()
        alive.append(sum(ref() is not None for ref in arrays))
        return real_fit(args, item, *rest)

    monkeypatch.setattr(separate_cli, "_read_one", read)
    monkeypatch.setattr(separate_cli, "_fit_one", fit)
    argv = ["separate", *map(str, paths), "--n-sources", "2", "-o", str(tmp_path / "out")]
    assert main([*argv, *LINEAR]) == 0
    assert len(arrays) == 6  # each read to check it, then again in its turn
    assert alive == [1, 1, 1]


def test_the_command_ignores_signals_once_its_work_is_done(monkeypatch, capsys):
    # Audit: SIGTERM during the interpreter's teardown, after the outputs were in
    # place, made the status 143. console_main (the `sepkit` command) ignores it then.
    import signal

    from sepkit.cli import console_main

    monkeypatch.setattr(sys, "argv", ["sepkit", "models", "list"])
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert console_main() == 0
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in previous)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert capsys.readouterr().out
