"""Tests for ``sepkit fit-batch`` (sepkit/cli/fit_batch.py), through sepkit.cli.main."""

from __future__ import annotations

import numpy as np
import pytest

from sepkit import IVAESeparator
from sepkit.cli import main

sf = pytest.importorskip("soundfile")

RATE = 8000
# The network family (audio defaults to the linear one, which takes no steps).
STEPS = ["--steps", "20", "--domain", "time", "--mixing", "nonlinear", "--device", "cpu"]


def _wav(path, seed):
    rng = np.random.default_rng(seed)
    # Two amplitude-modulated noise sources, linearly mixed to two channels.
    t = np.arange(RATE // 2) / RATE
    s = rng.standard_normal((2, t.size)) * (1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t))
    x = np.array([[1.0, 0.5], [0.3, 1.0]]) @ s
    sf.write(str(path), (0.1 * x).T, RATE, subtype="FLOAT")
    return path


@pytest.fixture
def files(tmp_path):
    a = _wav(tmp_path / "a.wav", 0)
    b = _wav(tmp_path / "b.wav", 1)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....this is not audio")
    return a, bad, b


def test_failed_recording_is_reported_and_skipped(tmp_path, files, capsys):
    a, bad, b = files
    out = tmp_path / "models"
    code = main(["fit-batch", str(a), str(bad), str(b), "--out", str(out), *STEPS])
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {bad}: ")
    assert sorted(p.name for p in out.iterdir()) == ["a.safetensors", "b.safetensors"]
    sep = IVAESeparator.load(out / "a.safetensors", device="cpu")
    assert sep.n_sources == 2 and sep.n_steps_run_ == 20 and sep.sample_rate_ == RATE


def test_all_failed_leaves_no_empty_folder(tmp_path, files, capsys):
    _, bad, _ = files
    out = tmp_path / "new" / "models"
    assert main(["fit-batch", str(bad), "--out", str(out), *STEPS]) == 1
    assert capsys.readouterr().out.startswith(f"FAILED {bad}: ")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    assert main(["fit-batch", str(bad), "--out", str(existing), *STEPS]) == 1
    assert existing.is_dir()  # a folder the run did not make stays


def test_all_good_exits_zero_and_never_overwrites(tmp_path, files, capsys):
    a, _, b = files
    out = tmp_path / "models"
    argv = ["fit-batch", str(a), str(b), "--out", str(out), "--n-sources", "1", *STEPS]
    assert main(argv) == 0
    assert IVAESeparator.load(out / "b.safetensors", device="cpu").n_sources == 1
    before = (out / "a.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert f"FAILED {a}: FileExistsError: {out / 'a.safetensors'} exists; pass --force" in text
    assert (out / "a.safetensors").read_bytes() == before
    assert main([*argv, "--force", "--seed", "3"]) == 0
    assert (out / "a.safetensors").read_bytes() != before


def test_files_are_sharded_by_rank(tmp_path, files, monkeypatch, capsys):
    a, bad, b = files
    out = tmp_path / "models"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    # Rank 1 of 2 takes file 1 only (the broken one) ...
    assert main(["fit-batch", str(a), str(bad), str(b), "--out", str(out), *STEPS]) == 1
    assert not list(out.iterdir())
    monkeypatch.setenv("RANK", "0")
    # ... and rank 0 files 0 and 2.
    assert main(["fit-batch", str(a), str(bad), str(b), "--out", str(out), *STEPS]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.safetensors", "b.safetensors"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0."),
        # Checked once before any file (audit: one FAILED line per file, exit 1).
        (["--highpass", "-1"], "--highpass must be > 0.0, got -1.0."),
        (["--device", "foo"], "Invalid value for the 'device' parameter. Allowed values are "
         "'auto', 'cpu', 'cuda' and 'cuda:N', but got 'foo' instead."),
    ],
)  # fmt: skip
def test_bad_arguments(tmp_path, files, capsys, extra, match):
    a, _, _ = files
    assert main(["fit-batch", str(a), "--out", str(tmp_path / "m"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"sepkit fit-batch: error: {match}"
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit) as exc:  # argparse: not a count, share or 'all'
        main(["fit-batch", str(a), "--out", str(tmp_path / "m"), "--n-sources", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(
        "sepkit fit-batch: error: argument --n-sources: takes a number of sources (e.g. 15)"
    )


def test_same_stem_is_an_error(tmp_path, files, capsys):
    a, _, _ = files
    other = tmp_path / "sub"
    other.mkdir()
    twin = _wav(other / "a.wav", 2)
    assert main(["fit-batch", str(a), str(twin), "--out", str(tmp_path / "m"), *STEPS]) == 2
    err = capsys.readouterr().err
    assert "would both be saved as" in err and "Rename one" in err
    assert not (tmp_path / "m").exists()


def test_n_sources_share_or_all_is_counted_per_recording(tmp_path, files, capsys):
    a, _, b = files
    out = tmp_path / "m"
    assert main(["fit-batch", str(a), str(b), "--out", str(out), "--n-sources", "all", *STEPS]) == 0
    for name in ("a", "b"):
        fitted = IVAESeparator.load(out / f"{name}.safetensors")
        assert fitted.n_sources is None and fitted.n_sources_ == 2


def test_eeg_files_with_a_bad_channel_and_epochs(tmp_path, capsys):
    # Audit: with no --n-sources, an EEG file with a bad channel failed (n_sources was
    # counted with the bad channel); -epo.fif was refused; names kept "_raw".
    import mne

    rng = np.random.default_rng(0)
    s = rng.laplace(size=(3, 5000)) * np.repeat(rng.uniform(0.2, 2.0, (3, 50)), 100, axis=1)
    info = mne.create_info(["Fz", "Cz", "Pz", "Oz"], 250.0, "eeg")
    raw = mne.io.RawArray(1e-5 * (rng.normal(size=(4, 3)) @ s), info, verbose="error")
    raw.info["bads"] = ["Oz"]
    raw.save(tmp_path / "sub-01_raw.fif", verbose="error")
    epochs = mne.make_fixed_length_epochs(raw, 2.0, verbose="error")
    epochs.save(tmp_path / "sub-02-epo.fif", verbose="error")
    out = tmp_path / "models"
    files = [str(tmp_path / "sub-01_raw.fif"), str(tmp_path / "sub-02-epo.fif")]
    assert main(["fit-batch", *files, "--out", str(out), "--highpass", "1"]) == 0, (
        capsys.readouterr()
    )
    assert sorted(p.name for p in out.iterdir()) == ["sub-01.safetensors", "sub-02.safetensors"]
    one = IVAESeparator.load(out / "sub-01.safetensors")
    two = IVAESeparator.load(out / "sub-02.safetensors")
    assert one.ch_names_ == ("Fz", "Cz", "Pz") and one.n_sources_ == 3
    assert two.fitted_on_epochs_ and not one.fitted_on_epochs_


def test_rank_and_world_size_are_checked(tmp_path, files, monkeypatch, capsys):
    # Audit: WORLD_SIZE=0 was a ZeroDivisionError traceback, RANK=5 of 2 did nothing.
    a, _, _ = files
    for rank, world in (("0", "0"), ("5", "2"), ("abc", "2")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", world)
        assert main(["fit-batch", str(a), "--out", str(tmp_path / "m"), *STEPS]) == 2
        assert capsys.readouterr().err.strip() == (
            f"sepkit fit-batch: error: RANK={rank!r} and WORLD_SIZE={world!r} must be whole "
            "numbers with 0 <= RANK < WORLD_SIZE (torchrun sets them). Run under torchrun, "
            "or unset them."
        )
    assert not (tmp_path / "m").exists()
