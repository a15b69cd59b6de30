"""Tests for sepkit.pretrained and IVAESeparator.from_pretrained / fit(init=...)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sepkit import IVAESeparator, Recording
from sepkit.methods.tf_pretrained import load_source_model
from sepkit.pretrained import (
    MAX_MODEL_BYTES,
    PRETRAINED_ENV,
    export_model,
    list_models,
    model_info,
    pretrained_dir,
    sha256_file,
)

RATE = 8000.0
NAME = "ivae-test-2ch-8khz-v1"


def _recording(seed=0, n_times=4000, rate=RATE):
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / rate
    env = 1.5 + np.sin(2 * np.pi * np.array([[3.0], [5.0]]) * t)
    s = rng.standard_normal((2, n_times)) * env
    x = np.array([[1.0, 0.5], [0.3, 1.0]]) @ s
    return Recording((0.1 * x).astype(np.float32), rate, ("mic0", "mic1"), "audio")


@pytest.fixture(scope="module")
def fitted():
    sep = IVAESeparator(
        2, n_hidden=8, n_layers=2, n_steps=60, window=0.05, encoder_u=False, random_state=0,
        domain="time", mixing="nonlinear",
        device="cpu",
    )  # fmt: skip
    return sep.fit(_recording())


@pytest.fixture
def registry(tmp_path, monkeypatch, fitted):
    export_model(fitted, NAME, root=tmp_path, config={"kind": "audio"}, card="sha {sha256}\n")
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path))
    return tmp_path


def test_list_info_and_round_trip(registry, fitted):
    assert list_models() == [NAME]
    info = model_info(NAME)
    weights = registry / NAME / "weights.safetensors"
    assert info["sha256"] == sha256_file(weights)
    assert info["card"] == f"sha {info['sha256']}\n"
    assert info["sample_rate"] == RATE and info["ch_names"] == ["mic0", "mic1"]
    assert info["version"] == 1 and info["kind"] == "audio"
    rec = _recording(seed=1)
    sep = IVAESeparator.from_pretrained(NAME, device="cpu")
    assert sep.pretrained_["name"] == NAME
    np.testing.assert_array_equal(sep.transform(rec).data, fitted.transform(rec).data)
    # A folder path works as well as a name.
    again = IVAESeparator.from_pretrained(registry / NAME, device="cpu")
    np.testing.assert_array_equal(again.transform(rec).data, fitted.transform(rec).data)


def test_fit_from_scratch_is_no_longer_the_pretrained_model(registry):
    # Audit: pretrained_ still named the shipped model after fit had replaced its weights.
    sep = IVAESeparator.from_pretrained(NAME, device="cpu").set_params(n_steps=2)
    sep.fit(_recording(seed=2))
    assert not hasattr(sep, "pretrained_")
    tuned = IVAESeparator.from_pretrained(NAME, device="cpu").set_params(n_steps=2)
    tuned.fit(_recording(seed=2), init=NAME)
    # Fine-tuned: the model it started from, said as such (audit: the attribute kept the
    # shipped sha256 of weights it no longer held, and a save lost it).
    shipped = IVAESeparator.from_pretrained(NAME).pretrained_
    assert tuned.pretrained_ == {**shipped, "fine_tuned": True}
    tuned.save(registry / "tuned.safetensors")
    assert IVAESeparator.load(registry / "tuned.safetensors").pretrained_ == tuned.pretrained_


def test_a_weights_file_loaded_by_path_is_checked_against_its_folder(registry):
    # Audit: --model pretrained/<name>/weights.safetensors skipped the sha256 check.
    weights = registry / NAME / "weights.safetensors"
    IVAESeparator.load(weights)  # untouched: loads
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 mismatch for .*weights\.safetensors"):
        IVAESeparator.load(weights)


def test_a_shipped_name_is_the_registry_s_and_the_config_must_match(
    registry, tmp_path_factory, monkeypatch
):
    # Audit: a folder of the shipped name in the working folder took its place; a
    # config.json edited to another rate was listed so and not checked; weights outside
    # the folder were read.
    work = tmp_path_factory.mktemp("work")
    (work / NAME).mkdir()
    (work / NAME / "config.json").write_text(json.dumps({"name": NAME, "sha256": "0" * 64}))
    monkeypatch.chdir(work)
    assert IVAESeparator.from_pretrained(NAME).pretrained_["name"] == NAME  # the registry's
    config_path = registry / NAME / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "sample_rate": 16000.0}))
    with pytest.raises(
        ValueError,
        match=r"config\.json says sample_rate 16000\.0 \(the weights: 8000\.0\): the folder "
        r"is inconsistent",
    ):
        IVAESeparator.from_pretrained(NAME)
    config_path.write_text(json.dumps({**config, "weights": "../x/weights.safetensors"}))
    with pytest.raises(ValueError, match=r"'weights' must name a file in the model folder"):
        IVAESeparator.from_pretrained(NAME)
    with pytest.raises(ValueError, match=r"is a folder without config\.json: not a model folder"):
        IVAESeparator.from_pretrained(str(tmp_path_factory.mktemp("empty")))


def test_models_list_shows_the_readable_models_beside_a_broken_one(registry, capsys):
    from sepkit.cli import main

    (registry / "ivae-bad-json-v1").mkdir()
    (registry / "ivae-bad-json-v1" / "config.json").write_text("{not json")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert NAME in out and "ivae-bad-json-v1                 unreadable: " in out


def test_unknown_name_lists_valid_ones(registry):
    with pytest.raises(
        ValueError, match=rf"Unknown pretrained model 'nope'. Valid names are: {NAME}"
    ):
        IVAESeparator.from_pretrained("nope")
    with pytest.raises(TypeError, match="'name_or_path' must be a model name"):
        IVAESeparator.from_pretrained(3)


def test_sha256_mismatch_is_refused(registry):
    weights = registry / NAME / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch for .*weights.safetensors"):
        IVAESeparator.from_pretrained(NAME)


def test_wrong_sample_rate_and_channels(registry):
    sep = IVAESeparator.from_pretrained(NAME, device="cpu")
    rec16 = _recording(seed=2, n_times=8000, rate=16000.0)
    with pytest.raises(
        ValueError,
        match=r"sample_rate 16000 Hz but the model expects 8000 Hz \(the 'network' family's model "
        r"reads time, not just each sample\)\. Pass resample=True",
    ):
        sep.transform(rec16)
    out = sep.transform(rec16, resample=True)
    assert out.sample_rate == RATE and out.data.shape == (2, 4000)
    three = Recording(np.zeros((3, 100), np.float32) + np.arange(100), RATE, kind="audio")
    with pytest.raises(ValueError, match=r"fitted on 2 \(mic0, mic1\).*picks=\[...\] selects"):
        sep.transform(three)


def test_export_refuses_existing_and_bad_names(registry, fitted):
    with pytest.raises(FileExistsError, match="released model names are never overwritten"):
        export_model(fitted, NAME, root=registry)
    with pytest.raises(ValueError, match="does not follow the scheme"):
        export_model(fitted, "My_Model", root=registry)
    assert list_models() == [NAME]  # nothing half-written beside it


def test_fine_tune_starts_from_pretrained(registry, fitted):
    rec = _recording(seed=3)
    pre = IVAESeparator.from_pretrained(NAME, device="cpu")
    # lr tiny: after a few steps the weights are still the pretrained ones.
    sep = IVAESeparator(**{**pre.get_params(), "n_steps": 2, "lr": 1e-12})
    sep.fit(rec, init=NAME)
    np.testing.assert_array_equal(sep.whitening_, pre.whitening_)
    w_new = sep.model_.encoder.layers[0].weight.detach().numpy()
    w_pre = pre.model_.encoder.layers[0].weight.detach().numpy()
    np.testing.assert_allclose(w_new, w_pre, atol=1e-6)
    scratch = IVAESeparator(**{**pre.get_params(), "n_steps": 2, "lr": 1e-12}).fit(rec)
    assert not np.allclose(scratch.model_.encoder.layers[0].weight.detach().numpy(), w_pre)

    with pytest.raises(ValueError, match=r"another architecture.*n_hidden=16 \(model: 8\)"):
        IVAESeparator(**{**pre.get_params(), "n_hidden": 16}).fit(rec, init=NAME)
    with pytest.raises(ValueError, match="expects 8000 Hz. Resample it first"):
        sep.fit(_recording(n_times=8000, rate=16000.0), init=NAME)
    # A linear fit has no network weights to start from.
    linear = IVAESeparator(pre.n_sources, mixing="linear", domain="time").fit(rec)
    with pytest.raises(
        ValueError, match=r"init='init' is a 'linear'-family separator \(no network"
    ):
        IVAESeparator(**{**pre.get_params(), "mixing": "nonlinear"}).fit(rec, init=linear)


def test_missing_folder_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="non-editable install does not copy"):
        list_models()
    # domain="auto" on a room falls back to the per-mixture model (audit: it failed).
    from sepkit.methods.tf_pretrained import auto_source_model

    assert auto_source_model(2, 2, 16000.0, 16000 * 12) is None


# The models shipped in the repository: every one loads (sha256 verified),
# keeps the size limits, and has a card. A change of the saved format that
# breaks old files fails here.
SHIPPED = [
    "ivae-audio-2mic-16khz-v1",
    "ivae-eeg1020-256hz-v1",
    "ivae-speech-16k-v1",
    "ivae-synthetic-5src-v1",
]


def test_shipped_models_load(monkeypatch):
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    names = list_models()
    assert set(SHIPPED) <= set(names)
    total = 0
    for name in names:
        info = model_info(name)
        size = (pretrained_dir() / name / "weights.safetensors").stat().st_size
        assert size == info["size_bytes"] < MAX_MODEL_BYTES
        total += size
        assert info["sha256"] in info["card"] and info["recipe"] in info["card"]
        assert info["recipe"].startswith("python recipes/")
        if info["kind"] == "source_model":  # a prior for IVAESeparator(source_model=name)
            prior = load_source_model(name)
            assert prior.model.n_freqs == info["stft"]["n_fft"] // 2 + 1
            continue
        sep = IVAESeparator.from_pretrained(name, device="cpu")
        assert sep.n_sources == info["n_sources"] and sep.n_channels_ == info["n_channels"]
        assert not sep.model_.encoder_u  # amortised: applies without u
        json.dumps(info)
    assert total < 50 * 2**20


def test_shipped_audio_model_fine_tunes_on_a_wav_read_from_disk(tmp_path):
    # read_audio names channels ch0, ch1; the shipped model was fitted on mic0, mic1.
    # Audio channels are matched by position (EEG ones by name).
    import soundfile as sf

    from sepkit.io import read_audio

    rng = np.random.default_rng(0)
    x = rng.laplace(size=(16000, 2)) * np.repeat(rng.uniform(0.1, 1, (10, 2)), 1600, axis=0)
    sf.write(tmp_path / "two.wav", (0.1 * x @ [[1, 0.5], [0.4, 1]]).astype(np.float32), 16000)
    rec = read_audio(tmp_path / "two.wav")
    assert rec.ch_names == ("ch0", "ch1")
    pre = IVAESeparator.from_pretrained("ivae-audio-2mic-16khz-v1", device="cpu")
    sep = IVAESeparator(**{**pre.get_params(), "n_steps": 2}).fit(rec, init=pre)
    assert sep.family_ == "network" and sep.transform(rec).data.shape == (2, 16000)
