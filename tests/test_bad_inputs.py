"""The bad-input matrix (issue 22), library side: each case gives a clear error whose
message names the problem and the fix, and creates or changes no file.

The command line's cases (exit code 2, one line) are in tests/cli/.
"""

import re

import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.io import Recording

RNG = np.random.default_rng(0)


def _audio(data):
    return Recording(np.asarray(data, np.float32), 16000.0, ("mic0", "mic1"), "audio")


def _segments(n_sources=3, n_windows=30, n=100, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.repeat(rng.uniform(0.2, 2.0, (n_sources, n_windows)), n, axis=1)
    S = rng.laplace(size=(n_sources, n_windows * n)) * scales
    return rng.normal(size=(n_sources, n_sources)) @ S


NOISE = RNG.normal(size=(2, 16000))
FIT_CASES = [
    # (id, X, u, error type, message regex)
    ("silent audio", _audio(np.zeros((2, 16000))), None, ValueError, "X is silent"),
    (
        "one all-zero channel",
        _audio(np.vstack([NOISE[0], np.zeros(16000)])),
        None,
        ValueError,
        r"flat \(constant\) channel\(s\) \['mic1'\]",
    ),
    ("values near 1e30", _audio(1e30 * NOISE), None, ValueError, r"values up to .*Rescale"),
    (
        "values near 1e-17",
        1e-17 * _segments(),
        None,
        ValueError,
        r"^X holds values of at most \S+e-16, below what the fit computes safely in float32 "
        r"\(a peak of at least 1e-15\)\. Rescale it first",
    ),
    ("transposed array", NOISE.T, None, ValueError, r"more channels .* pass X\.T"),
    ("NaN sample", np.where(np.eye(2, 16000) > 0, np.nan, NOISE), None, ValueError, "NaN or Inf"),
    (
        "NaN among u labels",
        _segments(),
        np.where(np.arange(3000) == 5, np.nan, np.repeat(np.arange(30.0), 100)),
        ValueError,
        r"u holds 1 NaN or Inf label",
    ),
    (
        "all-NaN u",
        _segments(),
        np.full(3000, np.nan),
        ValueError,
        r"u holds 3000 NaN or Inf label",
    ),
    ("u of the wrong length", _segments(), np.zeros(10), ValueError, "u has 10 labels"),
    ("u with a single value", _segments(), np.zeros(3000), ValueError, "single value"),
]


@pytest.mark.parametrize(
    "X, u, error, match", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES]
)
def test_fit_refuses_bad_input(X, u, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sep = IVAESeparator(2 if np.shape(getattr(X, "data", X))[0] == 2 else 3, n_steps=5)
    with pytest.raises(error, match=match):
        sep.fit(X, u)
    assert not hasattr(sep, "fitted_")  # nothing half-fitted
    assert list(tmp_path.iterdir()) == []  # and nothing written


def test_small_units_are_not_silent():
    # Audit: data at 1e-12 (MEG in tesla) were called silent: the flat test was absolute.
    X = _segments()
    S = [
        IVAESeparator(3, mixing="linear").fit(scale * X).transform(scale * X)
        for scale in (1e-13, 1.0)
    ]
    np.testing.assert_allclose(S[0], S[1], rtol=1e-4, atol=1e-4 * np.abs(S[1]).max())


def test_labels_to_a_separator_fitted_on_windows_are_named_as_such():
    X = _segments()
    sep = IVAESeparator(3, n_steps=5, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"fitted with u=None \(the index of windows"):
        sep.transform(X, np.repeat(np.arange(30), 100))


def test_a_fit_that_ends_non_finite_is_an_error_and_keeps_nothing(monkeypatch, tmp_path):
    import sepkit.methods.network as network

    real = network.train_ivae

    def diverging(model, *args, **kwargs):
        history = real(model, *args, **kwargs)
        with __import__("torch").no_grad():
            next(model.parameters()).fill_(float("nan"))
        return history

    monkeypatch.setattr(network, "train_ivae", diverging)
    X = _segments()
    sep = IVAESeparator(3, n_steps=5, random_state=0)
    with pytest.raises(RuntimeError, match="non-finite weights .* nothing was kept"):
        sep.fit(X)
    assert not hasattr(sep, "fitted_")
    with pytest.raises(Exception, match="not fitted yet"):
        sep.save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_all_bad_annotated_raw_is_named_as_such():
    mne = pytest.importorskip("mne")
    info = mne.create_info([f"EEG{i}" for i in range(4)], 100.0, "eeg")
    raw = mne.io.RawArray(1e-5 * RNG.normal(size=(4, 3000)), info, verbose="error")
    raw.set_annotations(mne.Annotations([0.0], [30.0], ["BAD_all"]))
    with pytest.raises(ValueError, match="Every sample of the Raw lies under a bad annotation"):
        IVAESeparator(2, highpass=1.0).fit(raw)


# ----------------------------------------------------------------- command line
# Each case: a command built in a scratch folder holding good.wav (2-channel, 8 kHz),
# mono.wav, empty.wav, empty_raw.fif, a folder dir.wav, a FIFO fifo.wav, and an
# existing out/ with one earlier output. Every case must exit 2 with one stderr line
# matching the message, and leave every file of the folder as it was.
def _cli_folder(root):
    import os

    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    s = rng.standard_normal((2, t.size)) * (1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t))
    sf.write(str(root / "good.wav"), (0.1 * np.array([[1, 0.5], [0.3, 1]]) @ s).T, 8000)
    sf.write(str(root / "mono.wav"), 0.1 * s[0], 8000)
    sf.write(str(root / "silent.wav"), np.zeros((4000, 2)), 8000)
    (root / "empty.wav").write_bytes(b"")
    (root / "empty_raw.fif").write_bytes(b"")
    (root / "dir.wav").mkdir()
    os.mkfifo(root / "fifo.wav")
    (root / "out").mkdir()
    (root / "out" / "good_s1.wav").write_bytes(b"earlier result")
    (root / "model.safetensors").write_bytes(b"not a model")
    (root / "bad.toml").write_text("out = [unclosed\n")
    _average_referenced_fif(root / "avgref_raw.fif")


def _average_referenced_fif(path):
    """4 EEG channels (rank 3 after the average reference), high-passed, as FIF."""
    import mne

    info = mne.create_info(["Fz", "Cz", "Pz", "Oz"], 100.0, "eeg")
    raw = mne.io.RawArray(1e-5 * _segments(4, 20, 100), info, verbose="error")
    raw.filter(1.0, None, verbose="error").set_eeg_reference("average", verbose="error")
    raw.save(path, verbose="error")


def _snapshot(root):
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if not p.is_fifo()
    }


CLI_CASES = [
    ("silent audio", ["separate", "silent.wav", "--n-sources", "2", "-o", "new"], "silent.wav: the recording is silent"),
    ("mono, 2 sources", ["separate", "mono.wav", "--n-sources", "2", "-o", "new"], "mono"),
    ("empty wav", ["separate", "empty.wav", "--n-sources", "2", "-o", "new"], r"empty \(0 bytes\)"),
    ("empty fif", ["separate", "empty_raw.fif", "--n-sources", "2", "-o", "new"], r"empty \(0 bytes\)"),
    ("folder as input", ["separate", "dir.wav", "--n-sources", "2", "-o", "new"], "is a folder"),
    ("FIFO as input", ["separate", "fifo.wav", "--n-sources", "2", "-o", "new"], "not a regular file"),
    ("missing input", ["separate", "nope.wav", "--n-sources", "2", "-o", "new"], "does not exist"),
    ("existing output", ["separate", "good.wav", "--n-sources", "2", "-o", "out"], "--force"),
    ("-o is a file", ["separate", "good.wav", "--n-sources", "2", "-o", "good.wav"], "is a file, not a folder"),
    ("fit -o folder", ["fit", "good.wav", "--n-sources", "2", "-o", "dir.wav"], "must end in .safetensors"),
    ("corrupt model", ["separate", "good.wav", "--model", "model.safetensors", "-o", "new"], "not a sepkit separator file"),
    ("unknown model", ["separate", "good.wav", "--model", "ivae-nope-v1", "-o", "new"], "Unknown pretrained model"),
    ("too many sources", ["separate", "good.wav", "--n-sources", "3", "-o", "new"], "--n-sources 3 is more than the 2 channels of the recording. Pass --n-sources 2 or fewer"),
    ("rank below --n-sources", ["separate", "avgref_raw.fif", "--n-sources", "4", "-o", "new"], r"--n-sources 4 is above the rank of the data \(3 of 4 channels; .* Pass --n-sources 3 or fewer"),
    ("evaluate --json folder", ["evaluate", "--ref", "good.wav", "--est", "good.wav", "--json", "dir.wav"], "is a folder"),
]  # fmt: skip


@pytest.mark.parametrize("argv, match", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_refuses_bad_input(argv, match, tmp_path, monkeypatch, capsys):
    from sepkit.cli import main

    _cli_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    if argv[0] in ("separate", "fit"):
        argv = [*argv, "--quiet"]  # no progress lines: stderr holds the error alone
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"sepkit {argv[0]}: error: ")
    assert re.search(match, err[0]), err[0]
    assert _snapshot(tmp_path) == before  # nothing created, nothing changed


def test_python_m_sepkit_train_bad_toml_is_one_line(tmp_path):
    import subprocess
    import sys

    _cli_folder(tmp_path)
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sepkit.train", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "not valid TOML" in lines[0]
    assert _snapshot(tmp_path) == before


def test_boolean_options_take_booleans_only():
    # Audit: check_option(..., (True, False)) took 1 and 0 (1 == True in Python), so
    # show=1 or repeat_mixing=0 passed; numpy's booleans are booleans.
    from sepkit._check import check_option
    from sepkit.datasets import make_nonlinear_ica

    assert check_option("show", np.True_, (True, False)) is True
    assert check_option("domain", "tf", ("auto", "time", "tf")) == "tf"
    for slip in (1, 0, 1.0, "True"):
        with pytest.raises(
            ValueError, match=r"'show' parameter. Allowed values are True and False"
        ):
            check_option("show", slip, (True, False))
    with pytest.raises(ValueError, match=r"'repeat_mixing' parameter"):
        make_nonlinear_ica(2, 4, 10, 2, repeat_mixing=1)
