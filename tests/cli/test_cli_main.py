"""End-to-end tests of the ``sepkit`` command line (demo, separate, fit, models, recipes).

A few cases run ``python -m sepkit`` in a subprocess (exit codes and output
streams as a user sees them; each costs ~4 s of torch import); the rest call
``sepkit.cli.main`` in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import main
from sepkit.cli._common import input_kind
from sepkit.pretrained import PRETRAINED_ENV, export_model

sf = pytest.importorskip("soundfile")

REPO = Path(__file__).resolve().parents[2]
RATE = 8000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(*args, cwd=None, env=None):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sepkit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        check=False,
        timeout=300,
    )


def _wav(path, seed, rate=RATE, seconds=0.5):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    s = rng.standard_normal((2, t.size)) * (1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t))
    x = np.array([[1.0, 0.5], [0.3, 1.0]]) @ s
    sf.write(str(path), (0.1 * x).T, rate, subtype="FLOAT")
    return path


def _png_ok(path):
    data = Path(path).read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 5000


def test_demo_fast_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    res = _cli("demo", "--fast", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "sepkit demo results" in res.stdout and "EEG, 4 src, 19 ch" in res.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["audio_mixture.wav", "audio_source_s1.wav", "audio_source_s2.wav",
         "eeg_sources_raw.fif", "metrics.json"]
        + [f"{n}.png" for n in ("audio_sources", "audio_training", "audio_correlation",
                                "eeg_sources", "eeg_training", "eeg_correlation",
                                "eeg_topographies")]
    )  # fmt: skip
    assert all(_png_ok(p) for p in out.glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    # Instantaneous 2x2 audio mixing is easy: a broken model stays near MCC 0.5-0.7.
    assert metrics["audio"]["mcc"] > 0.95 and metrics["audio"]["si_sdri_db"] > 10.0
    assert metrics["eeg"]["mcc"] > 0.7
    s1, rate = sf.read(str(out / "audio_source_s1.wav"))
    assert rate == 16000 and s1.shape == (16000,)
    import mne

    fif = mne.io.read_raw_fif(out / "eeg_sources_raw.fif", verbose="error")
    assert fif.ch_names == ["IVAE000", "IVAE001", "IVAE002", "IVAE003"]

    # Existing outputs: refused before any work, on one line, nothing changed.
    before = (out / "metrics.json").read_bytes()
    assert main(["demo", "--fast", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sepkit demo: error: output(s) exist: ") and "--force" in err
    assert "\n" not in err
    assert (out / "metrics.json").read_bytes() == before

    # One output set (audit: an interrupted --force run left new WAVs beside the earlier
    # run's metrics and figures): interrupted, nothing changes.
    import sepkit.cli.demo as demo_cli

    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    real = demo_cli._eeg_demo
    demo_cli._eeg_demo = stop
    try:
        assert main(["demo", "--fast", "--out", str(out), "--force", "--seed", "4"]) == 130
    finally:
        demo_cli._eeg_demo = real
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot
    # A rerun without figures replaces the set as a whole: no earlier figure is left.
    assert main(["demo", "--fast", "--out", str(out), "--force", "--no-plots", "--quiet"]) == 0
    assert not list(out.glob("*.png")) and not list(out.glob(".*"))


def test_separate_fit_end_to_end(tmp_path, capsys):
    a, b = _wav(tmp_path / "a.wav", 0), _wav(tmp_path / "b.wav", 1)
    out = tmp_path / "out"
    args = ["separate", a, b, "--n-sources", "2", "--steps", "40", "-o", out, "--plots"]
    args = [str(x) for x in args + ["--quiet", "--domain", "time", "--mixing", "nonlinear"]]
    assert main(args) == 0
    for stem in ("a", "b"):
        for suffix in ("_s1.wav", "_s2.wav", "_model.safetensors", "_metrics.json"):
            assert (out / f"{stem}{suffix}").is_file(), stem + suffix
        assert _png_ok(out / f"{stem}_sources.png") and _png_ok(out / f"{stem}_training.png")
    info = json.loads((out / "a_metrics.json").read_text())
    assert info["n_steps"] == 40 and info["sample_rate"] == RATE
    # Which rates ran (audit: a resampled run did not say so in its record).
    assert info["input_sample_rate"] == info["separation_sample_rate"] == RATE

    # Second run, as a user runs it: refused (exit 2, one line, no traceback,
    # nothing rewritten); --force replaces.
    before = (out / "a_s1.wav").stat().st_mtime_ns
    res = _cli(*args)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("sepkit separate: error: output(s) exist")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (out / "a_s1.wav").stat().st_mtime_ns == before
    assert main(args + ["--force"]) == 0
    assert (out / "a_s1.wav").stat().st_mtime_ns != before

    # fit, then separate with the saved model; a 16 kHz input needs --resample.
    model = tmp_path / "m.safetensors"
    cmd = ["fit", str(a), "-o", str(model), "--n-sources", "2", "--steps", "30", "--domain", "time"]
    assert main(cmd + ["--mixing", "nonlinear"]) == 0
    assert json.loads((tmp_path / "m_metrics.json").read_text())["n_steps"] == 30
    c = _wav(tmp_path / "c.wav", 2, rate=16000)
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert main(["separate", str(c), "--model", str(model), "-o", str(out2)]) == 2
    assert "sample_rate 16000 Hz but the model expects 8000 Hz" in capsys.readouterr().err
    assert main(["separate", str(c), "--model", str(model), "-o", str(out2), "--resample"]) == 0
    s1, rate = sf.read(str(out2 / "c_s1.wav"))
    assert rate == RATE and s1.shape == (RATE // 2,)
    assert not (out2 / "c_model.safetensors").exists()  # applied, not refitted

    # Fine-tuning from the saved model writes a new model.
    out3 = tmp_path / "out3"
    cmd = [
        "separate",
        str(a),
        "--model",
        str(model),
        "--fine-tune",
        "--steps",
        "5",
        "-o",
        str(out3),
    ]
    assert main(cmd) == 0
    assert (out3 / "a_model.safetensors").is_file()

    # `sepkit fit --init` takes the model file too, and keeps its settings: model
    # options beside --init or --model are refused, not ignored.
    tuned = tmp_path / "tuned.safetensors"
    assert main(["fit", str(a), "--init", str(model), "-o", str(tuned), "--steps", "5"]) == 0
    assert json.loads((tmp_path / "tuned_metrics.json").read_text())["n_steps"] == 5
    capsys.readouterr()
    again = ["fit", str(a), "--init", str(model), "-o", str(tmp_path / "x.safetensors")]
    assert main(again + ["--mixing", "nonlinear"]) == 2
    assert (
        f"sepkit fit: error: --mixing chooses the model a new fit builds, but --init {model} "
        "keeps its own settings. Drop it, or fit a new separator with --n-sources K."
    ) in capsys.readouterr().err
    assert main(cmd[:-2] + ["--prior", "laplace", "--domain", "time", "-o", str(out3)]) == 2
    assert "--domain, --prior choose the model a new fit builds, but --model" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "x.safetensors").exists()


def test_user_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["separate", str(tmp_path / "no.wav"), "--n-sources", "2", "-o", str(tmp_path)],
         "sepkit separate: error: input " + str(tmp_path / "no.wav") + " does not exist."),
        (["separate", str(tmp_path / "x.txt"), "--n-sources", "2", "-o", str(tmp_path)],
         "sepkit separate: error: " + str(tmp_path / "x.txt") + ": unknown file type '.txt'."),
        (["fit", "a.wav", "-o", "m.pt", "--n-sources", "2"],
         "sepkit fit: error: -o must end in .safetensors (a separator is saved as a "
         "safetensors file), got 'm.pt'. Name it e.g. m.safetensors."),
        (["recipes", "run", "nope"], "sepkit recipes: error: unknown recipe 'nope'; available: "),
    ]  # fmt: skip
    # Every suffix read_audio reads is taken as audio, not only WAV-like ones.
    assert input_kind(Path("talk.m4a")) == "audio" and input_kind(Path("a.FLAC")) == "audio"
    for argv, start in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(start), err
        assert "\n" not in err
    # argparse's own errors (a missing or malformed option) are one line too, not the usage.
    for argv, line in (
        (["separate", "a.wav", "-o", str(tmp_path)],
         "sepkit separate: error: one of the arguments --model --n-sources is required "
         "(see sepkit separate --help)"),
        (["separate", "a.wav", "--steps", "abc", "--n-sources", "2", "-o", str(tmp_path)],
         "sepkit separate: error: argument --steps: invalid int value: 'abc' (see sepkit "
         "separate --help)"),
        (["models", "nope"], "sepkit models: error: argument ACTION: invalid choice: 'nope'"),
        # A seed torch takes (audit: 2**70 was a raw "Overflow when unpacking long long").
        (["demo", "--seed", "-1"], "sepkit demo: error: argument --seed: takes a seed, a whole "
         "number from 0 to 2**63 - 1, got '-1' (see sepkit demo --help)"),
        (["fit", "a.wav", "-o", "m.safetensors", "--n-sources", "2", "--seed", str(2**70)],
         "sepkit fit: error: argument --seed: takes a seed, a whole number from 0 to 2**63 - 1, "
         f"got '{2**70}' (see sepkit fit --help)"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(line) and "\n" not in err, err


def test_failed_separate_leaves_no_empty_folder(tmp_path, capsys):
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(4, duration=20.0, sample_rate=128.0, random_state=2)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    out = tmp_path / "a" / "b"
    # Fails in fit, after the output folder was made: more sources than channels.
    assert main(["separate", str(path), "--n-sources", "40", "-o", str(out), "--quiet"]) == 2
    assert "--n-sources 40" in capsys.readouterr().err  # the library's n_sources, as an option
    assert not (tmp_path / "a").exists()


def test_messages_name_options_not_keyword_arguments():
    from sepkit.cli import command_line_phrasing

    cases = [
        ("Fit the unfiltered recording with highpass=1 instead", "with --highpass 1 instead"),
        ("let fit filter a copy: highpass=1.0 (then", "a copy: --highpass 1.0 (then"),
        ("then mixing='auto' also checks", "then --mixing auto also checks"),
        ("Pass overwrite=True to replace it.", "Pass --force to replace it."),
        ("Pass resample=True.", "Pass --resample."),
        ("n_steps=0 is not allowed; window=2.5 s", "--steps 0 is not allowed; --window 2.5 s"),
        # find_bads_eog's reference: separate's --eog-channels.
        ("Pass ch_name= to choose others.", "Pass --eog-channels to choose others."),
        ("'ch_name' names channel(s) ['X']", "--eog-channels names channel(s) ['X']"),
        ("pass ch_name=['Fp1', 'Fp2'] to score", "pass --eog-channels Fp1,Fp2 to score"),
        # Advice to change the recording: in the file, for a command-line user.
        (
            "Set a montage (raw.set_montage('standard_1020')) for the pattern criteria.",
            "Save the recording with a montage (with MNE: raw.set_montage('standard_1020'), "
            "then raw.save) for the pattern criteria.",
        ),
        (
            "or mark them bad (raw.info['bads']) to score the frontal channels instead.",
            "or mark them bad in the file (with MNE: raw.info['bads'], then raw.save) to "
            "score the frontal channels instead.",
        ),
        # Not options of the command line, or not keyword arguments: unchanged.
        ("sample_rate=16000 and overwrite=False", "sample_rate=16000 and overwrite=False"),
        ("the lowpass edge", "the lowpass edge"),
    ]
    for message, expected in cases:
        assert expected in command_line_phrasing(message), message


def test_warnings_are_one_line_in_command_line_terms(tmp_path, capsys):
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(4, duration=20.0, sample_rate=128.0, random_state=2)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")  # not high-pass filtered: fit warns
    argv = ["fit", str(path), "--n-sources", "4", "-o", str(tmp_path / "m.safetensors")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if ": warning: " in line]
    assert len(warning) == 1, err
    assert warning[0].startswith("sepkit fit: warning: The EEG has a high-pass edge of 0 Hz")
    assert "let fit filter a copy: --highpass 1.0" in warning[0]
    assert "highpass=" not in err and ".py:" not in err  # no source line
    # Python's own format with --debug, where the source line helps.
    argv[-1] = str(tmp_path / "m2.safetensors")
    with pytest.warns(RuntimeWarning, match="highpass=1.0"):
        assert main(["--debug", *argv]) == 0


def test_a_warning_is_printed_once(capsys):
    # MNE warns about a FIF file's name each time the file is opened, and
    # `sepkit separate` opens one twice (for streaming, then whole).
    from sepkit.cli import _show_warning

    show = _show_warning("separate")
    for text in (
        "This filename (a.fif) does not conform",
        "other",
        "This filename (a.fif) does not conform",
    ):
        show(RuntimeWarning(text), RuntimeWarning, "x.py", 1)
    assert capsys.readouterr().err.splitlines() == [
        "sepkit separate: warning: This filename (a.fif) does not conform",
        "sepkit separate: warning: other",
    ]


def test_models_and_recipes(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((2, 2000)) * np.linspace(0.5, 2, 2000)).astype(np.float32)
    sep = IVAESeparator(2, n_hidden=4, n_layers=1, n_steps=10, encoder_u=False, device="cpu")
    export_model(sep.fit(X), "ivae-cli-test-v1", root=tmp_path, config={"kind": "synthetic"})
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "ivae-cli-test-v1" in out and "synthetic" in out
    assert main(["models", "show", "ivae-cli-test-v1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "ivae-cli-test-v1" and shown["n_sources"] == 2
    assert main(["models", "show", "nope"]) == 2
    assert "Valid names are: ivae-cli-test-v1" in capsys.readouterr().err

    assert main(["recipes", "list"]) == 0
    listed = capsys.readouterr().out
    assert "pretrained" in listed and "synthetic" in listed
    # `recipes run` runs recipes/NAME/run.py with the given arguments from the
    # repository root and passes its exit code on.
    import sepkit.cli.recipes as cli_recipes

    calls = []
    monkeypatch.setattr(
        cli_recipes.subprocess, "call", lambda cmd, cwd: calls.append((cmd, cwd)) or 3
    )
    assert main(["recipes", "run", "pretrained", "--stage", "train"]) == 3
    assert calls == [
        ([sys.executable, str(REPO / "recipes/pretrained/run.py"), "--stage", "train"], REPO)
    ]
    # Paths the user gives are theirs, not the repository root's: made absolute.
    calls.clear()
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "run", "pretrained", "--config", "my.toml", "--exp=out"]) == 3
    assert calls[0][0][2:] == ["--config", str(tmp_path / "my.toml"), f"--exp={tmp_path / 'out'}"]
    # A config of the recipe's own, as its README names it (audit: a traceback).
    calls.clear()
    assert main(["recipes", "run", "pretrained", "--config", "conf/eeg.toml"]) == 3
    assert calls[0][0][2:] == ["--config", str(REPO / "recipes/pretrained/conf/eeg.toml")]

    # The pretrained recipe end to end on its tiny config (in-process: the
    # subprocess would only add the torch import).
    import importlib.util

    spec = importlib.util.spec_from_file_location("run", REPO / "recipes/pretrained/run.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    exp, models = tmp_path / "exp", tmp_path / "models"
    argv = ["--config", "conf/tiny.toml", "--exp", str(exp), "--export-root", str(models)]
    import torch

    n_threads = torch.get_num_threads()
    try:
        assert recipe.main(argv) == 0  # sets one torch thread, for reproducible timings
    finally:
        torch.set_num_threads(n_threads)
    card = (models / "ivae-tiny-test-v1" / "MODEL_CARD.md").read_text()
    assert "| new setup | fine-tune | 50 |" in card
    loaded = IVAESeparator.from_pretrained(models / "ivae-tiny-test-v1", device="cpu")
    assert loaded.n_sources == 2
    # A released name is never overwritten: the recipe refuses before training.
    with pytest.raises(SystemExit, match="exists and released models are never overwritten"):
        recipe.main(argv)
    # The smoke test's model never goes into pretrained/ (audit: it did, without
    # --export-root, and `sepkit models list` showed it).
    with pytest.raises(
        SystemExit, match=r"ivae-tiny-test-v1 is a smoke test's model: pass --export-root"
    ):
        recipe.main(argv[:4])
    assert not (REPO / "pretrained" / "ivae-tiny-test-v1").exists()


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in ("demo", "separate", "fit", "evaluate", "models", "recipes"):
        assert name in out

    from sepkit import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"sepkit {__version__}\n"


def test_separate_eeg_with_pretrained_model(tmp_path, capsys):
    from sepkit.datasets import make_eeg

    # A new head at 128 Hz: the shipped 256 Hz model needs --resample.
    raw, _, _ = make_eeg(8, duration=8.0, sample_rate=128.0, random_state=5)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    out = tmp_path / "out"
    argv = ["separate", str(path), "--model", "ivae-eeg1020-256hz-v1", "-o", str(out)]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "sample_rate 128 Hz but the model expects 256 Hz (the 'network' family's model reads "
        "time, not just each sample). Pass --resample, or resample the file first." in err
    )
    assert main(argv + ["--resample", "--plots", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "rec_metrics.json", "rec_sources.png", "rec_sources_raw.fif", "rec_topographies.png",
    ]  # fmt: skip
    assert _png_ok(out / "rec_topographies.png")
    import mne

    sources = mne.io.read_raw_fif(out / "rec_sources_raw.fif", verbose="error")
    assert sources.info["sfreq"] == 256.0 and len(sources.ch_names) == 8


def test_separate_eeg_mixing_choice(tmp_path):
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(4, duration=20.0, sample_rate=128.0, random_state=2)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    for mixing, extra, expect_steps in [("auto", [], 0), ("nonlinear", ["--steps", "5"], 5)]:
        out = tmp_path / mixing
        argv = ["separate", str(path), "--n-sources", "4", "-o", str(out), "--quiet"]
        assert main(argv + ["--mixing", mixing, *extra]) == 0
        info = json.loads((out / "rec_metrics.json").read_text())
        # EEG defaults to the linear iVAE (no training steps); the network on request.
        assert info["mixing"] == ("linear" if mixing == "auto" else "nonlinear")
        assert info["n_steps"] == expect_steps
    err = _cli("fit", path, "--n-sources", "4", "-o", tmp_path / "m.st", "--mixing", "affine")
    assert err.returncode == 2 and "invalid choice: 'affine'" in err.stderr


def test_prior_option_reaches_the_separator(tmp_path):
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(4, duration=20.0, sample_rate=128.0, random_state=2)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    model = tmp_path / "m.safetensors"
    argv = ["fit", str(path), "--n-sources", "4", "-o", str(model), "--quiet"]
    assert main(argv + ["--prior", "gengauss", "--highpass", "1"]) == 0
    fitted = json.loads((tmp_path / "m_metrics.json").read_text())
    assert fitted["prior"] == "gengauss" and fitted["mixing"] == "linear"
    assert IVAESeparator.load(model).source_shape_.shape == (4,)
    err = _cli("fit", path, "--n-sources", "4", "-o", tmp_path / "n.safetensors",
               "--prior", "gengauss", "--mixing", "nonlinear")  # fmt: skip
    assert err.returncode == 2
    assert "prior='gengauss' is a prior of the linear models" not in err.stderr
    assert "--prior gengauss is a prior of the linear models" in err.stderr
    assert "Pass --mixing linear (or 'post-nonlinear')" in err.stderr
    # The EEG default is the extended prior; --prior gauss asks for the Gaussian one.
    for prior, expected in [(None, "extended"), ("gauss", "gauss"), ("extended", "extended")]:
        out = tmp_path / f"m_{prior}.safetensors"  # outputs are never overwritten
        extra = [] if prior is None else ["--prior", prior]
        assert main(["fit", str(path), "--n-sources", "4", "-o", str(out), "--quiet", *extra]) == 0
        assert json.loads((tmp_path / f"m_{prior}_metrics.json").read_text())["prior"] == expected
    err = _cli("fit", path, "--n-sources", "4", "-o", tmp_path / "n.safetensors",
               "--prior", "extended", "--mixing", "nonlinear")  # fmt: skip
    assert err.returncode == 2
    assert "--prior extended is a prior of the linear models" in err.stderr


def test_highpass_option_reaches_the_separator(tmp_path):
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(
        4, duration=20.0, sample_rate=128.0, nonlinearity="saturation", random_state=2
    )
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    out = tmp_path / "pnl"
    argv = ["separate", str(path), "--n-sources", "4", "-o", str(out), "--quiet"]
    assert main(argv + ["--mixing", "post-nonlinear", "--highpass", "1", "--lowpass", "40"]) == 0
    info = json.loads((out / "rec_metrics.json").read_text())
    assert info["mixing"] == "post-nonlinear" and info["highpass"] == 1.0
    assert info["lowpass"] == 40.0
    model = out / "rec_model.safetensors"
    assert IVAESeparator.load(model).get_params()["highpass"] == 1.0
    assert main(["fit", str(path), "--n-sources", "4", "-o", str(tmp_path / "m.safetensors"),
                 "--highpass", "1.0", "--quiet"]) == 0  # fmt: skip
    fitted = json.loads((tmp_path / "m_metrics.json").read_text())
    # mixing="auto" with the filter inside found the clipping sensors.
    assert fitted["highpass"] == 1.0 and fitted["mixing"] == "post-nonlinear"
    assert fitted["sensor_nonlinearity_max"] >= 0.08 and fitted["lowpass"] is None
    assert info["sensor_nonlinearity_max"] >= 0.08
    err = _cli("fit", path, "--n-sources", "4", "-o", tmp_path / "z.safetensors",
               "--highpass", "0")  # fmt: skip
    assert err.returncode == 2 and "error: --highpass must be > 0.0, got 0.0." in err.stderr


def _assert_same_in_float32(actual, expected):
    # FIF stores single precision by default.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def _eeg_with_eog_lead(tmp_path, n_sources: int, duration: float):
    """(raw, S, path): make_eeg's recording plus an EOG lead, saved as rec_raw.fif.

    make_eeg's second source is a blink; the EOG lead records it with noise.
    """
    import mne

    from sepkit.datasets import make_eeg

    raw, S, _ = make_eeg(n_sources, duration=duration, sample_rate=128.0, random_state=1)
    eog = S[1] / S[1].std() * 50e-6 + 5e-6 * np.random.default_rng(0).standard_normal(S.shape[1])
    info = mne.create_info(["EOG"], 128.0, ["eog"])
    raw.add_channels([mne.io.RawArray(eog[None], info, verbose="error")], force_update_info=True)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    return raw, S, path


def test_separate_eeg_decim_and_reject_as_ica_fit(tmp_path, capsys):
    import mne

    raw, _, path = _eeg_with_eog_lead(tmp_path, 6, 60.0)
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")  # the file's float32 values
    raw._data[:6, 1000] += 1e-3  # a jump in the stretch [6, 8) s of the first channels
    raw.save(path, overwrite=True, verbose="error")
    out = tmp_path / "thin"
    argv = ["separate", str(path), "--n-sources", "6", "-o", str(out)]
    assert main(argv + ["--decim", "2", "--reject", "eeg=5e-4", "--tstep", "2"]) == 0
    said = capsys.readouterr().err
    assert f"rec_raw.fif: fitted on {(raw.n_times - 256) // 2} of {raw.n_times} samples " in said
    assert "(--decim 2, --reject eeg=5e-4)" in said
    info = json.loads((out / "rec_metrics.json").read_text())
    expected = IVAESeparator(6, device="cpu").fit(raw, decim=2, reject=dict(eeg=5e-4))
    # The stretch [6, 8) s (256 samples) left out, every other sample of the rest fitted.
    assert info["n_samples_fitted"] == expected.n_samples_ == (raw.n_times - 256) // 2
    assert info["reject"] == {"eeg": 5e-4}
    model = IVAESeparator.load(out / "rec_model.safetensors")
    _assert_same_in_float32(model.get_sources(raw).get_data(), expected.get_sources(raw).get_data())


def test_separate_and_fit_take_mne_n_components_forms(tmp_path, capsys):
    import mne

    _, _, path = _eeg_with_eog_lead(tmp_path, 6, 30.0)
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    for arg, value in (("0.9", 0.9), ("all", None)):
        out = tmp_path / f"out_{arg}"
        assert main(["separate", str(path), "--n-sources", arg, "-o", str(out)]) == 0
        expected = IVAESeparator(value, device="cpu").fit(raw)
        info = json.loads((out / "rec_metrics.json").read_text())
        assert info["n_sources"] == expected.n_sources_
        assert f"rec_raw.fif: {expected.n_sources_} sources -> " in capsys.readouterr().out
    assert expected.n_sources_ == 19  # "all": every channel of make_eeg's 19 (full rank)
    assert (
        main(["fit", str(path), "--n-sources", "0.9", "-o", str(tmp_path / "m.safetensors")]) == 0
    )
    fitted = IVAESeparator.load(tmp_path / "m.safetensors")
    assert fitted.n_sources == 0.9 and fitted.n_sources_ == IVAESeparator(0.9).fit(raw).n_sources_
    # An index beyond the count fitted: refused after the fit, before anything is written.
    out = tmp_path / "bad_exclude"
    assert (
        main(["separate", str(path), "--n-sources", "0.9", "-o", str(out), "--exclude", "18"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sepkit separate: error: rec_raw.fif: --exclude names source(s) [18]")
    assert "Traceback" not in "".join(err)
    assert not out.exists()
    # A room needs the number of talkers; a share outside (0, 1) is no form at all.
    room = _wav(tmp_path / "room.wav", 0)
    assert (
        main(["separate", str(room), "--domain", "tf", "--n-sources", "all", "-o", str(out)]) == 2
    )
    assert "room.wav: --n-sources all counts sources from a PCA" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["separate", str(path), "--n-sources", "1.5", "-o", str(out)])
    assert "--n-sources: takes a number of sources (e.g. 15), a share" in capsys.readouterr().err


def test_separate_sample_option_errors_are_one_line_before_any_work(tmp_path, capsys):
    raw, _, path = _eeg_with_eog_lead(tmp_path, 4, 20.0)
    out = tmp_path / "out"
    cases = [
        (["--reject", "eeg"], "--reject takes TYPE=VOLTS pairs separated by commas (e.g. "
         "--reject eeg=150e-6,eog=250e-6), got 'eeg'."),
        (["--flat", "eeg=1e-9;eog=1"], "--flat takes TYPE=VOLTS pairs"),
        (["--decim", "0"], "--decim must be >= 1 (fit on every N-th sample), got 0."),
        (["--tstep", "5"], "rec_raw.fif: --tstep 5.0 sets the stretches that reject and flat "
         "judge, but neither was given. Pass --reject eeg=... or --flat ..., or drop --tstep."),
        (["--reject", "ecg=1e-3"], "rec_raw.fif: --reject has the key 'ecg', but no fitted "
         "channel is of that type (the fitted channels are of type(s) ['eeg']). Drop the key "
         "(the command line fits the EEG channels)."),
        (["--reject", "eeg=1e-12"], "rec_raw.fif: reject={'eeg': 1e-12} and flat=None left no "
         "2 s stretch of the recording to fit."),
    ]  # fmt: skip
    for extra, message in cases:
        argv = ["separate", str(path), "--n-sources", "4", "-o", str(out), "--quiet", *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"sepkit separate: error: {message}"), err
        assert not out.exists()


def test_separate_eeg_output_beyond_the_split_size_moves_every_part(tmp_path, monkeypatch):
    import mne

    import sepkit.io.eeg as eeg_io
    from sepkit.datasets import make_eeg

    raw, _, _ = make_eeg(6, montage="biosemi32", duration=300.0, sample_rate=128.0,
                         random_state=0)  # fmt: skip
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    monkeypatch.setattr(eeg_io, "FIF_SPLIT_SIZE", "3MB")  # MNE's 2 GB, scaled down
    out = tmp_path / "out"
    argv = ["separate", str(path), "--n-sources", "6", "-o", str(out), "--exclude", "0"]
    assert main([*argv, "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "rec_cleaned_raw-1.fif" in names and "rec_cleaned_raw.fif" in names, names
    assert not [n for n in names if n.startswith(".")]
    cleaned = mne.io.read_raw_fif(out / "rec_cleaned_raw.fif", verbose="error")
    assert cleaned.n_times == raw.n_times
    # A rerun whose output fits in one part replaces the earlier set's parts too.
    raw.crop(0.0, 20.0).save(path, overwrite=True, verbose="error")
    assert main([*argv, "--quiet", "--force"]) == 0
    assert not [p.name for p in out.iterdir() if "-1.fif" in p.name]


def test_separate_eeg_exclude_writes_the_cleaned_recording(tmp_path, capsys):
    import mne

    raw, S, path = _eeg_with_eog_lead(tmp_path, 6, 60.0)
    out = tmp_path / "eog"
    argv = ["separate", str(path), "--n-sources", "6", "-o", str(out), "--exclude", "eog"]
    assert main(argv + ["--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "rec_cleaned_raw.fif", "rec_metrics.json", "rec_model.safetensors", "rec_sources_raw.fif",
    ]  # fmt: skip
    info = json.loads((out / "rec_metrics.json").read_text())
    sep = IVAESeparator.load(out / "rec_model.safetensors")
    sources = sep.get_sources(raw).get_data()
    truth = np.abs([np.corrcoef(s, S[1])[0, 1] for s in sources])
    assert info["excluded"] == [int(np.argmax(truth))] and truth.max() > 0.9
    assert np.shape(info["eog_scores"]) == (6,)
    cleaned = mne.io.read_raw_fif(out / "rec_cleaned_raw.fif", verbose="error")
    assert cleaned.ch_names == raw.ch_names  # the EOG lead kept, as MNE's apply does
    _assert_same_in_float32(cleaned.get_data(), sep.apply(raw, exclude=info["excluded"]).get_data())
    # The model file removes what the run removed (audit: its exclude was empty).
    assert sep.exclude == info["excluded"]
    _assert_same_in_float32(cleaned.get_data(), sep.apply(raw).get_data())

    # Chosen by hand on a saved model; the model's own exclude is removed too.
    sep.exclude = [4]
    sep.save(tmp_path / "m.safetensors")
    out2 = tmp_path / "hand"
    argv = ["separate", str(path), "--model", str(tmp_path / "m.safetensors"), "-o", str(out2)]
    assert main(argv + ["--exclude", "3,0", "--quiet"]) == 0
    assert json.loads((out2 / "rec_metrics.json").read_text())["excluded"] == [0, 3, 4]
    cleaned = mne.io.read_raw_fif(out2 / "rec_cleaned_raw.fif", verbose="error").get_data()
    _assert_same_in_float32(cleaned, sep.apply(raw, exclude=[0, 3]).get_data())

    # An EOG lead that records no blink: nothing flagged, and the run says so.
    quiet_eye = raw.copy()
    quiet_eye._data[raw.ch_names.index("EOG")] = np.random.default_rng(1).standard_normal(
        raw.n_times
    )
    quiet_eye.save(tmp_path / "calm_raw.fif", verbose="error")
    argv = [*argv[:1], str(tmp_path / "calm_raw.fif"), *argv[2:]]
    capsys.readouterr()
    assert main(argv + ["--exclude", "eog"]) == 0
    assert (
        "no source follows the EOG (find_bads_eog flagged none at |r| >= 0.5), so "
        "calm_cleaned_raw.fif lacks only the model's own exclude [4]." in capsys.readouterr().err
    )
    assert json.loads((out2 / "calm_metrics.json").read_text())["excluded"] == [4]

    # A disconnected (flat) EOG lead is refused, not read as "no source follows it",
    # and nothing of that recording is written.
    flat_eye = raw.copy()
    flat_eye._data[raw.ch_names.index("EOG")] = 0.0
    flat_eye.save(tmp_path / "flat_raw.fif", verbose="error")
    argv_flat = [*argv[:1], str(tmp_path / "flat_raw.fif"), *argv[2:]]
    assert main(argv_flat + ["--exclude", "eog"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and (
        "find_bads_eog: the reference channel(s) ['EOG'] are flat or hold NaN/Inf over the "
        "samples scored, so no source can follow them (a disconnected lead?). Pass "
        "--eog-channels Fp1,Fp2 or other channels" in err
    )
    assert not list(out2.glob("flat_*"))

    # The EOG reference named by hand: the same blink against the lead, named.
    argv = ["separate", str(path), "--model", str(tmp_path / "m.safetensors")]
    named = tmp_path / "named"
    assert main(argv + ["-o", str(named), "--exclude", "eog", "--eog-channels", "EOG"]) == 0
    assert json.loads((named / "rec_metrics.json").read_text())["excluded"] == sorted(
        {*info["excluded"], 4}
    )
    capsys.readouterr()
    bad = ["--exclude", "eog", "--eog-channels", "VEOG"]
    assert main(argv + ["-o", str(tmp_path / "z"), *bad]) == 2
    err = capsys.readouterr().err
    assert (
        "sepkit separate: error: rec_raw.fif: --eog-channels names channel(s) ['VEOG'] that raw lacks"
        in err
    )
    assert main(argv + ["-o", str(tmp_path / "z"), "--eog-channels", "EOG"]) == 2
    assert "--eog-channels names the EOG reference of --exclude eog, which is not given" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "z").exists()
    argv = ["separate", str(path), "--model", str(tmp_path / "m.safetensors"), "-o", str(out2)]

    wav = _wav(tmp_path / "a.wav", 0)
    for extra, message in [
        (["--exclude", "6"], "--exclude names source(s) [6], but there are 6 sources (indices 0 "
         "to 5). Pass indices in that range."),
        (["--exclude", "1;2"], "--exclude takes comma-separated source indices (e.g. 0,3), or "
         "one of 'eog', 'muscle' and 'iclabel' (EEG), got '1;2'."),
        (["--exclude", "eog,0"], "--exclude takes comma-separated source indices (e.g. 0,3), "
         "or one of 'eog', 'muscle' and 'iclabel' (EEG), got 'eog,0'."),
    ]:  # fmt: skip
        assert main([*argv[:-1], str(tmp_path / "x"), *extra]) == 2
        assert capsys.readouterr().err.strip() == f"sepkit separate: error: {message}"
    argv = ["separate", str(wav), "--n-sources", "2", "-o", str(tmp_path / "y"), "--exclude", "0"]
    assert main(argv) == 2
    assert "--exclude removes sources from EEG recordings, but a.wav is audio" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --- help text and start-up (issue 22) -------------------------------------------------

_HELP_ARGVS = [
    ["--help"],
    *([name, "--help"] for name in ("demo", "separate", "fit", "evaluate", "fit-batch")),
    ["models", "list", "--help"],
    ["recipes", "run", "--help"],
]


def _all_help_texts():
    from sepkit.cli import build_parser

    def walk(parser):
        yield parser.prog, parser.format_help()
        for action in parser._actions:
            if isinstance(action.choices, dict):  # a subparsers action
                for sub in action.choices.values():
                    yield from walk(sub)

    return dict(walk(build_parser()))


def test_help_text_has_no_rest_markup():
    import re

    # The subcommands' module docstrings are their descriptions; their ``code`` and
    # :func:`x` markup reads as `code` in a terminal.
    texts = _all_help_texts()
    assert {"sepkit", "sepkit separate", "sepkit models list", "sepkit recipes run"} <= set(texts)
    for prog, text in texts.items():
        assert "``" not in text, prog
        assert not re.search(r":[a-z]+:`", text), prog
    assert "`sepkit fit`: fit a separator on one recording" in texts["sepkit fit"]


def test_recipes_list_shows_no_issue_references(tmp_path, capsys):
    import re

    assert main(["recipes", "list"]) == 0
    listed = capsys.readouterr().out
    assert "audio_bss" in listed and not re.search(r"\bissues?\b", listed, re.I)

    from sepkit.cli.recipes import _summary

    run = tmp_path / "run.py"
    run.write_text('"""Audio recipe (issue #6, benchmark 2): ``sepkit`` vs AuxIVA (issue 4)."""\n')
    assert _summary(run) == "Audio recipe: `sepkit` vs AuxIVA."


def test_output_into_a_closed_pipe_is_no_traceback():
    # `sepkit recipes list | head -0`: the reader is gone before sepkit writes.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sepkit", "recipes", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_help_does_not_import_the_heavy_libraries():
    # `sepkit --help` took 2.4-3 s in torch, scikit-learn and MNE imports it never uses.
    code = (
        "import contextlib, io, json, sys\n"
        "from sepkit.cli import main\n"
        "heavy = ('torch', 'mne', 'sklearn', 'scipy', 'matplotlib', 'librosa', 'soundfile', "
        "'sepkit.separator')\n"
        "loaded = {}\n"
        f"for argv in {_HELP_ARGVS!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    loaded[' '.join(argv)] = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps(loaded))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert len(loaded) == len(_HELP_ARGVS)
    assert all(not mods for mods in loaded.values()), loaded


@pytest.mark.parametrize(
    "library, command_line",
    [
        ("Pass highpass=None and lowpass=None, or domain='time'.", "Pass no --highpass and no --lowpass, or --domain time."),
        ("'highpass' must be > 0.0, got -1.0.", "--highpass must be > 0.0, got -1.0."),
        ("'n_sources' as a float is a share of the variance", "--n-sources as a float is a share of the variance"),
        ("Pass the same channels as in fit (for an MNE Raw, picks=[...] selects them).", "Pass the same channels as in fit (keep only those channels in the file)."),
        ("Select them first (picks=[...] for an MNE Raw).", "Select them first (keep only those channels in the file)."),
        ("X is at 48000 Hz and source_model 'ivae-speech-16k-v1' at 16000 Hz: X is resampled to 16000 Hz for the separation and the sources back to the input's rate.", "The input is at 48000 Hz and --source-model ivae-speech-16k-v1 at 16000 Hz: it is resampled to 16000 Hz for the separation and the sources back to the input's rate."),
        ("Unusable EEG channels: flat. Mark them bad with sepkit.io.mark_bad_channels(raw) (or add them to raw.info['bads']), then drop them or interpolate with raw.interpolate_bads().", "Unusable EEG channels: flat. Drop or interpolate those channels in the file (e.g. with MNE: mark them in raw.info['bads'], then raw.drop_channels or raw.interpolate_bads, and save it)."),
        # Audit: Python advice (X.T, window=, window=None, fit_params) on the command line.
        ("X has shape (2, 1): more channels (2) than time samples (1). X must be (n_channels, n_times); if yours is (n_times, n_channels), pass X.T (in a scikit-learn pipeline, use sepkit.dropin_sklearn.IVAETransformer, which takes (n_samples, n_features)).", "X has shape (2, 1): more channels (2) than time samples (1). The file is too short to separate: give a recording with more samples than channels."),
        ("Pass a longer recording, fewer n_sources, or choose the windows yourself with window= (seconds) or window_samples=.", "Pass a longer recording, fewer --n-sources, or choose the windows yourself with --window (seconds)."),
        ("Pass window >= 6.25e-05 s (windows of about 1-2 s suit EEG), or window=None for the default.", "Pass window >= 6.25e-05 s (windows of about 1-2 s suit EEG), or no --window for the default."),
        ("leave them at their defaults; the 'flow' family's own n_steps go in fit_params={'n_steps': ...}.", "leave them at their defaults; the command line keeps the 'flow' family's own n_steps at their defaults (fit_params in Python sets them)."),
        ("'random_state' must be from 0 to 2**63 - 1", "--seed must be from 0 to 2**63 - 1"),
    ],
)  # fmt: skip
def test_library_advice_is_phrased_for_the_command_line(library, command_line):
    from sepkit.cli import command_line_phrasing

    assert command_line_phrasing(library) == command_line


def test_audio_source_plots_are_labelled_as_their_files(tmp_path, monkeypatch):
    import sepkit.viz as viz

    seen = {}
    real = viz.plot_sources

    def spy(rec, *args, **kwargs):
        seen["names"] = rec.ch_names
        return real(rec, *args, **kwargs)

    monkeypatch.setattr(viz, "plot_sources", spy)
    a = _wav(tmp_path / "a.wav", seed=0)
    out = tmp_path / "out"
    args = ["separate", str(a), "--n-sources", "2", "-o", str(out), "--plots", "--quiet"]
    assert main(args) == 0
    assert seen["names"] == ("s1", "s2")
    assert (out / "a_s1.wav").is_file() and (out / "a_s2.wav").is_file()


def test_separate_exclude_eog_records_the_frontal_cross_check(tmp_path, capsys):
    raw, _, path = _eeg_with_eog_lead(tmp_path, 4, 30.0)
    # An EOG lead typed EEG (as EEGLAB and BrainVision files have it): chosen by its name.
    raw.set_channel_types({"EOG": "eeg"}, verbose="error")
    eeg_typed = tmp_path / "typed_raw.fif"
    raw.save(eeg_typed, verbose="error")
    out = tmp_path / "out"
    argv = ["separate", str(eeg_typed), "--n-sources", "4", "-o", str(out), "--exclude", "eog"]
    assert main(argv + ["--quiet"]) == 0
    printed = capsys.readouterr().err
    assert "whose names say EOG" in printed
    assert "pass --eog-channels Fp1,Fp2 to score against the frontal channels" in printed
    metrics = json.loads((out / "typed_metrics.json").read_text())
    check = metrics["eog_frontal_check"]
    assert check["channels"] == ["Fp1", "Fp2"] and np.shape(check["scores"]) == (2, 4)
    assert metrics["eog_reference"] == ["EOG"]
    assert set(check["flagged_only_by_frontal"]).isdisjoint(metrics["excluded"])


def test_separate_exclude_says_what_it_removed(tmp_path, capsys):
    raw, _, path = _eeg_with_eog_lead(tmp_path, 4, 30.0)
    out = tmp_path / "eog"
    assert (
        main(["separate", str(path), "--n-sources", "4", "-o", str(out), "--exclude", "eog"]) == 0
    )
    printed = capsys.readouterr().err
    metrics = json.loads((out / "rec_metrics.json").read_text())
    k = metrics["excluded"]
    assert len(k) == 1 and metrics["eog_reference"] == ["EOG"]
    # The share by hand: variance of what the removal changed over the fitted channels',
    # each channel about its own mean.
    sep = IVAESeparator.load(out / "rec_model.safetensors")
    names = list(sep.ch_names_)
    before = raw.get_data(picks=names)
    change = before - sep.apply(raw, exclude=k).get_data(picks=names)
    share = np.var(change, axis=1).sum() / np.var(before, axis=1).sum()
    assert metrics["removed_variance_share"] == pytest.approx(share, abs=1e-4)
    assert metrics["removed_variance_per_source"] == {str(k[0]): pytest.approx(share, abs=1e-4)}
    assert f"rec_raw.fif: removed source(s) {k}, {100 * share:.1f} %" in printed
    assert "EOG reference EOG" in printed
    # Removing everything takes all the variance: a warning says so.
    out2 = tmp_path / "all"
    argv = ["separate", str(path), "--model", str(out / "rec_model.safetensors"), "-o", str(out2)]
    assert main([*argv, "--exclude", "0,1,2,3", "--quiet"]) == 0
    assert "more than half" in capsys.readouterr().err
    # DC offsets that differ by channel (an unfiltered BioSemi file's) do not count
    # as variance: the same share as without them (they read as 0.0 % before).
    offset = raw.copy()
    offset._data[: len(names)] += np.linspace(-0.02, 0.02, len(names))[:, None]
    offset.save(tmp_path / "dc_raw.fif", verbose="error")
    argv[1] = str(tmp_path / "dc_raw.fif")
    assert main([*argv, "--exclude", ",".join(map(str, k)), "--quiet"]) == 0
    shifted = json.loads((out2 / "dc_metrics.json").read_text())
    assert shifted["removed_variance_share"] == pytest.approx(share, abs=1e-3)


def test_separate_exclude_muscle(tmp_path, capsys):
    import mne

    from sepkit.datasets import make_eeg

    raw, S, _ = make_eeg(8, montage="biosemi32", duration=60.0, random_state=0)
    raw.filter(1.0, None, verbose="error")
    path = tmp_path / "m_raw.fif"
    raw.save(path, verbose="error")
    out = tmp_path / "out"
    assert (
        main(["separate", str(path), "--n-sources", "8", "--exclude", "muscle", "-o", str(out)])
        == 0
    )
    info = json.loads((out / "m_metrics.json").read_text())
    model = IVAESeparator.load(out / "m_model.safetensors")
    saved = mne.io.read_raw_fif(path, preload=True, verbose="error")
    flagged, scores = model.find_bads_muscle(saved)
    assert info["excluded"] == sorted(flagged) and len(flagged) >= 1
    np.testing.assert_allclose(info["muscle_scores"], np.round(scores, 4), atol=1e-4)
    # make_eeg's fourth source is muscle: the flagged source is the one that follows it.
    sources = model.get_sources(saved).get_data()
    muscle = S[3] - S[3].mean()
    r = [abs(np.corrcoef(s, muscle)[0, 1]) for s in sources]
    assert int(np.argmax(r)) in flagged
    assert "m_raw.fif: removed source(s) " in capsys.readouterr().err


def test_separate_refuses_options_it_would_not_use(tmp_path, capsys):
    # --model without --fine-tune fits nothing, so fit options would be ignored; and
    # --resample has no model rate to resample to in a new fit. Nothing is written.
    raw, _, path = _eeg_with_eog_lead(tmp_path, 4, 30.0)
    model = tmp_path / "m.safetensors"
    IVAESeparator(4).fit(raw).save(model)
    out = tmp_path / "out"
    base = ["separate", str(path), "--model", str(model), "-o", str(out)]
    for extra, named in (
        (["--steps", "10"], "--steps shapes"),
        (["--tstep", "1", "--window", "3"], "--window, --tstep shape"),
        (["--seed", "5"], "--seed shapes"),
        (["--reject", "eeg=1e-3"], "--reject shapes"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert (
            f"sepkit separate: error: {named} a fit, but --model {model} separates with the "
            "saved model as it is, without fitting. Drop them, or pass --fine-tune" in err
        )
    # The model's own settings: refused with or without --fine-tune.
    assert main(base + ["--highpass", "1", "--prior", "gengauss"]) == 2
    assert (
        f"sepkit separate: error: --highpass, --prior choose the model a new fit builds, but "
        f"--model {model} keeps its own settings. Drop them, or fit a new separator with "
        "--n-sources K." in capsys.readouterr().err
    )
    assert main(["separate", str(path), "--n-sources", "4", "-o", str(out), "--resample"]) == 2
    assert "--resample resamples each input to --model's sample rate, and a new fit" in (
        capsys.readouterr().err
    )
    # With a source model the reason differs (audit: it said the fit had no rate).
    speech = ["--source-model", "ivae-speech-16k-v1", "--resample"]
    assert main(["separate", str(path), "--n-sources", "2", "-o", str(out), *speech]) == 2
    assert "with --source-model the input is resampled to the source model's rate by " in (
        capsys.readouterr().err
    )
    assert not out.exists()
    assert main(base + ["--quiet"]) == 0  # a plain --model run


def test_an_option_given_at_its_default_is_still_reported_unused(tmp_path, capsys):
    # Audit: `--steps 5000` (the estimator's default) on a linear fit was dropped without
    # a word, where `--steps 10` was reported.
    import soundfile as sf

    rng = np.random.default_rng(0)
    s = rng.laplace(size=(2, 16000)) * np.repeat(rng.uniform(0.2, 2, (2, 16)), 1000, axis=1)
    sf.write(str(tmp_path / "a.wav"), (np.array([[1, 0.5], [0.3, 1]]) @ s).T / 20, 8000)
    argv = [
        "fit",
        str(tmp_path / "a.wav"),
        "--n-sources",
        "2",
        "-o",
        str(tmp_path / "m.safetensors"),
    ]
    assert main([*argv, "--steps", "5000", "--domain", "time", "--mixing", "linear"]) == 0
    assert (
        "sepkit fit: warning: --steps 5000: not used by the 'linear' model family that this "
        "fit chose; it is ignored." in capsys.readouterr().err.splitlines()
    )
