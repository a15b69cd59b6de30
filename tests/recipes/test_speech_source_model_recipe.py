"""recipes/speech_source_model: the corpus split and stages 2-5 on a tiny fake corpus."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pyroomacoustics")


def _fake_corpus(root):
    """Four 'speakers' of harmonic tones (two train, two valid) and their manifest."""
    out = root / "corpus16k"
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    rows = []
    for k, (speaker, split) in enumerate(
        [("en_a", "train"), ("es_b", "train"), ("ru_c", "valid"), ("fillets_cs_x", "valid")]
    ):
        for i in range(2):
            f0 = 120 + 40 * k + 5 * i
            env = np.repeat(rng.uniform(0.1, 1.0, 12), 4000)
            x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6)) * env * 0.2
            path = out / speaker / f"p{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.astype(np.float32), 16000)
            rows.append(
                dict(path=f"{speaker}/p{i}.flac", package="fake", language="xx", speaker=speaker,
                     licence="test", seconds=3.0, split=split)
            )  # fmt: skip
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_split_holds_out_the_named_and_minor_speakers(load_recipe):
    run = load_recipe("speech_source_model")
    from corpus import _split

    valid = {"ru_RU_f_IvrvoiceRU", "*minor*"}
    assert _split("ru_RU_f_IvrvoiceRU", valid) == "valid"
    assert _split("en_US_f_Allison", valid) == "train"
    assert _split("fillets_cs_m", valid) == _split("fillets_en_v", valid) == "train"
    assert _split("fillets_cs_hs", valid) == "valid"
    assert run.HERE.name == "speech_source_model"


def test_tiny_stages_2_to_5(load_recipe, tmp_path):
    run = load_recipe("speech_source_model")
    cache = _fake_corpus(tmp_path / "cache")
    exp = tmp_path / "exp"
    conf = str(run.HERE / "conf" / "tiny.toml")
    args = ["--config", conf, "--exp", str(exp), f"--corpus.cache='{cache}'"]
    assert run.main([*args, "--stage", "2", "--stop-stage", "5"]) == 0
    model = exp / "models" / "ivae-speechtiny-16k-v1"
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "source_model" and config["stft"]["n_fft"] == 512
    fits = sorted(p.name for p in (exp / "fits").glob("*.json"))
    assert fits == [
        "valid_2src_2mic_5cm_rt0.2_2s_seed0__auxiva@512.json",
        "valid_2src_2mic_5cm_rt0.2_2s_seed0__pretrained.json",
    ]
    text = (exp / "results.md").read_text()
    assert "| pretrained |" in text and "| auxiva (32 ms) |" in text
    # Rerunning skips what exists (stages are resumable).
    assert run.main([*args, "--stage", "2", "--stop-stage", "4"]) == 0


def test_train_without_a_corpus_says_run_stage_1(load_recipe, tmp_path):
    run = load_recipe("speech_source_model")
    conf = str(run.HERE / "conf" / "tiny.toml")
    with pytest.raises(SystemExit, match=r"no corpus at .*run stage 1 first"):
        run.main(["--config", conf, "--exp", str(tmp_path), f"--corpus.cache='{tmp_path}'",
                  "--stage", "2"])  # fmt: skip


def test_table_per_array_shape_against_the_best_anchor(load_recipe):
    load_recipe("speech_source_model")
    from evaluate import _by_array

    def fits(method, values):
        return [dict(method=method, si_sdri=v, seconds_per_10s=1.0) for v in values]

    by = {
        "valid_2src_2mic_5cm_rt0.2_10s": {
            "pretrained": fits("pretrained", [8.0, 10.0, 6.0]),
            "tf": fits("tf", [5.0, 6.0, 7.0]),
            "ilrma@2048": fits("ilrma@2048", [4.0, 4.0, 4.0]),
            "ilrma@4096": fits("ilrma@4096", [1.0, 2.0, 3.0]),  # the worse frame: dropped
            "auxiva@2048": fits("auxiva@2048", [0.0, 1.0, 9.0]),
        },
        "valid_3src_3mic_5cm_rt0.2_10s": {
            "pretrained": fits("pretrained", [1.0]),
            "tf": fits("tf", [2.0]),
            "auxiva@2048": fits("auxiva@2048", [3.0]),
        },
    }
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in _by_array(by).splitlines()
            if line.startswith("| 2src") or line.startswith("| 3src")}  # fmt: skip
    # 2x2: medians 8 (ours), 6 (tf), 4 (ILRMA at its better frame), 1 (AuxIVA).
    assert rows[("2src x 2mic", "pretrained")].endswith(
        "| 8.00 | 1.00 | 3 | +4.00 (ilrma) | +2.00 |"
    )
    assert rows[("2src x 2mic", "tf")].endswith("| +2.00 (ilrma) |  |")
    assert rows[("2src x 2mic", "ilrma")].endswith("| 4.00 | 1.00 | 3 |  |  |")
    assert rows[("3src x 3mic", "pretrained")].endswith("| -2.00 (auxiva) | -1.00 |")


def test_an_anchor_with_the_post_filter(load_recipe):
    load_recipe("speech_source_model")
    import torch
    from evaluate import run_method

    from sepkit import functional_tf as F

    rng = np.random.default_rng(0)
    s = rng.laplace(size=(2, 16000)) * np.repeat(rng.uniform(0.1, 1, (2, 16)), 1000, axis=1)
    x = (np.array([[1.0, 0.6], [0.5, 1.0]]) @ s).astype(np.float32)
    cfg = {"methods": {"auxiva_n_iter": 5}}
    plain = run_method("auxiva@512", x, 2, cfg, None, 0)
    post = run_method("auxiva+pf@512", x, 2, cfg, None, 0)
    Y = F.stft(torch.from_numpy(plain), 512, 128)
    expected = F.istft(
        0.5 * Y + 0.5 * F.power(Y) / F.power(Y).sum(1, keepdim=True) * Y.sum(1, keepdim=True),
        512,
        128,
        16000,
    )
    np.testing.assert_allclose(post, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(post.sum(0), plain.sum(0), atol=1e-4)  # the blend keeps the sum
    with pytest.raises(ValueError, match=r"anchor 'auxiva\+wiener': the one variant is ANCHOR\+pf"):
        run_method("auxiva+wiener@512", x, 2, cfg, None, 0)
