"""Tests for the ``sepkit evaluate`` subcommand (sepkit/cli/evaluate.py)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sepkit import metrics as M
from sepkit.cli import evaluate

sf = pytest.importorskip("soundfile")
fast_bss_eval = pytest.importorskip("fast_bss_eval")

RATE = 8000


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _run(argv):
    parser = argparse.ArgumentParser(prog="sepkit")
    evaluate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


def _f32(x):
    """``x`` rounded to float32, as read_audio reads it (and back to float64)."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def _write(path, data, rate=RATE):
    # FLOAT keeps float32-rounded samples (see _f32) exact, so the CLI numbers can be
    # compared with the API.
    sf.write(str(path), np.asarray(data).T, rate, subtype="FLOAT")
    return path


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    S = _f32(0.1 * rng.standard_normal((3, 4000)))
    E = np.stack([S[2], S[0] + 0.2 * S[1], 0.5 * S[1]])
    E = _f32(E + 0.005 * rng.standard_normal(E.shape))  # artifacts keep every SAR finite
    (tmp_path / "ref").mkdir()
    (tmp_path / "est").mkdir()
    for i, name in enumerate("abc"):
        _write(tmp_path / "ref" / f"{name}.wav", S[i])
    for i, name in enumerate("xyz"):
        _write(tmp_path / "est" / f"{name}.wav", E[i])
    _write(tmp_path / "mix.wav", S.sum(0))
    return tmp_path, S, E


def test_evaluate_directories_matches_api_and_writes_json_csv(case, capsys):
    tmp, S, E = case
    out_json, out_csv = tmp / "o.json", tmp / "o.csv"
    code = _run(
        [
            "--ref",
            str(tmp / "ref"),
            "--est",
            str(tmp / "est"),
            "--mix",
            str(tmp / "mix.wav"),
            "--metrics",
            "si_sdr,si_sdri,sdr,sir,sar",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "SI-SDR dB" in printed and "mean" in printed and "a.wav" in printed
    data = json.loads(out_json.read_text())
    assert data["permutation"] == [1, 2, 0]
    assert data["matched_estimate"] == ["y.wav", "z.wav", "x.wav"]
    assert data["match_criterion"] == "sir"
    sdr, sir, sar, perm = fast_bss_eval.bss_eval_sources(S, E)
    np.testing.assert_allclose(data["per_source"]["sdr"], sdr, atol=0.01)
    np.testing.assert_allclose(data["per_source"]["sir"], sir, atol=0.01)
    np.testing.assert_allclose(data["per_source"]["sar"], sar, atol=0.01)
    np.testing.assert_allclose(data["per_source"]["si_sdr"], M.si_sdr(S, E[perm]), atol=1e-9)
    np.testing.assert_allclose(
        data["per_source"]["si_sdri"], M.si_sdr_improvement(S, E[perm], _f32(S.sum(0))), atol=1e-9
    )
    assert data["mean"]["sdr"] == pytest.approx(np.mean(sdr), abs=0.01)
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["reference", "estimate", "si_sdr", "si_sdri", "sdr", "sir", "sar"]
    assert [r[0] for r in rows[1:]] == ["a.wav", "b.wav", "c.wav", "mean"]
    assert float(rows[1][4]) == pytest.approx(sdr[0], abs=0.01)


def test_evaluate_si_sdr_only_matches_on_si_sdr(case, capsys):
    tmp, S, E = case
    files = [str(tmp / "est" / f"{n}.wav") for n in "xyz"]
    out_json = tmp / "o.json"
    assert _run(["--ref", str(tmp / "ref"), "--est", *files, "--metrics", "si_sdr,snr",
                 "--json", str(out_json)]) == 0  # fmt: skip
    data = json.loads(out_json.read_text())
    assert data["match_criterion"] == "si_sdr" and data["permutation"] == [1, 2, 0]
    np.testing.assert_allclose(data["per_source"]["snr"], M.snr(S, E[[1, 2, 0]]), atol=1e-9)


def test_evaluate_single_multichannel_file_and_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    S = _f32(0.1 * rng.standard_normal((2, 3000)))
    _write(tmp_path / "ref.wav", S)
    _write(tmp_path / "est.wav", S[::-1] + 0.01 * rng.standard_normal(S.shape))
    out = tmp_path / "o.json"
    assert _run(["--ref", str(tmp_path / "ref.wav"), "--est", str(tmp_path / "est.wav"),
                 "--json", str(out)]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    assert data["reference"] == ["ref.wav[ch0]", "ref.wav[ch1]"]
    assert data["permutation"] == [1, 0]
    # Stereo images, one file per source: ISR is available.
    img = _f32(0.1 * rng.standard_normal((2, 2, 3000)))
    est_img = _f32(img[::-1] + 0.01 * rng.standard_normal(img.shape))
    for i in range(2):
        _write(tmp_path / f"r{i}.wav", img[i])
        _write(tmp_path / f"e{i}.wav", est_img[i])
    refs = [str(tmp_path / f"r{i}.wav") for i in range(2)]
    ests = [str(tmp_path / f"e{i}.wav") for i in range(2)]
    assert _run(["--ref", *refs, "--est", *ests, "--metrics", "sdr,isr,sir,sar,si_sdr",
                 "--json", str(out), "--force"]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    expected = M.bss_eval(img, est_img, images=True)
    assert data["permutation"] == [1, 0] == expected.perm.tolist()
    for name in ("sdr", "isr", "sir", "sar"):
        np.testing.assert_allclose(data["per_source"][name], getattr(expected, name), atol=1e-9)
    # SDR-type scores of images: mean over channels.
    si = M.si_sdr(img, est_img[[1, 0]]).mean(-1)
    np.testing.assert_allclose(data["per_source"]["si_sdr"], si, atol=1e-9)


def test_evaluate_errors_name_the_files(case, tmp_path):
    tmp, S, _ = case
    ref = ["--ref", str(tmp / "ref")]
    _write(tmp / "fast.wav", S[0], rate=16000)
    with pytest.raises(ValueError, match=r"different sample rates \(8000 Hz: .*; 16000 Hz: .*fast"):
        _run([*ref, "--est", str(tmp / "est"), "--mix", str(tmp / "fast.wav")])
    _write(tmp / "stereo.wav", np.stack([S[0], S[0]]))
    _write(tmp / "mono.wav", S[1])
    with pytest.raises(ValueError, match=r"--est files have different channel counts: .*stereo"):
        _run([*ref, "--est", str(tmp / "stereo.wav"), str(tmp / "mono.wav")])
    with pytest.raises(ValueError, match=r"Got 3 reference source\(s\) \(a.wav, b.wav, c.wav\)"):
        _run([*ref, "--est", str(tmp / "est" / "x.wav"), str(tmp / "est" / "y.wav")])
    with pytest.raises(FileNotFoundError, match="--est: .*nope.wav does not exist"):
        _run([*ref, "--est", str(tmp / "nope.wav")])
    with pytest.raises(FileNotFoundError, match="--mix: .*nope.wav does not exist"):
        _run([*ref, "--est", str(tmp / "est"), "--mix", str(tmp / "nope.wav"), "--json",
              str(tmp / "m.json"), "--force"])  # fmt: skip
    (tmp / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--est .*empty: the directory holds no audio"):
        _run([*ref, "--est", str(tmp / "empty")])
    # An EEG file is said to be one, not "not supported or corrupt".
    (tmp / "s_raw.fif").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"--est: .*s_raw\.fif is an EEG file; sepkit evaluate"):
        _run([*ref, "--est", str(tmp / "s_raw.fif")])
    with pytest.raises(ValueError, match="--metrics: unknown metric"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "si_sdr,pesq"])
    with pytest.raises(ValueError, match="--metrics si_sdri needs the mixture"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "si_sdri"])
    with pytest.raises(ValueError, match="--metrics isr needs multichannel source images"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "isr"])
    with pytest.raises(ValueError, match="--filter-length must be >= 1"):
        _run([*ref, "--est", str(tmp / "est"), "--filter-length", "0"])
    stereo_refs = []
    for k in range(3):  # three files (the same file three times is refused)
        _write(tmp / f"stereo{k}.wav", np.stack([S[k], S[k]]))
        stereo_refs.append(str(tmp / f"stereo{k}.wav"))
    with pytest.raises(ValueError, match=r"references have 2 channel\(s\) per source"):
        _run(["--ref", *stereo_refs, "--est", str(tmp / "est")])
    (tmp / "bad.wav").write_text("not audio")
    with pytest.raises(ValueError, match="--est: Could not read '.*bad.wav': its format"):
        _run([*ref, "--est", str(tmp / "bad.wav")])


def test_evaluate_through_main_when_available(case, capsys):
    cli = pytest.importorskip("sepkit.cli")
    if not hasattr(cli, "main"):
        pytest.skip("sepkit.cli.main is not there yet")
    tmp, _, _ = case
    code = cli.main(["evaluate", "--ref", str(tmp / "ref"), "--est", str(tmp / "est")])
    assert code == 0
    assert "mean" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Outputs: --force, inputs never written over, path mistakes, atomic writes (issue 22)
# --------------------------------------------------------------------------------------


def _snapshot(folder):
    """{relative path: bytes (or 'dir')} of everything under ``folder``, hidden files too."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _main(argv, capsys):
    """Run ``sepkit evaluate`` through the command line; return (exit code, stderr lines)."""
    from sepkit.cli import main

    code = main(["evaluate", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def no_reading(monkeypatch):
    """Fail the test if any audio is read: output checks come before all work."""

    def fail(*a, **k):
        raise AssertionError("an input was read before the outputs were checked")

    monkeypatch.setattr(evaluate, "_load_side", fail)


def test_evaluate_refuses_existing_outputs_without_force(case, capsys):
    tmp, _, _ = case
    base = ["--ref", str(tmp / "ref"), "--est", str(tmp / "est"), "--metrics", "si_sdr"]
    (tmp / "o.json").write_text("earlier result\n")
    before = _snapshot(tmp)
    with pytest.raises(FileExistsError, match=r"output\(s\) exist: .*o\.json\. Pass --force"):
        _run([*base, "--json", str(tmp / "o.json"), "--csv", str(tmp / "o.csv")])
    code, err = _main([*base, "--json", str(tmp / "o.json")], capsys)
    assert code == 2 and len(err) == 1 and "o.json" in err[0] and "--force" in err[0]
    assert _snapshot(tmp) == before  # neither file written, the old one unchanged
    capsys.readouterr()
    assert _run([*base, "--json", str(tmp / "o.json"), "--csv", str(tmp / "o.csv"), "--force"]) == 0
    assert json.loads((tmp / "o.json").read_text())["match_criterion"] == "si_sdr"
    assert (tmp / "o.csv").read_text().startswith("reference,estimate,si_sdr")
    assert not list(tmp.glob(".*.tmp"))


@pytest.mark.parametrize("target", ["est/x.wav", "ref/b.wav", "mix.wav", "link.wav"])
def test_evaluate_never_writes_over_an_input(case, capsys, target):
    tmp, _, _ = case
    (tmp / "link.wav").symlink_to(tmp / "est" / "y.wav")  # a link onto an input counts too
    before = _snapshot(tmp)
    argv = ["--ref", str(tmp / "ref"), "--est", str(tmp / "est"), "--mix", str(tmp / "mix.wav")]
    for option in ("--json", "--csv"):
        with pytest.raises(ValueError, match=rf"{option} .*{target} is one of the input files; .*"
                           "never writes over its inputs, not even with --force"):  # fmt: skip
            _run([*argv, option, str(tmp / target), "--force"])
        code, err = _main([*argv, option, str(tmp / target)], capsys)
        assert code == 2 and len(err) == 1 and "one of the input files" in err[0]
    assert _snapshot(tmp) == before


def _readonly_probe(monkeypatch, folder):
    """Make ``folder`` refuse new files, as a read-only folder does (also for root)."""
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


OUTPUT_MISTAKES = [
    # (name, argv after the inputs, expected error type, message regex)
    ("json is a folder", ["--json", "{tmp}/est"], ValueError,
     r"--json .*est is a folder; pass a file path, e.g. .*est/scores\.json"),
    ("csv is a folder", ["--csv", "{tmp}"], ValueError, r"--csv .* is a folder; pass a file path"),
    ("folder with --force", ["--json", "{tmp}/est", "--force"], ValueError, r"is a folder"),
    ("missing parent", ["--json", "{tmp}/no/such/o.json"], FileNotFoundError,
     r"--json .*o\.json: the folder .*no/such does not exist\. Create it first"),
    ("missing parent csv", ["--csv", "{tmp}/no/o.csv", "--force"], FileNotFoundError,
     r"--csv .*: the folder .*no does not exist"),
    ("read-only folder", ["--json", "{tmp}/ro/o.json"], ValueError,
     r"--json .*ro/o\.json: cannot write in the folder .*ro \(Permission denied\)\. Pass a path "
     r"in a writable folder"),
    ("device", ["--json", "/dev/null", "--force"], ValueError,
     r"--json /dev/null exists and is not a regular file"),
    ("same file twice", ["--json", "{tmp}/o.txt", "--csv", "{tmp}/./o.txt"], ValueError,
     r"--json .*o\.txt and --csv .*o\.txt name the same file; give each its own"),
]  # fmt: skip


@pytest.mark.parametrize("argv, error, message", [c[1:] for c in OUTPUT_MISTAKES],
                         ids=[c[0] for c in OUTPUT_MISTAKES])  # fmt: skip
def test_evaluate_output_mistakes_are_one_line_before_any_work(
    case, capsys, monkeypatch, no_reading, argv, error, message
):
    tmp, _, _ = case
    (tmp / "ro").mkdir()
    _readonly_probe(monkeypatch, tmp / "ro")
    argv = [a.format(tmp=tmp) for a in argv]
    inputs = ["--ref", str(tmp / "ref"), "--est", str(tmp / "est")]
    before = _snapshot(tmp)
    with pytest.raises(error, match=message):
        _run([*inputs, *argv])
    code, err = _main([*inputs, *argv], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("sepkit evaluate: error: --")
    assert _snapshot(tmp) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anyway")
def test_evaluate_read_only_folder_for_real(case, no_reading):
    tmp, _, _ = case
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot write in the folder"):
            _run(["--ref", str(tmp / "ref"), "--est", str(tmp / "est"), "--csv",
                  str(tmp / "ro" / "o.csv")])  # fmt: skip
    finally:
        (tmp / "ro").chmod(0o755)


def test_evaluate_writes_both_files_or_neither(case, monkeypatch):
    tmp, _, _ = case
    out_json, out_csv = tmp / "o.json", tmp / "o.csv"
    out_json.write_text("old json\n")
    out_csv.write_text("old csv\n")

    def disk_full(path, *a):
        Path(path).write_text("half a ro")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "_write_csv", disk_full)
    argv = ["--ref", str(tmp / "ref"), "--est", str(tmp / "est"), "--metrics", "si_sdr"]
    with pytest.raises(OSError, match="No space left"):
        _run([*argv, "--json", str(out_json), "--csv", str(out_csv), "--force"])
    assert out_json.read_text() == "old json\n" and out_csv.read_text() == "old csv\n"
    with pytest.raises(OSError, match="No space left"):
        _run([*argv, "--json", str(tmp / "new.json"), "--csv", str(tmp / "new.csv")])
    assert not (tmp / "new.json").exists() and not (tmp / "new.csv").exists()
    assert not list(tmp.glob(".*.tmp"))  # no debris


def test_evaluate_skips_a_folder_named_like_audio(case, capsys):
    tmp, _, _ = case
    (tmp / "est" / "zz.wav").mkdir()
    assert _run(["--ref", str(tmp / "ref"), "--est", str(tmp / "est"), "--metrics", "si_sdr"]) == 0
    assert "zz.wav" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Reading and reporting: truncated files, inf, warnings (issue 22, item 10)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["--est", "--ref", "--mix"])
def test_evaluate_truncated_wav_is_a_clear_error(case, capsys, side):
    tmp, S, _ = case
    full = _write(tmp / "full.wav", S[0])
    cut = tmp / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # cut off while copying
    files = {"--ref": [str(tmp / "ref")], "--est": [str(tmp / "est")], "--mix": []}
    files[side] = [str(cut)]
    argv = ["--ref", *files["--ref"], "--est", *files["--est"], "--metrics", "si_sdr"]
    if side == "--mix":
        argv += ["--mix", str(cut), "--metrics", "si_sdri"]
    elif side == "--ref":
        argv[argv.index("--est") + 1] = str(tmp / "est" / "x.wav")
    with pytest.raises(ValueError, match=rf"{side}: Audio file '.*cut\.wav' is truncated: its "
                       r"header declares 4000 frames but only \d+ are present"):  # fmt: skip
        _run(argv)
    code, err = _main(argv, capsys)
    assert code == 2 and len(err) == 1 and "truncated" in err[0]


def test_evaluate_perfect_estimates_mean_inf_in_strict_json(tmp_path, capsys):
    rng = np.random.default_rng(3)
    S = _f32(0.1 * rng.standard_normal((2, 2000)))
    for i in range(2):
        _write(tmp_path / f"r{i}.wav", S[i])
        _write(tmp_path / f"e{i}.wav", S[i])
    out_json, out_csv = tmp_path / "o.json", tmp_path / "o.csv"
    assert _run(["--ref", str(tmp_path / "r0.wav"), str(tmp_path / "r1.wav"), "--est",
                 str(tmp_path / "e0.wav"), str(tmp_path / "e1.wav"), "--metrics", "si_sdr,snr",
                 "--json", str(out_json), "--csv", str(out_csv)]) == 0  # fmt: skip
    table = capsys.readouterr().out.splitlines()
    assert table[-1].split() == ["mean", "inf", "inf"]

    def strict(constant):
        raise AssertionError(f"{constant} is not JSON")

    data = json.loads(out_json.read_text(), parse_constant=strict)
    assert data["per_source"]["si_sdr"] == ["inf", "inf"]
    assert data["mean"] == {"si_sdr": "inf", "snr": "inf"}
    rows = list(csv.reader(out_csv.open()))
    assert rows[-1] == ["mean", "", "inf", "inf"]
    assert float(rows[-1][2]) == np.inf


def test_evaluate_mean_leaves_nan_out_and_is_nan_when_none_defined():
    v = np.array
    assert evaluate._mean(v([np.inf, np.inf])) == np.inf
    assert evaluate._mean(v([np.nan, 3.0, 5.0])) == 4.0
    assert evaluate._mean(v([np.nan, np.inf])) == np.inf
    assert np.isnan(evaluate._mean(v([np.nan, np.nan])))
    assert np.isnan(evaluate._mean(v([np.inf, -np.inf])))


def test_evaluate_says_each_warning_once(case, capsys):
    tmp, S, _ = case
    _write(tmp / "est" / "y.wav", np.zeros(S.shape[1]))  # one silent estimate
    argv = ["--ref", str(tmp / "ref"), "--est", str(tmp / "est")]
    with pytest.warns(M.SilentSignalWarning) as record:
        _run(argv)
    silent = [w for w in record if issubclass(w.category, M.SilentSignalWarning)]
    assert len(silent) == 1
    assert str(silent[0].message) == (
        "silent signal(s) (all zero or constant): --est y.wav; the scores that involve them are NaN "
        "and the mean leaves them out."
    )
    # The mean row says it leaves the silent estimate out (audit).
    assert any(
        line.startswith("mean") and "(over 2 of 3)" in line
        for line in capsys.readouterr().out.splitlines()
    )
    code, err = _main(argv, capsys)
    assert code == 0 and err == [f"sepkit evaluate: warning: {silent[0].message}"]


def test_evaluate_reads_every_audio_format_from_a_folder_and_refuses_a_file_twice(case, capsys):
    # Audit: a folder of MP3 files "held no audio files" (they were read one by one),
    # and the same estimate given twice was scored without a word.
    tmp, S, _ = case
    flac = tmp / "flac"
    flac.mkdir()
    for i, name in enumerate("abc"):
        sf.write(str(flac / f"{name}.oga"), S[i], RATE, format="OGG", subtype="VORBIS")
    assert evaluate._collect([str(flac)], "--ref") == sorted(flac.iterdir())
    est = [str(tmp / "est" / f"{n}.wav") for n in "xyx"]
    with pytest.raises(
        ValueError,
        match=r"^--est names .*x\.wav twice \(as .*x\.wav and .*x\.wav\)\. Pass each file once\.$",
    ):
        evaluate._collect(est, "--est")
