"""IVAESeparator(source_model=...): the pretrained source-prior family, end to end.

A tiny randomly initialised source model (8 kHz, 32 ms frames) stands in for
the shipped one: these tests check the plumbing (choice, fit, transform,
save/load, resampling, errors), not separation quality, which
recipes/speech_source_model measures.
"""

import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit import IVAESeparator, Recording, read_audio
from sepkit import functional_tf as F
from sepkit.methods import tf_pretrained
from sepkit.methods.tf import centred
from sepkit.models import SpeechSourcePrior
from sepkit.pretrained import export_model, export_source_model

RATE = 8000.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = SpeechSourcePrior(129, n_latent=4, n_hidden=8, kernel_size=3)
    root = tmp_path_factory.mktemp("models")
    return export_source_model(
        model,
        "ivae-test-8k-v1",
        root=root,
        sample_rate=RATE,
        n_fft=256,
        hop=64,
        segment_frames=8,
        card="tiny test model, sha256 {sha256}",
    )


def _room_mixture(n_times=16000, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.laplace(size=(2, n_times))
    h = rng.normal(size=(2, 2, 40)) * np.exp(-np.arange(40) / 8)
    x = np.stack([sum(np.convolve(s[j], h[i, j])[:n_times] for j in range(2)) for i in range(2)])
    return Recording(x.astype(np.float32), RATE, ("m0", "m1"), "audio")


def test_export_writes_a_verified_source_model(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["kind"] == "source_model"
    assert config["stft"] == {"n_fft": 256, "hop": 64, "segment_frames": 8}
    assert config["sha256"] in (model_dir / "MODEL_CARD.md").read_text()
    prior = tf_pretrained.load_source_model(model_dir)
    assert prior.name == "ivae-test-8k-v1" and prior.sample_rate == RATE
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_source_model(
            prior.model, "ivae-test-8k-v1", root=model_dir.parent, sample_rate=RATE,
            n_fft=256, hop=64, segment_frames=8,
        )  # fmt: skip


def test_fit_transform_save_load(model_dir, tmp_path):
    rec = _room_mixture()
    sep = IVAESeparator(2, source_model=model_dir, random_state=0).fit(rec)
    assert sep.family_ == "tf_pretrained"
    assert sep.fitted_.describe()["source_model"] == "ivae-test-8k-v1"
    assert sep.fitted_.describe()["postfilter"] == 0.5
    S = sep.transform(rec)
    assert isinstance(S, Recording) and S.data.shape == (2, 16000)
    assert np.isfinite(S.data).all()
    X = sep.inverse_transform(S)
    assert X.data.shape == rec.data.shape
    path = sep.save(tmp_path / "sep.safetensors")
    again = IVAESeparator.load(path)
    np.testing.assert_array_equal(again.transform(rec).data, S.data)


def test_the_demixing_separates_better_than_the_mixture(model_dir):
    # Even an untrained prior keeps AuxIVA's start and its IP sweeps: the output
    # must be less mixed than the microphones (SIR-style check on the known sources).
    rng = np.random.default_rng(1)
    s = rng.laplace(size=(2, 24000)) * np.repeat(rng.uniform(0.1, 1, (2, 24)), 1000, axis=1)
    A = np.array([[1.0, 0.7], [0.6, 1.0]])
    x = (A @ s).astype(np.float32)
    rec = Recording(x, RATE, ("m0", "m1"), "audio")
    est = IVAESeparator(2, source_model=model_dir).fit(rec).transform(rec).data
    corr = np.abs(np.corrcoef(np.vstack([s, est]))[:2, 2:])
    assert corr.max(axis=1).min() > 0.95  # each source found by one output
    mixed = np.abs(np.corrcoef(np.vstack([s, x]))[:2, 2:])
    assert corr.max(axis=1).min() > mixed.max(axis=1).min()


def test_the_model_sees_the_sources_at_the_reference_microphone(model_dir, monkeypatch):
    # Projected back, a square demixing's outputs add up to the reference
    # microphone exactly: the spectra the source model is given are the sources
    # as that microphone hears them, not IP's own per-frequency scale.
    seen = []
    weights = tf_pretrained.prior_weights

    def spy(model, Y, *args, **kwargs):
        seen.append(Y.detach().clone())
        return weights(model, Y, *args, **kwargs)

    monkeypatch.setattr(tf_pretrained, "prior_weights", spy)
    rec = _room_mixture(8000)
    fit_params = {"n_init": 3, "n_iter": 3, "ref_channel": 1}
    IVAESeparator(2, source_model=model_dir, fit_params=fit_params).fit(rec)
    # (n_freqs, n_mics, n_frames) of the centred channels, as the fit sees them
    X = F.stft(torch.from_numpy(centred(rec.data)), 256, 64)
    assert len(seen) == 3
    for Y in seen:
        torch.testing.assert_close(Y.sum(dim=1), X[:, 1], rtol=1e-3, atol=1e-4 * X.abs().max())
    assert not torch.allclose(seen[-1].sum(dim=1), X[:, 0], atol=1e-2 * X.abs().max())


def test_other_rates_are_resampled_and_said(model_dir):
    rec = _room_mixture(8000)
    rec16 = Recording(np.repeat(rec.data, 2, axis=1), 16000.0, rec.ch_names, "audio")
    with pytest.warns(UserWarning, match=r"X is at 16000 Hz.*resampled to 8000 Hz"):
        sep = IVAESeparator(2, source_model=model_dir).fit(rec16)
    assert sep.transform(rec16).data.shape == (2, 16000)


def test_fit_params(model_dir):
    rec = _room_mixture(8000)
    sep = IVAESeparator(2, source_model=model_dir, fit_params={"n_iter": 2, "n_init": 1})
    assert len(sep.fit(rec).history_) == 2
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_adam'\].*Allowed keys"):
        IVAESeparator(2, source_model=model_dir, fit_params={"n_adam": 2}).fit(rec)


@pytest.mark.parametrize(
    ("kwargs", "X", "match"),
    [
        (dict(domain="time"), "rec", r"domain='time' was asked for.*domain='auto'"),
        (dict(), "array", r"X is a plain array.*Recording of kind 'audio'"),
        (dict(), "eeg", r"X is a Recording of kind 'eeg'"),
        (dict(n_sources=3), "rec", r"n_sources=3 needs at least as many microphones.*<= 2"),
        (dict(highpass=1.0), "rec", r"filters the time-domain fit.*highpass=None"),
        (dict(fit_params={"ref_channel": 5}), "rec", r"ref_channel must be < the 2 channels"),
        (dict(fit_params={"n_ip": 0}), "rec", r"'n_ip' must be >= 1, got 0"),
        (dict(fit_params={"postfilter": 1.5}), "rec", r"'postfilter' must be <= 1.0, got 1.5"),
        (dict(fit_params={"postfilter": -0.1}), "rec", r"'postfilter' must be >= 0.0, got -0.1"),
        (dict(), "fractional", r"sample rate is 8000.5 Hz.*Resample the recording to 8000 Hz"),
        # The model works in the time-frequency domain only: the way out names both.
        (dict(), "short", r"shorter than one STFT window.*or source_model=None with domain='time'"),
    ],
)
def test_errors(model_dir, kwargs, X, match):
    rec = _room_mixture(8000)
    data = {
        "rec": rec,
        "array": rec.data,
        "eeg": Recording(rec.data, RATE, rec.ch_names, "eeg"),
        "fractional": Recording(rec.data, RATE + 0.5, rec.ch_names, "audio"),
        "short": Recording(rec.data[:, :100], RATE, rec.ch_names, "audio"),
    }[X]
    kwargs = {"n_sources": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        IVAESeparator(source_model=model_dir, **kwargs).fit(data)


def test_init_is_refused(model_dir):
    rec = _room_mixture(8000)
    base = IVAESeparator(2, domain="time", n_steps=5).fit(rec.data)
    with pytest.raises(ValueError, match=r"init= fine-tunes a time-domain model.*Drop init"):
        IVAESeparator(2, source_model=model_dir).fit(rec, init=base)


def test_a_separator_is_not_a_source_model(tmp_path):
    rng = np.random.default_rng(0)
    sep = IVAESeparator(2, domain="time", n_steps=5, random_state=0).fit(rng.normal(size=(2, 500)))
    folder = export_model(sep, "ivae-other-test-v1", root=tmp_path, config={"kind": "array"})
    with pytest.raises(ValueError, match=r"is a separator \(kind 'array'\), not a source model"):
        IVAESeparator(2, source_model=folder).fit(_room_mixture(8000))


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"Unknown pretrained model 'no-such-model'"):
        IVAESeparator(2, source_model="no-such-model").fit(_room_mixture(8000))


def test_a_changed_source_model_is_refused_at_load(model_dir, tmp_path):
    rec = _room_mixture(8000)
    path = IVAESeparator(2, source_model=model_dir).fit(rec).save(tmp_path / "s.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    weights = model_dir / "weights.safetensors"
    original = weights.read_bytes()
    try:
        torch.manual_seed(1)
        other = SpeechSourcePrior(129, n_latent=4, n_hidden=8, kernel_size=3)
        from safetensors.torch import save_file

        save_file(other.state_dict(), str(weights))
        from sepkit.registry import sha256_file

        (model_dir / "config.json").write_text(
            json.dumps({**config, "sha256": sha256_file(weights)})
        )
        with pytest.raises(ValueError, match=r"fitted with source model 'ivae-test-8k-v1'"):
            IVAESeparator.load(path)
    finally:
        weights.write_bytes(original)
        (model_dir / "config.json").write_text(json.dumps(config))


def test_settings_the_family_does_not_read_warn(model_dir):
    rec = _room_mixture(8000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        IVAESeparator(2, source_model=model_dir, n_hidden=32).fit(rec)
    said = [str(w.message) for w in caught if "n_hidden" in str(w.message)]
    # The choice is named by what made it (audit: "(domain='tf')", never given).
    assert said and f"that this fit chose (source_model={model_dir!r})" in said[0], said


def test_finetuning_works_on_a_copy(model_dir):
    rec = _room_mixture(8000)
    shipped = tf_pretrained.load_source_model(model_dir).model.state_dict()
    tuned = IVAESeparator(2, source_model=model_dir, random_state=0).fit(rec)
    plain = IVAESeparator(2, source_model=model_dir, fit_params={"n_finetune": 0}).fit(rec)
    for k, v in shipped.items():
        torch.testing.assert_close(plain.model_.state_dict()[k], v)
    assert any(not torch.equal(tuned.model_.state_dict()[k], v) for k, v in shipped.items())
    again = tf_pretrained.load_source_model(model_dir).model.state_dict()
    assert all(torch.equal(again[k], v) for k, v in shipped.items())
    # Seeded: the same fit twice gives the same demixing.
    twice = IVAESeparator(2, source_model=model_dir, random_state=0).fit(rec)
    np.testing.assert_array_equal(twice.tf_.demix, tuned.tf_.demix)


def test_a_source_model_is_not_a_separator(model_dir):
    with pytest.raises(ValueError, match=r"is a source model .* source_model='ivae-test-8k-v1'"):
        IVAESeparator.from_pretrained(model_dir)


def test_a_source_model_given_as_model_on_the_command_line(capsys, tmp_path):
    import soundfile as sf

    from sepkit.cli import main

    sf.write(tmp_path / "mix.wav", _room_mixture(8000).data.T * 0.1, 8000)
    argv = ["separate", str(tmp_path / "mix.wav"), "--model", "ivae-speech-16k-v1"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sepkit separate: error: 'ivae-speech-16k-v1' is a source model (a prior over speech "
        "spectrograms), not a separator. Fit a separator with it on your recording: --n-sources "
        "K --source-model ivae-speech-16k-v1 in place of --model."
    ]


def test_the_command_line_says_which_source_model_ran(model_dir, monkeypatch, capsys, tmp_path):
    import soundfile as sf

    from sepkit.cli import main

    fast = {"n_init": 2, "n_iter": 2, "n_finetune": 0}
    monkeypatch.setattr(tf_pretrained, "FIT_PARAMS", {**tf_pretrained.FIT_PARAMS, **fast})
    sf.write(tmp_path / "mix.wav", _room_mixture(8000).data.T * 0.1, 8000)
    argv = ["separate", str(tmp_path / "mix.wav"), "--n-sources", "2"]
    assert main([*argv, "--source-model", str(model_dir), "-o", str(tmp_path / "out")]) == 0
    assert (
        "mix.wav: tf_pretrained family, tf domain, mixing convolutive, prior gauss, sensor "
        "unwarping not kept, source model ivae-test-8k-v1, post-filter 0.5"
    ) in capsys.readouterr().err.splitlines()
    info = json.loads((tmp_path / "out" / "mix_metrics.json").read_text())
    assert info["source_model"] == "ivae-test-8k-v1" and info["postfilter"] == 0.5


def test_auto_rule_for_rooms(model_dir, monkeypatch):
    monkeypatch.setattr(tf_pretrained, "AUTO_SOURCE_MODEL", str(model_dir))
    rule = tf_pretrained.auto_source_model
    ten_s = int(tf_pretrained.AUTO_MIN_SECONDS * RATE)
    assert rule(2, 2, RATE, ten_s) == str(model_dir)
    assert rule(3, 4, 2 * RATE, 2 * ten_s) == str(model_dir)
    assert rule(4, 4, RATE, ten_s) is None  # measured worse with 4 sources
    assert rule(1, 2, RATE, ten_s) is None
    assert rule(3, 2, RATE, ten_s) is None  # fewer microphones than sources
    assert rule(2, 2, RATE, ten_s - 1) is None  # shorter than the measured recordings
    assert rule(2, 2, RATE / 2, ten_s) is None  # below the model's rate: no upsampling
    assert rule(2, 2, None, ten_s) is None
    monkeypatch.setattr(tf_pretrained, "AUTO_SOURCE_MODEL", "no-such-model-v9")
    assert rule(2, 2, RATE, ten_s) is None  # not installed: the per-mixture family


def test_domain_auto_uses_the_speech_prior_for_a_room(model_dir, monkeypatch):
    monkeypatch.setattr(tf_pretrained, "AUTO_SOURCE_MODEL", str(model_dir))
    monkeypatch.setattr(tf_pretrained, "AUTO_MIN_SECONDS", 1.0)
    rec = _room_mixture()
    fast = {"n_init": 2, "n_iter": 2, "n_finetune": 0}
    sep = IVAESeparator(2, random_state=0)
    # The auto choice reads fit_params as the tf family's: none given here.
    monkeypatch.setattr(tf_pretrained, "FIT_PARAMS", {**tf_pretrained.FIT_PARAMS, **fast})
    sep.fit(rec)
    assert (sep.domain_, sep.family_, sep.source_model_) == (
        "tf",
        "tf_pretrained",
        "ivae-test-8k-v1",
    )
    assert sep.transform(rec).data.shape == rec.data.shape
    tf = IVAESeparator(2, domain="tf", random_state=0, fit_params={"n_init": 2, "n_iter": 1})
    assert tf.fit(rec).family_ == "tf"
    short = Recording(rec.data[:, : int(0.5 * RATE)], RATE, rec.ch_names, "audio")
    assert IVAESeparator(2, fit_params={"n_init": 2, "n_iter": 1}).fit(short).family_ == "tf"


def test_a_band_the_source_model_deems_silent_does_not_stop_the_fit(tmp_path):
    # A user's 16-bit WAV: a modulated tone and white noise, mixed instantaneously.
    # With the shipped model, the sweeps once made one frequency's weighted
    # covariance singular in float32 (the model's weights spanning 0.2 to 1e7
    # over the frames), and torch.linalg.solve raised "input matrix is
    # singular" out of fit.
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    s = np.stack(
        [
            np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)),
            0.1 * rng.laplace(size=t.size),
        ]
    )
    x = (np.array([[1, 0.6], [0.5, 1]]) @ s).astype(np.float32) * 0.3
    sf.write(tmp_path / "mix.wav", x.T, 16000)  # PCM_16, as most recorders write
    rec = read_audio(tmp_path / "mix.wav")
    S = IVAESeparator(2, source_model="ivae-speech-16k-v1").fit(rec).transform(rec)
    assert S.data.shape == x.shape and np.isfinite(S.data).all()


def test_auto_keeps_a_band_the_source_model_would_lose(model_dir, monkeypatch):
    # Audit: at 44.1 kHz "auto" took the 16 kHz speech prior, whose sources hold nothing
    # above 8 kHz (11 % of that room's power); now it keeps the per-mixture model when
    # more than 1 % of the power lies above the model's Nyquist frequency, and an
    # explicit source model says what it drops.
    monkeypatch.setattr(tf_pretrained, "AUTO_SOURCE_MODEL", str(model_dir))
    rule = tf_pretrained.auto_source_model
    rate = 2 * RATE  # the test model is at 8 kHz: its Nyquist frequency is 4 kHz
    n = int(tf_pretrained.AUTO_MIN_SECONDS * rate)
    t = np.arange(n) / rate
    low = np.stack([np.sin(2 * np.pi * 500 * t), np.cos(2 * np.pi * 700 * t)])
    high = 0.5 * np.stack([np.sin(2 * np.pi * 6000 * t)] * 2)
    assert rule(2, 2, rate, n, low) == str(model_dir)
    assert rule(2, 2, rate, n, low + high) is None
    rec = _room_mixture(n_times=24000)
    hi = Recording(np.asarray(F_resample(rec.data, 2)), rate, rec.ch_names, "audio")
    noisy = Recording(hi.data + 0.3 * np.random.default_rng(0).standard_normal(hi.data.shape).astype(np.float32), rate, hi.ch_names, "audio")  # fmt: skip
    with pytest.warns(UserWarning, match=r"The band above 4000 Hz, \d+\.\d % of the power at the first microphone, is not separated"):  # fmt: skip
        IVAESeparator(2, source_model=model_dir, fit_params={"n_init": 1, "n_iter": 1, "n_finetune": 0}).fit(noisy)  # fmt: skip


def F_resample(x, factor):
    from scipy.signal import resample_poly

    return resample_poly(x, factor, 1, axis=1).astype(np.float32)


def test_fit_params_of_both_families_under_auto_say_which_was_fitted(model_dir, monkeypatch):
    # Audit: {"postfilter": 0.5} (a key of both) turned a room from the speech prior to the
    # per-mixture model without a word; a key of the source model alone was refused.
    monkeypatch.setattr(tf_pretrained, "AUTO_SOURCE_MODEL", str(model_dir))
    monkeypatch.setattr(tf_pretrained, "AUTO_MIN_SECONDS", 1.0)
    rec = _room_mixture()
    with pytest.warns(UserWarning, match=r"fit_params \['n_init', 'n_iter'\] are settings of both the per-mixture tf model and the speech prior .* the per-mixture model is fitted\. Pass source_model="):  # fmt: skip
        sep = IVAESeparator(2, random_state=0, fit_params={"n_init": 1, "n_iter": 1}).fit(rec)
    assert sep.family_ == "tf"
    own = IVAESeparator(2, random_state=0, fit_params={"n_finetune": 0}).fit(rec)
    assert own.family_ == "tf_pretrained"


def test_too_small_a_fit_budget_is_named(model_dir):
    # Audit: the error blamed the recording's length for blocks max_fit_seconds made short.
    rec = _room_mixture(n_times=int(4 * RATE))
    for kw in (dict(domain="tf"), dict(source_model=model_dir)):
        with pytest.raises(ValueError, match=r"^max_fit_seconds=0\.1 spreads the fit over 6 blocks of \d+ samples, shorter than one STFT frame \(\d+ samples\)\. Pass max_fit_seconds >= "):  # fmt: skip
            IVAESeparator(2, fit_params={"max_fit_seconds": 0.1}, **kw).fit(rec)
