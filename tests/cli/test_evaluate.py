"""Tests for the ``sepkit evaluate`` subcommand (sepkit/cli/evaluate.py)."""

from __future__ import annotations

import argparse
import csv
import json

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


def _write(path, data, rate=RATE):
    # DOUBLE keeps the samples exact, so the CLI numbers can be compared with the API.
    sf.write(str(path), np.asarray(data).T, rate, subtype="DOUBLE")
    return path


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    S = 0.1 * rng.standard_normal((3, 4000))
    E = np.stack([S[2], S[0] + 0.2 * S[1], 0.5 * S[1]])
    E += 0.005 * rng.standard_normal(E.shape)  # artifacts keep every SAR finite
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
        data["per_source"]["si_sdri"], M.si_sdr_improvement(S, E[perm], S.sum(0)), atol=1e-9
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
    S = 0.1 * rng.standard_normal((2, 3000))
    _write(tmp_path / "ref.wav", S)
    _write(tmp_path / "est.wav", S[::-1] + 0.01 * rng.standard_normal(S.shape))
    out = tmp_path / "o.json"
    assert _run(["--ref", str(tmp_path / "ref.wav"), "--est", str(tmp_path / "est.wav"),
                 "--json", str(out)]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    assert data["reference"] == ["ref.wav[ch0]", "ref.wav[ch1]"]
    assert data["permutation"] == [1, 0]
    # Stereo images, one file per source: ISR is available.
    img = 0.1 * rng.standard_normal((2, 2, 3000))
    est_img = img[::-1] + 0.01 * rng.standard_normal(img.shape)
    for i in range(2):
        _write(tmp_path / f"r{i}.wav", img[i])
        _write(tmp_path / f"e{i}.wav", est_img[i])
    refs = [str(tmp_path / f"r{i}.wav") for i in range(2)]
    ests = [str(tmp_path / f"e{i}.wav") for i in range(2)]
    assert _run(["--ref", *refs, "--est", *ests, "--metrics", "sdr,isr,sir,sar,si_sdr",
                 "--json", str(out)]) == 0  # fmt: skip
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
    (tmp / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--est .*empty: the directory holds no audio"):
        _run([*ref, "--est", str(tmp / "empty")])
    with pytest.raises(ValueError, match="--metrics: unknown metric"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "si_sdr,pesq"])
    with pytest.raises(ValueError, match="--metrics si_sdri needs the mixture"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "si_sdri"])
    with pytest.raises(ValueError, match="--metrics isr needs multichannel source images"):
        _run([*ref, "--est", str(tmp / "est"), "--metrics", "isr"])
    with pytest.raises(ValueError, match="--filter-length must be >= 1"):
        _run([*ref, "--est", str(tmp / "est"), "--filter-length", "0"])
    stereo_refs = [str(tmp / "stereo.wav")] * 3
    with pytest.raises(ValueError, match=r"references have 2 channel\(s\) per source"):
        _run(["--ref", *stereo_refs, "--est", str(tmp / "est")])
    (tmp / "bad.wav").write_text("not audio")
    with pytest.raises(ValueError, match="Cannot read .*bad.wav as audio"):
        _run([*ref, "--est", str(tmp / "bad.wav")])


def test_evaluate_through_main_when_available(case, capsys):
    cli = pytest.importorskip("sepkit.cli")
    if not hasattr(cli, "main"):
        pytest.skip("sepkit.cli.main is not there yet")
    tmp, _, _ = case
    code = cli.main(["evaluate", "--ref", str(tmp / "ref"), "--est", str(tmp / "est")])
    assert code == 0
    assert "mean" in capsys.readouterr().out
